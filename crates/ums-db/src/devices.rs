//! Devices: registration, check-in, and the administrator's view.

use std::collections::HashMap;

use sea_orm::sea_query::{Alias, Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};

use crate::entity::{assignment, device, folder};
use crate::{Db, DbError, Result, next_generation, now_ms};

pub use crate::entity::device::Model as Device;

/// A registration as the device sent it, already validated.
#[derive(Debug, Clone)]
pub struct Registration {
    pub unit_id: String,
    pub name: String,
    pub firmware: String,
    /// sha256 of the device's secret, hex.
    pub secret_hash: String,
}

/// What a registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    pub device_id: i64,
    pub created: bool,
}

/// The row fields a check-in needs back to answer the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedIn {
    pub name: String,
    pub folder_id: Option<i64>,
    pub rev: i64,
    pub next_job_at: Option<i64>,
    /// The tag of the Shared Workplace session on the device, if a user is logged in.
    pub swp_session: Option<i64>,
}

/// A check-in as the device sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckIn {
    pub device_id: i64,
    pub firmware: String,
    pub state: String,
    pub at: i64,
    /// The settings revision the device applies (its `known_revision`; 0: none).
    pub applied_revision: i64,
}

/// Registers one device inside the caller's transaction. Idempotent per unit id: the same unit
/// with the same secret gets its existing record; a unit whose credential was reset takes the new
/// secret; another secret is refused.
pub(crate) async fn register_in<C: ConnectionTrait>(
    tx: &C,
    r: &Registration,
) -> Result<Registered> {
    if let Some(&device_id) = insert_new(tx, &[r]).await?.get(&r.unit_id) {
        return Ok(Registered {
            device_id,
            created: true,
        });
    }
    register_existing(tx, r).await
}

/// Inserts the registrations whose unit ids are new in one statement; returns unit id -> new
/// device id. Where a unit id appears twice, the first registration is the one inserted.
pub(crate) async fn insert_new<C: ConnectionTrait>(
    tx: &C,
    regs: &[&Registration],
) -> Result<HashMap<String, i64>> {
    let mut out = HashMap::new();
    if regs.is_empty() {
        return Ok(out);
    }
    let now = now_ms();
    let mut insert = Query::insert();
    insert.into_table(Alias::new("devices")).columns(
        [
            "unit_id",
            "name",
            "firmware",
            "state",
            "secret_hash",
            "rev",
            "registered_at",
        ]
        .map(Alias::new),
    );
    for r in regs {
        insert.values_panic([
            r.unit_id.clone().into(),
            r.name.clone().into(),
            r.firmware.clone().into(),
            "registered".into(),
            r.secret_hash.clone().into(),
            1i64.into(),
            now.into(),
        ]);
    }
    insert
        .on_conflict(
            OnConflict::column(Alias::new("unit_id"))
                .do_nothing()
                .to_owned(),
        )
        .returning(Query::returning().columns(["id", "unit_id"].map(Alias::new)));
    for row in tx.query_all(&insert).await? {
        out.insert(row.try_get("", "unit_id")?, row.try_get("", "id")?);
    }
    Ok(out)
}

/// The registration of a unit that exists: accepted with its own secret, or with a new one
/// after an administrator reset it; refused otherwise.
pub(crate) async fn register_existing<C: ConnectionTrait>(
    tx: &C,
    r: &Registration,
) -> Result<Registered> {
    let existing = device::Entity::find()
        .filter(device::Column::UnitId.eq(&r.unit_id))
        .one(tx)
        .await?
        .ok_or_else(|| DbError::NotFound(format!("device with unit id {}", r.unit_id)))?;
    match existing.secret_hash.as_deref() {
        Some(h) if constant_time_eq(h.as_bytes(), r.secret_hash.as_bytes()) => {}
        Some(_) => return Err(DbError::CredentialMismatch(r.unit_id.clone())),
        None => {
            let mut am: device::ActiveModel = existing.clone().into();
            am.secret_hash = Set(Some(r.secret_hash.clone()));
            am.update(tx).await?;
        }
    }
    Ok(Registered {
        device_id: existing.id,
        created: false,
    })
}

