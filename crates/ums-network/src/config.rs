//! The `[network]` section every component that joins an HA network shares (broker, watchdog,
//! swp-auth): the servers to join through, the token file, where the identity is kept, the id
//! and the host others reach the component by. [`NetworkConfig::validate`] checks it once into
//! the [`Membership`] the component runs with.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use ums_tls::{ComponentKind, NetworkToken, NodeIdentity};

use crate::{JoinError, JoinOptions};

/// The `[network]` section as written in a component's configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Admin addresses (`host:8443`) of servers of the network, tried in turn: to join, and to
    /// learn where their internal ports are. A list in TOML; in the environment a
    /// comma-separated string. Empty: the component is not part of a network.
    #[serde(deserialize_with = "ums_service::list_or_commas")]
    pub servers: Vec<String>,
    /// The network token (mode 0600), read to join when no identity is saved yet. The first
    /// server of a network writes it; `umsctl token export` prints it.
    pub token_file: PathBuf,
    /// Where the component keeps its identity (certificate and key, mode 0600). Empty:
    /// `identity` in the component's data directory.
    pub identity_dir: PathBuf,
    /// The component's id in the process registry. Empty: `<kind>-<host name>`.
    pub id: String,
    /// The name or address the servers reach this component by: its registry entry and its
    /// certificate. Empty: the host name.
    pub advertise_host: String,
    /// More names and addresses for the component's certificate (localhost and 127.0.0.1 are
    /// always in it).
    #[serde(deserialize_with = "ums_service::list_or_commas")]
    pub names: Vec<String>,
    /// Interval of the component's heartbeat to the servers.
    pub heartbeat_ms: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            token_file: PathBuf::new(),
            identity_dir: PathBuf::new(),
            id: String::new(),
            advertise_host: String::new(),
            names: Vec::new(),
            heartbeat_ms: 2000,
        }
    }
}

/// A component's place in the network, checked.
#[derive(Debug, Clone)]
pub struct Membership {
    pub kind: ComponentKind,
    /// Admin addresses of servers, `host:port` each.
    pub servers: Vec<String>,
    pub token_file: Option<PathBuf>,
    pub identity_dir: PathBuf,
    pub id: String,
    pub advertise_host: String,
    /// The names of the component's certificate.
    pub names: Vec<String>,
    pub heartbeat: Duration,
}

impl NetworkConfig {
    /// Checks the section of a component of `kind` whose data directory is `data_dir`.
    pub fn validate(&self, kind: ComponentKind, data_dir: &Path) -> anyhow::Result<Membership> {
        for s in &self.servers {
            check_host_port("network.servers", s)?;
        }
        anyhow::ensure!(
            self.heartbeat_ms >= 100,
            "network.heartbeat_ms: at least 100, not {}",
            self.heartbeat_ms
        );
        let advertise_host = if self.advertise_host.is_empty() {
            hostname()
        } else {
            check_name("network.advertise_host", &self.advertise_host)?;
            self.advertise_host.clone()
        };
        let id = if self.id.is_empty() {
            let clean: String = advertise_host
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '-' | '.') {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            format!("{kind}-{clean}")
        } else {
            self.id.clone()
        };
        anyhow::ensure!(
            valid_id(&id),
            "network.id: `{id}` must be 1 to 64 letters, digits, - _ and ."
        );
        let mut names = vec![advertise_host.clone()];
        for n in &self.names {
            check_name("network.names", n)?;
        }
        names.extend(self.names.iter().cloned());
        names.extend(["localhost".to_owned(), "127.0.0.1".to_owned()]);
        let mut seen = std::collections::HashSet::new();
        names.retain(|n| seen.insert(n.clone()));
        anyhow::ensure!(names.len() <= 16, "network.names: at most 14 more names");
        Ok(Membership {
            kind,
            servers: self.servers.iter().map(|s| s.trim().to_owned()).collect(),
            token_file: (!self.token_file.as_os_str().is_empty()).then(|| self.token_file.clone()),
            identity_dir: if self.identity_dir.as_os_str().is_empty() {
                data_dir.join("identity")
            } else {
                self.identity_dir.clone()
            },
            id,
            advertise_host,
            names,
            heartbeat: Duration::from_millis(self.heartbeat_ms),
        })
    }
}

impl Membership {
    /// Whether the component takes part in a network (servers are configured).
    pub fn enabled(&self) -> bool {
        !self.servers.is_empty()
    }

