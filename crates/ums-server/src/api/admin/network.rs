//! The network as administrators manage it: the process registry, stopping and starting a
//! process through its watchdog, and the network token.

use ums_proto::admin::v1 as pb;
use ums_proto::network::v1 as cpb;

use super::{AdminApi, Caller};
use crate::error::ApiError;
use crate::network::bootstrap;

/// Grace period of a rotated token when the request names none.
const DEFAULT_GRACE_SECONDS: u64 = 24 * 3600;
/// Longest grace period of a rotated token.
const MAX_GRACE_SECONDS: u64 = 30 * 24 * 3600;

pub async fn list_processes(
    api: &AdminApi,
    _: Caller,
    _: pb::ListProcessesRequest,
) -> Result<pb::ListProcessesResponse, ApiError> {
    let processes = api.state.network.processes(&api.state.db).await?;
    Ok(pb::ListProcessesResponse { processes })
}

/// The process `id` and the whole registry.
async fn find(
    api: &AdminApi,
    id: &str,
) -> Result<(cpb::ProcessInfo, Vec<cpb::ProcessInfo>), ApiError> {
    let all = api.state.network.processes(&api.state.db).await?;
    let p = all
        .iter()
        .find(|p| p.id == id)
        .cloned()
        .ok_or_else(|| ApiError::NotFound(format!("no process {id} in the registry")))?;
    Ok((p, all))
}

pub async fn remove_process(
    api: &AdminApi,
    _: Caller,
    r: pb::ProcessRequest,
) -> Result<pb::Empty, ApiError> {
    let (p, _) = find(api, &r.id).await?;
    if p.status == "running" {
        return Err(ApiError::FailedPrecondition(format!(
            "{} is running (last heartbeat {} ms ago): stop it first, or wait until it shows as stopped",
            r.id,
            (ums_db::now_ms() - p.last_heartbeat_ms).max(0)
        )));
    }
    api.state.db.remove_process(&r.id).await?;
    api.state.network.processes_changed(&api.state.db).await;
    Ok(pb::Empty {})
}

pub async fn stop_process(
    api: &AdminApi,
    _: Caller,
    r: pb::ProcessRequest,
) -> Result<cpb::ProcessInfo, ApiError> {
    control(api, &r.id, false).await
}

pub async fn start_process(
    api: &AdminApi,
    _: Caller,
    r: pb::ProcessRequest,
) -> Result<cpb::ProcessInfo, ApiError> {
    control(api, &r.id, true).await
}

/// Asks the watchdog that supervises `id` to stop or start it, over mutual TLS.
async fn control(api: &AdminApi, id: &str, start: bool) -> Result<cpb::ProcessInfo, ApiError> {
    let (p, all) = find(api, id).await?;
    let supervisor = all
        .iter()
        .find(|w| w.kind == "watchdog" && w.id == p.supervisor_id)
        .ok_or_else(|| {
            ApiError::FailedPrecondition(format!(
                "{id} has no watchdog in the registry: stop or start it on its host"
            ))
        })?;
    if supervisor.status != "running" || supervisor.internal_port == 0 {
        return Err(ApiError::Unavailable(format!(
            "the watchdog {} of {id} is not running",
            supervisor.id
        )));
    }
    let state = &api.state;
    let reported =
        crate::clients::watchdog::control(&state.network.identity, supervisor, id, start).await?;
    // Record what the watchdog reports now, so the registry shows it without waiting for the
    // next heartbeat.
    if !start {
        let _ = state.db.set_process_status(id, "stopped").await;
    }
    state.network.processes_changed(&state.db).await;
    Ok(reported.unwrap_or(p))
}

pub async fn export_token(
    api: &AdminApi,
    _: Caller,
    _: pb::ExportTokenRequest,
) -> Result<pb::TokenResponse, ApiError> {
    let (db, net) = (&api.state.db, &api.state.network);
    let token = bootstrap::current_token(db, &net.ca, &net.ca_sha256)
        .await
        .map_err(ApiError::internal)?;
    let previous = db
        .valid_tokens()
        .await?
        .iter()
        .filter_map(|t| t.expires_at)
        .max()
        .unwrap_or(0);
    Ok(pb::TokenResponse {
        token: token.expose(),
        previous_expires_at_ms: previous,
    })
}

pub async fn rotate_token(
    api: &AdminApi,
    _: Caller,
    r: pb::RotateTokenRequest,
) -> Result<pb::TokenResponse, ApiError> {
    let grace = match r.grace_seconds {
        0 => DEFAULT_GRACE_SECONDS,
        g => g.min(MAX_GRACE_SECONDS),
    };
    let (db, net) = (&api.state.db, &api.state.network);
    let (token, until) = bootstrap::rotate_token(
        db,
        &net.ca,
        &net.ca_sha256,
        &net.token_file,
        (grace * 1000) as i64,
    )
    .await
    .map_err(ApiError::internal)?;
    tracing::info!(grace_seconds = grace, "rotated the network token");
    Ok(pb::TokenResponse {
        token: token.expose(),
        previous_expires_at_ms: until,
    })
}
