//! Configuration of `ums-broker`: defaults, then the TOML file, then `UMS_` variables
//! (`UMS_LISTEN=0.0.0.0:30001`, `UMS_SERVERS=10.0.0.1:30002,10.0.0.2:30002`,
//! `UMS_HEALTH__INTERVAL_MS=500`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use ums_network::{Membership, NetworkConfig};
use ums_service::LogConfig;
use ums_tls::ComponentKind;

/// The device port the broker takes on its host.
pub const DEVICE_PORT: u16 = 30001;

/// Everything `ums-broker` reads from its configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Address devices connect to. Default `0.0.0.0:30001`.
    pub listen: String,
    /// Device ports of the servers, such as `10.0.0.5:30002`. A list in TOML; in the environment
    /// a comma-separated string. Default: none (every device connection is closed).
    #[serde(deserialize_with = "ums_service::list_or_commas")]
    pub servers: Vec<String>,
    /// Milliseconds a connect to a server may take before the next server is tried. Default 1000.
    pub connect_timeout_ms: u64,
    /// Seconds without a byte in either direction after which both sides are closed. 0: never.
    /// Default 300.
    pub idle_timeout_s: u64,
    /// Seconds proxied connections get to finish after SIGTERM. Default 10.
    pub drain_timeout_s: u64,
    /// Device connections proxied at once; further devices are closed at once. Default 50000.
    pub max_connections: usize,
    /// Bytes read from a socket at once, into a buffer of the worker thread; only bytes the other
    /// side cannot take at once are kept by the connection, until it takes them. Default 8192.
    pub buffer_size: usize,
    /// Send a PROXY protocol v2 header to the server before the device's bytes, so it can learn
    /// the device's address. Default false; the servers behind must set
    /// `device.proxy_protocol` too.
    pub proxy_protocol: bool,
    pub health: HealthConfig,
    pub rate: RateConfig,
    pub metrics: MetricsConfig,
    /// Where the broker keeps its identity in the network (`identity/`). Default `./data`.
    pub data_dir: PathBuf,
    /// Joining the HA network, to follow its running servers instead of `servers`.
    pub network: NetworkConfig,
    pub log: LogConfig,
}

/// Active health checks: a TCP connect to every server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Milliseconds between checks of a server. Default 250.
    pub interval_ms: u64,
    /// Milliseconds a check's connect may take. Default 200.
    pub timeout_ms: u64,
}

/// New connections per second from one source address (token bucket).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateConfig {
    /// Tokens added per second. 0 turns the limit off. Default 100.
    pub per_second: u32,
    /// Bucket size: the burst one address may open at once. Default 200.
    pub burst: u32,
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the HTTP listener serving `/metrics`. Empty: no listener.
    /// Default `127.0.0.1:9102`.
    pub listen: String,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            listen: format!("0.0.0.0:{DEVICE_PORT}"),
            servers: Vec::new(),
            connect_timeout_ms: 1000,
            idle_timeout_s: 300,
            drain_timeout_s: 10,
            max_connections: 50_000,
            buffer_size: 8192,
            proxy_protocol: false,
            health: HealthConfig::default(),
            rate: RateConfig::default(),
            metrics: MetricsConfig::default(),
            data_dir: PathBuf::from("data"),
            network: NetworkConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval_ms: 250,
            timeout_ms: 200,
        }
    }
}

impl Default for RateConfig {
    fn default() -> Self {
        Self {
            per_second: 100,
            burst: 200,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9102".into(),
        }
    }
}

impl ums_service::ServiceConfig for BrokerConfig {
    type Validated = Config;

    fn validate(&self) -> anyhow::Result<Config> {
        BrokerConfig::validate(self)
    }
}

/// The broker's configuration, checked: addresses parsed, durations and the network resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The static servers (when not following a network).
    pub servers: Vec<SocketAddr>,
    pub connect_timeout: Duration,
    /// `None`: connections are never closed for idleness.
    pub idle_timeout: Option<Duration>,
    pub drain_timeout: Duration,
    pub max_connections: usize,
    pub buffer_size: usize,
    pub proxy_protocol: bool,
    pub health_interval: Duration,
    pub health_timeout: Duration,
    /// New connections per second from one address; 0: no limit.
    pub rate_per_second: u32,
    pub rate_burst: u32,
    /// `None`: no metrics endpoint.
    pub metrics_listen: Option<SocketAddr>,
    pub network: Membership,
    pub log: LogConfig,
}

