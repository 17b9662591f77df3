//! Group commit for the device hot path.
//!
//! Registrations, check-ins and Shared Workplace logins queue up in a channel; one writer task takes whatever is waiting
//! (up to [`MAX_BATCH`]) and commits it in one transaction, then answers every caller. Under a
//! storm of devices this turns thousands of commits into a few dozen; a lone device pays one
//! commit, as before. When a batch fails as a whole, each item is retried in a transaction of
//! its own so one bad item never fails its neighbours.

use std::collections::{HashMap, HashSet};

use sea_orm::{ConnectionTrait, Statement};
use tokio::sync::{mpsc, oneshot};

use crate::devices::{CheckIn, CheckedIn, Registered, Registration, insert_new, register_existing};
use crate::swp::{SwpSession, start_sessions_in};
use crate::{Backend, Db, DbError, Result};

/// Most items committed in one transaction.
pub const MAX_BATCH: usize = 512;

enum Op {
    Register(Registration, oneshot::Sender<Result<Registered>>),
    CheckIn(CheckIn, oneshot::Sender<Result<Option<CheckedIn>>>),
    /// A user session to start, with the random seed of its tag.
    StartSession(SwpSession, i64, oneshot::Sender<Result<SwpSession>>),
}

/// Handle to the batch writer; cheap to clone. The writer stops when every handle is dropped.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Op>,
}

impl Batcher {
    /// Starts the writer task on the current tokio runtime.
    pub fn start(db: Db) -> Self {
        Self::start_observed(db, None)
    }

    /// Like [`Batcher::start`], calling `observe` with the number of ops of every committed
    /// batch (for a metric of batch sizes).
    pub fn start_observed(db: Db, observe: Option<BatchObserver>) -> Self {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 8);
        tokio::spawn(run(db, rx, observe));
        Self { tx }
    }

    pub async fn register(&self, r: Registration) -> Result<Registered> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Op::Register(r, reply))
            .await
            .map_err(|_| DbError::WriterGone)?;
        rx.await.map_err(|_| DbError::WriterGone)?
    }

    pub async fn check_in(&self, c: CheckIn) -> Result<Option<CheckedIn>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Op::CheckIn(c, reply))
            .await
            .map_err(|_| DbError::WriterGone)?;
        rx.await.map_err(|_| DbError::WriterGone)?
    }

    /// [`Db::start_swp_session`], group-committed: a login storm costs one transaction per
    /// batch instead of one each, and logins never wait on each other for the write lock.
    pub async fn start_swp_session(&self, s: SwpSession, tag_seed: i64) -> Result<SwpSession> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Op::StartSession(s, tag_seed, reply))
            .await
            .map_err(|_| DbError::WriterGone)?;
        rx.await.map_err(|_| DbError::WriterGone)?
    }
}

/// Told the size of every committed batch.
pub type BatchObserver = std::sync::Arc<dyn Fn(usize) + Send + Sync>;

async fn run(db: Db, mut rx: mpsc::Receiver<Op>, observe: Option<BatchObserver>) {
    let mut ops = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut ops, MAX_BATCH).await > 0 {
        let n = ops.len();
        let result = commit_batch(&db, &mut ops).await;
        if let Some(f) = &observe {
            f(if result.is_ok() { n } else { 1 });
        }
        if let Err(e) = result {
            // Retrying one by one finds the op that broke a batch; when the database cannot be
            // reached it would only make every caller wait in turn.
            if e.is_unreachable() {
                let why = e.to_string();
                tracing::warn!(items = ops.len(), error = %why, "batch failed: the database cannot be reached");
                for op in ops.drain(..) {
                    fail(op, &why);
                }
                continue;
            }
            if ops.len() > 1 {
                tracing::warn!(items = ops.len(), error = %e, "batch failed, retrying items one by one");
            }
            for op in ops.drain(..) {
                retry_alone(&db, op).await;
            }
        }
        ops.clear();
    }
}

