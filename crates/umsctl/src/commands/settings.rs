//! `umsctl params` and `umsctl settings explain`: the parameters the server knows and a device's
//! (or a user's) effective settings with their origins.

use ums_proto::admin::v1 as pb;

use super::show;
use crate::cli::SettingsCommand;
use crate::client::{Admin, ok};
use crate::output;

/// The settings parameters the server knows, with their types.
pub async fn params(json: bool, admin: &mut Admin) -> anyhow::Result<()> {
    let params = ok(admin.list_parameters(pb::ListParametersRequest {}).await)?;
    show(json, &params, |p| {
        output::parameters(&p.parameters).to_string()
    })
}

pub async fn run(json: bool, admin: &mut Admin, command: SettingsCommand) -> anyhow::Result<()> {
    match command {
        SettingsCommand::Explain {
            device_id,
            user,
            directory,
        } => {
            let explained = ok(admin
                .explain_settings(pb::ExplainSettingsRequest {
                    device_id,
                    user: user.unwrap_or_default(),
                    directory: directory.unwrap_or_default(),
                })
                .await)?;
            show(json, &explained, output::explain)
        }
    }
}
