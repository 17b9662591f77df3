//! `umsctl profiles`: list, show, create, edit and delete settings profiles.

use ums_proto::admin::v1 as pb;

use super::show;
use crate::cli::ProfilesCommand;
use crate::client::{Admin, CallError, ok};
use crate::output;

fn params(pairs: Vec<(String, String)>) -> Vec<pb::Param> {
    pairs
        .into_iter()
        .map(|(key, value)| pb::Param { key, value })
        .collect()
}

pub async fn run(json: bool, admin: &mut Admin, command: ProfilesCommand) -> anyhow::Result<()> {
    match command {
        ProfilesCommand::List => {
            let list = ok(admin.list_profiles(pb::ListProfilesRequest {}).await)?;
            show(json, &list, |l| {
                if l.profiles.is_empty() {
                    "no profiles".to_owned()
                } else {
                    output::profiles(&l.profiles).to_string()
                }
            })
        }
        ProfilesCommand::Show { id } => {
            let profile = ok(admin.get_profile(pb::GetProfileRequest { id }).await)?;
            show(json, &profile, output::profile)
        }
        ProfilesCommand::Create {
            name,
            priority,
            description,
            params: pairs,
        } => {
            let profile = ok(admin
                .create_profile(pb::CreateProfileRequest {
                    name,
                    description,
                    priority,
                    params: params(pairs),
                })
                .await)?;
            show(json, &profile, |p| {
                format!(
                    "created profile {} \"{}\" with {} parameter(s)",
                    p.id,
                    p.name,
                    p.params.len()
                )
            })
        }
        ProfilesCommand::Set { id, params: pairs } => {
            let profile = ok(admin
                .update_profile_params(pb::UpdateProfileParamsRequest {
                    id,
                    set: params(pairs),
                    unset: Vec::new(),
                })
                .await)?;
            show(json, &profile, output::profile)
        }
        ProfilesCommand::Unset { id, keys } => {
            let profile = ok(admin
                .update_profile_params(pb::UpdateProfileParamsRequest {
                    id,
                    set: Vec::new(),
                    unset: keys,
                })
                .await)?;
            show(json, &profile, output::profile)
        }
        ProfilesCommand::Rm { id, force } => {
            let empty = match admin
                .delete_profile(pb::DeleteProfileRequest { id, force })
                .await
            {
                // Still assigned: the server says where.
                Err(status) if status.code() == tonic::Code::FailedPrecondition && !force => {
                    return Err(CallError(format!(
                        "{}\n`umsctl profiles rm {id} --force` deletes it anyway, with its assignments",
                        status.message()
                    ))
                    .into());
                }
                result => ok(result)?,
            };
            show(json, &empty, |_| format!("deleted profile {id}"))
        }
    }
}
