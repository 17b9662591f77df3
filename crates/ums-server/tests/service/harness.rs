//! A server (and swp-auth) running inside the test process: `ums_server::prepare` and `run` on
//! listeners bound to port 0, stopped through their shutdown future.
//!
//! Each service gets a tokio runtime of its own whose threads log to that service's buffer, so a
//! test reads what one server logged ([`TestServer::log_text`]) while several run in the process,
//! and the service keeps serving while the test blocks (stopping PostgreSQL or slapd).

use std::cell::RefCell;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use ums_proto::admin::v1 as pb;
use ums_proto::admin::v1::admin_service_client::AdminServiceClient;
use ums_server::{Listeners, ServerConfig};

/// The section of the server's configuration for its part in the HA network, as the file names
/// it. The harness names configuration keys as a file does (see [`set`]), so this is the one
/// place that knows the section's name.
pub const NETWORK: &str = "network";

/// HA mode with short timings, so failures show within seconds in tests.
pub fn ha(cfg: &mut ServerConfig) {
    set(
        cfg,
        NETWORK,
        serde_json::json!({
            "mode": "ha",
            "heartbeat_ms": 250,
            "silent_after_ms": 1500,
            "lease_ms": 1500,
            "poll_ms": 500,
        }),
    );
}

/// Sets keys of one section of the configuration (`set(cfg, "device", json!({"listen": ..}))`)
/// through its serde form, as a file or `UMS_` variables would. An unknown section or key fails
/// like it does in a file.
pub fn set(cfg: &mut ServerConfig, section: &str, values: serde_json::Value) {
    let mut all = serde_json::to_value(&*cfg).expect("the configuration as JSON");
    let serde_json::Value::Object(values) = values else {
        panic!("set {section}: values must be a JSON object");
    };
    for (key, value) in values {
        all[section][key] = value;
    }
    *cfg = serde_json::from_value(all).unwrap_or_else(|e| panic!("set {section}: {e}"));
}

/// Writes a network token into the data directory of a server about to start, so it joins the
/// network the token belongs to.
pub fn write_token(cfg: &ServerConfig, token: &str) {
    std::fs::write(cfg.data_dir.join("network-token"), format!("{token}\n")).expect("token file");
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What one service logged, as text lines.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    fn dispatch(&self) -> tracing::Dispatch {
        let log = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_ansi(false)
            .with_writer(move || log.clone())
            .finish();
        tracing::Dispatch::new(subscriber)
    }
}

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

thread_local! {
    static LOG_GUARD: RefCell<Option<tracing::dispatcher::DefaultGuard>> =
        const { RefCell::new(None) };
}

/// A service on a runtime of its own, stopped by its shutdown future.
struct Service {
    name: &'static str,
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: Option<oneshot::Sender<()>>,
    done: Option<JoinHandle<anyhow::Result<()>>>,
    log: Log,
}

impl Service {
    fn new(name: &'static str) -> Service {
        let log = Log::default();
        let dispatch = log.dispatch();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(name)
            .enable_all()
            .on_thread_start(move || {
                let guard = tracing::dispatcher::set_default(&dispatch);
                LOG_GUARD.with(|g| *g.borrow_mut() = Some(guard));
            })
            .on_thread_stop(|| LOG_GUARD.with(|g| drop(g.borrow_mut().take())))
            .build()
            .expect("a runtime for the service");
        Service {
            name,
            runtime: Some(runtime),
            shutdown: None,
            done: None,
            log,
        }
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the service's runtime")
    }

