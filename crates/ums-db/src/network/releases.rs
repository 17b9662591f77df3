//! Software releases: the accepted releases (their signed manifests), what every node reports
//! of its update, the log of every step nodes took, and the rollout as administrators set it
//! (paused, how many nodes at once, a rollback) with the update slots it hands out.

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

/// The rollout as administrators set it; [`Default`] until one changed anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutRow {
    /// No update slot is handed out; a node holding one finishes its update.
    pub paused: bool,
    pub paused_by: String,
    pub paused_at: i64,
    /// How many nodes may update at once.
    pub concurrency: u32,
    /// The revision the network wants again after a rollback (0: none).
    pub rollback_to: i64,
    /// The newest revision when the rollback was made; a newer upload ends the rollback.
    pub rollback_from: i64,
    pub rollback_by: String,
    pub rollback_at: i64,
}

impl Default for RolloutRow {
    fn default() -> Self {
        Self {
            paused: false,
            paused_by: String::new(),
            paused_at: 0,
            concurrency: 1,
            rollback_to: 0,
            rollback_from: 0,
            rollback_by: String::new(),
            rollback_at: 0,
        }
    }
}

impl RolloutRow {
    /// Whether a rollback holds while `newest` is the newest release.
    pub fn rolled_back(&self, newest: i64) -> bool {
        self.rollback_to > 0 && self.rollback_from == newest
    }

    /// The revision the network wants its nodes on, `newest` being the newest release's.
    pub fn wanted(&self, newest: i64) -> i64 {
        if self.rolled_back(newest) {
            self.rollback_to
        } else {
            newest
        }
    }
}

/// The most nodes that may update at once.
pub const MAX_CONCURRENCY: u32 = 100;
/// The update slots' leases: `release-slot`, `release-slot-2`, ...
const SLOT: &str = "release-slot";

fn slot_name(i: u32) -> String {
    if i == 0 {
        SLOT.to_owned()
    } else {
        format!("{SLOT}-{}", i + 1)
    }
}

const ROLLOUT_COLS: &str = "paused, paused_by, paused_at, concurrency, rollback_to, rollback_from, rollback_by, rollback_at";

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

impl Db {
    /// The rollout as administrators set it.
    pub async fn release_rollout(&self) -> Result<RolloutRow> {
        read_rollout(self, self.conn()).await
    }

    /// Pauses or resumes the rollout, in one transaction; returns the rollout as it is now.
    pub async fn set_release_paused(&self, paused: bool, by: &str) -> Result<RolloutRow> {
        self.change_rollout(|r, _| {
            r.paused = paused;
            r.paused_by = by.to_owned();
            r.paused_at = crate::now_ms();
            Ok(())
        })
        .await
    }

