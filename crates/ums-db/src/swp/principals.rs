//! Users, groups and OUs of a directory, named by the administrator, and the profiles assigned to
//! them. An assignment stamps the principal with a new settings generation like every other
//! settings write; a profile holding device-only parameters cannot be assigned.

use std::collections::HashMap;

use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use ums_domain::ObjectKind;

use crate::entity::{swp_assignment, swp_directory, swp_principal};
use crate::{Db, DbError, Result, next_generation};

/// The kind of a directory object profiles are assigned to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PrincipalKind {
    User,
    Group,
    Ou,
}

impl PrincipalKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Group => "group",
            Self::Ou => "ou",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "user" => Ok(Self::User),
            "group" => Ok(Self::Group),
            "ou" => Ok(Self::Ou),
            other => Err(DbError::Invalid(format!(
                "unknown kind `{other}`: use user, group or ou"
            ))),
        }
    }

    /// The object kind of the merge.
    pub fn object_kind(&self) -> ObjectKind {
        match self {
            Self::User => ObjectKind::User,
            Self::Group => ObjectKind::UserGroup,
            Self::Ou => ObjectKind::Ou,
        }
    }
}

/// A user, group or OU of a directory, named by the administrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub id: i64,
    pub directory_id: i64,
    pub kind: PrincipalKind,
    pub name: String,
    pub key: String,
    pub rev: i64,
}

/// The normalised form principals are matched by: lowercase, and for a distinguished name no
/// spaces around its separators. Users are named by login, groups by name or DN, OUs by name or
/// DN.
pub fn principal_key(name: &str) -> String {
    let name = name.trim();
    if name.contains('=') {
        name.split(',')
            .map(|rdn| rdn.split('=').map(str::trim).collect::<Vec<_>>().join("="))
            .collect::<Vec<_>>()
            .join(",")
            .to_lowercase()
    } else {
        name.to_lowercase()
    }
}

pub(super) fn to_principal(m: swp_principal::Model) -> Option<Principal> {
    Some(Principal {
        id: m.id,
        directory_id: m.directory_id,
        kind: PrincipalKind::parse(&m.kind).ok()?,
        name: m.name,
        key: m.key,
        rev: m.rev,
    })
}

impl Db {
    /// Assigns a profile to a user, group or OU of a directory. Refused when the profile holds
    /// device-only parameters. Assigning twice is a no-op.
    pub async fn assign_principal(
        &self,
        profile_id: i64,
        directory_id: i64,
        kind: PrincipalKind,
        name: &str,
    ) -> Result<Principal> {
        let tx = self.write_tx().await?;
        if swp_directory::Entity::find_by_id(directory_id)
            .one(&tx)
            .await?
            .is_none()
        {
            return Err(DbError::NotFound(format!("directory {directory_id}")));
        }
        let params = crate::entity::profile_param::Entity::find()
            .filter(crate::entity::profile_param::Column::ProfileId.eq(profile_id))
            .all(&tx)
            .await?;
        if crate::entity::profile::Entity::find_by_id(profile_id)
            .one(&tx)
            .await?
            .is_none()
        {
            return Err(DbError::NotFound(format!("profile {profile_id}")));
        }
        let bad = ums_domain::device_only_keys(params.iter().map(|p| p.key.as_str()));
        if !bad.is_empty() {
            return Err(DbError::Invalid(format!(
                "profile {profile_id} holds device-only parameters ({}), which never take effect \
                 for users: remove them or assign the profile to devices",
                bad.join(", ")
            )));
        }
        let key = principal_key(name);
        let rev = next_generation(&tx).await?;
        let existing = swp_principal::Entity::find()
            .filter(swp_principal::Column::DirectoryId.eq(directory_id))
            .filter(swp_principal::Column::Kind.eq(kind.as_str()))
            .filter(swp_principal::Column::Key.eq(key.clone()))
            .one(&tx)
            .await?;
        let p = match existing {
            Some(p) => p,
            None => {
                swp_principal::ActiveModel {
                    directory_id: Set(directory_id),
                    kind: Set(kind.as_str().to_owned()),
                    name: Set(name.trim().to_owned()),
                    key: Set(key),
                    rev: Set(rev),
                    ..Default::default()
                }
                .insert(&tx)
                .await?
            }
        };
        let already = swp_assignment::Entity::find()
            .filter(swp_assignment::Column::PrincipalId.eq(p.id))
            .filter(swp_assignment::Column::ProfileId.eq(profile_id))
            .one(&tx)
            .await?;
        if already.is_none() {
            swp_assignment::ActiveModel {
                profile_id: Set(profile_id),
                principal_id: Set(p.id),
                ..Default::default()
            }
            .insert(&tx)
            .await?;
            swp_principal::Entity::update_many()
                .col_expr(swp_principal::Column::Rev, Expr::value(rev))
                .filter(swp_principal::Column::Id.eq(p.id))
                .exec(&tx)
                .await?;
        }
        tx.commit().await?;
        to_principal(p)
            .ok_or_else(|| DbError::Invalid("stored principal has an unknown kind".into()))
    }