    /// Runs `service(shutdown)` on the service's runtime.
    fn spawn<F, Fut>(&mut self, service: F)
    where
        F: FnOnce(oneshot::Receiver<()>) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.shutdown = Some(tx);
        self.done = Some(self.runtime().spawn(service(rx)));
    }

    /// Triggers the shutdown and waits for the service to return, which must be cleanly.
    async fn stop(&mut self) {
        drop(self.shutdown.take());
        let Some(done) = self.done.take() else {
            return;
        };
        let returned = tokio::time::timeout(Duration::from_secs(30), done)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} did not stop within 30 s:\n{}",
                    self.name,
                    self.log.text()
                )
            })
            .unwrap_or_else(|e| panic!("{} panicked: {e}\n{}", self.name, self.log.text()));
        if let Err(e) = returned {
            panic!("{} failed: {e:#}\n{}", self.name, self.log.text());
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // A test that ends without `stop` (a failed assertion) does not wait for a drain.
        drop(self.shutdown.take());
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Resolves when the sender is used or dropped.
async fn signalled(rx: oneshot::Receiver<()>) {
    let _ = rx.await;
}

/// What a started server tells the test.
struct Started {
    device: SocketAddr,
    admin: SocketAddr,
    internal: Option<SocketAddr>,
    backend: &'static str,
    ca_path: PathBuf,
    initial_password_file: Option<PathBuf>,
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(AsciiMetadataValue);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// The admin API as a logged-in administrator calls it.
pub type Admin = AdminServiceClient<InterceptedService<Channel, Bearer>>;

/// A gRPC channel to `url` over TLS, trusting `ca_pem`.
pub async fn channel(url: &str, ca_pem: &[u8]) -> anyhow::Result<Channel> {
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    Ok(Endpoint::from_shared(url.to_owned())?
        .tls_config(tls)?
        .connect()
        .await?)
}

/// A server running in this process with its own data directory.
pub struct TestServer {
    pub data_dir: PathBuf,
    /// `https://127.0.0.1:PORT` of the device API.
    pub device_url: String,
    /// `https://127.0.0.1:PORT` of the admin API.
    pub admin_url: String,
    /// `127.0.0.1:PORT` of the internal (mutual TLS) port.
    pub internal_addr: String,
    /// "sqlite" or "postgres": the database the server opened.
    pub backend: &'static str,
    /// The CA certificate devices and administrators verify the server with.
    pub ca_pem: Vec<u8>,
    /// The first administrator's password, when this server created the account.
    pub admin_password: Option<String>,
    admin: Option<Admin>,
    service: Service,
    /// Removed after the service is gone (fields drop in order).
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server on the embedded database, or on `database_url`.
    pub async fn start(database_url: Option<&str>) -> TestServer {
        Self::start_with(database_url, |_| {}).await
    }

    /// Starts a server whose configuration `edit` changes first (`harness::ha`, `swp.url`, ...).
    pub async fn start_with(
        database_url: Option<&str>,
        edit: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        Self::try_start_with(database_url, edit)
            .await
            .unwrap_or_else(|e| panic!("the server did not start: {e:#}"))
    }

    /// Like [`TestServer::start_with`], returning why the server refused to start. The data
    /// directory exists when `edit` runs.
    pub async fn try_start_with(
        database_url: Option<&str>,
        edit: impl FnOnce(&mut ServerConfig),
    ) -> anyhow::Result<TestServer> {
        let dir = tempfile::tempdir()?;
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir)?;
        let mut server_cfg = ServerConfig {
            data_dir: data_dir.clone(),
            database_url: database_url.unwrap_or_default().to_owned(),
            ..ServerConfig::default()
        };
        server_cfg.device.listen = "127.0.0.1:0".into();
        server_cfg.admin.listen = "127.0.0.1:0".into();
        set(
            &mut server_cfg,
            NETWORK,
            serde_json::json!({"internal_listen": "127.0.0.1:0"}),
        );
        edit(&mut server_cfg);
        let cfg = server_cfg.validate()?;

        let mut service = Service::new("ums-server");
        let (started_tx, started_rx) = oneshot::channel();
        service.spawn(move |shutdown| async move {
            // As the binary's `main` does, with the addresses of the configuration.
            let prepare = async {
                let prepared = ums_server::prepare(&cfg).await?;
                let listeners = Listeners {
                    device: ums_service::listen(cfg.device.listen)?,
                    admin: ums_service::listen(cfg.admin.listen)?,
                    internal: cfg
                        .network
                        .internal_listen
                        .map(ums_service::listen)
                        .transpose()?,
                    metrics: cfg.metrics_listen.map(ums_service::listen).transpose()?,
                };
                let started = Started {
                    device: listeners.device.local_addr()?,
                    admin: listeners.admin.local_addr()?,
                    internal: listeners
                        .internal
                        .as_ref()
                        .map(|l| l.local_addr())
                        .transpose()?,
                    backend: prepared.db.backend().as_str(),
                    ca_path: prepared.ca_path.clone(),
                    initial_password_file: prepared.initial_password_file.clone(),
                };
                anyhow::Ok((prepared, listeners, started))
            };
            match prepare.await {
                Ok((prepared, listeners, started)) => {
                    let _ = started_tx.send(Ok(started));
                    ums_server::run(&cfg, prepared, listeners, signalled(shutdown)).await
                }
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                    Ok(())
                }
            }
        });
        let started = started_rx
            .await
            .with_context(|| format!("the server task ended:\n{}", service.log.text()))??;

        let ca_pem = std::fs::read(&started.ca_path)
            .with_context(|| format!("read {}", started.ca_path.display()))?;
        let admin_password = match &started.initial_password_file {
            Some(file) => Some(std::fs::read_to_string(file)?.trim().to_owned()),
            None => None,
        };
        let mut server = TestServer {
            data_dir,
            device_url: format!("https://{}", started.device),
            admin_url: format!("https://{}", started.admin),
            internal_addr: started.internal.map(|a| a.to_string()).unwrap_or_default(),
            backend: started.backend,
            ca_pem,
            admin_password,
            admin: None,
            service,
            _dir: dir,
        };
        if let Some(password) = server.admin_password.clone() {
            let admin = server
                .login(ums_server::FIRST_ADMIN, &password)
                .await
                .map_err(|s| anyhow::anyhow!("the first administrator's login: {s}"))?;
            server.admin = Some(admin);
        }
        Ok(server)
    }

    /// The admin API, logged in as the first administrator.
    pub fn admin(&self) -> Admin {
        self.admin
            .clone()
            .expect("this server did not create the first administrator")
    }

    /// Logs in to the admin API as `user`.
    pub async fn login(&self, user: &str, password: &str) -> Result<Admin, tonic::Status> {
        let channel = channel(&self.admin_url, &self.ca_pem)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e:#}", self.admin_url));
        let login = AdminServiceClient::new(channel.clone())
            .login(pb::LoginRequest {
                username: user.to_owned(),
                password: password.to_owned(),
            })
            .await?
            .into_inner();
        let header = format!("Bearer {}", login.token)
            .parse()
            .expect("a token fits a header");
        Ok(AdminServiceClient::with_interceptor(
            channel,
            Bearer(header),
        ))
    }

    /// A device client connected to this server.
    pub async fn device(&self) -> ums_devsim::DeviceClient {
        ums_devsim::DeviceClient::connect(&self.device_url, &self.ca_pem)
            .await
            .expect("connect a device")
    }

    /// `127.0.0.1:PORT` of the admin API.
    pub fn admin_addr(&self) -> String {
        self.admin_url.trim_start_matches("https://").to_owned()
    }

    /// The network token file this server wrote or read.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("network-token"))
            .expect("network token")
            .trim()
            .to_owned()
    }

    /// What the server logged so far.
    pub fn log_text(&self) -> String {
        self.service.log.text()
    }

    /// Triggers the shutdown and waits until the server has drained and returned cleanly.
    pub async fn stop(mut self) {
        self.service.stop().await;
    }
}

