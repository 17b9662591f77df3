//! The HA network as one server takes part in it.
//!
//! - **Bootstrap** ([`bootstrap`]): the first server of a database creates the cluster CA and the
//!   network token; a later server recovers the CA from the database with the token. The CA's key
//!   is kept in the database only sealed with the token's secret, and the secret only sealed with
//!   the CA key, so the database alone gives neither.
//! - **Registry**: every server writes a heartbeat each second (database clock); a process silent
//!   past `silent_after_ms` reads as stopped. Components without database access report through
//!   `ClusterService.Heartbeat`.
//! - **Messaging**: events every server must see travel by PostgreSQL NOTIFY; a poll of the change
//!   counters backs them up, so an event lost while the database restarted is still seen.
//! - **Scheduler**: one server at a time holds the `scheduler` lease; its writes are fenced by the
//!   lease's token, so a holder that was cut off cannot write after another took over.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use ums_db::Db;
use ums_db::cluster::{ClusterCa, NewToken, ProcessRow};
use ums_proto::cluster::v1 as pb;
use ums_tls::{CertAuthority, ComponentKind, NetworkToken, NodeIdentity};

use crate::config::{ClusterConfig, ClusterMode};

/// Sealing contexts: what each sealed value is for.
const SEAL_CA_KEY: &str = "ums cluster ca key";
const SEAL_TOKEN: &str = "ums network token secret";
const SEAL_STORED_SECRET: &str = "ums stored secret";
/// Marks a sealed value in a text column.
const SEALED_PREFIX: &str = "sealed:v1:";
/// Name of the scheduler's lease.
pub const SCHEDULER: &str = "scheduler";
/// Servers more than this far apart in their clocks are flagged.
pub const MAX_CLOCK_SKEW_MS: i64 = 60_000;
/// Jobs sent to a device without a result after this long are failed by the scheduler.
const JOB_TIMEOUT_MS: i64 = 24 * 3600 * 1000;

/// What [`bootstrap`] found or created.
pub struct Bootstrap {
    pub ca: CertAuthority,
    pub ca_sha256: String,
    /// Whether this start created the network.
    pub created: bool,
    pub token_file: PathBuf,
}

/// Seals a token for the database.
fn seal_token(ca: &CertAuthority, token: &NetworkToken) -> NewToken {
    NewToken {
        secret_sha256: token.secret_hash(),
        ca_key_sealed: ums_tls::seal(
            token.secret.as_bytes(),
            SEAL_CA_KEY,
            ca.key_pem().as_bytes(),
        ),
        secret_sealed: ums_tls::seal(&ca.key_material(), SEAL_TOKEN, token.secret.as_bytes()),
    }
}

/// The cluster CA of the database's network, creating the network when this is its first server,
/// and making sure the token file exists.
pub async fn bootstrap(db: &Db, tls_dir: &Path, token_file: &Path) -> anyhow::Result<Bootstrap> {
    for _ in 0..3 {
        if let Some(cluster) = db.cluster_ca().await? {
            let ca = recover_ca(db, &cluster, tls_dir, token_file).await?;
            ensure_token_file(db, &ca, &cluster.ca_sha256, token_file).await?;
            return Ok(Bootstrap {
                ca,
                ca_sha256: cluster.ca_sha256,
                created: false,
                token_file: token_file.to_owned(),
            });
        }
        // The first server: an existing single server's CA is kept, so its devices keep
        // trusting it.
        let (ca, created_ca) = CertAuthority::load_or_create(tls_dir, crate::CA_NAME)?;
        let ca_sha256 = ums_tls::ca_fingerprint(&ca.cert_pem)?;
        let token = NetworkToken::generate(&ca_sha256);
        let record = ClusterCa {
            ca_cert_pem: ca.cert_pem.clone(),
            ca_sha256: ca_sha256.clone(),
        };
        if db.create_cluster(&record, &seal_token(&ca, &token)).await? {
            ums_tls::write_secret(token_file, format!("{}\n", token.expose()).as_bytes())?;
            tracing::info!(token_file = %token_file.display(), "created the network: its token is in the token file");
            return Ok(Bootstrap {
                ca,
                ca_sha256,
                created: true,
                token_file: token_file.to_owned(),
            });
        }
        // Another server created the network at the same moment: join it instead.
        if created_ca {
            let _ = std::fs::remove_file(tls_dir.join("ca.pem"));
            let _ = std::fs::remove_file(tls_dir.join("ca-key.pem"));
        }
    }
    bail!("could not create or join the network: the cluster record keeps changing")
}

