//! Configuration of `ums-server`: defaults, then the TOML file, then `UMS_` variables
//! (`UMS_DEVICE__LISTEN=0.0.0.0:30001`, `UMS_DATABASE_URL=postgres://...`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    pub network: NetworkConfig,
    pub log: LogConfig,
    pub swp: SwpConfig,
    pub metrics: ums_service::metrics::MetricsConfig,
    pub release: ReleaseConfig,
    pub update: UpdateConfig,
}

/// Schema updates: the `[update]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpdateConfig {
    /// Write a backup into `<data_dir>/backups` before this server applies schema steps to a
    /// database that holds data, and refuse to migrate when it fails. A fresh, empty database
    /// is not backed up.
    pub backup_before_migrate: bool,
    /// How many of these automatic backups to keep in `<data_dir>/backups` (the oldest are
    /// removed after a new one is written; backups taken with `ums-server backup` are kept).
    pub keep_backups: u32,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        Self {
            backup_before_migrate: true,
            keep_backups: 5,
        }
    }
}

/// Software releases: the `[release]` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReleaseConfig {
    /// The public release keys (`ed25519:...`, as `umsctl release keygen` prints them) a
    /// release's manifest must be signed with before this server stores it. Pinned at install,
    /// never read from the database. Empty: uploading releases is refused.
    #[serde(deserialize_with = "ums_service::list_or_commas")]
    pub public_keys: Vec<String>,
}

/// Shared Workplace: where the login service runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SwpConfig {
    /// `https://HOST:61617` of an `swp-auth` used besides the running ones of the process
    /// registry. Empty: only the registry's.
    pub url: String,
    /// Time a login may take, directory included.
    pub timeout_ms: u64,
    /// Seconds after which the directory is asked again about the user of a session (groups,
    /// OUs), so directory changes reach a logged-in user; 0: only at the next login.
    pub refresh_s: u64,
}

impl Default for SwpConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            timeout_ms: 10_000,
            refresh_s: 900,
        }
    }
}

/// Whether the server is alone or one of an HA network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// One server; any database.
    #[default]
    Single,
    /// One of several servers on one PostgreSQL database.
    Ha,
}

/// The server's part in the HA network: the `[network]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// "single" or "ha". HA needs PostgreSQL.
    pub mode: NetworkMode,
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
    /// For tests only, honoured by debug builds (a release build refuses it): shifts the clock
    /// this server reports in its heartbeat by this many ms, to show a skewed clock.
    pub test_clock_offset_ms: i64,
    /// On SIGTERM, how long the server keeps serving while it shows as "stopping", so brokers
    /// move new connections to the other servers before it closes its ports. 0: stop at once.
    pub drain_ms: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            mode: NetworkMode::Single,
            internal_listen: format!("0.0.0.0:{INTERNAL_PORT}"),
            token_file: PathBuf::new(),
            advertise_host: String::new(),
            heartbeat_ms: 1000,
            silent_after_ms: 5000,
            lease_ms: 5000,
            poll_ms: 1000,
            test_clock_offset_ms: 0,
            drain_ms: 2000,
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
    /// Further names and addresses devices reach this server by, added to its certificate:
    /// behind brokers, the names devices use for the brokers (or the one name of the network
    /// they resolve). A broker sends a device to any server, so every server behind the same
    /// brokers lists the same names. Empty: none.
    #[serde(deserialize_with = "ums_service::list_or_commas")]
    pub names: Vec<String>,
    /// TLS handshakes in progress at once on the device port.
    pub max_handshakes: usize,
    /// TLS sessions remembered for resumption.
    pub session_cache: usize,
    /// Every device connection starts with a PROXY protocol v2 header from the broker
    /// (`proxy_protocol = true` there), which carries the device's address.
    pub proxy_protocol: bool,
    /// A device whose last contact is at most this many seconds old shows as online: a few of
    /// the intervals its check-ins come at (three at one minute by default).
    pub online_within_s: u64,
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
    #[serde(deserialize_with = "ums_service::list_or_commas")]
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
            network: NetworkConfig::default(),
            log: LogConfig::default(),
            swp: SwpConfig::default(),
            metrics: ums_service::metrics::MetricsConfig::default(),
            release: ReleaseConfig::default(),
            update: UpdateConfig::default(),
        }
    }
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            listen: String::new(),
            behind_broker: false,
            names: Vec::new(),
            max_handshakes: 512,
            session_cache: 100_000,
            proxy_protocol: false,
            online_within_s: 180,
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

