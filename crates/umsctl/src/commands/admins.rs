//! `umsctl admins`: administrator accounts and their passwords.

use std::io::IsTerminal as _;

use ums_proto::admin::v1 as pb;

use super::show;
use crate::cli::AdminsCommand;
use crate::client::{self, Admin, ok};
use crate::output;

/// A new password from UMS_NEW_PASSWORD, else standard input; asked twice on a terminal.
async fn new_password(name: &str) -> anyhow::Result<String> {
    let prompt = format!("new password for {name}");
    let password = client::read_password("UMS_NEW_PASSWORD", None, &prompt).await?;
    if std::env::var_os("UMS_NEW_PASSWORD").is_none() && std::io::stdin().is_terminal() {
        let again = client::read_password("UMS_NEW_PASSWORD", None, "again").await?;
        if again != password {
            anyhow::bail!("the passwords differ");
        }
    }
    Ok(password)
}

pub async fn run(json: bool, admin: &mut Admin, command: AdminsCommand) -> anyhow::Result<()> {
    match command {
        AdminsCommand::List => {
            let list = ok(admin.list_admins(pb::ListAdminsRequest {}).await)?;
            show(json, &list, |l| output::admins(&l.admins).to_string())
        }
        AdminsCommand::Create { name, permissions } => {
            let password = new_password(&name).await?;
            let created = ok(admin
                .create_admin(pb::CreateAdminRequest {
                    username: name,
                    password,
                    permissions,
                })
                .await)?;
            show(json, &created, |a| {
                format!(
                    "created administrator {} (#{}) with permissions {}",
                    a.username,
                    a.id,
                    a.permissions.join(", ")
                )
            })
        }
        AdminsCommand::Passwd { name } => {
            let password = new_password(&name).await?;
            let empty = ok(admin
                .set_admin_password(pb::SetAdminPasswordRequest {
                    username: name.clone(),
                    password,
                })
                .await)?;
            show(json, &empty, |_| format!("changed the password of {name}"))
        }
        AdminsCommand::Rm { name } => {
            let empty = ok(admin
                .delete_admin(pb::DeleteAdminRequest {
                    username: name.clone(),
                })
                .await)?;
            show(json, &empty, |_| format!("deleted administrator {name}"))
        }
    }
}