async fn recover_ca(
    db: &Db,
    cluster: &ClusterCa,
    tls_dir: &Path,
    token_file: &Path,
) -> anyhow::Result<CertAuthority> {
    if tls_dir.join("ca.pem").exists() {
        let (ca, _) = CertAuthority::load_or_create(tls_dir, crate::CA_NAME)?;
        let local = ums_tls::ca_fingerprint(&ca.cert_pem)?;
        if local != cluster.ca_sha256 {
            bail!(
                "{}: this data directory's CA (sha256 {local}) is not the CA of the network in the database (sha256 {}); the data directory belongs to another network",
                ums_cluster::TOKEN_MISMATCH,
                cluster.ca_sha256
            );
        }
        return Ok(ca);
    }
    if !token_file.exists() {
        bail!(
            "this database belongs to an HA network: to join it, put the network token in {} (mode 0600); `umsctl token export` on a running server prints it",
            token_file.display()
        );
    }
    let token = NetworkToken::read(token_file)?;
    if token.ca_hash != cluster.ca_sha256 {
        tracing::error!(
            token_ca = %token.ca_hash, network_ca = %cluster.ca_sha256,
            "{}", ums_cluster::TOKEN_MISMATCH
        );
        bail!(
            "{}: the token in {} is for the CA with sha256 {}, this network's CA has sha256 {}",
            ums_cluster::TOKEN_MISMATCH,
            token_file.display(),
            token.ca_hash,
            cluster.ca_sha256
        );
    }
    let hash = token.secret_hash();
    let row = db
        .valid_tokens()
        .await?
        .into_iter()
        .find(|t| t.secret_sha256 == hash)
        .with_context(|| {
            format!(
                "{}: the token in {} is not (or no longer) valid for this network",
                ums_cluster::TOKEN_MISMATCH,
                token_file.display()
            )
        })?;
    let key_pem = ums_tls::open(token.secret.as_bytes(), SEAL_CA_KEY, &row.ca_key_sealed)
        .context("the sealed CA key in the database does not open with this token")?;
    let key_pem = String::from_utf8(key_pem).context("the sealed CA key is not PEM")?;
    let ca = CertAuthority::from_pem(crate::CA_NAME, &cluster.ca_cert_pem, &key_pem)?;
    ums_tls::create_private_dir(tls_dir)?;
    ums_tls::write_secret(&tls_dir.join("ca-key.pem"), key_pem.as_bytes())?;
    ums_tls::write_public(&tls_dir.join("ca.pem"), cluster.ca_cert_pem.as_bytes())?;
    tracing::info!("joined the network: recovered the cluster CA with the network token");
    Ok(ca)
}

/// The current token, opened with the CA key.
pub async fn current_token(
    db: &Db,
    ca: &CertAuthority,
    ca_sha256: &str,
) -> anyhow::Result<NetworkToken> {
    let row = db
        .valid_tokens()
        .await?
        .into_iter()
        .find(|t| t.expires_at.is_none())
        .context("the network has no current token")?;
    let secret = ums_tls::open(&ca.key_material(), SEAL_TOKEN, &row.secret_sealed)
        .context("the current token does not open with this server's CA key")?;
    Ok(NetworkToken {
        ca_hash: ca_sha256.to_owned(),
        secret: String::from_utf8(secret).context("the sealed token is not text")?,
    })
}

