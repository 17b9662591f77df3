//! One directory: its configuration, pooled connections with failover across its controllers,
//! and the lookups a login needs.
//!
//! Two pools per directory: *service* connections, bound once with the bind account, run the
//! searches (user, groups, primary group); *bind* connections carry the users' simple binds and
//! nothing else, so a user's identity never leaks into a search. A connection is used by one
//! operation at a time and goes back to its pool when the operation succeeded; a connection that
//! failed is dropped and the operation is retried once on a fresh one, which may be on another
//! controller. Controllers are tried in their configured order, starting with the last one that
//! answered.
//!
//! Simple binds go over TLS only: `ldaps://` URLs, or `ldap://` with StartTLS.
//!
//! `config` holds a directory's validated configuration and the filters built from it, `pool`
//! the connection pools, failover and binds, `resolve` the lookups of a user (search, account
//! state, groups, primary group, OUs).
//!
//! Users are searched under the configured base DN; groups wherever they live in the domain:
//! nested groups are read by their DN, and the searches for groups (the primary group by SID,
//! groups listing a member) start at the naming context that holds the base DN, as the
//! directory's RootDSE names it (`defaultNamingContext`, `namingContexts`), so a base DN
//! narrowed to the users' OU keeps groups kept in `CN=Users`.

mod config;
mod pool;
mod resolve;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ums_proto::swp::v1 as pb;

pub use config::{DirectoryConfig, Kind, Membership};
pub use pool::PoolOptions;
pub use resolve::{ous_of, sid_from_string};

use crate::AuthError;
use pool::Pool;
use resolve::CachedGroup;

/// A connected directory.
pub struct Directory {
    pub config: DirectoryConfig,
    options: PoolOptions,
    tls: Option<Arc<rustls::ClientConfig>>,
    service: Pool,
    binds: Pool,
    /// Index of the controller that answered last.
    preferred: AtomicUsize,
    /// Lowercased DN -> name and parent groups.
    groups: Mutex<HashMap<String, CachedGroup>>,
    /// Primary group SID (binary) -> (DN, name).
    primary: Mutex<HashMap<Vec<u8>, (String, String, Instant)>>,
    /// The naming context (domain root) groups are searched in, once the RootDSE told it.
    root: Mutex<Option<String>>,
}

impl Directory {
    pub fn new(config: DirectoryConfig, options: PoolOptions) -> Result<Self, AuthError> {
        let tls = if config.ca_pem.trim().is_empty() {
            None
        } else {
            let certs = ums_tls::parse_certs(&config.ca_pem).map_err(|e| {
                AuthError::Config(format!("directory `{}`: CA certificate: {e}", config.name))
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for c in certs {
                roots.add(c).map_err(|e| {
                    AuthError::Config(format!("directory `{}`: CA certificate: {e}", config.name))
                })?;
            }
            Some(Arc::new(
                rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            ))
        };
        Ok(Self {
            service: Pool::new(options.connections),
            binds: Pool::new(options.connections),
            options,
            tls,
            config,
            preferred: AtomicUsize::new(0),
            groups: Mutex::new(HashMap::new()),
            primary: Mutex::new(HashMap::new()),
            root: Mutex::new(None),
        })
    }
}

/// Every directory a server has sent, connected on first use and replaced when its revision
/// changes.
#[derive(Default)]
pub struct Directories {
    map: Mutex<HashMap<i64, Arc<Directory>>>,
}

impl Directories {
    pub fn get(
        &self,
        cfg: &pb::Directory,
        options: &PoolOptions,
    ) -> Result<Arc<Directory>, AuthError> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = map.get(&cfg.id)
            && d.config.revision == cfg.revision
        {
            return Ok(d.clone());
        }
        let d = Arc::new(Directory::new(
            DirectoryConfig::from_proto(cfg)?,
            options.clone(),
        )?);
        map.insert(cfg.id, d.clone());
        Ok(d)
    }

    /// Ids of the directories in use.
    pub fn ids(&self) -> HashSet<i64> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }
}
