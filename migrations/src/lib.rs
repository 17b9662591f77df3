//! Versioned schema migrations, one module each, written once for SQLite and PostgreSQL with
//! backend-neutral builders.
//!
//! The database records its schema version as `major.minor` in `schema_version`. [`run`] applies
//! the pending migrations under a database lock (a PostgreSQL advisory lock; an immediate
//! transaction on SQLite), so two servers starting together never migrate at once, and refuses a
//! database whose schema is newer than this build knows: it never downgrades silently.
//!
//! Every migration declares its [`Phase`]. An *expand* step only adds (a table, a nullable
//! column): binaries that do not know it keep working on the schema it leaves. A *contract* step
//! removes or changes what older binaries use, so it runs only when none of them is left
//! ([`RunOptions::contract`]). Each applied step is recorded in `schema_history` with its phase
//! (from 1.4 on), so a binary that meets a schema newer than it knows reads there whether only
//! expand steps lie beyond it: then it runs; a contract step beyond it, or a new major version
//! (always incompatible), refuses the start with a message naming the versions. Downgrades are
//! never made.

mod m0001_initial;
mod m0002_cluster;
mod m0003_shared_workplace;
mod m0004_applied_revision;
mod m0005_update_service;
mod m0006_swp_sessions;
mod m0007_audit;
mod m0008_releases;
mod m0009_release_rollout;
#[cfg(any(debug_assertions, feature = "test-migrations"))]
mod next;

use std::fmt;
use std::str::FromStr;

use sea_orm::sea_query::{Alias, ColumnDef, Query, Table};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionOptions,
    TransactionTrait,
};

/// A schema version, `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SchemaVersion {
    pub major: u32,
    pub minor: u32,
}

impl SchemaVersion {
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }
}

impl fmt::Display for SchemaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for SchemaVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (major, minor) = s
            .split_once('.')
            .ok_or_else(|| format!("schema version `{s}` is not major.minor"))?;
        let parse = |p: &str| {
            p.parse::<u32>()
                .map_err(|_| format!("schema version `{s}` is not major.minor"))
        };
        Ok(Self::new(parse(major)?, parse(minor)?))
    }
}

/// Whether older binaries keep working on the schema a migration leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Additive: binaries that do not know the step keep working.
    Expand,
    /// Removes or changes what older binaries use: runs once none of them is left.
    Contract,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expand => "expand",
            Self::Contract => "contract",
        }
    }

    /// Reads a phase recorded in `schema_history`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "expand" => Some(Self::Expand),
            "contract" => Some(Self::Contract),
            _ => None,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One migration: the version it brings the schema to, its phase and the statements that do it.
pub struct Migration {
    pub version: SchemaVersion,
    pub name: &'static str,
    pub phase: Phase,
    pub statements: fn(DbBackend) -> Vec<Statement>,
}

impl fmt::Debug for Migration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ({})", self.version, self.name, self.phase)
    }
}

/// The schema version from which `schema_history` records each step's phase, name and binary.
pub const UPDATE_SERVICE: SchemaVersion = SchemaVersion::new(1, 4);

/// Every migration, oldest first. Debug builds (and builds with the `test-migrations` feature)
/// add the test-only steps of [`next`] when `UMS_TEST_SCHEMA_NEXT` names them, so tests run one
/// binary as the next release.
pub fn migrations() -> &'static [Migration] {
    #[cfg(any(debug_assertions, feature = "test-migrations"))]
    {
        static WITH_NEXT: std::sync::OnceLock<Vec<Migration>> = std::sync::OnceLock::new();
        WITH_NEXT.get_or_init(|| {
            let mut all: Vec<Migration> = RELEASED.iter().map(Migration::copy).collect();
            all.extend(next::from_env());
            all
        })
    }
    #[cfg(not(any(debug_assertions, feature = "test-migrations")))]
    {
        RELEASED
    }
}

/// What this build calls itself in the registry and the schema history: the crate version, with
/// the test-only release it plays when `UMS_TEST_SCHEMA_NEXT` is set.
pub fn binary_version(pkg_version: &str) -> String {
    #[cfg(any(debug_assertions, feature = "test-migrations"))]
    if let Some(tag) = next::tag() {
        return format!("{pkg_version}+{tag}");
    }
    pkg_version.to_owned()
}

impl Migration {
    #[cfg(any(debug_assertions, feature = "test-migrations"))]
    fn copy(&self) -> Self {
        Self {
            version: self.version,
            name: self.name,
            phase: self.phase,
            statements: self.statements,
        }
    }
}