/// `swp-auth` running in this process, with an identity issued from a server's CA.
pub struct SwpAuth {
    /// `https://127.0.0.1:PORT`, what a server's `swp.url` names.
    pub url: String,
    listener: Option<tokio::net::TcpListener>,
    service: Service,
    dir: tempfile::TempDir,
}

impl SwpAuth {
    /// Binds swp-auth's port, so a server can be configured with its URL before swp-auth has an
    /// identity from that server's CA; [`SwpAuth::start`] serves it.
    pub fn bind() -> SwpAuth {
        let service = Service::new("swp-auth");
        let listener = {
            let _rt = service.runtime().enter();
            ums_service::listen(([127, 0, 0, 1], 0).into()).expect("bind swp-auth")
        };
        let url = format!("https://{}", listener.local_addr().expect("local address"));
        SwpAuth {
            url,
            listener: Some(listener),
            service,
            dir: tempfile::tempdir().expect("swp-auth dir"),
        }
    }

    /// Issues swp-auth's identity from `server`'s CA, as joining the network would, and serves.
    pub fn start(mut self, server: &TestServer) -> SwpAuth {
        let identity_dir = self.dir.path().join("identity");
        ums_testkit::ldap::issue_swp_auth_identity(
            &server.data_dir.join("tls"),
            "swp-auth-test",
            &identity_dir,
        )
        .expect("issue the swp-auth identity");
        let identity = ums_tls::NodeIdentity::load(&identity_dir).expect("load the identity");
        let mut cfg = swp_auth::SwpAuthConfig::default();
        cfg.network.identity_dir = identity_dir;
        let cfg = cfg.validate().expect("valid swp-auth configuration");
        let internal = self.listener.take().expect("swp-auth started once");
        self.service.spawn(move |shutdown| async move {
            swp_auth::run(
                &cfg,
                identity,
                swp_auth::Listeners {
                    internal,
                    metrics: None,
                },
                signalled(shutdown),
            )
            .await
        });
        self
    }

