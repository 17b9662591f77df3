//! Devices as administrators see them: listing, details with the settings revision, renaming,
//! moving between folders, deleting and resetting a credential.

use ums_db::devices::DeviceUpdate;
use ums_proto::admin::v1 as pb;

use super::{AdminApi, Caller};
use crate::error::ApiError;
use crate::settings::{DeviceView, revision};

/// Whether a device last contacted at `last_contact` (ms) is online at `now`: contacted at
/// most `within` before.
fn online(last_contact: Option<i64>, now: i64, within: std::time::Duration) -> bool {
    let within = i64::try_from(within.as_millis()).unwrap_or(i64::MAX);
    last_contact.is_some_and(|at| now.saturating_sub(at) <= within)
}

fn device_pb(api: &AdminApi, d: ums_db::devices::Device) -> pb::Device {
    let model = api.state.settings();
    let settings_revision = revision(
        &model,
        &DeviceView {
            id: d.id,
            name: &d.name,
            folder_id: d.folder_id,
            rev: d.rev,
        },
    );
    pb::Device {
        id: d.id,
        unit_id: d.unit_id,
        name: d.name,
        firmware: d.firmware,
        state: d.state,
        folder_id: d.folder_id,
        last_contact_ms: d.last_contact.unwrap_or(0),
        registered_at_ms: d.registered_at,
        settings_revision,
        applied_revision: d
            .applied_revision
            .and_then(|r| u64::try_from(r).ok())
            .unwrap_or(0),
        online: online(
            d.last_contact,
            ums_db::now_ms(),
            api.state.info.online_within,
        ),
    }
}

pub async fn list(
    api: &AdminApi,
    _: Caller,
    r: pb::ListDevicesRequest,
) -> Result<pb::ListDevicesResponse, ApiError> {
    let limit = match r.limit {
        0 => 100,
        n => u64::from(n.min(10_000)),
    };
    let page = api
        .state
        .db
        .list_devices(r.folder_id, r.after_id, limit)
        .await?;
    Ok(pb::ListDevicesResponse {
        total: page.total,
        devices: page
            .devices
            .into_iter()
            .map(|d| device_pb(api, d))
            .collect(),
    })
}

pub async fn get(
    api: &AdminApi,
    _: Caller,
    r: pb::GetDeviceRequest,
) -> Result<pb::Device, ApiError> {
    let d = api.state.db.get_device(r.id).await?;
    Ok(device_pb(api, d))
}

pub async fn update(
    api: &AdminApi,
    _: Caller,
    r: pb::UpdateDeviceRequest,
) -> Result<pb::Device, ApiError> {
    let name = r
        .name
        .as_deref()
        .map(|n| ums_domain::validate_name("device name", n))
        .transpose()?;
    let folder = match (r.folder_id, r.clear_folder) {
        (Some(_), true) => {
            return Err(ApiError::Invalid(
                "give folder_id or clear_folder, not both".into(),
            ));
        }
        (Some(f), false) => Some(Some(f)),
        (None, true) => Some(None),
        (None, false) => None,
    };
    let moved = folder.is_some();
    let d = api
        .state
        .db
        .update_device(r.id, &DeviceUpdate { name, folder })
        .await?;
    if moved {
        api.state.settings_written().await?;
    }
    Ok(device_pb(api, d))
}

pub async fn delete(
    api: &AdminApi,
    _: Caller,
    r: pb::DeleteDeviceRequest,
) -> Result<pb::Empty, ApiError> {
    api.state.db.delete_device(r.id).await?;
    api.state.forget_device_everywhere(r.id).await;
    api.state.settings_written().await?;
    Ok(pb::Empty {})
}

pub async fn reset_credential(
    api: &AdminApi,
    _: Caller,
    r: pb::ResetDeviceCredentialRequest,
) -> Result<pb::Empty, ApiError> {
    api.state.db.reset_device_credential(r.id).await?;
    api.state.forget_device_everywhere(r.id).await;
    Ok(pb::Empty {})
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn online_means_contacted_within_the_window() {
        let within = Duration::from_secs(180);
        let now = 1_000_000_000;
        assert!(super::online(Some(now), now, within));
        assert!(super::online(Some(now - 180_000), now, within));
        assert!(!super::online(Some(now - 180_001), now, within));
        assert!(!super::online(None, now, within), "never contacted");
        // A contact stamped by a server whose clock is slightly ahead.
        assert!(super::online(Some(now + 500), now, within));
    }
}
