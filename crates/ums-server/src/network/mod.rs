//! The HA network as one server takes part in it.
//!
//! - **Bootstrap** ([`bootstrap`]): the network CA and the network token, created by the first
//!   server and recovered with the token by the others.
//! - **Registry** ([`registry`]): this server's own entry, the registry as administrators see
//!   it, and heartbeats other components send.
//! - **Releases** ([`release`]): the newest software release for watchdogs, and the update
//!   slot that lets one node at a time install it.
//! - **Updates** ([`update`]): what a start migrates, when contract steps may run, the mode.
//! - **Messaging**: [`Network::publish`] sends an event to every server (PostgreSQL NOTIFY, and
//!   this server's own subscribers at once). The tasks that apply events, write heartbeats and
//!   hold the scheduler lease are in `crate::tasks`; they change this state through the setters
//!   here.

pub mod bootstrap;
pub mod registry;
pub mod release;
pub mod update;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use ums_db::Db;
use ums_proto::network::v1 as pb;
use ums_tls::{CertAuthority, NodeIdentity};

use crate::config::{NetworkMode, NetworkSettings};

pub use bootstrap::Bootstrap;

/// Sealing contexts: what each sealed value is for.
/// (The text predates the one word for the network; it is part of what is stored.)
const SEAL_CA_KEY: &str = "ums cluster ca key";
const SEAL_TOKEN: &str = "ums network token secret";
const SEAL_STORED_SECRET: &str = "ums stored secret";
/// Marks a sealed value in a text column.
const SEALED_PREFIX: &str = "sealed:v1:";
/// Name of the scheduler's lease.
pub const SCHEDULER: &str = "scheduler";
/// Servers more than this far apart in their clocks are flagged.
pub const MAX_CLOCK_SKEW_MS: i64 = 60_000;

/// Events every server must see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Folders, profiles or assignments changed: reload the settings model.
    SettingsChanged { origin: String },
    /// A device's credential was reset or the device deleted: drop its cached credential.
    DeviceForgotten { origin: String, device_id: i64 },
    /// A process joined, left or changed status.
    ProcessesChanged { origin: String },
    /// Files were added or deleted: replicate.
    FilesChanged { origin: String },
    /// Reconnect to the database (after the shared schema changed).
    Reconnect { origin: String },
    /// The network check's probe: every server notes that it arrived (see
    /// [`Network::probe_seen`]). `sent_at_ms` is the sender's clock.
    Probe {
        origin: String,
        id: String,
        sent_at_ms: i64,
    },
}

impl Event {
    /// The event's name, as in its JSON form.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::SettingsChanged { .. } => "settings_changed",
            Event::DeviceForgotten { .. } => "device_forgotten",
            Event::ProcessesChanged { .. } => "processes_changed",
            Event::FilesChanged { .. } => "files_changed",
            Event::Reconnect { .. } => "reconnect",
            Event::Probe { .. } => "probe",
        }
    }

    pub fn origin(&self) -> &str {
        match self {
            Event::SettingsChanged { origin }
            | Event::DeviceForgotten { origin, .. }
            | Event::ProcessesChanged { origin }
            | Event::FilesChanged { origin }
            | Event::Reconnect { origin }
            | Event::Probe { origin, .. } => origin,
        }
    }
}