/// Records a check-in inside the caller's transaction; `None` for an unknown device.
pub(crate) async fn check_in_in<C: ConnectionTrait>(
    tx: &C,
    c: &CheckIn,
) -> Result<Option<CheckedIn>> {
    let stmt =
        Query::update()
            .table(Alias::new("devices"))
            .values([
                (Alias::new("last_contact"), c.at.into()),
                (Alias::new("firmware"), c.firmware.clone().into()),
                (Alias::new("state"), c.state.clone().into()),
                (Alias::new("applied_revision"), c.applied_revision.into()),
            ])
            .and_where(Expr::col(Alias::new("id")).eq(c.device_id))
            .returning(Query::returning().columns(
                ["name", "folder_id", "rev", "next_job_at", "swp_session"].map(Alias::new),
            ))
            .to_owned();
    let Some(row) = tx.query_one(&stmt).await? else {
        return Ok(None);
    };
    Ok(Some(CheckedIn {
        name: row.try_get("", "name")?,
        folder_id: row.try_get("", "folder_id")?,
        rev: row.try_get("", "rev")?,
        next_job_at: row.try_get("", "next_job_at")?,
        swp_session: row.try_get("", "swp_session")?,
    }))
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A page of devices.
#[derive(Debug, Clone)]
pub struct DevicePage {
    pub devices: Vec<Device>,
    pub total: u64,
}

/// Changes an administrator makes to a device.
#[derive(Debug, Clone, Default)]
pub struct DeviceUpdate {
    pub name: Option<String>,
    /// `Some(None)` moves the device to the top level.
    pub folder: Option<Option<i64>>,
}

impl Db {
    /// Registers one device in its own transaction (see [`crate::batch::Batcher`] for many).
    pub async fn register_device(&self, r: &Registration) -> Result<Registered> {
        let tx = self.write_tx().await?;
        let out = register_in(&tx, r).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Records one check-in in its own transaction.
    pub async fn check_in(&self, c: &CheckIn) -> Result<Option<CheckedIn>> {
        let tx = self.write_tx().await?;
        let out = check_in_in(&tx, c).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// The secret hash of a device, `None` for an unknown device, `Some(None)` after a reset.
    pub async fn device_secret_hash(&self, id: i64) -> Result<Option<Option<String>>> {
        let row = device::Entity::find_by_id(id)
            .select_only()
            .column(device::Column::SecretHash)
            .into_tuple::<Option<String>>()
            .one(self.conn())
            .await?;
        Ok(row)
    }

    pub async fn get_device(&self, id: i64) -> Result<Device> {
        device::Entity::find_by_id(id)
            .one(self.conn())
            .await?
            .ok_or_else(|| DbError::NotFound(format!("device {id}")))
    }

    /// Devices ordered by id, after `after_id`, optionally only those directly in a folder.
    pub async fn list_devices(
        &self,
        folder: Option<i64>,
        after_id: i64,
        limit: u64,
    ) -> Result<DevicePage> {
        let mut q = device::Entity::find();
        if let Some(f) = folder {
            q = q.filter(device::Column::FolderId.eq(f));
        }
        let total = q.clone().count(self.conn()).await?;
        let devices = q
            .filter(device::Column::Id.gt(after_id))
            .order_by_asc(device::Column::Id)
            .limit(limit)
            .all(self.conn())
            .await?;
        Ok(DevicePage { devices, total })
    }

    /// Renames or moves a device. A move changes the device's settings, so it takes a new
    /// settings generation.
    pub async fn update_device(&self, id: i64, u: &DeviceUpdate) -> Result<Device> {
        let tx = self.write_tx().await?;
        let existing = device::Entity::find_by_id(id)
            .one(&tx)
            .await?
            .ok_or_else(|| DbError::NotFound(format!("device {id}")))?;
        let mut am: device::ActiveModel = existing.into();
        if let Some(name) = &u.name {
            am.name = Set(name.clone());
        }
        if let Some(folder_id) = u.folder {
            if let Some(f) = folder_id
                && folder::Entity::find_by_id(f).one(&tx).await?.is_none()
            {
                return Err(DbError::NotFound(format!("folder {f}")));
            }
            am.folder_id = Set(folder_id);
            am.rev = Set(next_generation(&tx).await?);
        }
        let out = am.update(&tx).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Deletes a device with its assignments and jobs.
    pub async fn delete_device(&self, id: i64) -> Result<()> {
        let tx = self.write_tx().await?;
        assignment::Entity::delete_many()
            .filter(assignment::Column::DeviceId.eq(id))
            .exec(&tx)
            .await?;
        crate::entity::job::Entity::delete_many()
            .filter(crate::entity::job::Column::DeviceId.eq(id))
            .exec(&tx)
            .await?;
        let res = device::Entity::delete_by_id(id).exec(&tx).await?;
        if res.rows_affected == 0 {
            return Err(DbError::NotFound(format!("device {id}")));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Forgets a device's secret so the unit can register again with a new one.
    pub async fn reset_device_credential(&self, id: i64) -> Result<()> {
        let res = device::Entity::update_many()
            .col_expr(device::Column::SecretHash, Expr::value(None::<String>))
            .filter(device::Column::Id.eq(id))
            .exec(self.conn())
            .await?;
        if res.rows_affected == 0 {
            return Err(DbError::NotFound(format!("device {id}")));
        }
        Ok(())
    }

    /// Ids of the devices directly in any of the given folders.
    pub async fn devices_in_folders(&self, folders: &[i64]) -> Result<Vec<i64>> {
        Ok(device::Entity::find()
            .select_only()
            .column(device::Column::Id)
            .filter(device::Column::FolderId.is_in(folders.iter().copied()))
            .into_tuple::<i64>()
            .all(self.conn())
            .await?)
    }

    /// Number of registered devices.
    pub async fn count_devices(&self) -> Result<u64> {
        Ok(device::Entity::find().count(self.conn()).await?)
    }
}
