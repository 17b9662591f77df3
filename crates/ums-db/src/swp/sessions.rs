//! Shared Workplace sessions: the user logged in on a device.

use sea_orm::sea_query::OnConflict;
use sea_orm::{EntityTrait, Set};

use crate::entity::swp_session;
use crate::{Db, Result};

/// A user logged in on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwpSession {
    pub device_id: i64,
    pub directory_id: i64,
    pub login: String,
    pub user_json: String,
    pub token_hash: String,
    pub started_at: i64,
}

impl Db {
    /// Records that a user logged in on a device, replacing an earlier session.
    pub async fn start_swp_session(&self, s: &SwpSession) -> Result<()> {
        swp_session::Entity::insert(swp_session::ActiveModel {
            device_id: Set(s.device_id),
            directory_id: Set(s.directory_id),
            login: Set(s.login.clone()),
            user_json: Set(s.user_json.clone()),
            token_hash: Set(s.token_hash.clone()),
            started_at: Set(s.started_at),
        })
        .on_conflict(
            OnConflict::column(swp_session::Column::DeviceId)
                .update_columns([
                    swp_session::Column::DirectoryId,
                    swp_session::Column::Login,
                    swp_session::Column::UserJson,
                    swp_session::Column::TokenHash,
                    swp_session::Column::StartedAt,
                ])
                .to_owned(),
        )
        .exec(self.conn())
        .await?;
        Ok(())
    }

    /// Ends the session on a device; whether there was one.
    pub async fn end_swp_session(&self, device_id: i64) -> Result<bool> {
        let r = swp_session::Entity::delete_by_id(device_id)
            .exec(self.conn())
            .await?;
        Ok(r.rows_affected > 0)
    }

    /// The session on a device, if a user is logged in.
    pub async fn swp_session(&self, device_id: i64) -> Result<Option<SwpSession>> {
        Ok(swp_session::Entity::find_by_id(device_id)
            .one(self.conn())
            .await?
            .map(|s| SwpSession {
                device_id: s.device_id,
                directory_id: s.directory_id,
                login: s.login,
                user_json: s.user_json,
                token_hash: s.token_hash,
                started_at: s.started_at,
            }))
    }
}
