//! The audit log: one row per administrator's change (who, when, what, from where), stamped
//! with the database's clock so entries written by different servers sort together.

use sea_orm::{ConnectionTrait, QueryResult, Value};

use crate::{Db, Result};

/// Entries a list returns when the caller names no limit, and the most it returns.
pub const DEFAULT_LIMIT: u64 = 100;
pub const MAX_LIMIT: u64 = 10_000;

/// A change to record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewAuditEntry {
    pub admin: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub source: String,
}

/// A recorded change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    /// Milliseconds since the epoch, the database's clock.
    pub at: i64,
    pub admin: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub source: String,
}

/// Which entries to list; every field set narrows the list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditFilter {
    /// The administrator, exactly.
    pub admin: Option<String>,
    /// The action, exactly (`UpdateProfileParams`).
    pub action: Option<String>,
    /// A part of the target (`profile 7`).
    pub target_contains: Option<String>,
    /// From this time on (ms since the epoch, inclusive).
    pub since: Option<i64>,
    /// Before this time (ms since the epoch, exclusive).
    pub until: Option<i64>,
    /// At most this many, newest first; 0: [`DEFAULT_LIMIT`].
    pub limit: u64,
}

impl Db {
    /// Records a change in its own transaction; returns the entry's id.
    pub async fn insert_audit(&self, e: &NewAuditEntry) -> Result<i64> {
        let now = self.db_now().await?;
        let row = self
            .conn()
            .query_one_raw(self.stmt(
                "INSERT INTO audit_log (at, admin, action, target, detail, source) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                vec![
                    now.into(),
                    e.admin.clone().into(),
                    e.action.clone().into(),
                    e.target.clone().into(),
                    e.detail.clone().into(),
                    e.source.clone().into(),
                ],
            ))
            .await?
            .ok_or_else(|| crate::DbError::NotFound("the new audit entry".into()))?;
        Ok(row.try_get("", "id")?)
    }

    /// The entries `f` selects, newest first.
    pub async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditRow>> {
        let mut sql = String::from(
            "SELECT id, at, admin, action, target, detail, source FROM audit_log WHERE 1 = 1",
        );
        let mut values: Vec<Value> = Vec::new();
        let mut add = |cond: &str, v: Value, sql: &mut String| {
            values.push(v);
            sql.push_str(&cond.replace('#', &format!("${}", values.len())));
        };
        if let Some(a) = &f.admin {
            add(" AND admin = #", a.clone().into(), &mut sql);
        }
        if let Some(a) = &f.action {
            add(" AND action = #", a.clone().into(), &mut sql);
        }
        if let Some(t) = &f.target_contains {
            // A literal part: LIKE's wildcards in the filter match themselves.
            let escaped = t
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            add(
                " AND target LIKE # ESCAPE '\\'",
                format!("%{escaped}%").into(),
                &mut sql,
            );
        }
        if let Some(s) = f.since {
            add(" AND at >= #", s.into(), &mut sql);
        }
        if let Some(u) = f.until {
            add(" AND at < #", u.into(), &mut sql);
        }
        let limit = match f.limit {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        };
        sql.push_str(&format!(" ORDER BY at DESC, id DESC LIMIT {limit}"));
        let rows = self.conn().query_all_raw(self.stmt(&sql, values)).await?;
        rows.iter().map(audit_row).collect()
    }
}

fn audit_row(r: &QueryResult) -> Result<AuditRow> {
    Ok(AuditRow {
        id: r.try_get("", "id")?,
        at: r.try_get("", "at")?,
        admin: r.try_get("", "admin")?,
        action: r.try_get("", "action")?,
        target: r.try_get("", "target")?,
        detail: r.try_get("", "detail")?,
        source: r.try_get("", "source")?,
    })
}
