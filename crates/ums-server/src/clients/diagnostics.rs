//! The client of `DiagnosticsService`: another process's redacted configuration and recent
//! logs, for a support bundle.

use std::time::Duration;

use ums_proto::network::v1 as pb;
use ums_proto::network::v1::diagnostics_service_client::DiagnosticsServiceClient;
use ums_tls::NodeIdentity;

/// Time one process may take to answer.
pub const DIAGNOSTICS_TIMEOUT: Duration = Duration::from_secs(5);

/// The diagnostics of the process `p` (its registry entry), read over its internal port.
pub async fn fetch(
    identity: &NodeIdentity,
    p: &pb::ProcessInfo,
) -> Result<pb::DiagnosticsResponse, String> {
    let addr = super::host_port(&p.host, p.internal_port);
    let work = async {
        let channel = ums_network::internal_channel(identity, &addr).map_err(|e| e.to_string())?;
        let reply = DiagnosticsServiceClient::new(channel)
            .max_decoding_message_size(ums_network::diagnostics::MAX_MESSAGE)
            .diagnostics(pb::DiagnosticsRequest {})
            .await
            .map_err(|s| format!("{addr} answered: {}", s.message()))?
            .into_inner();
        if reply.process_id != p.id {
            return Err(format!(
                "{addr} answers as {}, not as {}",
                reply.process_id, p.id
            ));
        }
        Ok(reply)
    };
    match tokio::time::timeout(DIAGNOSTICS_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer from {addr} within {DIAGNOSTICS_TIMEOUT:?}"
        )),
    }
}