    /// Removes an assignment to a user, group or OU.
    pub async fn unassign_principal(
        &self,
        profile_id: i64,
        directory_id: i64,
        kind: PrincipalKind,
        name: &str,
    ) -> Result<()> {
        let tx = self.write_tx().await?;
        let key = principal_key(name);
        let p = swp_principal::Entity::find()
            .filter(swp_principal::Column::DirectoryId.eq(directory_id))
            .filter(swp_principal::Column::Kind.eq(kind.as_str()))
            .filter(swp_principal::Column::Key.eq(key))
            .one(&tx)
            .await?;
        let missing = || {
            DbError::NotFound(format!(
                "assignment of profile {profile_id} to {} `{name}`",
                kind.as_str()
            ))
        };
        let p = p.ok_or_else(missing)?;
        let deleted = swp_assignment::Entity::delete_many()
            .filter(swp_assignment::Column::PrincipalId.eq(p.id))
            .filter(swp_assignment::Column::ProfileId.eq(profile_id))
            .exec(&tx)
            .await?;
        if deleted.rows_affected == 0 {
            return Err(missing());
        }
        let rev = next_generation(&tx).await?;
        swp_principal::Entity::update_many()
            .col_expr(swp_principal::Column::Rev, Expr::value(rev))
            .filter(swp_principal::Column::Id.eq(p.id))
            .exec(&tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Assignments to users, groups and OUs, optionally of one profile.
    pub async fn list_principal_assignments(
        &self,
        profile_id: Option<i64>,
    ) -> Result<Vec<(i64, Principal)>> {
        let mut q = swp_assignment::Entity::find().order_by_asc(swp_assignment::Column::Id);
        if let Some(p) = profile_id {
            q = q.filter(swp_assignment::Column::ProfileId.eq(p));
        }
        let list = q.all(self.conn()).await?;
        let principals: HashMap<i64, Principal> = swp_principal::Entity::find()
            .all(self.conn())
            .await?
            .into_iter()
            .filter_map(to_principal)
            .map(|p| (p.id, p))
            .collect();
        Ok(list
            .into_iter()
            .filter_map(|a| Some((a.profile_id, principals.get(&a.principal_id)?.clone())))
            .collect())
    }

    /// Whether a profile is assigned to any user, group or OU.
    pub async fn profile_has_principals(&self, profile_id: i64) -> Result<bool> {
        Ok(swp_assignment::Entity::find()
            .filter(swp_assignment::Column::ProfileId.eq(profile_id))
            .one(self.conn())
            .await?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_keys_are_normalised() {
        assert_eq!(principal_key(" Alice "), "alice");
        assert_eq!(
            principal_key("OU = Sales, OU=Berlin ,DC=ad,DC=example"),
            "ou=sales,ou=berlin,dc=ad,dc=example"
        );
    }
}
