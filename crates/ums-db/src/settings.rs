//! Folders, profiles, their parameters and assignments, and the in-memory settings model the
//! server merges from.
//!
//! Every write here takes a new settings generation and stamps the objects it changes (the
//! profile whose parameters changed, the device or folder whose assignments changed), so a
//! device's settings revision is the newest stamp among the objects it depends on.

use std::collections::{BTreeMap, HashMap};

use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set,
};
use ums_domain::{ObjectKind, ObjectRef, Value};

use crate::entity::{assignment, device, folder, profile, profile_param};
use crate::{Db, DbError, Result, is_unique_violation, next_generation, now_ms};

pub use crate::entity::folder::Model as Folder;

/// A profile with its parameters as stored (text values).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredProfile {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub priority: bool,
    pub rev: i64,
    pub params: BTreeMap<String, String>,
}

/// An assignment of a profile to a device or a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    pub profile_id: i64,
    pub target: ObjectRef,
}

/// Everything the merge needs but the devices themselves: loaded once, replaced after every
/// settings change.
#[derive(Debug, Clone, Default)]
pub struct SettingsModel {
    pub folders: HashMap<i64, Folder>,
    pub profiles: HashMap<i64, (ums_domain::Profile, i64)>,
    pub folder_profiles: HashMap<i64, Vec<i64>>,
    pub device_profiles: HashMap<i64, Vec<i64>>,
    /// Profile parameters that could not be read (unknown key or bad value), as warnings.
    pub warnings: Vec<String>,
    /// Shared Workplace: directories, users, groups and OUs with their profiles, device licences.
    pub swp: crate::swp::SwpModel,
}

impl Db {
    pub async fn create_folder(&self, name: &str, parent: Option<i64>) -> Result<Folder> {
        let tx = self.write_tx().await?;
        if let Some(p) = parent
            && folder::Entity::find_by_id(p).one(&tx).await?.is_none()
        {
            return Err(DbError::NotFound(format!("parent folder {p}")));
        }
        let siblings = folder::Entity::find()
            .filter(folder::Column::Name.eq(name))
            .filter(match parent {
                Some(p) => folder::Column::ParentId.eq(p),
                None => folder::Column::ParentId.is_null(),
            })
            .count(&tx)
            .await?;
        if siblings > 0 {
            return Err(DbError::Conflict(format!(
                "a folder named `{name}` already exists there"
            )));
        }
        let rev = next_generation(&tx).await?;
        let out = folder::ActiveModel {
            name: Set(name.to_owned()),
            parent_id: Set(parent),
            rev: Set(rev),
            created_at: Set(now_ms()),
            ..Default::default()
        }
        .insert(&tx)
        .await?;
        tx.commit().await?;
        Ok(out)
    }

    pub async fn list_folders(&self) -> Result<Vec<Folder>> {
        Ok(folder::Entity::find()
            .order_by_asc(folder::Column::Id)
            .all(self.conn())
            .await?)
    }

    /// Deletes an empty folder; one holding devices or sub-folders is refused.
    pub async fn delete_folder(&self, id: i64) -> Result<()> {
        let tx = self.write_tx().await?;
        if folder::Entity::find_by_id(id).one(&tx).await?.is_none() {
            return Err(DbError::NotFound(format!("folder {id}")));
        }
        let children = folder::Entity::find()
            .filter(folder::Column::ParentId.eq(id))
            .count(&tx)
            .await?;
        let devices = device::Entity::find()
            .filter(device::Column::FolderId.eq(id))
            .count(&tx)
            .await?;
        if children > 0 || devices > 0 {
            return Err(DbError::Conflict(format!(
                "folder {id} is not empty ({children} sub-folders, {devices} devices): move or delete them first"
            )));
        }
        assignment::Entity::delete_many()
            .filter(assignment::Column::FolderId.eq(id))
            .exec(&tx)
            .await?;
        folder::Entity::delete_by_id(id).exec(&tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Creates a profile with its parameters, already validated by the caller.
    pub async fn create_profile(
        &self,
        name: &str,
        description: &str,
        priority: bool,
        params: &[(String, String)],
    ) -> Result<StoredProfile> {
        let tx = self.write_tx().await?;
        let rev = next_generation(&tx).await?;
        let created = profile::ActiveModel {
            name: Set(name.to_owned()),
            description: Set(description.to_owned()),
            priority: Set(priority),
            rev: Set(rev),
            created_at: Set(now_ms()),
            ..Default::default()
        }
        .insert(&tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                DbError::Conflict(format!("a profile named `{name}` already exists"))
            } else {
                e.into()
            }
        })?;
        if !params.is_empty() {
            profile_param::Entity::insert_many(params.iter().map(|(k, v)| {
                profile_param::ActiveModel {
                    profile_id: Set(created.id),
                    key: Set(k.clone()),
                    value: Set(v.clone()),
                }
            }))
            .exec(&tx)
            .await?;
        }
        tx.commit().await?;
        Ok(StoredProfile {
            id: created.id,
            name: created.name,
            description: created.description,
            priority: created.priority,
            rev,
            params: params.iter().cloned().collect(),
        })
    }