impl ums_service::ServiceConfig for ServerConfig {
    type Validated = Config;

    fn validate(&self) -> anyhow::Result<Config> {
        ServerConfig::validate(self)
    }

    fn redacted(&self) -> ServerConfig {
        let mut c = self.clone();
        c.database_url = ums_db::redact(&c.database_url);
        c
    }
}

impl ServerConfig {
    /// Checks every value once and resolves what depends on the host (its name, the advertised
    /// address, the database file), so the server never parses or looks anything up later.
    pub fn validate(&self) -> anyhow::Result<Config> {
        let net = &self.network;
        let device_listen = if self.device.listen.is_empty() {
            let port = if self.device.behind_broker {
                DEVICE_PORT_BEHIND_BROKER
            } else {
                DEVICE_PORT
            };
            SocketAddr::from(([0, 0, 0, 0], port))
        } else {
            parse_addr("device.listen", &self.device.listen)?
        };
        let admin_listen = parse_addr("admin.listen", &self.admin.listen)?;
        let internal_listen = if net.internal_listen.is_empty() {
            None
        } else {
            Some(parse_addr("network.internal_listen", &net.internal_listen)?)
        };
        let database_url = if self.database_url.is_empty() {
            ums_db::sqlite_url(&self.data_dir)
        } else {
            self.database_url.clone()
        };
        if net.mode == NetworkMode::Ha && !database_url.starts_with("postgres") {
            anyhow::bail!(
                "network.mode = \"ha\" needs PostgreSQL (database_url = \"postgres://...\"): the embedded SQLite database is a file in one server's data directory, which the other servers cannot share"
            );
        }
        at_least("network.heartbeat_ms", net.heartbeat_ms, 100)?;
        at_least("network.poll_ms", net.poll_ms, 100)?;
        if net.silent_after_ms < net.heartbeat_ms.saturating_mul(2) {
            anyhow::bail!("network.silent_after_ms must be at least twice network.heartbeat_ms");
        }
        if net.lease_ms < net.heartbeat_ms.saturating_mul(2) {
            anyhow::bail!("network.lease_ms must be at least twice network.heartbeat_ms");
        }
        at_least(
            "admin.session_hours",
            u64::from(self.admin.session_hours),
            1,
        )?;
        at_least(
            "device.max_handshakes",
            self.device.max_handshakes as u64,
            1,
        )?;
        at_least("device.session_cache", self.device.session_cache as u64, 1)?;
        at_least("device.online_within_s", self.device.online_within_s, 1)?;
        let tls_names = if self.tls.names.is_empty() {
            default_names()
        } else {
            self.tls.names.clone()
        };
        if let Some(bad) = tls_names.iter().find(|n| !valid_name(n)) {
            anyhow::bail!("tls.names: `{bad}` is not a host name or an address");
        }
        let advertise_host = if net.advertise_host.is_empty() {
            tls_names
                .iter()
                .find(|n| !matches!(n.as_str(), "localhost" | "127.0.0.1" | "::1"))
                .cloned()
                .unwrap_or_else(|| "127.0.0.1".into())
        } else if valid_name(&net.advertise_host) {
            net.advertise_host.clone()
        } else {
            anyhow::bail!(
                "network.advertise_host: `{}` is not a host name or an address",
                net.advertise_host
            );
        };
        let mut node_names = tls_names.clone();
        if !node_names.contains(&advertise_host) {
            node_names.push(advertise_host.clone());
        }
        if let Some(bad) = self.device.names.iter().find(|n| !valid_name(n)) {
            anyhow::bail!("device.names: `{bad}` is not a host name or an address");
        }
        // The server certificate: this server's own names, then the names devices use for the
        // brokers in front of it.
        let mut tls_names = tls_names;
        for name in &self.device.names {
            if !tls_names.contains(name) {
                tls_names.push(name.clone());
            }
        }
        at_least("swp.timeout_ms", self.swp.timeout_ms, 100)?;
        let swp = match self.swp.url.trim() {
            "" => None,
            url => {
                let addr = url
                    .strip_prefix("https://")
                    .ok_or_else(|| anyhow::anyhow!("swp.url `{url}` must start with https://"))?
                    .trim_end_matches('/');
                if addr.is_empty() || addr.contains('/') {
                    anyhow::bail!("swp.url `{url}` must be https://HOST:PORT");
                }
                Some(SwpSettings {
                    url: url.to_owned(),
                    addr: addr.to_owned(),
                    timeout: Duration::from_millis(self.swp.timeout_ms),
                })
            }
        };
        if net.test_clock_offset_ms != 0 && !cfg!(debug_assertions) {
            anyhow::bail!(
                "network.test_clock_offset_ms is for tests and works in debug builds only: remove it"
            );
        }
        let metrics_listen = self.metrics.validate()?;
        if self.update.backup_before_migrate && self.update.keep_backups == 0 {
            anyhow::bail!(
                "update.keep_backups is 0 but update.backup_before_migrate is on: keep at least 1 automatic backup, or set update.backup_before_migrate = false"
            );
        }
        let release_keys = ums_release::parse_keys(&self.release.public_keys)
            .map_err(|e| anyhow::anyhow!("release.public_keys: {e}"))?;
        let token_file = if net.token_file.as_os_str().is_empty() {
            self.data_dir.join("network-token")
        } else {
            net.token_file.clone()
        };
        Ok(Config {
            data_dir: self.data_dir.clone(),
            database_url,
            device: DeviceSettings {
                listen: device_listen,
                max_handshakes: self.device.max_handshakes,
                session_cache: self.device.session_cache,
                proxy_protocol: self.device.proxy_protocol,
                online_within: Duration::from_secs(self.device.online_within_s),
            },
            admin: AdminSettings {
                listen: admin_listen,
                session: Duration::from_secs(u64::from(self.admin.session_hours) * 3600),
            },
            network: NetworkSettings {
                mode: net.mode,
                internal_listen,
                token_file,
                advertise_host,
                heartbeat: Duration::from_millis(net.heartbeat_ms),
                silent_after: Duration::from_millis(net.silent_after_ms),
                lease: Duration::from_millis(net.lease_ms),
                poll: Duration::from_millis(net.poll_ms),
                test_clock_offset_ms: net.test_clock_offset_ms,
                config_hash: self.cluster_hash(),
                drain: Duration::from_millis(net.drain_ms),
            },
            metrics_listen,
            tls_names,
            node_names,
            swp,
            swp_timeout: Duration::from_millis(self.swp.timeout_ms),
            swp_refresh: Duration::from_secs(self.swp.refresh_s),
            log: self.log.clone(),
            release_keys,
            backup_before_migrate: self.update.backup_before_migrate,
            keep_backups: self.update.keep_backups as usize,
        })
    }
}