    pub fn log_text(&self) -> String {
        self.service.log.text()
    }

    /// Triggers the shutdown and waits until swp-auth has returned cleanly; its port is closed.
    pub async fn stop(&mut self) {
        self.service.stop().await;
    }
}

/// Profile parameters from `key=value` pairs, as `umsctl profiles create NAME KEY=VALUE...`
/// takes them.
pub fn params(pairs: &[&str]) -> Vec<pb::Param> {
    pairs
        .iter()
        .map(|p| {
            let (key, value) = p.split_once('=').expect("key=value");
            pb::Param {
                key: key.to_owned(),
                value: value.to_owned(),
            }
        })
        .collect()
}

/// Creates a profile; returns its id.
pub async fn profile(admin: &mut Admin, name: &str, pairs: &[&str], priority: bool) -> i64 {
    admin
        .create_profile(pb::CreateProfileRequest {
            name: name.to_owned(),
            description: String::new(),
            priority,
            params: params(pairs),
        })
        .await
        .unwrap_or_else(|e| panic!("create profile {name}: {e:?}"))
        .into_inner()
        .id
}

/// Creates a folder; returns its id.
pub async fn folder(admin: &mut Admin, name: &str, parent_id: Option<i64>) -> i64 {
    admin
        .create_folder(pb::CreateFolderRequest {
            name: name.to_owned(),
            parent_id,
        })
        .await
        .unwrap_or_else(|e| panic!("create folder {name}: {e:?}"))
        .into_inner()
        .id
}

/// Assigns a profile to a device or a folder.
pub async fn assign(
    admin: &mut Admin,
    profile_id: i64,
    device_id: Option<i64>,
    folder_id: Option<i64>,
) {
    admin
        .assign(pb::AssignRequest {
            profile_id,
            device_id,
            folder_id,
        })
        .await
        .unwrap_or_else(|e| panic!("assign profile {profile_id}: {e:?}"));
}

/// Moves a device into a folder.
pub async fn move_device(admin: &mut Admin, id: i64, folder_id: i64) {
    admin
        .update_device(pb::UpdateDeviceRequest {
            id,
            name: None,
            folder_id: Some(folder_id),
            clear_folder: false,
        })
        .await
        .unwrap_or_else(|e| panic!("move device {id}: {e:?}"));
}