impl BrokerConfig {
    /// Checks every value, so a bad configuration stops the broker at start.
    pub fn validate(&self) -> anyhow::Result<Config> {
        let listen = parse_addr("listen", &self.listen)?;
        let metrics_listen = if self.metrics.listen.trim().is_empty() {
            None
        } else {
            Some(parse_addr("metrics.listen", &self.metrics.listen)?)
        };
        let servers = self
            .servers
            .iter()
            .map(|s| parse_addr("servers", s))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if self.health.interval_ms == 0 {
            anyhow::bail!("health.interval_ms must be above 0");
        }
        if self.health.timeout_ms == 0 {
            anyhow::bail!("health.timeout_ms must be above 0");
        }
        if self.connect_timeout_ms == 0 {
            anyhow::bail!("connect_timeout_ms must be above 0");
        }
        if self.buffer_size == 0 || self.buffer_size > 64 * 1024 {
            anyhow::bail!("buffer_size must be between 1 and 65536");
        }
        if self.rate.per_second > 0 && self.rate.burst == 0 {
            anyhow::bail!("rate.burst must be above 0 when rate.per_second is set");
        }
        let network = self
            .network
            .validate(ComponentKind::Broker, &self.data_dir)?;
        Ok(Config {
            listen,
            servers,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            idle_timeout: (self.idle_timeout_s > 0)
                .then(|| Duration::from_secs(self.idle_timeout_s)),
            drain_timeout: Duration::from_secs(self.drain_timeout_s),
            max_connections: self.max_connections,
            buffer_size: self.buffer_size,
            proxy_protocol: self.proxy_protocol,
            health_interval: Duration::from_millis(self.health.interval_ms),
            health_timeout: Duration::from_millis(self.health.timeout_ms),
            rate_per_second: self.rate.per_second,
            rate_burst: self.rate.burst,
            metrics_listen,
            network,
            log: self.log.clone(),
        })
    }
}

fn parse_addr(key: &str, value: &str) -> anyhow::Result<SocketAddr> {
    value
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{key}: `{value}` is not an address such as 10.0.0.5:30002"))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn defaults_are_valid() {
        let cfg = BrokerConfig::default().validate().expect("valid");
        assert_eq!(cfg.listen.port(), DEVICE_PORT);
        assert_eq!(cfg.metrics_listen.map(|a| a.port()), Some(9102));
        assert!(!cfg.network.enabled());
        assert_eq!(cfg.idle_timeout, Some(Duration::from_secs(300)));
    }

    #[test]
    fn bad_server_address_names_the_key() {
        let cfg = BrokerConfig {
            servers: vec!["nonsense".into()],
            ..BrokerConfig::default()
        };
        let err = cfg.validate().expect_err("bad address");
        assert!(err.to_string().contains("servers"), "{err}");
    }

    #[test]
    fn servers_from_a_comma_separated_string() {
        let cfg: BrokerConfig =
            toml::from_str("servers = \"127.0.0.1:1, 127.0.0.1:2\"").expect("parses");
        assert_eq!(cfg.servers, ["127.0.0.1:1", "127.0.0.1:2"]);
    }

    /// The documented example configuration parses and equals the defaults it documents.
    #[test]
    fn deploy_example_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/ums-broker.toml");
        let cfg: BrokerConfig = ums_service::load_config(Some(Path::new(path))).expect("parses");
        cfg.validate().expect("valid");
        let d = BrokerConfig::default();
        assert_eq!(cfg.listen, d.listen);
        assert_eq!(cfg.connect_timeout_ms, d.connect_timeout_ms);
        assert_eq!(cfg.idle_timeout_s, d.idle_timeout_s);
        assert_eq!(cfg.drain_timeout_s, d.drain_timeout_s);
        assert_eq!(cfg.max_connections, d.max_connections);
        assert_eq!(cfg.buffer_size, d.buffer_size);
        assert_eq!(cfg.proxy_protocol, d.proxy_protocol);
        assert_eq!(cfg.health.interval_ms, d.health.interval_ms);
        assert_eq!(cfg.health.timeout_ms, d.health.timeout_ms);
        assert_eq!(cfg.rate.per_second, d.rate.per_second);
        assert_eq!(cfg.rate.burst, d.rate.burst);
        assert_eq!(cfg.metrics.listen, d.metrics.listen);
        assert_eq!(cfg.servers, ["10.0.0.1:30002", "10.0.0.2:30002"]);
    }
}
