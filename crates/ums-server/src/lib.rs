//! `ums-server`: the management server. Devices talk to its device API (register, check in,
//! settings, jobs); administrators to its admin API (gRPC and HTTPS JSON on one port).
//!
//! The caller binds the listeners and owns the shutdown future ([`run`]), so the whole server runs
//! in-process on port 0 in tests (`tests/service`).
//!
//! The modules are layers, each importing only from those before it in this list (a test,
//! `layers.rs`, checks it):
//!
//! 1. [`config`], [`error`], [`metrics`]: the validated configuration; the one error type and
//!    its status; the metric families.
//! 2. [`secrets`]: random tokens, password hashing, the hashes stored for secrets.
//! 3. [`settings`]: the settings layering of a device and of a user on a device.
//! 4. [`clients`]: swp-auth and the watchdogs, as this server calls them.
//! 5. [`network`], [`files`], [`audit`]: this server's place in the HA network; its file
//!    store; the audit log of administrators' changes.
//! 6. [`backup`]: backup and restore of the database and the file store in one archive.
//! 7. [`state`]: [`state::AppState`], what the APIs and tasks share.
//! 8. [`tasks`]: heartbeat and scheduler, events, replication.
//! 9. [`api`]: admin (gRPC and JSON) and the web console over it, device, network and join
//!    services.

pub mod api;
pub mod audit;
pub mod backup;
pub mod clients;
pub mod config;
pub mod error;
pub mod files;
pub mod metrics;
pub mod network;
pub mod secrets;
pub mod settings;
pub mod state;
pub mod tasks;

#[cfg(test)]
mod layers;

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use ums_db::Db;
use ums_proto::admin::v1::admin_service_server::AdminServiceServer;
use ums_proto::device::v1::device_service_server::DeviceServiceServer;
use ums_proto::network::v1::join_service_server::JoinServiceServer;
use ums_proto::network::v1::network_service_server::NetworkServiceServer;
use ums_service::ServeOptions;
use ums_tls::CertAuthority;

pub use config::{Config, ServerConfig};

/// Common name of the CA that signs the certificates devices and administrators verify.
pub const CA_NAME: &str = "UMS device communication CA";
/// User name of the administrator created on first start.
pub const FIRST_ADMIN: &str = "admin";
/// Largest message a device may send.
const MAX_DEVICE_MESSAGE: usize = 256 * 1024;

/// A server ready to serve: database open and migrated, certificates in place.
pub struct Prepared {
    pub db: Db,
    pub device_tls: Arc<rustls::ServerConfig>,
    pub admin_tls: Arc<rustls::ServerConfig>,
    /// The CA certificate clients verify the server with.
    pub ca_path: PathBuf,
    /// Where the first administrator's password was written, when this start created it.
    pub initial_password_file: Option<PathBuf>,
    pub migrated: ums_db::MigrateOutcome,
    /// The server's identity in the network, its CA and token.
    pub bootstrap: network::bootstrap::Bootstrap,
    pub process_id: String,
    pub identity: ums_tls::NodeIdentity,
    pub internal_tls: Arc<rustls::ServerConfig>,
    /// The schema version this server waits for in update mode, when it starts in it: a major
    /// step is pending and servers on the older release still use the shared database.
    pub update_mode: Option<ums_db::SchemaVersion>,
}

/// Well-known files in the data directory.
pub fn tls_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tls")
}

pub fn initial_password_path(data_dir: &Path) -> PathBuf {
    data_dir.join("initial-admin-password")
}

/// Where a server keeps its local copy and journal in update mode.
pub fn update_mode_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("update-mode")
}

