//! The broker as a member of the HA network: it joins with the network token, learns the servers
//! that take devices from a server's watch stream (and follows every change), and reports itself
//! in the process registry with a heartbeat.
//!
//! The watch stream comes from any of the configured servers; when that server goes away the
//! broker moves to the next. Its own health checks and failover keep working in between, so a
//! dead server leaves the rotation within a health interval even before the registry says so.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ums_network::Membership;
use ums_proto::network::v1 as pb;
use ums_proto::network::v1::network_service_client::NetworkServiceClient;
use ums_tls::{ComponentKind, NodeIdentity};

use crate::ServerSet;

/// Follows the running servers and keeps the broker in the registry, forever.
pub async fn follow(
    cfg: Membership,
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
    cfg: &Membership,
    identity: &NodeIdentity,
    server: &str,
    set: &ServerSet,
    listen_port: u16,
    started: i64,
) -> anyhow::Result<()> {
    // The admin port says where the server's internal port is.
    let (_, channel) = ums_network::internal_channel_via(identity, server).await?;
    let mut client = NetworkServiceClient::new(channel);
    let mut stream = client
        .watch_servers(pb::WatchServersRequest {})
        .await?
        .into_inner();
    tracing::info!(server = %server, "following the running servers");
    let me = pb::ProcessInfo {
        id: identity.id.clone(),
        kind: ComponentKind::Broker.as_str().into(),
        host: cfg.advertise_host.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        device_port: u32::from(listen_port),
        status: "running".into(),
        mode: "normal".into(),
        pid: std::process::id(),
        started_at_ms: started,
        ..Default::default()
    };
    let mut beat = tokio::time::interval(cfg.heartbeat);
    loop {
        tokio::select! {
            list = stream.message() => {
                let Some(list) = list? else { return Ok(()) };
                apply(set, &list).await;
            }
            _ = beat.tick() => {
                let mut p = me.clone();
                p.clock_ms = now_ms();
                // What this broker sees of its servers, for the network check.
                let known_servers = set
                    .snapshot()
                    .iter()
                    .map(|b| pb::KnownServer { address: b.label().to_owned(), up: b.is_up() })
                    .collect();
                client
                    .heartbeat(pb::HeartbeatRequest { process: Some(p), supervised: vec![], known_servers })
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
