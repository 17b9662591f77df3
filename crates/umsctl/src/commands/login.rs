//! `umsctl init`, `umsctl login` and `umsctl whoami`: the administrator's session.

use std::path::Path;

use ums_proto::admin::v1 as pb;

use super::{print_json, show};
use crate::client::{self, Admin, ok};
use crate::config::Config;
use crate::context::Context;

/// Logs in as `user` and stores the session in the config file.
pub async fn login(
    ctx: &mut Context,
    user: &str,
    password_file: Option<&Path>,
) -> anyhow::Result<()> {
    let (server, ca) = ctx.server_and_ca()?;
    let (server, ca) = (server.to_owned(), ca.to_owned());
    let mut admin = client::connect(&server, &ca, None).await?;
    let password = client::read_password(
        "UMS_PASSWORD",
        password_file,
        &format!("password for {user}"),
    )
    .await?;
    let response = admin
        .login(pb::LoginRequest {
            username: user.to_owned(),
            password,
        })
        .await
        .map_err(|status| match status.code() {
            tonic::Code::Unauthenticated => {
                client::CallError(format!("login failed: {}", status.message()))
            }
            _ => client::CallError::from(status),
        })?
        .into_inner();
    let ca = std::fs::canonicalize(&ca).unwrap_or(ca);
    ctx.config = Config {
        server: Some(server.clone()),
        ca: Some(ca.to_string_lossy().into_owned()),
        token: Some(response.token),
        username: Some(user.to_owned()),
    };
    ctx.config.save(&ctx.config_path)?;
    if ctx.json {
        print_json(&serde_json::json!({
            "username": user,
            "server": server,
            "expires_at_ms": response.expires_at_ms,
            "permissions": response.permissions,
        }))
    } else {
        println!("logged in as {user} on {server}");
        Ok(())
    }
}

/// The logged-in administrator and its permissions.
pub async fn whoami(json: bool, admin: &mut Admin) -> anyhow::Result<()> {
    let me = ok(admin.who_am_i(pb::WhoAmIRequest {}).await)?;
    show(json, &me, |me| {
        format!(
            "{}\npermissions: {}",
            me.username,
            if me.permissions.is_empty() {
                "(none)".to_owned()
            } else {
                me.permissions.join(", ")
            }
        )
    })
}
