//! `swp-auth`: Shared Workplace authentication. Servers send it a user's name and password with
//! the directory's configuration; it checks the password against Active Directory or a generic
//! LDAP directory and answers who the user is: login, groups (nested, with the primary group) and
//! OUs. The server merges the profiles of those objects with the device's.
//!
//! * [`escape`]: RFC 4515 filter and RFC 4514 DN escaping of user input.
//! * [`login`]: the typed name (`alice`, `alice@domain`, `DOMAIN\alice`) and the password checks
//!   done before any bind.
//! * [`directory`]: pooled connections with failover, AD and LDAP lookups.
//! * [`limits`]: login rate limits per user and per device.
//! * [`heartbeat`]: its entry in the process registry, through the servers.
//! * [`service`]: the gRPC service (`ums.swp.v1.SwpAuthService`) and [`run`].

pub mod config;
pub mod directory;
pub mod escape;
pub mod heartbeat;
pub mod limits;
pub mod login;
pub mod service;

use std::sync::Arc;
use std::time::Instant;

use ums_domain::DirectoryUser;
use ums_proto::swp::v1 as pb;

pub use config::{Config, SwpAuthConfig};
pub use service::{Listeners, run};

/// This node's identity: the one saved in the identity directory, or, with a token file, one
/// obtained by joining the network through `network.servers`.
pub async fn identity(cfg: &Config) -> anyhow::Result<ums_tls::NodeIdentity> {
    Ok(cfg.network.identity().await?)
}

/// Why a login or lookup failed. The messages are what the device user or the administrator
/// reads; passwords never appear in them.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Input refused before the directory was asked (empty password, malformed name).
    #[error("{0}")]
    Invalid(String),
    /// Unknown user or wrong password: deliberately the same answer, so it cannot be used to
    /// find out which user names exist.
    #[error("wrong user name or password")]
    WrongCredentials,
    /// The account may not log in (disabled, locked, expired), or the directory refused the
    /// bind for a reason it gave. The reason is logged; the answer reads like a wrong password,
    /// so a device learns nothing about the account.
    #[error("wrong user name or password")]
    Refused(String),
    /// Lookup of an unknown user.
    #[error("{0}")]
    NotFound(String),
    /// No controller of the directory could be reached, or it failed mid-operation.
    #[error("{0}")]
    Unavailable(String),
    /// The directory's configuration is wrong (bad URL, refused bind account).
    #[error("{0}")]
    Config(String),
    /// Too many attempts.
    #[error("{0}")]
    RateLimited(String),
}

impl From<AuthError> for tonic::Status {
    fn from(e: AuthError) -> Self {
        use tonic::Status;
        let m = e.to_string();
        match e {
            AuthError::Invalid(_) => Status::invalid_argument(m),
            AuthError::WrongCredentials | AuthError::Refused(_) => Status::unauthenticated(m),
            AuthError::NotFound(_) => Status::not_found(m),
            AuthError::Unavailable(_) => Status::unavailable(m),
            AuthError::Config(_) => Status::failed_precondition(m),
            AuthError::RateLimited(_) => Status::resource_exhausted(m),
        }
    }
}

/// The directories in use and the rate limits: everything a login needs besides transport.
pub struct Authenticator {
    directories: directory::Directories,
    limits: limits::Limits,
    options: directory::PoolOptions,
}

impl Authenticator {
    pub fn new(cfg: &Config) -> Arc<Self> {
        Arc::new(Self {
            directories: directory::Directories::default(),
            limits: limits::Limits::new(&cfg.limits),
            options: cfg.pool.clone(),
        })
    }

    /// Checks a user's password and resolves the user.
    pub async fn authenticate(
        &self,
        req: &pb::AuthenticateRequest,
    ) -> Result<DirectoryUser, AuthError> {
        let cfg = req
            .directory
            .as_ref()
            .ok_or_else(|| AuthError::Invalid("no directory given".into()))?;
        let name = login::LoginName::parse(&req.username)?;
        login::check_password(&req.password)?;
        let key = format!("{}/{}", cfg.id, name.limit_key());
        if let Err(limited) = self.limits.admit(&key, req.device_id, Instant::now()) {
            let (who, wait) = match limited {
                limits::Limited::User(w) => (format!("user `{}`", name.user()), w),
                limits::Limited::Device(w) => (format!("device {}", req.device_id), w),
            };
            tracing::warn!(user = %name.user(), device_id = req.device_id, "login rate limited");
            return Err(AuthError::RateLimited(format!(
                "too many login attempts for {who}: try again in {} s",
                wait.as_secs().max(1)
            )));
        }
        let directory = self.directories.get(cfg, &self.options)?;
        let out = directory.authenticate(&name, &req.password).await;
        if matches!(out, Err(AuthError::WrongCredentials)) {
            self.limits.failed(&key);
        }
        out
    }

    /// Resolves a user without a password.
    pub async fn lookup(&self, req: &pb::LookupUserRequest) -> Result<DirectoryUser, AuthError> {
        let cfg = req
            .directory
            .as_ref()
            .ok_or_else(|| AuthError::Invalid("no directory given".into()))?;
        let name = login::LoginName::parse(&req.username)?;
        self.directories
            .get(cfg, &self.options)?
            .lookup(&name)
            .await
    }
}

/// The wire form of a resolved user.
pub fn user_pb(u: DirectoryUser) -> pb::AuthenticateResponse {
    let group = |g: ums_domain::DirectoryGroup| pb::Group {
        name: g.name,
        dn: g.dn,
        level: g.level,
    };
    pb::AuthenticateResponse {
        login: u.login,
        dn: u.dn,
        display_name: u.display_name,
        primary_group: u.primary_group.map(group),
        groups: u.groups.into_iter().map(group).collect(),
        ous: u
            .ous
            .into_iter()
            .map(|o| pb::Ou {
                name: o.name,
                dn: o.dn,
            })
            .collect(),
    }
}
