//! Shared Workplace: directories users log in against, the users, groups and OUs profiles are
//! assigned to (by name), per-device licence and switch, and device sessions.
//!
//! Assignments to users, groups and OUs stamp the principal with a new settings generation like
//! every other settings write. A profile holding device-only parameters cannot be assigned to
//! them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use ums_domain::ObjectKind;

use crate::{Db, DbError, Result, is_unique_violation, next_generation, now_ms};

mod entity {
    macro_rules! no_relations {
        () => {
            #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
            pub enum Relation {}
            impl ActiveModelBehavior for ActiveModel {}
        };
    }

    pub mod directory {
        use sea_orm::entity::prelude::*;
        #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "swp_directories")]
        pub struct Model {
            #[sea_orm(primary_key)]
            pub id: i64,
            pub name: String,
            pub kind: String,
            pub domain: String,
            pub netbios: String,
            pub urls: String,
            pub base_dn: String,
            pub bind_dn: String,
            pub bind_password: String,
            pub ca_pem: String,
            pub starttls: bool,
            pub page_size: i64,
            pub login_attribute: String,
            pub user_filter: String,
            pub group_membership: String,
            pub rev: i64,
            pub created_at: i64,
        }
        impl std::fmt::Debug for Model {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("Directory")
                    .field("id", &self.id)
                    .field("name", &self.name)
                    .finish_non_exhaustive()
            }
        }
        no_relations!();
    }

    pub mod principal {
        use sea_orm::entity::prelude::*;
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "swp_principals")]
        pub struct Model {
            #[sea_orm(primary_key)]
            pub id: i64,
            pub directory_id: i64,
            pub kind: String,
            pub name: String,
            pub key: String,
            pub rev: i64,
        }
        no_relations!();
    }

    pub mod assignment {
        use sea_orm::entity::prelude::*;
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "swp_assignments")]
        pub struct Model {
            #[sea_orm(primary_key)]
            pub id: i64,
            pub profile_id: i64,
            pub principal_id: i64,
        }
        no_relations!();
    }

    pub mod device {
        use sea_orm::entity::prelude::*;
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "swp_devices")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub device_id: i64,
            pub licensed: bool,
            pub enabled: bool,
            pub updated_at: i64,
        }
        no_relations!();
    }

    pub mod session {
        use sea_orm::entity::prelude::*;
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "swp_sessions")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub device_id: i64,
            pub directory_id: i64,
            pub login: String,
            pub user_json: String,
            pub token_hash: String,
            pub started_at: i64,
        }
        no_relations!();
    }
}

use entity::{assignment, device, directory, principal, session};

/// Which kind of directory: how users are found and groups resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DirectoryKind {
    /// Active Directory: sAMAccountName / userPrincipalName, memberOf, primaryGroupID.
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

/// A directory as stored. `Debug` leaves out the bind password.
#[derive(Clone, PartialEq, Eq)]
pub struct Directory {
    pub id: i64,
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
    /// Settings generation of the last change.
    pub rev: i64,
}

impl fmt::Debug for Directory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Directory")
            .field("id", &self.id)
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

/// A directory to create, or the new values of one. An empty `bind_password` on update keeps
/// the stored one.
#[derive(Clone, Default)]
pub struct DirectoryInput {
    pub name: String,
    pub kind: Option<DirectoryKind>,
    pub domain: String,
    pub netbios: String,
    pub urls: Vec<String>,
    pub base_dn: String,
    pub bind_dn: String,
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
            .field("urls", &self.urls)
            .finish_non_exhaustive()
    }
}

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

/// Shared Workplace state of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SwpDevice {
    pub licensed: bool,
    pub enabled: bool,
}

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

/// Everything Shared Workplace needs in memory, part of the settings model.
#[derive(Debug, Clone, Default)]
pub struct SwpModel {
    pub directories: BTreeMap<i64, Directory>,
    pub principals: HashMap<i64, Principal>,
    /// (directory, kind, key) -> principal id
    pub by_key: HashMap<(i64, PrincipalKind, String), i64>,
    /// principal id -> profile ids
    pub principal_profiles: HashMap<i64, Vec<i64>>,
    /// Devices with a licence or a switch set.
    pub devices: HashMap<i64, SwpDevice>,
}

