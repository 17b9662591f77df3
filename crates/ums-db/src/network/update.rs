//! What the migration service reads and writes: the schema history, and the update log where
//! every step of an update is recorded (backups, migrations, drains, mode changes).

use sea_orm::{ConnectionTrait, QueryResult};

use crate::{Db, Result};

/// One step of an update, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateLogRow {
    pub id: i64,
    /// The database's clock.
    pub at: i64,
    pub actor: String,
    pub step: String,
    pub detail: String,
    /// "ok" or "failed".
    pub outcome: String,
}

impl Db {
    /// Records a step of an update, stamped with the database's clock.
    pub async fn log_update_step(
        &self,
        actor: &str,
        step: &str,
        detail: &str,
        ok: bool,
    ) -> Result<()> {
        let sql = format!(
            "INSERT INTO update_log (at, actor, step, detail, outcome) VALUES ({}, $1, $2, $3, $4)",
            self.now_sql()
        );
        self.conn()
            .execute_raw(self.stmt(
                &sql,
                vec![
                    actor.into(),
                    step.into(),
                    detail.into(),
                    if ok { "ok" } else { "failed" }.into(),
                ],
            ))
            .await?;
        Ok(())
    }

    /// The newest `limit` steps of the update log, oldest first.
    pub async fn update_log(&self, limit: u64) -> Result<Vec<UpdateLogRow>> {
        let rows = self
            .conn()
            .query_all_raw(self.stmt(
                "SELECT id, at, actor, step, detail, outcome FROM update_log ORDER BY id DESC LIMIT $1",
                vec![(limit.min(i64::MAX as u64) as i64).into()],
            ))
            .await?;
        let mut out = rows.iter().map(log_row).collect::<Result<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }

    /// The newest step named `step` that succeeded, e.g. the last backup.
    pub async fn last_update_step(&self, step: &str) -> Result<Option<UpdateLogRow>> {
        let row = self
            .conn()
            .query_one_raw(self.stmt(
                "SELECT id, at, actor, step, detail, outcome FROM update_log \
                 WHERE step = $1 AND outcome = 'ok' ORDER BY id DESC LIMIT 1",
                vec![step.into()],
            ))
            .await?;
        row.as_ref().map(log_row).transpose()
    }

    /// The schema history, oldest first.
    pub async fn schema_history(&self) -> Result<Vec<ums_migrations::HistoryEntry>> {
        Ok(ums_migrations::read_history(self.conn()).await?)
    }
}

fn log_row(r: &QueryResult) -> Result<UpdateLogRow> {
    Ok(UpdateLogRow {
        id: r.try_get("", "id")?,
        at: r.try_get("", "at")?,
        actor: r.try_get("", "actor")?,
        step: r.try_get("", "step")?,
        detail: r.try_get("", "detail")?,
        outcome: r.try_get("", "outcome")?,
    })
}
