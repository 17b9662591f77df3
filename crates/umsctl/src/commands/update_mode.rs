//! `umsctl update end-mode`: ends update mode on the server umsctl talks to, for a server that
//! did not reconnect to the shared database by itself after the last server migrated it.

use clap::Subcommand;
use ums_proto::admin::v1 as pb;

use super::show;
use crate::client::{Admin, ok};

/// `update` subcommands.
#[derive(Debug, Subcommand)]
pub enum UpdateCommand {
    /// End update mode on this server (`--server`): replay the device check-ins and job
    /// results it kept into the shared database and serve from it again. Refused while the
    /// shared database is still older than the schema the server runs on.
    EndMode,
}

pub async fn run(json: bool, admin: &mut Admin, command: UpdateCommand) -> anyhow::Result<()> {
    match command {
        UpdateCommand::EndMode => {
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
    }
}