impl SwpModel {
    /// The principal of a directory object, when profiles were ever assigned to it.
    pub fn principal(&self, directory: i64, kind: PrincipalKind, key: &str) -> Option<&Principal> {
        self.by_key
            .get(&(directory, kind, key.to_owned()))
            .and_then(|id| self.principals.get(id))
    }
}

fn to_directory(m: directory::Model) -> Directory {
    Directory {
        id: m.id,
        kind: DirectoryKind::parse(&m.kind).unwrap_or(DirectoryKind::Ldap),
        name: m.name,
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
        rev: m.rev,
    }
}

fn to_principal(m: principal::Model) -> Option<Principal> {
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
    /// Creates a directory. Names are unique.
    pub async fn create_directory(&self, d: &DirectoryInput) -> Result<Directory> {
        let tx = self.write_tx().await?;
        let rev = next_generation(&tx).await?;
        let kind = d.kind.unwrap_or(DirectoryKind::ActiveDirectory);
        let m = directory::ActiveModel {
            name: Set(d.name.clone()),
            kind: Set(kind.as_str().to_owned()),
            domain: Set(d.domain.clone()),
            netbios: Set(d.netbios.clone()),
            urls: Set(d.urls.join("\n")),
            base_dn: Set(d.base_dn.clone()),
            bind_dn: Set(d.bind_dn.clone()),
            bind_password: Set(d.bind_password.clone()),
            ca_pem: Set(d.ca_pem.clone()),
            starttls: Set(d.starttls),
            page_size: Set(i64::from(d.page_size)),
            login_attribute: Set(d.login_attribute.clone()),
            user_filter: Set(d.user_filter.clone()),
            group_membership: Set(d.group_membership.clone()),
            rev: Set(rev),
            created_at: Set(now_ms()),
            ..Default::default()
        }
        .insert(&tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                DbError::Conflict(format!("a directory named `{}` already exists", d.name))
            } else {
                e.into()
            }
        })?;
        tx.commit().await?;
        Ok(to_directory(m))
    }

    /// Replaces a directory's settings; an empty bind password keeps the stored one.
    pub async fn update_directory(&self, id: i64, d: &DirectoryInput) -> Result<Directory> {
        let tx = self.write_tx().await?;
        let found = directory::Entity::find_by_id(id)
            .one(&tx)
            .await?
            .ok_or_else(|| DbError::NotFound(format!("directory {id}")))?;
        let mut am: directory::ActiveModel = found.into();
        am.name = Set(d.name.clone());
        if let Some(kind) = d.kind {
            am.kind = Set(kind.as_str().to_owned());
        }
        am.domain = Set(d.domain.clone());
        am.netbios = Set(d.netbios.clone());
        am.urls = Set(d.urls.join("\n"));
        am.base_dn = Set(d.base_dn.clone());
        am.bind_dn = Set(d.bind_dn.clone());
        if !d.bind_password.is_empty() {
            am.bind_password = Set(d.bind_password.clone());
        }
        am.ca_pem = Set(d.ca_pem.clone());
        am.starttls = Set(d.starttls);
        am.page_size = Set(i64::from(d.page_size));
        am.login_attribute = Set(d.login_attribute.clone());
        am.user_filter = Set(d.user_filter.clone());
        am.group_membership = Set(d.group_membership.clone());
        am.rev = Set(next_generation(&tx).await?);
        let m = am.update(&tx).await.map_err(|e| {
            if is_unique_violation(&e) {
                DbError::Conflict(format!("a directory named `{}` already exists", d.name))
            } else {
                e.into()
            }
        })?;
        tx.commit().await?;
        Ok(to_directory(m))
    }

    pub async fn list_directories(&self) -> Result<Vec<Directory>> {
        Ok(directory::Entity::find()
            .order_by_asc(directory::Column::Id)
            .all(self.conn())
            .await?
            .into_iter()
            .map(to_directory)
            .collect())
    }

    /// Deletes a directory with its principals and their assignments.
    pub async fn delete_directory(&self, id: i64) -> Result<()> {
        let tx = self.write_tx().await?;
        let principals: Vec<i64> = principal::Entity::find()
            .filter(principal::Column::DirectoryId.eq(id))
            .all(&tx)
            .await?
            .into_iter()
            .map(|p| p.id)
            .collect();
        assignment::Entity::delete_many()
            .filter(assignment::Column::PrincipalId.is_in(principals))
            .exec(&tx)
            .await?;
        principal::Entity::delete_many()
            .filter(principal::Column::DirectoryId.eq(id))
            .exec(&tx)
            .await?;
        let deleted = directory::Entity::delete_by_id(id).exec(&tx).await?;
        if deleted.rows_affected == 0 {
            return Err(DbError::NotFound(format!("directory {id}")));
        }
        tx.commit().await?;
        Ok(())
    }

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
        if directory::Entity::find_by_id(directory_id)
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
        let existing = principal::Entity::find()
            .filter(principal::Column::DirectoryId.eq(directory_id))
            .filter(principal::Column::Kind.eq(kind.as_str()))
            .filter(principal::Column::Key.eq(key.clone()))
            .one(&tx)
            .await?;
        let p = match existing {
            Some(p) => p,
            None => {
                principal::ActiveModel {
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
        let already = assignment::Entity::find()
            .filter(assignment::Column::PrincipalId.eq(p.id))
            .filter(assignment::Column::ProfileId.eq(profile_id))
            .one(&tx)
            .await?;
        if already.is_none() {
            assignment::ActiveModel {
                profile_id: Set(profile_id),
                principal_id: Set(p.id),
                ..Default::default()
            }
            .insert(&tx)
            .await?;
            principal::Entity::update_many()
                .col_expr(principal::Column::Rev, Expr::value(rev))
                .filter(principal::Column::Id.eq(p.id))
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
        let p = principal::Entity::find()
            .filter(principal::Column::DirectoryId.eq(directory_id))
            .filter(principal::Column::Kind.eq(kind.as_str()))
            .filter(principal::Column::Key.eq(key))
            .one(&tx)
            .await?;
        let missing = || {
            DbError::NotFound(format!(
                "assignment of profile {profile_id} to {} `{name}`",
                kind.as_str()
            ))
        };
        let p = p.ok_or_else(missing)?;
        let deleted = assignment::Entity::delete_many()
            .filter(assignment::Column::PrincipalId.eq(p.id))
            .filter(assignment::Column::ProfileId.eq(profile_id))
            .exec(&tx)
            .await?;
        if deleted.rows_affected == 0 {
            return Err(missing());
        }
        let rev = next_generation(&tx).await?;
        principal::Entity::update_many()
            .col_expr(principal::Column::Rev, Expr::value(rev))
            .filter(principal::Column::Id.eq(p.id))
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
        let mut q = assignment::Entity::find().order_by_asc(assignment::Column::Id);
        if let Some(p) = profile_id {
            q = q.filter(assignment::Column::ProfileId.eq(p));
        }
        let list = q.all(self.conn()).await?;
        let principals: HashMap<i64, Principal> = principal::Entity::find()
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
        Ok(assignment::Entity::find()
            .filter(assignment::Column::ProfileId.eq(profile_id))
            .one(self.conn())
            .await?
            .is_some())
    }

    /// Sets a device's Shared Workplace licence and/or switch. Licensing a device switches the
    /// function on unless `enabled` says otherwise; withdrawing the licence switches it off.
    pub async fn set_swp_device(
        &self,
        device_id: i64,
        licensed: Option<bool>,
        enabled: Option<bool>,
    ) -> Result<SwpDevice> {
        let tx = self.write_tx().await?;
        if crate::entity::device::Entity::find_by_id(device_id)
            .one(&tx)
            .await?
            .is_none()
        {
            return Err(DbError::NotFound(format!("device {device_id}")));
        }
        let current = device::Entity::find_by_id(device_id)
            .one(&tx)
            .await?
            .map(|d| SwpDevice {
                licensed: d.licensed,
                enabled: d.enabled,
            })
            .unwrap_or_default();
        let mut next = current;
        if let Some(l) = licensed {
            if l && !current.licensed {
                next.enabled = true;
            }
            next.licensed = l;
        }
        if let Some(e) = enabled {
            next.enabled = e;
        }
        if next.enabled && !next.licensed {
            return Err(DbError::Invalid(format!(
                "device {device_id} has no Shared Workplace licence: license it first"
            )));
        }
        if !next.licensed {
            next.enabled = false;
        }
        device::Entity::insert(device::ActiveModel {
            device_id: Set(device_id),
            licensed: Set(next.licensed),
            enabled: Set(next.enabled),
            updated_at: Set(now_ms()),
        })
        .on_conflict(
            OnConflict::column(device::Column::DeviceId)
                .update_columns([
                    device::Column::Licensed,
                    device::Column::Enabled,
                    device::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec(&tx)
        .await?;
        tx.commit().await?;
        Ok(next)
    }

    /// Records that a user logged in on a device, replacing an earlier session.
    pub async fn start_swp_session(&self, s: &SwpSession) -> Result<()> {
        session::Entity::insert(session::ActiveModel {
            device_id: Set(s.device_id),
            directory_id: Set(s.directory_id),
            login: Set(s.login.clone()),
            user_json: Set(s.user_json.clone()),
            token_hash: Set(s.token_hash.clone()),
            started_at: Set(s.started_at),
        })
        .on_conflict(
            OnConflict::column(session::Column::DeviceId)
                .update_columns([
                    session::Column::DirectoryId,
                    session::Column::Login,
                    session::Column::UserJson,
                    session::Column::TokenHash,
                    session::Column::StartedAt,
                ])
                .to_owned(),
        )
        .exec(self.conn())
        .await?;
        Ok(())
    }

    /// Ends the session on a device; whether there was one.
    pub async fn end_swp_session(&self, device_id: i64) -> Result<bool> {
        let r = session::Entity::delete_by_id(device_id)
            .exec(self.conn())
            .await?;
        Ok(r.rows_affected > 0)
    }

    /// The session on a device, if a user is logged in.
    pub async fn swp_session(&self, device_id: i64) -> Result<Option<SwpSession>> {
        Ok(session::Entity::find_by_id(device_id)
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

    /// Loads directories, principals, their assignments and device licences.
    pub(crate) async fn load_swp_model(&self) -> Result<SwpModel> {
        let mut model = SwpModel::default();
        for d in directory::Entity::find().all(self.conn()).await? {
            let d = to_directory(d);
            model.directories.insert(d.id, d);
        }
        for p in principal::Entity::find().all(self.conn()).await? {
            if let Some(p) = to_principal(p) {
                model
                    .by_key
                    .insert((p.directory_id, p.kind, p.key.clone()), p.id);
                model.principals.insert(p.id, p);
            }
        }
        for a in assignment::Entity::find()
            .order_by_asc(assignment::Column::Id)
            .all(self.conn())
            .await?
        {
            model
                .principal_profiles
                .entry(a.principal_id)
                .or_default()
                .push(a.profile_id);
        }
        for d in device::Entity::find().all(self.conn()).await? {
            model.devices.insert(
                d.device_id,
                SwpDevice {
                    licensed: d.licensed,
                    enabled: d.enabled,
                },
            );
        }
        Ok(model)
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

    #[test]
    fn debug_hides_the_bind_password() {
        let d = Directory {
            id: 1,
            name: "ad".into(),
            kind: DirectoryKind::ActiveDirectory,
            domain: String::new(),
            netbios: String::new(),
            urls: vec![],
            base_dn: String::new(),
            bind_dn: String::new(),
            bind_password: "hunter2".into(),
            ca_pem: String::new(),
            starttls: false,
            page_size: 500,
            login_attribute: String::new(),
            user_filter: String::new(),
            group_membership: String::new(),
            rev: 1,
        };
        assert!(!format!("{d:?}").contains("hunter2"));
    }
}
