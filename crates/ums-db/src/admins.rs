//! Administrator accounts and their sessions. Passwords arrive here already hashed (argon2id);
//! session tokens only as sha256 hashes.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set,
};

use crate::entity::{admin, admin_session};
use crate::{Db, DbError, Result, is_unique_violation, now_ms};

pub use crate::entity::admin::Model as Admin;

impl Db {
    pub async fn create_admin(
        &self,
        username: &str,
        password_hash: &str,
        permissions: &[String],
    ) -> Result<Admin> {
        admin::ActiveModel {
            username: Set(username.to_owned()),
            password_hash: Set(password_hash.to_owned()),
            permissions: Set(permissions.join(",")),
            created_at: Set(now_ms()),
            ..Default::default()
        }
        .insert(self.conn())
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                DbError::Conflict(format!("administrator `{username}` already exists"))
            } else {
                e.into()
            }
        })
    }

    pub async fn count_admins(&self) -> Result<u64> {
        Ok(admin::Entity::find().count(self.conn()).await?)
    }

    pub async fn list_admins(&self) -> Result<Vec<Admin>> {
        Ok(admin::Entity::find()
            .order_by_asc(admin::Column::Id)
            .all(self.conn())
            .await?)
    }

    pub async fn find_admin(&self, username: &str) -> Result<Option<Admin>> {
        Ok(admin::Entity::find()
            .filter(admin::Column::Username.eq(username))
            .one(self.conn())
            .await?)
    }

    /// Replaces an administrator's password hash and ends their sessions.
    pub async fn set_admin_password(&self, username: &str, password_hash: &str) -> Result<()> {
        let tx = self.write_tx().await?;
        let a = admin_named(&tx, username).await?;
        admin_session::Entity::delete_many()
            .filter(admin_session::Column::AdminId.eq(a.id))
            .exec(&tx)
            .await?;
        let mut am: admin::ActiveModel = a.into();
        am.password_hash = Set(password_hash.to_owned());
        am.update(&tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes an administrator; the last one cannot be deleted.
    pub async fn delete_admin(&self, username: &str) -> Result<()> {
        let tx = self.write_tx().await?;
        let a = admin_named(&tx, username).await?;
        if admin::Entity::find().count(&tx).await? <= 1 {
            return Err(DbError::Conflict(
                "the last administrator cannot be deleted".into(),
            ));
        }
        admin_session::Entity::delete_many()
            .filter(admin_session::Column::AdminId.eq(a.id))
            .exec(&tx)
            .await?;
        admin::Entity::delete_by_id(a.id).exec(&tx).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn create_session(
        &self,
        token_hash: &str,
        admin_id: i64,
        expires_at: i64,
    ) -> Result<()> {
        let tx = self.write_tx().await?;
        admin_session::Entity::delete_many()
            .filter(admin_session::Column::ExpiresAt.lt(now_ms()))
            .exec(&tx)
            .await?;
        admin_session::ActiveModel {
            token_hash: Set(token_hash.to_owned()),
            admin_id: Set(admin_id),
            expires_at: Set(expires_at),
        }
        .insert(&tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends a session (a logout): its token is refused from now on. Unknown hashes are no error.
    pub async fn delete_session(&self, token_hash: &str) -> Result<()> {
        let tx = self.write_tx().await?;
        admin_session::Entity::delete_by_id(token_hash.to_owned())
            .exec(&tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The administrator a session token hash belongs to, if the session is still valid.
    pub async fn session_admin(&self, token_hash: &str, now: i64) -> Result<Option<(Admin, i64)>> {
        let Some(s) = admin_session::Entity::find_by_id(token_hash.to_owned())
            .one(self.conn())
            .await?
        else {
            return Ok(None);
        };
        if s.expires_at <= now {
            return Ok(None);
        }
        Ok(admin::Entity::find_by_id(s.admin_id)
            .one(self.conn())
            .await?
            .map(|a| (a, s.expires_at)))
    }
}

async fn admin_named<C: sea_orm::ConnectionTrait>(tx: &C, username: &str) -> Result<Admin> {
    admin::Entity::find()
        .filter(admin::Column::Username.eq(username))
        .one(tx)
        .await?
        .ok_or_else(|| DbError::NotFound(format!("administrator `{username}`")))
}
