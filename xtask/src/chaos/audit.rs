//! The audit after a chaos run, read from PostgreSQL directly (not through the forwarder):
//! every acknowledged registration and job result present exactly once, no duplicate device,
//! the registry showing every process running, the file on every server and its bytes intact.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use ums_testkit::Postgres;

use super::Cluster;
use super::load::Ledger;

const DB: &str = "ums_chaos";

fn rows(pg: &Postgres, sql: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let out = pg
        .sql(DB, sql)
        .with_context(|| format!("audit query {sql}"))?;
    Ok(out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect())
}

/// Servers holding file `id` verified.
pub fn present_replicas(pg: &Postgres, id: i64) -> anyhow::Result<usize> {
    Ok(rows(
        pg,
        &format!("SELECT server_id FROM file_replicas WHERE file_id = {id} AND status = 'present'"),
    )?
    .len())
}

/// The scheduler lease's holder and fence, while it is valid.
pub fn lease(pg: &Postgres) -> anyhow::Result<Option<(String, i64)>> {
    let r = rows(
        pg,
        "SELECT holder, fence FROM leases WHERE name = 'scheduler' \
         AND expires_at > CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
    )?;
    Ok(r.first().and_then(|row| {
        let fence = row.get(1)?.trim().parse().ok()?;
        Some((row.first()?.clone(), fence))
    }))
}

/// The registry at the end of the run.
pub struct Registry {
    /// `kind id status` of every process.
    pub rows: Vec<String>,
    pub not_running: Vec<String>,
}

/// Waits up to `timeout` for every process of the registry to show as running (a restarted
/// one does at its first heartbeat).
pub fn registry(pg: &Postgres, timeout: Duration) -> anyhow::Result<Registry> {
    let read = || -> anyhow::Result<Registry> {
        let r = rows(
            pg,
            "SELECT kind, id, status FROM processes ORDER BY kind, id",
        )?;
        Ok(Registry {
            rows: r.iter().map(|row| row.join(" ")).collect(),
            not_running: r
                .iter()
                .filter(|row| row.get(2).map(String::as_str) != Some("running"))
                .map(|row| row.join(" "))
                .collect(),
        })
    };
    let mut last = read()?;
    let deadline = std::time::Instant::now() + timeout;
    while !last.not_running.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        last = read()?;
    }
    Ok(last)
}

/// What the audit found.
pub struct Audit {
    pub lost_registrations: usize,
    pub lost_job_results: usize,
    pub duplicate_devices: usize,
    pub files_verified: bool,
    pub file_problem: String,
}

pub fn audit(
    pg: &Postgres,
    prefix: &str,
    ledger: &Ledger,
    file_id: i64,
    bytes: &[u8],
    cluster: &Cluster,
) -> anyhow::Result<Audit> {
    // Every acknowledged registration: its unit once, with the device id it was given.
    let mut stored: HashMap<String, Vec<i64>> = HashMap::new();
    for row in rows(
        pg,
        &format!("SELECT lower(unit_id), id FROM devices WHERE unit_id LIKE '{prefix}-%'"),
    )? {
        if let (Some(unit), Some(id)) = (row.first(), row.get(1).and_then(|v| v.parse().ok())) {
            stored.entry(unit.clone()).or_default().push(id);
        }
    }
    let lost_registrations = ledger
        .registrations
        .iter()
        .filter(|r| stored.get(&r.unit_id.to_lowercase()) != Some(&vec![r.device_id]))
        .count();
    let duplicate_devices = rows(
        pg,
        "SELECT lower(unit_id) FROM devices GROUP BY lower(unit_id) HAVING count(*) > 1",
    )?
    .len();

    // Every acknowledged job result: the job of that device, done, with the reported message.
    let mut jobs: HashMap<i64, (i64, String, String)> = HashMap::new();
    for row in rows(
        pg,
        "SELECT id, device_id, state, result FROM jobs WHERE state IN ('done', 'failed')",
    )? {
        let (Some(id), Some(device)) = (
            row.first().and_then(|v| v.parse().ok()),
            row.get(1).and_then(|v| v.parse().ok()),
        ) else {
            continue;
        };
        let state = row.get(2).cloned().unwrap_or_default();
        // The message may itself hold the separator.
        let result = row.get(3..).map(|r| r.join("|")).unwrap_or_default();
        jobs.insert(id, (device, state, result));
    }
    let lost_job_results = ledger
        .job_results
        .iter()
        .filter(|r| {
            jobs.get(&r.job_id) != Some(&(r.device_id, "done".to_owned(), r.message.clone()))
        })
        .count();

    // The file: a verified replica on every server, and its bytes on every server's disk.
    let present = present_replicas(pg, file_id)?;
    let mut problems = Vec::new();
    if present != cluster.nodes.len() {
        problems.push(format!(
            "{present} of {} servers hold a verified replica",
            cluster.nodes.len()
        ));
    }
    for node in &cluster.nodes {
        let store = node.server_dir().join("files");
        if !holds(&store, bytes) {
            problems.push(format!("node {}'s file store holds no intact copy", node.n));
        }
    }
    Ok(Audit {
        lost_registrations,
        lost_job_results,
        duplicate_devices,
        files_verified: problems.is_empty(),
        file_problem: problems.join("; "),
    })
}

/// Whether a file under `dir` holds exactly `bytes`.
fn holds(dir: &Path, bytes: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.filter_map(Result::ok).any(|e| {
        let path = e.path();
        if path.is_dir() {
            holds(&path, bytes)
        } else {
            std::fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64)
                && std::fs::read(&path).is_ok_and(|b| b == bytes)
        }
    })
}
