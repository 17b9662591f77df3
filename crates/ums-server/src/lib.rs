//! `ums-server`: the management server. Devices talk to its device API (register, check in,
//! settings, jobs); administrators to its admin API (gRPC and HTTPS JSON on one port).
//!
//! The caller binds the listeners and owns the shutdown future ([`run`]), so the whole server runs
//! in-process on port 0 in tests.

pub mod admin_api;
pub mod cluster_api;
pub mod config;
pub mod device_api;
pub mod error;
pub mod json_api;
pub mod login_guard;
pub mod state;
pub mod swp;

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use ums_db::Db;
use ums_proto::admin::v1::admin_service_server::AdminServiceServer;
use ums_proto::cluster::v1::cluster_service_server::ClusterServiceServer;
use ums_proto::device::v1::device_service_server::DeviceServiceServer;
use ums_service::ServeOptions;
use ums_tls::CertAuthority;

pub use config::ServerConfig;

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
}

/// Well-known files in the data directory.
pub fn tls_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tls")
}

pub fn initial_password_path(data_dir: &Path) -> PathBuf {
    data_dir.join("initial-admin-password")
}

/// Creates what a first start needs (data directory, CA, server certificate, schema, first
/// administrator) and opens what a later start finds. Idempotent.
pub async fn prepare(cfg: &ServerConfig) -> anyhow::Result<Prepared> {
    ums_tls::install_crypto_provider();
    let data_dir = &cfg.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("create data directory {}", data_dir.display()))?;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restrict data directory {}", data_dir.display()))?;

    let tls = tls_dir(data_dir);
    let (ca, created) = CertAuthority::load_or_create(&tls, CA_NAME)?;
    if created {
        tracing::info!(path = %tls.join("ca.pem").display(), "created the device communication CA");
    }
    let (cert_pem, key_pem) = server_certificate(&ca, &tls, &cfg.tls_names())?;
    let device_tls = ums_tls::server_config(
        &cert_pem,
        &key_pem,
        &[b"h2"],
        cfg.device.session_cache.max(1),
    )?;
    let admin_tls = ums_tls::server_config(&cert_pem, &key_pem, &[b"h2", b"http/1.1"], 1024)?;

    let url = cfg.database_url();
    let (db, migrated) = Db::open(&url)
        .await
        .with_context(|| format!("open database {}", ums_db::redact(&url)))?;
    if !migrated.applied.is_empty() {
        tracing::info!(
            from = %migrated.from.map(|v| v.to_string()).unwrap_or_else(|| "empty".into()),
            to = %migrated.to,
            "database schema migrated"
        );
    }

    let mut initial_password_file = None;
    if db.count_admins().await? == 0 {
        let password = admin_api::random_token(24);
        let hash = admin_api::hash_password(password.clone()).await?;
        db.create_admin(FIRST_ADMIN, &hash, &["*".to_owned()])
            .await?;
        let path = initial_password_path(data_dir);
        ums_tls::write_secret(&path, format!("{password}\n").as_bytes())?;
        initial_password_file = Some(path);
    }
    Ok(Prepared {
        db,
        device_tls,
        admin_tls,
        ca_path: tls.join("ca.pem"),
        initial_password_file,
        migrated,
    })
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
}

/// Serves the device and admin APIs until `shutdown` resolves, then drains connections in
/// flight and returns.
pub async fn run(
    cfg: &ServerConfig,
    prepared: Prepared,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let device_port = listeners.device.local_addr()?.port();
    let admin_port = listeners.admin.local_addr()?.port();
    let info = state::ServerInfo {
        process_id: format!("server-{}", admin_api::random_token(12)),
        started_at_ms: ums_db::now_ms(),
        device_port,
        admin_port,
        session_hours: cfg.admin.session_hours,
    };
    let state = state::AppState::new(prepared.db.clone(), info)
        .await
        .map_err(|e| anyhow::anyhow!("load settings: {e}"))?;
    state.swp.configure(cfg)?;

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
    let device_svc = DeviceServiceServer::new(device_api::DeviceApi {
        state: state.clone(),
    })
    .max_decoding_message_size(MAX_DEVICE_MESSAGE);
    let device_router = tonic::service::Routes::new(device_svc)
        .add_service(reflection(&["ums.device.v1.DeviceService"])?)
        .into_axum_router();

    let admin = Arc::new(admin_api::AdminApi {
        state: state.clone(),
        logins: login_guard::LoginGuard::default(),
    });
    let admin_router = tonic::service::Routes::new(AdminServiceServer::from_arc(admin.clone()))
        .add_service(ClusterServiceServer::new(cluster_api::ClusterApi {
            state: state.clone(),
        }))
        .add_service(reflection(&[
            "ums.admin.v1.AdminService",
            "ums.cluster.v1.ClusterService",
        ])?)
        .into_axum_router()
        .merge(json_api::router(admin));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let device = tokio::spawn(ums_service::serve_tls(
        "device",
        listeners.device,
        prepared.device_tls,
        device_router,
        ServeOptions {
            max_handshakes: cfg.device.max_handshakes,
            ..ServeOptions::default()
        },
        stopped(stop_rx.clone()),
    ));
    let admin = tokio::spawn(ums_service::serve_tls(
        "admin",
        listeners.admin,
        prepared.admin_tls,
        admin_router,
        ServeOptions::default(),
        stopped(stop_rx),
    ));
    shutdown.await;
    tracing::info!("stopping: finishing requests in flight");
    let _ = stop_tx.send(true);
    let _ = tokio::join!(device, admin);
    drop(state);
    prepared.db.close().await.ok();
    tracing::info!("stopped");
    Ok(())
}
