//! Software releases as administrators manage them: storing a signed release (verified against
//! the keys this server pinned in `[release] public_keys`, its files already uploaded to the
//! file store under `releases/<revision>/`), the network's revision with every node's update
//! state, the steps nodes logged, and the rollout: paused or not, how many nodes at once, a
//! rollback to the previous good release.

use ums_proto::admin::v1 as pb;
use ums_release::{ReleaseError, SignedManifest};

use super::{AdminApi, Caller};
use crate::error::ApiError;

/// Where a release's file is kept in the replicated file store.
pub fn store_path(revision: u64, name: &str) -> String {
    format!("releases/{revision}/{name}")
}

fn refused(e: ReleaseError) -> ApiError {
    match e {
        ReleaseError::NoPinnedKey => ApiError::FailedPrecondition(
            "this server pins no release key: set `[release] public_keys` in its configuration (the public key `umsctl release keygen` printed) and restart it".into(),
        ),
        e @ (ReleaseError::Expired { .. } | ReleaseError::Rollback { .. }) => {
            ApiError::FailedPrecondition(format!("release refused: {e}"))
        }
        e => ApiError::Invalid(format!("release refused: {e}")),
    }
}

pub async fn upload(
    api: &AdminApi,
    caller: Caller,
    r: pb::UploadReleaseRequest,
) -> Result<pb::UploadReleaseResponse, ApiError> {
    let state = &api.state;
    let signed = SignedManifest::from_json(r.manifest.as_bytes()).map_err(refused)?;
    let m = signed
        .verify(&state.info.release_keys, ums_db::now_ms())
        .map_err(refused)?;
    let revision = i64::try_from(m.revision)
        .map_err(|_| ApiError::Invalid("release refused: revision is too large".into()))?;
    let newest = state.db.latest_release().await?;
    if let Some(newest) = &newest {
        let current = newest.revision as u64;
        if m.revision < current {
            return Err(refused(ReleaseError::Rollback {
                revision: m.revision,
                current,
            }));
        }
        if m.revision == current {
            return Err(ApiError::FailedPrecondition(format!(
                "release refused: revision {current} is already released (version {}): sign the new release with a higher --revision",
                newest.version
            )));
        }
    }
    let stored = state.db.list_files(false).await?;
    let files: Vec<pb::ReleaseFile> = m
        .files
        .iter()
        .map(|f| pb::ReleaseFile {
            name: f.name.clone(),
            roles: f.roles.clone(),
            size: f.size,
            sha256: f.sha256.clone(),
            store_path: store_path(m.revision, &f.name),
        })
        .collect();
    let missing: Vec<pb::ReleaseFile> = files
        .iter()
        .filter(|f| {
            !stored
                .iter()
                .any(|s| s.path == f.store_path && s.sha256 == f.sha256 && s.size as u64 == f.size)
        })
        .cloned()
        .collect();
    let mut answer = pb::UploadReleaseResponse {
        revision: m.revision,
        version: m.version.clone(),
        digest: m.digest(),
        missing,
        stored: false,
        files,
    };
    if r.check_only {
        return Ok(answer);
    }
    if !answer.missing.is_empty() {
        return Err(ApiError::FailedPrecondition(format!(
            "release refused: {} of its files are not in the file store with the manifest's size and sha256 (first: {}): upload them first (`umsctl release upload` does)",
            answer.missing.len(),
            answer.missing[0].store_path
        )));
    }
    // Stored as uploaded: every node verifies these bytes again with the key it pinned.
    let row = state
        .db
        .insert_release(
            revision,
            &m.version,
            &answer.digest,
            &r.manifest,
            &caller.username,
        )
        .await
        .map_err(|e| match e {
            ums_db::DbError::Conflict(m) => {
                ApiError::FailedPrecondition(format!("release refused: {m}"))
            }
            e => e.into(),
        })?;
    tracing::info!(
        revision = row.revision,
        version = %row.version,
        digest = %row.digest,
        "release stored: the network's software revision changed"
    );
    answer.stored = true;
    answer.missing.clear();
    Ok(answer)
}

