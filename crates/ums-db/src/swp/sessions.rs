//! Shared Workplace sessions: the user logged in on a device.
//!
//! Every session carries a tag, stored with the session and in `devices.swp_session`, so the
//! check-in's `UPDATE ... RETURNING` tells each server whether a user is logged in on the device
//! and whether it is the session that server has in memory. A new session, a refresh that
//! changed the user, and the end of a session change the tag; each is one transaction over both
//! rows.

use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};

use std::collections::HashMap;

use sea_orm::Statement;

use crate::batch::values_rows;
use crate::entity::{device, swp_session};
use crate::{Backend, Db, DbError, Result};

/// Largest session tag: tags are 1..=MAX_TAG.
pub const MAX_TAG: i64 = (1 << 23) - 1;

/// A user logged in on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwpSession {
    pub device_id: i64,
    pub directory_id: i64,
    pub login: String,
    pub user_json: String,
    pub token_hash: String,
    pub started_at: i64,
    /// 1..=[`MAX_TAG`]; 0 in a session written before schema 1.5.
    pub tag: i64,
    /// The server that took the login.
    pub server_id: String,
    /// When the directory was last asked about the user (the login, or a refresh).
    pub refreshed_at: i64,
}

fn to_session(s: swp_session::Model) -> SwpSession {
    SwpSession {
        device_id: s.device_id,
        directory_id: s.directory_id,
        login: s.login,
        user_json: s.user_json,
        token_hash: s.token_hash,
        started_at: s.started_at,
        tag: s.tag.unwrap_or(0),
        server_id: s.server_id.unwrap_or_default(),
        refreshed_at: s.refreshed_at.unwrap_or(s.started_at),
    }
}

/// A tag in 1..=MAX_TAG that differs from the device's current one.
fn fresh_tag(wanted: i64, current: Option<i64>) -> i64 {
    let t = wanted.rem_euclid(MAX_TAG) + 1;
    if current == Some(t) {
        t % MAX_TAG + 1
    } else {
        t
    }
}

async fn set_device_tag<C: ConnectionTrait>(
    tx: &C,
    device_id: i64,
    tag: Option<i64>,
) -> Result<()> {
    device::Entity::update_many()
        .col_expr(device::Column::SwpSession, Expr::value(tag))
        .filter(device::Column::Id.eq(device_id))
        .exec(tx)
        .await?;
    Ok(())
}

/// Starts sessions (one per device) inside the caller's transaction, in two statements
/// whatever their number: the devices' new tags (`UPDATE ... FROM (VALUES ...) RETURNING`, each
/// tag made from its seed and different from the tag it replaces, as [`fresh_tag`]), then the
/// sessions (one multi-row upsert). Returns device id -> stored tag for the devices that exist;
/// a device that does not is left out and nothing is written for it.
pub(crate) async fn start_sessions_in<C: ConnectionTrait>(
    tx: &C,
    backend: Backend,
    sessions: &[(&SwpSession, i64)],
) -> Result<HashMap<i64, i64>> {
    let mut tags = HashMap::new();
    if sessions.is_empty() {
        return Ok(tags);
    }
    let mut values = Vec::with_capacity(sessions.len() * 2);
    for (s, seed) in sessions {
        values.push(s.device_id.into());
        values.push(fresh_tag(*seed, None).into());
    }
    let sql = format!(
        "WITH v(id, tag) AS (VALUES {}) \
         UPDATE devices SET swp_session = CASE WHEN devices.swp_session = v.tag \
         THEN v.tag % {MAX_TAG} + 1 ELSE v.tag END \
         FROM v WHERE devices.id = v.id \
         RETURNING devices.id, devices.swp_session",
        values_rows(backend, sessions.len(), &["bigint", "bigint"])
    );
    let stmt = Statement::from_sql_and_values(tx.get_database_backend(), sql, values);
    for row in tx.query_all_raw(stmt).await? {
        let id: i64 = row.try_get("", "id")?;
        let tag: Option<i64> = row.try_get("", "swp_session")?;
        if let Some(tag) = tag {
            tags.insert(id, tag);
        }
    }
    let rows: Vec<swp_session::ActiveModel> = sessions
        .iter()
        .filter_map(|(s, _)| {
            let tag = *tags.get(&s.device_id)?;
            Some(swp_session::ActiveModel {
                device_id: Set(s.device_id),
                directory_id: Set(s.directory_id),
                login: Set(s.login.clone()),
                user_json: Set(s.user_json.clone()),
                token_hash: Set(s.token_hash.clone()),
                started_at: Set(s.started_at),
                tag: Set(Some(tag)),
                server_id: Set(Some(s.server_id.clone())),
                refreshed_at: Set(Some(s.started_at)),
            })
        })
        .collect();
    if rows.is_empty() {
        return Ok(tags);
    }
    swp_session::Entity::insert_many(rows)
        .on_conflict(
            OnConflict::column(swp_session::Column::DeviceId)
                .update_columns([
                    swp_session::Column::DirectoryId,
                    swp_session::Column::Login,
                    swp_session::Column::UserJson,
                    swp_session::Column::TokenHash,
                    swp_session::Column::StartedAt,
                    swp_session::Column::Tag,
                    swp_session::Column::ServerId,
                    swp_session::Column::RefreshedAt,
                ])
                .to_owned(),
        )
        .exec(tx)
        .await?;
    Ok(tags)
}

