//! The HA network's shared state: the network CA and network tokens, the process registry,
//! leases of network-wide singletons, replicated files, and database messaging (LISTEN/NOTIFY).
//!
//! Times that servers compare with each other (heartbeats, lease expiry) come from the database's
//! clock, never from the caller's, so a server with a wrong clock cannot steal a lease or make a
//! live peer look dead.
//!
//! One file per concern: `identity` (the network CA and network tokens), `registry` (process
//! rows, heartbeats, status), `leases` (leases with fencing tokens, the scheduler's sweep),
//! `events` (NOTIFY/LISTEN and the change counters), `files` (replicated file records and
//! their replicas), `releases` (software releases, nodes' update states and steps) and `update` (the schema history and the update log).

mod events;
mod files;
mod identity;
mod leases;
mod registry;
mod releases;
mod update;

use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait, Value};

pub use events::{EVENTS_CHANNEL, EventListener};
pub use files::{FileRow, ReplicaRow};
pub use identity::{NetworkCa, NewToken, TokenRow};
pub use registry::ProcessRow;
pub use releases::{MAX_CONCURRENCY, ReleaseLogRow, ReleaseNodeRow, ReleaseRow, RolloutRow};
pub use update::UpdateLogRow;

use crate::{Backend, Db, DbError, Result};

impl Db {
    /// Builds a statement from SQL written with `$1, $2, …` placeholders, for either backend.
    pub(crate) fn stmt(&self, sql: &str, values: Vec<Value>) -> Statement {
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

    /// Runs `f` in a read transaction; for tests that need a consistent view.
    #[doc(hidden)]
    pub async fn debug_begin(&self) -> Result<sea_orm::DatabaseTransaction> {
        Ok(self.conn().begin().await?)
    }
}
