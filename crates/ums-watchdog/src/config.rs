//! Configuration of `ums-watchdog`: defaults, then the TOML file, then `UMS_` variables
//! (`UMS_INTERNAL_LISTEN=0.0.0.0:61618`, `UMS_SERVER__ENABLED=true`,
//! `UMS_CLUSTER__SERVERS=10.0.0.1:61616,10.0.0.2:61616`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use ums_service::LogConfig;
use ums_tls::ComponentKind;

/// The port of the watchdog's internal API (mutual TLS, servers only).
pub const INTERNAL_PORT: u16 = 61618;

/// Everything `ums-watchdog` reads from its configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatchdogConfig {
    /// Where the watchdog keeps its network identity (`identity/`) and, with
    /// `output = "file"`, the children's logs (`logs/`). Default `./watchdog-data`.
    pub data_dir: PathBuf,
    /// The watchdog's id in the process registry. Empty: `watchdog-<host name>`.
    pub id: String,
    /// How servers reach this host: the host in the registry and a name in the watchdog's
    /// certificate. Empty: the host name.
    pub host: String,
    /// Address of the internal API that servers call to stop and start the children.
    pub internal_listen: String,
    pub cluster: ClusterConfig,
    /// The local server, started first and stopped last.
    pub server: ChildConfig,
    /// The local broker, started after the server and stopped first so it drains while the
    /// server still answers.
    pub broker: ChildConfig,
    pub restart: RestartConfig,
    pub log: LogConfig,
}

/// How the watchdog joins the HA network and whom it reports to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Internal addresses (`host:61616`) of the servers the watchdog sends its heartbeat to,
    /// tried in turn. Empty: no heartbeats (a node on its own).
    #[serde(deserialize_with = "ums_service::list_or_commas")]
    pub servers: Vec<String>,
    /// Admin address (`host:8443`) of any server, to join the network when `data_dir` holds no
    /// identity yet. Empty: the first of `servers` with port 8443.
    pub join: String,
    /// The network token (mode 0600). Read only to join; the first server of a network writes
    /// it. Empty: no joining; the internal API then needs an identity placed in
    /// `data_dir/identity`.
    pub token_file: PathBuf,
    /// Milliseconds between heartbeats; a change of a child's status is reported at once.
    pub heartbeat_interval_ms: u64,
}

/// One supervised process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChildConfig {
    /// Run this process. Default false.
    pub enabled: bool,
    /// Its id in the process registry and in stop/start requests. Empty: `<kind>-<host>`.
    pub id: String,
    /// A file in which the child keeps its registry id (ums-server: `<its data_dir>/server-id`).
    /// Read each time the child is ready; the watchdog then reports the child under that id
    /// and answers stop and start requests for it. Empty: the child's id is `id`.
    pub id_file: PathBuf,
    /// The executable. Default `/usr/bin/ums-server` or `/usr/bin/ums-broker`.
    pub binary: PathBuf,
    /// Arguments before `--config`. A list in TOML, comma-separated in the environment.
    #[serde(deserialize_with = "ums_service::list_or_commas")]
    pub args: Vec<String>,
    /// Passed as `--config FILE` when set.
    pub config: PathBuf,
    /// The child's `UMS_` variables (and any other it needs). It inherits the watchdog's
    /// environment except the watchdog's own `UMS_` variables and `NOTIFY_SOCKET`.
    pub env: BTreeMap<String, String>,
    /// Working directory. Empty: the watchdog's.
    pub workdir: PathBuf,
    /// `host:port` that accepts TCP connections once the process serves. Empty: ready once
    /// started.
    pub ready_addr: String,
    /// Milliseconds the process gets to become ready; one that does not is stopped and counts
    /// as a crash.
    pub ready_timeout_ms: u64,
    /// Milliseconds the process gets to exit after SIGTERM before its process group is killed.
    pub stop_timeout_ms: u64,
    /// Where its stdout and stderr go: `prefix` (the watchdog's stderr, each line prefixed with
    /// `<id>| `) or `file` (appended to `data_dir/logs/<id>.log`).
    pub output: Output,
}

/// Where a child's stdout and stderr go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Output {
    /// The watchdog's stderr, each line prefixed with `<id>| `: one journal for the node.
    #[default]
    Prefix,
    /// Appended to `data_dir/logs/<id>.log`.
    File,
}

