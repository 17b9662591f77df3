//! Folders, profiles and their parameters, assignments to devices and folders, the parameter
//! catalog, and `settings explain` (for a device, or a user on a device).

use std::collections::HashSet;

use ums_domain::{Effective, ObjectKind, ObjectRef};
use ums_proto::admin::v1 as pb;

use super::{AdminApi, Caller};
use crate::error::ApiError;
use crate::settings::device_settings;

/// The one object of a request that names a device or a folder.
pub(crate) fn target(
    device_id: Option<i64>,
    folder_id: Option<i64>,
) -> Result<ObjectRef, ApiError> {
    match (device_id, folder_id) {
        (Some(id), None) => Ok(ObjectRef {
            kind: ObjectKind::Device,
            id,
        }),
        (None, Some(id)) => Ok(ObjectRef {
            kind: ObjectKind::Folder,
            id,
        }),
        _ => Err(ApiError::Invalid(
            "give exactly one of device_id and folder_id".into(),
        )),
    }
}

/// Validates parameters and returns them in their normalised text form.
fn normalise_params(params: &[pb::Param]) -> Result<Vec<(String, String)>, ApiError> {
    let mut seen = HashSet::new();
    params
        .iter()
        .map(|p| {
            let key = p.key.trim();
            let value = ums_domain::parse_param(key, &p.value)?;
            if !seen.insert(key.to_owned()) {
                return Err(ApiError::Invalid(format!("parameter `{key}` given twice")));
            }
            Ok((key.to_owned(), value.to_string()))
        })
        .collect()
}

fn profile_pb(p: ums_db::settings::StoredProfile) -> pb::Profile {
    pb::Profile {
        id: p.id,
        name: p.name,
        description: p.description,
        priority: p.priority,
        params: p
            .params
            .into_iter()
            .map(|(key, value)| pb::Param { key, value })
            .collect(),
    }
}

fn folder_pb(f: ums_db::settings::Folder) -> pb::Folder {
    pb::Folder {
        id: f.id,
        name: f.name,
        parent_id: f.parent_id,
    }
}

pub async fn create_folder(
    api: &AdminApi,
    _: Caller,
    r: pb::CreateFolderRequest,
) -> Result<pb::Folder, ApiError> {
    let name = ums_domain::validate_name("folder name", &r.name)?;
    let f = api.state.db.create_folder(&name, r.parent_id).await?;
    api.state.settings_written().await?;
    Ok(folder_pb(f))
}

pub async fn list_folders(
    api: &AdminApi,
    _: Caller,
    _: pb::ListFoldersRequest,
) -> Result<pb::ListFoldersResponse, ApiError> {
    let folders = api.state.db.list_folders().await?;
    Ok(pb::ListFoldersResponse {
        folders: folders.into_iter().map(folder_pb).collect(),
    })
}

pub async fn delete_folder(
    api: &AdminApi,
    _: Caller,
    r: pb::DeleteFolderRequest,
) -> Result<pb::Empty, ApiError> {
    api.state.db.delete_folder(r.id).await?;
    api.state.settings_written().await?;
    Ok(pb::Empty {})
}

pub async fn create_profile(
    api: &AdminApi,
    _: Caller,
    r: pb::CreateProfileRequest,
) -> Result<pb::Profile, ApiError> {
    let name = ums_domain::validate_name("profile name", &r.name)?;
    if r.description.len() > 4096 {
        return Err(ApiError::Invalid(
            "description must be at most 4096 bytes".into(),
        ));
    }
    let params = normalise_params(&r.params)?;
    let p = api
        .state
        .db
        .create_profile(&name, &r.description, r.priority, &params)
        .await?;
    api.state.settings_written().await?;
    Ok(profile_pb(p))
}

pub async fn list_profiles(
    api: &AdminApi,
    _: Caller,
    _: pb::ListProfilesRequest,
) -> Result<pb::ListProfilesResponse, ApiError> {
    let profiles = api.state.db.list_profiles().await?;
    Ok(pb::ListProfilesResponse {
        profiles: profiles.into_iter().map(profile_pb).collect(),
    })
}

pub async fn get_profile(
    api: &AdminApi,
    _: Caller,
    r: pb::GetProfileRequest,
) -> Result<pb::Profile, ApiError> {
    Ok(profile_pb(api.state.db.get_profile(r.id).await?))
}

pub async fn update_profile_params(
    api: &AdminApi,
    _: Caller,
    r: pb::UpdateProfileParamsRequest,
) -> Result<pb::Profile, ApiError> {
    let set = normalise_params(&r.set)?;
    super::swp::check_user_profile(api, r.id, &set).await?;
    let unset: Vec<String> = r.unset.iter().map(|k| k.trim().to_owned()).collect();
    if let Some(k) = unset.iter().find(|k| set.iter().any(|(s, _)| s == *k)) {
        return Err(ApiError::Invalid(format!(
            "parameter `{k}` is both set and unset"
        )));
    }
    let p = api
        .state
        .db
        .update_profile_params(r.id, &set, &unset)
        .await?;
    api.state.settings_written().await?;
    Ok(profile_pb(p))
}

