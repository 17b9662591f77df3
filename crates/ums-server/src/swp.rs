//! Shared Workplace in the server: device logins through `swp-auth`, the user's effective
//! settings (the user's, groups' and OUs' profiles merged over the device's), the admin API for
//! directories, user assignments and device licences, and `settings explain --user`.
//!
//! The server owns the directories' configuration (database, admin API) and sends it with every
//! call, so any number of `swp-auth` processes serve any server. It reaches `swp-auth` over
//! mutual TLS with its node identity in the network; `swp-auth` joins the same network.

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use ums_db::settings::SettingsModel;
use ums_db::swp::{Directory, DirectoryInput, DirectoryKind, PrincipalKind, SwpSession};
use ums_domain::{DirectoryUser, Effective, Layer, ObjectKind, ObjectRef, Profile};
use ums_proto::admin::v1 as admin_pb;
use ums_proto::device::v1 as device_pb;
use ums_proto::swp::v1 as pb;
use ums_proto::swp::v1::swp_auth_service_client::SwpAuthServiceClient;
use ums_tls::NodeIdentity;

use crate::admin_api::AdminApi;
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::state::{self, AppState, DeviceRow, DeviceView};

/// The connection to `swp-auth`, set up at start when `[swp] url` is configured.
#[derive(Default)]
pub struct Swp {
    client: OnceLock<Client>,
}

struct Client {
    url: String,
    channel: Channel,
    timeout: Duration,
}

impl Swp {
    /// Connects (lazily) to `swp-auth` when `[swp] url` is set, with this server's node
    /// identity in the network.
    pub fn configure(&self, cfg: &ServerConfig, identity: &NodeIdentity) -> anyhow::Result<()> {
        let url = cfg.swp.url.trim();
        if url.is_empty() {
            return Ok(());
        }
        let addr = url
            .strip_prefix("https://")
            .ok_or_else(|| anyhow::anyhow!("swp.url `{url}` must start with https://"))?
            .trim_end_matches('/');
        let channel = ums_cluster::internal_channel(identity, addr)
            .map_err(|e| anyhow::anyhow!("swp.url `{url}`: {e}"))?;
        let _ = self.client.set(Client {
            url: url.to_owned(),
            channel,
            timeout: Duration::from_millis(cfg.swp.timeout_ms.max(100)),
        });
        tracing::info!(%url, "Shared Workplace logins through swp-auth");
        Ok(())
    }

    fn client(&self) -> Result<&Client, Status> {
        self.client.get().ok_or_else(|| {
            Status::failed_precondition(
                "Shared Workplace is not set up on this server: configure [swp] url",
            )
        })
    }
}

/// The directory as swp-auth needs it, with the bind password opened.
fn directory_pb(state: &AppState, d: &Directory) -> Result<pb::Directory, Status> {
    let bind_password = state
        .network
        .open_secret(&d.input.bind_password)
        .ok_or_else(|| {
            Status::failed_precondition(format!(
                "the bind password of directory `{}` does not open with this network's CA key: set it again",
                d.input.name
            ))
        })?;
    Ok(pb::Directory {
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
    })
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

/// The directory a typed user name belongs to: by its domain (`alice@ad.example.org`,
/// `AD\alice`), by the name an administrator gave, or the first directory.
fn pick_directory<'a>(
    model: &'a SettingsModel,
    username: &str,
    by_name: &str,
) -> Result<&'a Directory, Status> {
    let dirs = &model.swp.directories;
    if !by_name.is_empty() {
        return dirs
            .values()
            .find(|d| d.input.name.eq_ignore_ascii_case(by_name))
            .ok_or_else(|| Status::not_found(format!("directory `{by_name}` not found")));
    }
    let first = dirs.values().next().ok_or_else(|| {
        Status::failed_precondition("no directory is configured for Shared Workplace logins")
    })?;
    let name = username.trim();
    if let Some((netbios, _)) = name.split_once('\\')
        && let Some(d) = dirs
            .values()
            .find(|d| !d.input.netbios.is_empty() && d.input.netbios.eq_ignore_ascii_case(netbios))
    {
        return Ok(d);
    }
    if let Some((_, domain)) = name.rsplit_once('@')
        && let Some(d) = dirs
            .values()
            .find(|d| !d.input.domain.is_empty() && d.input.domain.eq_ignore_ascii_case(domain))
    {
        return Ok(d);
    }
    Ok(first)
}

