//! Schema updates as this server takes part in them: what it migrates when it starts, whether
//! the contract steps may run, and the mode it reports.
//!
//! A start applies the expand steps it knows at once (older binaries keep working on them). A
//! contract step waits until no server that needs the older schema is left: every server seen
//! in the registry within the settle window must run on the contracted schema. A major step is
//! taken only by a server that is alone in the network (an update with downtime); otherwise the
//! start is refused, naming the servers still running.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context;
use ums_db::network::ProcessRow;
use ums_db::{Db, MigrateOutcome, Pending, RunOptions, SchemaVersion};

/// How long a server that left the registry's "running" state still counts as needing its
/// schema: a server restarted by its watchdog mid-rollout comes back within it.
pub const CONTRACT_SETTLE: Duration = Duration::from_secs(30);

/// What runs before this server changes the schema of a database that holds data: the
/// automatic backup (`crate::backup::AutoBackup`). `from` is the schema now, `steps` the
/// versions the migration is about to apply, oldest first. An error stops the migration.
pub trait BeforeMigrate: Sync {
    fn before_migrate<'a>(
        &'a self,
        from: SchemaVersion,
        steps: &'a [SchemaVersion],
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>>;
}

/// For a migration whose backup its caller has just taken.
pub struct BackupTaken;

impl BeforeMigrate for BackupTaken {
    fn before_migrate<'a>(
        &'a self,
        _: SchemaVersion,
        _: &'a [SchemaVersion],
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>> {
        Box::pin(async { Ok(()) })
    }
}

/// The steps a migration with `opts` applies to a database at `current`, as
/// `ums_migrations::run_with` takes them: none on a database newer than this build.
pub fn steps_to_apply(current: Option<SchemaVersion>, opts: &RunOptions) -> Vec<SchemaVersion> {
    if current.is_some_and(|c| c > ums_db::schema::latest()) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut at = current;
    for m in ums_db::schema::migrations() {
        if current.is_some_and(|c| c >= m.version) {
            continue;
        }
        let major_step = at.is_some_and(|a| m.version.major > a.major);
        if (m.phase == ums_db::Phase::Contract && !opts.contract)
            || (major_step && opts.stop_at_major)
        {
            break;
        }
        out.push(m.version);
        at = Some(m.version);
    }
    out
}

/// Migrates with `opts`, running `before` first when the database already has a schema (it
/// holds data) and the migration would apply a step to it. A fresh database is migrated
/// without it.
pub async fn migrate_guarded(
    db: &Db,
    opts: &RunOptions,
    before: &dyn BeforeMigrate,
) -> anyhow::Result<MigrateOutcome> {
    let current = db
        .schema_version()
        .await
        .context("read the database schema version")?;
    if let Some(from) = current {
        let steps = steps_to_apply(current, opts);
        if !steps.is_empty() {
            before.before_migrate(from, &steps).await?;
        }
    }
    Ok(db.migrate(opts).await?)
}

/// The name this build reports: crate version, plus the test release it plays, if any.
pub fn binary_version() -> String {
    ums_db::schema::binary_version(env!("CARGO_PKG_VERSION"))
}

/// The schema versions this build runs on, as the registry records them.
pub fn schema_range() -> (SchemaVersion, SchemaVersion) {
    ums_db::schema::supported_range()
}

/// The migration options of this server.
pub fn options(process_id: &str, contract: bool) -> RunOptions {
    RunOptions {
        contract,
        binary_version: binary_version(),
        applied_by: format!("server/{process_id}"),
        stop_at_major: !contract,
    }
}

/// The servers that still need a schema older than `version`: seen within `settle` (or
/// running) and reporting a range that ends before it. Rows without a range predate the
/// migration service and block too.
pub fn blockers<'a>(
    rows: &'a [ProcessRow],
    now: i64,
    settle: Duration,
    own_id: &str,
    version: SchemaVersion,
) -> Vec<&'a ProcessRow> {
    let settle = settle.as_millis() as i64;
    rows.iter()
        .filter(|r| r.kind == "server" && r.id != own_id)
        .filter(|r| r.status != "stopped" || now - r.last_heartbeat <= settle)
        .filter(|r| {
            r.schema_max
                .as_deref()
                .and_then(|v| v.parse::<SchemaVersion>().ok())
                .is_none_or(|max| max < version)
        })
        .collect()
}

/// The servers running now (status running or stopping, heartbeat within `silent`).
pub fn running_others<'a>(
    rows: &'a [ProcessRow],
    now: i64,
    silent: Duration,
    own_id: &str,
) -> Vec<&'a ProcessRow> {
    let silent = silent.as_millis() as i64;
    rows.iter()
        .filter(|r| r.kind == "server" && r.id != own_id && r.status != "stopped")
        .filter(|r| now - r.last_heartbeat <= silent)
        .collect()
}

