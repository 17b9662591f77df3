//! State shared by the APIs of one server: the database, the batch writer, the settings model
//! and the cache of device credentials.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use sha2::{Digest, Sha256};
use ums_db::batch::Batcher;
use ums_db::settings::SettingsModel;
use ums_db::{Backend, Db};
use ums_domain::{Effective, Layer, ObjectKind, ObjectRef};

use crate::error::ApiError;

/// Shared state of the server's APIs.
pub struct AppState {
    pub db: Db,
    pub batcher: Batcher,
    settings: RwLock<Arc<SettingsModel>>,
    reload: tokio::sync::Mutex<()>,
    /// The settings generation the current model includes at least (read before it was loaded).
    loaded_generation: std::sync::atomic::AtomicI64,
    /// device id -> sha256 of its secret; filled on registration or first use, dropped on reset
    /// or delete.
    credentials: Mutex<HashMap<i64, [u8; 32]>>,
    /// What the last check-in of a device whose settings changed returned, for the settings
    /// download that follows it. Taken by that download; bounded by the devices that have a
    /// download pending.
    pending_views: Mutex<HashMap<i64, DeviceRow>>,
    pub info: ServerInfo,
    /// This server's part in the HA network.
    pub network: Arc<crate::network::Network>,
    /// The local copies of replicated files.
    pub files: crate::files::FileStore,
    /// Shared Workplace: the connection to swp-auth.
    pub swp: crate::swp::Swp,
}

/// What the server says about itself.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub process_id: String,
    pub started_at_ms: i64,
    pub device_port: u16,
    pub admin_port: u16,
    pub session_hours: u32,
}

impl AppState {
    pub async fn new(
        db: Db,
        info: ServerInfo,
        network: Arc<crate::network::Network>,
        files: crate::files::FileStore,
    ) -> Result<Arc<Self>, ApiError> {
        let (generation, _) = db.change_counters().await?;
        let model = db.load_settings_model().await?;
        for w in &model.warnings {
            tracing::warn!(warning = %w, "settings model");
        }
        Ok(Arc::new(Self {
            batcher: Batcher::start(db.clone()),
            db,
            settings: RwLock::new(Arc::new(model)),
            reload: tokio::sync::Mutex::new(()),
            loaded_generation: std::sync::atomic::AtomicI64::new(generation),
            credentials: Mutex::new(HashMap::new()),
            pending_views: Mutex::new(HashMap::new()),
            info,
            network,
            files,
            swp: crate::swp::Swp::default(),
        }))
    }

    pub fn backend(&self) -> Backend {
        self.db.backend()
    }