    /// The identity saved in `identity_dir`; when none is saved (or it is not valid for the
    /// token), one obtained by joining through the servers in turn with the token. A token
    /// of another network stops at once: no other server takes it either.
    pub async fn identity(&self) -> Result<NodeIdentity, MembershipError> {
        let Some(token_file) = &self.token_file else {
            if !NodeIdentity::exists(&self.identity_dir) {
                return Err(MembershipError::NoIdentity {
                    dir: self.identity_dir.clone(),
                });
            }
            let identity = NodeIdentity::load(&self.identity_dir).map_err(JoinError::from)?;
            if identity.kind != self.kind {
                return Err(MembershipError::WrongKind {
                    dir: self.identity_dir.clone(),
                    found: identity.kind,
                    wanted: self.kind,
                });
            }
            return Ok(identity);
        };
        let token = NetworkToken::read(token_file).map_err(|e| MembershipError::Token {
            file: token_file.clone(),
            message: e.to_string(),
        })?;
        if self.servers.is_empty() {
            return Err(MembershipError::NoServers);
        }
        let mut last = None;
        for server in &self.servers {
            let opts = JoinOptions {
                server: server.clone(),
                token: token.clone(),
                kind: self.kind,
                id: self.id.clone(),
                names: self.names.clone(),
            };
            match crate::load_or_join(&self.identity_dir, &opts).await {
                Ok(identity) => return Ok(identity),
                Err(e @ JoinError::Mismatch { .. }) => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(server = %server, error = %e, "cannot join through this server");
                    last = Some(e);
                }
            }
        }
        Err(last.map_or(MembershipError::NoServers, Into::into))
    }
}

/// Why a component has no identity in the network.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error(
        "no identity in {dir} and no network.token_file to join with: set [network] servers and token_file, or place ca.pem, node.pem and node-key.pem there"
    )]
    NoIdentity { dir: PathBuf },
    #[error("the identity in {dir} is a {found}'s, not a {wanted}'s")]
    WrongKind {
        dir: PathBuf,
        found: ComponentKind,
        wanted: ComponentKind,
    },
    #[error("cannot read the network token {file}: {message}")]
    Token { file: PathBuf, message: String },
    #[error("network.servers is empty: no server to join through")]
    NoServers,
    #[error(transparent)]
    Join(#[from] JoinError),
}

/// The machine's host name, `localhost` when unknown.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Checks `HOST:PORT` (a name, an IPv4 address or a bracketed IPv6 address, and a port).
pub fn check_host_port(key: &str, value: &str) -> anyhow::Result<()> {
    match value.trim().rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => anyhow::bail!("{key}: `{value}` is not an address such as 10.0.0.5:8443"),
    }
}

/// A DNS name or an IP address: what a certificate can name.
fn check_name(key: &str, name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'));
    anyhow::ensure!(ok, "{key}: `{name}` is not a host name or an address");
    Ok(())
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_make_an_identity_from_the_host_name() {
        let m = NetworkConfig::default()
            .validate(ComponentKind::Broker, Path::new("/var/lib/ums/broker"))
            .expect("valid");
        assert!(!m.enabled());
        assert_eq!(m.id, format!("broker-{}", m.advertise_host));
        assert_eq!(m.identity_dir, Path::new("/var/lib/ums/broker/identity"));
        assert!(m.names.contains(&"127.0.0.1".to_owned()));
        assert_eq!(m.names[0], m.advertise_host);
        assert_eq!(m.token_file, None);
    }

    #[test]
    fn bad_values_name_their_key() {
        let cfg = NetworkConfig {
            servers: vec!["nonsense".into()],
            ..NetworkConfig::default()
        };
        let e = cfg
            .validate(ComponentKind::Watchdog, Path::new("."))
            .expect_err("bad");
        assert!(e.to_string().contains("network.servers"), "{e}");
        let cfg = NetworkConfig {
            advertise_host: "two words".into(),
            ..NetworkConfig::default()
        };
        let e = cfg
            .validate(ComponentKind::Watchdog, Path::new("."))
            .expect_err("bad");
        assert!(e.to_string().contains("network.advertise_host"), "{e}");
        let cfg = NetworkConfig {
            heartbeat_ms: 0,
            ..NetworkConfig::default()
        };
        assert!(
            cfg.validate(ComponentKind::Watchdog, Path::new("."))
                .is_err()
        );
    }

    #[test]
    fn servers_from_a_comma_separated_string() {
        let cfg: NetworkConfig =
            toml::from_str("servers = \"10.0.0.1:8443, 10.0.0.2:8443\"").expect("parses");
        assert_eq!(cfg.servers, ["10.0.0.1:8443", "10.0.0.2:8443"]);
    }

    #[tokio::test]
    async fn without_a_token_only_a_saved_identity_of_the_right_kind_will_do() {
        let dir = tempfile::tempdir().expect("dir");
        let m = NetworkConfig::default()
            .validate(ComponentKind::SwpAuth, dir.path())
            .expect("valid");
        let e = m.identity().await.expect_err("nothing saved");
        assert!(matches!(e, MembershipError::NoIdentity { .. }), "{e}");
        let ca = ums_tls::CertAuthority::generate("test ca").expect("ca");
        ca.issue_node(ComponentKind::Broker, "b1", &["127.0.0.1".into()])
            .expect("issue")
            .save(&m.identity_dir)
            .expect("save");
        let e = m.identity().await.expect_err("a broker's identity");
        assert!(matches!(e, MembershipError::WrongKind { .. }), "{e}");
    }
}
