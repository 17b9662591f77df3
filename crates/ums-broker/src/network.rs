//! The broker as a member of the HA network: it joins with the network token, learns the servers
//! that take devices from a server's watch stream (and follows every change), and reports itself
//! in the process registry with a heartbeat.
//!
//! The watch stream comes from any of the configured servers; when that server goes away the
//! broker moves to the next. Its own health checks and failover keep working in between, so a
//! dead server leaves the rotation within a health interval even before the registry says so.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use ums_proto::cluster::v1 as pb;
use ums_proto::cluster::v1::cluster_service_client::ClusterServiceClient;
use ums_tls::{ComponentKind, NetworkToken, NodeIdentity};

use crate::ServerSet;

/// How the broker joins the HA network. Without `servers` it runs on its static server list.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Admin addresses (`host:8443`) of servers of the network; any one of them answers.
    #[serde(deserialize_with = "ums_service::list_or_commas")]
    pub servers: Vec<String>,
    /// The network token file (mode 0600). Needed for the first join; afterwards the identity
    /// in `data_dir` is used.
    pub token_file: PathBuf,
    /// Where the broker keeps its identity (certificate and key). Default `./data`.
    pub data_dir: PathBuf,
    /// The broker's id in the registry. Empty: `broker-<host name>`.
    pub id: String,
    /// The name or address the broker is reached by, for its certificate and the registry.
    /// Empty: 127.0.0.1.
    pub advertise_host: String,
}

impl NetworkConfig {
    pub fn enabled(&self) -> bool {
        !self.servers.is_empty()
    }

    pub fn broker_id(&self) -> String {
        if !self.id.is_empty() {
            return self.id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        let clean: String = host
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
            .take(48)
            .collect();
        format!("broker-{}", if clean.is_empty() { "local" } else { &clean })
    }

    fn data_dir(&self) -> PathBuf {
        if self.data_dir.as_os_str().is_empty() {
            PathBuf::from("data")
        } else {
            self.data_dir.clone()
        }
    }

    fn host(&self) -> String {
        if self.advertise_host.is_empty() {
            "127.0.0.1".into()
        } else {
            self.advertise_host.clone()
        }
    }
}

/// Loads the broker's identity, joining the network with the token when there is none yet.
pub async fn identity(cfg: &NetworkConfig) -> anyhow::Result<NodeIdentity> {
    let dir = cfg.data_dir().join("identity");
    if NodeIdentity::exists(&dir) && !cfg.token_file.exists() {
        return Ok(NodeIdentity::load(&dir)?);
    }
    let token = read_token(&cfg.token_file)?;
    let mut last = None;
    for server in &cfg.servers {
        let opts = ums_cluster::JoinOptions {
            server: server.clone(),
            token: token.clone(),
            kind: ComponentKind::Broker,
            id: cfg.broker_id(),
            names: vec![cfg.host()],
        };
        match ums_cluster::load_or_join(&dir, &opts).await {
            Ok(identity) => return Ok(identity),
            // Another network's token: no other server will take it either.
            Err(e @ ums_cluster::JoinError::Mismatch { .. }) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(server = %server, error = %e, "cannot join through this server");
                last = Some(e);
            }
        }
    }
    Err(last
        .map(Into::into)
        .unwrap_or_else(|| anyhow::anyhow!("no server to join through")))
}

fn read_token(path: &Path) -> anyhow::Result<NetworkToken> {
    if path.as_os_str().is_empty() {
        anyhow::bail!("network.token_file is not set: the broker needs the network token to join");
    }
    NetworkToken::read(path).with_context(|| format!("read the network token {}", path.display()))
}

/// Follows the running servers and keeps the broker in the registry, forever.
pub async fn follow(
    cfg: NetworkConfig,
    identity: NodeIdentity,
    set: Arc<ServerSet>,
    listen_port: u16,
) {
    let started = now_ms();
    let mut attempt = 0usize;
    loop {
        let server = &cfg.servers[attempt % cfg.servers.len()];
        attempt += 1;
        match follow_one(&cfg, &identity, server, &set, listen_port, started).await {
            Ok(()) => tracing::info!(server = %server, "watch stream ended; switching server"),
            Err(e) => {
                tracing::warn!(server = %server, error = %format!("{e:#}"), "cannot follow the network through this server")
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn follow_one(
    cfg: &NetworkConfig,
    identity: &NodeIdentity,
    server: &str,
    set: &ServerSet,
    listen_port: u16,
    started: i64,
) -> anyhow::Result<()> {
    // The admin port says where the server's internal port is.
    let admin = ums_cluster::internal_channel(identity, server)?;
    let status = ClusterServiceClient::new(admin)
        .status(pb::StatusRequest {})
        .await?
        .into_inner();
    let host = server
        .rsplit_once(':')
        .map(|(h, _)| h.to_owned())
        .unwrap_or_default();
    let internal = format!("{host}:{}", status.internal_port);
    let mut client = ClusterServiceClient::new(ums_cluster::internal_channel(identity, &internal)?);
    let mut stream = client
        .watch_servers(pb::WatchServersRequest {})
        .await?
        .into_inner();
    tracing::info!(server = %server, "following the running servers");
    let me = pb::ProcessInfo {
        id: identity.id.clone(),
        kind: ComponentKind::Broker.as_str().into(),
        host: cfg.host(),
        version: env!("CARGO_PKG_VERSION").into(),
        device_port: u32::from(listen_port),
        status: "running".into(),
        mode: "normal".into(),
        pid: std::process::id(),
        started_at_ms: started,
        ..Default::default()
    };
    let mut beat = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            list = stream.message() => {
                let Some(list) = list? else { return Ok(()) };
                apply(set, &list).await;
            }
            _ = beat.tick() => {
                let mut p = me.clone();
                p.clock_ms = now_ms();
                client
                    .heartbeat(pb::HeartbeatRequest { process: Some(p), supervised: vec![] })
                    .await
                    .context("heartbeat")?;
            }
        }
    }
}

/// Makes the rotation the servers of `list` (device ports). Host names are resolved now, so a
/// server's address may be a DNS name (a Kubernetes service, say).
async fn apply(set: &ServerSet, list: &pb::ServerList) {
    let mut addrs: Vec<SocketAddr> = Vec::with_capacity(list.servers.len());
    for s in &list.servers {
        let host = s.host.trim_start_matches('[').trim_end_matches(']');
        match tokio::net::lookup_host((host, s.device_port as u16)).await {
            Ok(mut found) => match found.next() {
                Some(a) => addrs.push(a),
                None => {
                    tracing::warn!(server = %s.id, host = %s.host, "server host has no address: skipped")
                }
            },
            Err(e) => {
                tracing::warn!(server = %s.id, host = %s.host, error = %e, "cannot resolve the server's host: skipped")
            }
        }
    }
    tracing::info!(servers = ?addrs, "running servers changed");
    set.replace(addrs);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
