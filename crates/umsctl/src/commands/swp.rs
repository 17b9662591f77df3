//! `umsctl swp ...`: Shared Workplace directories, profiles for users, groups and OUs, the
//! switches of devices and folders, the licence pool, and who is logged in where.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use ums_proto::admin::v1 as pb;

use super::show;
use crate::client::{Admin, ok};
use crate::output;

/// `swp` subcommands.
#[derive(Debug, Subcommand)]
pub enum SwpCommand {
    /// Add a directory users log in against.
    ///
    /// The bind account's password is taken from UMS_BIND_PASSWORD, else from
    /// --bind-password-file; it is stored on the server and never shown again.
    AddDirectory(Box<DirectoryArgs>),
    /// List the directories.
    Directories,
    /// Delete a directory and the assignments to its users, groups and OUs.
    DeleteDirectory {
        /// Directory id.
        id: i64,
    },
    /// Assign a profile to a user, a group or an OU (device-only parameters are refused).
    Assign(PrincipalArgs),
    /// Remove a profile from a user, a group or an OU.
    Unassign(PrincipalArgs),
    /// List the profiles assigned to users, groups and OUs.
    Assignments {
        /// Only assignments of this profile.
        #[arg(long, value_name = "ID")]
        profile: Option<i64>,
    },
    /// Set a device's Shared Workplace licence and switch.
    Device {
        /// Device id.
        device_id: i64,
        /// Give (true) or withdraw (false) the licence.
        #[arg(long, value_name = "BOOL")]
        licensed: Option<bool>,
        /// Switch the function on or off; the device keeps its licence.
        #[arg(long, value_name = "BOOL")]
        enabled: Option<bool>,
    },
    /// Switch Shared Workplace on or off for a folder and the folders below it (a device's own
    /// switch wins).
    Folder {
        /// Folder id.
        folder_id: i64,
        /// On (true) or off (false).
        #[arg(
            long,
            value_name = "BOOL",
            conflicts_with = "inherit",
            required_unless_present = "inherit"
        )]
        enabled: Option<bool>,
        /// Remove the folder's own switch: it inherits again.
        #[arg(long)]
        inherit: bool,
    },
    /// The licence pool: devices take a seat at their first login.
    #[command(subcommand)]
    Licences(LicenceCommand),
    /// Who is logged in on which device.
    Sessions {
        /// Only this user's sessions.
        #[arg(long)]
        user: Option<String>,
    },
    /// Log the user out of a device: the device gets its own settings at its next check-in.
    Logout {
        /// Device id.
        device_id: i64,
    },
}

/// `swp licences` subcommands.
#[derive(Debug, Subcommand)]
pub enum LicenceCommand {
    /// Add a licence to the pool.
    Add {
        /// Unique name, e.g. the order number.
        name: String,
        /// Devices that may hold a seat.
        #[arg(long)]
        seats: i64,
        /// Last day of validity, YYYY-MM-DD (UTC).
        #[arg(long, value_name = "DATE")]
        expires: String,
    },
    /// List the licences with the seats in use.
    List,
    /// Remove a licence; its devices take another seat at their next login.
    Rm {
        /// Licence id.
        id: i64,
    },
}

/// A directory's settings.
#[derive(Debug, Args)]
pub struct DirectoryArgs {
    /// Unique name, e.g. corp.
    pub name: String,
    /// `ad` (Active Directory) or `ldap`.
    #[arg(long, default_value = "ad")]
    pub kind: String,
    /// DNS domain, the userPrincipalName suffix (ad.example.org).
    #[arg(long, default_value = "")]
    pub domain: String,
    /// NetBIOS domain (AD).
    #[arg(long, default_value = "")]
    pub netbios: String,
    /// Controller URL, in failover order (ldaps://dc1:636); repeat for several.
    #[arg(long = "url", value_name = "URL", required = true)]
    pub urls: Vec<String>,
    /// Search base, e.g. dc=ad,dc=example,dc=org.
    #[arg(long)]
    pub base_dn: String,
    /// The account searches run as.
    #[arg(long)]
    pub bind_dn: String,
    /// File holding the bind account's password (UMS_BIND_PASSWORD wins).
    #[arg(long, value_name = "PATH")]
    pub bind_password_file: Option<PathBuf>,
    /// PEM file of the CA of the controllers' certificates.
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// Upgrade ldap:// connections with StartTLS.
    #[arg(long)]
    pub starttls: bool,
    /// Generic LDAP: the attribute users log in with (uid).
    #[arg(long, default_value = "")]
    pub login_attribute: String,
    /// Extra filter user entries must match.
    #[arg(long, default_value = "")]
    pub user_filter: String,
    /// `memberof` or `member`.
    #[arg(long, default_value = "")]
    pub group_membership: String,
}