impl ServerConfig {
    /// A hash of the settings every server of a network must share (timings of the network,
    /// device and session rules, the names devices use for the brokers, whether swp-auth is
    /// configured), reported in the heartbeat so the network check finds a server configured
    /// differently. Ports, paths and this host's own names are left out: they differ by design.
    pub fn cluster_hash(&self) -> String {
        use sha2::Digest;
        let n = &self.network;
        let mut names = self.device.names.clone();
        names.sort();
        let text = format!(
            "mode={:?}\nheartbeat_ms={}\nsilent_after_ms={}\nlease_ms={}\npoll_ms={}\nonline_within_s={}\nsession_hours={}\nproxy_protocol={}\ndevice.names={}\nswp={}\n",
            n.mode,
            n.heartbeat_ms,
            n.silent_after_ms,
            n.lease_ms,
            n.poll_ms,
            self.device.online_within_s,
            self.admin.session_hours,
            self.device.proxy_protocol,
            names.join(","),
            !self.swp.url.trim().is_empty(),
        );
        hex::encode(&sha2::Sha256::digest(text.as_bytes())[..8])
    }
}

/// The server's configuration, checked: addresses parsed, names and paths resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// The database URL; the embedded database's when none was configured.
    pub database_url: String,
    pub device: DeviceSettings,
    pub admin: AdminSettings,
    pub network: NetworkSettings,
    /// Names and addresses of the server certificate devices and administrators verify:
    /// `tls.names`, then `device.names`.
    pub tls_names: Vec<String>,
    /// Names of the node certificate: `tls_names` and the advertised host.
    pub node_names: Vec<String>,
    /// Shared Workplace logins through this swp-auth too, when configured.
    pub swp: Option<SwpSettings>,
    /// Time a Shared Workplace login may take.
    pub swp_timeout: Duration,
    /// Age after which a session's user is looked up again; zero: never.
    pub swp_refresh: Duration,
    pub log: LogConfig,
    /// Where `/metrics` is served, when it is.
    pub metrics_listen: Option<SocketAddr>,
    /// The pinned public release keys (`[release] public_keys`).
    pub release_keys: Vec<ums_release::PublicKey>,
    /// Back up a database that holds data before migrating it (`[update]`).
    pub backup_before_migrate: bool,
    /// Automatic backups kept in `<data_dir>/backups`.
    pub keep_backups: usize,
}

