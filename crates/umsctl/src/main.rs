//! `umsctl`: the administrator's command line over the admin API. This file parses the command
//! line and dispatches it to the handlers in `commands`, one file per command area.

mod cli;
mod client;
mod commands;
mod config;
mod context;
mod output;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Command};
use crate::client::Admin;
use crate::commands::{
    admins, assignments, audit, bundle, devices, files, folders, jobs, login, network, profiles,
    release, settings, swp, token, update,
};
use crate::context::Context;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut ctx = Context::new(&cli)?;
    match cli.command {
        Command::Init { user, password } => {
            if cli.server.is_none() || cli.ca.is_none() {
                anyhow::bail!("init needs --server URL and --ca PATH");
            }
            login::login(&mut ctx, &user, password.password_file.as_deref()).await
        }
        Command::Login { user, password } => {
            let user = match user.or_else(|| ctx.config.username.clone()) {
                Some(user) => user,
                None => anyhow::bail!("no user name: pass --user NAME"),
            };
            login::login(&mut ctx, &user, password.password_file.as_deref()).await
        }
        Command::Release(command) if command.offline() => release::run_offline(ctx.json, command),
        command => {
            let mut admin = ctx.admin().await?;
            dispatch(&ctx, &mut admin, command).await
        }
    }
}

async fn dispatch(ctx: &Context, admin: &mut Admin, command: Command) -> anyhow::Result<()> {
    let json = ctx.json;
    match command {
        Command::Init { .. } | Command::Login { .. } => Ok(()),
        Command::Whoami => login::whoami(json, admin).await,
        Command::Devices(command) => devices::run(json, admin, command).await,
        Command::Folders(command) => folders::run(json, admin, command).await,
        Command::Profiles(command) => profiles::run(json, admin, command).await,
        Command::Params => settings::params(json, admin).await,
        Command::Assign(args) => assignments::assign(json, admin, args).await,
        Command::Unassign(args) => assignments::unassign(json, admin, args).await,
        Command::Assignments {
            profile,
            device,
            folder,
        } => assignments::list(json, admin, profile, device, folder).await,
        Command::Jobs(command) => jobs::run(json, admin, command).await,
        Command::Admins(command) => admins::run(json, admin, command).await,
        Command::Network(command) => network::run(json, admin, command).await,
        Command::Token(command) => token::run(json, admin, command).await,
        Command::Files(command) => files::run(json, admin, command).await,
        Command::Settings(command) => settings::run(json, admin, command).await,
        Command::Swp(command) => swp::run(json, admin, command).await,
        Command::Audit(args) => audit::run(json, admin, args).await,
        Command::Update(command) => update::run(json, admin, command).await,
        Command::SupportBundle(args) => bundle::run(json, admin, args).await,
        Command::Release(command) => release::run(json, admin, command).await,
    }
}