pub async fn status(
    api: &AdminApi,
    _: Caller,
    _: pb::ReleaseStatusRequest,
) -> Result<pb::ReleaseStatusResponse, ApiError> {
    let db = &api.state.db;
    let releases = db.releases(20).await?;
    let reports = db.release_nodes().await?;
    let rollout = rollout(db).await?;
    let processes = api.state.network.processes(db).await?;
    let status_of = |id: &str| {
        processes
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.status.clone())
            .unwrap_or_else(|| "unknown".into())
    };
    let mut nodes: Vec<pb::ReleaseNode> = reports
        .iter()
        .map(|n| pb::ReleaseNode {
            node_id: n.node_id.clone(),
            host: n.host.clone(),
            roles: n
                .roles
                .split(',')
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect(),
            installed_revision: n.installed_revision.max(0) as u64,
            target_revision: n.target_revision.max(0) as u64,
            state: n.state.clone(),
            error: n.error.clone(),
            updated_at_ms: n.updated_at,
            process_status: status_of(&n.node_id),
        })
        .collect();
    // Watchdogs that never reported still show, so a node that does not update is seen.
    for p in processes.iter().filter(|p| p.kind == "watchdog") {
        if !nodes.iter().any(|n| n.node_id == p.id) {
            nodes.push(pb::ReleaseNode {
                node_id: p.id.clone(),
                host: p.host.clone(),
                state: "unreported".into(),
                process_status: status_of(&p.id),
                ..Default::default()
            });
        }
    }
    nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    let infos: Vec<pb::ReleaseInfo> = releases
        .iter()
        .map(|r| {
            // Verified when stored; read back for the summary only.
            let m = SignedManifest::from_json(r.manifest.as_bytes()).ok();
            pb::ReleaseInfo {
                revision: r.revision.max(0) as u64,
                version: r.version.clone(),
                digest: r.digest.clone(),
                uploaded_at_ms: r.uploaded_at,
                uploaded_by: r.uploaded_by.clone(),
                files: m.as_ref().map(|m| m.signed.files.len() as u32).unwrap_or(0),
                size: m.as_ref().map(|m| m.signed.total_size()).unwrap_or(0),
                expires_at_ms: m.as_ref().map(|m| m.signed.expires_at_ms).unwrap_or(0),
            }
        })
        .collect();
    let newest = infos.first().map(|r| r.revision).unwrap_or(0);
    let wanted = if rollout.rollback_to != 0 {
        rollout.rollback_to
    } else {
        newest
    };
    let rolling_back =
        rollout.rollback_to != 0 && nodes.iter().any(|n| n.installed_revision > wanted);
    Ok(pb::ReleaseStatusResponse {
        revision: wanted,
        version: releases
            .iter()
            .find(|r| r.revision.max(0) as u64 == wanted)
            .map(|r| r.version.clone())
            .unwrap_or_default(),
        releases: infos,
        nodes,
        newest_revision: newest,
        rollout: Some(rollout),
        rolling_back,
    })
}

/// The rollout as it is now: `rollback_to` only while the rollback holds.
async fn rollout(db: &ums_db::Db) -> Result<pb::ReleaseRollout, ApiError> {
    let r = db.release_rollout().await?;
    let newest = db.latest_release().await?.map(|r| r.revision).unwrap_or(0);
    let holds = r.rolled_back(newest);
    Ok(pb::ReleaseRollout {
        paused: r.paused,
        paused_by: if r.paused { r.paused_by } else { String::new() },
        paused_at_ms: if r.paused { r.paused_at } else { 0 },
        concurrency: r.concurrency,
        rollback_to: if holds {
            r.rollback_to.max(0) as u64
        } else {
            0
        },
        rollback_from: if holds {
            r.rollback_from.max(0) as u64
        } else {
            0
        },
        rollback_by: if holds { r.rollback_by } else { String::new() },
        rollback_at_ms: if holds { r.rollback_at } else { 0 },
        updating: db.release_slot_holders().await?,
    })
}

pub async fn pause(
    api: &AdminApi,
    caller: Caller,
    _: pb::PauseReleaseRequest,
) -> Result<pb::ReleaseRollout, ApiError> {
    let db = &api.state.db;
    db.set_release_paused(true, &caller.username).await?;
    tracing::info!(by = %caller.username, "release rollout paused: no node starts an update");
    rollout(db).await
}

pub async fn resume(
    api: &AdminApi,
    caller: Caller,
    _: pb::ResumeReleaseRequest,
) -> Result<pb::ReleaseRollout, ApiError> {
    let db = &api.state.db;
    db.set_release_paused(false, &caller.username).await?;
    tracing::info!(by = %caller.username, "release rollout resumed");
    rollout(db).await
}

pub async fn rollback(
    api: &AdminApi,
    caller: Caller,
    _: pb::RollbackReleaseRequest,
) -> Result<pb::ReleaseRollout, ApiError> {
    let db = &api.state.db;
    let r = db
        .roll_back_release(&caller.username)
        .await
        .map_err(|e| match e {
            ums_db::DbError::Conflict(m) => {
                ApiError::FailedPrecondition(format!("rollback refused: {m}"))
            }
            e => e.into(),
        })?;
    tracing::info!(
        by = %caller.username,
        to = r.rollback_to,
        from = r.rollback_from,
        "release rolled back: nodes on a newer revision switch back"
    );
    rollout(db).await
}

pub async fn configure(
    api: &AdminApi,
    _: Caller,
    r: pb::ConfigureReleaseRequest,
) -> Result<pb::ReleaseRollout, ApiError> {
    let db = &api.state.db;
    db.set_release_concurrency(r.concurrency).await?;
    rollout(db).await
}

pub async fn log(
    api: &AdminApi,
    _: Caller,
    r: pb::ReleaseLogRequest,
) -> Result<pb::ReleaseLogResponse, ApiError> {
    let limit = if r.limit == 0 {
        200
    } else {
        r.limit.min(10_000)
    };
    let node = Some(r.node_id.as_str()).filter(|n| !n.is_empty());
    let rows = api.state.db.release_log(node, limit).await?;
    Ok(pb::ReleaseLogResponse {
        entries: rows
            .into_iter()
            .map(|e| pb::ReleaseLogEntry {
                at_ms: e.at,
                node_id: e.node_id,
                revision: e.revision.max(0) as u64,
                step: e.step,
                detail: e.detail,
            })
            .collect(),
    })
}