/// The migrations of this release.
const RELEASED: &[Migration] = {
    const ALL: &[Migration] = &[
        Migration {
            version: SchemaVersion::new(1, 0),
            name: "initial",
            phase: Phase::Expand,
            statements: m0001_initial::statements,
        },
        Migration {
            version: SchemaVersion::new(1, 1),
            name: "cluster",
            phase: Phase::Expand,
            statements: m0002_cluster::statements,
        },
        Migration {
            version: SchemaVersion::new(1, 2),
            name: "shared_workplace",
            phase: Phase::Expand,
            statements: m0003_shared_workplace::statements,
        },
        Migration {
            version: SchemaVersion::new(1, 3),
            name: "applied_revision",
            phase: Phase::Expand,
            statements: m0004_applied_revision::statements,
        },
        Migration {
            version: UPDATE_SERVICE,
            name: "update_service",
            phase: Phase::Expand,
            statements: m0005_update_service::statements,
        },
        Migration {
            version: SchemaVersion::new(1, 5),
            name: "swp_sessions",
            phase: Phase::Expand,
            statements: m0006_swp_sessions::statements,
        },
        Migration {
            version: SchemaVersion::new(1, 6),
            name: "audit",
            phase: Phase::Expand,
            statements: m0007_audit::statements,
        },
        Migration {
            version: SchemaVersion::new(1, 7),
            name: "releases",
            phase: Phase::Expand,
            statements: m0008_releases::statements,
        },
        Migration {
            version: SchemaVersion::new(1, 8),
            name: "release_rollout",
            phase: Phase::Expand,
            statements: m0009_release_rollout::statements,
        },
    ];
    ALL
};

/// The newest schema version this build knows.
pub fn latest() -> SchemaVersion {
    migrations()
        .last()
        .map(|m| m.version)
        .unwrap_or(SchemaVersion::new(0, 0))
}

/// The range of schema versions this build runs on without migrating further: from the version
/// before its trailing contract steps (which wait until no older binary is left) to [`latest`];
/// beyond it, any schema that only expanded.
pub fn supported_range() -> (SchemaVersion, SchemaVersion) {
    let all = migrations();
    let trailing = all
        .iter()
        .rev()
        .take_while(|m| m.phase == Phase::Contract)
        .count();
    let min = all
        .len()
        .checked_sub(trailing + 1)
        .map(|i| all[i].version)
        .unwrap_or_else(latest);
    (min, latest())
}

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "the database schema is version {database}, newer than version {known} that this server knows, and {reason}: upgrade this server to a release that knows schema {database}; the database is never downgraded"
    )]
    NewerSchema {
        database: SchemaVersion,
        known: SchemaVersion,
        /// Why this server cannot run on it (a contract step, a new major version).
        reason: String,
    },
    #[error("the database records an unreadable schema version: {0}")]
    BadVersion(String),
    #[error("migration to {version} ({name}) failed: {source}")]
    Step {
        version: SchemaVersion,
        name: &'static str,
        source: DbErr,
    },
    #[error("database error during migration: {0}")]
    Db(#[from] DbErr),
}

/// A migration that [`run`] left for later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub version: SchemaVersion,
    pub name: &'static str,
    pub phase: Phase,
}

/// What [`run`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Version before, `None` on an empty database.
    pub from: Option<SchemaVersion>,
    /// Version after.
    pub to: SchemaVersion,
    pub applied: Vec<SchemaVersion>,
    /// Steps this build knows that are not applied: from the first contract step that
    /// [`RunOptions::contract`] held back.
    pub pending: Vec<Pending>,
    /// The database is ahead of this build, beyond it only by expand steps.
    pub ahead: bool,
}

/// How [`run_with`] migrates.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Apply contract steps too. Off while older binaries may still run on the database.
    pub contract: bool,
    /// Recorded in the history: the binary that applied each step ("0.3.0")...
    pub binary_version: String,
    /// ...and the process that did ("server/3f2a...").
    pub applied_by: String,
    /// Stop at the first major step (a major upgrade waits until its server is alone).
    pub stop_at_major: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            contract: true,
            binary_version: binary_version("unknown"),
            applied_by: String::new(),
            stop_at_major: false,
        }
    }
}

/// Advisory lock key for migrations on PostgreSQL ("umsmigr" in ASCII).
const PG_LOCK_KEY: i64 = 0x0075_6d73_6d69_6772;

