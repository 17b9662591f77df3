//! The HA network's shared state: the cluster CA and network tokens, the process registry,
//! leases of cluster-wide singletons, replicated files, and database messaging (LISTEN/NOTIFY).
//!
//! Times that servers compare with each other (heartbeats, lease expiry) come from the database's
//! clock, never from the caller's, so a server with a wrong clock cannot steal a lease or make a
//! live peer look dead.

use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Statement, TransactionTrait, Value};

use crate::{Backend, Db, DbError, Result};

/// The cluster CA as recorded in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterCa {
    pub ca_cert_pem: String,
    pub ca_sha256: String,
}

/// A network token as the database keeps it: hashed and sealed, never in clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: i64,
    pub secret_sha256: String,
    pub ca_key_sealed: Vec<u8>,
    pub secret_sealed: Vec<u8>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

/// A token to record.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub secret_sha256: String,
    pub ca_key_sealed: Vec<u8>,
    pub secret_sealed: Vec<u8>,
}

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
}

/// A replicated file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    pub id: i64,
    pub path: String,
    pub sha256: String,
    pub size: i64,
    pub created_at: i64,
    pub origin_server: String,
    pub deleted: bool,
}

/// Where a file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRow {
    pub file_id: i64,
    pub server_id: String,
    pub status: String,
    pub error: String,
    pub updated_at: i64,
}

/// The database channel servers exchange events on.
pub const EVENTS_CHANNEL: &str = "ums_events";

impl Db {
    /// Builds a statement from SQL written with `$1, $2, …` placeholders, for either backend.
    fn stmt(&self, sql: &str, values: Vec<Value>) -> Statement {
        match self.backend {
            Backend::Postgres => Statement::from_sql_and_values(DbBackend::Postgres, sql, values),
            // SQLite reads `?1` as parameter 1.
            Backend::Sqlite => {
                Statement::from_sql_and_values(DbBackend::Sqlite, sql.replace('$', "?"), values)
            }
        }
    }

