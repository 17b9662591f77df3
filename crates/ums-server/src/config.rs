//! Configuration of `ums-server`: defaults, then the TOML file, then `UMS_` variables
//! (`UMS_DEVICE__LISTEN=0.0.0.0:30001`, `UMS_DATABASE_URL=postgres://...`).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use ums_service::LogConfig;

/// The device port of a server alone on its host.
pub const DEVICE_PORT: u16 = 30001;
/// The device port of a server that shares its host with a broker (the broker takes 30001).
pub const DEVICE_PORT_BEHIND_BROKER: u16 = 30002;
/// The admin port: gRPC and HTTPS JSON.
pub const ADMIN_PORT: u16 = 8443;
/// The internal port: mutual TLS between the components of the network.
pub const INTERNAL_PORT: u16 = 61616;

/// Everything `ums-server` reads from its configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Where the server keeps its certificates, the embedded database and the initial admin
    /// password. Default `./data`.
    pub data_dir: PathBuf,
    /// Database URL. Empty: the embedded SQLite database `<data_dir>/ums.db`.
    /// For PostgreSQL: `postgres://USER:PASSWORD@HOST:5432/DB`.
    pub database_url: String,
    pub device: DeviceConfig,
    pub admin: AdminConfig,
    pub tls: TlsConfig,
    pub cluster: ClusterConfig,
    pub log: LogConfig,
    pub swp: SwpConfig,
}

/// Shared Workplace: where the login service runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SwpConfig {
    /// `https://HOST:61617` of `swp-auth`. Empty: device logins are refused.
    pub url: String,
    /// Time a login may take, directory included.
    pub timeout_ms: u64,
}

impl Default for SwpConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            timeout_ms: 10_000,
        }
    }
}

/// Whether the server is alone or one of an HA network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterMode {
    /// One server; any database.
    #[default]
    Single,
    /// One of several servers on one PostgreSQL database.
    Ha,
}

/// The server's part in the HA network.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// "single" or "ha". HA needs PostgreSQL.
    pub mode: ClusterMode,
    /// Address of the internal port (mutual TLS between the components). Empty: no internal
    /// port.
    pub internal_listen: String,
    /// The network token file. Empty: `<data_dir>/network-token`. The first server writes it; a
    /// server joining an existing network reads it.
    pub token_file: PathBuf,
    /// The host name or address the other components reach this server by. Empty: the first
    /// non-loopback name of `tls.names`, else 127.0.0.1.
    pub advertise_host: String,
    /// Interval of the server's heartbeat.
    pub heartbeat_ms: u64,
    /// A process silent for this long shows as stopped and leaves the brokers' rotation.
    pub silent_after_ms: u64,
    /// Lifetime of the scheduler lease; its holder renews it every heartbeat.
    pub lease_ms: u64,
    /// Interval of the change-counter poll that backs up database notifications.
    pub poll_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            mode: ClusterMode::Single,
            internal_listen: format!("0.0.0.0:{INTERNAL_PORT}"),
            token_file: PathBuf::new(),
            advertise_host: String::new(),
            heartbeat_ms: 1000,
            silent_after_ms: 5000,
            lease_ms: 5000,
            poll_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceConfig {
    /// Address of the device API. Empty: port 30001 on all interfaces, or 30002 when
    /// `behind_broker` is set.
    pub listen: String,
    /// The server shares its host with a broker, which takes port 30001.
    pub behind_broker: bool,
    /// TLS handshakes in progress at once on the device port.
    pub max_handshakes: usize,
    /// TLS sessions remembered for resumption.
    pub session_cache: usize,
    /// Every device connection starts with a PROXY protocol v2 header from the broker
    /// (`proxy_protocol = true` there), which carries the device's address.
    pub proxy_protocol: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin API (gRPC and HTTPS JSON).
    pub listen: String,
    /// Lifetime of an administrator's session, in hours.
    pub session_hours: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Names and addresses the server certificate is valid for. Empty: localhost, 127.0.0.1,
    /// ::1 and the host name.
    pub names: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            database_url: String::new(),
            device: DeviceConfig::default(),
            admin: AdminConfig::default(),
            tls: TlsConfig::default(),
            cluster: ClusterConfig::default(),
            log: LogConfig::default(),
            swp: SwpConfig::default(),
        }
    }
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            listen: String::new(),
            behind_broker: false,
            max_handshakes: 512,
            session_cache: 100_000,
            proxy_protocol: false,
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: format!("0.0.0.0:{ADMIN_PORT}"),
            session_hours: 12,
        }
    }
}

