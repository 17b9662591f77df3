//! Directories users log in against: how each is reached (controllers, bind account, TLS) and
//! how users and groups are found in it.

use std::fmt;

use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};

use crate::entity::{swp_assignment, swp_directory, swp_principal};
use crate::{Db, DbError, Result, is_unique_violation, next_generation, now_ms};

/// Which kind of directory: how users are found and groups resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DirectoryKind {
    /// Active Directory: sAMAccountName / userPrincipalName, memberOf, primaryGroupID.
    #[default]
    ActiveDirectory,
    /// Generic LDAP such as OpenLDAP: a login attribute (uid), memberOf or groupOfNames.
    Ldap,
}

impl DirectoryKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ActiveDirectory => "ad",
            Self::Ldap => "ldap",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ad" | "activedirectory" | "active_directory" => Ok(Self::ActiveDirectory),
            "ldap" => Ok(Self::Ldap),
            other => Err(DbError::Invalid(format!(
                "unknown directory kind `{other}`: use `ad` or `ldap`"
            ))),
        }
    }
}

/// A directory as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directory {
    pub id: i64,
    /// Settings generation of the last change.
    pub rev: i64,
    /// Its settings, with the stored bind password.
    pub input: DirectoryInput,
}

/// A directory's settings: a directory to create, the new values of one, or what is stored. An
/// empty `bind_password` on update keeps the stored one. `Debug` leaves out the bind password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct DirectoryInput {
    pub name: String,
    pub kind: DirectoryKind,
    pub domain: String,
    pub netbios: String,
    /// Controllers, tried in this order.
    pub urls: Vec<String>,
    pub base_dn: String,
    pub bind_dn: String,
    /// The bind account's password. Never returned by the admin API, never logged.
    pub bind_password: String,
    pub ca_pem: String,
    pub starttls: bool,
    pub page_size: u32,
    pub login_attribute: String,
    pub user_filter: String,
    pub group_membership: String,
}

impl fmt::Debug for DirectoryInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectoryInput")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("domain", &self.domain)
            .field("urls", &self.urls)
            .field("base_dn", &self.base_dn)
            .field("bind_dn", &self.bind_dn)
            .field("bind_password", &"***")
            .finish_non_exhaustive()
    }
}

pub(super) fn to_directory(m: swp_directory::Model) -> Directory {
    Directory {
        id: m.id,
        rev: m.rev,
        input: DirectoryInput {
            name: m.name,
            kind: DirectoryKind::parse(&m.kind).unwrap_or(DirectoryKind::Ldap),
            domain: m.domain,
            netbios: m.netbios,
            urls: m
                .urls
                .lines()
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect(),
            base_dn: m.base_dn,
            bind_dn: m.bind_dn,
            bind_password: m.bind_password,
            ca_pem: m.ca_pem,
            starttls: m.starttls,
            page_size: u32::try_from(m.page_size).unwrap_or(500),
            login_attribute: m.login_attribute,
            user_filter: m.user_filter,
            group_membership: m.group_membership,
        },
    }
}

/// Sets the columns of a directory's settings from `d`, all but the bind password, which
/// creating and updating treat differently.
fn set_settings(m: &mut swp_directory::ActiveModel, d: &DirectoryInput) {
    m.name = Set(d.name.clone());
    m.kind = Set(d.kind.as_str().to_owned());
    m.domain = Set(d.domain.clone());
    m.netbios = Set(d.netbios.clone());
    m.urls = Set(d.urls.join("\n"));
    m.base_dn = Set(d.base_dn.clone());
    m.bind_dn = Set(d.bind_dn.clone());
    m.ca_pem = Set(d.ca_pem.clone());
    m.starttls = Set(d.starttls);
    m.page_size = Set(i64::from(d.page_size));
    m.login_attribute = Set(d.login_attribute.clone());
    m.user_filter = Set(d.user_filter.clone());
    m.group_membership = Set(d.group_membership.clone());
}

/// The error of a write that would give two directories one name.
fn name_taken(e: sea_orm::DbErr, name: &str) -> DbError {
    if is_unique_violation(&e) {
        DbError::Conflict(format!("a directory named `{name}` already exists"))
    } else {
        e.into()
    }
}

impl Db {
    /// Creates a directory. Names are unique.
    pub async fn create_directory(&self, d: &DirectoryInput) -> Result<Directory> {
        let tx = self.write_tx().await?;
        let rev = next_generation(&tx).await?;
        let mut am = swp_directory::ActiveModel {
            bind_password: Set(d.bind_password.clone()),
            rev: Set(rev),
            created_at: Set(now_ms()),
            ..Default::default()
        };
        set_settings(&mut am, d);
        let m = am.insert(&tx).await.map_err(|e| name_taken(e, &d.name))?;
        tx.commit().await?;
        Ok(to_directory(m))
    }

    /// Replaces a directory's settings; an empty bind password keeps the stored one.
    pub async fn update_directory(&self, id: i64, d: &DirectoryInput) -> Result<Directory> {
        let tx = self.write_tx().await?;
        let found = swp_directory::Entity::find_by_id(id)
            .one(&tx)
            .await?
            .ok_or_else(|| DbError::NotFound(format!("directory {id}")))?;
        let mut am: swp_directory::ActiveModel = found.into();
        set_settings(&mut am, d);
        if !d.bind_password.is_empty() {
            am.bind_password = Set(d.bind_password.clone());
        }
        am.rev = Set(next_generation(&tx).await?);
        let m = am.update(&tx).await.map_err(|e| name_taken(e, &d.name))?;
        tx.commit().await?;
        Ok(to_directory(m))
    }

    pub async fn list_directories(&self) -> Result<Vec<Directory>> {
        Ok(swp_directory::Entity::find()
            .order_by_asc(swp_directory::Column::Id)
            .all(self.conn())
            .await?
            .into_iter()
            .map(to_directory)
            .collect())
    }

    /// Deletes a directory with its principals and their assignments.
    pub async fn delete_directory(&self, id: i64) -> Result<()> {
        let tx = self.write_tx().await?;
        let principals: Vec<i64> = swp_principal::Entity::find()
            .filter(swp_principal::Column::DirectoryId.eq(id))
            .all(&tx)
            .await?
            .into_iter()
            .map(|p| p.id)
            .collect();
        swp_assignment::Entity::delete_many()
            .filter(swp_assignment::Column::PrincipalId.is_in(principals))
            .exec(&tx)
            .await?;
        swp_principal::Entity::delete_many()
            .filter(swp_principal::Column::DirectoryId.eq(id))
            .exec(&tx)
            .await?;
        let deleted = swp_directory::Entity::delete_by_id(id).exec(&tx).await?;
        if deleted.rows_affected == 0 {
            return Err(DbError::NotFound(format!("directory {id}")));
        }
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_bind_password() {
        let d = Directory {
            id: 1,
            rev: 1,
            input: DirectoryInput {
                name: "ad".into(),
                kind: DirectoryKind::ActiveDirectory,
                bind_password: "hunter2".into(),
                page_size: 500,
                ..Default::default()
            },
        };
        assert!(!format!("{d:?}").contains("hunter2"));
    }
}
