//! Shared Workplace as administrators manage it: directories (their bind passwords stored
//! sealed), profiles assigned to users, groups and OUs, per-device licences and switches, and
//! `settings explain --user`.

use ums_db::swp::{Directory, DirectoryInput, DirectoryKind, PrincipalKind};
use ums_domain::Effective;
use ums_proto::admin::v1 as pb;

use super::{AdminApi, Caller};
use crate::error::ApiError;
use crate::settings::{pick_directory, user_part, user_settings};

fn directory_input(spec: pb::DirectorySpec, create: bool) -> Result<DirectoryInput, ApiError> {
    let invalid = ApiError::Invalid;
    let name = ums_domain::validate_name("directory name", &spec.name)?;
    let kind = DirectoryKind::parse(if spec.kind.is_empty() {
        "ad"
    } else {
        &spec.kind
    })?;
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

fn directory_info(d: Directory) -> pb::DirectoryInfo {
    pb::DirectoryInfo {
        id: d.id,
        has_bind_password: !d.input.bind_password.is_empty(),
        spec: Some(pb::DirectorySpec {
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

/// A directory by the name an administrator gave; the only one when none is given.
fn directory_id(api: &AdminApi, name: &str) -> Result<i64, ApiError> {
    let model = api.state.settings();
    let dirs = &model.swp.directories;
    if name.is_empty() {
        return match dirs.keys().next() {
            Some(id) if dirs.len() == 1 => Ok(*id),
            None => Err(ApiError::FailedPrecondition(
                "no directory is configured".into(),
            )),
            Some(_) => Err(ApiError::Invalid(
                "several directories are configured: name one".into(),
            )),
        };
    }
    dirs.values()
        .find(|d| d.input.name.eq_ignore_ascii_case(name))
        .map(|d| d.id)
        .ok_or_else(|| ApiError::NotFound(format!("directory `{name}` not found")))
}

/// The directory as swp-auth needs it, with the bind password opened.
pub(crate) fn directory_for_swp(
    state: &crate::state::AppState,
    d: &Directory,
) -> Result<ums_proto::swp::v1::Directory, ApiError> {
    state.swp_directory(d)
}

pub async fn create_directory(
    api: &AdminApi,
    _: Caller,
    spec: pb::DirectorySpec,
) -> Result<pb::DirectoryInfo, ApiError> {
    let mut input = directory_input(spec, true)?;
    input.bind_password = api.state.network.seal_secret(&input.bind_password);
    let d = api.state.db.create_directory(&input).await?;
    api.state.settings_written().await?;
    tracing::info!(directory = %d.input.name, "directory created");
    Ok(directory_info(d))
}

pub async fn update_directory(
    api: &AdminApi,
    _: Caller,
    r: pb::UpdateDirectoryRequest,
) -> Result<pb::DirectoryInfo, ApiError> {
    let mut input = directory_input(r.spec.unwrap_or_default(), false)?;
    if !input.bind_password.is_empty() {
        input.bind_password = api.state.network.seal_secret(&input.bind_password);
    }
    let d = api.state.db.update_directory(r.id, &input).await?;
    api.state.settings_written().await?;
    Ok(directory_info(d))
}

pub async fn list_directories(
    api: &AdminApi,
    _: Caller,
    _: pb::ListDirectoriesRequest,
) -> Result<pb::ListDirectoriesResponse, ApiError> {
    let list = api.state.db.list_directories().await?;
    Ok(pb::ListDirectoriesResponse {
        directories: list.into_iter().map(directory_info).collect(),
    })
}

pub async fn delete_directory(
    api: &AdminApi,
    _: Caller,
    r: pb::DeleteDirectoryRequest,
) -> Result<pb::Empty, ApiError> {
    api.state.db.delete_directory(r.id).await?;
    api.state.settings_written().await?;
    Ok(pb::Empty {})
}

fn principal_of(r: &pb::AssignUserRequest) -> Result<(PrincipalKind, String), ApiError> {
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
        [_] => Err(ApiError::Invalid("the name is not valid".into())),
        _ => Err(ApiError::Invalid(
            "give exactly one of user, group and ou".into(),
        )),
    }
}

pub async fn assign_user(
    api: &AdminApi,
    _: Caller,
    r: pb::AssignUserRequest,
) -> Result<pb::Empty, ApiError> {
    let (kind, name) = principal_of(&r)?;
    let directory = directory_id(api, &r.directory)?;
    api.state
        .db
        .assign_principal(r.profile_id, directory, kind, &name)
        .await?;
    api.state.settings_written().await?;
    Ok(pb::Empty {})
}

pub async fn unassign_user(
    api: &AdminApi,
    _: Caller,
    r: pb::AssignUserRequest,
) -> Result<pb::Empty, ApiError> {
    let (kind, name) = principal_of(&r)?;
    let directory = directory_id(api, &r.directory)?;
    api.state
        .db
        .unassign_principal(r.profile_id, directory, kind, &name)
        .await?;
    api.state.settings_written().await?;
    Ok(pb::Empty {})
}

pub async fn list_user_assignments(
    api: &AdminApi,
    _: Caller,
    r: pb::ListUserAssignmentsRequest,
) -> Result<pb::ListUserAssignmentsResponse, ApiError> {
    let list = api
        .state
        .db
        .list_principal_assignments(r.profile_id)
        .await?;
    let model = api.state.settings();
    Ok(pb::ListUserAssignmentsResponse {
        assignments: list
            .into_iter()
            .map(|(profile_id, p)| pb::UserAssignment {
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
    })
}

pub async fn set_shared_workplace(
    api: &AdminApi,
    _: Caller,
    r: pb::SetSharedWorkplaceRequest,
) -> Result<pb::SharedWorkplaceState, ApiError> {
    let s = api
        .state
        .db
        .set_swp_device(r.device_id, r.licensed, r.enabled)
        .await?;
    api.state.settings_written().await?;
    Ok(pb::SharedWorkplaceState {
        device_id: r.device_id,
        licensed: s.licensed,
        enabled: s.enabled,
    })
}

/// Refuses to save device-only parameters into a profile assigned to users, groups or OUs.
pub async fn check_user_profile(
    api: &AdminApi,
    profile_id: i64,
    set: &[(String, String)],
) -> Result<(), ApiError> {
    let bad = ums_domain::device_only_keys(set.iter().map(|(k, _)| k.as_str()));
    if bad.is_empty() {
        return Ok(());
    }
    if api.state.db.profile_has_principals(profile_id).await? {
        return Err(ApiError::Invalid(format!(
            "profile {profile_id} is assigned to users, groups or OUs, and {} {} device-only: \
             device-only parameters never take effect for users",
            bad.join(", "),
            if bad.len() == 1 { "is" } else { "are" }
        )));
    }
    Ok(())
}

/// `settings explain DEVICE --user NAME`: the user looked up with the bind account.
pub async fn explain_user(
    api: &AdminApi,
    r: &pb::ExplainSettingsRequest,
) -> Result<(Effective, u64, pb::SwpUser), ApiError> {
    let state = &api.state;
    let model = state.settings();
    let directory = pick_directory(&model, &r.user, &r.directory)?;
    let user = state
        .swp
        .lookup(directory_for_swp(state, directory)?, r.user.clone())
        .await?;
    let row = state.device_row(r.device_id).await?;
    let (effective, revision) = user_settings(&model, &row.view(r.device_id), directory.id, &user);
    let info = pb::SwpUser {
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
    Ok((effective, revision, info))
}

pub async fn set_folder_shared_workplace(
    api: &AdminApi,
    _: Caller,
    r: pb::SetFolderSharedWorkplaceRequest,
) -> Result<pb::Empty, ApiError> {
    api.state.db.set_swp_folder(r.folder_id, r.enabled).await?;
    api.state.settings_written().await?;
    tracing::info!(folder_id = r.folder_id, enabled = ?r.enabled, "Shared Workplace switch of a folder set");
    Ok(pb::Empty {})
}

fn licence_pb(l: ums_db::swp::SwpLicence, now: i64) -> pb::SwpLicence {
    pb::SwpLicence {
        id: l.id,
        name: l.name,
        seats: l.seats,
        used: l.used,
        // The last valid day is the day before the instant it expires.
        expires: ums_domain::format_date_ms(l.expires_at - 1),
        expired: l.expires_at <= now,
    }
}

pub async fn create_licence(
    api: &AdminApi,
    _: Caller,
    r: pb::CreateSwpLicenceRequest,
) -> Result<pb::SwpLicence, ApiError> {
    let name = ums_domain::validate_name("licence name", &r.name)?;
    if r.seats <= 0 || r.seats > 10_000_000 {
        return Err(ApiError::Invalid(
            "seats: a licence has 1 to 10,000,000 seats".into(),
        ));
    }
    let last_day = ums_domain::parse_date(&r.expires).ok_or_else(|| {
        ApiError::Invalid(format!(
            "expires `{}`: give the last valid day as YYYY-MM-DD",
            r.expires
        ))
    })?;
    let expires_at = last_day + 86_400_000;
    let l = api
        .state
        .db
        .create_swp_licence(&name, r.seats, expires_at)
        .await?;
    api.state.settings_written().await?;
    tracing::info!(licence = %l.name, seats = l.seats, expires = %r.expires, "Shared Workplace licence added");
    Ok(licence_pb(l, ums_db::now_ms()))
}

pub async fn list_licences(
    api: &AdminApi,
    _: Caller,
    _: pb::ListSwpLicencesRequest,
) -> Result<pb::ListSwpLicencesResponse, ApiError> {
    let now = ums_db::now_ms();
    Ok(pb::ListSwpLicencesResponse {
        licences: api
            .state
            .db
            .list_swp_licences()
            .await?
            .into_iter()
            .map(|l| licence_pb(l, now))
            .collect(),
    })
}

pub async fn delete_licence(
    api: &AdminApi,
    _: Caller,
    r: pb::DeleteSwpLicenceRequest,
) -> Result<pb::Empty, ApiError> {
    api.state.db.delete_swp_licence(r.id).await?;
    api.state.settings_written().await?;
    Ok(pb::Empty {})
}

async fn session_pb(api: &AdminApi, s: ums_db::swp::SwpSession) -> pb::SwpSession {
    let model = api.state.settings();
    let device_name = api
        .state
        .db
        .get_device(s.device_id)
        .await
        .map(|d| d.name)
        .unwrap_or_default();
    let display_name = serde_json::from_str::<ums_domain::DirectoryUser>(&s.user_json)
        .map(|u| u.display_name)
        .unwrap_or_default();
    pb::SwpSession {
        device_id: s.device_id,
        device_name,
        directory: model
            .swp
            .directories
            .get(&s.directory_id)
            .map(|d| d.input.name.clone())
            .unwrap_or_default(),
        user: s.login,
        display_name,
        started_at_ms: s.started_at,
        server_id: s.server_id,
    }
}

pub async fn list_sessions(
    api: &AdminApi,
    _: Caller,
    r: pb::ListSwpSessionsRequest,
) -> Result<pb::ListSwpSessionsResponse, ApiError> {
    let user = r.user.trim();
    let list = api
        .state
        .db
        .list_swp_sessions((!user.is_empty()).then(|| user_part(user)))
        .await?;
    let mut sessions = Vec::with_capacity(list.len());
    for s in list {
        sessions.push(session_pb(api, s).await);
    }
    Ok(pb::ListSwpSessionsResponse { sessions })
}

pub async fn end_session(
    api: &AdminApi,
    caller: Caller,
    r: pb::EndSwpSessionRequest,
) -> Result<pb::SwpSession, ApiError> {
    let ended = api
        .state
        .db
        .end_swp_session(r.device_id)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!("nobody is logged in on device {}", r.device_id))
        })?;
    api.state.forget_session(r.device_id);
    tracing::info!(device_id = r.device_id, user = %ended.login, by = %caller.username, "user logged out by an administrator");
    Ok(session_pb(api, ended).await)
}
