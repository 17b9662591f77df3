//! Command line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Administers the device-management server over its admin API.
///
/// Start with `umsctl init --server https://HOST:8443 --ca ca.pem --user NAME`: it logs in and
/// stores the server, the CA file and the session token in the config file (mode 0600). Later
/// commands use them; `--server` and `--ca` override the stored values.
#[derive(Debug, Parser)]
#[command(name = "umsctl", version, propagate_version = true)]
pub struct Cli {
    /// Admin API address, such as https://ums.example:8443.
    #[arg(long, global = true, env = "UMS_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// PEM file of the CA that signed the server certificate.
    #[arg(long, global = true, env = "UMS_CA", value_name = "PATH")]
    pub ca: Option<PathBuf>,
    /// Print the response as JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Config file [default: $XDG_CONFIG_HOME/umsctl/config.toml or ~/.config/umsctl/config.toml].
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the password comes from: UMS_PASSWORD, then --password-file, then standard input.
#[derive(Debug, Args)]
pub struct PasswordArgs {
    /// Read the password from the first line of this file (UMS_PASSWORD takes precedence).
    #[arg(long, value_name = "PATH")]
    pub password_file: Option<PathBuf>,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in and store the server, CA file and session token in the config file.
    ///
    /// Requires --server and --ca. The password is taken from UMS_PASSWORD, else from
    /// --password-file, else read from standard input (prompted without echo on a terminal).
    Init {
        /// Administrator name.
        #[arg(long, value_name = "NAME")]
        user: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Log in again with the stored server and CA, and store the new session token.
    Login {
        /// Administrator name [default: the stored user name].
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Show the logged-in administrator and its permissions.
    Whoami,
    /// List, inspect, rename, move and delete devices.
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// List, create and delete folders.
    #[command(subcommand)]
    Folders(FoldersCommand),
    /// List, inspect, create, edit and delete settings profiles.
    #[command(subcommand)]
    Profiles(ProfilesCommand),
    /// List the settings parameters the server knows, with their types.
    Params,
    /// Assign a profile to a device or a folder.
    Assign(AssignArgs),
    /// Remove a profile assignment from a device or a folder.
    Unassign(AssignArgs),
    /// List profile assignments, optionally filtered.
    Assignments {
        /// Only assignments of this profile.
        #[arg(long, value_name = "ID")]
        profile: Option<i64>,
        /// Only assignments on this device.
        #[arg(long, value_name = "ID")]
        device: Option<i64>,
        /// Only assignments on this folder.
        #[arg(long, value_name = "ID")]
        folder: Option<i64>,
    },
    /// Queue and list jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Manage administrator accounts.
    #[command(subcommand)]
    Admins(AdminsCommand),
    /// Inspect device settings.
    #[command(subcommand)]
    Settings(SettingsCommand),
    /// The processes of the HA network: list, stop and start through their watchdogs, remove
    /// orphaned entries.
    #[command(subcommand)]
    Network(crate::commands::network::NetworkCommand),
    /// The network token a component needs to join: export it again or rotate it.
    #[command(subcommand)]
    Token(crate::commands::token::TokenCommand),
    /// Files devices download (firmware, custom files), replicated to every server.
    #[command(subcommand)]
    Files(crate::commands::files::FilesCommand),
    /// Shared Workplace: directories, profiles for users, groups and OUs, device licences.
    #[command(subcommand)]
    Swp(crate::commands::swp::SwpCommand),
    /// Schema updates across the network: `status` of a rollout, the pre-flight `plan`, the
    /// `log` of recorded steps, and `apply` to run the steps that wait.
    #[command(subcommand)]
    Update(crate::commands::update::UpdateCommand),
    /// The audit log: administrators' changes (who, when, what, from where), newest first.
    Audit(crate::commands::audit::AuditArgs),
    /// Write a support bundle: one .tar.gz with the network check's report (text, JSON, HTML)
    /// and, of every running server, watchdog and swp-auth, its configuration with secrets
    /// redacted and its recent logs (brokers' output through their watchdogs). Mode 0600.
    SupportBundle(crate::commands::bundle::BundleArgs),
    /// Software releases of the suite: generate the release key and sign a bundle (offline),
    /// upload it, and follow the rollout node by node.
    #[command(subcommand)]
    Release(crate::commands::release::ReleaseCommand),
}

/// `devices` subcommands.
#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// List devices.
    List {
        /// Only devices directly in this folder.
        #[arg(long, value_name = "ID")]
        folder: Option<i64>,
        /// Most devices to list.
        #[arg(long, value_name = "N", default_value_t = 100,
              value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
    /// Show one device.
    Show {
        /// Device id.
        id: i64,
    },
    /// Rename a device.
    Rename {
        /// Device id.
        id: i64,
        /// New name.
        name: String,
    },
    /// Move a device into a folder or to the top level.
    Move {
        /// Device id.
        id: i64,
        /// Destination folder.
        #[arg(
            long,
            value_name = "ID",
            required_unless_present = "top",
            conflicts_with = "top"
        )]
        folder: Option<i64>,
        /// Move to the top level (no folder).
        #[arg(long)]
        top: bool,
    },
    /// Delete a device.
    Rm {
        /// Device id.
        id: i64,
    },
    /// Forget the device's secret so the unit can register again (replaced or reinstalled unit).
    ResetCredential {
        /// Device id.
        id: i64,
    },
}

/// `folders` subcommands.
#[derive(Debug, Subcommand)]
pub enum FoldersCommand {
    /// List folders as a tree.
    List,
    /// Create a folder.
    Create {
        /// Folder name.
        name: String,
        /// Parent folder [default: top level].
        #[arg(long, value_name = "ID")]
        parent: Option<i64>,
    },
    /// Delete a folder.
    Rm {
        /// Folder id.
        id: i64,
    },
}

/// `profiles` subcommands.
#[derive(Debug, Subcommand)]
pub enum ProfilesCommand {
    /// List profiles.
    List,
    /// Show a profile and its parameters.
    Show {
        /// Profile id.
        id: i64,
    },
    /// Create a profile, optionally with parameters given as KEY=VALUE.
    Create {
        /// Profile name.
        name: String,
        /// Make it a priority profile, which overrides every standard profile.
        #[arg(long)]
        priority: bool,
        /// Free-form description.
        #[arg(long, value_name = "TEXT", default_value = "")]
        description: String,
        /// Parameters, as KEY=VALUE.
        #[arg(value_name = "KEY=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
    },
    /// Set parameters of a profile.
    Set {
        /// Profile id.
        id: i64,
        /// Parameters, as KEY=VALUE.
        #[arg(value_name = "KEY=VALUE", required = true, value_parser = parse_param)]
        params: Vec<(String, String)>,
    },
    /// Remove parameters from a profile.
    Unset {
        /// Profile id.
        id: i64,
        /// Parameter keys.
        #[arg(value_name = "KEY", required = true)]
        keys: Vec<String>,
    },
    /// Delete a profile. One still assigned (to devices, folders, users, groups or OUs) is
    /// refused, naming where; --force deletes it anyway, with its assignments.
    Rm {
        /// Profile id.
        id: i64,
        /// Delete it even while it is assigned.
        #[arg(long)]
        force: bool,
    },
}

/// Target of `assign` and `unassign`: exactly one of a device and a folder.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["device", "folder"])))]
pub struct AssignArgs {
    /// Profile id.
    pub profile_id: i64,
    /// Device id.
    #[arg(long, value_name = "ID")]
    pub device: Option<i64>,
    /// Folder id.
    #[arg(long, value_name = "ID")]
    pub folder: Option<i64>,
}

/// `jobs` subcommands.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Queue a job for a device, or for every device in a folder and its sub-folders.
    #[command(group(clap::ArgGroup::new("target").required(true).args(["device", "folder"])))]
    Create {
        /// Job kind: "reboot" or "apply_settings".
        kind: String,
        /// Device id.
        #[arg(long, value_name = "ID")]
        device: Option<i64>,
        /// Folder id.
        #[arg(long, value_name = "ID")]
        folder: Option<i64>,
        /// When the job is due [default: now]. Accepts milliseconds since the epoch, a time
        /// relative to now (+30s, +10m, +2h, +1d) or RFC 3339 (2025-06-01T22:00:00Z,
        /// 2025-06-01T22:00:00+02:00).
        #[arg(long, value_name = "TIME", value_parser = crate::output::parse_time)]
        at: Option<i64>,
    },
    /// List jobs.
    List {
        /// Only jobs of this device.
        #[arg(long, value_name = "ID")]
        device: Option<i64>,
        /// Only jobs in this state: pending, sent, done or failed.
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
        /// Most jobs to list [default: the server's].
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
}

/// `admins` subcommands.
#[derive(Debug, Subcommand)]
pub enum AdminsCommand {
    /// List administrators.
    List,
    /// Create an administrator; the password comes from UMS_NEW_PASSWORD or standard input.
    Create {
        /// Administrator name.
        name: String,
        /// Permission to grant (repeatable): devices:read, devices:write, settings:read,
        /// settings:write, jobs:write, admins:write, network:read, network:write, files:write
        /// or * for all.
        #[arg(long = "permission", value_name = "P", required = true)]
        permissions: Vec<String>,
    },
    /// Set an administrator's password; it comes from UMS_NEW_PASSWORD or standard input.
    Passwd {
        /// Administrator name.
        name: String,
    },
    /// Delete an administrator.
    Rm {
        /// Administrator name.
        name: String,
    },
}

/// `settings` subcommands.
#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Show a device's effective settings, where each value comes from and what it overrides.
    Explain {
        /// Device id.
        device_id: i64,
        /// Shared Workplace: the settings this directory user gets on the device.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// The user's directory by name [default: by the user's domain, or the first].
        #[arg(long, value_name = "NAME", requires = "user")]
        directory: Option<String>,
    },
}