    /// Profiles without their parameters, by id.
    pub async fn list_profiles(&self) -> Result<Vec<StoredProfile>> {
        Ok(profile::Entity::find()
            .order_by_asc(profile::Column::Id)
            .all(self.conn())
            .await?
            .into_iter()
            .map(|p| StoredProfile {
                id: p.id,
                name: p.name,
                description: p.description,
                priority: p.priority,
                rev: p.rev,
                params: BTreeMap::new(),
            })
            .collect())
    }

    pub async fn get_profile(&self, id: i64) -> Result<StoredProfile> {
        let p = profile::Entity::find_by_id(id)
            .one(self.conn())
            .await?
            .ok_or_else(|| DbError::NotFound(format!("profile {id}")))?;
        let params = profile_param::Entity::find()
            .filter(profile_param::Column::ProfileId.eq(id))
            .all(self.conn())
            .await?
            .into_iter()
            .map(|p| (p.key, p.value))
            .collect();
        Ok(StoredProfile {
            id: p.id,
            name: p.name,
            description: p.description,
            priority: p.priority,
            rev: p.rev,
            params,
        })
    }

    /// Sets and removes parameters of a profile in one transaction.
    pub async fn update_profile_params(
        &self,
        id: i64,
        set: &[(String, String)],
        unset: &[String],
    ) -> Result<StoredProfile> {
        let tx = self.write_tx().await?;
        let p = profile::Entity::find_by_id(id)
            .one(&tx)
            .await?
            .ok_or_else(|| DbError::NotFound(format!("profile {id}")))?;
        let keys: Vec<String> = set
            .iter()
            .map(|(k, _)| k.clone())
            .chain(unset.iter().cloned())
            .collect();
        if !keys.is_empty() {
            profile_param::Entity::delete_many()
                .filter(profile_param::Column::ProfileId.eq(id))
                .filter(profile_param::Column::Key.is_in(keys))
                .exec(&tx)
                .await?;
        }
        if !set.is_empty() {
            profile_param::Entity::insert_many(set.iter().map(|(k, v)| {
                profile_param::ActiveModel {
                    profile_id: Set(id),
                    key: Set(k.clone()),
                    value: Set(v.clone()),
                }
            }))
            .exec(&tx)
            .await?;
        }
        let mut am: profile::ActiveModel = p.into();
        am.rev = Set(next_generation(&tx).await?);
        am.update(&tx).await?;
        tx.commit().await?;
        self.get_profile(id).await
    }