/// Creates what a first start needs (data directory, CA, server certificate, schema, first
/// administrator) and opens what a later start finds. Idempotent.
pub async fn prepare(cfg: &Config) -> anyhow::Result<Prepared> {
    ums_tls::install_crypto_provider();
    let data_dir = &cfg.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("create data directory {}", data_dir.display()))?;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restrict data directory {}", data_dir.display()))?;

    let url = &cfg.database_url;
    let db = Db::connect(url)
        .await
        .with_context(|| format!("open database {}", ums_db::redact(url)))?;
    let process_id = network::bootstrap::process_id(data_dir)?;
    let migrated = network::update::migrate_at_start(
        &db,
        &process_id,
        cfg.network.silent_after,
        &backup::AutoBackup::new(cfg),
    )
    .await?;
    if !migrated.applied.is_empty() {
        tracing::info!(
            from = %migrated.from.map(|v| v.to_string()).unwrap_or_else(|| "empty".into()),
            to = %migrated.to,
            "database schema migrated"
        );
    }
    if migrated.ahead {
        tracing::info!(
            schema = %migrated.to,
            known = %ums_db::schema::latest(),
            "the database schema is newer than this server and only expanded beyond it: running on it"
        );
    }
    for p in &migrated.pending {
        tracing::info!(step = %network::update::pending_text(p), "schema step waits until no server needs the older schema");
    }
    let update_mode = network::update::update_mode_target(&migrated);
    if let Some(target) = update_mode {
        tracing::warn!(
            schema = %migrated.to,
            %target,
            "a major schema step waits for the last server on the older release: starting in update mode, devices are served from a local copy and changes are refused until the shared database is at the new schema"
        );
    }

    // The first administrator exists before the network token does: a server joining with
    // the token (which it can have only once the first server wrote it) finds the account
    // instead of creating one of its own, so the password is always beside the first server.
    let mut initial_password_file = None;
    if db.count_admins().await? == 0 {
        let password = secrets::random_token(24);
        let hash = secrets::hash_password(password.clone()).await?;
        db.create_admin(FIRST_ADMIN, &hash, &["*".to_owned()])
            .await?;
        let path = initial_password_path(data_dir);
        ums_tls::write_secret(&path, format!("{password}\n").as_bytes())?;
        initial_password_file = Some(path);
    }

    // The network CA signs the certificates devices, administrators and components verify.
    let tls = tls_dir(data_dir);
    let bootstrap = network::bootstrap::bootstrap(&db, &tls, &cfg.network.token_file).await?;
    let ca = &bootstrap.ca;
    let (cert_pem, key_pem) = server_certificate(ca, &tls, &cfg.tls_names)?;
    let device_tls =
        ums_tls::server_config(&cert_pem, &key_pem, &[b"h2"], cfg.device.session_cache)?;
    let admin_tls = ums_tls::server_config(&cert_pem, &key_pem, &[b"h2", b"http/1.1"], 1024)?;
    let identity = network::bootstrap::server_identity(
        ca,
        &data_dir.join("identity"),
        &process_id,
        &cfg.node_names,
    )?;
    let internal_tls = identity.mtls_server_config(&[b"h2"])?;

    Ok(Prepared {
        db,
        device_tls,
        admin_tls,
        ca_path: tls.join("ca.pem"),
        initial_password_file,
        migrated,
        bootstrap,
        process_id,
        identity,
        internal_tls,
        update_mode,
    })
}

/// Starts in update mode when `prepare` said so: the local copy taken now (or the one a start
/// in update mode left, with its journal). A start in normal mode that finds a copy replays its
/// journal first (the server stopped before it could), or stays in update mode while the shared
/// database is older than the copy's schema.
async fn update_mode_at_start(
    cfg: &Config,
    db: &Db,
    process_id: &str,
    update_mode: Option<ums_db::SchemaVersion>,
    state: &Arc<state::AppState>,
) -> anyhow::Result<()> {
    let dir = update_mode_dir(&cfg.data_dir);
    if let Some(target) = update_mode {
        let started = std::time::Instant::now();
        let mut rows = 0u64;
        let copy = ums_db::update_mode::LocalCopy::take(
            db,
            &dir,
            target,
            &network::update::options(process_id, false),
            |table, n| {
                rows += n;
                tracing::debug!(table, rows = n, "local copy");
            },
        )
        .await
        .with_context(|| format!("take the local copy for update mode in {}", dir.display()))?;
        tracing::info!(rows, took = ?started.elapsed(), dir = %dir.display(), "update mode: local copy ready");
        state
            .enter_update_mode(copy)
            .await
            .map_err(|e| anyhow::anyhow!("enter update mode: {e}"))?;
        return Ok(());
    }
    let Some(copy) = ums_db::update_mode::LocalCopy::open(&dir)
        .await
        .with_context(|| format!("open the local copy in {}", dir.display()))?
    else {
        return Ok(());
    };
    state.network.set_local_copy(Some(Arc::new(copy)));
    match state.leave_update_mode("at start").await {
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "staying in update mode"),
    }
    Ok(())
}

