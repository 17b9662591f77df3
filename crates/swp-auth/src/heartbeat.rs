//! swp-auth as a process of the network: every `network.heartbeat_ms` it reports itself to a
//! server (`NetworkService.Heartbeat` on the server's internal port, mutual TLS), which records
//! it in the process registry. Servers send logins to every `swp-auth` the registry shows
//! running, and `umsctl network list` shows it. On shutdown the last heartbeat says "stopped",
//! so servers stop sending logins at once instead of after the silence timeout.
//!
//! The servers of `network.servers` (admin addresses) are tried in turn, starting with the one
//! that answered last; a server's internal port is learnt from its admin port.

use std::time::Duration;

use tokio::sync::watch;
use tonic::transport::Channel;
use ums_network::Membership;
use ums_proto::network::v1 as pb;
use ums_proto::network::v1::network_service_client::NetworkServiceClient;
use ums_tls::{ComponentKind, NodeIdentity};

/// Time one heartbeat call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Reports this swp-auth until `stop` flips, then once more as stopped.
pub async fn run(
    cfg: Membership,
    identity: NodeIdentity,
    internal_port: u16,
    mut stop: watch::Receiver<bool>,
) {
    if cfg.servers.is_empty() {
        tracing::info!(
            "network.servers is empty: no heartbeats, servers reach this swp-auth only through their [swp] url"
        );
        return;
    }
    let me = pb::ProcessInfo {
        id: identity.id.clone(),
        kind: ComponentKind::SwpAuth.as_str().into(),
        host: cfg.advertise_host.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        internal_port: u32::from(internal_port),
        status: "running".into(),
        mode: "normal".into(),
        pid: std::process::id(),
        started_at_ms: now_ms(),
        cert_fingerprint: identity.fingerprint(),
        ..Default::default()
    };
    let mut reporter = Reporter {
        cfg: &cfg,
        identity: &identity,
        next: 0,
        client: None,
        failing: false,
    };
    let mut tick = tokio::time::interval(cfg.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
        reporter.report(&me).await;
    }
    let mut last = me.clone();
    last.status = "stopped".into();
    reporter.report(&last).await;
}

struct Reporter<'a> {
    cfg: &'a Membership,
    identity: &'a NodeIdentity,
    next: usize,
    client: Option<NetworkServiceClient<Channel>>,
    failing: bool,
}

impl Reporter<'_> {
    async fn report(&mut self, me: &pb::ProcessInfo) -> bool {
        let servers = &self.cfg.servers;
        let mut errors = Vec::new();
        for i in 0..servers.len() {
            let idx = (self.next + i) % servers.len();
            let server = &servers[idx];
            let mut client = match self.client.take() {
                Some(c) if idx == self.next => c,
                _ => match tokio::time::timeout(
                    CALL_TIMEOUT,
                    ums_network::internal_channel_via(self.identity, server),
                )
                .await
                {
                    Ok(Ok((_, channel))) => NetworkServiceClient::new(channel),
                    Ok(Err(e)) => {
                        errors.push(format!("{server}: {e}"));
                        continue;
                    }
                    Err(_) => {
                        errors.push(format!("{server}: timed out"));
                        continue;
                    }
                },
            };
            let mut p = me.clone();
            p.clock_ms = now_ms();
            let mut req = tonic::Request::new(pb::HeartbeatRequest {
                process: Some(p),
                supervised: vec![],
                known_servers: vec![],
            });
            req.set_timeout(CALL_TIMEOUT);
            match tokio::time::timeout(CALL_TIMEOUT, client.heartbeat(req)).await {
                Ok(Ok(_)) => {
                    self.next = idx;
                    self.client = Some(client);
                    if std::mem::take(&mut self.failing) {
                        tracing::info!(server = %server, "heartbeats reach the network again");
                    }
                    return true;
                }
                Ok(Err(s)) => errors.push(format!("{server}: {}", s.message())),
                Err(_) => errors.push(format!("{server}: timed out")),
            }
        }
        if !std::mem::replace(&mut self.failing, true) {
            tracing::warn!(errors = %errors.join("; "), "no server took the heartbeat; retrying");
        }
        false
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