async fn ensure_token_file(
    db: &Db,
    ca: &CertAuthority,
    ca_sha256: &str,
    token_file: &Path,
) -> anyhow::Result<()> {
    if token_file.exists() {
        return Ok(());
    }
    let token = current_token(db, ca, ca_sha256).await?;
    ums_tls::write_secret(token_file, format!("{}\n", token.expose()).as_bytes())?;
    tracing::info!(token_file = %token_file.display(), "wrote the network token file");
    Ok(())
}

/// Issues a new token; the previous one stays valid for `grace_ms`. Writes it to the token file.
pub async fn rotate_token(
    db: &Db,
    ca: &CertAuthority,
    ca_sha256: &str,
    token_file: &Path,
    grace_ms: i64,
) -> anyhow::Result<(NetworkToken, i64)> {
    let token = NetworkToken::generate(ca_sha256);
    let until = db.rotate_token(&seal_token(ca, &token), grace_ms).await?;
    ums_tls::write_secret(token_file, format!("{}\n", token.expose()).as_bytes())?;
    Ok((token, until))
}

/// This server's id: kept in the data directory so a restart updates its registry entry.
pub fn process_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("server-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_owned());
        }
    }
    let id = format!(
        "server-{}",
        crate::admin_api::random_token(10).to_ascii_lowercase()
    );
    ums_tls::write_public(&path, id.as_bytes())?;
    Ok(id)
}

/// This server's node identity for internal connections, issued by the CA it holds; reissued
/// when missing, for another CA, or for other names.
pub fn server_identity(
    ca: &CertAuthority,
    dir: &Path,
    id: &str,
    names: &[String],
) -> anyhow::Result<NodeIdentity> {
    let names_file = dir.join("node.names");
    let wanted = names.join("\n");
    if NodeIdentity::exists(dir)
        && std::fs::read_to_string(&names_file).ok().as_deref() == Some(&wanted)
    {
        let identity = NodeIdentity::load(dir)?;
        if identity.id == id
            && identity.ca_pem == ca.cert_pem
            && ums_tls::verify_node_cert(&ca.cert_pem, &identity.cert_pem).is_ok()
        {
            return Ok(identity);
        }
    }
    let identity = ca.issue_node(ComponentKind::Server, id, names)?;
    identity.save(dir)?;
    ums_tls::write_public(&names_file, wanted.as_bytes())?;
    Ok(identity)
}

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
}

impl Event {
    pub fn origin(&self) -> &str {
        match self {
            Event::SettingsChanged { origin }
            | Event::DeviceForgotten { origin, .. }
            | Event::ProcessesChanged { origin }
            | Event::FilesChanged { origin }
            | Event::Reconnect { origin } => origin,
        }
    }
}

/// The network as this server takes part in it.
pub struct Network {
    pub process_id: String,
    pub mode: ClusterMode,
    pub identity: NodeIdentity,
    pub ca: CertAuthority,
    pub ca_sha256: String,
    pub token_file: PathBuf,
    pub advertise_host: String,
    pub config: ClusterConfig,
    available: AtomicBool,
    /// The fence of the scheduler lease while this server holds it, else 0.
    scheduler_fence: AtomicI64,
    servers: watch::Sender<Vec<pb::ServerEndpoint>>,
    events: broadcast::Sender<Event>,
    ports: std::sync::OnceLock<(u16, u16, u16)>,
    started_at_ms: i64,
}

impl Network {
    pub fn new(
        process_id: String,
        config: ClusterConfig,
        identity: NodeIdentity,
        bootstrap: Bootstrap,
        advertise_host: String,
    ) -> Arc<Self> {
        Arc::new(Self {
            process_id,
            mode: config.mode,
            identity,
            ca: bootstrap.ca,
            ca_sha256: bootstrap.ca_sha256,
            token_file: bootstrap.token_file,
            advertise_host,
            config,
            available: AtomicBool::new(true),
            scheduler_fence: AtomicI64::new(0),
            servers: watch::channel(Vec::new()).0,
            events: broadcast::channel(1024).0,
            ports: std::sync::OnceLock::new(),
            started_at_ms: ums_db::now_ms(),
        })
    }

