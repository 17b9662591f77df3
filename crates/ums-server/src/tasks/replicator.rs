//! The replicator: copies the files this server lacks from a server that has them (resuming a
//! partial copy, verifying the hash before the file counts as present) and removes what was
//! deleted; it runs at start, on every files event and every 10 s, so a failed copy is retried.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use ums_proto::network::v1 as cpb;

use crate::files;
use crate::network::{Event, stopped};
use crate::state::AppState;

/// Copies what this server lacks and removes what was deleted, until `stop`.
pub async fn run(state: Arc<AppState>, stop: watch::Receiver<bool>) {
    let mut events = state.network.subscribe();
    let stopping = stopped(stop);
    tokio::pin!(stopping);
    let mut failures = 0u32;
    loop {
        let outcome = replicate_once(&state).await;
        let wait = match outcome {
            Ok(true) => {
                failures = 0;
                Duration::from_secs(10)
            }
            Ok(false) | Err(_) => {
                if let Err(e) = &outcome {
                    tracing::warn!(error = %e, "file replication round failed");
                }
                failures = (failures + 1).min(5);
                Duration::from_millis(500 << failures)
            }
        };
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut stopping => return,
                () = &mut deadline => break,
                e = events.recv() => match e {
                    Ok(Event::FilesChanged { .. }) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Ok(_) => {}
                    Err(_) => return,
                },
            }
        }
    }
}

/// One pass; `Ok(true)` when everything is in place.
async fn replicate_once(state: &AppState) -> anyhow::Result<bool> {
    let network = &state.network;
    let db = &state.db;
    let me = &network.process_id;
    let files = db.list_files(true).await?;
    let replicas = db.file_replicas().await?;
    let live_hashes: std::collections::HashSet<&str> = files
        .iter()
        .filter(|f| !f.deleted)
        .map(|f| f.sha256.as_str())
        .collect();
    let mut complete = true;
    let mut lacking = 0usize;
    for f in files.iter().filter(|f| f.deleted) {
        let mine = replicas
            .iter()
            .any(|r| r.file_id == f.id && r.server_id == *me);
        if mine {
            if !live_hashes.contains(f.sha256.as_str()) {
                state.files.remove(&f.sha256).await;
            }
            db.remove_replica(f.id, me).await?;
        }
    }
    let mut peers: Option<Vec<cpb::ProcessInfo>> = None;
    for f in files.iter().filter(|f| !f.deleted) {
        let status = replicas
            .iter()
            .find(|r| r.file_id == f.id && r.server_id == *me)
            .map(|r| r.status.as_str());
        if state.files.has(&f.sha256, f.size as u64).await {
            if status != Some("present") {
                db.set_replica(f.id, me, "present", "").await?;
            }
            continue;
        }
        if status == Some("present") {
            // Recorded as here, gone from the disk: copied again below, and reported by the
            // network check so the cause (a hand, a failing disk) is looked into.
            tracing::warn!(file = %f.path, sha256 = %f.sha256, "a replicated file is missing from the disk; copying it again");
            network.note_restored_file(&f.path, &f.sha256);
        }
        if peers.is_none() {
            peers = Some(network.processes(db).await?);
        }
        let holders: Vec<&cpb::ProcessInfo> = peers
            .iter()
            .flatten()
            .filter(|p| {
                p.kind == "server"
                    && p.status == "running"
                    && p.id != *me
                    && p.internal_port != 0
                    && replicas
                        .iter()
                        .any(|r| r.file_id == f.id && r.server_id == p.id && r.status == "present")
            })
            .collect();
        if status != Some("pending") && status != Some("failed") {
            db.set_replica(f.id, me, "pending", "").await?;
        }
        let mut last_error = String::from("no running server holds the file");
        let mut copied = false;
        for holder in holders {
            match files::fetch(
                &state.files,
                &network.identity,
                holder,
                &f.sha256,
                f.size as u64,
            )
            .await
            {
                Ok(()) => {
                    copied = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(file = %f.path, from = %holder.id, error = %e, "file copy failed");
                    last_error = format!("from {}: {e}", holder.id);
                }
            }
        }
        if copied {
            db.set_replica(f.id, me, "present", "").await?;
            tracing::info!(file = %f.path, sha256 = %f.sha256, size = f.size, "file replicated");
        } else {
            complete = false;
            lacking += 1;
            db.set_replica(f.id, me, "failed", &last_error).await?;
        }
    }
    state.metrics.set_replication_backlog(lacking);
    Ok(complete)
}
