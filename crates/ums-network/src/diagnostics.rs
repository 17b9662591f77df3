//! `ums.network.v1.DiagnosticsService`, served on the internal port of every server, watchdog
//! and swp-auth: the process's redacted configuration and recent logs for a support bundle.
//! Only servers may ask (they gather the bundle for an administrator with `network:read`).

use tonic::{Request, Response, Status};
use ums_proto::network::v1 as pb;
use ums_proto::network::v1::diagnostics_service_server::{
    DiagnosticsService, DiagnosticsServiceServer,
};
use ums_service::{Peer, diagnostics};
use ums_tls::ComponentKind;

/// The largest answer, well above what the rings hold.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

pub struct DiagnosticsApi {
    process_id: String,
    kind: ComponentKind,
    version: &'static str,
}

/// The service for the process `process_id` of kind `kind` running `version` (the binary's
/// `CARGO_PKG_VERSION`), ready for an internal router.
pub fn service(
    process_id: &str,
    kind: ComponentKind,
    version: &'static str,
) -> DiagnosticsServiceServer<DiagnosticsApi> {
    DiagnosticsServiceServer::new(DiagnosticsApi {
        process_id: process_id.to_owned(),
        kind,
        version,
    })
    .max_encoding_message_size(MAX_MESSAGE)
}

/// This process's diagnostics.
pub fn local(process_id: &str, kind: ComponentKind, version: &str) -> pb::DiagnosticsResponse {
    pb::DiagnosticsResponse {
        process_id: process_id.to_owned(),
        kind: kind.to_string(),
        version: version.to_owned(),
        config_toml: diagnostics::config().to_owned(),
        logs: diagnostics::logs()
            .into_iter()
            .map(|(name, text, dropped_lines)| pb::RecentLog {
                name,
                text,
                dropped_lines,
            })
            .collect(),
        clock_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    }
}

#[tonic::async_trait]
impl DiagnosticsService for DiagnosticsApi {
    async fn diagnostics(
        &self,
        request: Request<pb::DiagnosticsRequest>,
    ) -> Result<Response<pb::DiagnosticsResponse>, Status> {
        let peer = request.extensions().get::<Peer>().cloned().ok_or_else(|| {
            Status::unauthenticated("a node certificate of the network is required")
        })?;
        if peer.kind != ComponentKind::Server {
            tracing::warn!(peer = %format!("{}/{}", peer.kind, peer.id), "refused: only servers may read diagnostics");
            return Err(Status::permission_denied(format!(
                "only servers may read a process's diagnostics; the caller is a {}",
                peer.kind
            )));
        }
        tracing::info!(peer = %peer.id, "diagnostics read for a support bundle");
        Ok(Response::new(local(
            &self.process_id,
            self.kind,
            self.version,
        )))
    }
}