    /// Seals a secret the servers must read back (a directory's bind password) with a key
    /// derived from the cluster CA key, which every server of the network holds: the database
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

    fn own_row(&self, schema_version: &str) -> ProcessRow {
        let (device, admin, internal) = self.ports();
        ProcessRow {
            id: self.process_id.clone(),
            kind: ComponentKind::Server.as_str().into(),
            host: self.advertise_host.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            schema_version: schema_version.into(),
            device_port: device.into(),
            admin_port: admin.into(),
            internal_port: internal.into(),
            status: "running".into(),
            mode: "normal".into(),
            last_heartbeat: 0,
            clock_ms: ums_db::now_ms(),
            clock_offset_ms: 0,
            cert_fingerprint: self.identity.fingerprint(),
            supervisor_id: None,
            pid: i64::from(std::process::id()),
            started_at: self.started_at_ms,
        }
    }

    /// The registry as administrators see it: status after the silence timeout, clock skew
    /// flagged, the scheduler marked.
    pub async fn processes(&self, db: &Db) -> anyhow::Result<Vec<pb::ProcessInfo>> {
        let (rows, now) = db.list_processes().await?;
        let holder = db.lease_holder(SCHEDULER).await?.map(|(h, _)| h);
        let silent = self.config.silent_after_ms as i64;
        let mut out: Vec<pb::ProcessInfo> = rows
            .into_iter()
            .map(|r| {
                let status = if r.status == "running" && now - r.last_heartbeat > silent {
                    "stopped".to_owned()
                } else {
                    r.status.clone()
                };
                pb::ProcessInfo {
                    scheduler: holder.as_deref() == Some(r.id.as_str()),
                    id: r.id,
                    kind: r.kind,
                    host: r.host,
                    version: r.version,
                    schema_version: r.schema_version,
                    device_port: r.device_port as u32,
                    admin_port: r.admin_port as u32,
                    internal_port: r.internal_port as u32,
                    status,
                    mode: r.mode,
                    last_heartbeat_ms: r.last_heartbeat,
                    clock_ms: r.clock_ms,
                    clock_offset_ms: r.clock_offset_ms,
                    cert_fingerprint: r.cert_fingerprint,
                    supervisor_id: r.supervisor_id.unwrap_or_default(),
                    pid: r.pid as u32,
                    started_at_ms: r.started_at,
                    clock_skewed: false,
                }
            })
            .collect();
        flag_clock_skew(&mut out);
        Ok(out)
    }

    /// Records a heartbeat a component sent for itself and what it supervises.
    pub async fn record_heartbeat(
        &self,
        db: &Db,
        peer: &ums_service::Peer,
        req: pb::HeartbeatRequest,
    ) -> anyhow::Result<i64> {
        let process = req.process.context("heartbeat without a process")?;
        if process.id != peer.id || process.kind != peer.kind.as_str() {
            bail!(
                "a {} certificate for {} cannot report for {} {}",
                peer.kind,
                peer.id,
                process.kind,
                process.id
            );
        }
        let before = db.list_processes().await?.0;
        let mut rows = vec![row_from_info(&process, &peer.fingerprint, None)];
        for child in &req.supervised {
            if ComponentKind::parse(&child.kind).is_none() || child.id.is_empty() {
                bail!("a supervised process needs an id and a known kind");
            }
            rows.push(row_from_info(
                child,
                &child.cert_fingerprint,
                Some(&peer.id),
            ));
        }
        let mut now = 0;
        let mut changed = false;
        for row in &rows {
            // A supervised server writes its own heartbeat; the watchdog's report must not
            // overwrite a fresher one, only mark it stopped when it is.
            if row.kind == "server" && row.supervisor_id.is_some() {
                let known = before.iter().find(|b| b.id == row.id);
                if let (Some(b), Some(sup)) = (known, &row.supervisor_id)
                    && b.supervisor_id.as_ref() != Some(sup)
                {
                    db.set_process_supervisor(&row.id, sup).await?;
                    changed = true;
                }
                if row.status != "running"
                    && before
                        .iter()
                        .any(|b| b.id == row.id && b.status == "running")
                {
                    db.set_process_status(&row.id, &row.status).await?;
                    changed = true;
                }
                continue;
            }
            changed |= !before
                .iter()
                .any(|b| b.id == row.id && b.status == row.status);
            now = db.heartbeat(row).await?;
        }
        if changed {
            self.publish(
                db,
                Event::ProcessesChanged {
                    origin: self.process_id.clone(),
                },
            )
            .await;
        }
        Ok(now)
    }
}

