//! A consistent, backend-neutral export of the whole database and its import into an empty one:
//! what backups are made of, and how a single node moves from SQLite to PostgreSQL.
//!
//! The tables and their columns are read from the database's own catalog (SQLite's pragmas,
//! PostgreSQL's `information_schema`), so every table a migration adds is exported without a
//! list to keep current. [`Db::export_snapshot`] reads every table in one read transaction
//! (REPEATABLE READ on PostgreSQL; on SQLite one transaction, whose first read fixes the
//! snapshot), so the export is one moment of the database. [`Db::import_snapshot`] writes it in
//! one transaction: a failed import leaves the target as it was.
//!
//! Values are stored as they are: the network CA key and token stay sealed, passwords stay
//! argon2id hashes and device secrets sha256 hashes. Tables come in an order that satisfies the
//! foreign keys (parents first; rows of a table that references itself, such as folders, parents
//! first too), and the next id of every auto-increment column is kept, so ids continue after the
//! import as they would have on the source, deleted ids included.
//!
//! `schema_version` and `schema_history` are not part of a snapshot: the target records its own
//! migrations, and the snapshot names its schema version, which must be the target's.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sea_orm::sea_query::{Alias, Expr, Query};
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseTransaction, DbBackend, IsolationLevel, QueryResult,
    Statement, TransactionTrait, Value,
};
use serde::{Deserialize, Serialize};

use crate::{Backend, Db, DbError, Result};

/// Tables that describe the schema rather than hold data: never exported, never replaced.
const SCHEMA_TABLES: &[&str] = &["schema_version", "schema_history"];
/// Tables a fresh database already fills (counters start at 1): ignored when asking whether a
/// database is empty, replaced by an import.
const SEEDED_TABLES: &[&str] = &["counters"];
/// Most bound values in one INSERT (SQLite's limit is 32766, PostgreSQL's 65535).
const MAX_PARAMS: usize = 4000;

/// Every table of a database at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The schema version the rows belong to, `major.minor`.
    pub schema_version: String,
    /// The backend they were read from (`sqlite` or `postgres`), for information.
    pub backend: String,
    /// In an order that satisfies the foreign keys: a table comes after those it references.
    pub tables: Vec<TableData>,
}

/// The rows of one table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableData {
    pub name: String,
    pub columns: Vec<String>,
    /// One value per column: null, a boolean, an integer, a float or a string (text as is,
    /// binary as hex). Parents before children when the table references itself.
    pub rows: Vec<Vec<serde_json::Value>>,
    /// The next value of each auto-increment column, so ids continue after an import.
    #[serde(default)]
    pub next_ids: BTreeMap<String, i64>,
}

impl Snapshot {
    /// Rows per table.
    pub fn row_counts(&self) -> BTreeMap<String, u64> {
        self.tables
            .iter()
            .map(|t| (t.name.clone(), t.rows.len() as u64))
            .collect()
    }

    pub fn table(&self, name: &str) -> Option<&TableData> {
        self.tables.iter().find(|t| t.name == name)
    }
}

impl TableData {
    /// The values of one column, row by row.
    pub fn column(&self, name: &str) -> Option<impl Iterator<Item = &serde_json::Value>> {
        let i = self.columns.iter().position(|c| c == name)?;
        Some(self.rows.iter().map(move |r| &r[i]))
    }
}

/// How a column's values are read and bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Integer,
    Text,
    Boolean,
    Real,
    Bytes,
}

#[derive(Debug, Clone)]
struct ColumnInfo {
    name: String,
    kind: Kind,
    /// Whether this column is an auto-increment key (SQLite `AUTOINCREMENT`, PostgreSQL
    /// serial or identity): the sequence name on PostgreSQL, "" on SQLite.
    sequence: Option<String>,
}

#[derive(Debug, Clone)]
struct TableInfo {
    name: String,
    columns: Vec<ColumnInfo>,
    /// Foreign keys: (column, referenced table, referenced column).
    foreign_keys: Vec<(String, String, String)>,
}