/// Loads the server certificate, issuing a new one when missing or when the names changed.
fn server_certificate(
    ca: &CertAuthority,
    dir: &Path,
    names: &[String],
) -> anyhow::Result<(String, String)> {
    let cert = dir.join("server.pem");
    let key = dir.join("server-key.pem");
    let names_file = dir.join("server.names");
    let wanted = names.join("\n");
    let current = std::fs::read_to_string(&names_file).unwrap_or_default();
    if cert.exists() && key.exists() && current == wanted {
        return Ok((ums_tls::read(&cert)?, ums_tls::read(&key)?));
    }
    let issued = ca.issue_server(names)?;
    ums_tls::write_secret(&key, issued.key_pem.as_bytes())?;
    ums_tls::write_public(&cert, issued.cert_pem.as_bytes())?;
    ums_tls::write_public(&names_file, wanted.as_bytes())?;
    tracing::info!(names = %names.join(", "), "issued the server certificate");
    Ok((issued.cert_pem, issued.key_pem))
}

/// The sockets a server serves on.
pub struct Listeners {
    pub device: TcpListener,
    pub admin: TcpListener,
    /// The internal port (mutual TLS), when the server has one.
    pub internal: Option<TcpListener>,
    /// Plain HTTP for `/metrics`, when configured.
    pub metrics: Option<TcpListener>,
}

