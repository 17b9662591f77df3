//! The client of `swp-auth`: it authenticates device users against their directory and looks
//! users up for `settings explain --user` and the session refresh. The server owns the
//! directories' configuration and sends it with every call, so any `swp-auth` of the network
//! serves any server.
//!
//! The `swp-auth` processes come from the process registry (every one running, as the heartbeat
//! task hands them over) and from `[swp] url` when set. Calls go round robin over them; a call
//! that fails because its `swp-auth` is unreachable or went away mid-call is sent to the next
//! one at once, and the one that failed is tried last for a moment, so a login in flight when an
//! `swp-auth` dies succeeds on another.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use ums_db::swp::Directory;
use ums_domain::DirectoryUser;
use ums_proto::swp::v1 as pb;
use ums_proto::swp::v1::swp_auth_service_client::SwpAuthServiceClient;
use ums_tls::NodeIdentity;

use crate::config::SwpSettings;
use crate::error::ApiError;

/// How long an `swp-auth` that failed a call is tried only after the others.
const DOWN_FOR: Duration = Duration::from_secs(3);
/// Time a call may take when no `[swp]` timeout is configured.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The connections to the `swp-auth` processes of the network.
#[derive(Default)]
pub struct SwpClient {
    identity: OnceLock<NodeIdentity>,
    /// `[swp] url`, when configured: `(url, host:port)`.
    fixed: OnceLock<(String, String)>,
    timeout: OnceLock<Duration>,
    /// `host:port` of the running `swp-auth` processes of the registry.
    registry: RwLock<Vec<String>>,
    channels: Mutex<HashMap<String, Channel>>,
    /// `host:port` -> when a call to it last failed for want of the process.
    down: Mutex<HashMap<String, Instant>>,
    next: AtomicUsize,
}

/// Whether a failed call says nothing about the user and should go to another `swp-auth`:
/// the process is unreachable, or the connection broke mid-call. A directory that cannot be
/// reached is the same for every `swp-auth` ("directory ..." messages). swp-auth itself never
/// answers Internal, Unknown or Cancelled: those come from a connection that broke.
fn try_another(s: &Status) -> bool {
    match s.code() {
        tonic::Code::Unavailable => !s.message().starts_with("directory"),
        tonic::Code::Unknown | tonic::Code::Cancelled | tonic::Code::Internal => true,
        _ => false,
    }
}

impl SwpClient {
    /// Sets this server's identity in the network and, when configured, the fixed `[swp] url`.
    pub fn configure(
        &self,
        cfg: Option<&SwpSettings>,
        timeout: Duration,
        identity: &NodeIdentity,
    ) -> anyhow::Result<()> {
        let _ = self.identity.set(identity.clone());
        let _ = self.timeout.set(timeout);
        if let Some(cfg) = cfg {
            let _ = self.fixed.set((cfg.url.clone(), cfg.addr.clone()));
            tracing::info!(url = %cfg.url, "Shared Workplace logins through swp-auth at this url and the registry's");
        }
        Ok(())
    }

    /// The running `swp-auth` processes of the registry, `host:port` of their internal ports.
    pub fn set_registry(&self, mut addrs: Vec<String>) {
        addrs.sort();
        addrs.dedup();
        let mut current = self.registry.write().unwrap_or_else(|p| p.into_inner());
        if *current != addrs {
            tracing::info!(swp_auth = ?addrs, "swp-auth processes of the network changed");
            *current = addrs;
        }
    }

    /// Every `swp-auth` known now: the configured one first, then the registry's.
    pub fn endpoints(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .fixed
            .get()
            .map(|(_, a)| a.clone())
            .into_iter()
            .collect();
        for a in self
            .registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
        out
    }

    fn timeout(&self) -> Duration {
        self.timeout.get().copied().unwrap_or(DEFAULT_TIMEOUT)
    }

    fn channel(&self, identity: &NodeIdentity, addr: &str) -> Result<Channel, ApiError> {
        let mut channels = lock(&self.channels);
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let c = ums_network::internal_channel(identity, addr).map_err(|e| {
            ApiError::Unavailable(format!("swp-auth at {addr} cannot be reached: {e}"))
        })?;
        channels.insert(addr.to_owned(), c.clone());
        Ok(c)
    }

