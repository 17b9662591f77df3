//! The migration service as administrators call it: the update's status (schema, history,
//! versions and modes, how many servers are updated, the steps that wait), the pre-flight plan,
//! the update log, and running the waiting steps now.

use ums_db::SchemaVersion;
use ums_db::network::ProcessRow;
use ums_proto::admin::v1 as pb;
use ums_proto::network::v1 as cpb;

use super::check::{ago, orphaned};
use super::{AdminApi, Caller};
use crate::error::ApiError;
use crate::network::update;

/// A backup older than this is reported by the plan.
const BACKUP_WITHIN_MS: i64 = 24 * 3600 * 1000;
/// Log entries answered when the request names no limit, and at most.
const DEFAULT_LOG: u32 = 100;
const MAX_LOG: u32 = 10_000;

/// What the registry holds now: the rows (with schema ranges), the administrators' view of
/// them (status after the silence timeout, clock skew flagged) and the database's clock.
struct Registry {
    rows: Vec<ProcessRow>,
    infos: Vec<cpb::ProcessInfo>,
    now: i64,
}

async fn registry(api: &AdminApi) -> Result<Registry, ApiError> {
    let (rows, now) = api.state.db.list_processes().await?;
    let infos = api.state.network.processes(&api.state.db).await?;
    Ok(Registry { rows, infos, now })
}

