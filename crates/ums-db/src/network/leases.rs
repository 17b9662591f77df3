//! Leases of network-wide singletons (the scheduler) with fencing tokens, and the scheduler's
//! periodic sweep, which writes only while its fence is still the lease's.

use sea_orm::ConnectionTrait;

use crate::{Backend, Db, DbError, Result};

impl Db {
    /// Takes or renews the lease `name` for `holder` for `ttl_ms` (database clock). Returns the
    /// fencing token while `holder` holds it: unchanged on renewal, one higher after a change of
    /// holder; `None` when another holder's lease has not expired.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
    ) -> Result<Option<i64>> {
        let tx = self.write_tx().await?;
        let now = {
            let sql = format!("SELECT {} AS now", self.now_sql());
            let row = tx
                .query_one_raw(self.stmt(&sql, vec![]))
                .await?
                .ok_or_else(|| DbError::NotFound("clock".into()))?;
            row.try_get::<i64>("", "now")?
        };
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let current = tx
            .query_one_raw(self.stmt(
                &format!("SELECT holder, fence, expires_at FROM leases WHERE name = $1{lock}"),
                vec![name.into()],
            ))
            .await?;
        let fence = match current {
            None => {
                let n = tx
                    .execute_raw(self.stmt(
                        "INSERT INTO leases (name, holder, fence, expires_at) VALUES ($1, $2, 1, $3) \
                         ON CONFLICT (name) DO NOTHING",
                        vec![name.into(), holder.into(), (now + ttl_ms).into()],
                    ))
                    .await?
                    .rows_affected();
                (n == 1).then_some(1)
            }
            Some(row) => {
                let cur_holder: String = row.try_get("", "holder")?;
                let fence: i64 = row.try_get("", "fence")?;
                let expires: i64 = row.try_get("", "expires_at")?;
                let next = if cur_holder == holder {
                    Some(fence)
                } else if expires <= now {
                    Some(fence + 1)
                } else {
                    None
                };
                if let Some(next) = next {
                    // The fence in the WHERE makes a concurrent taker lose cleanly.
                    let n = tx
                        .execute_raw(self.stmt(
                            "UPDATE leases SET holder = $1, fence = $2, expires_at = $3 \
                             WHERE name = $4 AND fence = $5",
                            vec![
                                holder.into(),
                                next.into(),
                                (now + ttl_ms).into(),
                                name.into(),
                                fence.into(),
                            ],
                        ))
                        .await?
                        .rows_affected();
                    (n == 1).then_some(next)
                } else {
                    None
                }
            }
        };
        tx.commit().await?;
        Ok(fence)
    }

    /// Gives a lease up at once (clean shutdown), so another server takes it without waiting.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        self.conn()
            .execute_raw(self.stmt(
                "UPDATE leases SET expires_at = 0 WHERE name = $1 AND holder = $2",
                vec![name.into(), holder.into()],
            ))
            .await?;
        Ok(())
    }

    /// The holder and fence of a lease, if anyone holds it now.
    pub async fn lease_holder(&self, name: &str) -> Result<Option<(String, i64)>> {
        let sql = format!(
            "SELECT holder, fence FROM leases WHERE name = $1 AND expires_at > {}",
            self.now_sql()
        );
        let row = self
            .conn()
            .query_one_raw(self.stmt(&sql, vec![name.into()]))
            .await?;
        row.map(|r| Ok((r.try_get("", "holder")?, r.try_get("", "fence")?)))
            .transpose()
    }

    /// The scheduler's periodic work, in one transaction fenced by its lease: marks processes
    /// silent for `silent_ms` as stopped, and jobs sent more than `job_timeout_ms` ago without a
    /// result as failed. Returns `None`, changing nothing, when `fence` is no longer the lease's.
    pub async fn scheduler_sweep(
        &self,
        lease: &str,
        fence: i64,
        silent_ms: i64,
        job_timeout_ms: i64,
    ) -> Result<Option<(u64, u64)>> {
        let tx = self.write_tx().await?;
        let held = tx
            .query_one_raw(self.stmt(
                &format!(
                    "SELECT fence FROM leases WHERE name = $1 AND fence = $2 AND expires_at > {}",
                    self.now_sql()
                ),
                vec![lease.into(), fence.into()],
            ))
            .await?;
        if held.is_none() {
            tx.rollback().await?;
            return Ok(None);
        }
        let now = crate::now_ms();
        let stopped = tx
            .execute_raw(self.stmt(
                &format!(
                    "UPDATE processes SET status = 'stopped' WHERE status = 'running' AND last_heartbeat < {} - $1",
                    self.now_sql()
                ),
                vec![silent_ms.into()],
            ))
            .await?
            .rows_affected();
        let expired = tx
            .execute_raw(self.stmt(
                "UPDATE jobs SET state = 'failed', finished_at = $1, result = 'no result from the device in time' \
                 WHERE state = 'sent' AND sent_at < $2",
                vec![now.into(), (now - job_timeout_ms).into()],
            ))
            .await?
            .rows_affected();
        tx.execute_raw(self.stmt(
            "DELETE FROM admin_sessions WHERE expires_at < $1",
            vec![now.into()],
        ))
        .await?;
        tx.commit().await?;
        Ok(Some((stopped, expired)))
    }
}