    /// The order to try the `swp-auth` processes in for one call: round robin, those that
    /// failed a moment ago last.
    fn order(&self) -> Vec<String> {
        let all = self.endpoints();
        if all.is_empty() {
            return all;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % all.len();
        let now = Instant::now();
        let down = lock(&self.down);
        let (mut up, mut failed): (Vec<String>, Vec<String>) = (0..all.len())
            .map(|i| all[(start + i) % all.len()].clone())
            .partition(|a| {
                down.get(a)
                    .is_none_or(|t| now.duration_since(*t) > DOWN_FOR)
            });
        up.append(&mut failed);
        up
    }

    /// Sends one call to the `swp-auth` processes in turn until one answers.
    async fn call<R, F, Fut>(&self, what: &str, f: F) -> Result<R, ApiError>
    where
        F: Fn(SwpAuthServiceClient<Channel>, Duration) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let identity = self.identity.get().ok_or_else(|| {
            ApiError::FailedPrecondition("Shared Workplace is not set up on this server".into())
        })?;
        let order = self.order();
        if order.is_empty() {
            return Err(ApiError::Unavailable(
                "no swp-auth is running in the network: start one (or set [swp] url)".into(),
            ));
        }
        let timeout = self.timeout();
        let mut last = String::new();
        for addr in &order {
            let channel = match self.channel(identity, addr) {
                Ok(c) => c,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            match f(SwpAuthServiceClient::new(channel), timeout).await {
                Ok(answer) => {
                    lock(&self.down).remove(addr);
                    return Ok(answer.into_inner());
                }
                Err(s) if try_another(&s) => {
                    tracing::warn!(swp_auth = %addr, call = what, error = %s.message(), "swp-auth failed the call; trying the next");
                    lock(&self.down).insert(addr.clone(), Instant::now());
                    last = format!("{addr}: {}", s.message());
                }
                Err(s) => return Err(relay(&s)),
            }
        }
        Err(ApiError::Unavailable(format!(
            "the Shared Workplace login service is unreachable: {last}"
        )))
    }

    /// Checks a user's password with the directory and resolves the user's groups and OUs.
    pub async fn authenticate(
        &self,
        directory: pb::Directory,
        username: String,
        password: String,
        device_id: i64,
    ) -> Result<DirectoryUser, ApiError> {
        let message = pb::AuthenticateRequest {
            directory: Some(directory),
            username,
            password,
            device_id,
        };
        let answer = self
            .call("authenticate", |mut client, timeout| {
                let mut req = Request::new(message.clone());
                req.set_timeout(timeout);
                async move { client.authenticate(req).await }
            })
            .await?;
        Ok(user_from_pb(answer))
    }

    /// Looks a user up with the bind account (no password).
    pub async fn lookup(
        &self,
        directory: pb::Directory,
        username: String,
    ) -> Result<DirectoryUser, ApiError> {
        let message = pb::LookupUserRequest {
            directory: Some(directory),
            username,
        };
        let answer = self
            .call("lookup", |mut client, timeout| {
                let mut req = Request::new(message.clone());
                req.set_timeout(timeout);
                async move { client.lookup_user(req).await }
            })
            .await?;
        Ok(user_from_pb(answer))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
/// a timeout as "unavailable".
fn relay(s: &Status) -> ApiError {
    match s.code() {
        tonic::Code::DeadlineExceeded => {
            ApiError::Unavailable("the Shared Workplace login timed out: try again".into())
        }
        _ => ApiError::relayed(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lost_swp_auth_sends_the_call_to_another() {
        assert!(try_another(&Status::unavailable("tcp connect error")));
        assert!(try_another(&Status::unknown("h2 protocol error")));
        assert!(!try_another(&Status::unavailable(
            "directory `corp`: no controller answered"
        )));
        assert!(!try_another(&Status::unauthenticated(
            "wrong user name or password"
        )));
        assert!(!try_another(&Status::resource_exhausted(
            "too many login attempts"
        )));
    }

    #[test]
    fn the_configured_url_comes_first_and_the_registry_adds_the_others() {
        let c = SwpClient::default();
        let _ = c.fixed.set(("https://a:1".into(), "a:1".into()));
        c.set_registry(vec!["b:2".into(), "a:1".into(), "b:2".into()]);
        assert_eq!(c.endpoints(), vec!["a:1".to_owned(), "b:2".to_owned()]);
        lock(&c.down).insert("a:1".into(), Instant::now());
        for _ in 0..3 {
            assert_eq!(c.order(), vec!["b:2".to_owned(), "a:1".to_owned()]);
        }
    }
}