/// The network as this server takes part in it.
pub struct Network {
    pub process_id: String,
    pub mode: NetworkMode,
    pub identity: NodeIdentity,
    pub ca: CertAuthority,
    pub ca_sha256: String,
    pub token_file: PathBuf,
    pub advertise_host: String,
    pub config: NetworkSettings,
    available: AtomicBool,
    /// The fence of the scheduler lease while this server holds it, else 0.
    scheduler_fence: AtomicI64,
    servers: watch::Sender<Vec<pb::ServerEndpoint>>,
    events: broadcast::Sender<Event>,
    ports: std::sync::OnceLock<(u16, u16, u16)>,
    started_at_ms: i64,
    /// Join attempts with another network's token: how many, and the last one (who, when).
    token_mismatches: Mutex<(u64, String, i64)>,
    /// What each broker last reported of its servers, by broker id.
    broker_views: Mutex<HashMap<String, pb::BrokerView>>,
    /// Ids of the probe events that arrived, newest last.
    probes_seen: Mutex<VecDeque<String>>,
    /// Files the replicator found missing from this server's disk and copied again, newest
    /// last.
    restored_files: Mutex<VecDeque<pb::BadFile>>,
    /// What this build reports: its version and the schema versions it runs on.
    pub binary_version: String,
    pub schema_range: (ums_db::SchemaVersion, ums_db::SchemaVersion),
    /// Versions are mixed in the network, or steps are pending: `mode=update`.
    update_mode: AtomicBool,
    /// Draining before a stop: brokers take it out of rotation.
    stopping: AtomicBool,
    /// Steps this build knows that wait (contract steps until no older server is left).
    pending: std::sync::Mutex<Vec<ums_db::Pending>>,
    /// The scheduler is applying the contract steps (their backup first) beside the heartbeat.
    contracting: AtomicBool,
    /// The local copy devices are served from while this server is in update mode (the last
    /// server migrates the shared database through a major step).
    local_copy: std::sync::RwLock<Option<Arc<ums_db::update_mode::LocalCopy>>>,
}

/// Probe events remembered.
const PROBES_KEPT: usize = 64;

impl Network {
    pub fn new(
        process_id: String,
        config: NetworkSettings,
        identity: NodeIdentity,
        bootstrap: Bootstrap,
    ) -> Arc<Self> {
        Arc::new(Self {
            process_id,
            mode: config.mode,
            identity,
            ca: bootstrap.ca,
            ca_sha256: bootstrap.ca_sha256,
            token_file: bootstrap.token_file,
            advertise_host: config.advertise_host.clone(),
            config,
            available: AtomicBool::new(true),
            scheduler_fence: AtomicI64::new(0),
            servers: watch::channel(Vec::new()).0,
            events: broadcast::channel(1024).0,
            ports: std::sync::OnceLock::new(),
            started_at_ms: ums_db::now_ms(),
            token_mismatches: Mutex::new((0, String::new(), 0)),
            broker_views: Mutex::new(HashMap::new()),
            probes_seen: Mutex::new(VecDeque::new()),
            restored_files: Mutex::new(VecDeque::new()),
            binary_version: update::binary_version(),
            schema_range: update::schema_range(),
            update_mode: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            pending: std::sync::Mutex::new(Vec::new()),
            contracting: AtomicBool::new(false),
            local_copy: std::sync::RwLock::new(None),
        })
    }

