//! Jobs: queued for a device or every device of a folder's subtree, and their results.

use ums_domain::{JobKind, JobState, ObjectKind, ObjectRef};
use ums_proto::admin::v1 as pb;

use super::settings::target;
use super::{AdminApi, Caller};
use crate::error::ApiError;
use crate::settings::subtree;

pub async fn create(
    api: &AdminApi,
    _: Caller,
    r: pb::CreateJobsRequest,
) -> Result<pb::CreateJobsResponse, ApiError> {
    let kind: JobKind = r.kind.parse()?;
    let devices = match target(r.device_id, r.folder_id)? {
        ObjectRef {
            kind: ObjectKind::Device,
            id,
        } => vec![id],
        ObjectRef { id, .. } => {
            let model = api.state.settings();
            if !model.folders.contains_key(&id) {
                return Err(ApiError::NotFound(format!("folder {id} not found")));
            }
            api.state
                .db
                .devices_in_folders(&subtree(&model, id))
                .await?
        }
    };
    let at = if r.scheduled_at_ms <= 0 {
        ums_db::now_ms()
    } else {
        r.scheduled_at_ms
    };
    let job_ids = api.state.db.create_jobs(kind, &devices, at).await?;
    Ok(pb::CreateJobsResponse { job_ids })
}

pub async fn list(
    api: &AdminApi,
    _: Caller,
    r: pb::ListJobsRequest,
) -> Result<pb::ListJobsResponse, ApiError> {
    let state = if r.state.is_empty() {
        None
    } else {
        Some(r.state.parse::<JobState>()?)
    };
    let limit = match r.limit {
        0 => 100,
        n => u64::from(n.min(10_000)),
    };
    let jobs = api.state.db.list_jobs(r.device_id, state, limit).await?;
    Ok(pb::ListJobsResponse {
        jobs: jobs
            .into_iter()
            .map(|j| pb::JobInfo {
                id: j.id,
                device_id: j.device_id,
                kind: j.kind,
                state: j.state,
                scheduled_at_ms: j.scheduled_at,
                created_at_ms: j.created_at,
                finished_at_ms: j.finished_at.unwrap_or(0),
                result: j.result,
            })
            .collect(),
    })
}
