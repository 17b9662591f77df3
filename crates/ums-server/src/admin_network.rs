//! The admin API's network and file operations: the process registry, watchdog control, the
//! network token, and replicated files. Called from [`crate::admin_api`] once the caller's
//! permission is checked.

use tonic::Status;
use ums_proto::admin::v1 as pb;
use ums_proto::cluster::v1 as cpb;
use ums_proto::cluster::v1::watchdog_service_client::WatchdogServiceClient;

use crate::files::{self, MAX_FILE};
use crate::network::{self, Event};
use crate::state::AppState;

/// Grace period of a rotated token when the request names none.
const DEFAULT_GRACE_SECONDS: u64 = 24 * 3600;

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

pub async fn list_processes(state: &AppState) -> Result<pb::ListProcessesResponse, Status> {
    let processes = state
        .network
        .processes(&state.db)
        .await
        .map_err(|e| Status::unavailable(format!("database unavailable: {e}")))?;
    Ok(pb::ListProcessesResponse { processes })
}

async fn find(
    state: &AppState,
    id: &str,
) -> Result<(cpb::ProcessInfo, Vec<cpb::ProcessInfo>), Status> {
    let all = list_processes(state).await?.processes;
    let p = all
        .iter()
        .find(|p| p.id == id)
        .cloned()
        .ok_or_else(|| Status::not_found(format!("no process {id} in the registry")))?;
    Ok((p, all))
}

pub async fn remove_process(state: &AppState, id: &str) -> Result<(), Status> {
    let (p, _) = find(state, id).await?;
    if p.status == "running" {
        return Err(Status::failed_precondition(format!(
            "{id} is running (last heartbeat {} ms ago): stop it first, or wait until it shows as stopped",
            (ums_db::now_ms() - p.last_heartbeat_ms).max(0)
        )));
    }
    state.db.remove_process(id).await.map_err(internal)?;
    state
        .network
        .publish(
            &state.db,
            Event::ProcessesChanged {
                origin: state.network.process_id.clone(),
            },
        )
        .await;
    Ok(())
}

/// Asks the watchdog that supervises `id` to stop or start it, over mutual TLS.
pub async fn control(state: &AppState, id: &str, start: bool) -> Result<cpb::ProcessInfo, Status> {
    let (p, all) = find(state, id).await?;
    let supervisor = all
        .iter()
        .find(|w| w.kind == "watchdog" && w.id == p.supervisor_id)
        .ok_or_else(|| {
            Status::failed_precondition(format!(
                "{id} has no watchdog in the registry: stop or start it on its host"
            ))
        })?;
    if supervisor.status != "running" || supervisor.internal_port == 0 {
        return Err(Status::unavailable(format!(
            "the watchdog {} of {id} is not running",
            supervisor.id
        )));
    }
    let addr = format!(
        "{}:{}",
        files::host_for_uri(&supervisor.host),
        supervisor.internal_port
    );
    let channel = ums_cluster::internal_channel(&state.network.identity, &addr)
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut client = WatchdogServiceClient::new(channel);
    let request = cpb::ControlRequest {
        process: id.to_owned(),
    };
    let reply = if start {
        client.start_process(request).await
    } else {
        client.stop_process(request).await
    }
    .map_err(|s| {
        Status::new(
            s.code(),
            format!("watchdog {}: {}", supervisor.id, s.message()),
        )
    })?
    .into_inner();
    let process = reply.process.unwrap_or(p);
    // Record what the watchdog reports now, so the registry shows it without waiting for the
    // next heartbeat.
    if !start {
        let _ = state.db.set_process_status(id, "stopped").await;
    }
    state
        .network
        .publish(
            &state.db,
            Event::ProcessesChanged {
                origin: state.network.process_id.clone(),
            },
        )
        .await;
    Ok(process)
}

pub async fn export_token(state: &AppState) -> Result<pb::TokenResponse, Status> {
    let net = &state.network;
    let token = network::current_token(&state.db, &net.ca, &net.ca_sha256)
        .await
        .map_err(internal)?;
    let previous = state
        .db
        .valid_tokens()
        .await
        .map_err(internal)?
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
    state: &AppState,
    grace_seconds: u64,
) -> Result<pb::TokenResponse, Status> {
    let grace = if grace_seconds == 0 {
        DEFAULT_GRACE_SECONDS
    } else {
        grace_seconds.min(30 * 24 * 3600)
    };
    let net = &state.network;
    let (token, until) = network::rotate_token(
        &state.db,
        &net.ca,
        &net.ca_sha256,
        &net.token_file,
        (grace * 1000) as i64,
    )
    .await
    .map_err(internal)?;
    tracing::info!(grace_seconds = grace, "rotated the network token");
    Ok(pb::TokenResponse {
        token: token.expose(),
        previous_expires_at_ms: until,
    })
}