    /// The local copy this server serves devices from, while it is in update mode.
    pub fn local_copy(&self) -> Option<Arc<ums_db::update_mode::LocalCopy>> {
        self.local_copy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Switches to (`Some`) or from (`None`) the local copy; returns the one it replaces.
    pub fn set_local_copy(
        &self,
        copy: Option<Arc<ums_db::update_mode::LocalCopy>>,
    ) -> Option<Arc<ums_db::update_mode::LocalCopy>> {
        let mut g = self
            .local_copy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = g.take();
        *g = copy;
        if g.is_some() {
            self.set_update_mode(true);
        }
        before
    }

    /// Whether the network is being updated, as this server reports it.
    pub fn update_mode(&self) -> bool {
        self.update_mode.load(Ordering::Relaxed)
    }

    /// Sets the reported mode; returns what it was.
    pub fn set_update_mode(&self, on: bool) -> bool {
        self.update_mode.swap(on, Ordering::Relaxed)
    }

    /// Whether this server is draining before it stops.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// The steps this build knows that have not run.
    pub fn pending(&self) -> Vec<ums_db::Pending> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn set_pending(&self, pending: Vec<ums_db::Pending>) {
        *self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = pending;
    }

    /// Claims the application of the contract steps; false while it already runs.
    pub fn begin_contract(&self) -> bool {
        !self.contracting.swap(true, Ordering::SeqCst)
    }

    /// Releases what [`Self::begin_contract`] claimed.
    pub fn end_contract(&self) {
        self.contracting.store(false, Ordering::SeqCst);
    }

    /// Seals a secret the servers must read back (a directory's bind password) with a key
    /// derived from the network CA key, which every server of the network holds: the database
    /// alone does not give it away.
    pub fn seal_secret(&self, secret: &str) -> String {
        format!(
            "{SEALED_PREFIX}{}",
            hex::encode(ums_tls::seal(
                &self.ca.key_material(),
                SEAL_STORED_SECRET,
                secret.as_bytes()
            ))
        )
    }

    /// Opens what [`Network::seal_secret`] sealed; a value stored before sealing existed is
    /// returned as it is.
    pub fn open_secret(&self, stored: &str) -> Option<String> {
        let Some(hexed) = stored.strip_prefix(SEALED_PREFIX) else {
            return Some(stored.to_owned());
        };
        let sealed = hex::decode(hexed).ok()?;
        let plain = ums_tls::open(&self.ca.key_material(), SEAL_STORED_SECRET, &sealed)?;
        String::from_utf8(plain).ok()
    }

    /// Records the ports this server serves on (device, admin, internal).
    pub fn set_ports(&self, device: u16, admin: u16, internal: u16) {
        let _ = self.ports.set((device, admin, internal));
    }

    pub fn ports(&self) -> (u16, u16, u16) {
        self.ports.get().copied().unwrap_or_default()
    }

    /// False while the database cannot be reached.
    pub fn available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    /// Whether this server runs the scheduler now.
    pub fn is_scheduler(&self) -> bool {
        self.scheduler_fence.load(Ordering::Relaxed) > 0
    }

    /// The servers taking devices, as the registry says now and after every change.
    pub fn watch_servers(&self) -> watch::Receiver<Vec<pb::ServerEndpoint>> {
        self.servers.subscribe()
    }

    /// Events from this server and the others.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Sends an event to every server, this one included.
    pub async fn publish(&self, db: &Db, event: Event) {
        let _ = self.events.send(event.clone());
        if let Ok(payload) = serde_json::to_string(&event)
            && let Err(e) = db.notify(&payload).await
        {
            // The other servers' counter poll picks the change up.
            tracing::warn!(error = %e, "could not notify the other servers");
        }
    }

    /// Tells every server that the settings model changed.
    pub async fn settings_changed(&self, db: &Db) {
        let origin = self.process_id.clone();
        self.publish(db, Event::SettingsChanged { origin }).await;
    }

    /// Tells every server to forget a device's cached credential.
    pub async fn device_forgotten(&self, db: &Db, device_id: i64) {
        let origin = self.process_id.clone();
        self.publish(db, Event::DeviceForgotten { origin, device_id })
            .await;
    }

    /// Tells every server that the registry changed.
    pub async fn processes_changed(&self, db: &Db) {
        let origin = self.process_id.clone();
        self.publish(db, Event::ProcessesChanged { origin }).await;
    }

    /// Tells every server that files were added or deleted.
    pub async fn files_changed(&self, db: &Db) {
        let origin = self.process_id.clone();
        self.publish(db, Event::FilesChanged { origin }).await;
    }

    /// Delivers an event that arrived from another server to this server's subscribers.
    pub fn deliver(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// Records whether the database answers; returns what it was before.
    pub fn set_available(&self, available: bool) -> bool {
        self.available.swap(available, Ordering::Relaxed)
    }

    /// The fence of the scheduler lease while this server holds it, else 0.
    pub fn scheduler_fence(&self) -> i64 {
        self.scheduler_fence.load(Ordering::Relaxed)
    }

    /// Records the fence of the scheduler lease (0: not held); returns the previous one.
    pub fn set_scheduler_fence(&self, fence: i64) -> i64 {
        self.scheduler_fence.swap(fence, Ordering::Relaxed)
    }

    /// Counts a join attempt refused for another network's token.
    pub fn count_token_mismatch(&self, kind: &str, from: &str) {
        let mut m = self
            .token_mismatches
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        m.0 += 1;
        m.1 = format!("a {kind} from {from}");
        m.2 = ums_db::now_ms();
    }

    /// Join attempts refused for another network's token since start, and the last of them:
    /// who, and when (ms since the epoch).
    pub fn token_mismatches(&self) -> (u64, String, i64) {
        self.token_mismatches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records what a broker reports of its servers.
    pub fn set_broker_view(&self, broker_id: &str, servers: Vec<pb::KnownServer>) {
        let view = pb::BrokerView {
            broker_id: broker_id.to_owned(),
            servers,
            at_ms: ums_db::now_ms(),
        };
        self.broker_views
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(broker_id.to_owned(), view);
    }

    /// What brokers reported to this server of their servers.
    pub fn broker_views(&self) -> Vec<pb::BrokerView> {
        let mut v: Vec<_> = self
            .broker_views
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.broker_id.cmp(&b.broker_id));
        v
    }

    /// Notes a file that was recorded as present here but was missing from the disk.
    pub fn note_restored_file(&self, path: &str, sha256: &str) {
        let mut r = self
            .restored_files
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if r.len() >= PROBES_KEPT {
            r.pop_front();
        }
        r.push_back(pb::BadFile {
            path: path.to_owned(),
            sha256: sha256.to_owned(),
            problem: "restored".into(),
            at_ms: ums_db::now_ms(),
        });
    }

    /// Files found missing from the disk and copied again within the last `within_ms`.
    pub fn restored_files(&self, within_ms: i64) -> Vec<pb::BadFile> {
        let since = ums_db::now_ms() - within_ms;
        self.restored_files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|f| f.at_ms >= since)
            .cloned()
            .collect()
    }

    /// Notes that the probe event `id` arrived.
    pub fn note_probe(&self, id: &str) {
        let mut seen = self.probes_seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= PROBES_KEPT {
            seen.pop_front();
        }
        seen.push_back(id.to_owned());
    }

    /// Whether the probe event `id` arrived.
    pub fn probe_seen(&self, id: &str) -> bool {
        self.probes_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|s| s == id)
    }

