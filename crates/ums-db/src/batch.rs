//! Group commit for the device hot path.
//!
//! Registrations and check-ins queue up in a channel; one writer task takes whatever is waiting
//! (up to [`MAX_BATCH`]) and commits it in one transaction, then answers every caller. Under a
//! storm of devices this turns thousands of commits into a few dozen; a lone device pays one
//! commit, as before. When a batch fails as a whole, each item is retried in a transaction of
//! its own so one bad item never fails its neighbours.

use tokio::sync::{mpsc, oneshot};

use crate::devices::{CheckIn, CheckedIn, Registered, Registration, check_in_in, register_in};
use crate::{Db, DbError, Result};

/// Most items committed in one transaction.
pub const MAX_BATCH: usize = 512;

enum Op {
    Register(Registration, oneshot::Sender<Result<Registered>>),
    CheckIn(CheckIn, oneshot::Sender<Result<Option<CheckedIn>>>),
}

/// Handle to the batch writer; cheap to clone. The writer stops when every handle is dropped.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Op>,
}

impl Batcher {
    /// Starts the writer task on the current tokio runtime.
    pub fn start(db: Db) -> Self {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 8);
        tokio::spawn(run(db, rx));
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
}

async fn run(db: Db, mut rx: mpsc::Receiver<Op>) {
    let mut ops = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut ops, MAX_BATCH).await > 0 {
        if let Err(e) = commit_batch(&db, &mut ops).await {
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
async fn commit_batch(db: &Db, ops: &mut Vec<Op>) -> Result<()> {
    let tx = db.write_tx().await?;
    let mut results = Vec::with_capacity(ops.len());
    for op in ops.iter() {
        results.push(match op {
            Op::Register(r, _) => match register_in(&tx, r).await {
                Ok(v) => Outcome::Registered(Ok(v)),
                // A refused registration changes nothing: answer it, keep the batch going.
                Err(e @ DbError::CredentialMismatch(_)) => Outcome::Registered(Err(e)),
                Err(e) => return Err(e),
            },
            Op::CheckIn(c, _) => Outcome::CheckedIn(check_in_in(&tx, c).await?),
        });
    }
    tx.commit().await?;
    for (op, result) in ops.drain(..).zip(results) {
        match (op, result) {
            (Op::Register(_, reply), Outcome::Registered(r)) => {
                let _ = reply.send(r);
            }
            (Op::CheckIn(_, reply), Outcome::CheckedIn(r)) => {
                let _ = reply.send(Ok(r));
            }
            _ => unreachable_pair(),
        }
    }
    Ok(())
}

enum Outcome {
    Registered(Result<Registered>),
    CheckedIn(Option<CheckedIn>),
}

fn unreachable_pair() {
    tracing::error!("batch results out of order");
}

async fn retry_alone(db: &Db, op: Op) {
    match op {
        Op::Register(r, reply) => {
            let _ = reply.send(db.register_device(&r).await);
        }
        Op::CheckIn(c, reply) => {
            let _ = reply.send(db.check_in(&c).await);
        }
    }
}
