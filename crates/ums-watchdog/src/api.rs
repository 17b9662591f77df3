//! `ums.network.v1.WatchdogService`: what servers ask a watchdog. Served on the internal port
//! over mutual TLS only: a connection without a client certificate signed by the network CA
//! never gets past the handshake, and of the certified peers only servers may stop or start a
//! process.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use ums_proto::network::v1 as pb;
use ums_proto::network::v1::watchdog_service_server::WatchdogService;
use ums_service::Peer;
use ums_tls::ComponentKind;

use crate::Node;

pub struct WatchdogApi {
    pub node: Arc<Node>,
}

/// The certified peer of a request; none means the listener was not mutual TLS, which the
/// watchdog never serves, so refuse.
fn peer<T>(request: &Request<T>) -> Result<Peer, Status> {
    request
        .extensions()
        .get::<Peer>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("a node certificate of the network is required"))
}

/// Only servers act on a watchdog's processes.
fn server_peer<T>(request: &Request<T>, action: &str) -> Result<Peer, Status> {
    let peer = peer(request)?;
    if peer.kind != ComponentKind::Server {
        tracing::warn!(peer = %format!("{}/{}", peer.kind, peer.id), action, "refused: only servers may control processes");
        return Err(Status::permission_denied(format!(
            "only servers may {action} processes; the caller is a {}",
            peer.kind
        )));
    }
    Ok(peer)
}

impl WatchdogApi {
    fn child(&self, process: &str) -> Result<&crate::supervisor::ChildHandle, Status> {
        self.node.find(process).ok_or_else(|| {
            Status::not_found(format!(
                "this watchdog supervises no process `{process}` (it runs: {})",
                self.node.child_names()
            ))
        })
    }
}

#[tonic::async_trait]
impl WatchdogService for WatchdogApi {
    async fn watchdog_status(
        &self,
        request: Request<pb::WatchdogStatusRequest>,
    ) -> Result<Response<pb::WatchdogStatusResponse>, Status> {
        peer(&request)?;
        Ok(Response::new(pb::WatchdogStatusResponse {
            watchdog: Some(self.node.watchdog_info("running")),
            children: self.node.children_info(),
        }))
    }

    async fn stop_process(
        &self,
        request: Request<pb::ControlRequest>,
    ) -> Result<Response<pb::ControlResponse>, Status> {
        let peer = server_peer(&request, "stop")?;
        let child = self.child(&request.get_ref().process)?;
        tracing::info!(process = %child.id, by = %peer.id, "stop requested");
        let outcome = child.stop().await;
        tracing::info!(process = %child.id, ?outcome, "stopped on request");
        Ok(Response::new(pb::ControlResponse {
            process: Some(self.node.child_info(child)),
        }))
    }

    async fn start_process(
        &self,
        request: Request<pb::ControlRequest>,
    ) -> Result<Response<pb::ControlResponse>, Status> {
        let peer = server_peer(&request, "start")?;
        let child = self.child(&request.get_ref().process)?;
        tracing::info!(process = %child.id, by = %peer.id, "start requested");
        child.start().await;
        if !child.wait_running().await {
            return Err(Status::unavailable(format!(
                "{} was started but did not become ready: {}",
                child.id,
                child.state().last_exit.unwrap_or_default()
            )));
        }
        tracing::info!(process = %child.id, "started on request");
        Ok(Response::new(pb::ControlResponse {
            process: Some(self.node.child_info(child)),
        }))
    }
}