/// The user part of a typed name: `AD\alice` and `alice@ad.example.org` are `alice`.
fn user_part(name: &str) -> &str {
    let name = name.trim();
    let name = name.split_once('\\').map_or(name, |(_, u)| u);
    name.rsplit_once('@').map_or(name, |(u, _)| u)
}

/// The layers of a device: the device, its folder, the parents.
fn device_layers<'a>(model: &'a SettingsModel, d: &DeviceView<'a>) -> Vec<Layer<'a>> {
    let profiles = |ids: Option<&Vec<i64>>| -> Vec<&Profile> {
        ids.into_iter()
            .flatten()
            .filter_map(|p| model.profiles.get(p).map(|(p, _)| p))
            .collect()
    };
    let mut layers = vec![Layer {
        object: ObjectRef {
            kind: ObjectKind::Device,
            id: d.id,
        },
        object_name: d.name,
        profiles: profiles(model.device_profiles.get(&d.id)),
    }];
    let mut next = d.folder_id;
    let mut seen = HashSet::new();
    while let Some(f) = next {
        let Some(folder) = model.folders.get(&f) else {
            break;
        };
        if !seen.insert(f) {
            break;
        }
        layers.push(Layer {
            object: ObjectRef {
                kind: ObjectKind::Folder,
                id: f,
            },
            object_name: &folder.name,
            profiles: profiles(model.folder_profiles.get(&f)),
        });
        next = folder.parent_id;
    }
    layers
}

/// The user's side of the chain: user, primary group, groups (by level, then name), OUs
/// (closest first). Only objects profiles are assigned to make a layer; a group or OU matches
/// an assignment by its name or by its DN. Also returns the newest stamp among them and their
/// profiles.
fn user_layers<'a>(
    model: &'a SettingsModel,
    directory: i64,
    user: &'a DirectoryUser,
) -> (Vec<Layer<'a>>, i64) {
    let swp = &model.swp;
    let mut rev = 0;
    let mut layers = Vec::new();
    let mut add = |kind: PrincipalKind, keys: &[&str], name: &'a str| {
        let mut ids: Vec<i64> = Vec::new();
        let mut object = None;
        for key in keys {
            let key = ums_db::swp::principal_key(key);
            if let Some(p) = swp.principal(directory, kind, &key) {
                rev = rev.max(p.rev);
                object.get_or_insert(p.id);
                for id in swp.principal_profiles.get(&p.id).into_iter().flatten() {
                    if !ids.contains(id) {
                        ids.push(*id);
                    }
                }
            }
        }
        let Some(id) = object else {
            return;
        };
        let profiles: Vec<&Profile> = ids
            .iter()
            .filter_map(|p| model.profiles.get(p))
            .map(|(p, r)| {
                rev = rev.max(*r);
                p
            })
            .collect();
        layers.push(Layer {
            object: ObjectRef {
                kind: kind.object_kind(),
                id,
            },
            object_name: name,
            profiles,
        });
    };
    add(PrincipalKind::User, &[&user.login], &user.login);
    for g in ums_domain::order_groups(user.primary_group.as_ref(), &user.groups) {
        add(PrincipalKind::Group, &[&g.name, &g.dn], &g.name);
    }
    for ou in &user.ous {
        add(PrincipalKind::Ou, &[&ou.name, &ou.dn], &ou.name);
    }
    (layers, rev)
}

/// A user's effective settings on a device and their revision.
pub fn user_settings(
    model: &SettingsModel,
    device: &DeviceView<'_>,
    directory: i64,
    user: &DirectoryUser,
) -> (Effective, u64) {
    let (users, user_rev) = user_layers(model, directory, user);
    let devices = device_layers(model, device);
    let mut out = ums_domain::merge_user(&users, &devices);
    out.warnings.extend(model.warnings.iter().cloned());
    let rev = state::revision(model, device).max(u64::try_from(user_rev).unwrap_or(0));
    (out, rev)
}

