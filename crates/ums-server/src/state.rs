//! State shared by the APIs and tasks of one server: the database, the batch writer, the
//! settings model in memory, the cache of device credentials, and this server's parts below it
//! (its place in the network, its file store, its swp-auth client).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use ums_db::batch::Batcher;
use ums_db::settings::SettingsModel;
use ums_db::update_mode::LocalCopy;
use ums_db::{Backend, Db};

use crate::clients::swp::SwpClient;
use crate::error::ApiError;
use crate::files::FileStore;
use crate::metrics::ServerMetrics;
use crate::network::Network;
use crate::settings::DeviceRow;

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
    pub network: Arc<Network>,
    /// The local copies of replicated files.
    pub files: FileStore,
    /// Shared Workplace: the connection to swp-auth.
    pub swp: SwpClient,
    /// What `/metrics` shows.
    pub metrics: Arc<ServerMetrics>,
    /// Shared Workplace sessions this server has met: device id -> the session's tag and user.
    /// Filled at a login and at the first check-in that names a session it does not know (one
    /// read), dropped when a check-in names none; a check-in never reads it from the database
    /// again while its tag stays.
    sessions: Mutex<HashMap<i64, Arc<SessionUser>>>,
    /// Seats of the licence pool that devices were found holding: device id -> licence id.
    seats: Mutex<HashMap<i64, i64>>,
    /// One departure from update mode at a time.
    leaving: tokio::sync::Mutex<()>,
}

/// The user of a Shared Workplace session.
#[derive(Debug)]
pub struct SessionUser {
    pub tag: i64,
    pub directory_id: i64,
    pub user: ums_domain::DirectoryUser,
}

/// What the server says about itself.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub process_id: String,
    pub started_at_ms: i64,
    pub device_port: u16,
    pub admin_port: u16,
    /// Lifetime of an administrator's session.
    pub session: std::time::Duration,
    /// A device contacted at most this long ago is online.
    pub online_within: std::time::Duration,
    /// Age after which the user of a Shared Workplace session is looked up again; zero: never.
    pub swp_refresh: std::time::Duration,
    /// The pinned public release keys a release must be signed with.
    pub release_keys: Vec<ums_release::PublicKey>,
    /// The backup written before this server changes the schema (`[update]`).
    pub auto_backup: crate::backup::AutoBackup,
}

impl AppState {
    pub async fn new(
        db: Db,
        info: ServerInfo,
        network: Arc<Network>,
        files: FileStore,
        swp: SwpClient,
    ) -> Result<Arc<Self>, ApiError> {
        let (generation, _) = db.change_counters().await?;
        let model = db.load_settings_model().await?;
        for w in &model.warnings {
            tracing::warn!(warning = %w, "settings model");
        }
        let metrics = Arc::new(ServerMetrics::default());
        let observer = {
            let metrics = metrics.clone();
            Arc::new(move |n: usize| metrics.checkin_batch.observe(&[], n as f64))
        };
        Ok(Arc::new(Self {
            batcher: Batcher::start_observed(db.clone(), Some(observer)),
            metrics,
            db,
            settings: RwLock::new(Arc::new(model)),
            reload: tokio::sync::Mutex::new(()),
            loaded_generation: std::sync::atomic::AtomicI64::new(generation),
            credentials: Mutex::new(HashMap::new()),
            pending_views: Mutex::new(HashMap::new()),
            info,
            network,
            files,
            swp,
            sessions: Mutex::new(HashMap::new()),
            seats: Mutex::new(HashMap::new()),
            leaving: tokio::sync::Mutex::new(()),
        }))
    }

