//! `umsctl`: the administrator's command line over the admin API.

mod cli;
mod client;
mod config;
mod network;
mod output;

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use serde::Serialize;
use ums_proto::admin::v1 as pb;

use crate::cli::{
    AdminsCommand, AssignArgs, Cli, Command, DevicesCommand, FoldersCommand, JobsCommand,
    ProfilesCommand, SettingsCommand,
};
use crate::client::{Admin, ok};
use crate::config::Config;

/// Page size used when listing many devices.
const MAX_PAGE: u32 = 10_000;

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

/// Prints a response as pretty JSON.
fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints `value` as JSON with `--json`, else the text made by `human`.
fn show<T: Serialize>(
    json: bool,
    value: &T,
    human: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    if json {
        print_json(value)
    } else {
        let text = human(value);
        if text.ends_with('\n') {
            print!("{text}");
        } else {
            println!("{text}");
        }
        Ok(())
    }
}

/// The resolved settings of one invocation.
struct Context {
    json: bool,
    config_path: PathBuf,
    config: Config,
    server: Option<String>,
    ca: Option<PathBuf>,
}

impl Context {
    fn new(cli: &Cli) -> anyhow::Result<Self> {
        let config_path = match &cli.config {
            Some(path) => path.clone(),
            None => config::default_path()?,
        };
        let config = Config::load(&config_path)?;
        let server = cli.server.clone().or_else(|| config.server.clone());
        let ca = cli
            .ca
            .clone()
            .or_else(|| config.ca.as_ref().map(PathBuf::from));
        Ok(Self {
            json: cli.json,
            config_path,
            config,
            server,
            ca,
        })
    }

    fn server_and_ca(&self) -> anyhow::Result<(&str, &Path)> {
        let server = self
            .server
            .as_deref()
            .context("no server: pass --server (or UMS_SERVER) or run `umsctl init`")?;
        let ca = self
            .ca
            .as_deref()
            .context("no ca file: pass --ca (or UMS_CA) or run `umsctl init`")?;
        Ok((server, ca))
    }

    /// A client sending the stored session token.
    async fn admin(&self) -> anyhow::Result<Admin> {
        let (server, ca) = self.server_and_ca()?;
        let token = self
            .config
            .token
            .as_deref()
            .context("not logged in: run `umsctl init` or `umsctl login`")?;
        client::connect(server, ca, Some(token)).await
    }

