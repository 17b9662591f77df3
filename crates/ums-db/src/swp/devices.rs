//! Shared Workplace per device and at scale: a device's own licence and switch, the switch of
//! a folder (inherited by the folders below), and the licence pool whose seats devices take at
//! their first login.

use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};

use crate::entity::{swp_device, swp_folder, swp_licence, swp_seat};
use crate::{Db, DbError, Result, now_ms};

/// Shared Workplace state of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SwpDevice {
    pub licensed: bool,
    pub enabled: bool,
}

impl Db {
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
        let current = swp_device::Entity::find_by_id(device_id)
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
        // Withdrawing the licence switches the function off; switching it on without a
        // licence of its own leaves the device to take a seat of the licence pool.
        if licensed == Some(false) && enabled.is_none() {
            next.enabled = false;
        }
        swp_device::Entity::insert(swp_device::ActiveModel {
            device_id: Set(device_id),
            licensed: Set(next.licensed),
            enabled: Set(next.enabled),
            updated_at: Set(now_ms()),
        })
        .on_conflict(
            OnConflict::column(swp_device::Column::DeviceId)
                .update_columns([
                    swp_device::Column::Licensed,
                    swp_device::Column::Enabled,
                    swp_device::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec(&tx)
        .await?;
        tx.commit().await?;
        Ok(next)
    }
}

/// A licence of the pool: a number of seats, each held by one device, until it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwpLicence {
    pub id: i64,
    pub name: String,
    pub seats: i64,
    /// Milliseconds since the epoch; from then on the licence admits no new login.
    pub expires_at: i64,
    pub created_at: i64,
    /// Seats held by devices (filled by [`Db::list_swp_licences`]).
    pub used: i64,
}

fn to_licence(m: swp_licence::Model) -> SwpLicence {
    SwpLicence {
        id: m.id,
        name: m.name,
        seats: m.seats,
        expires_at: m.expires_at,
        created_at: m.created_at,
        used: 0,
    }
}

/// What a device's login finds in the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeatClaim {
    /// The device holds a seat of this licence (held before, or taken now).
    Seat(SwpLicence),
    /// The pool is empty.
    NoLicence,
    /// Every licence of the pool expired; the one that expired last.
    Expired(SwpLicence),
    /// Every seat of the valid licences is held by other devices; how many there are.
    Full(i64),
}

