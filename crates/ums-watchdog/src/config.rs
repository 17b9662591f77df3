//! Configuration of `ums-watchdog`: defaults, then the TOML file, then `UMS_` variables
//! (`UMS_INTERNAL_LISTEN=0.0.0.0:61618`, `UMS_SERVER__ENABLED=true`,
//! `UMS_NETWORK__SERVERS=10.0.0.1:8443,10.0.0.2:8443`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use ums_network::{Membership, NetworkConfig};
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
    /// Address of the internal API that servers call to stop and start the children.
    pub internal_listen: String,
    /// Joining the network and reporting to its servers. `advertise_host` is how servers reach
    /// this node (and the host part of the children's default ids).
    pub network: NetworkConfig,
    /// The local server, started first and stopped last.
    pub server: ChildConfig,
    /// The local broker, started after the server and stopped first so it drains while the
    /// server still answers.
    pub broker: ChildConfig,
    /// The node's swp-auth (Shared Workplace logins), optional, started after the broker. It
    /// reports itself in the registry; give it the id it has in the network (its default,
    /// `swp-auth-<host>`, is the same as this one's).
    pub swp_auth: ChildConfig,
    pub restart: RestartConfig,
    pub log: LogConfig,
    pub metrics: ums_service::metrics::MetricsConfig,
    pub release: ReleaseConfig,
}

/// Software releases: the `[release]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReleaseConfig {
    /// The public release keys (`ed25519:...`) a release must be signed with before this node
    /// installs it: pinned here at install, never taken from the network. Empty: the node does
    /// not update itself.
    #[serde(deserialize_with = "ums_service::list_or_commas")]
    pub public_keys: Vec<String>,
    /// Where releases are installed (`versions/<revision>/`, the `current` link, the state
    /// file `installed.json`, `update.log`). Empty: `<data_dir>/release`. A child whose
    /// executable's name is in `current/bin/` runs from there.
    pub dir: PathBuf,
    /// Roles of custom files this node installs besides its children's (`server`, `broker`,
    /// `swp-auth`) and `watchdog`.
    #[serde(deserialize_with = "ums_service::list_or_commas")]
    pub roles: Vec<String>,
    /// How often the node asks for the network's revision, in ms.
    pub check_interval_ms: u64,
    /// How long every child must keep running after the restart before the update counts as
    /// done, in ms.
    pub healthy_for_ms: u64,
}

impl Default for ReleaseConfig {
    fn default() -> Self {
        Self {
            public_keys: Vec::new(),
            dir: PathBuf::new(),
            roles: Vec::new(),
            check_interval_ms: 10_000,
            healthy_for_ms: 5_000,
        }
    }
}

/// The checked `[release]` section of a node that updates itself.
#[derive(Debug, Clone)]
pub struct ReleaseSettings {
    pub keys: Vec<ums_release::PublicKey>,
    pub dir: PathBuf,
    /// Every role the node installs, sorted.
    pub roles: Vec<String>,
    pub check_interval: std::time::Duration,
    pub healthy_for: std::time::Duration,
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
            internal_listen: format!("0.0.0.0:{INTERNAL_PORT}"),
            network: NetworkConfig::default(),
            server: ChildConfig::new(ComponentKind::Server),
            broker: ChildConfig::new(ComponentKind::Broker),
            swp_auth: ChildConfig::new(ComponentKind::SwpAuth),
            restart: RestartConfig::default(),
            log: LogConfig::default(),
            metrics: Default::default(),
            release: ReleaseConfig::default(),
        }
    }
}