    /// Logs in as `user` and stores the session in the config file.
    async fn login(&mut self, user: &str, password_file: Option<&Path>) -> anyhow::Result<()> {
        let (server, ca) = self.server_and_ca()?;
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
        self.config = Config {
            server: Some(server.clone()),
            ca: Some(ca.to_string_lossy().into_owned()),
            token: Some(response.token),
            username: Some(user.to_owned()),
        };
        self.config.save(&self.config_path)?;
        if self.json {
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
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut ctx = Context::new(&cli)?;
    match cli.command {
        Command::Init { user, password } => {
            if cli.server.is_none() || cli.ca.is_none() {
                anyhow::bail!("init needs --server URL and --ca PATH");
            }
            ctx.login(&user, password.password_file.as_deref()).await
        }
        Command::Login { user, password } => {
            let user = match user.or_else(|| ctx.config.username.clone()) {
                Some(user) => user,
                None => anyhow::bail!("no user name: pass --user NAME"),
            };
            ctx.login(&user, password.password_file.as_deref()).await
        }
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
        Command::Whoami => {
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
        Command::Devices(command) => devices(json, admin, command).await,
        Command::Folders(command) => folders(json, admin, command).await,
        Command::Profiles(command) => profiles(json, admin, command).await,
        Command::Params => {
            let params = ok(admin.list_parameters(pb::ListParametersRequest {}).await)?;
            show(json, &params, |p| {
                output::parameters(&p.parameters).to_string()
            })
        }
        Command::Assign(args) => {
            let target = target(&args);
            let empty = ok(admin.assign(assign_request(&args)).await)?;
            show(json, &empty, |_| {
                format!("assigned profile {} to {target}", args.profile_id)
            })
        }
        Command::Unassign(args) => {
            let target = target(&args);
            let empty = ok(admin.unassign(assign_request(&args)).await)?;
            show(json, &empty, |_| {
                format!("unassigned profile {} from {target}", args.profile_id)
            })
        }
        Command::Assignments {
            profile,
            device,
            folder,
        } => {
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
        Command::Jobs(command) => jobs(json, admin, command).await,
        Command::Admins(command) => admins(json, admin, command).await,
        Command::Network(command) => network::network(json, admin, command).await,
        Command::Token(command) => network::token(json, admin, command).await,
        Command::Files(command) => network::files(json, admin, command).await,
        Command::Settings(SettingsCommand::Explain { device_id }) => {
            let explained = ok(admin
                .explain_settings(pb::ExplainSettingsRequest { device_id })
                .await)?;
            show(json, &explained, output::explain)
        }
    }
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

fn device_summary(d: &pb::Device) -> String {
    let folder = d
        .folder_id
        .map_or_else(|| "top level".to_owned(), |id| format!("folder {id}"));
    format!("device {} \"{}\" in {folder}", d.id, d.name)
}

async fn devices(json: bool, admin: &mut Admin, command: DevicesCommand) -> anyhow::Result<()> {
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

async fn folders(json: bool, admin: &mut Admin, command: FoldersCommand) -> anyhow::Result<()> {
    match command {
        FoldersCommand::List => {
            let list = ok(admin.list_folders(pb::ListFoldersRequest {}).await)?;
            show(json, &list, |l| {
                if l.folders.is_empty() {
                    "no folders".to_owned()
                } else {
                    output::folders(&l.folders).to_string()
                }
            })
        }
        FoldersCommand::Create { name, parent } => {
            let folder = ok(admin
                .create_folder(pb::CreateFolderRequest {
                    name,
                    parent_id: parent,
                })
                .await)?;
            show(json, &folder, |f| {
                let parent = f
                    .parent_id
                    .map_or_else(String::new, |p| format!(" in folder {p}"));
                format!("created folder {} \"{}\"{parent}", f.id, f.name)
            })
        }
        FoldersCommand::Rm { id } => {
            let empty = ok(admin.delete_folder(pb::DeleteFolderRequest { id }).await)?;
            show(json, &empty, |_| format!("deleted folder {id}"))
        }
    }
}

fn params(pairs: Vec<(String, String)>) -> Vec<pb::Param> {
    pairs
        .into_iter()
        .map(|(key, value)| pb::Param { key, value })
        .collect()
}

async fn profiles(json: bool, admin: &mut Admin, command: ProfilesCommand) -> anyhow::Result<()> {
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
        ProfilesCommand::Rm { id } => {
            let empty = ok(admin.delete_profile(pb::DeleteProfileRequest { id }).await)?;
            show(json, &empty, |_| format!("deleted profile {id}"))
        }
    }
}

/// Job ids for humans: all of them when few, else the count and the range.
fn job_ids(ids: &[i64]) -> String {
    match ids {
        [] => "no jobs queued (no devices)".to_owned(),
        ids if ids.len() <= 20 => format!(
            "queued {} job(s): {}",
            ids.len(),
            ids.iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        ids => format!(
            "queued {} jobs: ids {} to {}",
            ids.len(),
            ids.iter().min().copied().unwrap_or_default(),
            ids.iter().max().copied().unwrap_or_default()
        ),
    }
}

async fn jobs(json: bool, admin: &mut Admin, command: JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::Create {
            kind,
            device,
            folder,
            at,
        } => {
            let created = ok(admin
                .create_jobs(pb::CreateJobsRequest {
                    kind,
                    device_id: device,
                    folder_id: folder,
                    scheduled_at_ms: at.unwrap_or(0),
                })
                .await)?;
            show(json, &created, |c| job_ids(&c.job_ids))
        }
        JobsCommand::List {
            device,
            state,
            limit,
        } => {
            let list = ok(admin
                .list_jobs(pb::ListJobsRequest {
                    device_id: device,
                    state: state.unwrap_or_default(),
                    limit: limit.unwrap_or(0),
                })
                .await)?;
            show(json, &list, |l| {
                if l.jobs.is_empty() {
                    "no jobs".to_owned()
                } else {
                    output::jobs(&l.jobs).to_string()
                }
            })
        }
    }
}

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

async fn admins(json: bool, admin: &mut Admin, command: AdminsCommand) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_id_summary() {
        assert_eq!(job_ids(&[]), "no jobs queued (no devices)");
        assert_eq!(job_ids(&[4, 5]), "queued 2 job(s): 4, 5");
        let many: Vec<i64> = (10..40).collect();
        assert_eq!(job_ids(&many), "queued 30 jobs: ids 10 to 39");
    }
}