#[derive(Debug, Clone)]
pub struct DeviceSettings {
    pub listen: SocketAddr,
    pub max_handshakes: usize,
    pub session_cache: usize,
    pub proxy_protocol: bool,
    /// A device contacted at most this long ago is online.
    pub online_within: Duration,
}

#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// Lifetime of an administrator's session.
    pub session: Duration,
}

#[derive(Debug, Clone)]
pub struct NetworkSettings {
    pub mode: NetworkMode,
    pub internal_listen: Option<SocketAddr>,
    pub token_file: PathBuf,
    /// The host other components reach this server by.
    pub advertise_host: String,
    pub heartbeat: Duration,
    pub silent_after: Duration,
    pub lease: Duration,
    pub poll: Duration,
    /// Added to the clock this server reports (tests only; 0 otherwise).
    pub test_clock_offset_ms: i64,
    /// [`ServerConfig::cluster_hash`].
    pub config_hash: String,
    /// See [`NetworkConfig::drain_ms`].
    pub drain: Duration,
}

#[derive(Debug, Clone)]
pub struct SwpSettings {
    /// `https://HOST:PORT` as configured, for messages.
    pub url: String,
    /// `HOST:PORT`.
    pub addr: String,
    pub timeout: Duration,
}

impl Config {
    /// The defaults, validated: what a test or a first start without a file gets.
    pub fn defaults() -> anyhow::Result<Config> {
        ServerConfig::default().validate()
    }
}

fn at_least(key: &str, value: u64, min: u64) -> anyhow::Result<()> {
    if value < min {
        anyhow::bail!("{key} must be at least {min}, not {value}");
    }
    Ok(())
}

/// A DNS name or an IP address: what a certificate can name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'_'))
}

/// localhost, 127.0.0.1, ::1 and the host name.
fn default_names() -> Vec<String> {
    let mut names = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() && h != "localhost" {
            names.push(h.to_owned());
        }
    }
    names
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
    fn the_cluster_hash_changes_with_shared_settings_only() {
        let base = ServerConfig::default();
        let mut other_port = base.clone();
        other_port.admin.listen = "0.0.0.0:9443".into();
        other_port.data_dir = "/elsewhere".into();
        other_port.tls.names = vec!["node2".into()];
        assert_eq!(base.cluster_hash(), other_port.cluster_hash());
        let mut other_timing = base.clone();
        other_timing.network.silent_after_ms = 9000;
        assert_ne!(base.cluster_hash(), other_timing.cluster_hash());
        let mut other_names = base.clone();
        other_names.device.names = vec!["ums.example".into()];
        assert_ne!(base.cluster_hash(), other_names.cluster_hash());
        assert_eq!(base.cluster_hash().len(), 16);
    }

    #[test]
    fn metrics_listen_is_parsed_or_off() {
        let mut cfg = ServerConfig::default();
        assert_eq!(cfg.validate().expect("valid").metrics_listen, None);
        cfg.metrics.listen = "127.0.0.1:9101".into();
        assert_eq!(
            cfg.validate()
                .expect("valid")
                .metrics_listen
                .map(|a| a.port()),
            Some(9101)
        );
        cfg.metrics.listen = "9101".into();
        let err = cfg.validate().expect_err("bad");
        assert!(err.to_string().contains("metrics.listen"), "{err}");
    }

    #[test]
    fn port_rule_of_the_device_api() {
        let mut cfg = ServerConfig::default();
        let port = |c: &ServerConfig| c.validate().expect("valid").device.listen.port();
        assert_eq!(port(&cfg), 30001);
        cfg.device.behind_broker = true;
        assert_eq!(port(&cfg), 30002);
        cfg.device.listen = "127.0.0.1:4000".into();
        assert_eq!(port(&cfg), 4000);
        cfg.device.listen = "nonsense".into();
        let err = cfg.validate().expect_err("bad address");
        assert!(err.to_string().contains("device.listen"), "{err}");
    }

    #[test]
    fn ha_mode_refuses_the_embedded_database() {
        let mut cfg = ServerConfig::default();
        cfg.validate().expect("single on sqlite");
        cfg.network.mode = NetworkMode::Ha;
        let err = cfg.validate().expect_err("ha on sqlite");
        assert!(err.to_string().contains("needs PostgreSQL"), "{err}");
        cfg.database_url = "postgres://ums@db/ums".into();
        cfg.validate().expect("ha on postgres");
        cfg.network.lease_ms = 100;
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn embedded_database_by_default() {
        let cfg = Config::defaults().expect("defaults");
        assert!(cfg.database_url.starts_with("sqlite://"));
        assert_eq!(cfg.network.token_file, PathBuf::from("data/network-token"));
    }

    #[test]
    fn every_value_is_checked_once() {
        let mut cfg = ServerConfig::default();
        cfg.network.heartbeat_ms = 0;
        let err = cfg.validate().expect_err("heartbeat 0");
        assert!(err.to_string().contains("network.heartbeat_ms"), "{err}");

        let mut cfg = ServerConfig::default();
        cfg.swp.url = "http://swp:61617".into();
        let err = cfg.validate().expect_err("plain http");
        assert!(err.to_string().contains("https://"), "{err}");
        cfg.swp.url = "https://swp.example.org:61617/".into();
        let swp = cfg.validate().expect("valid").swp.expect("swp on");
        assert_eq!(swp.addr, "swp.example.org:61617");

        let mut cfg = ServerConfig::default();
        cfg.tls.names = vec!["ums.example.org".into(), "bad name".into()];
        let err = cfg.validate().expect_err("space in a name");
        assert!(err.to_string().contains("bad name"), "{err}");
    }

    #[test]
    fn the_advertised_host_is_the_first_name_others_can_reach() {
        let mut cfg = ServerConfig::default();
        cfg.tls.names = vec!["localhost".into(), "10.0.0.5".into()];
        let v = cfg.validate().expect("valid");
        assert_eq!(v.network.advertise_host, "10.0.0.5");
        cfg.tls.names = vec!["localhost".into()];
        cfg.network.advertise_host = "ums1.example.org".into();
        let v = cfg.validate().expect("valid");
        assert_eq!(v.network.advertise_host, "ums1.example.org");
        assert_eq!(v.node_names, vec!["localhost", "ums1.example.org"]);
        assert_eq!(v.tls_names, vec!["localhost"]);
    }
}

