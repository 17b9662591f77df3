//! The server's heartbeat: every `heartbeat` it writes its registry entry (on the database's
//! clock), reads the registry into the running-servers list brokers follow and the swp-auth
//! processes Shared Workplace logins go to, notices the
//! database going away and coming back, and takes part in the scheduler lease. On stop it
//! marks itself stopped and gives the lease up.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use ums_db::Db;

use crate::network::registry::{running_servers, running_swp_auth};
use crate::network::{Network, SCHEDULER, stopped, update};
use crate::state::AppState;

/// Jobs sent to a device without a result after this long are failed by the scheduler.
const JOB_TIMEOUT_MS: i64 = 24 * 3600 * 1000;

/// How often an unavailable server asks its database whether it is back.
const RECHECK_UNAVAILABLE: Duration = Duration::from_millis(200);

/// Runs until `stop` flips.
pub async fn run(state: Arc<AppState>, stop: watch::Receiver<bool>) {
    let network = state.network.clone();
    let stopping = stopped(stop);
    tokio::pin!(stopping);
    let heartbeat_every = network.config.heartbeat;
    let mut tick = tokio::time::interval(heartbeat_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sweep = std::time::Instant::now() - Duration::from_secs(60);
    loop {
        // While the database is unreachable it is asked again more often than a heartbeat
        // goes out, so devices are served again soon after it is back.
        let recheck = async {
            if network.available() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(RECHECK_UNAVAILABLE).await;
        };
        tokio::select! {
            _ = tick.tick() => {}
            () = recheck => {}
            () = &mut stopping => break,
        }
        let db = &state.db;
        let beat = tokio::time::timeout(heartbeat_every * 3, async {
            let schema = db
                .schema_version()
                .await?
                .map(|v| v.to_string())
                .unwrap_or_default();
            db.heartbeat(&network.own_row(&schema)).await?;
            db.list_processes().await
        })
        .await;
        match beat {
            Ok(Ok((rows, now))) => {
                if !network.set_available(true) {
                    tracing::info!("the database is reachable again: serving");
                }
                let silent = network.config.silent_after.as_millis() as i64;
                network.set_servers(running_servers(&rows, now, silent));
                state.swp.set_registry(running_swp_auth(&rows, now, silent));
                update_step(&network, db, &rows, now, &state.info.auto_backup).await;
                follow_update_mode(&state).await;
            }
            Ok(Err(e)) => unavailable(&network, &e.to_string()),
            // SQLite is a file of this server's own: a heartbeat that waits for the write lock
            // while a storm of devices is being committed is busy, not cut off, and refusing
            // those devices would only make them come back again.
            Err(_) if db.backend() == ums_db::Backend::Sqlite => {
                tracing::warn!(
                    "the heartbeat waited more than {} ms for the database (busy): still serving",
                    (heartbeat_every * 3).as_millis()
                );
            }
            Err(_) => unavailable(&network, "the database did not answer in time"),
        }
        if network.available() {
            scheduler_step(&network, db, &mut last_sweep).await;
        }
    }
    let db = &state.db;
    if network.is_scheduler() {
        let _ = db.release_lease(SCHEDULER, &network.process_id).await;
    }
    let _ = db.set_process_status(&network.process_id, "stopped").await;
    network.processes_changed(db).await;
}

/// Follows a schema update: the mode this server reports (`update` while versions are mixed or
/// steps wait), pending steps that another server applied, and, on the scheduler, the contract
/// steps once no server needs the older schema.
async fn update_step(
    network: &Arc<Network>,
    db: &Db,
    rows: &[ums_db::network::ProcessRow],
    now: i64,
    auto_backup: &crate::backup::AutoBackup,
) {
    let mut pending = network.pending();
    // Another server may have applied them; the scheduler applies the contract steps once no
    // server needs the older schema. One read of the schema version serves both.
    if !pending.is_empty()
        && let Ok(Some(current)) = db.schema_version().await
    {
        pending.retain(|p| p.version > current);
        if pending.is_empty() {
            tracing::info!(schema = %current, "every schema step of this build is applied");
        }
        network.set_pending(pending.clone());
        if let Some(next) = pending.first()
            && network.is_scheduler()
            && update::blockers(
                rows,
                now,
                update::CONTRACT_SETTLE,
                &network.process_id,
                next.version,
            )
            .is_empty()
            && network.begin_contract()
        {
            // Beside the heartbeat: the backup before the steps may take long (it holds the
            // file store), and the heartbeat must go on meanwhile.
            let (network, db, auto_backup) = (network.clone(), db.clone(), auto_backup.clone());
            tokio::spawn(async move {
                match update::contract(&db, &network.process_id, current, &auto_backup).await {
                    Ok(outcome) => {
                        network.set_pending(outcome.pending);
                        network.processes_changed(&db).await;
                    }
                    Err(e) => tracing::error!(error = %format!("{e:#}"), "contract steps failed"),
                }
                network.end_contract();
            });
        }
    }
    let mixed = update::versions_mixed(rows, now, network.config.silent_after)
        || !network.pending().is_empty()
        || network.local_copy().is_some();
    if network.set_update_mode(mixed) != mixed {
        let (mode, detail) = if mixed {
            ("update", "versions are mixed or schema steps wait")
        } else {
            ("normal", "every server runs on the current schema")
        };
        update::log(
            db,
            &format!("server/{}", network.process_id),
            "mode",
            &format!("{mode}: {detail}"),
            true,
        )
        .await;
    }
}

/// In update mode: once the shared database is at the schema the local copy waits for (the
/// last server migrated it), replays the journal and serves from the shared database again.
async fn follow_update_mode(state: &AppState) {
    // Only the target: the copy itself is removed once no one holds it.
    let Some(target) = state.network.local_copy().map(|c| c.target) else {
        return;
    };
    let Ok(Some(schema)) = state.db.schema_version().await else {
        return;
    };
    if schema < target {
        return;
    }
    let why = format!("the shared database is at schema {schema}");
    if let Err(e) = state.leave_update_mode(&why).await {
        tracing::warn!(error = %e, "update mode: the journal could not be replayed yet");
    }
}

fn unavailable(network: &Network, why: &str) {
    if network.set_available(false) {
        tracing::error!(error = %why, "the database is unreachable: reporting this server unavailable");
    }
    // Without the database the lease cannot be renewed: stop acting as the scheduler at once.
    network.set_scheduler_fence(0);
}

async fn scheduler_step(network: &Network, db: &Db, last_sweep: &mut std::time::Instant) {
    let ttl = network.config.lease.as_millis() as i64;
    match db.acquire_lease(SCHEDULER, &network.process_id, ttl).await {
        Ok(Some(fence)) => {
            let before = network.set_scheduler_fence(fence);
            if before != fence {
                tracing::info!(fence, "this server now runs the network scheduler");
            }
            if last_sweep.elapsed() >= Duration::from_secs(2) {
                *last_sweep = std::time::Instant::now();
                match db
                    .scheduler_sweep(
                        SCHEDULER,
                        fence,
                        network.config.silent_after.as_millis() as i64,
                        JOB_TIMEOUT_MS,
                    )
                    .await
                {
                    Ok(Some((stopped, expired))) if stopped + expired > 0 => {
                        tracing::info!(
                            stopped,
                            expired,
                            "scheduler: marked silent processes stopped and late jobs failed"
                        );
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        tracing::warn!(fence, "scheduler: the lease moved to another server");
                        network.set_scheduler_fence(0);
                    }
                    Err(e) => tracing::warn!(error = %e, "scheduler sweep failed"),
                }
            }
        }
        Ok(None) => {
            if network.set_scheduler_fence(0) != 0 {
                tracing::warn!("this server no longer runs the network scheduler");
            }
        }
        Err(e) => {
            network.set_scheduler_fence(0);
            tracing::warn!(error = %e, "scheduler lease");
        }
    }
}