/// Serves the device and admin APIs until `shutdown` resolves, then drains connections in
/// flight and returns.
pub async fn run(
    cfg: &Config,
    prepared: Prepared,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let device_port = listeners.device.local_addr()?.port();
    let admin_port = listeners.admin.local_addr()?.port();
    let internal_port = match &listeners.internal {
        Some(l) => l.local_addr()?.port(),
        None => 0,
    };
    let info = state::ServerInfo {
        process_id: prepared.process_id.clone(),
        started_at_ms: ums_db::now_ms(),
        device_port,
        admin_port,
        session: cfg.admin.session,
        online_within: cfg.device.online_within,
        swp_refresh: cfg.swp_refresh,
        release_keys: cfg.release_keys.clone(),
        auto_backup: backup::AutoBackup::new(cfg),
    };
    let net = network::Network::new(
        prepared.process_id.clone(),
        cfg.network.clone(),
        prepared.identity.clone(),
        prepared.bootstrap,
    );
    net.set_ports(device_port, admin_port, internal_port);
    net.set_pending(prepared.migrated.pending.clone());
    let files = files::FileStore::open(&cfg.data_dir)
        .with_context(|| format!("open the file store in {}", cfg.data_dir.display()))?;
    let swp = clients::swp::SwpClient::default();
    swp.configure(cfg.swp.as_ref(), cfg.swp_timeout, &net.identity)?;
    let state = state::AppState::new(prepared.db.clone(), info, net, files, swp)
        .await
        .map_err(|e| anyhow::anyhow!("load settings: {e}"))?;
    update_mode_at_start(
        cfg,
        &prepared.db,
        &prepared.process_id,
        prepared.update_mode,
        &state,
    )
    .await?;

    // Each port's reflection lists the services that port serves.
    let reflection = |services: &[&str]| {
        services
            .iter()
            .fold(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(ums_proto::FILE_DESCRIPTOR_SET),
                |b, s| b.with_service_name(*s),
            )
            .build_v1()
    };
    let device_svc = DeviceServiceServer::new(api::device::DeviceApi {
        state: state.clone(),
    })
    .max_decoding_message_size(MAX_DEVICE_MESSAGE);
    let device_router = api::counted(
        tonic::service::Routes::new(device_svc)
            .add_service(reflection(&["ums.device.v1.DeviceService"])?)
            .into_axum_router(),
        &state,
        "device",
    );

    let admin = Arc::new(api::admin::AdminApi {
        state: state.clone(),
        logins: api::admin::login_guard::LoginGuard::default(),
        check_cache: api::admin::check::Cache::default(),
    });
    let network_service = || {
        NetworkServiceServer::new(api::network::NetworkApi {
            state: state.clone(),
        })
    };
    let admin_router = api::counted(
        api::version_checked(
            tonic::service::Routes::new(AdminServiceServer::from_arc(admin.clone()))
                .add_service(network_service())
                .add_service(JoinServiceServer::new(api::join::JoinApi {
                    state: state.clone(),
                }))
                .add_service(reflection(&[
                    "ums.admin.v1.AdminService",
                    "ums.network.v1.NetworkService",
                    "ums.network.v1.JoinService",
                ])?)
                .into_axum_router()
                .merge(api::json::router(admin.clone()))
                .merge(api::web::router(admin))
                // Replaces tonic's fallback, which answers every unknown path with a gRPC status in
                // an HTTP 200.
                .fallback(api::json::fallback),
        ),
        &state,
        "admin",
    );
    let internal_router = api::counted(
        api::version_checked(
            tonic::service::Routes::new(network_service())
                .add_service(ums_network::diagnostics::service(
                    &state.network.process_id,
                    ums_tls::ComponentKind::Server,
                    env!("CARGO_PKG_VERSION"),
                ))
                .add_service(reflection(&[
                    "ums.network.v1.NetworkService",
                    "ums.network.v1.DiagnosticsService",
                ])?)
                .into_axum_router(),
        ),
        &state,
        "internal",
    );

    let (stop_tx, _) = tokio::sync::watch::channel(false);
    let stopped = |rx| network::stopped(rx);
    let mut servers = vec![
        tokio::spawn(ums_service::serve_tls(
            "device",
            listeners.device,
            prepared.device_tls,
            device_router,
            ServeOptions {
                max_handshakes: cfg.device.max_handshakes,
                proxy_protocol: cfg.device.proxy_protocol,
                ..ServeOptions::default()
            },
            stopped(stop_tx.subscribe()),
        )),
        tokio::spawn(ums_service::serve_tls(
            "admin",
            listeners.admin,
            prepared.admin_tls,
            admin_router,
            ServeOptions::default(),
            stopped(stop_tx.subscribe()),
        )),
    ];
    if let Some(listener) = listeners.internal {
        servers.push(tokio::spawn(ums_service::serve_tls(
            "internal",
            listener,
            prepared.internal_tls,
            internal_router,
            ServeOptions::default(),
            stopped(stop_tx.subscribe()),
        )));
    }
    if let Some(listener) = listeners.metrics {
        let render_state = state.clone();
        servers.push(ums_service::metrics::spawn(
            listener,
            Arc::new(move || render_state.render_metrics()),
            stopped(stop_tx.subscribe()),
        ));
    }
    let tasks = tasks::spawn(&state, &stop_tx);
    shutdown.await;
    if cfg.network.mode == config::NetworkMode::Ha && !cfg.network.drain.is_zero() {
        // Leave the brokers' rotation first: the registry shows "stopping", the other servers
        // push their lists to the brokers, and devices already connected finish their calls.
        state.network.set_stopping();
        let schema = state.db.schema_version().await.ok().flatten();
        let row = state
            .network
            .own_row(&schema.map(|v| v.to_string()).unwrap_or_default());
        if state.db.heartbeat(&row).await.is_ok() {
            state.network.processes_changed(&state.db).await;
        }
        tracing::info!(drain = ?cfg.network.drain, "stopping: draining before the ports close");
        tokio::time::sleep(cfg.network.drain).await;
    }
    tracing::info!("stopping: finishing requests in flight");
    let _ = stop_tx.send(true);
    for handle in servers {
        let _ = handle.await;
    }
    for handle in tasks {
        let _ = handle.await;
    }
    drop(state);
    prepared.db.close().await.ok();
    tracing::info!("stopped");
    Ok(())
}