fn version_text(v: Option<SchemaVersion>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

async fn status_of(api: &AdminApi) -> Result<pb::UpdateStatus, ApiError> {
    let (db, net) = (&api.state.db, &api.state.network);
    let current = db.schema_version().await?;
    let history = db.schema_history().await?;
    let reg = registry(api).await?;
    let silent = net.config.silent_after;
    let rollout = update::rollout(&reg.rows, reg.now, silent);
    let waiting = update::waiting(&reg.rows, reg.now, silent, &net.process_id, current);
    let processes = reg
        .rows
        .iter()
        .zip(&rollout.updated)
        .map(|(r, updated)| {
            let status = reg
                .infos
                .iter()
                .find(|i| i.id == r.id)
                .map(|i| i.status.clone())
                .unwrap_or_else(|| r.status.clone());
            pb::UpdateProcess {
                id: r.id.clone(),
                kind: r.kind.clone(),
                host: r.host.clone(),
                version: r.version.clone(),
                status,
                mode: r.mode.clone(),
                schema_max: if r.kind == "server" {
                    r.schema_max.clone().unwrap_or_default()
                } else {
                    String::new()
                },
                updated: *updated,
            }
        })
        .collect();
    let in_progress = update::versions_mixed(&reg.rows, reg.now, silent) || !waiting.is_empty();
    Ok(pb::UpdateStatus {
        schema_version: version_text(current),
        answered_by: net.process_id.clone(),
        binary_version: net.binary_version.clone(),
        known_schema: net.schema_range.1.to_string(),
        history: history
            .into_iter()
            .map(|h| pb::SchemaStep {
                version: h.version.to_string(),
                name: h.name.unwrap_or_default(),
                phase: h.phase.map(|p| p.as_str().to_owned()).unwrap_or_default(),
                applied_by: h.applied_by.unwrap_or_default(),
                binary_version: h.binary_version.unwrap_or_default(),
                applied_at_ms: h.applied_at,
                duration_ms: h.duration_ms.unwrap_or(0),
            })
            .collect(),
        processes,
        servers_updated: rollout.servers_updated as u32,
        servers_running: rollout.servers_running as u32,
        newest_version: rollout.newest.clone(),
        pending: waiting
            .into_iter()
            .map(|w| pb::PendingStep {
                version: w.version.to_string(),
                name: w.name,
                phase: w.phase,
                waits_for: w.waits_for,
            })
            .collect(),
        in_progress,
        summary: rollout.summary(),
    })
}

pub async fn status(
    api: &AdminApi,
    _: Caller,
    _: pb::UpdateStatusRequest,
) -> Result<pb::UpdateStatus, ApiError> {
    status_of(api).await
}

fn check(checked: &str, status: &str, result: String, fix: impl Into<String>) -> pb::PlanCheck {
    pb::PlanCheck {
        checked: checked.into(),
        status: status.into(),
        result,
        fix: fix.into(),
    }
}

/// "3 h ago" or "2 days ago".
fn age(now: i64, at: i64) -> String {
    let days = (now - at).max(0) / (24 * 3600 * 1000);
    if days >= 2 {
        format!("{days} days ago")
    } else {
        ago(now, at)
    }
}

pub async fn plan(
    api: &AdminApi,
    _: Caller,
    _: pb::UpdatePlanRequest,
) -> Result<pb::UpdatePlan, ApiError> {
    let (db, net) = (&api.state.db, &api.state.network);
    let current = db.schema_version().await?;
    let reg = registry(api).await?;
    let silent = net.config.silent_after;
    let mut checks = Vec::new();

    // Versions: every running server on one binary, the other components beside them.
    let rollout = update::rollout(&reg.rows, reg.now, silent);
    let behind: Vec<&ProcessRow> = reg
        .rows
        .iter()
        .zip(&rollout.updated)
        .filter(|(r, updated)| update::running_server(r, reg.now, silent) && !**updated)
        .map(|(r, _)| r)
        .collect();
    if behind.is_empty() {
        checks.push(check(
            "versions",
            "ok",
            format!(
                "{}: every running server runs {}",
                rollout.summary(),
                if rollout.newest.is_empty() {
                    "?"
                } else {
                    &rollout.newest
                }
            ),
            "",
        ));
    } else {
        checks.push(check(
            "versions",
            "warn",
            format!(
                "{}; on an older binary than {}: {}",
                rollout.summary(),
                rollout.newest,
                update::describe(&behind)
            ),
            "an update is in progress: drain and restart each of these servers on the new release, one at a time",
        ));
    }
    let others: Vec<String> = reg
        .infos
        .iter()
        .filter(|p| p.kind != "server" && p.status == "running" && !p.version.is_empty())
        .filter(|p| p.version != rollout.newest)
        .map(|p| format!("{} {} ({})", p.kind, p.id, p.version))
        .collect();
    if !others.is_empty() && !rollout.newest.is_empty() {
        checks.push(check(
            "component versions",
            "warn",
            format!("not on {}: {}", rollout.newest, others.join(", ")),
            "update brokers, watchdogs and swp-auth once the servers run the new release",
        ));
    }

    // Schema: what this server knows against what the database holds, and what waits.
    let waiting = update::waiting(&reg.rows, reg.now, silent, &net.process_id, current);
    let known = net.schema_range.1;
    let db_text = version_text(current);
    if let Some(c) = current
        && c > known
    {
        checks.push(check(
            "schema",
            "warn",
            format!("the database is at {c}, newer than {known} that this server knows; it runs because only expand steps lie beyond"),
            "restart this server on the new release",
        ));
    }
    let major_blocked = waiting
        .iter()
        .find(|w| current.is_some_and(|c| w.version.major > c.major) && !w.waits_for.is_empty());
    if let Some(w) = major_blocked {
        checks.push(check(
            "schema",
            "fail",
            format!("{} ({}) waits: {}", w.version, w.name, w.waits_for),
            "a major update runs with downtime: stop the other servers (`umsctl network stop ID`), then restart one server on the new release; it migrates, then start the others on it",
        ));
    } else if waiting.is_empty() {
        if current.is_none_or(|c| c <= known) {
            checks.push(check(
                "schema",
                "ok",
                format!("database at {db_text}; every step this server knows is applied"),
                "",
            ));
        }
    } else {
        let list: Vec<String> = waiting
            .iter()
            .map(|w| {
                let what = format!("{} {} ({})", w.version, w.name, w.phase);
                if w.waits_for.is_empty() {
                    what
                } else {
                    format!("{what}, waits for {}", w.waits_for)
                }
            })
            .collect();
        checks.push(check(
            "schema",
            "warn",
            format!("database at {db_text}; steps that wait: {}", list.join("; ")),
            "finish the rollout: contract steps run once every server runs the new release (or with `umsctl update apply`)",
        ));
    }

    // Clocks.
    let running: Vec<&cpb::ProcessInfo> =
        reg.infos.iter().filter(|p| p.status == "running").collect();
    let skewed: Vec<String> = running
        .iter()
        .filter(|p| p.clock_skewed)
        .map(|p| {
            format!(
                "{} {} on {} ({:+.0} s)",
                p.kind,
                p.id,
                p.host,
                p.clock_offset_ms as f64 / 1000.0
            )
        })
        .collect();
    if skewed.is_empty() {
        let worst = running
            .iter()
            .map(|p| p.clock_offset_ms.abs())
            .max()
            .unwrap_or(0);
        checks.push(check(
            "clocks",
            "ok",
            format!(
                "{} running processes within 60 s of each other (largest offset {worst} ms)",
                running.len()
            ),
            "",
        ));
    } else {
        checks.push(check(
            "clocks",
            "fail",
            format!("more than 60 s off: {}", skewed.join(", ")),
            "synchronise those hosts' clocks (chrony or systemd-timesyncd) before the update: the contract step's wait and the leases compare heartbeats",
        ));
    }

    // Orphaned registry entries hold a contract step back (a stopped server counts for a while).
    let orphans = orphaned(&reg.infos, reg.now);
    if orphans.is_empty() {
        checks.push(check(
            "registry",
            "ok",
            format!("{} entries, none orphaned", reg.infos.len()),
            "",
        ));
    } else {
        for o in orphans {
            checks.push(check(
                "registry",
                "warn",
                format!("{} {}: {}", o.process.kind, o.process.id, o.result),
                o.fix,
            ));
        }
    }

    // The most recent backup.
    let backup_fix = "take one before the update: `ums-server backup` on a server (the archive goes to <data_dir>/backups, mode 0600)";
    match db.last_update_step("backup").await? {
        None => checks.push(check(
            "backup",
            "warn",
            "no backup recorded".into(),
            backup_fix,
        )),
        Some(b) if reg.now - b.at > BACKUP_WITHIN_MS => checks.push(check(
            "backup",
            "warn",
            format!("the last one is {}: {}", age(reg.now, b.at), b.detail),
            backup_fix,
        )),
        Some(b) => checks.push(check(
            "backup",
            "ok",
            format!("{}: {}", age(reg.now, b.at), b.detail),
            "",
        )),
    }

    let count = |s: &str| checks.iter().filter(|c| c.status == s).count() as u32;
    Ok(pb::UpdatePlan {
        schema_version: db_text,
        answered_by: net.process_id.clone(),
        failed: count("fail"),
        warnings: count("warn"),
        checks,
    })
}

pub async fn log(
    api: &AdminApi,
    _: Caller,
    r: pb::UpdateLogRequest,
) -> Result<pb::UpdateLogResponse, ApiError> {
    let limit = match r.limit {
        0 => DEFAULT_LOG,
        n => n.min(MAX_LOG),
    };
    let rows = api.state.db.update_log(limit.into()).await?;
    Ok(pb::UpdateLogResponse {
        entries: rows
            .into_iter()
            .map(|r| pb::UpdateLogEntry {
                id: r.id,
                at_ms: r.at,
                actor: r.actor,
                step: r.step,
                detail: r.detail,
                outcome: r.outcome,
            })
            .collect(),
    })
}

pub async fn apply(
    api: &AdminApi,
    _: Caller,
    _: pb::UpdateApplyRequest,
) -> Result<pb::UpdateApplyResponse, ApiError> {
    let (db, net) = (&api.state.db, &api.state.network);
    let current = db
        .schema_version()
        .await?
        .ok_or_else(|| ApiError::Internal("the database has no schema".into()))?;
    let reg = registry(api).await?;
    let waiting = update::waiting(
        &reg.rows,
        reg.now,
        net.config.silent_after,
        &net.process_id,
        Some(current),
    );
    let mut applied = Vec::new();
    if let Some(first) = waiting.first() {
        if first.phase == "unknown" {
            return Err(ApiError::FailedPrecondition(format!(
                "this server ({}, schema up to {}) knows no step that waits: {}",
                net.binary_version, net.schema_range.1, first.waits_for
            )));
        }
        if !first.waits_for.is_empty() {
            return Err(ApiError::FailedPrecondition(format!(
                "step {} ({}, {}) cannot run yet: it waits for {}",
                first.version, first.name, first.phase, first.waits_for
            )));
        }
        // The backup first, so a failed one is the administrator's answer, with its cause.
        let opts = update::options(&net.process_id, true);
        if let Some(to) = update::steps_to_apply(Some(current), &opts).last() {
            api.state
                .info
                .auto_backup
                .before(current, *to)
                .await
                .map_err(|e| ApiError::FailedPrecondition(format!("{e:#}")))?;
        }
        let outcome = update::contract(db, &net.process_id, current, &update::BackupTaken)
            .await
            .map_err(ApiError::internal)?;
        applied = outcome.applied.iter().map(|v| v.to_string()).collect();
        net.set_pending(outcome.pending);
        net.processes_changed(db).await;
    }
    Ok(pb::UpdateApplyResponse {
        applied,
        status: Some(status_of(api).await?),
    })
}