    fn now_sql(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
        }
    }

    /// The database's clock, in milliseconds since the epoch.
    pub async fn db_now(&self) -> Result<i64> {
        let sql = format!("SELECT {} AS now", self.now_sql());
        let row = self
            .conn()
            .query_one_raw(self.stmt(&sql, vec![]))
            .await?
            .ok_or_else(|| DbError::NotFound("clock".into()))?;
        Ok(row.try_get("", "now")?)
    }

    // ---- cluster CA and tokens ----

    /// The cluster CA, once the first server created it.
    pub async fn cluster_ca(&self) -> Result<Option<ClusterCa>> {
        let row = self
            .conn()
            .query_one_raw(self.stmt(
                "SELECT ca_cert_pem, ca_sha256 FROM cluster WHERE id = 1",
                vec![],
            ))
            .await?;
        row.map(|r| {
            Ok(ClusterCa {
                ca_cert_pem: r.try_get("", "ca_cert_pem")?,
                ca_sha256: r.try_get("", "ca_sha256")?,
            })
        })
        .transpose()
    }

    /// Records the cluster CA and its first token in one transaction. Returns `false`, changing
    /// nothing, when another server created the cluster first.
    pub async fn create_cluster(&self, ca: &ClusterCa, token: &NewToken) -> Result<bool> {
        let tx = self.write_tx().await?;
        let now = crate::now_ms();
        let inserted = tx
            .execute_raw(self.stmt(
                "INSERT INTO cluster (id, ca_cert_pem, ca_sha256, created_at) VALUES (1, $1, $2, $3) \
                 ON CONFLICT (id) DO NOTHING",
                vec![
                    ca.ca_cert_pem.clone().into(),
                    ca.ca_sha256.clone().into(),
                    now.into(),
                ],
            ))
            .await?
            .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        self.insert_token(&tx, token, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn insert_token(
        &self,
        tx: &impl ConnectionTrait,
        token: &NewToken,
        now: i64,
    ) -> Result<()> {
        tx.execute_raw(self.stmt(
            "INSERT INTO network_tokens (secret_sha256, ca_key_sealed, secret_sealed, created_at) \
             VALUES ($1, $2, $3, $4)",
            vec![
                token.secret_sha256.clone().into(),
                hex::encode(&token.ca_key_sealed).into(),
                hex::encode(&token.secret_sealed).into(),
                now.into(),
            ],
        ))
        .await?;
        Ok(())
    }

    /// Tokens still accepted: the current one and rotated ones within their grace period,
    /// newest first.
    pub async fn valid_tokens(&self) -> Result<Vec<TokenRow>> {
        let sql = format!(
            "SELECT id, secret_sha256, ca_key_sealed, secret_sealed, created_at, expires_at \
             FROM network_tokens WHERE expires_at IS NULL OR expires_at > {} ORDER BY id DESC",
            self.now_sql()
        );
        let rows = self.conn().query_all_raw(self.stmt(&sql, vec![])).await?;
        rows.iter().map(token_row).collect()
    }

    /// Makes `token` the current token; the previous ones stay valid until `grace_until`
    /// (database clock, ms) unless they expire sooner.
    pub async fn rotate_token(&self, token: &NewToken, grace_ms: i64) -> Result<i64> {
        let tx = self.write_tx().await?;
        let sql = format!(
            "UPDATE network_tokens SET expires_at = {} + $1 WHERE expires_at IS NULL",
            self.now_sql()
        );
        tx.execute_raw(self.stmt(&sql, vec![grace_ms.into()]))
            .await?;
        self.insert_token(&tx, token, crate::now_ms()).await?;
        let until = tx
            .query_one_raw(self.stmt(
                "SELECT MAX(expires_at) AS until FROM network_tokens",
                vec![],
            ))
            .await?
            .and_then(|r| r.try_get::<Option<i64>>("", "until").ok().flatten())
            .unwrap_or(0);
        tx.commit().await?;
        Ok(until)
    }

    // ---- process registry ----

    /// Records a heartbeat of `p` (insert or update). `last_heartbeat` is the database's clock;
    /// `clock_offset_ms` is `p.clock_ms` minus it. Returns the database's clock.
    pub async fn heartbeat(&self, p: &ProcessRow) -> Result<i64> {
        let now = self.db_now().await?;
        let offset = p.clock_ms - now;
        self.conn()
            .execute_raw(self.stmt(
                "INSERT INTO processes (id, kind, host, version, schema_version, device_port, admin_port, \
                 internal_port, status, mode, last_heartbeat, clock_ms, clock_offset_ms, cert_fingerprint, \
                 supervisor_id, pid, started_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
                 ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, host = excluded.host, \
                 version = excluded.version, schema_version = excluded.schema_version, \
                 device_port = excluded.device_port, admin_port = excluded.admin_port, \
                 internal_port = excluded.internal_port, status = excluded.status, mode = excluded.mode, \
                 last_heartbeat = excluded.last_heartbeat, clock_ms = excluded.clock_ms, \
                 clock_offset_ms = excluded.clock_offset_ms, cert_fingerprint = excluded.cert_fingerprint, \
                 supervisor_id = COALESCE(excluded.supervisor_id, processes.supervisor_id), \
                 pid = excluded.pid, started_at = excluded.started_at",
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
                 pid, started_at FROM processes ORDER BY kind, id",
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

    // ---- leases ----

    /// Takes or renews the lease `name` for `holder` for `ttl_ms` (database clock). Returns the
    /// fencing token while `holder` holds it: unchanged on renewal, one higher after a change of
    /// holder; `None` when another holder's lease has not expired.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
    ) -> Result<Option<i64>> {
        let tx = self.write_tx().await?;
        let now = {
            let sql = format!("SELECT {} AS now", self.now_sql());
            let row = tx
                .query_one_raw(self.stmt(&sql, vec![]))
                .await?
                .ok_or_else(|| DbError::NotFound("clock".into()))?;
            row.try_get::<i64>("", "now")?
        };
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let current = tx
            .query_one_raw(self.stmt(
                &format!("SELECT holder, fence, expires_at FROM leases WHERE name = $1{lock}"),
                vec![name.into()],
            ))
            .await?;
        let fence = match current {
            None => {
                let n = tx
                    .execute_raw(self.stmt(
                        "INSERT INTO leases (name, holder, fence, expires_at) VALUES ($1, $2, 1, $3) \
                         ON CONFLICT (name) DO NOTHING",
                        vec![name.into(), holder.into(), (now + ttl_ms).into()],
                    ))
                    .await?
                    .rows_affected();
                (n == 1).then_some(1)
            }
            Some(row) => {
                let cur_holder: String = row.try_get("", "holder")?;
                let fence: i64 = row.try_get("", "fence")?;
                let expires: i64 = row.try_get("", "expires_at")?;
                let next = if cur_holder == holder {
                    Some(fence)
                } else if expires <= now {
                    Some(fence + 1)
                } else {
                    None
                };
                if let Some(next) = next {
                    // The fence in the WHERE makes a concurrent taker lose cleanly.
                    let n = tx
                        .execute_raw(self.stmt(
                            "UPDATE leases SET holder = $1, fence = $2, expires_at = $3 \
                             WHERE name = $4 AND fence = $5",
                            vec![
                                holder.into(),
                                next.into(),
                                (now + ttl_ms).into(),
                                name.into(),
                                fence.into(),
                            ],
                        ))
                        .await?
                        .rows_affected();
                    (n == 1).then_some(next)
                } else {
                    None
                }
            }
        };
        tx.commit().await?;
        Ok(fence)
    }

    /// Gives a lease up at once (clean shutdown), so another server takes it without waiting.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        self.conn()
            .execute_raw(self.stmt(
                "UPDATE leases SET expires_at = 0 WHERE name = $1 AND holder = $2",
                vec![name.into(), holder.into()],
            ))
            .await?;
        Ok(())
    }

    /// The holder and fence of a lease, if anyone holds it now.
    pub async fn lease_holder(&self, name: &str) -> Result<Option<(String, i64)>> {
        let sql = format!(
            "SELECT holder, fence FROM leases WHERE name = $1 AND expires_at > {}",
            self.now_sql()
        );
        let row = self
            .conn()
            .query_one_raw(self.stmt(&sql, vec![name.into()]))
            .await?;
        row.map(|r| Ok((r.try_get("", "holder")?, r.try_get("", "fence")?)))
            .transpose()
    }

    /// The scheduler's periodic work, in one transaction fenced by its lease: marks processes
    /// silent for `silent_ms` as stopped, and jobs sent more than `job_timeout_ms` ago without a
    /// result as failed. Returns `None`, changing nothing, when `fence` is no longer the lease's.
    pub async fn scheduler_sweep(
        &self,
        lease: &str,
        fence: i64,
        silent_ms: i64,
        job_timeout_ms: i64,
    ) -> Result<Option<(u64, u64)>> {
        let tx = self.write_tx().await?;
        let held = tx
            .query_one_raw(self.stmt(
                &format!(
                    "SELECT fence FROM leases WHERE name = $1 AND fence = $2 AND expires_at > {}",
                    self.now_sql()
                ),
                vec![lease.into(), fence.into()],
            ))
            .await?;
        if held.is_none() {
            tx.rollback().await?;
            return Ok(None);
        }
        let now = crate::now_ms();
        let stopped = tx
            .execute_raw(self.stmt(
                &format!(
                    "UPDATE processes SET status = 'stopped' WHERE status = 'running' AND last_heartbeat < {} - $1",
                    self.now_sql()
                ),
                vec![silent_ms.into()],
            ))
            .await?
            .rows_affected();
        let expired = tx
            .execute_raw(self.stmt(
                "UPDATE jobs SET state = 'failed', finished_at = $1, result = 'no result from the device in time' \
                 WHERE state = 'sent' AND sent_at < $2",
                vec![now.into(), (now - job_timeout_ms).into()],
            ))
            .await?
            .rows_affected();
        tx.execute_raw(self.stmt(
            "DELETE FROM admin_sessions WHERE expires_at < $1",
            vec![now.into()],
        ))
        .await?;
        tx.commit().await?;
        Ok(Some((stopped, expired)))
    }

    // ---- messaging ----

    /// Sends an event to every server listening on [`EVENTS_CHANNEL`] (PostgreSQL NOTIFY,
    /// delivered on commit). A no-op on SQLite, where there is one server.
    pub async fn notify(&self, payload: &str) -> Result<()> {
        if self.backend == Backend::Postgres {
            self.conn()
                .execute_raw(self.stmt(
                    "SELECT pg_notify($1, $2)",
                    vec![EVENTS_CHANNEL.into(), payload.into()],
                ))
                .await?;
        }
        Ok(())
    }

    /// A listener on [`EVENTS_CHANNEL`], on PostgreSQL. It reconnects by itself after the
    /// database restarts; events sent while it was disconnected are lost, which is why servers
    /// also poll the counters.
    pub async fn listen(&self) -> Result<Option<sea_orm::sqlx::postgres::PgListener>> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let mut listener = sea_orm::sqlx::postgres::PgListener::connect(&self.url)
            .await
            .map_err(|e| DbError::Invalid(format!("listen: {e}")))?;
        listener
            .listen(EVENTS_CHANNEL)
            .await
            .map_err(|e| DbError::Invalid(format!("listen: {e}")))?;
        Ok(Some(listener))
    }

    /// The current values of the settings generation and the files revision.
    pub async fn change_counters(&self) -> Result<(i64, i64)> {
        let rows = self
            .conn()
            .query_all_raw(self.stmt(
                "SELECT name, value FROM counters WHERE name IN ('settings_generation', 'files_revision')",
                vec![],
            ))
            .await?;
        let mut out = (0, 0);
        for r in rows {
            let name: String = r.try_get("", "name")?;
            let value: i64 = r.try_get("", "value")?;
            match name.as_str() {
                "settings_generation" => out.0 = value,
                _ => out.1 = value,
            }
        }
        Ok(out)
    }

    // ---- files ----

    /// Records a file stored on `origin` (present there) and bumps the files revision, in one
    /// transaction. A live file with the same path is replaced (marked deleted).
    pub async fn insert_file(
        &self,
        path: &str,
        sha256: &str,
        size: i64,
        origin: &str,
    ) -> Result<FileRow> {
        let tx = self.write_tx().await?;
        let now = crate::now_ms();
        tx.execute_raw(self.stmt(
            "UPDATE files SET deleted = $1 WHERE path = $2 AND deleted = $3",
            vec![true.into(), path.into(), false.into()],
        ))
        .await?;
        let row = tx
            .query_one_raw(self.stmt(
                "INSERT INTO files (path, sha256, size, created_at, origin_server, deleted) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                vec![
                    path.into(),
                    sha256.into(),
                    size.into(),
                    now.into(),
                    origin.into(),
                    false.into(),
                ],
            ))
            .await?
            .ok_or_else(|| DbError::NotFound("inserted file".into()))?;
        let id: i64 = row.try_get("", "id")?;
        upsert_replica(self, &tx, id, origin, "present", "", now).await?;
        bump_files_revision(self, &tx).await?;
        tx.commit().await?;
        Ok(FileRow {
            id,
            path: path.to_owned(),
            sha256: sha256.to_owned(),
            size,
            created_at: now,
            origin_server: origin.to_owned(),
            deleted: false,
        })
    }

    /// Files, oldest first; deleted ones only when asked.
    pub async fn list_files(&self, include_deleted: bool) -> Result<Vec<FileRow>> {
        let filter = if include_deleted {
            ""
        } else {
            " WHERE deleted = $1"
        };
        let values = if include_deleted {
            vec![]
        } else {
            vec![false.into()]
        };
        let rows = self
            .conn()
            .query_all_raw(self.stmt(
                &format!(
                    "SELECT id, path, sha256, size, created_at, origin_server, deleted FROM files{filter} ORDER BY id"
                ),
                values,
            ))
            .await?;
        rows.iter().map(file_row).collect()
    }

    /// One live file.
    pub async fn file(&self, id: i64) -> Result<FileRow> {
        let row = self
            .conn()
            .query_one_raw(self.stmt(
                "SELECT id, path, sha256, size, created_at, origin_server, deleted FROM files \
                 WHERE id = $1 AND deleted = $2",
                vec![id.into(), false.into()],
            ))
            .await?
            .ok_or_else(|| DbError::NotFound(format!("file {id}")))?;
        file_row(&row)
    }

    /// Marks a file deleted and bumps the files revision; every server then removes its copy.
    pub async fn delete_file(&self, id: i64) -> Result<()> {
        let tx = self.write_tx().await?;
        let n = tx
            .execute_raw(self.stmt(
                "UPDATE files SET deleted = $1 WHERE id = $2 AND deleted = $3",
                vec![true.into(), id.into(), false.into()],
            ))
            .await?
            .rows_affected();
        if n == 0 {
            tx.rollback().await?;
            return Err(DbError::NotFound(format!("file {id}")));
        }
        bump_files_revision(self, &tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every replica record.
    pub async fn file_replicas(&self) -> Result<Vec<ReplicaRow>> {
        let rows = self
            .conn()
            .query_all_raw(self.stmt(
                "SELECT file_id, server_id, status, error, updated_at FROM file_replicas ORDER BY file_id, server_id",
                vec![],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ReplicaRow {
                    file_id: r.try_get("", "file_id")?,
                    server_id: r.try_get("", "server_id")?,
                    status: r.try_get("", "status")?,
                    error: r.try_get("", "error")?,
                    updated_at: r.try_get("", "updated_at")?,
                })
            })
            .collect()
    }

    /// Records whether `server` holds `file_id` ("present", "pending", "failed").
    pub async fn set_replica(
        &self,
        file_id: i64,
        server: &str,
        status: &str,
        error: &str,
    ) -> Result<()> {
        upsert_replica(
            self,
            self.conn(),
            file_id,
            server,
            status,
            error,
            crate::now_ms(),
        )
        .await
    }

    /// Forgets the replica records of a server (its copies were removed).
    pub async fn remove_replica(&self, file_id: i64, server: &str) -> Result<()> {
        self.conn()
            .execute_raw(self.stmt(
                "DELETE FROM file_replicas WHERE file_id = $1 AND server_id = $2",
                vec![file_id.into(), server.into()],
            ))
            .await?;
        Ok(())
    }

    /// Runs `f` in a read transaction; for tests that need a consistent view.
    #[doc(hidden)]
    pub async fn debug_begin(&self) -> Result<sea_orm::DatabaseTransaction> {
        Ok(self.conn().begin().await?)
    }
}

async fn upsert_replica(
    db: &Db,
    conn: &impl ConnectionTrait,
    file_id: i64,
    server: &str,
    status: &str,
    error: &str,
    now: i64,
) -> Result<()> {
    conn.execute_raw(db.stmt(
        "INSERT INTO file_replicas (file_id, server_id, status, error, updated_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (file_id, server_id) DO UPDATE SET status = excluded.status, error = excluded.error, \
         updated_at = excluded.updated_at",
        vec![
            file_id.into(),
            server.into(),
            status.into(),
            error.into(),
            now.into(),
        ],
    ))
    .await?;
    Ok(())
}

async fn bump_files_revision(db: &Db, conn: &impl ConnectionTrait) -> Result<()> {
    conn.execute_raw(db.stmt(
        "UPDATE counters SET value = value + 1 WHERE name = 'files_revision'",
        vec![],
    ))
    .await?;
    Ok(())
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    hex::decode(s).map_err(|e| DbError::Invalid(format!("sealed value is not hex: {e}")))
}

fn token_row(r: &QueryResult) -> Result<TokenRow> {
    Ok(TokenRow {
        id: r.try_get("", "id")?,
        secret_sha256: r.try_get("", "secret_sha256")?,
        ca_key_sealed: unhex(&r.try_get::<String>("", "ca_key_sealed")?)?,
        secret_sealed: unhex(&r.try_get::<String>("", "secret_sealed")?)?,
        created_at: r.try_get("", "created_at")?,
        expires_at: r.try_get("", "expires_at")?,
    })
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
    })
}

fn file_row(r: &QueryResult) -> Result<FileRow> {
    Ok(FileRow {
        id: r.try_get("", "id")?,
        path: r.try_get("", "path")?,
        sha256: r.try_get("", "sha256")?,
        size: r.try_get("", "size")?,
        created_at: r.try_get("", "created_at")?,
        origin_server: r.try_get("", "origin_server")?,
        deleted: r.try_get("", "deleted")?,
    })
}