/// The other servers running now whose release does not reach `version`: a major step to it
/// waits for them, with the servers on the new release in update mode.
pub fn on_older_release<'a>(
    rows: &'a [ProcessRow],
    now: i64,
    silent: Duration,
    own_id: &str,
    version: SchemaVersion,
) -> Vec<&'a ProcessRow> {
    running_others(rows, now, silent, own_id)
        .into_iter()
        .filter(|r| {
            r.schema_max
                .as_deref()
                .and_then(|v| v.parse::<SchemaVersion>().ok())
                .is_none_or(|max| max < version)
        })
        .collect()
}

/// Whether versions are mixed: servers running with different schema ranges.
pub fn versions_mixed(rows: &[ProcessRow], now: i64, silent: Duration) -> bool {
    let silent = silent.as_millis() as i64;
    let mut maxes = rows
        .iter()
        .filter(|r| r.kind == "server" && r.status != "stopped")
        .filter(|r| now - r.last_heartbeat <= silent)
        .map(|r| r.schema_max.as_deref().unwrap_or(""));
    let Some(first) = maxes.next() else {
        return false;
    };
    maxes.any(|m| m != first)
}

/// Whether `r` is a server running now (status not stopped, heartbeat within `silent`).
pub fn running_server(r: &ProcessRow, now: i64, silent: Duration) -> bool {
    r.kind == "server"
        && r.status != "stopped"
        && now - r.last_heartbeat <= silent.as_millis() as i64
}

/// How binaries compare: the newest schema they run on, then the numbers of the version
/// (`0.10.0` after `0.9.1`), then the version's text (a build tag after none).
fn binary_key(r: &ProcessRow) -> (Option<SchemaVersion>, Vec<u64>, &str) {
    let numbers = r
        .version
        .split(['+', '-'])
        .next()
        .unwrap_or("")
        .split('.')
        .map(|n| n.parse::<u64>().unwrap_or(0))
        .collect();
    (
        r.schema_max.as_deref().and_then(|v| v.parse().ok()),
        numbers,
        r.version.as_str(),
    )
}

/// How far a rollout is: the newest binary among the running servers, and which of them run
/// it (`updated[i]` for `rows[i]`; false for every process that is not a running server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    pub newest: String,
    pub updated: Vec<bool>,
    pub servers_updated: usize,
    pub servers_running: usize,
}

impl Rollout {
    /// "2 of 3 servers updated".
    pub fn summary(&self) -> String {
        format!(
            "{} of {} servers updated",
            self.servers_updated, self.servers_running
        )
    }
}

/// Reads the rollout off the registry.
pub fn rollout(rows: &[ProcessRow], now: i64, silent: Duration) -> Rollout {
    let newest = rows
        .iter()
        .filter(|r| running_server(r, now, silent))
        .max_by(|a, b| binary_key(a).cmp(&binary_key(b)));
    let newest_key = newest.map(binary_key);
    let updated: Vec<bool> = rows
        .iter()
        .map(|r| running_server(r, now, silent) && Some(binary_key(r)) == newest_key)
        .collect();
    Rollout {
        newest: newest.map(|r| r.version.clone()).unwrap_or_default(),
        servers_updated: updated.iter().filter(|u| **u).count(),
        servers_running: rows
            .iter()
            .filter(|r| running_server(r, now, silent))
            .count(),
        updated,
    }
}

/// A step this build knows that the database lacks, and what holds it back ("" if nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub version: SchemaVersion,
    pub name: String,
    pub phase: String,
    pub waits_for: String,
}

/// The steps that wait: those this build knows beyond `current`, each with what holds it back
/// (an earlier step, the servers that need the older schema, the servers still running beside
/// a major step), then the newer schemas only other running servers know.
pub fn waiting(
    rows: &[ProcessRow],
    now: i64,
    silent: Duration,
    own_id: &str,
    current: Option<SchemaVersion>,
) -> Vec<Waiting> {
    let mut out: Vec<Waiting> = Vec::new();
    let mut at = current;
    for m in ums_db::schema::migrations() {
        if current.is_some_and(|c| c >= m.version) {
            continue;
        }
        let waits_for = if let Some(before) = out.first() {
            format!("step {} before it", before.version)
        } else if at.is_some_and(|a| m.version.major > a.major) {
            let others = running_others(rows, now, silent, own_id);
            if others.is_empty() {
                String::new()
            } else {
                format!(
                    "a major step runs only on a server alone in the network; still running: {}",
                    describe(&others)
                )
            }
        } else if m.phase == ums_db::Phase::Contract {
            let waiting = blockers(rows, now, CONTRACT_SETTLE, own_id, m.version);
            if waiting.is_empty() {
                String::new()
            } else {
                format!("servers that need the older schema: {}", describe(&waiting))
            }
        } else {
            String::new()
        };
        out.push(Waiting {
            version: m.version,
            name: m.name.to_owned(),
            phase: m.phase.as_str().to_owned(),
            waits_for,
        });
        at = Some(m.version);
    }
    let known = ums_db::schema::latest().max(current.unwrap_or(ums_db::schema::latest()));
    let mut newer: Vec<(SchemaVersion, &ProcessRow)> = rows
        .iter()
        .filter(|r| running_server(r, now, silent))
        .filter_map(|r| Some((r.schema_max.as_deref()?.parse().ok()?, r)))
        .filter(|(v, _)| *v > known)
        .collect();
    newer.sort_by_key(|(v, _)| *v);
    if let Some((v, _)) = newer.last() {
        let by: Vec<&ProcessRow> = newer
            .iter()
            .filter(|(w, _)| w == v)
            .map(|(_, r)| *r)
            .collect();
        out.push(Waiting {
            version: *v,
            name: String::new(),
            phase: "unknown".into(),
            waits_for: format!(
                "steps only newer servers know ({}); ask one of them for the details",
                describe(&by)
            ),
        });
    }
    out
}