/// Restart backoff after a crash.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestartConfig {
    /// Milliseconds before the second restart in a row; each further crash doubles it. The
    /// first restart after a stable run is immediate. Default 500.
    pub initial_backoff_ms: u64,
    /// Cap of the backoff. Default 30000.
    pub max_backoff_ms: u64,
    /// A process that ran this many seconds before it crashed was stable: its next restart is
    /// immediate again. Default 30.
    pub stable_after_s: u64,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("watchdog-data"),
            id: String::new(),
            host: String::new(),
            internal_listen: format!("0.0.0.0:{INTERNAL_PORT}"),
            cluster: ClusterConfig::default(),
            server: ChildConfig::new(ComponentKind::Server),
            broker: ChildConfig::new(ComponentKind::Broker),
            restart: RestartConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            join: String::new(),
            token_file: PathBuf::new(),
            heartbeat_interval_ms: 2000,
        }
    }
}

impl ChildConfig {
    fn new(kind: ComponentKind) -> Self {
        Self {
            enabled: false,
            id: String::new(),
            id_file: PathBuf::new(),
            binary: PathBuf::from(format!("/usr/bin/ums-{kind}")),
            args: match kind {
                ComponentKind::Server => vec!["run".into()],
                _ => Vec::new(),
            },
            config: PathBuf::new(),
            env: BTreeMap::new(),
            workdir: PathBuf::new(),
            ready_addr: match kind {
                ComponentKind::Server => "127.0.0.1:8443".into(),
                _ => "127.0.0.1:30001".into(),
            },
            ready_timeout_ms: 60_000,
            stop_timeout_ms: match kind {
                // The broker drains device connections for its drain_timeout_s (10 s).
                ComponentKind::Broker => 15_000,
                _ => 30_000,
            },
            output: Output::Prefix,
        }
    }
}

impl Default for ChildConfig {
    fn default() -> Self {
        Self::new(ComponentKind::Server)
    }
}

impl Default for RestartConfig {
    fn default() -> Self {
        Self {
            initial_backoff_ms: 500,
            max_backoff_ms: 30_000,
            stable_after_s: 30,
        }
    }
}

impl ums_service::ServiceConfig for WatchdogConfig {
    type Validated = WatchdogConfig;

    fn validate(&self) -> anyhow::Result<WatchdogConfig> {
        WatchdogConfig::validate(self)?;
        Ok(self.clone())
    }
}

impl WatchdogConfig {
    /// Checks what the types cannot; the error names the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.internal_addr()?;
        for s in &self.cluster.servers {
            parse_host_port("cluster.servers", s)?;
        }
        if !self.cluster.join.is_empty() {
            parse_host_port("cluster.join", &self.cluster.join)?;
        }
        anyhow::ensure!(
            self.cluster.heartbeat_interval_ms >= 100,
            "cluster.heartbeat_interval_ms: at least 100"
        );
        anyhow::ensure!(
            self.restart.max_backoff_ms >= self.restart.initial_backoff_ms,
            "restart.max_backoff_ms: must not be below restart.initial_backoff_ms"
        );
        for (kind, child) in self.children() {
            let key = kind.as_str();
            anyhow::ensure!(
                !child.binary.as_os_str().is_empty(),
                "{key}.binary: the executable to run"
            );
            if !child.ready_addr.is_empty() {
                parse_host_port(&format!("{key}.ready_addr"), &child.ready_addr)?;
            }
            anyhow::ensure!(
                child.ready_timeout_ms > 0,
                "{key}.ready_timeout_ms: must be above 0"
            );
        }
        let ids: Vec<String> = self.children().map(|(k, c)| self.child_id(k, c)).collect();
        anyhow::ensure!(
            ids.len() < 2 || ids[0] != ids[1],
            "server.id and broker.id: must differ"
        );
        Ok(())
    }

    pub fn internal_addr(&self) -> anyhow::Result<SocketAddr> {
        self.internal_listen.trim().parse().map_err(|_| {
            anyhow::anyhow!(
                "internal_listen: `{}` is not an address such as 0.0.0.0:61618",
                self.internal_listen
            )
        })
    }

    /// The enabled children in start order: server, then broker.
    pub fn children(&self) -> impl Iterator<Item = (ComponentKind, &ChildConfig)> {
        [
            (ComponentKind::Server, &self.server),
            (ComponentKind::Broker, &self.broker),
        ]
        .into_iter()
        .filter(|(_, c)| c.enabled)
    }

    /// The host name this node is known by.
    pub fn host(&self) -> String {
        if self.host.is_empty() {
            hostname()
        } else {
            self.host.clone()
        }
    }

    pub fn watchdog_id(&self) -> String {
        if self.id.is_empty() {
            format!("watchdog-{}", self.host())
        } else {
            self.id.clone()
        }
    }

    pub fn child_id(&self, kind: ComponentKind, child: &ChildConfig) -> String {
        if child.id.is_empty() {
            format!("{kind}-{}", self.host())
        } else {
            child.id.clone()
        }
    }

    /// The admin address joining goes through: `cluster.join`, else the host of the first
    /// server with port 8443.
    pub fn join_addr(&self) -> String {
        if !self.cluster.join.is_empty() {
            return self.cluster.join.clone();
        }
        let first = self
            .cluster
            .servers
            .first()
            .map(String::as_str)
            .unwrap_or("127.0.0.1:8443");
        let host = first.rsplit_once(':').map(|(h, _)| h).unwrap_or(first);
        format!("{host}:8443")
    }

    /// Where the network identity lives.
    pub fn identity_dir(&self) -> PathBuf {
        self.data_dir.join("identity")
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.cluster.heartbeat_interval_ms)
    }
}

