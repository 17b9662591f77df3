//! The client of `swp-auth`: it authenticates device users against their directory and looks
//! users up for `settings explain --user`. The server owns the directories' configuration and
//! sends it with every call, so any `swp-auth` of the network serves any server.

use std::sync::OnceLock;
use std::time::Duration;

use tonic::Request;
use tonic::transport::Channel;
use ums_db::swp::Directory;
use ums_domain::DirectoryUser;
use ums_proto::swp::v1 as pb;
use ums_proto::swp::v1::swp_auth_service_client::SwpAuthServiceClient;
use ums_tls::NodeIdentity;

use crate::config::SwpSettings;
use crate::error::ApiError;

/// The connection to `swp-auth`, set up at start when `[swp] url` is configured.
#[derive(Default)]
pub struct SwpClient {
    client: OnceLock<Client>,
}

struct Client {
    url: String,
    channel: Channel,
    timeout: Duration,
}

impl SwpClient {
    /// Connects (lazily) to `swp-auth` with this server's node identity in the network.
    pub fn configure(&self, cfg: &SwpSettings, identity: &NodeIdentity) -> anyhow::Result<()> {
        let channel = ums_network::internal_channel(identity, &cfg.addr)
            .map_err(|e| anyhow::anyhow!("swp.url `{}`: {e}", cfg.url))?;
        let _ = self.client.set(Client {
            url: cfg.url.clone(),
            channel,
            timeout: cfg.timeout,
        });
        tracing::info!(url = %cfg.url, "Shared Workplace logins through swp-auth");
        Ok(())
    }

    fn client(&self) -> Result<&Client, ApiError> {
        self.client.get().ok_or_else(|| {
            ApiError::FailedPrecondition(
                "Shared Workplace is not set up on this server: configure [swp] url".into(),
            )
        })
    }

    /// Checks a user's password with the directory and resolves the user's groups and OUs.
    pub async fn authenticate(
        &self,
        directory: pb::Directory,
        username: String,
        password: String,
        device_id: i64,
    ) -> Result<DirectoryUser, ApiError> {
        let client = self.client()?;
        let mut req = Request::new(pb::AuthenticateRequest {
            directory: Some(directory),
            username,
            password,
            device_id,
        });
        req.set_timeout(client.timeout);
        let answer = SwpAuthServiceClient::new(client.channel.clone())
            .authenticate(req)
            .await
            .map_err(|s| relay(client, &s))?;
        Ok(user_from_pb(answer.into_inner()))
    }

    /// Looks a user up with the bind account (no password).
    pub async fn lookup(
        &self,
        directory: pb::Directory,
        username: String,
    ) -> Result<DirectoryUser, ApiError> {
        let client = self.client()?;
        let mut req = Request::new(pb::LookupUserRequest {
            directory: Some(directory),
            username,
        });
        req.set_timeout(client.timeout);
        let answer = SwpAuthServiceClient::new(client.channel.clone())
            .lookup_user(req)
            .await
            .map_err(|s| relay(client, &s))?;
        Ok(user_from_pb(answer.into_inner()))
    }
}

/// The directory as swp-auth needs it, with its bind password opened.
pub fn directory_pb(d: &Directory, bind_password: String) -> pb::Directory {
    pb::Directory {
        id: d.id,
        revision: d.rev,
        name: d.input.name.clone(),
        kind: d.input.kind.as_str().to_owned(),
        domain: d.input.domain.clone(),
        netbios: d.input.netbios.clone(),
        urls: d.input.urls.clone(),
        base_dn: d.input.base_dn.clone(),
        bind_dn: d.input.bind_dn.clone(),
        bind_password,
        ca_pem: d.input.ca_pem.clone(),
        starttls: d.input.starttls,
        page_size: d.input.page_size,
        login_attribute: d.input.login_attribute.clone(),
        user_filter: d.input.user_filter.clone(),
        group_membership: d.input.group_membership.clone(),
    }
}

fn user_from_pb(r: pb::AuthenticateResponse) -> DirectoryUser {
    let group = |g: pb::Group| ums_domain::DirectoryGroup {
        name: g.name,
        dn: g.dn,
        level: g.level,
    };
    DirectoryUser {
        login: r.login,
        dn: r.dn,
        display_name: r.display_name,
        primary_group: r.primary_group.map(group),
        groups: r.groups.into_iter().map(group).collect(),
        ous: r
            .ous
            .into_iter()
            .map(|o| ums_domain::DirectoryOu {
                name: o.name,
                dn: o.dn,
            })
            .collect(),
    }
}

/// What a server passes on for an answer of swp-auth: the directory's verdicts as they are,
/// swp-auth itself unreachable or slow as "unavailable".
fn relay(client: &Client, s: &tonic::Status) -> ApiError {
    match s.code() {
        tonic::Code::Unavailable if !s.message().starts_with("directory") => {
            tracing::warn!(url = %client.url, error = %s.message(), "swp-auth unreachable");
            ApiError::Unavailable(format!(
                "the Shared Workplace login service is unreachable: {}",
                s.message()
            ))
        }
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            ApiError::Unavailable("the Shared Workplace login timed out: try again".into())
        }
        _ => ApiError::relayed(s),
    }
}