impl Db {
    /// Records that a user logged in on a device, replacing an earlier session, in one
    /// transaction with the device's session tag. `tag_seed` is a random number the tag is
    /// made from; the stored session (with its tag) is returned.
    pub async fn start_swp_session(&self, s: &SwpSession, tag_seed: i64) -> Result<SwpSession> {
        let tx = self.write_tx().await?;
        let tags = start_sessions_in(&tx, self.backend(), &[(s, tag_seed)]).await?;
        tx.commit().await?;
        let tag = *tags
            .get(&s.device_id)
            .ok_or_else(|| DbError::NotFound(format!("device {}", s.device_id)))?;
        Ok(SwpSession {
            tag,
            refreshed_at: s.started_at,
            ..s.clone()
        })
    }

    /// Ends the session on a device (logout, or an administrator's forced logout); the session
    /// that ended, if there was one.
    pub async fn end_swp_session(&self, device_id: i64) -> Result<Option<SwpSession>> {
        let tx = self.write_tx().await?;
        let found = swp_session::Entity::find_by_id(device_id).one(&tx).await?;
        if found.is_some() {
            swp_session::Entity::delete_by_id(device_id)
                .exec(&tx)
                .await?;
        }
        set_device_tag(&tx, device_id, None).await?;
        tx.commit().await?;
        Ok(found.map(to_session))
    }

    /// The session on a device, if a user is logged in.
    pub async fn swp_session(&self, device_id: i64) -> Result<Option<SwpSession>> {
        Ok(swp_session::Entity::find_by_id(device_id)
            .one(self.conn())
            .await?
            .map(to_session))
    }

    /// Every session, oldest first, optionally of one user (login, case-insensitive).
    pub async fn list_swp_sessions(&self, login: Option<&str>) -> Result<Vec<SwpSession>> {
        let all = swp_session::Entity::find()
            .order_by_asc(swp_session::Column::StartedAt)
            .all(self.conn())
            .await?;
        Ok(all
            .into_iter()
            .filter(|s| login.is_none_or(|l| s.login.eq_ignore_ascii_case(l)))
            .map(to_session)
            .collect())
    }

    /// Sessions the directory was last asked about before `before`, oldest first.
    pub async fn stale_swp_sessions(&self, before: i64, limit: u64) -> Result<Vec<SwpSession>> {
        Ok(swp_session::Entity::find()
            .filter(
                Condition::any()
                    .add(swp_session::Column::RefreshedAt.lt(before))
                    .add(swp_session::Column::RefreshedAt.is_null()),
            )
            .order_by_asc(swp_session::Column::RefreshedAt)
            .limit(limit)
            .all(self.conn())
            .await?
            .into_iter()
            .map(to_session)
            .collect())
    }

    /// After asking the directory again about the user of a session: records when, and when
    /// the answer differs (`user_json` is `Some`), stores it under a new tag, so the device's
    /// next check-in sees its settings changed. Nothing happens when the session is no longer
    /// the one asked about (`tag`). Whether the session changed.
    pub async fn refresh_swp_session(
        &self,
        device_id: i64,
        tag: i64,
        user_json: Option<&str>,
        tag_seed: i64,
        at: i64,
    ) -> Result<bool> {
        let tx = self.write_tx().await?;
        let Some(s) = swp_session::Entity::find_by_id(device_id).one(&tx).await? else {
            return Ok(false);
        };
        if s.tag.unwrap_or(0) != tag {
            return Ok(false);
        }
        let mut update = swp_session::Entity::update_many()
            .col_expr(swp_session::Column::RefreshedAt, Expr::value(at))
            .filter(swp_session::Column::DeviceId.eq(device_id));
        let changed = match user_json {
            Some(json) if json != s.user_json => {
                let new = fresh_tag(tag_seed, Some(tag));
                update = update
                    .col_expr(swp_session::Column::UserJson, Expr::value(json))
                    .col_expr(swp_session::Column::Tag, Expr::value(new));
                set_device_tag(&tx, device_id, Some(new)).await?;
                true
            }
            _ => false,
        };
        update.exec(&tx).await?;
        tx.commit().await?;
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_in_range_and_differ_from_the_current_one() {
        for seed in [i64::MIN, -1, 0, 1, MAX_TAG - 1, MAX_TAG, i64::MAX] {
            let t = fresh_tag(seed, None);
            assert!((1..=MAX_TAG).contains(&t), "{seed} -> {t}");
            assert_ne!(fresh_tag(seed, Some(t)), t);
            assert!((1..=MAX_TAG).contains(&fresh_tag(seed, Some(t))));
        }
    }
}
