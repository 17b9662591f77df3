//! `umsctl devices`: list, show, rename, move and delete devices, reset a credential.

use ums_proto::admin::v1 as pb;

use super::show;
use crate::cli::DevicesCommand;
use crate::client::{Admin, ok};
use crate::output;

/// Page size used when listing many devices.
const MAX_PAGE: u32 = 10_000;

fn device_summary(d: &pb::Device) -> String {
    let folder = d
        .folder_id
        .map_or_else(|| "top level".to_owned(), |id| format!("folder {id}"));
    format!("device {} \"{}\" in {folder}", d.id, d.name)
}

pub async fn run(json: bool, admin: &mut Admin, command: DevicesCommand) -> anyhow::Result<()> {
    match command {
        DevicesCommand::List { folder, limit } => {
            let mut all = pb::ListDevicesResponse::default();
            let mut after_id = 0;
            loop {
                let remaining = limit.saturating_sub(u32::try_from(all.devices.len())?);
                if remaining == 0 {
                    break;
                }
                let page = remaining.min(MAX_PAGE);
                let response = ok(admin
                    .list_devices(pb::ListDevicesRequest {
                        folder_id: folder,
                        limit: page,
                        after_id,
                    })
                    .await)?;
                all.total = response.total;
                let received = response.devices.len();
                if let Some(last) = response.devices.last() {
                    after_id = last.id;
                }
                all.devices.extend(response.devices);
                // The server may return short pages: stop on an empty page or at the total.
                if received == 0 || all.devices.len() as u64 >= all.total {
                    break;
                }
            }
            show(json, &all, |all| {
                if all.devices.is_empty() {
                    return format!("no devices (total {})", all.total);
                }
                format!(
                    "{}\n{} of {} devices",
                    output::devices(&all.devices),
                    all.devices.len(),
                    all.total
                )
            })
        }
        DevicesCommand::Show { id } => {
            let device = ok(admin.get_device(pb::GetDeviceRequest { id }).await)?;
            show(json, &device, output::device)
        }
        DevicesCommand::Rename { id, name } => {
            let device = ok(admin
                .update_device(pb::UpdateDeviceRequest {
                    id,
                    name: Some(name),
                    ..Default::default()
                })
                .await)?;
            show(json, &device, |d| format!("renamed {}", device_summary(d)))
        }
        DevicesCommand::Move { id, folder, top } => {
            let device = ok(admin
                .update_device(pb::UpdateDeviceRequest {
                    id,
                    name: None,
                    folder_id: if top { None } else { folder },
                    clear_folder: top,
                })
                .await)?;
            show(json, &device, |d| format!("moved {}", device_summary(d)))
        }
        DevicesCommand::Rm { id } => {
            let empty = ok(admin.delete_device(pb::DeleteDeviceRequest { id }).await)?;
            show(json, &empty, |_| format!("deleted device {id}"))
        }
        DevicesCommand::ResetCredential { id } => {
            let empty = ok(admin
                .reset_device_credential(pb::ResetDeviceCredentialRequest { id })
                .await)?;
            show(json, &empty, |_| {
                format!("reset the credential of device {id}: the unit can register again")
            })
        }
    }
}