    /// Sets how many nodes may update at once (1 to [`MAX_CONCURRENCY`]).
    pub async fn set_release_concurrency(&self, concurrency: u32) -> Result<RolloutRow> {
        if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
            return Err(DbError::Invalid(format!(
                "concurrency must be 1 to {MAX_CONCURRENCY} nodes at once, not {concurrency}"
            )));
        }
        self.change_rollout(|r, _| {
            r.concurrency = concurrency;
            Ok(())
        })
        .await
    }

    /// Rolls the network back, in one transaction: the revision it wants becomes the newest
    /// release below the one it wants now that a node installed (logged `done` for). Refused,
    /// nothing written, when there is none.
    pub async fn roll_back_release(&self, by: &str) -> Result<RolloutRow> {
        self.change_rollout(|r, (newest, target)| {
            let wanted = r.wanted(newest);
            if newest == 0 {
                return Err(DbError::Conflict(
                    "no release was uploaded: there is nothing to roll back".into(),
                ));
            }
            let Some(target) = target.filter(|&t| t > 0) else {
                return Err(DbError::Conflict(format!(
                    "no release older than revision {wanted} was installed by a node: there is nothing to roll back to; upload a fixed release with a higher revision"
                )));
            };
            r.rollback_to = target;
            r.rollback_from = newest;
            r.rollback_by = by.to_owned();
            r.rollback_at = crate::now_ms();
            Ok(())
        })
        .await
    }

    /// Reads the rollout, changes it with the newest revision and the rollback target below
    /// the wanted one at hand, and writes it back, all in one transaction.
    async fn change_rollout(
        &self,
        change: impl FnOnce(&mut RolloutRow, (i64, Option<i64>)) -> Result<()>,
    ) -> Result<RolloutRow> {
        let tx = self.write_tx().await?;
        let lock = match self.backend {
            crate::Backend::Postgres => " FOR UPDATE",
            crate::Backend::Sqlite => "",
        };
        let mut rollout = read_rollout_with(self, &tx, lock).await?;
        let newest = newest_revision(self, &tx).await?;
        let wanted = rollout.wanted(newest);
        let target = tx
            .query_one_raw(self.stmt(
                "SELECT MAX(r.revision) AS target FROM releases r WHERE r.revision < $1 AND EXISTS \
                 (SELECT 1 FROM release_log l WHERE l.revision = r.revision AND l.step = 'done')",
                vec![wanted.into()],
            ))
            .await?
            .map(|r| r.try_get::<Option<i64>>("", "target"))
            .transpose()?
            .flatten();
        if let Err(e) = change(&mut rollout, (newest, target)) {
            tx.rollback().await?;
            return Err(e);
        }
        tx.execute_raw(self.stmt(
            &format!(
                "INSERT INTO release_rollout (id, {ROLLOUT_COLS}) VALUES (1, $1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (id) DO UPDATE SET paused = excluded.paused, paused_by = excluded.paused_by, \
                 paused_at = excluded.paused_at, concurrency = excluded.concurrency, \
                 rollback_to = excluded.rollback_to, rollback_from = excluded.rollback_from, \
                 rollback_by = excluded.rollback_by, rollback_at = excluded.rollback_at"
            ),
            vec![
                i64::from(rollout.paused).into(),
                rollout.paused_by.as_str().into(),
                rollout.paused_at.into(),
                i64::from(rollout.concurrency).into(),
                rollout.rollback_to.into(),
                rollout.rollback_from.into(),
                rollout.rollback_by.as_str().into(),
                rollout.rollback_at.into(),
            ],
        ))
        .await?;
        tx.commit().await?;
        Ok(rollout)
    }

    /// The release the network wants its nodes on (the newest, or the one a rollback named)
    /// with whether it is a rollback, and the newest release.
    pub async fn wanted_release(&self) -> Result<Option<(ReleaseRow, bool)>> {
        let Some(newest) = self.latest_release().await? else {
            return Ok(None);
        };
        let rollout = self.release_rollout().await?;
        if !rollout.rolled_back(newest.revision) {
            return Ok(Some((newest, false)));
        }
        let row = self
            .conn()
            .query_one_raw(self.stmt(
                &format!("SELECT {RELEASE_COLS} FROM releases WHERE revision = $1"),
                vec![rollout.rollback_to.into()],
            ))
            .await?;
        match row {
            Some(r) => Ok(Some((release_row(&r)?, true))),
            None => Ok(Some((newest, false))),
        }
    }

    /// Gives `node` an update slot (keeping the one it holds): one of `concurrency` leases of
    /// `ttl_ms`. `false` when every slot is held by another node.
    pub async fn acquire_release_slot(
        &self,
        node: &str,
        concurrency: u32,
        ttl_ms: i64,
    ) -> Result<bool> {
        if let Some(held) = self.held_release_slot(node).await? {
            return Ok(self.acquire_lease(&held, node, ttl_ms).await?.is_some());
        }
        for i in 0..concurrency.clamp(1, MAX_CONCURRENCY) {
            if self
                .acquire_lease(&slot_name(i), node, ttl_ms)
                .await?
                .is_some()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The slot `node` holds now, if any.
    async fn held_release_slot(&self, node: &str) -> Result<Option<String>> {
        let sql = format!(
            "SELECT name FROM leases WHERE name LIKE '{SLOT}%' AND holder = $1 AND expires_at > {} ORDER BY name",
            self.now_sql()
        );
        let row = self
            .conn()
            .query_one_raw(self.stmt(&sql, vec![node.into()]))
            .await?;
        row.map(|r| r.try_get("", "name"))
            .transpose()
            .map_err(Into::into)
    }

    /// Renews the slot `node` holds, if it holds one.
    pub async fn renew_release_slot(&self, node: &str, ttl_ms: i64) -> Result<()> {
        if let Some(held) = self.held_release_slot(node).await? {
            self.acquire_lease(&held, node, ttl_ms).await?;
        }
        Ok(())
    }

    /// Frees the slot `node` holds, at once.
    pub async fn free_release_slot(&self, node: &str) -> Result<()> {
        self.conn()
            .execute_raw(self.stmt(
                &format!(
                    "UPDATE leases SET expires_at = 0 WHERE name LIKE '{SLOT}%' AND holder = $1"
                ),
                vec![node.into()],
            ))
            .await?;
        Ok(())
    }

    /// The nodes holding an update slot now.
    pub async fn release_slot_holders(&self) -> Result<Vec<String>> {
        let sql = format!(
            "SELECT holder FROM leases WHERE name LIKE '{SLOT}%' AND expires_at > {} ORDER BY holder",
            self.now_sql()
        );
        let rows = self.conn().query_all_raw(self.stmt(&sql, vec![])).await?;
        rows.iter()
            .map(|r| r.try_get("", "holder").map_err(Into::into))
            .collect()
    }
}

async fn read_rollout(db: &Db, conn: &impl ConnectionTrait) -> Result<RolloutRow> {
    read_rollout_with(db, conn, "").await
}

async fn read_rollout_with(db: &Db, conn: &impl ConnectionTrait, lock: &str) -> Result<RolloutRow> {
    let row = conn
        .query_one_raw(db.stmt(
            &format!("SELECT {ROLLOUT_COLS} FROM release_rollout WHERE id = 1{lock}"),
            vec![],
        ))
        .await?;
    let Some(r) = row else {
        return Ok(RolloutRow::default());
    };
    let concurrency: i64 = r.try_get("", "concurrency")?;
    Ok(RolloutRow {
        paused: r.try_get::<i64>("", "paused")? != 0,
        paused_by: r.try_get("", "paused_by")?,
        paused_at: r.try_get("", "paused_at")?,
        concurrency: u32::try_from(concurrency.clamp(1, i64::from(MAX_CONCURRENCY))).unwrap_or(1),
        rollback_to: r.try_get("", "rollback_to")?,
        rollback_from: r.try_get("", "rollback_from")?,
        rollback_by: r.try_get("", "rollback_by")?,
        rollback_at: r.try_get("", "rollback_at")?,
    })
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
