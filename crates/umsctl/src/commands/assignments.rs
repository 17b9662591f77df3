//! `umsctl assign`, `umsctl unassign` and `umsctl assignments`: profiles on devices and folders.

use ums_proto::admin::v1 as pb;

use super::show;
use crate::cli::AssignArgs;
use crate::client::{Admin, ok};
use crate::output;

/// Assigns a profile to a device or a folder.
pub async fn assign(json: bool, admin: &mut Admin, args: AssignArgs) -> anyhow::Result<()> {
    let target = target(&args);
    let empty = ok(admin.assign(assign_request(&args)).await)?;
    show(json, &empty, |_| {
        format!("assigned profile {} to {target}", args.profile_id)
    })
}

/// Removes a profile assignment from a device or a folder.
pub async fn unassign(json: bool, admin: &mut Admin, args: AssignArgs) -> anyhow::Result<()> {
    let target = target(&args);
    let empty = ok(admin.unassign(assign_request(&args)).await)?;
    show(json, &empty, |_| {
        format!("unassigned profile {} from {target}", args.profile_id)
    })
}

/// Lists profile assignments, optionally of one profile, device or folder.
pub async fn list(
    json: bool,
    admin: &mut Admin,
    profile: Option<i64>,
    device: Option<i64>,
    folder: Option<i64>,
) -> anyhow::Result<()> {
    let list = ok(admin
        .list_assignments(pb::ListAssignmentsRequest {
            profile_id: profile,
            device_id: device,
            folder_id: folder,
        })
        .await)?;
    show(json, &list, |l| {
        if l.assignments.is_empty() {
            "no assignments".to_owned()
        } else {
            output::assignments(&l.assignments).to_string()
        }
    })
}

fn target(args: &AssignArgs) -> String {
    match (args.device, args.folder) {
        (Some(device), _) => format!("device {device}"),
        (None, Some(folder)) => format!("folder {folder}"),
        (None, None) => "nothing".to_owned(),
    }
}

fn assign_request(args: &AssignArgs) -> pb::AssignRequest {
    pb::AssignRequest {
        profile_id: args.profile_id,
        device_id: args.device,
        folder_id: args.folder,
    }
}