pub async fn delete_profile(
    api: &AdminApi,
    _: Caller,
    r: pb::DeleteProfileRequest,
) -> Result<pb::Empty, ApiError> {
    api.state.db.delete_profile(r.id, r.force).await?;
    api.state.settings_written().await?;
    Ok(pb::Empty {})
}

pub async fn list_parameters(
    _: &AdminApi,
    _: Caller,
    _: pb::ListParametersRequest,
) -> Result<pb::ListParametersResponse, ApiError> {
    Ok(pb::ListParametersResponse {
        parameters: ums_domain::catalog()
            .iter()
            .map(|s| pb::ParameterInfo {
                pattern: s.pattern.to_owned(),
                r#type: s.ty.name().to_owned(),
                description: s.description.to_owned(),
                choices: match s.ty {
                    ums_domain::ParamType::Enum(c) => c.iter().map(|c| (*c).to_owned()).collect(),
                    _ => Vec::new(),
                },
            })
            .collect(),
    })
}

pub async fn assign(
    api: &AdminApi,
    _: Caller,
    r: pb::AssignRequest,
) -> Result<pb::Empty, ApiError> {
    let t = target(r.device_id, r.folder_id)?;
    api.state.db.assign(r.profile_id, t).await?;
    api.state.settings_written().await?;
    Ok(pb::Empty {})
}

pub async fn unassign(
    api: &AdminApi,
    _: Caller,
    r: pb::AssignRequest,
) -> Result<pb::Empty, ApiError> {
    let t = target(r.device_id, r.folder_id)?;
    api.state.db.unassign(r.profile_id, t).await?;
    api.state.settings_written().await?;
    Ok(pb::Empty {})
}

pub async fn list_assignments(
    api: &AdminApi,
    _: Caller,
    r: pb::ListAssignmentsRequest,
) -> Result<pb::ListAssignmentsResponse, ApiError> {
    let t = match (r.device_id, r.folder_id) {
        (None, None) => None,
        (d, f) => Some(target(d, f)?),
    };
    let list = api.state.db.list_assignments(r.profile_id, t).await?;
    Ok(pb::ListAssignmentsResponse {
        assignments: list
            .into_iter()
            .map(|a| {
                let (device_id, folder_id) = match a.target.kind {
                    ObjectKind::Device => (Some(a.target.id), None),
                    ObjectKind::Folder => (None, Some(a.target.id)),
                    _ => (None, None),
                };
                pb::Assignment {
                    profile_id: a.profile_id,
                    device_id,
                    folder_id,
                }
            })
            .collect(),
    })
}

pub async fn explain(
    api: &AdminApi,
    _: Caller,
    r: pb::ExplainSettingsRequest,
) -> Result<pb::ExplainSettingsResponse, ApiError> {
    let id = r.device_id;
    let (effective, revision, user) = if r.user.is_empty() {
        let row = api.state.device_row(id).await?;
        let (effective, revision) = device_settings(&api.state.settings(), &row.view(id));
        (effective, revision, None)
    } else {
        let (effective, revision, user) = super::swp::explain_user(api, &r).await?;
        (effective, revision, Some(user))
    };
    Ok(explained(id, revision, effective, user))
}

fn explained(
    device_id: i64,
    revision: u64,
    effective: Effective,
    user: Option<pb::SwpUser>,
) -> pb::ExplainSettingsResponse {
    pb::ExplainSettingsResponse {
        user,
        device_id,
        revision,
        values: effective
            .values
            .into_iter()
            .map(|v| pb::ExplainedValue {
                key: v.key,
                r#type: v.value.type_name().to_owned(),
                value: v.value.to_string(),
                origin: Some(origin_pb(&v.origin)),
                overridden: v
                    .overridden
                    .iter()
                    .map(|(value, o)| pb::OverriddenValue {
                        value: value.to_string(),
                        origin: Some(origin_pb(o)),
                    })
                    .collect(),
            })
            .collect(),
        conflicts: effective
            .conflicts
            .into_iter()
            .map(|c| pb::Conflict {
                key: c.key,
                object_kind: c.object.kind.as_str().to_owned(),
                object_id: c.object.id,
                winner_profile_id: c.winner,
                loser_profile_id: c.loser,
                rule: c.rule,
            })
            .collect(),
        warnings: effective.warnings,
    }
}

fn origin_pb(o: &ums_domain::Origin) -> pb::Origin {
    pb::Origin {
        profile_id: o.profile_id,
        profile_name: o.profile_name.clone(),
        object_kind: o.object.kind.as_str().to_owned(),
        object_id: o.object.id,
        object_name: o.object_name.clone(),
        priority: o.priority,
    }
}
