//! Shared Workplace per device: the licence and the switch.

use sea_orm::sea_query::OnConflict;
use sea_orm::{EntityTrait, Set};

use crate::entity::swp_device;
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
        if next.enabled && !next.licensed {
            return Err(DbError::Invalid(format!(
                "device {device_id} has no Shared Workplace licence: license it first"
            )));
        }
        if !next.licensed {
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