    /// The current settings model.
    pub fn settings(&self) -> Arc<SettingsModel> {
        self.settings
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Reloads the settings model after a settings write. Reloads run one at a time and each
    /// starts after its write committed, so the last one sees every write.
    pub async fn reload_settings(&self) -> Result<(), ApiError> {
        let _one = self.reload.lock().await;
        let (generation, _) = self.db.change_counters().await?;
        let model = Arc::new(self.db.load_settings_model().await?);
        match self.settings.write() {
            Ok(mut g) => *g = model,
            Err(p) => *p.into_inner() = model,
        }
        self.loaded_generation
            .fetch_max(generation, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Reloads the settings model only when the database's settings generation is newer than
    /// the model's: the counter poll that backs up events must not reload again what a write or
    /// an event already reloaded.
    pub async fn reload_settings_if_newer(&self, generation: i64) -> Result<(), ApiError> {
        if generation
            > self
                .loaded_generation
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            self.reload_settings().await?;
        }
        Ok(())
    }

    /// Tells every server that the settings model changed (this one reloaded already).
    pub async fn settings_changed(&self) {
        self.network
            .publish(
                &self.db,
                crate::network::Event::SettingsChanged {
                    origin: self.network.process_id.clone(),
                },
            )
            .await;
    }

    /// Forgets a device's cached credential on every server.
    pub async fn forget_device_everywhere(&self, device_id: i64) {
        self.forget_device(device_id);
        self.network
            .publish(
                &self.db,
                crate::network::Event::DeviceForgotten {
                    origin: self.network.process_id.clone(),
                    device_id,
                },
            )
            .await;
    }

    /// Checks a device's secret against its stored hash.
    pub async fn verify_device(&self, device_id: i64, secret: &[u8]) -> Result<bool, ApiError> {
        let presented: [u8; 32] = Sha256::digest(secret).into();
        let cached = self.lock_credentials().get(&device_id).copied();
        let stored = match cached {
            Some(h) => h,
            None => {
                let Some(Some(hex_hash)) = self.db.device_secret_hash(device_id).await? else {
                    return Ok(false);
                };
                let mut h = [0u8; 32];
                if hex::decode_to_slice(&hex_hash, &mut h).is_err() {
                    return Ok(false);
                }
                self.lock_credentials().insert(device_id, h);
                h
            }
        };
        Ok(subtle::ConstantTimeEq::ct_eq(&presented[..], &stored[..]).into())
    }

    /// Remembers the credential of a device that just registered, sparing its first check-in a
    /// database read.
    pub fn remember_device(&self, device_id: i64, secret: &[u8]) {
        let hash: [u8; 32] = Sha256::digest(secret).into();
        self.lock_credentials().insert(device_id, hash);
    }

    /// Forgets a device's cached credential (after a reset or a delete).
    pub fn forget_device(&self, device_id: i64) {
        self.lock_credentials().remove(&device_id);
        lock(&self.pending_views).remove(&device_id);
    }

    /// Keeps a check-in's view of a device for the settings download it announces.
    pub fn keep_view(&self, device_id: i64, view: DeviceRow) {
        lock(&self.pending_views).insert(device_id, view);
    }

    /// Takes the view kept by the device's last check-in, if any.
    pub fn take_view(&self, device_id: i64) -> Option<DeviceRow> {
        lock(&self.pending_views).remove(&device_id)
    }

    fn lock_credentials(&self) -> std::sync::MutexGuard<'_, HashMap<i64, [u8; 32]>> {
        lock(&self.credentials)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The fields of a device row that its settings depend on, owned: as a check-in returned them
/// or as read from the database.
#[derive(Debug, Clone)]
pub struct DeviceRow {
    pub name: String,
    pub folder_id: Option<i64>,
    pub rev: i64,
}

impl DeviceRow {
    pub fn view(&self, id: i64) -> DeviceView<'_> {
        DeviceView {
            id,
            name: &self.name,
            folder_id: self.folder_id,
            rev: self.rev,
        }
    }
}

impl From<ums_db::devices::Device> for DeviceRow {
    fn from(d: ums_db::devices::Device) -> Self {
        Self {
            name: d.name,
            folder_id: d.folder_id,
            rev: d.rev,
        }
    }
}

/// A device's effective settings and the revision they belong to, from one model.
pub fn settings_of(model: &SettingsModel, d: &DeviceView<'_>) -> (Effective, u64) {
    (effective(model, d), revision(model, d))
}

/// sha256 of a device secret, hex: what the database stores.
pub fn secret_hash_hex(secret: &[u8]) -> String {
    hex::encode(Sha256::digest(secret))
}

/// The settings a device depends on, from the model.
pub struct DeviceView<'a> {
    pub id: i64,
    pub name: &'a str,
    pub folder_id: Option<i64>,
    pub rev: i64,
}

/// The folder chain of a device: its folder, the parent, ..., the top folder. A broken chain
/// (which the database prevents) ends where it breaks.
fn chain(model: &SettingsModel, folder: Option<i64>) -> Vec<i64> {
    let mut out = Vec::new();
    let mut next = folder;
    while let Some(f) = next {
        if out.contains(&f) || out.len() > 1_000 {
            break;
        }
        let Some(folder) = model.folders.get(&f) else {
            break;
        };
        out.push(f);
        next = folder.parent_id;
    }
    out
}

/// A device's settings revision: the newest stamp among the device, its folders and the profiles
/// assigned to them. Computed from memory: a check-in of an unchanged device reads no settings.
pub fn revision(model: &SettingsModel, d: &DeviceView<'_>) -> u64 {
    let profile_rev = |ids: Option<&Vec<i64>>| {
        ids.into_iter()
            .flatten()
            .filter_map(|p| model.profiles.get(p).map(|(_, rev)| *rev))
            .max()
            .unwrap_or(0)
    };
    let mut rev = d.rev.max(profile_rev(model.device_profiles.get(&d.id)));
    for f in chain(model, d.folder_id) {
        let folder_rev = model.folders.get(&f).map_or(0, |f| f.rev);
        rev = rev
            .max(folder_rev)
            .max(profile_rev(model.folder_profiles.get(&f)));
    }
    u64::try_from(rev).unwrap_or(0)
}

/// The effective settings of a device, merged in the documented order.
pub fn effective(model: &SettingsModel, d: &DeviceView<'_>) -> Effective {
    let profiles = |ids: Option<&Vec<i64>>| -> Vec<&ums_domain::Profile> {
        ids.into_iter()
            .flatten()
            .filter_map(|p| model.profiles.get(p).map(|(p, _)| p))
            .collect()
    };
    let mut layers = vec![Layer {
        object: ObjectRef {
            kind: ObjectKind::Device,
            id: d.id,
        },
        object_name: d.name,
        profiles: profiles(model.device_profiles.get(&d.id)),
    }];
    for f in chain(model, d.folder_id) {
        let name = model.folders.get(&f).map_or("", |f| f.name.as_str());
        layers.push(Layer {
            object: ObjectRef {
                kind: ObjectKind::Folder,
                id: f,
            },
            object_name: name,
            profiles: profiles(model.folder_profiles.get(&f)),
        });
    }
    let mut out = ums_domain::merge(&layers);
    out.warnings.extend(model.warnings.iter().cloned());
    out
}