impl ServerConfig {
    /// The device API address, after the port rule: 30001 alone, 30002 behind a broker.
    pub fn device_addr(&self) -> anyhow::Result<SocketAddr> {
        if self.device.listen.is_empty() {
            let port = if self.device.behind_broker {
                DEVICE_PORT_BEHIND_BROKER
            } else {
                DEVICE_PORT
            };
            return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
        }
        parse_addr("device.listen", &self.device.listen)
    }

    pub fn admin_addr(&self) -> anyhow::Result<SocketAddr> {
        parse_addr("admin.listen", &self.admin.listen)
    }

    /// The internal port's address, if the server has one.
    pub fn internal_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        if self.cluster.internal_listen.is_empty() {
            return Ok(None);
        }
        parse_addr("cluster.internal_listen", &self.cluster.internal_listen).map(Some)
    }

    /// The network token file.
    pub fn token_file(&self) -> PathBuf {
        if self.cluster.token_file.as_os_str().is_empty() {
            self.data_dir.join("network-token")
        } else {
            self.cluster.token_file.clone()
        }
    }

    /// Refuses settings that cannot work together.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.cluster.mode == ClusterMode::Ha && !self.database_url().starts_with("postgres") {
            anyhow::bail!(
                "cluster.mode = \"ha\" needs PostgreSQL (database_url = \"postgres://...\"): the embedded SQLite database is a file in one server's data directory, which the other servers cannot share"
            );
        }
        if self.cluster.silent_after_ms < 2 * self.cluster.heartbeat_ms {
            anyhow::bail!("cluster.silent_after_ms must be at least twice cluster.heartbeat_ms");
        }
        if self.cluster.lease_ms < 2 * self.cluster.heartbeat_ms {
            anyhow::bail!("cluster.lease_ms must be at least twice cluster.heartbeat_ms");
        }
        Ok(())
    }

    /// The database URL, the embedded database when none is configured.
    pub fn database_url(&self) -> String {
        if self.database_url.is_empty() {
            ums_db::sqlite_url(&self.data_dir)
        } else {
            self.database_url.clone()
        }
    }

    /// Names for the server certificate.
    pub fn tls_names(&self) -> Vec<String> {
        if !self.tls.names.is_empty() {
            return self.tls.names.clone();
        }
        let mut names = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            let h = h.trim();
            if !h.is_empty() && h != "localhost" {
                names.push(h.to_owned());
            }
        }
        names
    }
}

fn parse_addr(key: &str, value: &str) -> anyhow::Result<SocketAddr> {
    value
        .parse()
        .map_err(|_| anyhow::anyhow!("{key}: `{value}` is not an address such as 0.0.0.0:30001"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_rule_of_the_device_api() {
        let mut cfg = ServerConfig::default();
        assert_eq!(cfg.device_addr().expect("addr").port(), 30001);
        cfg.device.behind_broker = true;
        assert_eq!(cfg.device_addr().expect("addr").port(), 30002);
        cfg.device.listen = "127.0.0.1:4000".into();
        assert_eq!(cfg.device_addr().expect("addr").port(), 4000);
        cfg.device.listen = "nonsense".into();
        let err = cfg.device_addr().expect_err("bad address");
        assert!(err.to_string().contains("device.listen"), "{err}");
    }

    #[test]
    fn ha_mode_refuses_the_embedded_database() {
        let mut cfg = ServerConfig::default();
        cfg.check().expect("single on sqlite");
        cfg.cluster.mode = ClusterMode::Ha;
        let err = cfg.check().expect_err("ha on sqlite");
        assert!(err.to_string().contains("needs PostgreSQL"), "{err}");
        cfg.database_url = "postgres://ums@db/ums".into();
        cfg.check().expect("ha on postgres");
        cfg.cluster.lease_ms = 100;
        assert!(cfg.check().is_err());
    }

    #[test]
    fn embedded_database_by_default() {
        let cfg = ServerConfig::default();
        assert!(cfg.database_url().starts_with("sqlite://"));
    }
}

#[cfg(test)]
mod example_file {
    /// The documented example configuration parses and equals the defaults it documents.
    #[test]
    fn deploy_example_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/ums-server.toml");
        let cfg: super::ServerConfig =
            ums_service::load_config(Some(std::path::Path::new(path))).expect("example parses");
        let defaults = super::ServerConfig::default();
        assert_eq!(cfg.device.listen, defaults.device.listen);
        assert_eq!(cfg.admin.listen, defaults.admin.listen);
        assert_eq!(cfg.device.session_cache, defaults.device.session_cache);
        assert_eq!(cfg.data_dir, std::path::PathBuf::from("/var/lib/ums"));
        assert_eq!(cfg.swp.url, defaults.swp.url);
        assert_eq!(cfg.swp.timeout_ms, defaults.swp.timeout_ms);
    }
}