fn kind_of(table: &str, column: &str, declared: &str) -> Result<Kind> {
    let t = declared.to_ascii_lowercase();
    let kind = if t.contains("int") || t == "serial" || t == "bigserial" {
        Kind::Integer
    } else if t.contains("bool") {
        Kind::Boolean
    } else if t.contains("char") || t.contains("text") || t.contains("clob") {
        Kind::Text
    } else if t.contains("real") || t.contains("floa") || t.contains("doub") || t == "numeric" {
        Kind::Real
    } else if t.contains("blob") || t.contains("bytea") || t.contains("binary") {
        Kind::Bytes
    } else {
        return Err(DbError::Invalid(format!(
            "column {table}.{column} has type `{declared}`, which snapshots do not support"
        )));
    };
    Ok(kind)
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Reads the tables of the connected database from its catalog, in foreign-key order.
async fn catalog<C: ConnectionTrait>(c: &C, backend: Backend) -> Result<Vec<TableInfo>> {
    let db = c.get_database_backend();
    let mut tables = Vec::new();
    let names: Vec<String> = match backend {
        Backend::Sqlite => {
            let rows = c
                .query_all_raw(Statement::from_string(
                    db,
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
                ))
                .await?;
            rows.iter()
                .map(|r| r.try_get_by_index::<String>(0))
                .collect::<Result<_, _>>()?
        }
        Backend::Postgres => {
            let rows = c
                .query_all_raw(Statement::from_string(
                    db,
                    "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name",
                ))
                .await?;
            rows.iter()
                .map(|r| r.try_get_by_index::<String>(0))
                .collect::<Result<_, _>>()?
        }
    };
    for name in names {
        if SCHEMA_TABLES.contains(&name.as_str()) {
            continue;
        }
        let (columns, foreign_keys) = match backend {
            Backend::Sqlite => sqlite_table(c, &name).await?,
            Backend::Postgres => postgres_table(c, &name).await?,
        };
        tables.push(TableInfo {
            name,
            columns,
            foreign_keys,
        });
    }
    order_by_foreign_keys(tables)
}

async fn sqlite_table<C: ConnectionTrait>(
    c: &C,
    table: &str,
) -> Result<(Vec<ColumnInfo>, Vec<(String, String, String)>)> {
    let db = c.get_database_backend();
    let sql: String = c
        .query_one_raw(Statement::from_sql_and_values(
            db,
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
            [table.into()],
        ))
        .await?
        .map(|r| r.try_get_by_index::<String>(0))
        .transpose()?
        .unwrap_or_default();
    let autoincrement = sql.to_ascii_uppercase().contains("AUTOINCREMENT");
    let rows = c
        .query_all_raw(Statement::from_sql_and_values(
            db,
            "SELECT name, type, pk FROM pragma_table_info(?) ORDER BY cid",
            [table.into()],
        ))
        .await?;
    let mut columns = Vec::new();
    for r in rows {
        let name: String = r.try_get_by_index(0)?;
        let declared: String = r.try_get_by_index(1)?;
        let pk: i64 = r.try_get_by_index(2)?;
        let kind = kind_of(table, &name, &declared)?;
        let sequence = (autoincrement && pk == 1 && kind == Kind::Integer).then(String::new);
        columns.push(ColumnInfo {
            name,
            kind,
            sequence,
        });
    }
    let rows = c
        .query_all_raw(Statement::from_sql_and_values(
            db,
            "SELECT \"from\", \"table\", \"to\" FROM pragma_foreign_key_list(?)",
            [table.into()],
        ))
        .await?;
    let mut fks = Vec::new();
    for r in rows {
        let from: String = r.try_get_by_index(0)?;
        let to_table: String = r.try_get_by_index(1)?;
        // NULL when the key references the primary key implicitly.
        let to: Option<String> = r.try_get_by_index(2)?;
        fks.push((from, to_table, to.unwrap_or_else(|| "id".into())));
    }
    Ok((columns, fks))
}

async fn postgres_table<C: ConnectionTrait>(
    c: &C,
    table: &str,
) -> Result<(Vec<ColumnInfo>, Vec<(String, String, String)>)> {
    let db = c.get_database_backend();
    let rows = c
        .query_all_raw(Statement::from_sql_and_values(
            db,
            "SELECT column_name::text, data_type::text, pg_get_serial_sequence(quote_ident($1), column_name::text) \
             FROM information_schema.columns WHERE table_schema = current_schema() AND table_name::text = $1 \
             ORDER BY ordinal_position",
            [table.into()],
        ))
        .await?;
    let mut columns = Vec::new();
    for r in rows {
        let name: String = r.try_get_by_index(0)?;
        let declared: String = r.try_get_by_index(1)?;
        let sequence: Option<String> = r.try_get_by_index(2)?;
        columns.push(ColumnInfo {
            kind: kind_of(table, &name, &declared)?,
            name,
            sequence,
        });
    }
    let rows = c
        .query_all_raw(Statement::from_sql_and_values(
            db,
            "SELECT a.attname::text, r.relname::text, ra.attname::text \
             FROM pg_constraint k \
             JOIN pg_class t ON t.oid = k.conrelid \
             JOIN pg_class r ON r.oid = k.confrelid \
             JOIN LATERAL unnest(k.conkey, k.confkey) AS u(col, refcol) ON true \
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.col \
             JOIN pg_attribute ra ON ra.attrelid = k.confrelid AND ra.attnum = u.refcol \
             WHERE k.contype = 'f' AND t.relname::text = $1 AND t.relnamespace = current_schema()::regnamespace",
            [table.into()],
        ))
        .await?;
    let mut fks = Vec::new();
    for r in rows {
        fks.push((
            r.try_get_by_index(0)?,
            r.try_get_by_index(1)?,
            r.try_get_by_index(2)?,
        ));
    }
    Ok((columns, fks))
}

/// Parents before children (Kahn's algorithm, by name among the ready ones); a table's
/// references to itself do not count.
fn order_by_foreign_keys(tables: Vec<TableInfo>) -> Result<Vec<TableInfo>> {
    let names: BTreeSet<String> = tables.iter().map(|t| t.name.clone()).collect();
    let mut pending: BTreeMap<String, TableInfo> =
        tables.into_iter().map(|t| (t.name.clone(), t)).collect();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    while !pending.is_empty() {
        let ready: Vec<String> = pending
            .values()
            .filter(|t| {
                t.foreign_keys
                    .iter()
                    .all(|(_, to, _)| to == &t.name || done.contains(to) || !names.contains(to))
            })
            .map(|t| t.name.clone())
            .collect();
        if ready.is_empty() {
            return Err(DbError::Invalid(format!(
                "the foreign keys of tables {:?} form a cycle",
                pending.keys().collect::<Vec<_>>()
            )));
        }
        for name in ready {
            if let Some(t) = pending.remove(&name) {
                done.insert(name);
                out.push(t);
            }
        }
    }
    Ok(out)
}

fn read_cell(row: &QueryResult, i: usize, col: &ColumnInfo) -> Result<serde_json::Value> {
    use serde_json::Value as J;
    Ok(match col.kind {
        Kind::Integer => {
            let v: Option<i64> = match row.try_get_by_index::<Option<i64>>(i) {
                Ok(v) => v,
                Err(_) => row.try_get_by_index::<Option<i32>>(i)?.map(i64::from),
            };
            v.map_or(J::Null, J::from)
        }
        Kind::Text => row
            .try_get_by_index::<Option<String>>(i)?
            .map_or(J::Null, J::from),
        Kind::Boolean => row
            .try_get_by_index::<Option<bool>>(i)?
            .map_or(J::Null, J::from),
        Kind::Real => row
            .try_get_by_index::<Option<f64>>(i)?
            .map_or(J::Null, J::from),
        Kind::Bytes => row
            .try_get_by_index::<Option<Vec<u8>>>(i)?
            .map_or(J::Null, |b| J::from(hex::encode(b))),
    })
}

fn bind_cell(table: &str, col: &ColumnInfo, v: &serde_json::Value) -> Result<Value> {
    use serde_json::Value as J;
    let bad = || {
        DbError::Invalid(format!(
            "value {v} does not fit column {table}.{} ({:?})",
            col.name, col.kind
        ))
    };
    Ok(match (col.kind, v) {
        (Kind::Integer, J::Null) => Value::BigInt(None),
        (Kind::Text, J::Null) => Value::String(None),
        (Kind::Boolean, J::Null) => Value::Bool(None),
        (Kind::Real, J::Null) => Value::Double(None),
        (Kind::Bytes, J::Null) => Value::Bytes(None),
        (Kind::Integer, J::Number(n)) => n.as_i64().ok_or_else(bad)?.into(),
        // SQLite stores booleans as integers: a value of either form fits either column.
        (Kind::Integer, J::Bool(b)) => i64::from(*b).into(),
        (Kind::Boolean, J::Bool(b)) => (*b).into(),
        (Kind::Boolean, J::Number(n)) => (n.as_i64().ok_or_else(bad)? != 0).into(),
        (Kind::Text, J::String(s)) => s.clone().into(),
        (Kind::Real, J::Number(n)) => n.as_f64().ok_or_else(bad)?.into(),
        (Kind::Bytes, J::String(s)) => hex::decode(s).map_err(|_| bad())?.into(),
        _ => return Err(bad()),
    })
}

/// Rows of a table that references itself, parents first, so each insert finds its parent.
fn parents_first(info: &TableInfo, data: &TableData) -> Result<Vec<usize>> {
    let self_refs: Vec<(usize, usize)> = info
        .foreign_keys
        .iter()
        .filter(|(_, to, _)| to == &info.name)
        .filter_map(|(from, _, to)| {
            let f = data.columns.iter().position(|c| c == from)?;
            let t = data.columns.iter().position(|c| c == to)?;
            Some((f, t))
        })
        .collect();
    let n = data.rows.len();
    if self_refs.is_empty() {
        return Ok((0..n).collect());
    }
    let mut order = Vec::with_capacity(n);
    let mut placed = vec![false; n];
    let mut present: Vec<BTreeSet<String>> = vec![BTreeSet::new(); self_refs.len()];
    while order.len() < n {
        let before = order.len();
        for (i, row) in data.rows.iter().enumerate() {
            if placed[i] {
                continue;
            }
            let ready = self_refs
                .iter()
                .enumerate()
                .all(|(k, (f, _))| row[*f].is_null() || present[k].contains(&row[*f].to_string()));
            if ready {
                placed[i] = true;
                order.push(i);
                for (k, (_, t)) in self_refs.iter().enumerate() {
                    present[k].insert(row[*t].to_string());
                }
            }
        }
        if order.len() == before {
            return Err(DbError::Invalid(format!(
                "rows of table {} reference rows that are not in the snapshot",
                info.name
            )));
        }
    }
    Ok(order)
}

impl Db {
    async fn snapshot_tx(&self) -> Result<DatabaseTransaction> {
        Ok(match self.backend {
            Backend::Sqlite => self.conn.begin().await?,
            Backend::Postgres => {
                self.conn
                    .begin_with_config(
                        Some(IsolationLevel::RepeatableRead),
                        Some(AccessMode::ReadOnly),
                    )
                    .await?
            }
        })
    }

    /// Reads every table in one read transaction: a snapshot of one moment, whatever servers
    /// write meanwhile. `progress` hears each table's name and row count as it is read.
    pub async fn export_snapshot(&self, mut progress: impl FnMut(&str, u64)) -> Result<Snapshot> {
        let tx = self.snapshot_tx().await?;
        let version = ums_migrations::read_version(&tx)
            .await?
            .ok_or_else(|| DbError::Invalid("the database has no schema to export".into()))?;
        let tables = catalog(&tx, self.backend).await?;
        let mut out = Vec::with_capacity(tables.len());
        for info in &tables {
            let names: Vec<String> = info.columns.iter().map(|c| c.name.clone()).collect();
            let cols = names
                .iter()
                .map(|c| quote(c))
                .collect::<Vec<_>>()
                .join(", ");
            let order = (1..=names.len())
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!("SELECT {cols} FROM {} ORDER BY {order}", quote(&info.name));
            let rows = tx
                .query_all_raw(Statement::from_string(tx.get_database_backend(), sql))
                .await?;
            let mut data = TableData {
                name: info.name.clone(),
                columns: names,
                rows: Vec::with_capacity(rows.len()),
                next_ids: BTreeMap::new(),
            };
            for row in &rows {
                let mut cells = Vec::with_capacity(info.columns.len());
                for (i, col) in info.columns.iter().enumerate() {
                    cells.push(read_cell(row, i, col)?);
                }
                data.rows.push(cells);
            }
            let order = parents_first(info, &data)?;
            if order.iter().enumerate().any(|(i, &j)| i != j) {
                let mut taken: Vec<Option<Vec<serde_json::Value>>> = std::mem::take(&mut data.rows)
                    .into_iter()
                    .map(Some)
                    .collect();
                data.rows = order.into_iter().filter_map(|j| taken[j].take()).collect();
            }
            for col in &info.columns {
                if let Some(seq) = &col.sequence
                    && let Some(next) = self.next_id(&tx, &info.name, seq).await?
                {
                    data.next_ids.insert(col.name.clone(), next);
                }
            }
            progress(&data.name, data.rows.len() as u64);
            out.push(data);
        }
        tx.commit().await?;
        Ok(Snapshot {
            schema_version: version.to_string(),
            backend: self.backend.as_str().into(),
            tables: out,
        })
    }

    /// The value an auto-increment column hands out next, when the database has handed out any.
    async fn next_id(
        &self,
        tx: &DatabaseTransaction,
        table: &str,
        sequence: &str,
    ) -> Result<Option<i64>> {
        let db = tx.get_database_backend();
        let row = match self.backend {
            Backend::Sqlite => {
                tx.query_one_raw(Statement::from_sql_and_values(
                    db,
                    "SELECT seq + 1 FROM sqlite_sequence WHERE name = ?",
                    [table.into()],
                ))
                .await?
            }
            Backend::Postgres => {
                let sql = format!(
                    "SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM {sequence}"
                );
                tx.query_one_raw(Statement::from_string(db, sql)).await?
            }
        };
        Ok(row.map(|r| r.try_get_by_index::<i64>(0)).transpose()?)
    }

    /// Rows per table, schema tables and the counters a fresh database starts with left out:
    /// all zero on an empty database.
    pub async fn data_row_counts(&self) -> Result<BTreeMap<String, u64>> {
        let tables = catalog(&self.conn, self.backend).await?;
        let mut out = BTreeMap::new();
        for t in tables {
            if SEEDED_TABLES.contains(&t.name.as_str()) {
                continue;
            }
            let row = self
                .conn
                .query_one_raw(Statement::from_string(
                    self.conn.get_database_backend(),
                    format!("SELECT COUNT(*) FROM {}", quote(&t.name)),
                ))
                .await?;
            let n: i64 = match row {
                Some(r) => r.try_get_by_index(0)?,
                None => 0,
            };
            out.insert(t.name, n as u64);
        }
        Ok(out)
    }

    /// Writes a snapshot into this database in one transaction: nothing is written unless all
    /// of it is. The database's schema must be the snapshot's version. A database holding data
    /// is refused unless `replace`, which deletes its rows in the same transaction first.
    /// `progress` hears each table's name and row count as it is written.
    pub async fn import_snapshot(
        &self,
        snapshot: &Snapshot,
        replace: bool,
        mut progress: impl FnMut(&str, u64),
    ) -> Result<()> {
        let tx = self.write_tx().await?;
        let version = ums_migrations::read_version(&tx).await?;
        let version = version
            .map(|v| v.to_string())
            .unwrap_or_else(|| "none".into());
        if version != snapshot.schema_version {
            return Err(DbError::Invalid(format!(
                "the snapshot holds schema version {}, the database has schema version {version}",
                snapshot.schema_version
            )));
        }
        let tables = catalog(&tx, self.backend).await?;
        let by_name: HashMap<&str, &TableInfo> =
            tables.iter().map(|t| (t.name.as_str(), t)).collect();
        let theirs: BTreeSet<&str> = snapshot.tables.iter().map(|t| t.name.as_str()).collect();
        let ours: BTreeSet<&str> = by_name.keys().copied().collect();
        if theirs != ours {
            return Err(DbError::Invalid(format!(
                "the snapshot's tables differ from the database's: only in the snapshot {:?}, only in the database {:?}",
                theirs.difference(&ours).collect::<Vec<_>>(),
                ours.difference(&theirs).collect::<Vec<_>>()
            )));
        }
        for data in &snapshot.tables {
            let info = by_name[data.name.as_str()];
            let ours: BTreeSet<&str> = info.columns.iter().map(|c| c.name.as_str()).collect();
            let theirs: BTreeSet<&str> = data.columns.iter().map(String::as_str).collect();
            if ours != theirs || theirs.len() != data.columns.len() {
                return Err(DbError::Invalid(format!(
                    "table {}: the snapshot has columns {:?}, the database {:?}",
                    data.name, data.columns, ours
                )));
            }
            if let Some(bad) = data.rows.iter().find(|r| r.len() != data.columns.len()) {
                return Err(DbError::Invalid(format!(
                    "table {}: a row has {} values for {} columns",
                    data.name,
                    bad.len(),
                    data.columns.len()
                )));
            }
        }

        if !replace {
            let mut held = Vec::new();
            for t in &tables {
                if SEEDED_TABLES.contains(&t.name.as_str()) {
                    continue;
                }
                let n = count(&tx, &t.name).await?;
                if n > 0 {
                    held.push(format!("{} {}", n, t.name));
                }
            }
            if !held.is_empty() {
                return Err(DbError::Conflict(format!(
                    "the database is not empty (it holds {})",
                    held.join(", ")
                )));
            }
        }

        // Children first, so no delete finds rows that still reference it; a table's
        // references to itself are cut first.
        for info in tables.iter().rev() {
            for (from, to, _) in &info.foreign_keys {
                if to == &info.name {
                    let stmt = Query::update()
                        .table(Alias::new(&info.name))
                        .value(Alias::new(from), Expr::cust("NULL"))
                        .to_owned();
                    tx.execute(&stmt).await?;
                }
            }
            let stmt = Query::delete()
                .from_table(Alias::new(&info.name))
                .to_owned();
            tx.execute(&stmt).await?;
        }

        for data in &snapshot.tables {
            let info = by_name[data.name.as_str()];
            let cols: Vec<&ColumnInfo> = data
                .columns
                .iter()
                .filter_map(|c| info.columns.iter().find(|i| &i.name == c))
                .collect();
            let order = parents_first(info, data)?;
            let per_insert = (MAX_PARAMS / cols.len().max(1)).max(1);
            for chunk in order.chunks(per_insert) {
                let mut stmt = Query::insert();
                stmt.into_table(Alias::new(&data.name))
                    .columns(cols.iter().map(|c| Alias::new(&c.name)));
                for &i in chunk {
                    let values = cols
                        .iter()
                        .zip(&data.rows[i])
                        .map(|(c, v)| bind_cell(&data.name, c, v).map(Expr::val))
                        .collect::<Result<Vec<_>>>()?;
                    stmt.values(values)
                        .map_err(|e| DbError::Invalid(format!("table {}: {e}", data.name)))?;
                }
                tx.execute(&stmt).await?;
            }
            for col in info.columns.iter().filter(|c| c.sequence.is_some()) {
                let next = data.next_ids.get(&col.name).copied();
                self.continue_sequence(&tx, info, col, next).await?;
            }
            progress(&data.name, data.rows.len() as u64);
        }
        tx.commit().await?;
        Ok(())
    }

    /// Makes an auto-increment column hand out `next` (or one past its largest value, when
    /// that is larger) as its next id.
    async fn continue_sequence(
        &self,
        tx: &DatabaseTransaction,
        table: &TableInfo,
        col: &ColumnInfo,
        next: Option<i64>,
    ) -> Result<()> {
        let db = tx.get_database_backend();
        let max_sql = format!(
            "SELECT COALESCE(MAX({}), 0) FROM {}",
            quote(&col.name),
            quote(&table.name)
        );
        let max: i64 = match tx
            .query_one_raw(Statement::from_string(db, max_sql))
            .await?
        {
            Some(r) => r.try_get_by_index(0)?,
            None => 0,
        };
        let next = next.unwrap_or(1).max(max + 1);
        match (self.backend, &col.sequence) {
            (Backend::Sqlite, _) => {
                tx.execute_raw(Statement::from_sql_and_values(
                    DbBackend::Sqlite,
                    "DELETE FROM sqlite_sequence WHERE name = ?",
                    [table.name.clone().into()],
                ))
                .await?;
                if next > 1 {
                    tx.execute_raw(Statement::from_sql_and_values(
                        DbBackend::Sqlite,
                        "INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)",
                        [table.name.clone().into(), (next - 1).into()],
                    ))
                    .await?;
                }
            }
            (Backend::Postgres, Some(seq)) => {
                tx.execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT setval($1::regclass, $2, false)",
                    [seq.clone().into(), next.into()],
                ))
                .await?;
            }
            (Backend::Postgres, None) => {}
        }
        Ok(())
    }
}