fn settings_pb(e: Effective) -> Vec<device_pb::Setting> {
    e.values
        .into_iter()
        .map(|v| device_pb::Setting {
            key: v.key,
            r#type: v.value.type_name().to_owned(),
            value: v.value.to_string(),
        })
        .collect()
}

/// The status a server passes on for an answer of swp-auth.
fn relay(client: &Client, s: Status) -> Status {
    match s.code() {
        tonic::Code::Unavailable if !s.message().starts_with("directory") => {
            tracing::warn!(url = %client.url, error = %s.message(), "swp-auth unreachable");
            Status::unavailable(format!(
                "the Shared Workplace login service is unreachable: {}",
                s.message()
            ))
        }
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            Status::unavailable("the Shared Workplace login timed out: try again")
        }
        _ => Status::new(s.code(), s.message().to_owned()),
    }
}

/// A device login: licence and switch, then swp-auth, then the merge.
pub async fn login(
    state: &AppState,
    device_id: i64,
    r: device_pb::LoginRequest,
) -> Result<device_pb::LoginResponse, Status> {
    let model = state.settings();
    let dev = model
        .swp
        .devices
        .get(&device_id)
        .copied()
        .unwrap_or_default();
    if !dev.licensed {
        return Err(Status::failed_precondition(format!(
            "device {device_id} has no Shared Workplace licence"
        )));
    }
    if !dev.enabled {
        return Err(Status::failed_precondition(format!(
            "Shared Workplace is switched off on device {device_id}"
        )));
    }
    if r.password.is_empty() {
        return Err(Status::invalid_argument("password is empty"));
    }
    let client = state.swp.client()?;
    let directory = pick_directory(&model, &r.username, "")?;
    let mut req = Request::new(pb::AuthenticateRequest {
        directory: Some(directory_pb(state, directory)?),
        username: r.username,
        password: r.password,
        device_id,
    });
    req.set_timeout(client.timeout);
    let answer = SwpAuthServiceClient::new(client.channel.clone())
        .authenticate(req)
        .await
        .map_err(|s| relay(client, s))?
        .into_inner();
    let user = user_from_pb(answer);
    let row: DeviceRow = state
        .db
        .get_device(device_id)
        .await
        .map_err(ApiError::from)?
        .into();
    let (effective, revision) = user_settings(&model, &row.view(device_id), directory.id, &user);
    for w in &effective.warnings {
        tracing::debug!(device_id, user = %user.login, warning = %w, "user settings");
    }
    state
        .db
        .start_swp_session(&SwpSession {
            device_id,
            directory_id: directory.id,
            login: user.login.clone(),
            user_json: serde_json::to_string(&user).unwrap_or_default(),
            token_hash: String::new(),
            started_at: ums_db::now_ms(),
        })
        .await
        .map_err(ApiError::from)?;
    tracing::info!(device_id, user = %user.login, directory = %directory.input.name, "user logged in");
    Ok(device_pb::LoginResponse {
        user: user.login,
        display_name: user.display_name,
        revision,
        settings: settings_pb(effective),
    })
}

/// Ends a device's user session: the device's own settings.
pub async fn logout(
    state: &AppState,
    device_id: i64,
) -> Result<device_pb::GetSettingsResponse, Status> {
    if state
        .db
        .end_swp_session(device_id)
        .await
        .map_err(ApiError::from)?
    {
        tracing::info!(device_id, "user logged out");
    }
    let row: DeviceRow = state
        .db
        .get_device(device_id)
        .await
        .map_err(ApiError::from)?
        .into();
    let (effective, revision) = state::settings_of(&state.settings(), &row.view(device_id));
    Ok(device_pb::GetSettingsResponse {
        revision,
        settings: settings_pb(effective),
    })
}

