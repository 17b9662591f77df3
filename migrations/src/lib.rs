//! Versioned schema migrations, one module each, written once for SQLite and PostgreSQL with
//! backend-neutral builders.
//!
//! The database records its schema version as `major.minor` in `schema_version`. [`run`] applies
//! the pending migrations under a database lock (a PostgreSQL advisory lock; an immediate
//! transaction on SQLite), so two servers starting together never migrate at once, and refuses a
//! database whose schema is newer than this build knows: it never downgrades silently.
//!
//! A minor version adds to the schema compatibly (new tables, nullable columns): a server of
//! the previous minor version keeps working on it. A major version is incompatible.

mod m0001_initial;
mod m0002_cluster;
mod m0003_shared_workplace;
mod m0004_applied_revision;
mod m0006_swp_sessions;

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

/// One migration: the version it brings the schema to and the statements that do it.
pub struct Migration {
    pub version: SchemaVersion,
    pub name: &'static str,
    pub statements: fn(DbBackend) -> Vec<Statement>,
}

/// Every migration, oldest first.
pub fn migrations() -> &'static [Migration] {
    const ALL: &[Migration] = &[
        Migration {
            version: SchemaVersion::new(1, 0),
            name: "initial",
            statements: m0001_initial::statements,
        },
        Migration {
            version: SchemaVersion::new(1, 1),
            name: "cluster",
            statements: m0002_cluster::statements,
        },
        Migration {
            version: SchemaVersion::new(1, 2),
            name: "shared_workplace",
            statements: m0003_shared_workplace::statements,
        },
        Migration {
            version: SchemaVersion::new(1, 3),
            name: "applied_revision",
            statements: m0004_applied_revision::statements,
        },
        Migration {
            version: SchemaVersion::new(1, 5),
            name: "swp_sessions",
            statements: m0006_swp_sessions::statements,
        },
    ];
    ALL
}

/// The newest schema version this build knows.
pub fn latest() -> SchemaVersion {
    migrations()
        .last()
        .map(|m| m.version)
        .unwrap_or(SchemaVersion::new(0, 0))
}

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "the database schema is version {database}, newer than version {known} that this server knows: upgrade the server, never downgrade the database"
    )]
    NewerSchema {
        database: SchemaVersion,
        known: SchemaVersion,
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

/// What [`run`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Version before, `None` on an empty database.
    pub from: Option<SchemaVersion>,
    pub to: SchemaVersion,
    pub applied: Vec<SchemaVersion>,
}

/// Advisory lock key for migrations on PostgreSQL ("umsmigr" in ASCII).
const PG_LOCK_KEY: i64 = 0x0075_6d73_6d69_6772;

/// Brings the schema to [`latest`] in one transaction under the migration lock.
pub async fn run(db: &DatabaseConnection) -> Result<Outcome, MigrateError> {
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
        tx.rollback().await?;
        return Err(MigrateError::NewerSchema {
            database: current,
            known,
        });
    }
    let mut applied = Vec::new();
    for m in migrations() {
        if current.is_some_and(|c| c >= m.version) {
            continue;
        }
        for stmt in (m.statements)(backend) {
            tx.execute_raw(stmt)
                .await
                .map_err(|source| MigrateError::Step {
                    version: m.version,
                    name: m.name,
                    source,
                })?;
        }
        write_version(&tx, m.version).await?;
        applied.push(m.version);
    }
    tx.commit().await?;
    Ok(Outcome {
        from: current,
        to: current.map_or(known, |c| c.max(known)),
        applied,
    })
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

async fn write_version<C: ConnectionTrait>(db: &C, v: SchemaVersion) -> Result<(), DbErr> {
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
    let history = Query::insert()
        .into_table(Alias::new("schema_history"))
        .columns([Alias::new("version"), Alias::new("applied_at")])
        .values_panic([v.to_string().into(), now.into()])
        .to_owned();
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

    #[test]
    fn migrations_are_strictly_increasing() {
        let all = migrations();
        assert!(all.windows(2).all(|w| w[0].version < w[1].version));
        assert_eq!(latest(), all[all.len() - 1].version);
    }
}
