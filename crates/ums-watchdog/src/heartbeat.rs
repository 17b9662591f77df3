//! Heartbeats: every `network.heartbeat_ms`, and at once when a child's state changes, the
//! watchdog reports itself and its children to a server (`NetworkService.Heartbeat` on the
//! server's internal port, mutual TLS), which records them in the process registry.
//!
//! The servers of `network.servers` (admin addresses) are tried in turn, starting with the one
//! that answered last: one answer is enough, the registry is shared. A server's internal port is
//! learnt from its admin port and learnt again after a failed call (the server may have moved).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tonic::transport::Channel;
use ums_proto::network::v1 as pb;
use ums_proto::network::v1::network_service_client::NetworkServiceClient;
use ums_tls::NodeIdentity;

use crate::Node;

/// Time one heartbeat call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Reporter {
    node: Arc<Node>,
    identity: NodeIdentity,
    /// Admin address, and the client of the internal port once learnt.
    servers: Vec<(String, Mutex<Option<NetworkServiceClient<Channel>>>)>,
    next: AtomicUsize,
    failing: AtomicBool,
}

impl Reporter {
    pub fn new(node: Arc<Node>, identity: &NodeIdentity, servers: &[String]) -> Self {
        Self {
            node,
            identity: identity.clone(),
            servers: servers
                .iter()
                .map(|addr| (addr.clone(), Mutex::new(None)))
                .collect(),
            next: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
        }
    }

    /// The client of a server's internal port, learnt from its admin port when not known.
    async fn client(&self, idx: usize) -> Result<NetworkServiceClient<Channel>, String> {
        let (admin, slot) = &self.servers[idx];
        if let Some(c) = lock(slot).clone() {
            return Ok(c);
        }
        let (_, channel) = tokio::time::timeout(
            CALL_TIMEOUT,
            ums_network::internal_channel_via(&self.identity, admin),
        )
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
        let client = NetworkServiceClient::new(channel);
        *lock(slot) = Some(client.clone());
        Ok(client)
    }

    /// Sends one heartbeat; `true` when a server took it. `leaving` reports the watchdog itself
    /// as stopped (its last heartbeat).
    pub async fn report(&self, leaving: bool) -> bool {
        if self.servers.is_empty() {
            return false;
        }
        let request = pb::HeartbeatRequest {
            process: Some(
                self.node
                    .watchdog_info(if leaving { "stopped" } else { "running" }),
            ),
            supervised: self.node.children_info(),
            known_servers: vec![],
        };
        let start = self.next.load(Ordering::Relaxed);
        let mut errors = Vec::new();
        for i in 0..self.servers.len() {
            let idx = (start + i) % self.servers.len();
            let addr = &self.servers[idx].0;
            let mut client = match self.client(idx).await {
                Ok(c) => c,
                Err(e) => {
                    errors.push(format!("{addr}: {e}"));
                    continue;
                }
            };
            let mut req = tonic::Request::new(request.clone());
            req.set_timeout(CALL_TIMEOUT);
            let answer = tokio::time::timeout(CALL_TIMEOUT, client.heartbeat(req)).await;
            if !matches!(answer, Ok(Ok(_))) {
                // Learn the internal port again next time.
                *lock(&self.servers[idx].1) = None;
            }
            match answer {
                Ok(Ok(_)) => {
                    self.next.store(idx, Ordering::Relaxed);
                    if self.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!(server = %addr, "heartbeats reach the network again");
                    }
                    return true;
                }
                Ok(Err(status)) => errors.push(format!("{addr}: {}", status.message())),
                Err(_) => errors.push(format!("{addr}: timed out")),
            }
        }
        // Log the first failure of a series, not one line every interval.
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(errors = %errors.join("; "), "no server took the heartbeat; retrying");
        }
        false
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reports every `interval` and on every change until `stop` turns true.
pub async fn run(
    reporter: Arc<Reporter>,
    interval: Duration,
    changed: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        reporter.report(false).await;
        tokio::select! {
            () = crate::stopped(&mut stop) => return,
            () = changed.notified() => {
                // Let a burst of changes (stopping, stopped) settle into one report.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            () = tokio::time::sleep(interval) => {}
        }
    }
}