/// "server-2 (10.0.0.2, 0.3.0, schema up to 1.4)" for messages.
pub fn describe(rows: &[&ProcessRow]) -> String {
    rows.iter()
        .map(|r| {
            format!(
                "{} ({}, {}, schema up to {})",
                r.id,
                r.host,
                r.version,
                r.schema_max.as_deref().unwrap_or("1.3")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_steps(db_from: Option<SchemaVersion>, outcome: &MigrateOutcome) -> String {
    format!(
        "{} -> {} ({})",
        db_from.map_or_else(|| "empty".into(), |v| v.to_string()),
        outcome.to,
        outcome
            .applied
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Brings the schema as far as this server may at start: expand steps always; a pending major
/// step only when every other running server runs this release (in update mode; else this
/// server goes into update mode itself, see [`update_mode_target`]); pending contract steps
/// when no server needs the older schema. Each step is logged in the update log.
pub async fn migrate_at_start(
    db: &Db,
    process_id: &str,
    silent: Duration,
    before: &dyn BeforeMigrate,
) -> anyhow::Result<MigrateOutcome> {
    let actor = format!("server/{process_id}");
    let first = migrate_guarded(db, &options(process_id, false), before)
        .await
        .context("migrate the database schema")?;
    if !first.applied.is_empty() {
        log(
            db,
            &actor,
            "migrate",
            &describe_steps(first.from, &first),
            true,
        )
        .await;
    }
    let Some(next) = first.pending.first().cloned() else {
        return Ok(first);
    };
    let (rows, now) = db.list_processes().await?;
    if next.version.major > first.to.major {
        // Servers that run this release already serve devices from their local copies (update
        // mode): the shared database is this server's alone. Those still on the older release
        // use it, so this server joins them in update mode instead, until the last server
        // starts on this release and migrates.
        let older = on_older_release(&rows, now, silent, process_id, next.version);
        if older.is_empty() {
            return contract(db, process_id, first.to, before).await;
        }
        log(
            db,
            &actor,
            "update-mode",
            &format!(
                "schema {} -> {} is a major step: serving devices from a local copy until the last server migrates; still on the older release: {}",
                first.to,
                next.version,
                describe(&older)
            ),
            true,
        )
        .await;
        return Ok(first);
    }
    let waiting = blockers(&rows, now, CONTRACT_SETTLE, process_id, next.version);
    if waiting.is_empty() {
        return contract(db, process_id, first.to, before).await;
    }
    log(
        db,
        &actor,
        "contract-waits",
        &format!(
            "{} ({}) waits for {}",
            next.version,
            next.name,
            describe(&waiting)
        ),
        true,
    )
    .await;
    Ok(first)
}

/// The schema version a start waits for in update mode: a major step [`migrate_at_start`] left
/// pending because servers on the older release still use the shared database.
pub fn update_mode_target(outcome: &MigrateOutcome) -> Option<SchemaVersion> {
    outcome
        .pending
        .iter()
        .find(|p| p.version.major > outcome.to.major)
        .map(|p| p.version)
}

/// What an administrator's change gets in update mode.
pub fn refused_in_update_mode(target: SchemaVersion) -> crate::error::ApiError {
    crate::error::ApiError::FailedPrecondition(format!(
        "this server is in update mode: the shared database is being updated to schema {target} and this server serves devices from a local copy, so changes are refused (they would be lost). Make the change once the update is over (`umsctl update end-mode` ends update mode on a server that did not reconnect)"
    ))
}

/// What a device gets for what update mode cannot do (a registration of an unknown device, a
/// user login): maintenance, and when to retry.
pub fn maintenance(what: &str) -> crate::error::ApiError {
    crate::error::ApiError::Unavailable(format!(
        "maintenance: the management network is being updated and {what} waits until it is over; retry in 60 seconds"
    ))
}

/// Applies every pending step, contract and major ones included, and logs it.
pub async fn contract(
    db: &Db,
    process_id: &str,
    from: SchemaVersion,
    before: &dyn BeforeMigrate,
) -> anyhow::Result<MigrateOutcome> {
    let actor = format!("server/{process_id}");
    match migrate_guarded(db, &options(process_id, true), before).await {
        Ok(outcome) => {
            if !outcome.applied.is_empty() {
                log(
                    db,
                    &actor,
                    "contract",
                    &describe_steps(Some(from), &outcome),
                    true,
                )
                .await;
            }
            Ok(outcome)
        }
        Err(e) => {
            log(db, &actor, "contract", &format!("{e:#}"), false).await;
            Err(e).context("apply the contract steps")
        }
    }
}

/// Records a step; a failure to record is logged, not fatal.
pub async fn log(db: &Db, actor: &str, step: &str, detail: &str, ok: bool) {
    if ok {
        tracing::info!(step, detail, "update");
    } else {
        tracing::error!(step, detail, "update step failed");
    }
    if let Err(e) = db.log_update_step(actor, step, detail, ok).await {
        tracing::warn!(error = %e, "could not record the update step");
    }
}

/// The pending steps as the admin API shows them.
pub fn pending_text(p: &Pending) -> String {
    format!("{} {} ({})", p.version, p.name, p.phase)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, status: &str, beat: i64, max: Option<&str>) -> ProcessRow {
        ProcessRow {
            id: id.into(),
            kind: "server".into(),
            status: status.into(),
            last_heartbeat: beat,
            schema_max: max.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn contract_waits_for_servers_that_need_the_older_schema() {
        let v = SchemaVersion::new(1, 6);
        let now = 100_000;
        let rows = vec![
            row("me", "running", now, Some("1.6")),
            row("new", "running", now, Some("1.6")),
            row("old", "running", now, Some("1.4")),
            // Stopped a moment ago: its watchdog may start it again on the old binary.
            row("restarting", "stopped", now - 1_000, Some("1.4")),
            // Stopped long ago: it does not hold the update back.
            row("gone", "stopped", now - 60_000, Some("1.4")),
            row("ancient", "running", now, None),
        ];
        let ids: Vec<&str> = blockers(&rows, now, CONTRACT_SETTLE, "me", v)
            .iter()
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(ids, ["old", "restarting", "ancient"]);
        assert!(versions_mixed(&rows, now, Duration::from_secs(5)));
        assert!(!versions_mixed(&rows[..2], now, Duration::from_secs(5)));
        let others: Vec<&str> = running_others(&rows, now, Duration::from_secs(5), "me")
            .iter()
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(others, ["new", "old", "ancient"]);
    }

    #[test]
    fn a_major_step_waits_in_update_mode_for_servers_on_the_older_release() {
        let major = SchemaVersion::new(2, 0);
        let now = 100_000;
        let silent = Duration::from_secs(5);
        let rows = vec![
            row("me", "running", now, Some("2.0")),
            // On the new release, serving from its local copy.
            row("copy", "running", now, Some("2.0")),
            row("old", "running", now, Some("1.7")),
            // Stopped to be upgraded: it no longer uses the shared database.
            row("upgrading", "stopped", now - 1_000, Some("1.7")),
        ];
        let ids = |rows: &[ProcessRow]| -> Vec<String> {
            on_older_release(rows, now, silent, "me", major)
                .iter()
                .map(|r| r.id.clone())
                .collect()
        };
        assert_eq!(ids(&rows), ["old"], "this server goes into update mode");
        assert!(
            ids(&[rows[0].clone(), rows[1].clone(), rows[3].clone()]).is_empty(),
            "the last server on the new release migrates"
        );

        let outcome =
            |to: SchemaVersion, pending: Vec<(SchemaVersion, ums_db::Phase)>| MigrateOutcome {
                from: Some(to),
                to,
                applied: Vec::new(),
                pending: pending
                    .into_iter()
                    .map(|(version, phase)| Pending {
                        version,
                        name: "step",
                        phase,
                    })
                    .collect(),
                ahead: false,
            };
        let released = SchemaVersion::new(1, 7);
        assert_eq!(
            update_mode_target(&outcome(released, vec![(major, ums_db::Phase::Contract)])),
            Some(major)
        );
        assert_eq!(
            update_mode_target(&outcome(
                released,
                vec![(SchemaVersion::new(1, 8), ums_db::Phase::Contract)]
            )),
            None,
            "a minor contract step waits without update mode"
        );
        assert_eq!(update_mode_target(&outcome(major, Vec::new())), None);
    }
}