impl ChildConfig {
    fn new(kind: ComponentKind) -> Self {
        Self {
            enabled: false,
            id: String::new(),
            id_file: PathBuf::new(),
            binary: match kind {
                ComponentKind::SwpAuth => PathBuf::from("/usr/bin/swp-auth"),
                _ => PathBuf::from(format!("/usr/bin/ums-{kind}")),
            },
            args: match kind {
                ComponentKind::Server => vec!["run".into()],
                _ => Vec::new(),
            },
            config: PathBuf::new(),
            env: BTreeMap::new(),
            workdir: PathBuf::new(),
            ready_addr: match kind {
                ComponentKind::Server => "127.0.0.1:8443".into(),
                ComponentKind::SwpAuth => "127.0.0.1:61617".into(),
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
    type Validated = Config;

    fn validate(&self) -> anyhow::Result<Config> {
        WatchdogConfig::validate(self)
    }
}

/// The watchdog's configuration, checked: the internal address parsed, the network and the
/// children's ids resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub internal_listen: SocketAddr,
    pub network: Membership,
    /// The enabled children in start order (server, broker, swp-auth), with their registry ids.
    pub children: Vec<Child>,
    pub restart: RestartConfig,
    pub log: LogConfig,
    /// Where `/metrics` is served, when it is.
    pub metrics_listen: Option<SocketAddr>,
    /// Software updates of this node, when release keys are pinned.
    pub release: Option<ReleaseSettings>,
}

/// One enabled child.
#[derive(Debug, Clone)]
pub struct Child {
    pub kind: ComponentKind,
    pub id: String,
    pub config: ChildConfig,
}

impl WatchdogConfig {
    /// Checks every value; the error names the key.
    pub fn validate(&self) -> anyhow::Result<Config> {
        let internal_listen = self.internal_listen.trim().parse().map_err(|_| {
            anyhow::anyhow!(
                "internal_listen: `{}` is not an address such as 0.0.0.0:61618",
                self.internal_listen
            )
        })?;
        let network = self
            .network
            .validate(ComponentKind::Watchdog, &self.data_dir)?;
        anyhow::ensure!(
            self.restart.max_backoff_ms >= self.restart.initial_backoff_ms,
            "restart.max_backoff_ms: must not be below restart.initial_backoff_ms"
        );
        let mut children = Vec::new();
        for (kind, child) in [
            (ComponentKind::Server, &self.server),
            (ComponentKind::Broker, &self.broker),
            (ComponentKind::SwpAuth, &self.swp_auth),
        ] {
            if !child.enabled {
                continue;
            }
            let key = match kind {
                ComponentKind::SwpAuth => "swp_auth",
                _ => kind.as_str(),
            };
            anyhow::ensure!(
                !child.binary.as_os_str().is_empty(),
                "{key}.binary: the executable to run"
            );
            if !child.ready_addr.is_empty() {
                ums_network::check_host_port(&format!("{key}.ready_addr"), &child.ready_addr)?;
            }
            anyhow::ensure!(
                child.ready_timeout_ms > 0,
                "{key}.ready_timeout_ms: must be above 0"
            );
            let id = if child.id.is_empty() {
                format!("{kind}-{}", network.advertise_host)
            } else {
                child.id.clone()
            };
            children.push(Child {
                kind,
                id,
                config: child.clone(),
            });
        }
        for (i, a) in children.iter().enumerate() {
            anyhow::ensure!(
                children[i + 1..].iter().all(|b| b.id != a.id),
                "server.id, broker.id and swp_auth.id: must differ"
            );
        }
        let release = self.release_settings(&children)?;
        Ok(Config {
            data_dir: self.data_dir.clone(),
            internal_listen,
            network,
            release,
            children,
            restart: self.restart.clone(),
            log: self.log.clone(),
            metrics_listen: self.metrics.validate()?,
        })
    }
}

impl WatchdogConfig {
    fn release_settings(&self, children: &[Child]) -> anyhow::Result<Option<ReleaseSettings>> {
        let r = &self.release;
        if r.public_keys.is_empty() {
            return Ok(None);
        }
        let keys = ums_release::parse_keys(&r.public_keys)
            .map_err(|e| anyhow::anyhow!("release.public_keys: {e}"))?;
        let mut roles: Vec<String> = children
            .iter()
            .map(|c| c.kind.as_str().to_owned())
            .collect();
        roles.push("watchdog".into());
        for role in &r.roles {
            ums_release::validate_role(role).map_err(|e| anyhow::anyhow!("release.roles: {e}"))?;
            roles.push(role.clone());
        }
        roles.sort();
        roles.dedup();
        anyhow::ensure!(
            r.check_interval_ms >= 100,
            "release.check_interval_ms: must be at least 100"
        );
        let dir = if r.dir.as_os_str().is_empty() {
            self.data_dir.join("release")
        } else {
            r.dir.clone()
        };
        Ok(Some(ReleaseSettings {
            keys,
            dir,
            roles,
            check_interval: std::time::Duration::from_millis(r.check_interval_ms),
            healthy_for: std::time::Duration::from_millis(r.healthy_for_ms),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn defaults_are_valid_and_run_nothing() {
        let cfg = WatchdogConfig::default().validate().expect("valid");
        assert_eq!(cfg.internal_listen.port(), INTERNAL_PORT);
        assert!(cfg.children.is_empty());
        assert!(cfg.network.id.starts_with("watchdog-"));
        assert_eq!(
            cfg.network.identity_dir,
            Path::new("watchdog-data/identity")
        );
    }

    #[test]
    fn swp_auth_is_an_optional_third_child() {
        let mut cfg = WatchdogConfig::default();
        cfg.server.enabled = true;
        cfg.swp_auth.enabled = true;
        let v = cfg.validate().expect("valid");
        let kinds: Vec<_> = v.children.iter().map(|c| c.kind).collect();
        assert_eq!(kinds, vec![ComponentKind::Server, ComponentKind::SwpAuth]);
        assert_eq!(
            v.children[1].config.binary,
            PathBuf::from("/usr/bin/swp-auth")
        );
        assert!(
            v.children[1].id.starts_with("swp-auth-"),
            "{}",
            v.children[1].id
        );

        cfg.swp_auth.ready_addr = "nonsense".into();
        let err = cfg.validate().expect_err("bad ready address");
        assert!(err.to_string().contains("swp_auth.ready_addr"), "{err}");
        cfg.swp_auth.ready_addr = String::new();
        cfg.swp_auth.id = v.children[0].id.clone();
        let err = cfg.validate().expect_err("same id");
        assert!(err.to_string().contains("must differ"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut cfg = WatchdogConfig::default();
        cfg.network.servers = vec!["nonsense".into()];
        let err = cfg.validate().expect_err("bad server");
        assert!(err.to_string().contains("network.servers"), "{err}");

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
    fn children_are_named_after_the_advertised_host() {
        let mut cfg = WatchdogConfig::default();
        cfg.server.enabled = true;
        cfg.broker.enabled = true;
        cfg.network.advertise_host = "node1.example.org".into();
        let v = cfg.validate().expect("valid");
        let ids: Vec<_> = v.children.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            ["server-node1.example.org", "broker-node1.example.org"]
        );
        assert_eq!(v.network.id, "watchdog-node1.example.org");
    }

    #[test]
    fn release_settings_need_a_pinned_key_and_name_bad_ones() {
        let mut cfg = WatchdogConfig::default();
        cfg.server.enabled = true;
        assert!(cfg.validate().expect("valid").release.is_none());
        cfg.release.public_keys = vec!["ed25519:nope".into()];
        let err = cfg.validate().expect_err("bad key");
        assert!(err.to_string().contains("release.public_keys"), "{err}");
        let key = ums_release::SigningKey::generate().expect("key");
        cfg.release.public_keys = vec![key.public_key().to_string()];
        cfg.release.roles = vec!["kiosk-files".into()];
        let r = cfg.validate().expect("valid").release.expect("on");
        assert_eq!(r.roles, ["kiosk-files", "server", "watchdog"]);
        assert_eq!(r.dir, Path::new("watchdog-data/release"));
        cfg.release.roles = vec!["Bad Role".into()];
        let err = cfg.validate().expect_err("bad role");
        assert!(err.to_string().contains("release.roles"), "{err}");
    }

    #[test]
    fn lists_from_comma_separated_strings() {
        let cfg: WatchdogConfig = toml::from_str(
            "[network]\nservers = \"10.0.0.1:8443, 10.0.0.2:8443\"\n[server]\nargs = \"run\"\n",
        )
        .expect("parses");
        assert_eq!(cfg.network.servers, ["10.0.0.1:8443", "10.0.0.2:8443"]);
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
        let v = cfg.validate().expect("valid");
        let d = WatchdogConfig::default();
        assert_eq!(cfg.internal_listen, d.internal_listen);
        assert_eq!(cfg.network.heartbeat_ms, d.network.heartbeat_ms);
        assert_eq!(cfg.restart.initial_backoff_ms, d.restart.initial_backoff_ms);
        assert_eq!(cfg.restart.max_backoff_ms, d.restart.max_backoff_ms);
        assert_eq!(cfg.restart.stable_after_s, d.restart.stable_after_s);
        assert!(cfg.server.enabled && cfg.broker.enabled);
        assert_eq!(cfg.server.ready_timeout_ms, d.server.ready_timeout_ms);
        assert_eq!(cfg.server.stop_timeout_ms, d.server.stop_timeout_ms);
        assert_eq!(cfg.broker.stop_timeout_ms, d.broker.stop_timeout_ms);
        assert_eq!(cfg.server.output, Output::Prefix);
        assert_eq!(v.children.len(), 2);
    }
}