/// `settings explain DEVICE --user NAME`: the user looked up with the bind account.
pub async fn explain(
    state: &AppState,
    r: &admin_pb::ExplainSettingsRequest,
) -> Result<(Effective, u64, Option<admin_pb::SwpUser>), Status> {
    let model = state.settings();
    let client = state.swp.client()?;
    let directory = pick_directory(&model, &r.user, &r.directory)?;
    let mut req = Request::new(pb::LookupUserRequest {
        directory: Some(directory_pb(state, directory)?),
        username: r.user.clone(),
    });
    req.set_timeout(client.timeout);
    let user = user_from_pb(
        SwpAuthServiceClient::new(client.channel.clone())
            .lookup_user(req)
            .await
            .map_err(|s| relay(client, s))?
            .into_inner(),
    );
    let row: DeviceRow = state
        .db
        .get_device(r.device_id)
        .await
        .map_err(ApiError::from)?
        .into();
    let (effective, revision) = user_settings(&model, &row.view(r.device_id), directory.id, &user);
    let info = admin_pb::SwpUser {
        directory: directory.input.name.clone(),
        login: user.login.clone(),
        dn: user.dn.clone(),
        display_name: user.display_name.clone(),
        primary_group: user
            .primary_group
            .as_ref()
            .map(|g| g.name.clone())
            .unwrap_or_default(),
        groups: ums_domain::order_groups(user.primary_group.as_ref(), &user.groups)
            .iter()
            .map(|g| g.name.clone())
            .collect(),
        ous: user.ous.iter().map(|o| o.name.clone()).collect(),
    };
    Ok((effective, revision, Some(info)))
}

/// Refuses to save device-only parameters into a profile assigned to users, groups or OUs.
pub async fn check_user_profile(
    state: &AppState,
    profile_id: i64,
    set: &[(String, String)],
) -> Result<(), Status> {
    let bad = ums_domain::device_only_keys(set.iter().map(|(k, _)| k.as_str()));
    if bad.is_empty() {
        return Ok(());
    }
    let assigned = state
        .db
        .profile_has_principals(profile_id)
        .await
        .map_err(ApiError::from)?;
    if assigned {
        return Err(Status::invalid_argument(format!(
            "profile {profile_id} is assigned to users, groups or OUs, and {} {} device-only: \
             device-only parameters never take effect for users",
            bad.join(", "),
            if bad.len() == 1 { "is" } else { "are" }
        )));
    }
    Ok(())
}

type Reply<T> = Result<Response<T>, Status>;

fn directory_input(spec: admin_pb::DirectorySpec, create: bool) -> Result<DirectoryInput, Status> {
    let invalid = |m: String| Status::invalid_argument(m);
    let name = ums_domain::validate_name("directory name", &spec.name).map_err(ApiError::from)?;
    let kind = DirectoryKind::parse(if spec.kind.is_empty() {
        "ad"
    } else {
        &spec.kind
    })
    .map_err(ApiError::from)?;
    let urls: Vec<String> = spec
        .urls
        .iter()
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    if urls.is_empty() {
        return Err(invalid("give at least one controller URL".into()));
    }
    for u in &urls {
        if !(u.starts_with("ldaps://") || (u.starts_with("ldap://") && spec.starttls)) {
            return Err(invalid(format!(
                "`{u}`: passwords are only sent over TLS: use ldaps://, or ldap:// with starttls"
            )));
        }
    }
    if spec.base_dn.trim().is_empty() || !spec.base_dn.contains('=') {
        return Err(invalid(
            "base_dn must be a DN such as dc=example,dc=org".into(),
        ));
    }
    if spec.bind_dn.trim().is_empty() {
        return Err(invalid(
            "bind_dn: the account swp-auth searches with".into(),
        ));
    }
    if create && spec.bind_password.is_empty() {
        return Err(invalid("bind_password is required".into()));
    }
    if !matches!(spec.group_membership.as_str(), "" | "memberof" | "member") {
        return Err(invalid(format!(
            "group_membership `{}`: use memberof or member",
            spec.group_membership
        )));
    }
    if !spec.ca_pem.trim().is_empty() && ums_tls::parse_certs(&spec.ca_pem).is_err() {
        return Err(invalid("ca_pem holds no PEM certificate".into()));
    }
    Ok(DirectoryInput {
        name,
        kind,
        domain: spec.domain.trim().to_owned(),
        netbios: spec.netbios.trim().to_owned(),
        urls,
        base_dn: spec.base_dn.trim().to_owned(),
        bind_dn: spec.bind_dn.trim().to_owned(),
        bind_password: spec.bind_password,
        ca_pem: spec.ca_pem,
        starttls: spec.starttls,
        page_size: if spec.page_size == 0 {
            500
        } else {
            spec.page_size.min(10_000)
        },
        login_attribute: spec.login_attribute.trim().to_owned(),
        user_filter: spec.user_filter.trim().to_owned(),
        group_membership: spec.group_membership,
    })
}