    /// Publishes a probe event; returns its id.
    pub async fn publish_probe(&self, db: &Db) -> String {
        let id = format!("{}-{}", self.process_id, rand::random::<u64>());
        let event = Event::Probe {
            origin: self.process_id.clone(),
            id: id.clone(),
            sent_at_ms: ums_db::now_ms(),
        };
        self.publish(db, event).await;
        id
    }

    /// This server's clock as it reports it (shifted by the test offset of debug builds).
    pub fn reported_clock_ms(&self) -> i64 {
        ums_db::now_ms() + self.config.test_clock_offset_ms
    }

    /// Replaces the list of running servers; watchers see only a change.
    pub fn set_servers(&self, servers: Vec<pb::ServerEndpoint>) {
        self.servers.send_if_modified(|cur| {
            if *cur != servers {
                *cur = servers;
                true
            } else {
                false
            }
        });
    }
}

/// Resolves once `stop` reads true (or its sender is gone).
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_as_json() {
        let e = Event::DeviceForgotten {
            origin: "server-a".into(),
            device_id: 7,
        };
        let text = serde_json::to_string(&e).expect("json");
        assert!(text.contains("device_forgotten"), "{text}");
        assert_eq!(serde_json::from_str::<Event>(&text).expect("parse"), e);
    }
}