    /// Every metric of the server in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        self.metrics.render_into(&mut out);
        let pool = self.db.pool_stats();
        ums_service::metrics::gauge(
            &mut out,
            "ums_server_db_pool_connections",
            "Database connections of the pool: open, idle among them, and the most it opens.",
            "state",
            &[
                ("open", f64::from(pool.open)),
                ("idle", f64::from(pool.idle)),
                ("max", f64::from(pool.max)),
            ],
        );
        ums_service::metrics::gauge(
            &mut out,
            "ums_server_scheduler",
            "1 while this server runs the network-wide scheduler.",
            "",
            &[("", f64::from(u8::from(self.network.is_scheduler())))],
        );
        out
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
        let db = self.device_db();
        let (generation, _) = db.change_counters().await?;
        let model = Arc::new(db.load_settings_model().await?);
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
        // In update mode the model is the local copy's, which no counter of the shared
        // database describes.
        if self.network.local_copy().is_some() {
            return Ok(());
        }
        if generation
            > self
                .loaded_generation
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            self.reload_settings().await?;
        }
        Ok(())
    }

    /// After a settings write: reloads this server's model, then tells the other servers.
    pub async fn settings_written(&self) -> Result<(), ApiError> {
        self.reload_settings().await?;
        self.network.settings_changed(&self.db).await;
        Ok(())
    }

    /// Forgets a device's cached credential on every server.
    pub async fn forget_device_everywhere(&self, device_id: i64) {
        self.forget_device(device_id);
        self.network.device_forgotten(&self.db, device_id).await;
    }

    /// A device's settings inputs, read from the database.
    pub async fn device_row(&self, device_id: i64) -> Result<DeviceRow, ApiError> {
        Ok(self.device_db().get_device(device_id).await?.into())
    }

    /// The database devices are served from: the local copy in update mode, else the shared
    /// one.
    pub fn device_db(&self) -> Db {
        match self.network.local_copy() {
            Some(copy) => copy.db().clone(),
            None => self.db.clone(),
        }
    }

    /// Switches to update mode: devices are served from `copy`, the settings model is the
    /// copy's, administrators' changes are refused.
    pub async fn enter_update_mode(&self, copy: LocalCopy) -> Result<(), ApiError> {
        let (target, source) = (copy.target, copy.source);
        self.network.set_local_copy(Some(Arc::new(copy)));
        lock(&self.pending_views).clear();
        self.reload_settings().await?;
        crate::network::update::log(
            &self.db,
            &format!("server/{}", self.info.process_id),
            "update-mode",
            &format!("entered: devices are served from a local copy of schema {source}, waiting for the shared database to reach {target}"),
            true,
        )
        .await;
        Ok(())
    }

    /// Leaves update mode: replays the journal into the shared database, then serves from it
    /// again. Refused (still in update mode) while the shared database is older than the
    /// schema the copy waits for; a failed replay stays in update mode too, and is repeated.
    /// `None` when the server was not in update mode.
    pub async fn leave_update_mode(
        &self,
        why: &str,
    ) -> Result<Option<(u64, ums_db::SchemaVersion)>, ApiError> {
        let Some(copy) = self.network.local_copy() else {
            return Ok(None);
        };
        let _one = self.leaving.lock().await;
        if self.network.local_copy().is_none() {
            return Ok(None);
        }
        let schema = self.db.schema_version().await?.ok_or_else(|| {
            ApiError::FailedPrecondition("the shared database has no schema".into())
        })?;
        if schema < copy.target {
            return Err(ApiError::FailedPrecondition(format!(
                "the shared database is at schema {schema}, this server runs on {}: start the last server on this release so it migrates the shared database, then end update mode",
                copy.target
            )));
        }
        // Devices go to the shared database first, then the journal follows: a check-in there
        // is never overwritten by an older one replayed after it.
        self.network.set_local_copy(None);
        lock(&self.pending_views).clear();
        let result = copy
            .replay(&self.db, ums_db::update_mode::REPLAY_BATCH, None)
            .await;
        let replayed = match result {
            Ok(r) => r,
            Err(e) => {
                self.network.set_local_copy(Some(copy));
                return Err(e.into());
            }
        };
        self.reload_settings().await?;
        crate::network::update::log(
            &self.db,
            &format!("server/{}", self.info.process_id),
            "update-mode",
            &format!(
                "ended ({why}): {} journal entries replayed, serving from the shared database at schema {schema}",
                replayed.entries
            ),
            true,
        )
        .await;
        tracing::info!(replayed = replayed.entries, %schema, why, "update mode ended");
        if let Ok(copy) = Arc::try_unwrap(copy)
            && let Err(e) = copy.remove().await
        {
            tracing::warn!(error = %e, "could not remove the local copy");
        }
        Ok(Some((replayed.entries, schema)))
    }

    /// Checks a device's secret against its stored hash.
    pub async fn verify_device(&self, device_id: i64, secret: &[u8]) -> Result<bool, ApiError> {
        let presented = crate::secrets::sha256(secret);
        let cached = self.lock_credentials().get(&device_id).copied();
        let stored = match cached {
            Some(h) => h,
            None => {
                let Some(Some(hex_hash)) = self.device_db().device_secret_hash(device_id).await?
                else {
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
        let hash = crate::secrets::sha256(secret);
        self.lock_credentials().insert(device_id, hash);
    }

    /// Forgets a device's cached credential (after a reset or a delete).
    pub fn forget_device(&self, device_id: i64) {
        self.lock_credentials().remove(&device_id);
        lock(&self.pending_views).remove(&device_id);
        lock(&self.sessions).remove(&device_id);
        lock(&self.seats).remove(&device_id);
    }

    /// Keeps a check-in's view of a device for the settings download it announces.
    pub fn keep_view(&self, device_id: i64, view: DeviceRow) {
        lock(&self.pending_views).insert(device_id, view);
    }

    /// Takes the view kept by the device's last check-in, if any.
    pub fn take_view(&self, device_id: i64) -> Option<DeviceRow> {
        lock(&self.pending_views).remove(&device_id)
    }

    /// The user of the session a check-in or device row names (`tag`), if any: from memory
    /// while the tag is the one known, else read once.
    pub async fn session_user(
        &self,
        device_id: i64,
        tag: Option<i64>,
    ) -> Result<Option<Arc<SessionUser>>, ApiError> {
        let Some(tag) = tag else {
            lock(&self.sessions).remove(&device_id);
            return Ok(None);
        };
        if let Some(s) = lock(&self.sessions).get(&device_id)
            && s.tag == tag
        {
            return Ok(Some(s.clone()));
        }
        let Some(stored) = self.device_db().swp_session(device_id).await? else {
            lock(&self.sessions).remove(&device_id);
            return Ok(None);
        };
        let user = match serde_json::from_str(&stored.user_json) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(device_id, error = %e, "a stored Shared Workplace session is unreadable: the device gets its own settings");
                return Ok(None);
            }
        };
        Ok(Some(self.remember_session(
            device_id,
            stored.tag,
            stored.directory_id,
            user,
        )))
    }

    /// Keeps the user of a session that just started (or was read).
    pub fn remember_session(
        &self,
        device_id: i64,
        tag: i64,
        directory_id: i64,
        user: ums_domain::DirectoryUser,
    ) -> Arc<SessionUser> {
        let s = Arc::new(SessionUser {
            tag,
            directory_id,
            user,
        });
        lock(&self.sessions).insert(device_id, s.clone());
        s
    }

    /// Forgets the session of a device (it ended).
    pub fn forget_session(&self, device_id: i64) {
        lock(&self.sessions).remove(&device_id);
    }

    /// A directory as swp-auth needs it, with the bind password opened.
    pub fn swp_directory(
        &self,
        d: &ums_db::swp::Directory,
    ) -> Result<ums_proto::swp::v1::Directory, ApiError> {
        let bind_password = self
            .network
            .open_secret(&d.input.bind_password)
            .ok_or_else(|| {
                ApiError::FailedPrecondition(format!(
                    "the bind password of directory `{}` does not open with this network's CA key: set it again",
                    d.input.name
                ))
            })?;
        Ok(crate::clients::swp::directory_pb(d, bind_password))
    }

    /// The licence whose seat a device was found holding.
    pub fn known_seat(&self, device_id: i64) -> Option<i64> {
        lock(&self.seats).get(&device_id).copied()
    }

    pub fn remember_seat(&self, device_id: i64, licence_id: Option<i64>) {
        match licence_id {
            Some(l) => lock(&self.seats).insert(device_id, l),
            None => lock(&self.seats).remove(&device_id),
        };
    }

    fn lock_credentials(&self) -> std::sync::MutexGuard<'_, HashMap<i64, [u8; 32]>> {
        lock(&self.credentials)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