fn row_from_info(p: &pb::ProcessInfo, fingerprint: &str, supervisor: Option<&str>) -> ProcessRow {
    ProcessRow {
        id: p.id.clone(),
        kind: p.kind.clone(),
        host: p.host.clone(),
        version: p.version.clone(),
        schema_version: p.schema_version.clone(),
        device_port: p.device_port.into(),
        admin_port: p.admin_port.into(),
        internal_port: p.internal_port.into(),
        status: if p.status == "stopped" {
            "stopped".into()
        } else {
            "running".into()
        },
        mode: if p.mode == "update" {
            "update".into()
        } else {
            "normal".into()
        },
        last_heartbeat: 0,
        clock_ms: p.clock_ms,
        clock_offset_ms: 0,
        cert_fingerprint: fingerprint.to_owned(),
        supervisor_id: supervisor
            .map(str::to_owned)
            .or_else(|| (!p.supervisor_id.is_empty()).then(|| p.supervisor_id.clone())),
        pid: p.pid.into(),
        started_at: p.started_at_ms,
    }
}

/// Flags running processes whose clock is more than [`MAX_CLOCK_SKEW_MS`] from the median of the
/// running servers' clocks.
pub fn flag_clock_skew(processes: &mut [pb::ProcessInfo]) {
    let mut offsets: Vec<i64> = processes
        .iter()
        .filter(|p| p.kind == "server" && p.status == "running")
        .map(|p| p.clock_offset_ms)
        .collect();
    if offsets.is_empty() {
        return;
    }
    offsets.sort_unstable();
    let median = offsets[offsets.len() / 2];
    for p in processes.iter_mut().filter(|p| p.status == "running") {
        p.clock_skewed = (p.clock_offset_ms - median).abs() > MAX_CLOCK_SKEW_MS;
    }
}