    /// Deletes a profile; the devices and folders it was assigned to take a new generation.
    /// A profile still assigned (to devices, folders, or Shared Workplace users, groups and
    /// OUs) is refused with [`DbError::Conflict`] naming where, unless `force` removes it with
    /// its assignments.
    pub async fn delete_profile(&self, id: i64, force: bool) -> Result<()> {
        let tx = self.write_tx().await?;
        let Some(p) = profile::Entity::find_by_id(id).one(&tx).await? else {
            return Err(DbError::NotFound(format!("profile {id}")));
        };
        let targets = assignment::Entity::find()
            .filter(assignment::Column::ProfileId.eq(id))
            .order_by_asc(assignment::Column::Id)
            .all(&tx)
            .await?;
        if !force {
            let places = profile_uses(&tx, id, &targets).await?;
            if !places.is_empty() {
                return Err(DbError::Conflict(format!(
                    "profile {id} `{}` is assigned to {}: unassign it first, or delete it with force",
                    p.name,
                    listing(&places)
                )));
            }
        }
        let rev = next_generation(&tx).await?;
        for a in &targets {
            stamp_target(&tx, a.device_id, a.folder_id, rev).await?;
        }
        assignment::Entity::delete_many()
            .filter(assignment::Column::ProfileId.eq(id))
            .exec(&tx)
            .await?;
        profile_param::Entity::delete_many()
            .filter(profile_param::Column::ProfileId.eq(id))
            .exec(&tx)
            .await?;
        profile::Entity::delete_by_id(id).exec(&tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Assigns a profile to a device or folder. Assigning twice is a no-op.
    pub async fn assign(&self, profile_id: i64, target: ObjectRef) -> Result<()> {
        let tx = self.write_tx().await?;
        check_exists(&tx, profile_id, target).await?;
        let existing = find_assignment(&tx, profile_id, target).await?;
        if existing.is_none() {
            let (device_id, folder_id) = split(target);
            assignment::ActiveModel {
                profile_id: Set(profile_id),
                device_id: Set(device_id),
                folder_id: Set(folder_id),
                ..Default::default()
            }
            .insert(&tx)
            .await?;
            let rev = next_generation(&tx).await?;
            stamp_target(&tx, device_id, folder_id, rev).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes an assignment.
    pub async fn unassign(&self, profile_id: i64, target: ObjectRef) -> Result<()> {
        let tx = self.write_tx().await?;
        let Some(a) = find_assignment(&tx, profile_id, target).await? else {
            return Err(DbError::NotFound(format!(
                "assignment of profile {profile_id} to {} {}",
                target.kind.as_str(),
                target.id
            )));
        };
        assignment::Entity::delete_by_id(a.id).exec(&tx).await?;
        let rev = next_generation(&tx).await?;
        stamp_target(&tx, a.device_id, a.folder_id, rev).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Assignments filtered by profile and/or target.
    pub async fn list_assignments(
        &self,
        profile_id: Option<i64>,
        target: Option<ObjectRef>,
    ) -> Result<Vec<Assignment>> {
        let mut q = assignment::Entity::find().order_by_asc(assignment::Column::Id);
        if let Some(p) = profile_id {
            q = q.filter(assignment::Column::ProfileId.eq(p));
        }
        match target {
            Some(ObjectRef {
                kind: ObjectKind::Device,
                id,
            }) => q = q.filter(assignment::Column::DeviceId.eq(id)),
            Some(ObjectRef {
                kind: ObjectKind::Folder,
                id,
            }) => q = q.filter(assignment::Column::FolderId.eq(id)),
            // Users, groups and OUs: see `crate::swp`.
            Some(_) => return Ok(Vec::new()),
            None => {}
        }
        Ok(q.all(self.conn())
            .await?
            .into_iter()
            .filter_map(to_assignment)
            .collect())
    }

    /// Loads folders, profiles with their parameters and every assignment.
    pub async fn load_settings_model(&self) -> Result<SettingsModel> {
        let mut model = SettingsModel::default();
        for f in folder::Entity::find().all(self.conn()).await? {
            model.folders.insert(f.id, f);
        }
        let mut params: HashMap<i64, BTreeMap<String, Value>> = HashMap::new();
        for p in profile_param::Entity::find().all(self.conn()).await? {
            match ums_domain::parse_param(&p.key, &p.value) {
                Ok(v) => {
                    params.entry(p.profile_id).or_default().insert(p.key, v);
                }
                Err(e) => model
                    .warnings
                    .push(format!("profile {}: ignored: {e}", p.profile_id)),
            }
        }
        for p in profile::Entity::find().all(self.conn()).await? {
            let domain = ums_domain::Profile {
                id: p.id,
                name: p.name,
                priority: p.priority,
                params: params.remove(&p.id).unwrap_or_default(),
            };
            model.profiles.insert(p.id, (domain, p.rev));
        }
        for a in assignment::Entity::find()
            .order_by_asc(assignment::Column::Id)
            .all(self.conn())
            .await?
        {
            if let Some(a) = to_assignment(a) {
                let map = match a.target.kind {
                    ObjectKind::Device => &mut model.device_profiles,
                    ObjectKind::Folder => &mut model.folder_profiles,
                    _ => continue,
                };
                map.entry(a.target.id).or_default().push(a.profile_id);
            }
        }
        model.swp = self.load_swp_model().await?;
        Ok(model)
    }
}

fn to_assignment(a: assignment::Model) -> Option<Assignment> {
    let target = match (a.device_id, a.folder_id) {
        (Some(id), None) => ObjectRef {
            kind: ObjectKind::Device,
            id,
        },
        (None, Some(id)) => ObjectRef {
            kind: ObjectKind::Folder,
            id,
        },
        _ => return None,
    };
    Some(Assignment {
        profile_id: a.profile_id,
        target,
    })
}

fn split(target: ObjectRef) -> (Option<i64>, Option<i64>) {
    match target.kind {
        ObjectKind::Device => (Some(target.id), None),
        ObjectKind::Folder => (None, Some(target.id)),
        _ => (None, None),
    }
}

async fn check_exists<C: sea_orm::ConnectionTrait>(
    tx: &C,
    profile_id: i64,
    target: ObjectRef,
) -> Result<()> {
    if profile::Entity::find_by_id(profile_id)
        .one(tx)
        .await?
        .is_none()
    {
        return Err(DbError::NotFound(format!("profile {profile_id}")));
    }
    let found = match target.kind {
        ObjectKind::Device => device::Entity::find_by_id(target.id)
            .one(tx)
            .await?
            .is_some(),
        ObjectKind::Folder => folder::Entity::find_by_id(target.id)
            .one(tx)
            .await?
            .is_some(),
        kind => {
            return Err(DbError::Invalid(format!(
                "profiles are assigned to a {} by its directory name (Shared Workplace)",
                kind.as_str()
            )));
        }
    };
    if !found {
        return Err(DbError::NotFound(format!(
            "{} {}",
            target.kind.as_str(),
            target.id
        )));
    }
    Ok(())
}

async fn find_assignment<C: sea_orm::ConnectionTrait>(
    tx: &C,
    profile_id: i64,
    target: ObjectRef,
) -> Result<Option<assignment::Model>> {
    let q = assignment::Entity::find().filter(assignment::Column::ProfileId.eq(profile_id));
    let q = match target.kind {
        ObjectKind::Device => q.filter(assignment::Column::DeviceId.eq(target.id)),
        ObjectKind::Folder => q.filter(assignment::Column::FolderId.eq(target.id)),
        _ => return Ok(None),
    };
    Ok(q.one(tx).await?)
}

async fn stamp_target<C: sea_orm::ConnectionTrait>(
    tx: &C,
    device_id: Option<i64>,
    folder_id: Option<i64>,
    rev: i64,
) -> Result<()> {
    use sea_orm::sea_query::Expr;
    if let Some(d) = device_id {
        device::Entity::update_many()
            .col_expr(device::Column::Rev, Expr::value(rev))
            .filter(device::Column::Id.eq(d))
            .exec(tx)
            .await?;
    }
    if let Some(f) = folder_id {
        folder::Entity::update_many()
            .col_expr(folder::Column::Rev, Expr::value(rev))
            .filter(folder::Column::Id.eq(f))
            .exec(tx)
            .await?;
    }
    Ok(())
}

/// Where a profile is assigned, each place as text: `device 4`, `folder 2 "Berlin"`,
/// `user alice (directory corp)`.
async fn profile_uses<C: sea_orm::ConnectionTrait>(
    tx: &C,
    profile_id: i64,
    targets: &[assignment::Model],
) -> Result<Vec<String>> {
    use crate::entity::{swp_assignment, swp_directory, swp_principal};
    let mut places = Vec::new();
    for a in targets {
        match (a.device_id, a.folder_id) {
            (Some(d), _) => places.push(format!("device {d}")),
            (None, Some(f)) => {
                let name = folder::Entity::find_by_id(f)
                    .one(tx)
                    .await?
                    .map(|f| f.name)
                    .unwrap_or_default();
                places.push(format!("folder {f} \"{name}\""));
            }
            (None, None) => {}
        }
    }
    let users = swp_assignment::Entity::find()
        .filter(swp_assignment::Column::ProfileId.eq(profile_id))
        .order_by_asc(swp_assignment::Column::Id)
        .all(tx)
        .await?;
    for a in users {
        let Some(principal) = swp_principal::Entity::find_by_id(a.principal_id)
            .one(tx)
            .await?
        else {
            continue;
        };
        let directory = swp_directory::Entity::find_by_id(principal.directory_id)
            .one(tx)
            .await?
            .map(|d| d.name)
            .unwrap_or_default();
        let kind = match principal.kind.as_str() {
            "ou" => "OU",
            kind => kind,
        };
        places.push(format!("{kind} {} (directory {directory})", principal.name));
    }
    Ok(places)
}

/// The first places of a list, and how many more there are.
fn listing(places: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut text = places
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if places.len() > SHOWN {
        text.push_str(&format!(" and {} more", places.len() - SHOWN));
    }
    text
}