fn directory_info(d: Directory) -> admin_pb::DirectoryInfo {
    admin_pb::DirectoryInfo {
        id: d.id,
        has_bind_password: !d.input.bind_password.is_empty(),
        spec: Some(admin_pb::DirectorySpec {
            name: d.input.name,
            kind: d.input.kind.as_str().to_owned(),
            domain: d.input.domain,
            netbios: d.input.netbios,
            urls: d.input.urls,
            base_dn: d.input.base_dn,
            bind_dn: d.input.bind_dn,
            bind_password: String::new(),
            ca_pem: d.input.ca_pem,
            starttls: d.input.starttls,
            page_size: d.input.page_size,
            login_attribute: d.input.login_attribute,
            user_filter: d.input.user_filter,
            group_membership: d.input.group_membership,
        }),
    }
}

impl AdminApi {
    fn directory_id(&self, name: &str) -> Result<i64, Status> {
        let model = self.state.settings();
        let dirs = &model.swp.directories;
        if name.is_empty() {
            return match dirs.len() {
                1 => Ok(*dirs.keys().next().unwrap_or(&0)),
                0 => Err(Status::failed_precondition("no directory is configured")),
                _ => Err(Status::invalid_argument(
                    "several directories are configured: name one",
                )),
            };
        }
        dirs.values()
            .find(|d| d.input.name.eq_ignore_ascii_case(name))
            .map(|d| d.id)
            .ok_or_else(|| Status::not_found(format!("directory `{name}` not found")))
    }

    pub(crate) async fn swp_create_directory(
        &self,
        request: Request<admin_pb::DirectorySpec>,
    ) -> Reply<admin_pb::DirectoryInfo> {
        self.caller(&request).await?.require("settings:write")?;
        let mut input = directory_input(request.into_inner(), true)?;
        input.bind_password = self.state.network.seal_secret(&input.bind_password);
        let d = self
            .state
            .db
            .create_directory(&input)
            .await
            .map_err(ApiError::from)?;
        self.reload().await?;
        tracing::info!(directory = %d.input.name, "directory created");
        Ok(Response::new(directory_info(d)))
    }

    pub(crate) async fn swp_update_directory(
        &self,
        request: Request<admin_pb::UpdateDirectoryRequest>,
    ) -> Reply<admin_pb::DirectoryInfo> {
        self.caller(&request).await?.require("settings:write")?;
        let r = request.into_inner();
        let mut input = directory_input(r.spec.unwrap_or_default(), false)?;
        if !input.bind_password.is_empty() {
            input.bind_password = self.state.network.seal_secret(&input.bind_password);
        }
        let d = self
            .state
            .db
            .update_directory(r.id, &input)
            .await
            .map_err(ApiError::from)?;
        self.reload().await?;
        Ok(Response::new(directory_info(d)))
    }