/// The servers that take devices: running, heard from recently.
fn running_servers(rows: &[ProcessRow], now: i64, silent_ms: i64) -> Vec<pb::ServerEndpoint> {
    let mut out: Vec<pb::ServerEndpoint> = rows
        .iter()
        .filter(|r| {
            r.kind == "server" && r.status == "running" && now - r.last_heartbeat <= silent_ms
        })
        .map(|r| pb::ServerEndpoint {
            id: r.id.clone(),
            host: r.host.clone(),
            device_port: r.device_port as u32,
            mode: r.mode.clone(),
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// Runs the server's part of the network until `stop` flips: heartbeats, the registry view,
/// the event listener with its counter poll, and the scheduler lease. On stop it marks itself
/// stopped and gives the lease up.
pub async fn run(
    network: Arc<Network>,
    state: Arc<crate::state::AppState>,
    stop: watch::Receiver<bool>,
) {
    let listener = tokio::spawn(listen_events(network.clone(), state.clone(), stop.clone()));
    let stopping = stopped(stop);
    tokio::pin!(stopping);
    let heartbeat_every = Duration::from_millis(network.config.heartbeat_ms.max(100));
    let mut tick = tokio::time::interval(heartbeat_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sweep = std::time::Instant::now() - Duration::from_secs(60);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut stopping => break,
        }
        let db = &state.db;
        let beat = tokio::time::timeout(heartbeat_every * 3, async {
            let schema = db
                .schema_version()
                .await?
                .map(|v| v.to_string())
                .unwrap_or_default();
            db.heartbeat(&network.own_row(&schema)).await?;
            db.list_processes().await
        })
        .await;
        match beat {
            Ok(Ok((rows, now))) => {
                if !network.available.swap(true, Ordering::Relaxed) {
                    tracing::info!("the database is reachable again: serving");
                }
                let servers = running_servers(&rows, now, network.config.silent_after_ms as i64);
                network.servers.send_if_modified(|cur| {
                    if *cur != servers {
                        *cur = servers;
                        true
                    } else {
                        false
                    }
                });
            }
            Ok(Err(e)) => unavailable(&network, &e.to_string()),
            Err(_) => unavailable(&network, "the database did not answer in time"),
        }
        if network.available() {
            scheduler_step(&network, db, &mut last_sweep).await;
        }
    }
    listener.abort();
    let db = &state.db;
    if network.is_scheduler() {
        let _ = db.release_lease(SCHEDULER, &network.process_id).await;
    }
    let _ = db.set_process_status(&network.process_id, "stopped").await;
    network
        .publish(
            db,
            Event::ProcessesChanged {
                origin: network.process_id.clone(),
            },
        )
        .await;
}

fn unavailable(network: &Network, why: &str) {
    if network.available.swap(false, Ordering::Relaxed) {
        tracing::error!(error = %why, "the database is unreachable: reporting this server unavailable");
    }
    // Without the database the lease cannot be renewed: stop acting as the scheduler at once.
    network.scheduler_fence.store(0, Ordering::Relaxed);
}

async fn scheduler_step(network: &Network, db: &Db, last_sweep: &mut std::time::Instant) {
    let ttl = network.config.lease_ms as i64;
    match db.acquire_lease(SCHEDULER, &network.process_id, ttl).await {
        Ok(Some(fence)) => {
            let before = network.scheduler_fence.swap(fence, Ordering::Relaxed);
            if before != fence {
                tracing::info!(fence, "this server now runs the cluster scheduler");
            }
            if last_sweep.elapsed() >= Duration::from_secs(2) {
                *last_sweep = std::time::Instant::now();
                match db
                    .scheduler_sweep(
                        SCHEDULER,
                        fence,
                        network.config.silent_after_ms as i64,
                        JOB_TIMEOUT_MS,
                    )
                    .await
                {
                    Ok(Some((stopped, expired))) if stopped + expired > 0 => {
                        tracing::info!(
                            stopped,
                            expired,
                            "scheduler: marked silent processes stopped and late jobs failed"
                        );
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        tracing::warn!(fence, "scheduler: the lease moved to another server");
                        network.scheduler_fence.store(0, Ordering::Relaxed);
                    }
                    Err(e) => tracing::warn!(error = %e, "scheduler sweep failed"),
                }
            }
        }
        Ok(None) => {
            if network.scheduler_fence.swap(0, Ordering::Relaxed) != 0 {
                tracing::warn!("this server no longer runs the cluster scheduler");
            }
        }
        Err(e) => {
            network.scheduler_fence.store(0, Ordering::Relaxed);
            tracing::warn!(error = %e, "scheduler lease");
        }
    }
}

/// Applies events: from NOTIFY when the database is PostgreSQL, and from a poll of the change
/// counters every `poll_ms` (which also covers events lost while the listener reconnected).
async fn listen_events(
    network: Arc<Network>,
    state: Arc<crate::state::AppState>,
    stop: watch::Receiver<bool>,
) {
    let db = state.db.clone();
    // Local events (this server's own writes) are applied where they are made; remote ones here.
    let (remote_tx, mut remote_rx) = tokio::sync::mpsc::channel::<Event>(1024);
    let notify_task = {
        let db = db.clone();
        let own = network.process_id.clone();
        tokio::spawn(async move {
            loop {
                match db.listen().await {
                    Ok(Some(mut listener)) => loop {
                        match listener.recv().await {
                            Ok(n) => match serde_json::from_str::<Event>(&n) {
                                Ok(e) if e.origin() != own => {
                                    let _ = remote_tx.send(e).await;
                                }
                                Ok(_) => {}
                                Err(err) => tracing::warn!(error = %err, "unreadable event"),
                            },
                            Err(e) => {
                                tracing::warn!(error = %e, "event listener lost the database; reconnecting");
                                break;
                            }
                        }
                    },
                    Ok(None) => return,
                    Err(e) => tracing::warn!(error = %e, "cannot listen for events; retrying"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let mut poll = tokio::time::interval(Duration::from_millis(network.config.poll_ms.max(100)));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut files_seen = db.change_counters().await.map(|c| c.1).unwrap_or_default();
    let stopping = stopped(stop);
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            () = &mut stopping => break,
            Some(event) = remote_rx.recv() => {
                apply(&network, &state, &event).await;
                let _ = network.events.send(event);
            }
            _ = poll.tick() => {
                let Ok(now) = db.change_counters().await else { continue };
                if let Err(e) = state.reload_settings_if_newer(now.0).await
                {
                    tracing::warn!(error = %e, "settings reload failed");
                }
                if now.1 != files_seen {
                    let _ = network.events.send(Event::FilesChanged { origin: String::new() });
                }
                files_seen = now.1;
            }
        }
    }
    notify_task.abort();
}

async fn apply(_network: &Network, state: &crate::state::AppState, event: &Event) {
    match event {
        Event::SettingsChanged { .. } => {
            if let Err(e) = state.reload_settings().await {
                tracing::warn!(error = %e, "settings reload failed");
            }
        }
        Event::DeviceForgotten { device_id, .. } => state.forget_device(*device_id),
        Event::ProcessesChanged { .. } | Event::FilesChanged { .. } => {}
        Event::Reconnect { .. } => {
            tracing::info!("asked to reconnect to the database");
        }
    }
}

/// Resolves once `stop` reads true (or its sender is gone).
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The advertised host of this server: configured, else the first certificate name that is not
/// a loopback name, else 127.0.0.1.
pub fn advertise_host(cfg: &ClusterConfig, tls_names: &[String]) -> String {
    if !cfg.advertise_host.is_empty() {
        return cfg.advertise_host.clone();
    }
    tls_names
        .iter()
        .find(|n| !matches!(n.as_str(), "localhost" | "127.0.0.1" | "::1"))
        .cloned()
        .unwrap_or_else(|| "127.0.0.1".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str, kind: &str, status: &str, offset: i64) -> pb::ProcessInfo {
        pb::ProcessInfo {
            id: id.into(),
            kind: kind.into(),
            status: status.into(),
            clock_offset_ms: offset,
            ..Default::default()
        }
    }

    #[test]
    fn a_clock_far_from_the_others_is_flagged() {
        let mut ps = vec![
            p("a", "server", "running", 100),
            p("b", "server", "running", -200),
            p("c", "server", "running", 90_000),
            p("d", "broker", "running", -70_000),
            p("e", "server", "stopped", 500_000),
        ];
        flag_clock_skew(&mut ps);
        let flagged: Vec<_> = ps
            .iter()
            .filter(|p| p.clock_skewed)
            .map(|p| p.id.as_str())
            .collect();
        assert_eq!(flagged, vec!["c", "d"]);
    }

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

    #[test]
    fn only_fresh_running_servers_take_devices() {
        let row = |id: &str, kind: &str, status: &str, beat: i64| ProcessRow {
            id: id.into(),
            kind: kind.into(),
            status: status.into(),
            last_heartbeat: beat,
            device_port: 30002,
            host: "h".into(),
            mode: "normal".into(),
            ..Default::default()
        };
        let rows = vec![
            row("s1", "server", "running", 10_000),
            row("s2", "server", "running", 1_000),
            row("s3", "server", "stopped", 10_000),
            row("b1", "broker", "running", 10_000),
        ];
        let ids: Vec<_> = running_servers(&rows, 10_500, 5_000)
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, vec!["s1"]);
    }
}