#[cfg(test)]
mod device_names {
    use super::*;

    /// Behind brokers, a device checks the certificate against the broker's name, whichever
    /// server the broker picked: the names devices use for the brokers join every server's
    /// certificate, but not its node certificate, nor decide its advertised address.
    #[test]
    fn the_names_of_the_brokers_join_the_server_certificate() {
        let mut cfg = ServerConfig::default();
        cfg.tls.names = vec!["127.0.0.1".into(), "localhost".into()];
        cfg.network.advertise_host = "127.0.0.1".into();
        cfg.device.names = vec![
            "127.0.0.1".into(),
            "127.0.0.2".into(),
            "ums.example.org".into(),
        ];
        let v = cfg.validate().expect("valid");
        assert_eq!(
            v.tls_names,
            ["127.0.0.1", "localhost", "127.0.0.2", "ums.example.org"]
        );
        assert_eq!(v.node_names, ["127.0.0.1", "localhost"]);
        assert_eq!(v.network.advertise_host, "127.0.0.1");

        cfg.device.names = vec!["not a name".into()];
        let err = cfg.validate().expect_err("bad name");
        assert!(err.to_string().contains("device.names"), "{err}");
    }

    /// `UMS_DEVICE__NAMES=a,b`, as every list of names can be given in the environment.
    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
    fn names_from_the_environment_are_comma_separated() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("UMS_DEVICE__NAMES", "127.0.0.1,ums.example.org");
            jail.set_env("UMS_TLS__NAMES", "10.0.0.5");
            let cfg: ServerConfig = ums_service::load_config(None).expect("loads");
            assert_eq!(cfg.device.names, ["127.0.0.1", "ums.example.org"]);
            assert_eq!(cfg.tls.names, ["10.0.0.5"]);
            Ok(())
        });
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
        assert_eq!(cfg.device.online_within_s, defaults.device.online_within_s);
        assert!(cfg.update.backup_before_migrate);
        assert_eq!(cfg.update.keep_backups, defaults.update.keep_backups);
        let valid = cfg.validate().expect("the example validates");
        assert!(valid.backup_before_migrate);
        let mut none_kept = cfg.clone();
        none_kept.update.keep_backups = 0;
        let err = none_kept.validate().expect_err("no backup kept");
        assert!(err.to_string().contains("update.keep_backups"), "{err}");
    }
}