/// A profile and the user, group or OU it goes to.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("principal").required(true).args(["user", "group", "ou"])))]
pub struct PrincipalArgs {
    /// Profile id.
    pub profile_id: i64,
    /// A user by login name.
    #[arg(long)]
    pub user: Option<String>,
    /// A group by name or DN.
    #[arg(long)]
    pub group: Option<String>,
    /// An OU by name or DN.
    #[arg(long)]
    pub ou: Option<String>,
    /// The directory by name (needed when there are several).
    #[arg(long, default_value = "")]
    pub directory: String,
}

impl PrincipalArgs {
    fn request(&self) -> pb::AssignUserRequest {
        pb::AssignUserRequest {
            profile_id: self.profile_id,
            directory: self.directory.clone(),
            user: self.user.clone().unwrap_or_default(),
            group: self.group.clone().unwrap_or_default(),
            ou: self.ou.clone().unwrap_or_default(),
        }
    }

    fn target(&self) -> String {
        match (&self.user, &self.group, &self.ou) {
            (Some(u), _, _) => format!("user `{u}`"),
            (_, Some(g), _) => format!("group `{g}`"),
            (_, _, Some(o)) => format!("OU `{o}`"),
            _ => "nothing".to_owned(),
        }
    }
}

pub async fn run(json: bool, admin: &mut Admin, command: SwpCommand) -> anyhow::Result<()> {
    match command {
        SwpCommand::AddDirectory(a) => {
            let a = *a;
            let bind_password = match std::env::var("UMS_BIND_PASSWORD") {
                Ok(p) if !p.is_empty() => p,
                _ => {
                    let file = a.bind_password_file.as_ref().context(
                        "give the bind password in UMS_BIND_PASSWORD or --bind-password-file",
                    )?;
                    std::fs::read_to_string(file)
                        .with_context(|| format!("read {}", file.display()))?
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_owned()
                }
            };
            let ca_pem = match &a.ca_file {
                Some(f) => {
                    std::fs::read_to_string(f).with_context(|| format!("read {}", f.display()))?
                }
                None => String::new(),
            };
            let d = ok(admin
                .create_directory(pb::DirectorySpec {
                    name: a.name,
                    kind: a.kind,
                    domain: a.domain,
                    netbios: a.netbios,
                    urls: a.urls,
                    base_dn: a.base_dn,
                    bind_dn: a.bind_dn,
                    bind_password,
                    ca_pem,
                    starttls: a.starttls,
                    page_size: 0,
                    login_attribute: a.login_attribute,
                    user_filter: a.user_filter,
                    group_membership: a.group_membership,
                })
                .await)?;
            show(json, &d, |d| {
                format!(
                    "directory {} `{}` created",
                    d.id,
                    d.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("")
                )
            })
        }
        SwpCommand::Directories => {
            let list = ok(admin.list_directories(pb::ListDirectoriesRequest {}).await)?;
            show(json, &list, |l| {
                let mut t =
                    output::table(["ID", "NAME", "KIND", "DOMAIN", "CONTROLLERS", "BASE DN"]);
                for d in &l.directories {
                    let s = d.spec.clone().unwrap_or_default();
                    t.add_row([
                        d.id.to_string(),
                        s.name,
                        s.kind,
                        s.domain,
                        s.urls.join("\n"),
                        s.base_dn,
                    ]);
                }
                t.to_string()
            })
        }
        SwpCommand::DeleteDirectory { id } => {
            let e = ok(admin
                .delete_directory(pb::DeleteDirectoryRequest { id })
                .await)?;
            show(json, &e, |_| format!("directory {id} deleted"))
        }
        SwpCommand::Assign(a) => {
            let e = ok(admin.assign_user(a.request()).await)?;
            show(json, &e, |_| {
                format!("assigned profile {} to {}", a.profile_id, a.target())
            })
        }
        SwpCommand::Unassign(a) => {
            let e = ok(admin.unassign_user(a.request()).await)?;
            show(json, &e, |_| {
                format!("unassigned profile {} from {}", a.profile_id, a.target())
            })
        }
        SwpCommand::Assignments { profile } => {
            let list = ok(admin
                .list_user_assignments(pb::ListUserAssignmentsRequest {
                    profile_id: profile,
                })
                .await)?;
            show(json, &list, |l| {
                let mut t = output::table(["PROFILE", "DIRECTORY", "KIND", "NAME"]);
                for a in &l.assignments {
                    t.add_row([
                        a.profile_id.to_string(),
                        a.directory.clone(),
                        a.kind.clone(),
                        a.name.clone(),
                    ]);
                }
                t.to_string()
            })
        }
        SwpCommand::Device {
            device_id,
            licensed,
            enabled,
        } => {
            let s = ok(admin
                .set_shared_workplace(pb::SetSharedWorkplaceRequest {
                    device_id,
                    licensed,
                    enabled,
                })
                .await)?;
            show(json, &s, |s| {
                format!(
                    "device {}: Shared Workplace {}, {}",
                    s.device_id,
                    if s.licensed {
                        "licensed"
                    } else {
                        "not licensed"
                    },
                    if s.enabled { "on" } else { "off" }
                )
            })
        }
        SwpCommand::Folder {
            folder_id,
            enabled,
            inherit,
        } => {
            let enabled = if inherit { None } else { enabled };
            let e = ok(admin
                .set_folder_shared_workplace(pb::SetFolderSharedWorkplaceRequest {
                    folder_id,
                    enabled,
                })
                .await)?;
            show(json, &e, |_| match enabled {
                Some(true) => format!("folder {folder_id}: Shared Workplace on"),
                Some(false) => format!("folder {folder_id}: Shared Workplace off"),
                None => format!("folder {folder_id}: Shared Workplace inherited"),
            })
        }
        SwpCommand::Licences(LicenceCommand::Add {
            name,
            seats,
            expires,
        }) => {
            let l = ok(admin
                .create_swp_licence(pb::CreateSwpLicenceRequest {
                    name,
                    seats,
                    expires,
                })
                .await)?;
            show(json, &l, |l| {
                format!(
                    "licence {} `{}`: {} seats, valid until {}{}",
                    l.id,
                    l.name,
                    l.seats,
                    l.expires,
                    if l.expired { " (expired)" } else { "" }
                )
            })
        }
        SwpCommand::Licences(LicenceCommand::List) => {
            let list = ok(admin.list_swp_licences(pb::ListSwpLicencesRequest {}).await)?;
            show(json, &list, |l| {
                let mut t = output::table(["ID", "NAME", "SEATS", "USED", "VALID UNTIL", "STATE"]);
                for x in &l.licences {
                    t.add_row([
                        x.id.to_string(),
                        x.name.clone(),
                        x.seats.to_string(),
                        x.used.to_string(),
                        x.expires.clone(),
                        if x.expired { "expired" } else { "valid" }.to_owned(),
                    ]);
                }
                t.to_string()
            })
        }
        SwpCommand::Licences(LicenceCommand::Rm { id }) => {
            let e = ok(admin
                .delete_swp_licence(pb::DeleteSwpLicenceRequest { id })
                .await)?;
            show(json, &e, |_| format!("licence {id} removed"))
        }
        SwpCommand::Sessions { user } => {
            let list = ok(admin
                .list_swp_sessions(pb::ListSwpSessionsRequest {
                    user: user.unwrap_or_default(),
                })
                .await)?;
            show(json, &list, |l| {
                let mut t =
                    output::table(["DEVICE", "NAME", "USER", "DIRECTORY", "SINCE", "SERVER"]);
                for x in &l.sessions {
                    t.add_row([
                        x.device_id.to_string(),
                        x.device_name.clone(),
                        if x.display_name.is_empty() {
                            x.user.clone()
                        } else {
                            format!("{} ({})", x.user, x.display_name)
                        },
                        x.directory.clone(),
                        output::time(x.started_at_ms),
                        x.server_id.clone(),
                    ]);
                }
                t.to_string()
            })
        }
        SwpCommand::Logout { device_id } => {
            let s = ok(admin
                .end_swp_session(pb::EndSwpSessionRequest { device_id })
                .await)?;
            show(json, &s, |s| {
                format!("{} logged out of device {}", s.user, s.device_id)
            })
        }
    }
}