impl Db {
    /// Switches Shared Workplace on or off for a folder and the folders below it that set
    /// nothing themselves; `None` removes the folder's own setting.
    pub async fn set_swp_folder(&self, folder_id: i64, enabled: Option<bool>) -> Result<()> {
        let tx = self.write_tx().await?;
        if crate::entity::folder::Entity::find_by_id(folder_id)
            .one(&tx)
            .await?
            .is_none()
        {
            return Err(DbError::NotFound(format!("folder {folder_id}")));
        }
        match enabled {
            None => {
                swp_folder::Entity::delete_by_id(folder_id)
                    .exec(&tx)
                    .await?;
            }
            Some(enabled) => {
                swp_folder::Entity::insert(swp_folder::ActiveModel {
                    folder_id: Set(folder_id),
                    enabled: Set(enabled),
                    updated_at: Set(now_ms()),
                })
                .on_conflict(
                    OnConflict::column(swp_folder::Column::FolderId)
                        .update_columns([
                            swp_folder::Column::Enabled,
                            swp_folder::Column::UpdatedAt,
                        ])
                        .to_owned(),
                )
                .exec(&tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Adds a licence to the pool. Names are unique.
    pub async fn create_swp_licence(
        &self,
        name: &str,
        seats: i64,
        expires_at: i64,
    ) -> Result<SwpLicence> {
        if seats <= 0 {
            return Err(DbError::Invalid("a licence has at least one seat".into()));
        }
        let tx = self.write_tx().await?;
        let m = swp_licence::ActiveModel {
            name: Set(name.to_owned()),
            seats: Set(seats),
            expires_at: Set(expires_at),
            created_at: Set(now_ms()),
            ..Default::default()
        }
        .insert(&tx)
        .await
        .map_err(|e| {
            if crate::is_unique_violation(&e) {
                DbError::Conflict(format!("a licence named `{name}` already exists"))
            } else {
                e.into()
            }
        })?;
        tx.commit().await?;
        Ok(to_licence(m))
    }

    /// The licences of the pool with the seats held, oldest first.
    pub async fn list_swp_licences(&self) -> Result<Vec<SwpLicence>> {
        let mut list: Vec<SwpLicence> = swp_licence::Entity::find()
            .order_by_asc(swp_licence::Column::Id)
            .all(self.conn())
            .await?
            .into_iter()
            .map(to_licence)
            .collect();
        for l in &mut list {
            l.used = seats_of(self.conn(), l.id).await?;
        }
        Ok(list)
    }

    /// Removes a licence; the devices holding its seats take another at their next login.
    pub async fn delete_swp_licence(&self, id: i64) -> Result<()> {
        let tx = self.write_tx().await?;
        swp_seat::Entity::delete_many()
            .filter(swp_seat::Column::LicenceId.eq(id))
            .exec(&tx)
            .await?;
        let r = swp_licence::Entity::delete_by_id(id).exec(&tx).await?;
        if r.rows_affected == 0 {
            return Err(DbError::NotFound(format!("licence {id}")));
        }
        tx.commit().await?;
        Ok(())
    }

    /// The seat a device logging in holds, or takes now from a licence valid at `now` with a
    /// free seat (the one expiring last). A seat of an expired licence is given up first. One
    /// transaction; on PostgreSQL the licence rows are locked, so two servers never hand out
    /// the same last seat.
    pub async fn claim_swp_seat(&self, device_id: i64, now: i64) -> Result<SeatClaim> {
        let tx = self.write_tx().await?;
        let mut q = swp_licence::Entity::find().order_by_desc(swp_licence::Column::ExpiresAt);
        if self.backend() == crate::Backend::Postgres {
            q = q.lock_exclusive();
        }
        let licences: Vec<SwpLicence> = q.all(&tx).await?.into_iter().map(to_licence).collect();
        let held = swp_seat::Entity::find_by_id(device_id).one(&tx).await?;
        if let Some(seat) = &held
            && let Some(l) = licences.iter().find(|l| l.id == seat.licence_id)
            && l.expires_at > now
        {
            return Ok(SeatClaim::Seat(l.clone()));
        }
        if held.is_some() {
            swp_seat::Entity::delete_by_id(device_id).exec(&tx).await?;
        }
        let Some(last) = licences.first().cloned() else {
            tx.commit().await?;
            return Ok(SeatClaim::NoLicence);
        };
        let mut valid_seats = 0;
        for l in licences.iter().filter(|l| l.expires_at > now) {
            valid_seats += l.seats;
            if seats_of(&tx, l.id).await? < l.seats {
                swp_seat::Entity::insert(swp_seat::ActiveModel {
                    device_id: Set(device_id),
                    licence_id: Set(l.id),
                    taken_at: Set(now),
                })
                .exec(&tx)
                .await?;
                tx.commit().await?;
                return Ok(SeatClaim::Seat(l.clone()));
            }
        }
        tx.commit().await?;
        if valid_seats == 0 {
            Ok(SeatClaim::Expired(last))
        } else {
            Ok(SeatClaim::Full(valid_seats))
        }
    }
}

async fn seats_of<C: sea_orm::ConnectionTrait>(c: &C, licence_id: i64) -> Result<i64> {
    let n = swp_seat::Entity::find()
        .filter(swp_seat::Column::LicenceId.eq(licence_id))
        .count(c)
        .await?;
    Ok(i64::try_from(n).unwrap_or(i64::MAX))
}