/// Commits every op in one transaction and answers them; on error nothing is answered and the
/// ops stay in `ops` for the retry.
///
/// New registrations go in as one multi-row `INSERT ... ON CONFLICT DO NOTHING RETURNING`, and
/// check-ins as one `UPDATE ... FROM (VALUES ...) RETURNING`: a batch costs a handful of
/// statements, not one per device. Registrations of units that already exist take the careful
/// path of [`register_existing`] one by one.
async fn commit_batch(db: &Db, ops: &mut Vec<Op>) -> Result<()> {
    let tx = db.write_tx().await?;
    let regs: Vec<&Registration> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Register(r, _) => Some(r),
            _ => None,
        })
        .collect();
    let checks: Vec<&CheckIn> = ops
        .iter()
        .filter_map(|op| match op {
            Op::CheckIn(c, _) => Some(c),
            _ => None,
        })
        .collect();
    // One session per device and batch: a second login on the same device waits for the next
    // batch, so each login is answered with the session it wrote.
    let mut session_devices: HashSet<i64> = HashSet::new();
    let sessions: Vec<(&SwpSession, i64)> = ops
        .iter()
        .filter_map(|op| match op {
            Op::StartSession(s, seed, _) if session_devices.insert(s.device_id) => Some((s, *seed)),
            _ => None,
        })
        .collect();
    let created = insert_new(&tx, &regs).await?;
    // Answers by (unit id, secret hash): the same unit twice in one batch is a repeat when the
    // secrets match and an impostor when they differ. The row inserted for a new unit is the
    // first registration of it in the batch.
    let mut registered: HashMap<(String, String), Result<Registered>> = HashMap::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for r in &regs {
        let key = (r.unit_id.clone(), r.secret_hash.clone());
        if registered.contains_key(&key) {
            continue;
        }
        let first = seen.insert(r.unit_id.as_str());
        let outcome = match created.get(&r.unit_id) {
            Some(&device_id) if first => Ok(Registered {
                device_id,
                created: true,
            }),
            _ => match register_existing(&tx, r).await {
                Ok(v) => Ok(v),
                // A refused registration changes nothing: answer it, keep the batch going.
                Err(e @ DbError::CredentialMismatch(_)) => Err(e),
                Err(e) => return Err(e),
            },
        };
        registered.insert(key, outcome);
    }
    // Sessions before check-ins: a device checking in within the batch sees its new session.
    let tags = start_sessions_in(&tx, db.backend(), &sessions).await?;
    let checked = update_contacts(&tx, db.backend(), &checks).await?;
    tx.commit().await?;

    // The first login of each device in the batch is the one written; the others wait.
    let mut answered: HashSet<i64> = HashSet::new();
    let mut later = Vec::new();

    for op in ops.drain(..) {
        match op {
            Op::Register(r, reply) => {
                let answer = match registered.remove(&(r.unit_id.clone(), r.secret_hash.clone())) {
                    Some(Ok(v)) => {
                        // A repeat in the same batch gets the same answer.
                        registered.insert((r.unit_id.clone(), r.secret_hash.clone()), Ok(v));
                        Ok(v)
                    }
                    Some(Err(_)) | None => Err(DbError::CredentialMismatch(r.unit_id.clone())),
                };
                let _ = reply.send(answer);
            }
            Op::CheckIn(c, reply) => {
                let _ = reply.send(Ok(checked.get(&c.device_id).cloned()));
            }
            Op::StartSession(s, _, reply) if answered.insert(s.device_id) => {
                let answer = match tags.get(&s.device_id) {
                    Some(&tag) => Ok(SwpSession {
                        tag,
                        refreshed_at: s.started_at,
                        ..s
                    }),
                    None => Err(DbError::NotFound(format!("device {}", s.device_id))),
                };
                let _ = reply.send(answer);
            }
            op @ Op::StartSession(..) => later.push(op),
        }
    }
    // Logins that shared a device with an earlier one of the batch, one transaction each.
    for op in later {
        retry_alone(db, op).await;
    }
    Ok(())
}

/// Records every check-in in one statement; returns device id -> row fields for the devices
/// that exist.
async fn update_contacts<C: ConnectionTrait>(
    tx: &C,
    backend: Backend,
    checks: &[&CheckIn],
) -> Result<HashMap<i64, CheckedIn>> {
    let mut out = HashMap::new();
    if checks.is_empty() {
        return Ok(out);
    }
    // A device checking in twice in one batch: the later values win.
    let mut latest: HashMap<i64, &CheckIn> = HashMap::new();
    for c in checks {
        latest.insert(c.device_id, c);
    }
    let mut values = Vec::with_capacity(latest.len() * 5);
    for c in latest.values() {
        values.push(c.device_id.into());
        values.push(c.firmware.clone().into());
        values.push(c.state.clone().into());
        values.push(c.at.into());
        values.push(c.applied_revision.into());
    }
    let sql = format!(
        "WITH v(id, firmware, state, at, applied) AS (VALUES {}) \
         UPDATE devices SET firmware = v.firmware, state = v.state, last_contact = v.at, \
         applied_revision = v.applied \
         FROM v WHERE devices.id = v.id \
         RETURNING devices.id, devices.name, devices.folder_id, devices.rev, devices.next_job_at, \
         devices.swp_session",
        values_rows(
            backend,
            latest.len(),
            &["bigint", "text", "text", "bigint", "bigint"]
        )
    );
    let stmt = Statement::from_sql_and_values(tx.get_database_backend(), sql, values);
    for row in tx.query_all_raw(stmt).await? {
        out.insert(
            row.try_get("", "id")?,
            CheckedIn {
                name: row.try_get("", "name")?,
                folder_id: row.try_get("", "folder_id")?,
                rev: row.try_get("", "rev")?,
                next_job_at: row.try_get("", "next_job_at")?,
                swp_session: row.try_get("", "swp_session")?,
            },
        );
    }
    Ok(out)
}

/// The rows of a `VALUES` list of `rows` rows with one placeholder per column: `?` on SQLite,
/// `$n::type` on PostgreSQL (whose `VALUES` need the types spelled out).
pub(crate) fn values_rows(backend: Backend, rows: usize, types: &[&str]) -> String {
    let mut out = Vec::with_capacity(rows);
    for i in 0..rows {
        let cells: Vec<String> = types
            .iter()
            .enumerate()
            .map(|(k, ty)| match backend {
                Backend::Sqlite => "?".to_owned(),
                Backend::Postgres => format!("${}::{ty}", i * types.len() + k + 1),
            })
            .collect();
        out.push(format!("({})", cells.join(", ")));
    }
    out.join(", ")
}

fn fail(op: Op, why: &str) {
    let e = || DbError::Unreachable(why.to_owned());
    match op {
        Op::Register(_, reply) => {
            let _ = reply.send(Err(e()));
        }
        Op::CheckIn(_, reply) => {
            let _ = reply.send(Err(e()));
        }
        Op::StartSession(_, _, reply) => {
            let _ = reply.send(Err(e()));
        }
    }
}

async fn retry_alone(db: &Db, op: Op) {
    match op {
        Op::Register(r, reply) => {
            let _ = reply.send(db.register_device(&r).await);
        }
        Op::CheckIn(c, reply) => {
            let _ = reply.send(db.check_in(&c).await);
        }
        Op::StartSession(s, seed, reply) => {
            let _ = reply.send(db.start_swp_session(&s, seed).await);
        }
    }
}