/// Parses `KEY=VALUE`; the value may be empty and may contain `=`.
fn parse_param(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("umsctl").chain(args.iter().copied()))
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn params() {
        assert_eq!(parse_param("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_param("a="), Ok(("a".into(), String::new())));
        assert!(parse_param("=b").is_err());
        assert!(parse_param("ab").is_err());
    }

    #[test]
    fn global_flags_after_subcommand() {
        let cli = parse(&[
            "init",
            "--server",
            "https://h:8443",
            "--ca",
            "ca.pem",
            "--user",
            "root",
        ])
        .expect("parse");
        assert_eq!(cli.server.as_deref(), Some("https://h:8443"));
        assert!(matches!(cli.command, Command::Init { ref user, .. } if user == "root"));
        let cli = parse(&["devices", "list", "--json", "--limit", "5"]).expect("parse");
        assert!(cli.json);
    }

    #[test]
    fn move_needs_exactly_one_target() {
        assert!(parse(&["devices", "move", "1"]).is_err());
        assert!(parse(&["devices", "move", "1", "--top", "--folder", "2"]).is_err());
        assert!(parse(&["devices", "move", "1", "--top"]).is_ok());
        assert!(parse(&["devices", "move", "1", "--folder", "2"]).is_ok());
    }

    #[test]
    fn assign_needs_exactly_one_target() {
        assert!(parse(&["assign", "1"]).is_err());
        assert!(parse(&["assign", "1", "--device", "2", "--folder", "3"]).is_err());
        assert!(parse(&["unassign", "1", "--folder", "3"]).is_ok());
        assert!(parse(&["jobs", "create", "reboot"]).is_err());
        assert!(parse(&["jobs", "create", "reboot", "--folder", "3", "--at", "+10m"]).is_ok());
        assert!(parse(&["jobs", "create", "reboot", "--device", "3", "--at", "soon"]).is_err());
    }

    #[test]
    fn profile_create_collects_params() {
        let cli = parse(&["profiles", "create", "p", "--priority", "a=1", "b=x y"]).expect("parse");
        match cli.command {
            Command::Profiles(ProfilesCommand::Create {
                params, priority, ..
            }) => {
                assert!(priority);
                assert_eq!(params.len(), 2);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(parse(&["profiles", "set", "1"]).is_err());
        assert!(parse(&["admins", "create", "bob"]).is_err());
    }
}