/// Stores an uploaded file: hashed while written, checked against what the uploader announced,
/// then moved into place and recorded in one transaction. Nothing is recorded on any error.
pub async fn upload(
    state: &AppState,
    mut stream: tonic::Streaming<pb::UploadFileChunk>,
) -> Result<pb::FileInfo, Status> {
    let first = stream.message().await?.ok_or_else(|| {
        Status::invalid_argument("empty upload: the first message names the file")
    })?;
    files::validate_path(&first.path).map_err(Status::invalid_argument)?;
    let expected_sha = first.sha256.to_ascii_lowercase();
    if !expected_sha.is_empty()
        && (expected_sha.len() != 64 || !expected_sha.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(Status::invalid_argument("sha256 must be 64 hex digits"));
    }
    if first.size > MAX_FILE {
        return Err(Status::invalid_argument(format!(
            "files are limited to {MAX_FILE} bytes"
        )));
    }
    let mut upload = state.files.begin().await.map_err(internal)?;
    let tmp = upload.tmp.clone();
    let result: Result<(std::path::PathBuf, String, u64), Status> = async {
        upload.write(&first.data).await.map_err(internal)?;
        while let Some(chunk) = stream.message().await? {
            if upload.size + chunk.data.len() as u64 > MAX_FILE {
                return Err(Status::invalid_argument(format!(
                    "files are limited to {MAX_FILE} bytes"
                )));
            }
            upload.write(&chunk.data).await.map_err(internal)?;
        }
        upload.finish().await.map_err(internal)
    }
    .await;
    let (tmp, sha, size) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
    };
    let mismatch = (first.size != 0 && first.size != size)
        .then(|| format!("the upload has {size} bytes, {} were announced", first.size))
        .or_else(|| {
            (!expected_sha.is_empty() && expected_sha != sha)
                .then(|| format!("the upload's sha256 is {sha}, {expected_sha} was announced"))
        });
    if let Some(m) = mismatch {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(Status::data_loss(format!("{m}: nothing was stored")));
    }
    state.files.commit(&tmp, &sha).await.map_err(internal)?;
    let me = &state.network.process_id;
    let row = state
        .db
        .insert_file(&first.path, &sha, size as i64, me)
        .await
        .map_err(internal)?;
    tracing::info!(path = %row.path, sha256 = %sha, size, "file uploaded");
    state
        .network
        .publish(&state.db, Event::FilesChanged { origin: me.clone() })
        .await;
    Ok(pb::FileInfo {
        id: row.id,
        path: row.path,
        size,
        sha256: sha,
        created_at_ms: row.created_at,
        replicas: vec![pb::FileReplica {
            server_id: me.clone(),
            status: "present".into(),
            error: String::new(),
            updated_at_ms: row.created_at,
        }],
    })
}

pub async fn list_files(state: &AppState) -> Result<pb::ListFilesResponse, Status> {
    let db = &state.db;
    let files = db.list_files(false).await.map_err(internal)?;
    let replicas = db.file_replicas().await.map_err(internal)?;
    let (_, revision) = db.change_counters().await.map_err(internal)?;
    Ok(pb::ListFilesResponse {
        files: files
            .into_iter()
            .map(|f| pb::FileInfo {
                replicas: replicas
                    .iter()
                    .filter(|r| r.file_id == f.id)
                    .map(|r| pb::FileReplica {
                        server_id: r.server_id.clone(),
                        status: r.status.clone(),
                        error: r.error.clone(),
                        updated_at_ms: r.updated_at,
                    })
                    .collect(),
                id: f.id,
                path: f.path,
                size: f.size as u64,
                sha256: f.sha256,
                created_at_ms: f.created_at,
            })
            .collect(),
        revision,
    })
}

pub async fn delete_file(state: &AppState, id: i64) -> Result<(), Status> {
    state
        .db
        .delete_file(id)
        .await
        .map_err(crate::error::ApiError::from)?;
    state
        .network
        .publish(
            &state.db,
            Event::FilesChanged {
                origin: state.network.process_id.clone(),
            },
        )
        .await;
    Ok(())
}
