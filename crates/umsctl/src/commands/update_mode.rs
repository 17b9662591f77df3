//! `umsctl update end-mode`: ends update mode on the server umsctl talks to, for a server that
//! did not reconnect to the shared database by itself after the last server migrated it.

use ums_proto::admin::v1 as pb;

use super::show;
use crate::client::{Admin, ok};

/// `umsctl update end-mode`.
pub async fn end_mode(json: bool, admin: &mut Admin) -> anyhow::Result<()> {
    let reply = ok(admin.end_update_mode(pb::EndUpdateModeRequest {}).await)?;
    show(json, &reply, |r| {
        if r.was_in_update_mode {
            format!(
                "update mode ended: {} journal entries replayed; serving from the shared database (schema {})",
                r.replayed, r.schema
            )
        } else {
            format!(
                "the server was not in update mode (shared database at schema {})",
                r.schema
            )
        }
    })
}
