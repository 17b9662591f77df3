//! Software releases: the accepted releases (their signed manifests), what every node reports
//! of its update, and the log of every step nodes took.

use sea_orm::{ConnectionTrait, QueryResult};

use crate::{Db, DbError, Result};

/// An accepted release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRow {
    pub id: i64,
    pub revision: i64,
    pub version: String,
    pub digest: String,
    /// The signed manifest, as uploaded.
    pub manifest: String,
    pub uploaded_at: i64,
    pub uploaded_by: String,
}

/// A node's update as it last reported it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReleaseNodeRow {
    pub node_id: String,
    pub host: String,
    pub roles: String,
    pub installed_revision: i64,
    pub target_revision: i64,
    pub state: String,
    pub error: String,
    pub updated_at: i64,
}

/// One step of a node's update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseLogRow {
    pub id: i64,
    pub at: i64,
    pub node_id: String,
    pub revision: i64,
    pub step: String,
    pub detail: String,
}

const RELEASE_COLS: &str = "id, revision, version, digest, manifest, uploaded_at, uploaded_by";

impl Db {
    /// Records an accepted release, in one transaction: refused (nothing written) unless its
    /// revision is above every release's.
    pub async fn insert_release(
        &self,
        revision: i64,
        version: &str,
        digest: &str,
        manifest: &str,
        uploaded_by: &str,
    ) -> Result<ReleaseRow> {
        let tx = self.write_tx().await?;
        let newest = newest_revision(self, &tx).await?;
        if revision <= newest {
            tx.rollback().await?;
            return Err(DbError::Conflict(format!(
                "revision {revision} is not above revision {newest}, the network's newest release: sign the release with a higher --revision"
            )));
        }
        let now = crate::now_ms();
        let row = tx
            .query_one_raw(self.stmt(
                "INSERT INTO releases (revision, version, digest, manifest, uploaded_at, uploaded_by) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                vec![
                    revision.into(),
                    version.into(),
                    digest.into(),
                    manifest.into(),
                    now.into(),
                    uploaded_by.into(),
                ],
            ))
            .await?
            .ok_or_else(|| DbError::NotFound("inserted release".into()))?;
        let id: i64 = row.try_get("", "id")?;
        tx.commit().await?;
        Ok(ReleaseRow {
            id,
            revision,
            version: version.to_owned(),
            digest: digest.to_owned(),
            manifest: manifest.to_owned(),
            uploaded_at: now,
            uploaded_by: uploaded_by.to_owned(),
        })
    }

    /// Releases, newest first.
    pub async fn releases(&self, limit: u32) -> Result<Vec<ReleaseRow>> {
        let rows = self
            .conn()
            .query_all_raw(self.stmt(
                &format!("SELECT {RELEASE_COLS} FROM releases ORDER BY revision DESC LIMIT $1"),
                vec![i64::from(limit).into()],
            ))
            .await?;
        rows.iter().map(release_row).collect()
    }

    /// The newest release: the network's software revision.
    pub async fn latest_release(&self) -> Result<Option<ReleaseRow>> {
        Ok(self.releases(1).await?.into_iter().next())
    }

    /// Every node's last report, by node id.
    pub async fn release_nodes(&self) -> Result<Vec<ReleaseNodeRow>> {
        let rows = self
            .conn()
            .query_all_raw(self.stmt(
                "SELECT node_id, host, roles, installed_revision, target_revision, state, error, updated_at \
                 FROM release_nodes ORDER BY node_id",
                vec![],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ReleaseNodeRow {
                    node_id: r.try_get("", "node_id")?,
                    host: r.try_get("", "host")?,
                    roles: r.try_get("", "roles")?,
                    installed_revision: r.try_get("", "installed_revision")?,
                    target_revision: r.try_get("", "target_revision")?,
                    state: r.try_get("", "state")?,
                    error: r.try_get("", "error")?,
                    updated_at: r.try_get("", "updated_at")?,
                })
            })
            .collect()
    }

    /// Records a node's state and, when `step` is given, the step in the log, in one
    /// transaction.
    pub async fn report_release_node(
        &self,
        node: &ReleaseNodeRow,
        step: Option<(&str, &str)>,
    ) -> Result<()> {
        let tx = self.write_tx().await?;
        let now = crate::now_ms();
        tx.execute_raw(self.stmt(
            "INSERT INTO release_nodes (node_id, host, roles, installed_revision, target_revision, state, error, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (node_id) DO UPDATE SET host = excluded.host, \
             roles = excluded.roles, installed_revision = excluded.installed_revision, \
             target_revision = excluded.target_revision, state = excluded.state, error = excluded.error, \
             updated_at = excluded.updated_at",
            vec![
                node.node_id.as_str().into(),
                node.host.as_str().into(),
                node.roles.as_str().into(),
                node.installed_revision.into(),
                node.target_revision.into(),
                node.state.as_str().into(),
                node.error.as_str().into(),
                now.into(),
            ],
        ))
        .await?;
        if let Some((step, detail)) = step {
            let revision = if node.target_revision != 0 {
                node.target_revision
            } else {
                node.installed_revision
            };
            tx.execute_raw(self.stmt(
                "INSERT INTO release_log (at, node_id, revision, step, detail) VALUES ($1, $2, $3, $4, $5)",
                vec![
                    now.into(),
                    node.node_id.as_str().into(),
                    revision.into(),
                    step.into(),
                    detail.into(),
                ],
            ))
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The update log, oldest first: the last `limit` steps, of one node when given.
    pub async fn release_log(&self, node: Option<&str>, limit: u32) -> Result<Vec<ReleaseLogRow>> {
        let (filter, mut values) = match node {
            Some(n) => (" WHERE node_id = $2", vec![n.into()]),
            None => ("", vec![]),
        };
        values.insert(0, i64::from(limit).into());
        let rows = self
            .conn()
            .query_all_raw(self.stmt(
                &format!(
                    "SELECT id, at, node_id, revision, step, detail FROM release_log{filter} \
                     ORDER BY id DESC LIMIT $1"
                ),
                values,
            ))
            .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                Ok(ReleaseLogRow {
                    id: r.try_get("", "id")?,
                    at: r.try_get("", "at")?,
                    node_id: r.try_get("", "node_id")?,
                    revision: r.try_get("", "revision")?,
                    step: r.try_get("", "step")?,
                    detail: r.try_get("", "detail")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }
}

async fn newest_revision(db: &Db, conn: &impl ConnectionTrait) -> Result<i64> {
    let row = conn
        .query_one_raw(db.stmt(
            "SELECT COALESCE(MAX(revision), 0) AS newest FROM releases",
            vec![],
        ))
        .await?;
    Ok(match row {
        Some(r) => r.try_get("", "newest")?,
        None => 0,
    })
}

fn release_row(r: &QueryResult) -> Result<ReleaseRow> {
    Ok(ReleaseRow {
        id: r.try_get("", "id")?,
        revision: r.try_get("", "revision")?,
        version: r.try_get("", "version")?,
        digest: r.try_get("", "digest")?,
        manifest: r.try_get("", "manifest")?,
        uploaded_at: r.try_get("", "uploaded_at")?,
        uploaded_by: r.try_get("", "uploaded_by")?,
    })
}
