//! `umsctl jobs`: queue and list jobs.

use ums_proto::admin::v1 as pb;

use super::show;
use crate::cli::JobsCommand;
use crate::client::{Admin, ok};
use crate::output;

/// Job ids for humans: all of them when few, else the count and the range.
fn job_ids(ids: &[i64]) -> String {
    match ids {
        [] => "no jobs queued (no devices)".to_owned(),
        ids if ids.len() <= 20 => format!(
            "queued {} job(s): {}",
            ids.len(),
            ids.iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        ids => format!(
            "queued {} jobs: ids {} to {}",
            ids.len(),
            ids.iter().min().copied().unwrap_or_default(),
            ids.iter().max().copied().unwrap_or_default()
        ),
    }
}

pub async fn run(json: bool, admin: &mut Admin, command: JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::Create {
            kind,
            device,
            folder,
            at,
        } => {
            let created = ok(admin
                .create_jobs(pb::CreateJobsRequest {
                    kind,
                    device_id: device,
                    folder_id: folder,
                    scheduled_at_ms: at.unwrap_or(0),
                })
                .await)?;
            show(json, &created, |c| job_ids(&c.job_ids))
        }
        JobsCommand::List {
            device,
            state,
            limit,
        } => {
            let list = ok(admin
                .list_jobs(pb::ListJobsRequest {
                    device_id: device,
                    state: state.unwrap_or_default(),
                    limit: limit.unwrap_or(0),
                })
                .await)?;
            show(json, &list, |l| {
                if l.jobs.is_empty() {
                    "no jobs".to_owned()
                } else {
                    output::jobs(&l.jobs).to_string()
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_id_summary() {
        assert_eq!(job_ids(&[]), "no jobs queued (no devices)");
        assert_eq!(job_ids(&[4, 5]), "queued 2 job(s): 4, 5");
        let many: Vec<i64> = (10..40).collect();
        assert_eq!(job_ids(&many), "queued 30 jobs: ids 10 to 39");
    }
}