async fn count<C: ConnectionTrait>(c: &C, table: &str) -> Result<i64> {
    let row = c
        .query_one_raw(Statement::from_string(
            c.get_database_backend(),
            format!("SELECT COUNT(*) FROM {}", quote(table)),
        ))
        .await?;
    Ok(match row {
        Some(r) => r.try_get_by_index(0)?,
        None => 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, fks: &[(&str, &str)]) -> TableInfo {
        TableInfo {
            name: name.into(),
            columns: Vec::new(),
            foreign_keys: fks
                .iter()
                .map(|(c, t)| ((*c).into(), (*t).into(), "id".into()))
                .collect(),
        }
    }

    #[test]
    fn tables_come_after_the_tables_they_reference() {
        let ordered = order_by_foreign_keys(vec![
            table(
                "assignments",
                &[("profile_id", "profiles"), ("device_id", "devices")],
            ),
            table("devices", &[("folder_id", "folders")]),
            table("folders", &[("parent_id", "folders")]),
            table("profiles", &[]),
        ])
        .expect("order");
        let names: Vec<&str> = ordered.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["folders", "profiles", "devices", "assignments"]);
        let cycle =
            order_by_foreign_keys(vec![table("a", &[("b", "b")]), table("b", &[("a", "a")])]);
        assert!(matches!(cycle, Err(DbError::Invalid(m)) if m.contains("cycle")));
    }

    #[test]
    fn rows_of_a_tree_come_parents_first() {
        let info = table("folders", &[("parent_id", "folders")]);
        let data = TableData {
            name: "folders".into(),
            columns: vec!["id".into(), "parent_id".into()],
            // 1 was moved under 3, which was created later.
            rows: vec![
                vec![serde_json::json!(1), serde_json::json!(3)],
                vec![serde_json::json!(2), serde_json::json!(null)],
                vec![serde_json::json!(3), serde_json::json!(2)],
            ],
            next_ids: BTreeMap::new(),
        };
        assert_eq!(parents_first(&info, &data).expect("order"), [1, 2, 0]);
        let orphan = TableData {
            rows: vec![vec![serde_json::json!(1), serde_json::json!(9)]],
            ..data
        };
        assert!(parents_first(&info, &orphan).is_err());
    }

    #[test]
    fn values_bind_to_their_column_kind_or_are_refused() {
        let col = |kind| ColumnInfo {
            name: "c".into(),
            kind,
            sequence: None,
        };
        assert_eq!(
            bind_cell("t", &col(Kind::Integer), &serde_json::json!(42)).expect("int"),
            Value::BigInt(Some(42))
        );
        assert_eq!(
            bind_cell("t", &col(Kind::Boolean), &serde_json::json!(1)).expect("bool from sqlite"),
            Value::Bool(Some(true))
        );
        assert!(bind_cell("t", &col(Kind::Integer), &serde_json::json!("x")).is_err());
        assert!(bind_cell("t", &col(Kind::Bytes), &serde_json::json!("zz")).is_err());
        assert!(kind_of("t", "c", "geometry").is_err());
    }
}
