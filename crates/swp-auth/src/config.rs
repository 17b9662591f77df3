//! Configuration of `swp-auth`: defaults, then the TOML file, then `UMS_` variables
//! (`UMS_INTERNAL__LISTEN=0.0.0.0:61617`, `UMS_IDENTITY_DIR=...`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use ums_service::LogConfig;

use crate::directory::PoolOptions;
use crate::limits::LimitConfig;

/// The internal port servers call.
pub const SWP_AUTH_PORT: u16 = 61617;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SwpAuthConfig {
    /// This node's identity in the network: `ca.pem`, `node.pem`, `node-key.pem` (mode 0600).
    pub identity_dir: PathBuf,
    pub network: NetworkConfig,
    pub internal: InternalConfig,
    pub pool: PoolConfig,
    pub limits: LimitConfig,
    pub log: LogConfig,
}

/// Joining the network when `identity_dir` holds no identity yet.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// `host:port` of any server's admin port.
    pub server: String,
    /// File holding the network token (mode 0600). Empty: load the identity only.
    pub token_file: PathBuf,
    /// This component's id in the network. Empty: `swp-auth-<host name>`.
    pub id: String,
    /// Names and addresses servers reach this service by. Empty: the host name and 127.0.0.1.
    pub names: Vec<String>,
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
            identity_dir: PathBuf::from("identity"),
            network: NetworkConfig::default(),
            internal: InternalConfig::default(),
            pool: PoolConfig::default(),
            limits: LimitConfig::default(),
            log: LogConfig::default(),
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

impl SwpAuthConfig {
    pub fn listen_addr(&self) -> anyhow::Result<SocketAddr> {
        self.internal.listen.parse().map_err(|_| {
            anyhow::anyhow!(
                "internal.listen: `{}` is not an address such as 0.0.0.0:{SWP_AUTH_PORT}",
                self.internal.listen
            )
        })
    }

    pub fn pool_options(&self) -> PoolOptions {
        PoolOptions {
            connections: self.pool.connections.max(1),
            connect_timeout: Duration::from_millis(self.pool.connect_timeout_ms.max(100)),
            op_timeout: Duration::from_millis(self.pool.op_timeout_ms.max(100)),
            group_ttl: Duration::from_secs(self.pool.group_cache_s),
        }
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
        assert_eq!(
            cfg.identity_dir,
            std::path::PathBuf::from("/var/lib/ums/swp-auth/identity")
        );
    }
}