/// Brings the schema to [`latest`], contract steps included, in one transaction under the
/// migration lock.
pub async fn run(db: &DatabaseConnection) -> Result<Outcome, MigrateError> {
    run_with(db, &RunOptions::default()).await
}

/// Applies the pending migrations that `opts` allows, in one transaction under the migration
/// lock (a PostgreSQL advisory lock; an immediate transaction on SQLite), so exactly one process
/// migrates and the others then find the work done. On a schema newer than this build, checks
/// that only expand steps lie beyond it.
pub async fn run_with(db: &DatabaseConnection, opts: &RunOptions) -> Result<Outcome, MigrateError> {
    let backend = db.get_database_backend();
    let tx = match backend {
        DbBackend::Sqlite => {
            db.begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await?
        }
        _ => {
            let tx = db.begin().await?;
            tx.execute_raw(Statement::from_sql_and_values(
                backend,
                "SELECT pg_advisory_xact_lock($1)",
                [PG_LOCK_KEY.into()],
            ))
            .await?;
            tx
        }
    };
    let current = read_version(&tx).await?;
    let known = latest();
    if let Some(current) = current
        && current > known
    {
        let history = read_history(&tx).await?;
        let verdict = check_compatible(current, known, &history);
        tx.rollback().await?;
        verdict?;
        return Ok(Outcome {
            from: Some(current),
            to: current,
            applied: Vec::new(),
            pending: Vec::new(),
            ahead: true,
        });
    }
    let mut applied = Vec::new();
    let mut pending = Vec::new();
    let mut at = current;
    for m in migrations() {
        if current.is_some_and(|c| c >= m.version) {
            continue;
        }
        let major_step = at.is_some_and(|a| m.version.major > a.major);
        if !pending.is_empty()
            || (m.phase == Phase::Contract && !opts.contract)
            || (major_step && opts.stop_at_major)
        {
            pending.push(Pending {
                version: m.version,
                name: m.name,
                phase: m.phase,
            });
            continue;
        }
        let started = std::time::Instant::now();
        for stmt in (m.statements)(backend) {
            tx.execute_raw(stmt)
                .await
                .map_err(|source| MigrateError::Step {
                    version: m.version,
                    name: m.name,
                    source,
                })?;
        }
        write_version(&tx, m, opts, started.elapsed()).await?;
        applied.push(m.version);
        at = Some(m.version);
    }
    tx.commit().await?;
    Ok(Outcome {
        from: current,
        to: at.unwrap_or(known),
        applied,
        pending,
        ahead: false,
    })
}

/// Whether a build that knows schemas up to `known` runs on a database at `database`, judged
/// by the steps the history records beyond `known`.
pub fn check_compatible(
    database: SchemaVersion,
    known: SchemaVersion,
    history: &[HistoryEntry],
) -> Result<(), MigrateError> {
    let refuse = |reason: String| {
        Err(MigrateError::NewerSchema {
            database,
            known,
            reason,
        })
    };
    if database.major > known.major {
        return refuse(format!(
            "major version {} is incompatible with {}",
            database.major, known.major
        ));
    }
    let beyond: Vec<&HistoryEntry> = history.iter().filter(|h| h.version > known).collect();
    let mut seen = known;
    for h in &beyond {
        match h.phase {
            Some(Phase::Expand) => seen = seen.max(h.version),
            Some(Phase::Contract) => {
                return refuse(format!(
                    "step {} ({}) is a contract step that changed what this server uses",
                    h.version,
                    h.name.as_deref().unwrap_or("unnamed")
                ));
            }
            None => {
                return refuse(format!(
                    "the history does not say whether step {} only expanded the schema",
                    h.version
                ));
            }
        }
    }
    if seen < database {
        return refuse(format!(
            "the history does not record the steps up to {database}"
        ));
    }
    Ok(())
}

/// One row of `schema_history`: a step applied to the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub version: SchemaVersion,
    pub applied_at: i64,
    /// From 1.4 on (earlier rows were backfilled by 1.4).
    pub name: Option<String>,
    pub phase: Option<Phase>,
    pub binary_version: Option<String>,
    pub applied_by: Option<String>,
    pub duration_ms: Option<i64>,
}

