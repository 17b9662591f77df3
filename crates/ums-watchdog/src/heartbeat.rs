//! Heartbeats: every `heartbeat_interval_ms`, and at once when a child's state changes, the
//! watchdog reports itself and its children to a server (`ClusterService.Heartbeat` on the
//! server's internal port, mutual TLS), which records them in the process registry.
//!
//! The servers of `cluster.servers` are tried in turn, starting with the one that answered
//! last: one answer is enough, the registry is shared.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tonic::transport::Channel;
use ums_proto::cluster::v1 as pb;
use ums_proto::cluster::v1::cluster_service_client::ClusterServiceClient;
use ums_tls::NodeIdentity;

use crate::Node;

/// Time one heartbeat call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Reporter {
    node: Arc<Node>,
    servers: Vec<(String, ClusterServiceClient<Channel>)>,
    next: AtomicUsize,
    failing: AtomicBool,
}

impl Reporter {
    pub fn new(
        node: Arc<Node>,
        identity: &NodeIdentity,
        servers: &[String],
    ) -> anyhow::Result<Self> {
        let servers = servers
            .iter()
            .map(|addr| {
                ums_cluster::internal_channel(identity, addr)
                    .map(|ch| (addr.clone(), ClusterServiceClient::new(ch)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            node,
            servers,
            next: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
        })
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
        };
        let start = self.next.load(Ordering::Relaxed);
        let mut errors = Vec::new();
        for i in 0..self.servers.len() {
            let idx = (start + i) % self.servers.len();
            let (addr, client) = &self.servers[idx];
            let mut client = client.clone();
            let mut req = tonic::Request::new(request.clone());
            req.set_timeout(CALL_TIMEOUT);
            match tokio::time::timeout(CALL_TIMEOUT, client.heartbeat(req)).await {
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
