//! Update mode: a server's local SQLite copy of the shared database, taken before a migration
//! that cannot be expand-only, and the journal of what devices did while it served from it.
//!
//! The copy (`<dir>/copy.db`) holds every table of the shared database at the moment it was
//! taken (one read transaction), migrated locally to the newest schema this build knows, so a
//! server answers registrations of known devices, check-ins, settings, jobs and file lists
//! from it. Beside the copied tables the file holds two of its own, which the shared schema
//! never has: `update_copy` (what the copy is: the schema it waits for, when it was taken, how
//! far the journal was replayed) and `update_journal`, one row per check-in and job result. A
//! check-in or job result is written to the copy and to the journal in one SQLite transaction
//! with full sync, so what a device was told is what the journal holds, also after a power loss.
//!
//! [`LocalCopy::replay`] writes the journal into the shared database in batches, each one
//! transaction there, and records the last entry replayed in the copy afterwards. Every entry
//! is idempotent on its own (a check-in only moves `last_contact` forward; a job result only
//! finishes a job that is not finished yet), so a replay cut off between the two commits and
//! repeated changes nothing twice.

use std::path::{Path, PathBuf};

use sea_orm::{ConnectionTrait, QueryResult, Value};

use crate::devices::{CheckIn, CheckedIn, Registration};
use crate::{Db, DbError, Result, RunOptions, SchemaVersion};

/// The copy's file in its directory.
const COPY_FILE: &str = "copy.db";
/// Journal entries replayed in one transaction of the shared database.
pub const REPLAY_BATCH: u64 = 500;

/// What a device did in update mode, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    CheckIn(CheckIn),
    JobResult {
        device_id: i64,
        job_id: i64,
        success: bool,
        message: String,
        at: i64,
    },
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Journal entries written to the shared database by this call.
    pub entries: u64,
    /// Entries the journal still holds after it (a replay stopped by `max_batches`).
    pub left: u64,
}

/// A server's local copy and journal.
#[derive(Clone)]
pub struct LocalCopy {
    db: Db,
    dir: PathBuf,
    /// The schema version of the shared database the copy waits for: update mode ends once
    /// the shared database reaches it.
    pub target: SchemaVersion,
    /// When the copy was taken (the server's clock, milliseconds).
    pub taken_at: i64,
    /// The shared schema version it was taken from.
    pub source: SchemaVersion,
}

impl std::fmt::Debug for LocalCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCopy")
            .field("dir", &self.dir)
            .field("target", &self.target)
            .field("source", &self.source)
            .finish()
    }
}

fn restrict(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| DbError::Invalid(format!("restrict {}: {e}", path.display())))
}

fn copy_url(dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join(COPY_FILE).display())
}

/// Opens the copy as [`Db::connect`] opens SQLite, but with full sync: a journaled check-in
/// survives a power loss, not only a crash of the process.
async fn connect_copy(dir: &Path) -> Result<Db> {
    use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
    let url = copy_url(dir);
    let mut opts = sea_orm::ConnectOptions::new(url.clone());
    opts.sqlx_logging(false)
        .connect_timeout(std::time::Duration::from_secs(10))
        .acquire_timeout(crate::ACQUIRE_TIMEOUT)
        .max_connections(4)
        .min_connections(1);
    opts.map_sqlx_sqlite_opts(|o| {
        o.journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(30))
            .foreign_keys(true)
            .create_if_missing(true)
    });
    let conn = sea_orm::Database::connect(opts).await?;
    Ok(Db {
        conn,
        backend: crate::Backend::Sqlite,
        url,
    })
}