/// The schema history, oldest first; empty on a database without a schema.
pub async fn read_history<C: ConnectionTrait>(db: &C) -> Result<Vec<HistoryEntry>, MigrateError> {
    let Some(current) = read_version(db).await? else {
        return Ok(Vec::new());
    };
    let backend = db.get_database_backend();
    let full = current >= UPDATE_SERVICE;
    let sql = if full {
        "SELECT version, applied_at, name, phase, binary_version, applied_by, duration_ms FROM schema_history ORDER BY applied_at, version"
    } else {
        "SELECT version, applied_at FROM schema_history ORDER BY applied_at, version"
    };
    let rows = db
        .query_all_raw(Statement::from_string(backend, sql))
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let version: String = r.try_get("", "version")?;
        let version = version.parse().map_err(MigrateError::BadVersion)?;
        let opt = |col: &str| -> Result<Option<String>, DbErr> {
            if full { r.try_get("", col) } else { Ok(None) }
        };
        out.push(HistoryEntry {
            version,
            applied_at: r.try_get("", "applied_at")?,
            name: opt("name")?,
            phase: opt("phase")?.as_deref().and_then(Phase::parse),
            binary_version: opt("binary_version")?,
            applied_by: opt("applied_by")?,
            duration_ms: if full {
                r.try_get("", "duration_ms")?
            } else {
                None
            },
        });
    }
    out.sort_by_key(|h| h.version);
    Ok(out)
}

/// Reads the schema version a database records; `None` when it has no schema yet.
pub async fn read_version<C: ConnectionTrait>(
    db: &C,
) -> Result<Option<SchemaVersion>, MigrateError> {
    let backend = db.get_database_backend();
    let exists_sql = match backend {
        DbBackend::Sqlite => {
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        }
        _ => {
            "SELECT 1 FROM information_schema.tables WHERE table_name = 'schema_version' AND table_schema = current_schema()"
        }
    };
    if db
        .query_one_raw(Statement::from_string(backend, exists_sql))
        .await?
        .is_none()
    {
        return Ok(None);
    }
    let row = db
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT major, minor FROM schema_version WHERE id = 1",
        ))
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let major: i64 = row.try_get("", "major")?;
    let minor: i64 = row.try_get("", "minor")?;
    let conv = |v: i64| u32::try_from(v).map_err(|_| MigrateError::BadVersion(v.to_string()));
    Ok(Some(SchemaVersion::new(conv(major)?, conv(minor)?)))
}

