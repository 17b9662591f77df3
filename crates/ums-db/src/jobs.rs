//! Jobs queued for devices: reboot, apply settings, now or at a scheduled time.

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};
use ums_domain::{JobKind, JobState};

use crate::entity::{device, job};
use crate::{Db, DbError, Result, now_ms};

pub use crate::entity::job::Model as Job;

impl Db {
    /// Queues one job per device in one transaction; all devices must exist.
    pub async fn create_jobs(
        &self,
        kind: JobKind,
        devices: &[i64],
        scheduled_at: i64,
    ) -> Result<Vec<i64>> {
        let tx = self.write_tx().await?;
        let now = now_ms();
        let mut ids = Vec::with_capacity(devices.len());
        for &d in devices {
            if device::Entity::find_by_id(d).count(&tx).await? == 0 {
                return Err(DbError::NotFound(format!("device {d}")));
            }
            device::Entity::update_many()
                .col_expr(device::Column::NextJobAt, Expr::value(scheduled_at))
                .filter(device::Column::Id.eq(d))
                .filter(
                    device::Column::NextJobAt
                        .is_null()
                        .or(device::Column::NextJobAt.gt(scheduled_at)),
                )
                .exec(&tx)
                .await?;
            let j = job::ActiveModel {
                device_id: Set(d),
                kind: Set(kind.as_str().to_owned()),
                state: Set(JobState::Pending.as_str().to_owned()),
                scheduled_at: Set(scheduled_at),
                created_at: Set(now),
                result: Set(String::new()),
                ..Default::default()
            }
            .insert(&tx)
            .await?;
            ids.push(j.id);
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Jobs, newest first.
    pub async fn list_jobs(
        &self,
        device: Option<i64>,
        state: Option<JobState>,
        limit: u64,
    ) -> Result<Vec<Job>> {
        let mut q = job::Entity::find().order_by_desc(job::Column::Id);
        if let Some(d) = device {
            q = q.filter(job::Column::DeviceId.eq(d));
        }
        if let Some(s) = state {
            q = q.filter(job::Column::State.eq(s.as_str()));
        }
        Ok(q.limit(limit).all(self.conn()).await?)
    }

    /// Number of the device's pending jobs that are due at `now`.
    pub async fn count_due_jobs(&self, device_id: i64, now: i64) -> Result<u64> {
        Ok(due(device_id, now).count(self.conn()).await?)
    }

    /// Hands the device its due jobs: they move to `sent` in the same transaction.
    pub async fn fetch_due_jobs(&self, device_id: i64, now: i64) -> Result<Vec<Job>> {
        let tx = self.write_tx().await?;
        let jobs = due(device_id, now)
            .order_by_asc(job::Column::ScheduledAt)
            .all(&tx)
            .await?;
        if !jobs.is_empty() {
            job::Entity::update_many()
                .col_expr(job::Column::State, Expr::value(JobState::Sent.as_str()))
                .col_expr(job::Column::SentAt, Expr::value(now))
                .filter(job::Column::Id.is_in(jobs.iter().map(|j| j.id)))
                .exec(&tx)
                .await?;
            refresh_next_job(&tx, device_id).await?;
        }
        tx.commit().await?;
        Ok(jobs)
    }

    /// Records the outcome of a job the device fetched. A device can only report its own jobs.
    pub async fn report_job_result(
        &self,
        device_id: i64,
        job_id: i64,
        success: bool,
        message: &str,
    ) -> Result<()> {
        let tx = self.write_tx().await?;
        report_job_result_in(&tx, device_id, job_id, success, message, now_ms()).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Records a job result inside the caller's transaction: the job must be the device's and sent.
pub(crate) async fn report_job_result_in<C: ConnectionTrait>(
    tx: &C,
    device_id: i64,
    job_id: i64,
    success: bool,
    message: &str,
    at: i64,
) -> Result<()> {
    let j = job::Entity::find_by_id(job_id)
        .filter(job::Column::DeviceId.eq(device_id))
        .one(tx)
        .await?
        .ok_or_else(|| DbError::NotFound(format!("job {job_id} of this device")))?;
    let outcome = if success {
        JobState::Done
    } else {
        JobState::Failed
    };
    if j.state == outcome.as_str() && j.result == message {
        // A device repeating its report because the answer to the first one was lost:
        // already recorded, nothing changes.
        return Ok(());
    }
    if j.state != JobState::Sent.as_str() {
        return Err(DbError::Conflict(format!(
            "job {job_id} is {}, not sent: only a fetched job can be reported",
            j.state
        )));
    }
    let mut am: job::ActiveModel = j.into();
    am.state = Set(outcome.as_str().to_owned());
    am.finished_at = Set(Some(at));
    am.result = Set(message.to_owned());
    am.update(tx).await?;
    Ok(())
}

fn due(device_id: i64, now: i64) -> sea_orm::Select<job::Entity> {
    job::Entity::find()
        .filter(job::Column::DeviceId.eq(device_id))
        .filter(job::Column::State.eq(JobState::Pending.as_str()))
        .filter(job::Column::ScheduledAt.lte(now))
}

pub(crate) async fn refresh_next_job<C: ConnectionTrait>(tx: &C, device_id: i64) -> Result<()> {
    let next: Option<i64> = job::Entity::find()
        .select_only()
        .column_as(job::Column::ScheduledAt.min(), "next")
        .filter(job::Column::DeviceId.eq(device_id))
        .filter(job::Column::State.eq(JobState::Pending.as_str()))
        .into_tuple::<Option<i64>>()
        .one(tx)
        .await?
        .flatten();
    device::Entity::update_many()
        .col_expr(device::Column::NextJobAt, Expr::value(next))
        .filter(device::Column::Id.eq(device_id))
        .exec(tx)
        .await?;
    Ok(())
}
