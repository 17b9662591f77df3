//! Configuration of `swp-auth`: defaults, then the TOML file, then `UMS_` variables
//! (`UMS_INTERNAL__LISTEN=0.0.0.0:61617`, `UMS_NETWORK__IDENTITY_DIR=...`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use ums_network::{Membership, NetworkConfig};
use ums_service::LogConfig;
use ums_tls::ComponentKind;

use crate::directory::PoolOptions;
use crate::limits::LimitConfig;

/// The internal port servers call.
pub const SWP_AUTH_PORT: u16 = 61617;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SwpAuthConfig {
    /// Where swp-auth keeps its identity in the network (`identity/`: `ca.pem`, `node.pem`,
    /// `node-key.pem`, mode 0600), unless `network.identity_dir` says otherwise.
    pub data_dir: PathBuf,
    /// Joining the network (or only loading the identity when no token file is set).
    pub network: NetworkConfig,
    pub internal: InternalConfig,
    pub pool: PoolConfig,
    pub limits: LimitConfig,
    pub log: LogConfig,
    pub metrics: ums_service::metrics::MetricsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InternalConfig {
    /// Address of the internal gRPC API (mutual TLS; only servers may call).
    pub listen: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Connections per directory for searches, and as many again for users' binds.
    pub connections: usize,
    /// Time to connect to one controller (TCP and TLS) before trying the next.
    pub connect_timeout_ms: u64,
    /// Time one search or bind may take.
    pub op_timeout_ms: u64,
    /// How long a group's name and parent groups are cached.
    pub group_cache_s: u64,
}

impl Default for SwpAuthConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("swp-auth-data"),
            network: NetworkConfig::default(),
            internal: InternalConfig::default(),
            pool: PoolConfig::default(),
            limits: LimitConfig::default(),
            log: LogConfig::default(),
            metrics: Default::default(),
        }
    }
}

impl Default for InternalConfig {
    fn default() -> Self {
        Self {
            listen: format!("0.0.0.0:{SWP_AUTH_PORT}"),
        }
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            connections: 16,
            connect_timeout_ms: 3_000,
            op_timeout_ms: 5_000,
            group_cache_s: 60,
        }
    }
}

impl ums_service::ServiceConfig for SwpAuthConfig {
    type Validated = Config;

    fn validate(&self) -> anyhow::Result<Config> {
        SwpAuthConfig::validate(self)
    }
}

/// swp-auth's configuration, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub network: Membership,
    pub pool: PoolOptions,
    pub limits: LimitConfig,
    pub log: LogConfig,
    /// Where `/metrics` is served, when it is.
    pub metrics_listen: Option<SocketAddr>,
}

impl SwpAuthConfig {
    /// Checks every value; the error names the key.
    pub fn validate(&self) -> anyhow::Result<Config> {
        let listen = self.internal.listen.parse().map_err(|_| {
            anyhow::anyhow!(
                "internal.listen: `{}` is not an address such as 0.0.0.0:{SWP_AUTH_PORT}",
                self.internal.listen
            )
        })?;
        anyhow::ensure!(self.pool.connections > 0, "pool.connections: at least 1");
        anyhow::ensure!(
            self.pool.connect_timeout_ms >= 100,
            "pool.connect_timeout_ms: at least 100"
        );
        anyhow::ensure!(
            self.pool.op_timeout_ms >= 100,
            "pool.op_timeout_ms: at least 100"
        );
        Ok(Config {
            listen,
            network: self
                .network
                .validate(ComponentKind::SwpAuth, &self.data_dir)?,
            pool: PoolOptions {
                connections: self.pool.connections,
                connect_timeout: Duration::from_millis(self.pool.connect_timeout_ms),
                op_timeout: Duration::from_millis(self.pool.op_timeout_ms),
                group_ttl: Duration::from_secs(self.pool.group_cache_s),
            },
            limits: self.limits.clone(),
            log: self.log.clone(),
            metrics_listen: self.metrics.validate()?,
        })
    }
}

#[cfg(test)]
mod tests {
    /// The documented example configuration parses and equals the defaults it documents.
    #[test]
    fn deploy_example_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/swp-auth.toml");
        let cfg: super::SwpAuthConfig =
            ums_service::load_config(Some(std::path::Path::new(path))).expect("example parses");
        let defaults = super::SwpAuthConfig::default();
        assert_eq!(cfg.internal.listen, defaults.internal.listen);
        assert_eq!(cfg.pool.connections, defaults.pool.connections);
        assert_eq!(cfg.limits, defaults.limits);
        let v = cfg.validate().expect("the example validates");
        assert_eq!(
            v.network.identity_dir,
            std::path::PathBuf::from("/var/lib/ums/swp-auth/identity")
        );
    }
}
