//! The process registry: one row per process of the network, written by its heartbeats and
//! stamped with the database's clock, and the status an administrator or a clean shutdown sets.

use sea_orm::{ConnectionTrait, QueryResult};

use crate::{Db, Result};

/// One process of the network.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessRow {
    pub id: String,
    pub kind: String,
    pub host: String,
    pub version: String,
    pub schema_version: String,
    pub device_port: i64,
    pub admin_port: i64,
    pub internal_port: i64,
    pub status: String,
    pub mode: String,
    pub last_heartbeat: i64,
    pub clock_ms: i64,
    pub clock_offset_ms: i64,
    pub cert_fingerprint: String,
    pub supervisor_id: Option<String>,
    pub pid: i64,
    pub started_at: i64,
    /// Hash of the cluster-relevant settings the process reported (`None`: it reports none).
    pub config_hash: Option<String>,
    /// The schema versions the process runs on, `min..=max` (any expansion beyond `max` too).
    pub schema_min: Option<String>,
    pub schema_max: Option<String>,
}

impl Db {
    /// Records a heartbeat of `p` (insert or update). `last_heartbeat` is the database's clock;
    /// `clock_offset_ms` is `p.clock_ms` minus it. Returns the database's clock.
    pub async fn heartbeat(&self, p: &ProcessRow) -> Result<i64> {
        let now = self.db_now().await?;
        let offset = p.clock_ms - now;
        self.conn()
            .execute_raw(self.stmt(
                "INSERT INTO processes (id, kind, host, version, schema_version, device_port, admin_port, \
                 internal_port, status, mode, last_heartbeat, clock_ms, clock_offset_ms, cert_fingerprint, \
                 supervisor_id, pid, started_at, config_hash, schema_min, schema_max) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20) \
                 ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, host = excluded.host, \
                 version = excluded.version, schema_version = excluded.schema_version, \
                 device_port = excluded.device_port, admin_port = excluded.admin_port, \
                 internal_port = excluded.internal_port, status = excluded.status, mode = excluded.mode, \
                 last_heartbeat = excluded.last_heartbeat, clock_ms = excluded.clock_ms, \
                 clock_offset_ms = excluded.clock_offset_ms, cert_fingerprint = excluded.cert_fingerprint, \
                 supervisor_id = COALESCE(excluded.supervisor_id, processes.supervisor_id), \
                 pid = excluded.pid, started_at = excluded.started_at, \
                 config_hash = COALESCE(excluded.config_hash, processes.config_hash), \
                 schema_min = excluded.schema_min, schema_max = excluded.schema_max",
                vec![
                    p.id.clone().into(),
                    p.kind.clone().into(),
                    p.host.clone().into(),
                    p.version.clone().into(),
                    p.schema_version.clone().into(),
                    p.device_port.into(),
                    p.admin_port.into(),
                    p.internal_port.into(),
                    p.status.clone().into(),
                    p.mode.clone().into(),
                    now.into(),
                    p.clock_ms.into(),
                    offset.into(),
                    p.cert_fingerprint.clone().into(),
                    p.supervisor_id.clone().into(),
                    p.pid.into(),
                    p.started_at.into(),
                    p.config_hash.clone().into(),
                    p.schema_min.clone().into(),
                    p.schema_max.clone().into(),
                ],
            ))
            .await?;
        Ok(now)
    }

    /// Sets the reported status of a process ("stopped" on a clean shutdown).
    pub async fn set_process_status(&self, id: &str, status: &str) -> Result<bool> {
        let n = self
            .conn()
            .execute_raw(self.stmt(
                "UPDATE processes SET status = $1 WHERE id = $2",
                vec![status.into(), id.into()],
            ))
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    /// Records which watchdog supervises a process (its own heartbeats leave this as it is).
    pub async fn set_process_supervisor(&self, id: &str, supervisor: &str) -> Result<bool> {
        let n = self
            .conn()
            .execute_raw(self.stmt(
                "UPDATE processes SET supervisor_id = $1 WHERE id = $2",
                vec![supervisor.into(), id.into()],
            ))
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    /// Every process of the registry, and the database's clock to judge their heartbeats by.
    pub async fn list_processes(&self) -> Result<(Vec<ProcessRow>, i64)> {
        let now = self.db_now().await?;
        let rows = self
            .conn()
            .query_all_raw(self.stmt(
                "SELECT id, kind, host, version, schema_version, device_port, admin_port, internal_port, \
                 status, mode, last_heartbeat, clock_ms, clock_offset_ms, cert_fingerprint, supervisor_id, \
                 pid, started_at, config_hash, schema_min, schema_max FROM processes ORDER BY kind, id",
                vec![],
            ))
            .await?;
        let rows = rows.iter().map(process_row).collect::<Result<Vec<_>>>()?;
        Ok((rows, now))
    }

    /// Deletes a registry entry.
    pub async fn remove_process(&self, id: &str) -> Result<bool> {
        let n = self
            .conn()
            .execute_raw(self.stmt("DELETE FROM processes WHERE id = $1", vec![id.into()]))
            .await?
            .rows_affected();
        Ok(n > 0)
    }
}

fn process_row(r: &QueryResult) -> Result<ProcessRow> {
    Ok(ProcessRow {
        id: r.try_get("", "id")?,
        kind: r.try_get("", "kind")?,
        host: r.try_get("", "host")?,
        version: r.try_get("", "version")?,
        schema_version: r.try_get("", "schema_version")?,
        device_port: r.try_get("", "device_port")?,
        admin_port: r.try_get("", "admin_port")?,
        internal_port: r.try_get("", "internal_port")?,
        status: r.try_get("", "status")?,
        mode: r.try_get("", "mode")?,
        last_heartbeat: r.try_get("", "last_heartbeat")?,
        clock_ms: r.try_get("", "clock_ms")?,
        clock_offset_ms: r.try_get("", "clock_offset_ms")?,
        cert_fingerprint: r.try_get("", "cert_fingerprint")?,
        supervisor_id: r.try_get("", "supervisor_id")?,
        pid: r.try_get("", "pid")?,
        started_at: r.try_get("", "started_at")?,
        config_hash: r.try_get("", "config_hash")?,
        schema_min: r.try_get("", "schema_min")?,
        schema_max: r.try_get("", "schema_max")?,
    })
}