    pub(crate) async fn swp_list_directories(
        &self,
        request: Request<admin_pb::ListDirectoriesRequest>,
    ) -> Reply<admin_pb::ListDirectoriesResponse> {
        self.caller(&request).await?.require("settings:read")?;
        let list = self
            .state
            .db
            .list_directories()
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(admin_pb::ListDirectoriesResponse {
            directories: list.into_iter().map(directory_info).collect(),
        }))
    }

    pub(crate) async fn swp_delete_directory(
        &self,
        request: Request<admin_pb::DeleteDirectoryRequest>,
    ) -> Reply<admin_pb::Empty> {
        self.caller(&request).await?.require("settings:write")?;
        self.state
            .db
            .delete_directory(request.into_inner().id)
            .await
            .map_err(ApiError::from)?;
        self.reload().await?;
        Ok(Response::new(admin_pb::Empty {}))
    }

    fn principal_of(r: &admin_pb::AssignUserRequest) -> Result<(PrincipalKind, String), Status> {
        let given: Vec<(PrincipalKind, &str)> = [
            (PrincipalKind::User, r.user.trim()),
            (PrincipalKind::Group, r.group.trim()),
            (PrincipalKind::Ou, r.ou.trim()),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect();
        match given.as_slice() {
            [(PrincipalKind::User, name)] => Ok((PrincipalKind::User, user_part(name).to_owned())),
            [(kind, name)] if name.len() <= 1024 && !name.chars().any(char::is_control) => {
                Ok((*kind, (*name).to_owned()))
            }
            [_] => Err(Status::invalid_argument("the name is not valid")),
            _ => Err(Status::invalid_argument(
                "give exactly one of user, group and ou",
            )),
        }
    }

    pub(crate) async fn swp_assign_user(
        &self,
        request: Request<admin_pb::AssignUserRequest>,
    ) -> Reply<admin_pb::Empty> {
        self.caller(&request).await?.require("settings:write")?;
        let r = request.into_inner();
        let (kind, name) = Self::principal_of(&r)?;
        let directory = self.directory_id(&r.directory)?;
        self.state
            .db
            .assign_principal(r.profile_id, directory, kind, &name)
            .await
            .map_err(ApiError::from)?;
        self.reload().await?;
        Ok(Response::new(admin_pb::Empty {}))
    }

    pub(crate) async fn swp_unassign_user(
        &self,
        request: Request<admin_pb::AssignUserRequest>,
    ) -> Reply<admin_pb::Empty> {
        self.caller(&request).await?.require("settings:write")?;
        let r = request.into_inner();
        let (kind, name) = Self::principal_of(&r)?;
        let directory = self.directory_id(&r.directory)?;
        self.state
            .db
            .unassign_principal(r.profile_id, directory, kind, &name)
            .await
            .map_err(ApiError::from)?;
        self.reload().await?;
        Ok(Response::new(admin_pb::Empty {}))
    }

    pub(crate) async fn swp_list_user_assignments(
        &self,
        request: Request<admin_pb::ListUserAssignmentsRequest>,
    ) -> Reply<admin_pb::ListUserAssignmentsResponse> {
        self.caller(&request).await?.require("settings:read")?;
        let r = request.into_inner();
        let list = self
            .state
            .db
            .list_principal_assignments(r.profile_id)
            .await
            .map_err(ApiError::from)?;
        let model = self.state.settings();
        Ok(Response::new(admin_pb::ListUserAssignmentsResponse {
            assignments: list
                .into_iter()
                .map(|(profile_id, p)| admin_pb::UserAssignment {
                    profile_id,
                    directory: model
                        .swp
                        .directories
                        .get(&p.directory_id)
                        .map(|d| d.input.name.clone())
                        .unwrap_or_default(),
                    kind: p.kind.as_str().to_owned(),
                    name: p.name,
                })
                .collect(),
        }))
    }

    pub(crate) async fn swp_set_shared_workplace(
        &self,
        request: Request<admin_pb::SetSharedWorkplaceRequest>,
    ) -> Reply<admin_pb::SharedWorkplaceState> {
        self.caller(&request).await?.require("devices:write")?;
        let r = request.into_inner();
        let s = self
            .state
            .db
            .set_swp_device(r.device_id, r.licensed, r.enabled)
            .await
            .map_err(ApiError::from)?;
        self.reload().await?;
        Ok(Response::new(admin_pb::SharedWorkplaceState {
            device_id: r.device_id,
            licensed: s.licensed,
            enabled: s.enabled,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_parts() {
        assert_eq!(user_part("AD\\alice"), "alice");
        assert_eq!(user_part(" alice@ad.example.org "), "alice");
        assert_eq!(user_part("alice"), "alice");
    }
}