async fn write_version<C: ConnectionTrait>(
    db: &C,
    m: &Migration,
    opts: &RunOptions,
    took: std::time::Duration,
) -> Result<(), DbErr> {
    let v = m.version;
    let now = now_ms();
    let delete = Query::delete()
        .from_table(Alias::new("schema_version"))
        .to_owned();
    db.execute(&delete).await?;
    let insert = Query::insert()
        .into_table(Alias::new("schema_version"))
        .columns([
            Alias::new("id"),
            Alias::new("major"),
            Alias::new("minor"),
            Alias::new("updated_at"),
        ])
        .values_panic([
            1i64.into(),
            i64::from(v.major).into(),
            i64::from(v.minor).into(),
            now.into(),
        ])
        .to_owned();
    db.execute(&insert).await?;
    let mut history = Query::insert()
        .into_table(Alias::new("schema_history"))
        .to_owned();
    if v >= UPDATE_SERVICE {
        history
            .columns([
                Alias::new("version"),
                Alias::new("applied_at"),
                Alias::new("name"),
                Alias::new("phase"),
                Alias::new("binary_version"),
                Alias::new("applied_by"),
                Alias::new("duration_ms"),
            ])
            .values_panic([
                v.to_string().into(),
                now.into(),
                m.name.into(),
                m.phase.as_str().into(),
                opts.binary_version.clone().into(),
                opts.applied_by.clone().into(),
                (took.as_millis() as i64).into(),
            ]);
    } else {
        // The columns come with 1.4, which fills them in for these rows.
        history
            .columns([Alias::new("version"), Alias::new("applied_at")])
            .values_panic([v.to_string().into(), now.into()]);
    }
    db.execute(&history).await?;
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Column, index and foreign-key helpers shared by the migrations.
pub(crate) mod col {
    use super::*;
    use sea_orm::sea_query::{
        ForeignKey, ForeignKeyAction, ForeignKeyCreateStatement, Index, IndexCreateStatement,
    };

    /// An index on `table(cols)`.
    pub fn index(name: &str, table: &str, cols: &[&str], unique: bool) -> IndexCreateStatement {
        let mut idx = Index::create();
        idx.name(name).table(Alias::new(table));
        for c in cols {
            idx.col(Alias::new(*c));
        }
        if unique {
            idx.unique();
        }
        idx.to_owned()
    }

    /// A foreign key from `from_table.from_col` to `to_table.to_col`.
    pub fn fk(
        from_table: &str,
        from_col: &str,
        to_table: &str,
        to_col: &str,
        on_delete: ForeignKeyAction,
    ) -> ForeignKeyCreateStatement {
        ForeignKey::create()
            .from(Alias::new(from_table), Alias::new(from_col))
            .to(Alias::new(to_table), Alias::new(to_col))
            .on_delete(on_delete)
            .to_owned()
    }

    pub fn id() -> ColumnDef {
        ColumnDef::new(Alias::new("id"))
            .big_integer()
            .not_null()
            .auto_increment()
            .primary_key()
            .to_owned()
    }
    pub fn big(name: &str) -> ColumnDef {
        ColumnDef::new(Alias::new(name))
            .big_integer()
            .not_null()
            .to_owned()
    }
    pub fn big_null(name: &str) -> ColumnDef {
        ColumnDef::new(Alias::new(name))
            .big_integer()
            .null()
            .to_owned()
    }
    pub fn text(name: &str) -> ColumnDef {
        ColumnDef::new(Alias::new(name))
            .text()
            .not_null()
            .to_owned()
    }
    pub fn text_null(name: &str) -> ColumnDef {
        ColumnDef::new(Alias::new(name)).text().null().to_owned()
    }
    pub fn boolean(name: &str) -> ColumnDef {
        ColumnDef::new(Alias::new(name))
            .boolean()
            .not_null()
            .default(false)
            .to_owned()
    }
    pub fn table(name: &str) -> sea_orm::sea_query::TableCreateStatement {
        Table::create().table(Alias::new(name)).to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order() {
        let v: SchemaVersion = "1.10".parse().expect("parse");
        assert_eq!(v, SchemaVersion::new(1, 10));
        assert!(SchemaVersion::new(1, 10) > SchemaVersion::new(1, 9));
        assert!(SchemaVersion::new(2, 0) > SchemaVersion::new(1, 99));
        assert!("1".parse::<SchemaVersion>().is_err());
        assert!("a.b".parse::<SchemaVersion>().is_err());
    }

    fn entry(v: (u32, u32), phase: Option<Phase>) -> HistoryEntry {
        HistoryEntry {
            version: SchemaVersion::new(v.0, v.1),
            applied_at: 0,
            name: Some("step".into()),
            phase,
            binary_version: None,
            applied_by: None,
            duration_ms: None,
        }
    }

    #[test]
    fn an_older_build_runs_on_expand_steps_only() {
        let known = SchemaVersion::new(1, 4);
        let history = [
            entry((1, 4), Some(Phase::Expand)),
            entry((1, 5), Some(Phase::Expand)),
            entry((1, 6), Some(Phase::Contract)),
            entry((2, 0), Some(Phase::Contract)),
        ];
        assert!(check_compatible(SchemaVersion::new(1, 5), known, &history[..2]).is_ok());
        let err = check_compatible(SchemaVersion::new(1, 6), known, &history[..3])
            .expect_err("contract beyond the build")
            .to_string();
        assert!(
            err.contains("1.6") && err.contains("1.4") && err.contains("contract"),
            "{err}"
        );
        let err = check_compatible(SchemaVersion::new(2, 0), known, &history)
            .expect_err("new major")
            .to_string();
        assert!(err.contains("2.0") && err.contains("major"), "{err}");
        // A version the history does not explain (or explains without a phase) is refused.
        assert!(check_compatible(SchemaVersion::new(1, 7), known, &history[..2]).is_err());
        assert!(check_compatible(SchemaVersion::new(1, 5), known, &[entry((1, 5), None)]).is_err());
    }

    #[test]
    fn major_steps_are_contract_steps() {
        for w in RELEASED.windows(2) {
            if w[1].version.major > w[0].version.major {
                assert_eq!(w[1].phase, Phase::Contract, "{:?}", w[1]);
            }
        }
        for w in migrations().windows(2) {
            if w[1].version.major > w[0].version.major {
                assert_eq!(w[1].phase, Phase::Contract, "{:?}", w[1]);
            }
        }
    }

    #[test]
    fn migrations_are_strictly_increasing() {
        let all = migrations();
        assert!(all.windows(2).all(|w| w[0].version < w[1].version));
        assert_eq!(latest(), all[all.len() - 1].version);
    }
}