impl LocalCopy {
    /// Takes a copy of `shared` into `dir` (replacing a copy whose journal is empty; a journal
    /// with entries is never thrown away: that copy is opened instead). `opts` migrate the
    /// fresh file to the shared schema's version, then the copy to the newest this build knows.
    /// `progress` hears each table's name and row count.
    pub async fn take(
        shared: &Db,
        dir: &Path,
        target: SchemaVersion,
        opts: &RunOptions,
        mut progress: impl FnMut(&str, u64),
    ) -> Result<Self> {
        if let Some(existing) = Self::open(dir).await? {
            if existing.pending().await? > 0 {
                return Ok(existing);
            }
            existing.db.close().await.ok();
        }
        std::fs::create_dir_all(dir).map_err(|e| {
            DbError::Invalid(format!(
                "create the local copy's directory {}: {e}",
                dir.display()
            ))
        })?;
        for suffix in ["", "-wal", "-shm"] {
            let path = dir.join(format!("{COPY_FILE}{suffix}"));
            if path.exists() {
                std::fs::remove_file(&path).map_err(|e| {
                    DbError::Invalid(format!("remove the old local copy {}: {e}", path.display()))
                })?;
            }
        }
        let snapshot = shared.export_snapshot(&mut progress).await?;
        let source: SchemaVersion = snapshot.schema_version.parse().map_err(DbError::Invalid)?;
        let db = connect_copy(dir).await?;
        // It holds what the shared database does: credential hashes, the sealed CA key.
        restrict(dir, 0o700)?;
        restrict(&dir.join(COPY_FILE), 0o600)?;
        let fresh = db
            .migrate(&RunOptions {
                contract: opts.contract,
                stop_at_major: true,
                ..opts.clone()
            })
            .await?;
        if fresh.to != source {
            return Err(DbError::Invalid(format!(
                "the shared database is at schema {source}, a fresh local copy at {}: this build cannot take a copy of it",
                fresh.to
            )));
        }
        db.import_snapshot(&snapshot, false, |_, _| {}).await?;
        db.migrate(&RunOptions {
            contract: true,
            stop_at_major: false,
            ..opts.clone()
        })
        .await?;
        let taken_at = crate::now_ms();
        let conn = db.conn();
        for sql in [
            "CREATE TABLE IF NOT EXISTS update_copy (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS update_journal (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
             kind TEXT NOT NULL, device_id INTEGER NOT NULL, at INTEGER NOT NULL, \
             firmware TEXT, state TEXT, applied_revision INTEGER, \
             job_id INTEGER, success INTEGER, message TEXT)",
        ] {
            conn.execute_raw(db.stmt(sql, vec![])).await?;
        }
        for (k, v) in [
            ("target", target.to_string()),
            ("source", source.to_string()),
            ("taken_at", taken_at.to_string()),
            ("replayed", "0".to_owned()),
        ] {
            conn.execute_raw(db.stmt(
                "INSERT INTO update_copy (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                vec![k.into(), v.into()],
            ))
            .await?;
        }
        Ok(Self {
            db,
            dir: dir.to_owned(),
            target,
            taken_at,
            source,
        })
    }

    /// Opens the copy a server left in `dir`, if there is a complete one.
    pub async fn open(dir: &Path) -> Result<Option<Self>> {
        if !dir.join(COPY_FILE).exists() {
            return Ok(None);
        }
        let db = connect_copy(dir).await?;
        let meta = match db
            .conn()
            .query_all_raw(db.stmt("SELECT key, value FROM update_copy", vec![]))
            .await
        {
            Ok(rows) => rows,
            // A copy cut off before its tables were written.
            Err(_) => {
                db.close().await.ok();
                return Ok(None);
            }
        };
        let get = |key: &str| -> Option<String> {
            meta.iter()
                .find(|r| r.try_get::<String>("", "key").ok().as_deref() == Some(key))
                .and_then(|r| r.try_get::<String>("", "value").ok())
        };
        let (Some(target), Some(source), Some(taken_at)) = (
            get("target").and_then(|v| v.parse().ok()),
            get("source").and_then(|v| v.parse().ok()),
            get("taken_at").and_then(|v| v.parse().ok()),
        ) else {
            db.close().await.ok();
            return Ok(None);
        };
        Ok(Some(Self {
            db,
            dir: dir.to_owned(),
            target,
            taken_at,
            source,
        }))
    }

    /// The copy, for the reads devices need (device rows, jobs, files).
    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A registration of a known device with its own secret: its id. `None` for a unit the
    /// copy does not know or whose credential was reset (a new secret could not be kept).
    pub async fn registered(&self, r: &Registration) -> Result<Option<i64>> {
        let row = self
            .db
            .conn()
            .query_one_raw(self.db.stmt(
                "SELECT id, secret_hash FROM devices WHERE unit_id = $1",
                vec![r.unit_id.clone().into()],
            ))
            .await?;
        let Some(row) = row else { return Ok(None) };
        let id: i64 = row.try_get("", "id")?;
        let hash: Option<String> = row.try_get("", "secret_hash")?;
        match hash {
            Some(h) if crate::devices::constant_time_eq(h.as_bytes(), r.secret_hash.as_bytes()) => {
                Ok(Some(id))
            }
            Some(_) => Err(DbError::CredentialMismatch(r.unit_id.clone())),
            None => Ok(None),
        }
    }

    /// Records a check-in in the copy and the journal, in one transaction; `None` for a
    /// device the copy does not know (nothing journaled).
    pub async fn check_in(&self, c: &CheckIn) -> Result<Option<CheckedIn>> {
        let tx = self.db.write_tx().await?;
        let out = crate::devices::check_in_in(&tx, c).await?;
        if out.is_some() {
            tx.execute_raw(self.db.stmt(
                "INSERT INTO update_journal (kind, device_id, at, firmware, state, applied_revision) \
                 VALUES ('check-in', $1, $2, $3, $4, $5)",
                vec![
                    c.device_id.into(),
                    c.at.into(),
                    c.firmware.clone().into(),
                    c.state.clone().into(),
                    c.applied_revision.into(),
                ],
            ))
            .await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Records a job result in the copy (the same checks as the shared database's) and the
    /// journal, in one transaction.
    pub async fn report_job_result(
        &self,
        device_id: i64,
        job_id: i64,
        success: bool,
        message: &str,
    ) -> Result<()> {
        let at = crate::now_ms();
        let tx = self.db.write_tx().await?;
        crate::jobs::report_job_result_in(&tx, device_id, job_id, success, message, at).await?;
        tx.execute_raw(self.db.stmt(
            "INSERT INTO update_journal (kind, device_id, at, job_id, success, message) \
             VALUES ('job-result', $1, $2, $3, $4, $5)",
            vec![
                device_id.into(),
                at.into(),
                job_id.into(),
                i64::from(success).into(),
                message.into(),
            ],
        ))
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The journal's entries not replayed yet, oldest first, at most `limit`.
    pub async fn entries(&self, limit: u64) -> Result<Vec<(i64, Entry)>> {
        let rows = self
            .db
            .conn()
            .query_all_raw(self.db.stmt(
                "SELECT seq, kind, device_id, at, firmware, state, applied_revision, job_id, success, message \
                 FROM update_journal WHERE seq > (SELECT CAST(value AS INTEGER) FROM update_copy WHERE key = 'replayed') \
                 ORDER BY seq LIMIT $1",
                vec![(limit.min(i64::MAX as u64) as i64).into()],
            ))
            .await?;
        rows.iter().map(entry).collect()
    }

    /// Journal entries not replayed yet.
    pub async fn pending(&self) -> Result<u64> {
        let row = self
            .db
            .conn()
            .query_one_raw(self.db.stmt(
                "SELECT COUNT(*) AS n FROM update_journal WHERE seq > \
                 (SELECT CAST(value AS INTEGER) FROM update_copy WHERE key = 'replayed')",
                vec![],
            ))
            .await?;
        let n: i64 = match row {
            Some(r) => r.try_get("", "n")?,
            None => 0,
        };
        Ok(n.max(0) as u64)
    }

    /// Writes the journal into `shared`, `batch` entries per transaction there, at most
    /// `max_batches` batches (all when `None`). Entries of devices the shared database no
    /// longer has, and results of jobs finished there meanwhile, change nothing.
    pub async fn replay(
        &self,
        shared: &Db,
        batch: u64,
        max_batches: Option<u64>,
    ) -> Result<Replayed> {
        let mut done = 0u64;
        let mut batches = 0u64;
        loop {
            if max_batches.is_some_and(|m| batches >= m) {
                break;
            }
            let entries = self.entries(batch.max(1)).await?;
            let Some(&(last, _)) = entries.last() else {
                break;
            };
            let tx = shared.write_tx().await?;
            for (_, e) in &entries {
                apply(shared, &tx, e).await?;
            }
            tx.commit().await?;
            // Cut off here, the next replay writes this batch again: every entry is
            // idempotent.
            self.mark_replayed(last).await?;
            done += entries.len() as u64;
            batches += 1;
        }
        Ok(Replayed {
            entries: done,
            left: self.pending().await?,
        })
    }

    async fn mark_replayed(&self, seq: i64) -> Result<()> {
        self.db
            .conn()
            .execute_raw(self.db.stmt(
                "UPDATE update_copy SET value = $1 WHERE key = 'replayed'",
                vec![seq.to_string().into()],
            ))
            .await?;
        Ok(())
    }

    /// Forgets how far the journal was replayed, as a replay cut off after its commit in the
    /// shared database would leave it. For tests of idempotence.
    #[doc(hidden)]
    pub async fn debug_forget_replayed(&self) -> Result<()> {
        self.mark_replayed(0).await
    }

    /// Closes the copy and deletes its files: after a complete replay.
    pub async fn remove(self) -> Result<()> {
        self.db.close().await.ok();
        std::fs::remove_dir_all(&self.dir).map_err(|e| {
            DbError::Invalid(format!("remove the local copy {}: {e}", self.dir.display()))
        })
    }

    /// Closes the copy, keeping its files.
    pub async fn close(self) -> Result<()> {
        self.db.close().await
    }
}

fn entry(r: &QueryResult) -> Result<(i64, Entry)> {
    let seq: i64 = r.try_get("", "seq")?;
    let kind: String = r.try_get("", "kind")?;
    let device_id: i64 = r.try_get("", "device_id")?;
    let at: i64 = r.try_get("", "at")?;
    let e = match kind.as_str() {
        "check-in" => Entry::CheckIn(CheckIn {
            device_id,
            at,
            firmware: r
                .try_get::<Option<String>>("", "firmware")?
                .unwrap_or_default(),
            state: r
                .try_get::<Option<String>>("", "state")?
                .unwrap_or_default(),
            applied_revision: r
                .try_get::<Option<i64>>("", "applied_revision")?
                .unwrap_or_default(),
        }),
        "job-result" => Entry::JobResult {
            device_id,
            job_id: r.try_get::<Option<i64>>("", "job_id")?.unwrap_or_default(),
            success: r.try_get::<Option<i64>>("", "success")?.unwrap_or_default() != 0,
            message: r
                .try_get::<Option<String>>("", "message")?
                .unwrap_or_default(),
            at,
        },
        other => {
            return Err(DbError::Invalid(format!(
                "journal entry {seq} has the unknown kind `{other}`"
            )));
        }
    };
    Ok((seq, e))
}

/// One journal entry in the shared database's transaction.
async fn apply<C: ConnectionTrait>(shared: &Db, tx: &C, e: &Entry) -> Result<()> {
    match e {
        Entry::CheckIn(c) => {
            tx.execute_raw(shared.stmt(
                "UPDATE devices SET last_contact = $1, firmware = $2, state = $3, applied_revision = $4 \
                 WHERE id = $5 AND (last_contact IS NULL OR last_contact < $1)",
                vec![
                    c.at.into(),
                    c.firmware.clone().into(),
                    c.state.clone().into(),
                    c.applied_revision.into(),
                    c.device_id.into(),
                ],
            ))
            .await?;
        }
        Entry::JobResult {
            device_id,
            job_id,
            success,
            message,
            at,
        } => {
            let state = if *success {
                ums_domain::JobState::Done
            } else {
                ums_domain::JobState::Failed
            };
            let changed = tx
                .execute_raw(shared.stmt(
                    "UPDATE jobs SET state = $1, finished_at = $2, result = $3, \
                     sent_at = COALESCE(sent_at, $2) \
                     WHERE id = $4 AND device_id = $5 AND state IN ($6, $7)",
                    vec![
                        state.as_str().into(),
                        Value::from(*at),
                        message.clone().into(),
                        job_id.into(),
                        device_id.into(),
                        ums_domain::JobState::Pending.as_str().into(),
                        ums_domain::JobState::Sent.as_str().into(),
                    ],
                ))
                .await?;
            if changed.rows_affected() > 0 {
                crate::jobs::refresh_next_job(tx, *device_id).await?;
            }
        }
    }
    Ok(())
}
