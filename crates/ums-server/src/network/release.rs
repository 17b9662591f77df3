//! Software releases as watchdogs see them through a server: the release the network wants
//! (the newest, or the previous good one after an administrator's rollback; handed out as
//! uploaded, the node verifies it with the key it pinned) and the update slots, leases in the
//! database so that at most the configured number of nodes (1 by default) update at once,
//! network-wide.
//!
//! A node gets a slot only while the rollout is not paused, no node failed to install the
//! revision (a failure stops the rollout) and every node already on it runs all of its
//! processes (the previous node came back healthy). It keeps the slot while it reports progress
//! and gives it back when done; pausing takes no slot back, so a node updating finishes.

use ums_db::Db;
use ums_db::network::ReleaseNodeRow;
use ums_proto::network::v1 as pb;

use super::Network;
use crate::error::ApiError;

/// How long a node holds the slot without reporting: a node that dies while updating frees it
/// after this.
pub const SLOT_TTL_MS: i64 = 10 * 60_000;

/// States of a node that stop the rollout at the revision it tried.
const FAILED: &[&str] = &["failed", "rolled-back"];

impl Network {
    /// The release the network wants (the newest, or the one a rollback named) and, when asked
    /// and allowed, an update slot for `node`.
    pub async fn release_offer(
        &self,
        db: &Db,
        node: &str,
        req: &pb::GetReleaseRequest,
    ) -> Result<pb::GetReleaseResponse, ApiError> {
        let Some((wanted, rollback)) = db.wanted_release().await? else {
            return Ok(pb::GetReleaseResponse::default());
        };
        let revision = wanted.revision.max(0) as u64;
        let mut answer = pb::GetReleaseResponse {
            revision,
            manifest: wanted.manifest,
            slot: false,
            waiting_for: String::new(),
            rollback,
        };
        if req.installed_revision == revision || !req.want_slot {
            return Ok(answer);
        }
        let rollout = db.release_rollout().await?;
        if rollout.paused {
            answer.waiting_for = format!(
                "the rollout was paused by {}: `umsctl release resume` continues it",
                rollout.paused_by
            );
            return Ok(answer);
        }
        let nodes = db.release_nodes().await?;
        if let Some(failed) = nodes
            .iter()
            .find(|n| n.target_revision == wanted.revision && FAILED.contains(&n.state.as_str()))
        {
            answer.waiting_for = format!(
                "node {} failed to install revision {revision} ({}): the rollout stopped there; upload a new revision",
                failed.node_id, failed.error
            );
            return Ok(answer);
        }
        let processes = self.processes(db).await?;
        for n in nodes
            .iter()
            .filter(|n| n.installed_revision == wanted.revision)
        {
            if let Some(down) = processes
                .iter()
                .find(|p| p.supervisor_id == n.node_id && p.status != "running")
            {
                answer.waiting_for = format!(
                    "{} on node {}, which runs revision {revision}, is not running",
                    down.id, n.node_id
                );
                return Ok(answer);
            }
        }
        if db
            .acquire_release_slot(node, rollout.concurrency, SLOT_TTL_MS)
            .await?
        {
            answer.slot = true;
        } else {
            let holders = db.release_slot_holders().await?;
            answer.waiting_for = format!(
                "{} updating (at most {} at once)",
                if holders.len() == 1 {
                    format!("node {} is", holders[0])
                } else {
                    format!("nodes {} are", holders.join(", "))
                },
                rollout.concurrency
            );
        }
        Ok(answer)
    }

    /// Records a node's report (and its step in the log), renews or frees its slot.
    pub async fn release_report(
        &self,
        db: &Db,
        node: &str,
        req: pb::ReportReleaseRequest,
    ) -> Result<(), ApiError> {
        for r in &req.roles {
            ums_release::validate_role(r).map_err(ApiError::Invalid)?;
        }
        let to_i64 =
            |v: u64| i64::try_from(v).map_err(|_| ApiError::Invalid("revision too large".into()));
        let clip = |s: &str, n: usize| s.chars().take(n).collect::<String>();
        let (processes, _) = db.list_processes().await?;
        let host = processes
            .iter()
            .find(|p| p.id == node)
            .map(|p| p.host.clone())
            .unwrap_or_default();
        let row = ReleaseNodeRow {
            node_id: node.to_owned(),
            host,
            roles: req.roles.join(","),
            installed_revision: to_i64(req.installed_revision)?,
            target_revision: to_i64(req.target_revision)?,
            state: clip(&req.state, 32),
            error: clip(&req.error, 2000),
            updated_at: 0,
        };
        let step = Some(clip(&req.step, 32)).filter(|s| !s.is_empty());
        let detail = clip(&req.detail, 2000);
        db.report_release_node(&row, step.as_deref().map(|s| (s, detail.as_str())))
            .await?;
        if req.release_slot {
            db.free_release_slot(node).await?;
        } else {
            db.renew_release_slot(node, SLOT_TTL_MS).await?;
        }
        Ok(())
    }
}
