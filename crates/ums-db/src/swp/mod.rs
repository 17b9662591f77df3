//! Shared Workplace: directories users log in against, the users, groups and OUs profiles are
//! assigned to (by name), per-device licence and switch, and device sessions.
//!
//! Assignments to users, groups and OUs stamp the principal with a new settings generation like
//! every other settings write. A profile holding device-only parameters cannot be assigned to
//! them.
//!
//! One file per concern: `directories`, `principals` (users, groups and OUs and the profiles
//! assigned to them), `devices` (licence and switch of devices and folders, the licence pool) and `sessions`.

mod devices;
mod directories;
mod principals;
mod sessions;

use std::collections::{BTreeMap, HashMap};

use sea_orm::{EntityTrait, QueryOrder};

pub use devices::{SeatClaim, SwpDevice, SwpLicence};
pub use directories::{Directory, DirectoryInput, DirectoryKind};
pub use principals::{Principal, PrincipalKind, principal_key};
pub(crate) use sessions::start_sessions_in;
pub use sessions::{MAX_TAG, SwpSession};

use crate::entity::{swp_assignment, swp_device, swp_directory, swp_folder, swp_principal};
use crate::{Db, Result};

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
    /// Folders with a switch set: folder id -> on or off, for it and the folders below.
    pub folders: HashMap<i64, bool>,
    /// The licence pool (seats held not counted).
    pub licences: Vec<SwpLicence>,
}

impl SwpModel {
    /// The principal of a directory object, when profiles were ever assigned to it.
    pub fn principal(&self, directory: i64, kind: PrincipalKind, key: &str) -> Option<&Principal> {
        self.by_key
            .get(&(directory, kind, key.to_owned()))
            .and_then(|id| self.principals.get(id))
    }
}

impl Db {
    /// Loads directories, principals, their assignments and device licences.
    pub(crate) async fn load_swp_model(&self) -> Result<SwpModel> {
        let mut model = SwpModel::default();
        for d in swp_directory::Entity::find().all(self.conn()).await? {
            let d = directories::to_directory(d);
            model.directories.insert(d.id, d);
        }
        for p in swp_principal::Entity::find().all(self.conn()).await? {
            if let Some(p) = principals::to_principal(p) {
                model
                    .by_key
                    .insert((p.directory_id, p.kind, p.key.clone()), p.id);
                model.principals.insert(p.id, p);
            }
        }
        for a in swp_assignment::Entity::find()
            .order_by_asc(swp_assignment::Column::Id)
            .all(self.conn())
            .await?
        {
            model
                .principal_profiles
                .entry(a.principal_id)
                .or_default()
                .push(a.profile_id);
        }
        for d in swp_device::Entity::find().all(self.conn()).await? {
            model.devices.insert(
                d.device_id,
                SwpDevice {
                    licensed: d.licensed,
                    enabled: d.enabled,
                },
            );
        }
        for f in swp_folder::Entity::find().all(self.conn()).await? {
            model.folders.insert(f.folder_id, f.enabled);
        }
        model.licences = self.list_swp_licences().await?;
        Ok(model)
    }
}