/// The machine's host name, `localhost` when unknown.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn parse_host_port(key: &str, value: &str) -> anyhow::Result<()> {
    match value.trim().rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => anyhow::bail!("{key}: `{value}` is not an address such as 10.0.0.5:61616"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn defaults_are_valid_and_run_nothing() {
        let cfg = WatchdogConfig::default();
        cfg.validate().expect("valid");
        assert_eq!(cfg.internal_addr().expect("addr").port(), INTERNAL_PORT);
        assert_eq!(cfg.children().count(), 0);
        assert!(cfg.watchdog_id().starts_with("watchdog-"));
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut cfg = WatchdogConfig::default();
        cfg.cluster.servers = vec!["nonsense".into()];
        let err = cfg.validate().expect_err("bad server");
        assert!(err.to_string().contains("cluster.servers"), "{err}");

        let mut cfg = WatchdogConfig::default();
        cfg.broker.enabled = true;
        cfg.broker.ready_addr = "localhost".into();
        let err = cfg.validate().expect_err("bad ready address");
        assert!(err.to_string().contains("broker.ready_addr"), "{err}");

        let mut cfg = WatchdogConfig::default();
        cfg.server.enabled = true;
        cfg.broker.enabled = true;
        cfg.server.id = "same".into();
        cfg.broker.id = "same".into();
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn lists_from_comma_separated_strings() {
        let cfg: WatchdogConfig = toml::from_str(
            "[cluster]\nservers = \"10.0.0.1:61616, 10.0.0.2:61616\"\n[server]\nargs = \"run\"\n",
        )
        .expect("parses");
        assert_eq!(cfg.cluster.servers, ["10.0.0.1:61616", "10.0.0.2:61616"]);
        assert_eq!(cfg.server.args, ["run"]);
    }

    /// The documented example configuration parses, is valid, and documents the defaults.
    #[test]
    fn deploy_example_is_valid() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/ums-watchdog.toml"
        );
        let cfg: WatchdogConfig = ums_service::load_config(Some(Path::new(path))).expect("parses");
        cfg.validate().expect("valid");
        let d = WatchdogConfig::default();
        assert_eq!(cfg.internal_listen, d.internal_listen);
        assert_eq!(
            cfg.cluster.heartbeat_interval_ms,
            d.cluster.heartbeat_interval_ms
        );
        assert_eq!(cfg.restart.initial_backoff_ms, d.restart.initial_backoff_ms);
        assert_eq!(cfg.restart.max_backoff_ms, d.restart.max_backoff_ms);
        assert_eq!(cfg.restart.stable_after_s, d.restart.stable_after_s);
        assert!(cfg.server.enabled && cfg.broker.enabled);
        assert_eq!(cfg.server.ready_timeout_ms, d.server.ready_timeout_ms);
        assert_eq!(cfg.server.stop_timeout_ms, d.server.stop_timeout_ms);
        assert_eq!(cfg.broker.stop_timeout_ms, d.broker.stop_timeout_ms);
        assert_eq!(cfg.server.output, Output::Prefix);
        assert_eq!(cfg.children().count(), 2);
    }
}
