//! The database layer: connecting (SQLite embedded, PostgreSQL by URL), migrating under a lock,
//! and every read and write the server makes. Only this crate and `ums-migrations` talk to sea-orm.
//!
//! Every write is one transaction. Writes from the device hot path (registrations and check-ins)
//! go through a [`batch::Batcher`] that commits many of them in one transaction, because a storm
//! of devices at 08:00 would otherwise pay one commit each.

pub mod admins;
pub mod archive;
pub mod audit;
pub mod batch;
pub mod devices;
mod entity;
pub mod jobs;
pub mod network;
pub mod settings;
pub mod swp;
pub mod update_mode;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

pub use ums_migrations::{
    HistoryEntry, MigrateError, Outcome as MigrateOutcome, Pending, Phase, RunOptions,
    SchemaVersion, latest as latest_schema,
};

/// Errors of the database layer. The messages are meant for administrators and devices.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The named object does not exist, e.g. "device 42".
    #[error("{0} not found")]
    NotFound(String),
    /// The write would break a rule of the data, e.g. a duplicate name or a folder in use.
    #[error("{0}")]
    Conflict(String),
    /// A value that cannot be stored.
    #[error("{0}")]
    Invalid(String),
    /// A known unit id registering with a secret other than its own.
    #[error(
        "unit {0} is registered with another credential: an administrator must reset the device's credential before it can register again"
    )]
    CredentialMismatch(String),
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    /// The database does not answer (down, restarting, or the network to it is cut).
    #[error("the database cannot be reached: {0}")]
    Unreachable(String),
    /// The batch writer stopped (the server is shutting down).
    #[error("database writer is not running")]
    WriterGone,
}

/// The schema facts of this build that the server reports (version range, binary name).
pub mod schema {
    pub use ums_migrations::{UPDATE_SERVICE, binary_version, latest, migrations, supported_range};
}

pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// Which database engine a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// A connection pool to the suite's database.
#[derive(Clone, Debug)]
pub struct Db {
    conn: DatabaseConnection,
    backend: Backend,
    /// The URL it was opened with, for connections outside the pool (LISTEN).
    url: String,
}

/// The URL of the embedded database in a data directory.
pub fn sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", data_dir.join("ums.db").display())
}

/// How long a call waits for a database connection.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

