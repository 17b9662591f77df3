//! The client of the watchdogs: stop or start a process a watchdog supervises.

use ums_proto::network::v1 as pb;
use ums_proto::network::v1::watchdog_service_client::WatchdogServiceClient;
use ums_tls::NodeIdentity;

use crate::error::ApiError;

/// Asks the watchdog `watchdog` (its registry entry) to stop or start `process`; returns the
/// process as the watchdog reports it afterwards, when it does.
pub async fn control(
    identity: &NodeIdentity,
    watchdog: &pb::ProcessInfo,
    process: &str,
    start: bool,
) -> Result<Option<pb::ProcessInfo>, ApiError> {
    let who = format!("watchdog {}", watchdog.id);
    let addr = super::host_port(&watchdog.host, watchdog.internal_port);
    let channel = ums_network::internal_channel(identity, &addr)
        .map_err(|e| ApiError::Unavailable(format!("{who}: {e}")))?;
    let mut client = WatchdogServiceClient::new(channel);
    let request = pb::ControlRequest {
        process: process.to_owned(),
    };
    let reply = if start {
        client.start_process(request).await
    } else {
        client.stop_process(request).await
    }
    .map_err(|s| ApiError::remote(&who, &s))?;
    Ok(reply.into_inner().process)
}
