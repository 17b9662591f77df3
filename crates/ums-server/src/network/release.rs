//! Software releases as watchdogs see them through a server: the network's newest release
//! (handed out as uploaded; the node verifies it with the key it pinned) and the update slot,
//! a lease in the database so that one node at a time updates, network-wide.
//!
//! A node gets the slot only when no node failed to install the revision (a failure stops the
//! rollout) and every node already on it runs all of its processes (the previous node came back
//! healthy). It keeps the slot while it reports progress and gives it back when done.

use ums_db::Db;
use ums_db::network::ReleaseNodeRow;
use ums_proto::network::v1 as pb;

use super::Network;
use crate::error::ApiError;

/// The update slot's lease.
pub const SLOT: &str = "release-slot";
/// How long a node holds the slot without reporting: a node that dies while updating frees it
/// after this.
pub const SLOT_TTL_MS: i64 = 10 * 60_000;

/// States of a node that stop the rollout at the revision it tried.
const FAILED: &[&str] = &["failed", "rolled-back"];

impl Network {
    /// The newest release and, when asked and allowed, the update slot for `node`.
    pub async fn release_offer(
        &self,
        db: &Db,
        node: &str,
        req: &pb::GetReleaseRequest,
    ) -> Result<pb::GetReleaseResponse, ApiError> {
        let Some(latest) = db.latest_release().await? else {
            return Ok(pb::GetReleaseResponse::default());
        };
        let revision = latest.revision.max(0) as u64;
        let mut answer = pb::GetReleaseResponse {
            revision,
            manifest: latest.manifest,
            slot: false,
            waiting_for: String::new(),
        };
        if req.installed_revision == revision || !req.want_slot {
            return Ok(answer);
        }
        let nodes = db.release_nodes().await?;
        if let Some(failed) = nodes
            .iter()
            .find(|n| n.target_revision == latest.revision && FAILED.contains(&n.state.as_str()))
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
            .filter(|n| n.installed_revision == latest.revision)
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
        match db.acquire_lease(SLOT, node, SLOT_TTL_MS).await? {
            Some(_) => answer.slot = true,
            None => {
                let holder = db
                    .lease_holder(SLOT)
                    .await?
                    .map(|(h, _)| h)
                    .unwrap_or_default();
                answer.waiting_for = format!("node {holder} is updating");
            }
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
            db.release_lease(SLOT, node).await?;
        } else if db.lease_holder(SLOT).await?.is_some_and(|(h, _)| h == node) {
            db.acquire_lease(SLOT, node, SLOT_TTL_MS).await?;
        }
        Ok(())
    }
}