impl Db {
    /// Connects to `url` (`sqlite://PATH?mode=rwc` or `postgres://...`) without migrating.
    pub async fn connect(url: &str) -> Result<Self> {
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(DbError::Invalid(format!(
                "unsupported database url `{}`: use sqlite://PATH or postgres://USER@HOST/DB",
                redact(url)
            )));
        };
        let mut opts = ConnectOptions::new(url.to_owned());
        opts.sqlx_logging(false)
            .connect_timeout(Duration::from_secs(10))
            // A call waits this long for a connection, also while the database is down:
            // devices get "unavailable" and retry (elsewhere) instead of hanging.
            .acquire_timeout(ACQUIRE_TIMEOUT);
        match backend {
            Backend::Sqlite => {
                // WAL: readers never wait for the writer; NORMAL sync is durable across a
                // process crash and loses at most the last commits on power loss.
                SqliteConnectOptions::from_str(url)
                    .map_err(|e| DbError::Invalid(format!("invalid sqlite url: {e}")))?;
                opts.max_connections(8).min_connections(1);
                opts.map_sqlx_sqlite_opts(|o| {
                    o.journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Normal)
                        .busy_timeout(Duration::from_secs(30))
                        .foreign_keys(true)
                        .create_if_missing(true)
                });
            }
            Backend::Postgres => {
                opts.max_connections(32).min_connections(2);
                // A peer that dies silently is noticed by the server side within seconds.
                opts.map_sqlx_postgres_opts(|o| {
                    o.options([
                        ("tcp_keepalives_idle", "5"),
                        ("tcp_keepalives_interval", "2"),
                        ("tcp_keepalives_count", "3"),
                        ("tcp_user_timeout", "10000"),
                    ])
                });
            }
        }
        let conn = sea_orm::Database::connect(opts).await?;
        Ok(Self {
            conn,
            backend,
            url: url.to_owned(),
        })
    }

    /// Connects and brings the schema to the newest version this build knows. Refuses a
    /// database whose schema is newer, naming both versions.
    pub async fn open(url: &str) -> Result<(Self, MigrateOutcome)> {
        let db = Self::connect(url).await?;
        let outcome = ums_migrations::run(&db.conn).await?;
        Ok((db, outcome))
    }

    /// Applies the pending migrations `opts` allows (see [`ums_migrations::run_with`]).
    pub async fn migrate(&self, opts: &RunOptions) -> Result<MigrateOutcome> {
        Ok(ums_migrations::run_with(&self.conn, opts).await?)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The schema version the database records.
    pub async fn schema_version(&self) -> Result<Option<SchemaVersion>> {
        Ok(ums_migrations::read_version(&self.conn).await?)
    }

    /// Starts a write transaction. On SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`), so concurrent writers wait for each other instead of failing on upgrade.
    pub(crate) async fn write_tx(&self) -> Result<DatabaseTransaction> {
        Ok(match self.backend {
            Backend::Sqlite => {
                self.conn
                    .begin_with_options(TransactionOptions {
                        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                        ..Default::default()
                    })
                    .await?
            }
            Backend::Postgres => self.conn.begin().await?,
        })
    }

    pub(crate) fn conn(&self) -> &DatabaseConnection {
        &self.conn
    }

    /// Records another schema version, as a newer server would. For tests of the version guard.
    #[doc(hidden)]
    pub async fn debug_set_schema_version(&self, v: SchemaVersion) -> Result<()> {
        use sea_orm::sea_query::{Alias, Query};
        let stmt = Query::update()
            .table(Alias::new("schema_version"))
            .values([
                (Alias::new("major"), i64::from(v.major).into()),
                (Alias::new("minor"), i64::from(v.minor).into()),
            ])
            .to_owned();
        self.conn.execute(&stmt).await?;
        Ok(())
    }

    /// The connection pool now: connections open, idle among them, and the most it opens.
    pub fn pool_stats(&self) -> PoolStats {
        let (size, idle, max) = match self.backend {
            Backend::Sqlite => {
                let p = self.conn.get_sqlite_connection_pool();
                (p.size(), p.num_idle(), p.options().get_max_connections())
            }
            Backend::Postgres => {
                let p = self.conn.get_postgres_connection_pool();
                (p.size(), p.num_idle(), p.options().get_max_connections())
            }
        };
        PoolStats {
            open: size,
            idle: idle as u32,
            max,
        }
    }

    /// Times one round trip to the database (`SELECT` of its clock).
    pub async fn ping(&self) -> Result<Duration> {
        let start = std::time::Instant::now();
        self.db_now().await?;
        Ok(start.elapsed())
    }

    /// Records a step of a newer release as its binary would (schema version and history
    /// row). For tests of the compatibility check.
    #[doc(hidden)]
    pub async fn debug_record_step(&self, v: SchemaVersion, phase: Phase) -> Result<()> {
        self.debug_set_schema_version(v).await?;
        use sea_orm::sea_query::{Alias, Query};
        let stmt = Query::insert()
            .into_table(Alias::new("schema_history"))
            .columns([
                Alias::new("version"),
                Alias::new("applied_at"),
                Alias::new("name"),
                Alias::new("phase"),
                Alias::new("binary_version"),
            ])
            .values_panic([
                v.to_string().into(),
                now_ms().into(),
                "newer_release_step".into(),
                phase.as_str().into(),
                "newer".into(),
            ])
            .to_owned();
        self.conn.execute(&stmt).await?;
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(self) -> Result<()> {
        Ok(self.conn.close().await?)
    }
}

/// Connections of the pool, from [`Db::pool_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub open: u32,
    pub idle: u32,
    pub max: u32,
}

/// Takes the next settings generation: every settings change stamps the objects it touches
/// with it, so a device's settings revision is the newest stamp among the objects it depends on.
pub(crate) async fn next_generation<C: ConnectionTrait>(tx: &C) -> Result<i64> {
    use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
    let stmt = Query::update()
        .table(Alias::new("counters"))
        .value(
            Alias::new("value"),
            Expr::col(Alias::new("value")).add(1i64),
        )
        .and_where(Expr::col(Alias::new("name")).eq("settings_generation"))
        .returning_col(Alias::new("value"))
        .to_owned();
    let row = tx
        .query_one(&stmt)
        .await?
        .ok_or_else(|| DbError::NotFound("settings generation counter".into()))?;
    Ok(row.try_get("", "value")?)
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A database URL with its password replaced, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl DbError {
    /// Whether the error says the database cannot be reached, rather than anything about the
    /// data: no connection could be opened or acquired, or the one in use broke.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            DbError::Unreachable(_) | DbError::Db(DbErr::ConnectionAcquire(_) | DbErr::Conn(_))
        )
    }
}

/// Whether a database error is a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &DbErr) -> bool {
    matches!(
        e.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://ums:secret@db:5432/ums"),
            "postgres://ums:***@db:5432/ums"
        );
        assert_eq!(redact("postgres://ums@db/ums"), "postgres://ums@db/ums");
        assert_eq!(redact("sqlite:///x.db"), "sqlite:///x.db");
    }
}
