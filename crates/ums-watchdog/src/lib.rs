//! `ums-watchdog`: one per node. It starts the node's server and broker as child processes,
//! restarts one that crashes, stops and starts them when a server asks (over mutual TLS), and
//! reports them to the servers for the process registry.
//!
//! Supervision needs nothing from the network: the children run from the first second, and the
//! internal API and heartbeats begin once the watchdog has its identity (from its data
//! directory, or by joining with the network token, which first needs a server to answer).
//!
//! The caller binds the internal listener and owns the shutdown future ([`run`]), so tests run a
//! watchdog on port 0.

pub mod api;
pub mod config;
pub mod heartbeat;
pub mod notify;
mod pdeathsig;
pub mod reexec;
pub mod release;
pub mod supervisor;
#[cfg(test)]
mod tests;
pub mod updater;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use ums_proto::network::v1 as pb;
use ums_proto::network::v1::watchdog_service_server::WatchdogServiceServer;
use ums_service::ServeOptions;
use ums_tls::{ComponentKind, NodeIdentity};

pub use config::{Config, WatchdogConfig};
pub use supervisor::StopOutcome;

use supervisor::{ChildHandle, ChildSpec};

/// The watchdog and its children, as the API and the heartbeats describe them.
pub struct Node {
    pub id: String,
    pub host: String,
    pub internal_port: u16,
    pub started_at_ms: i64,
    fingerprint: OnceLock<String>,
    /// In start order: server, broker.
    children: Vec<ChildHandle>,
}

impl Node {
    /// The child named by `process`: its registry id, its configured id, or its kind
    /// (`server`, `broker`).
    pub fn find(&self, process: &str) -> Option<&ChildHandle> {
        self.children
            .iter()
            .find(|c| c.registry_id() == process || c.id == process)
            .or_else(|| self.children.iter().find(|c| c.kind.as_str() == process))
    }

    pub fn children(&self) -> &[ChildHandle] {
        &self.children
    }

    pub fn child_names(&self) -> String {
        let names: Vec<&str> = self.children.iter().map(|c| c.id.as_str()).collect();
        if names.is_empty() {
            "nothing".into()
        } else {
            names.join(", ")
        }
    }

    pub fn watchdog_info(&self, status: &str) -> pb::ProcessInfo {
        pb::ProcessInfo {
            id: self.id.clone(),
            kind: ComponentKind::Watchdog.as_str().into(),
            host: self.host.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            internal_port: u32::from(self.internal_port),
            status: status.into(),
            mode: "normal".into(),
            clock_ms: supervisor::now_ms(),
            cert_fingerprint: self.fingerprint.get().cloned().unwrap_or_default(),
            pid: std::process::id(),
            started_at_ms: self.started_at_ms,
            ..Default::default()
        }
    }

    pub fn child_info(&self, child: &ChildHandle) -> pb::ProcessInfo {
        let state = child.state();
        pb::ProcessInfo {
            id: state
                .registry_id
                .clone()
                .unwrap_or_else(|| child.id.clone()),
            kind: child.kind.as_str().into(),
            host: self.host.clone(),
            status: state.phase.registry_status().into(),
            mode: "normal".into(),
            clock_ms: supervisor::now_ms(),
            supervisor_id: self.id.clone(),
            pid: state.pid.unwrap_or_default(),
            started_at_ms: state.started_at_ms,
            ..Default::default()
        }
    }

    pub fn children_info(&self) -> Vec<pb::ProcessInfo> {
        self.children.iter().map(|c| self.child_info(c)).collect()
    }

    /// Stops every child in reverse start order (broker first, so it drains while the server
    /// still answers), each within its stop timeout; the worst outcome.
    pub async fn shutdown(&self) -> StopOutcome {
        let mut worst = StopOutcome::NotRunning;
        for child in self.children.iter().rev() {
            let outcome = child.shutdown().await;
            worst = worst.max(outcome);
        }
        worst
    }

    /// Resolves once every child's first start is over (ready, failed or stopped).
    async fn settled(&self) {
        for child in &self.children {
            let mut state = child.subscribe();
            let _ = state.wait_for(|s| s.settled).await;
        }
    }

    /// The children's state in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        use ums_service::metrics::gauge;
        let states: Vec<(String, supervisor::ChildState)> = self
            .children
            .iter()
            .map(|c| (c.id.clone(), c.state()))
            .collect();
        let mut out = String::new();
        let up: Vec<(&str, f64)> = states
            .iter()
            .map(|(id, s)| {
                (
                    id.as_str(),
                    f64::from(u8::from(s.phase == supervisor::Phase::Running)),
                )
            })
            .collect();
        gauge(
            &mut out,
            "ums_watchdog_child_up",
            "1 while the supervised process runs.",
            "process",
            &up,
        );
        let restarts: Vec<(&str, f64)> = states
            .iter()
            .map(|(id, s)| (id.as_str(), s.restarts as f64))
            .collect();
        // A count since the watchdog started, written as a gauge family of counter values.
        let name = "ums_watchdog_child_restarts_total";
        out.push_str(&format!(
            "# HELP {name} Restarts of the supervised process after a crash, since the watchdog started.\n# TYPE {name} counter\n"
        ));
        for (id, v) in restarts {
            out.push_str(&format!(
                "{name}{{process=\"{}\"}} {v}\n",
                ums_service::metrics::escape(id)
            ));
        }
        gauge(
            &mut out,
            "ums_watchdog_child_started_at_seconds",
            "When the supervised process was last started (unix seconds; 0 while none runs).",
            "process",
            &states
                .iter()
                .map(|(id, s)| (id.as_str(), s.started_at_ms as f64 / 1000.0))
                .collect::<Vec<_>>(),
        );
        out
    }

    fn status_line(&self) -> String {
        let parts: Vec<String> = self
            .children
            .iter()
            .map(|c| format!("{} {:?}", c.id, c.state().phase).to_lowercase())
            .collect();
        if parts.is_empty() {
            "supervising nothing".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Runs the watchdog until `shutdown` resolves, then stops the children in order and returns
/// how that went.
pub async fn run(
    cfg: Config,
    internal: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<StopOutcome> {
    Ok(Watchdog::start(cfg, internal)?.run_until(shutdown).await)
}

/// A running watchdog: its children are supervised from [`Watchdog::start`] on.
pub struct Watchdog {
    node: Arc<Node>,
    stop: watch::Sender<bool>,
    reporter: Arc<OnceLock<Arc<heartbeat::Reporter>>>,
    network: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Watchdog {
    /// Starts supervising the children of `cfg` and, once the identity is there, serving the
    /// internal API on `internal`. Call inside a tokio runtime.
    pub fn start(cfg: Config, internal: TcpListener) -> anyhow::Result<Watchdog> {
        Self::start_adopting(cfg, internal, Vec::new())
    }

    /// [`Watchdog::start`], supervising the processes in `adopted` (handed over by the previous
    /// image, see [`reexec`]) instead of starting those children.
    pub fn start_adopting(
        cfg: Config,
        internal: TcpListener,
        mut adopted: Vec<reexec::Adopted>,
    ) -> anyhow::Result<Watchdog> {
        ums_tls::install_crypto_provider();
        let changed = Arc::new(Notify::new());
        let logs_dir = cfg.data_dir.join("logs");
        let mut children: Vec<ChildHandle> = Vec::new();
        for child in &cfg.children {
            let spec = ChildSpec {
                kind: child.kind,
                id: child.id.clone(),
                config: child.config.clone(),
                logs_dir: logs_dir.clone(),
                release_current: cfg.release.as_ref().map(|r| r.dir.join("current")),
            };
            let after = children.last().map(|c| c.subscribe());
            let handed = adopted
                .iter()
                .position(|a| a.id == child.id)
                .map(|i| adopted.swap_remove(i));
            children.push(supervisor::spawn(
                spec,
                cfg.restart.clone(),
                after,
                changed.clone(),
                handed,
            ));
        }
        for a in &adopted {
            tracing::warn!(process = %a.id, pid = a.pid, "handed over but not configured: left alone");
        }
        let node = Arc::new(Node {
            id: cfg.network.id.clone(),
            host: cfg.network.advertise_host.clone(),
            internal_port: internal.local_addr()?.port(),
            started_at_ms: supervisor::now_ms(),
            fingerprint: OnceLock::new(),
            children,
        });
        tracing::info!(id = %node.id, children = %node.child_names(), "watchdog started");

        let (stop, stop_rx) = watch::channel(false);
        let reporter: Arc<OnceLock<Arc<heartbeat::Reporter>>> = Arc::new(OnceLock::new());
        let network = tokio::spawn(network(
            cfg,
            node.clone(),
            internal,
            changed,
            reporter.clone(),
            stop_rx,
        ));
        Ok(Watchdog {
            node,
            stop,
            reporter,
            network,
        })
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Serves `/metrics` on `listener` (plain HTTP) until the watchdog stops.
    pub fn serve_metrics(&self, listener: TcpListener) {
        let node = self.node.clone();
        let mut stop = self.stop.subscribe();
        ums_service::metrics::spawn(
            listener,
            Arc::new(move || node.render_metrics()),
            async move { stopped(&mut stop).await },
        );
    }

    /// Tells systemd when the children have started, waits for `shutdown`, then stops the
    /// children in order (broker first) and returns the worst stop outcome.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> StopOutcome {
        let node = self.node;
        tokio::pin!(shutdown);
        tokio::select! {
            () = node.settled() => {
                tracing::info!(status = %node.status_line(), "children started");
                notify::notify_logged(&format!("READY=1\nSTATUS={}", node.status_line()));
                shutdown.as_mut().await;
            }
            () = shutdown.as_mut() => {}
        }

        notify::notify_logged("STOPPING=1\nSTATUS=stopping the children");
        tracing::info!("stopping the children");
        let _ = self.stop.send(true);
        let outcome = node.shutdown().await;
        if let Some(reporter) = self.reporter.get() {
            // The last heartbeat tells the registry everything here stopped.
            let _ = tokio::time::timeout(Duration::from_secs(2), reporter.report(true)).await;
        }
        match tokio::time::timeout(Duration::from_secs(3), self.network).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %format!("{e:#}"), "internal api"),
            Ok(_) => {}
            Err(_) => tracing::warn!("internal api did not stop in time"),
        }
        tracing::info!(?outcome, "watchdog stopped");
        outcome
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Obtains the identity, then serves the internal API and sends heartbeats until `stop`.
async fn network(
    cfg: Config,
    node: Arc<Node>,
    listener: TcpListener,
    changed: Arc<Notify>,
    reporter_slot: Arc<OnceLock<Arc<heartbeat::Reporter>>>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let identity = tokio::select! {
        id = obtain_identity(&cfg) => id,
        () = stopped(&mut stop) => return Ok(()),
    };
    let Some(identity) = identity else {
        return Ok(());
    };
    let _ = node.fingerprint.set(identity.fingerprint());
    let tls = identity.mtls_server_config(&[b"h2"])?;
    let router = tonic::service::Routes::new(WatchdogServiceServer::new(api::WatchdogApi {
        node: node.clone(),
    }))
    .add_service(ums_network::diagnostics::service(
        &identity.id,
        ums_tls::ComponentKind::Watchdog,
        env!("CARGO_PKG_VERSION"),
    ))
    .into_axum_router();
    tracing::info!(
        addr = %listener.local_addr()?,
        id = %identity.id,
        "internal api: mutual TLS, servers of the network only"
    );
    let mut serve_stop = stop.clone();
    let serve = tokio::spawn(ums_service::serve_tls(
        "internal",
        listener,
        tls,
        router,
        ServeOptions {
            max_handshakes: 16,
            drain_timeout: Duration::from_secs(2),
            ..ServeOptions::default()
        },
        async move { stopped(&mut serve_stop).await },
    ));
    if cfg.network.enabled() {
        let reporter = Arc::new(heartbeat::Reporter::new(
            node.clone(),
            &identity,
            &cfg.network.servers,
        ));
        let _ = reporter_slot.set(reporter.clone());
        if let Some(settings) = cfg.release.clone() {
            let updater =
                updater::Updater::new(node.clone(), &identity, &cfg.network.servers, settings);
            tokio::spawn(updater.run(stop.clone()));
        }
        heartbeat::run(reporter, cfg.network.heartbeat, changed, stop).await;
    }
    let _ = serve.await;
    Ok(())
}

/// The identity: the one in the identity directory, or one obtained by joining with the network
/// token, retried until a server answers (on a new node the local server may still be starting,
/// and on the first node it writes the token file). `None` (with a message) when there is no
/// identity and no token to join with, or the identity is not a watchdog's.
async fn obtain_identity(cfg: &Config) -> Option<NodeIdentity> {
    let mut last_error = String::new();
    let mut delay = Duration::from_millis(500);
    loop {
        match cfg.network.identity().await {
            Ok(identity) => return Some(identity),
            Err(e @ ums_network::MembershipError::NoIdentity { .. }) => {
                tracing::warn!(error = %e, "the internal api and heartbeats are off");
                return None;
            }
            Err(e @ ums_network::MembershipError::WrongKind { .. }) => {
                tracing::error!(error = %e, "the internal api and heartbeats are off");
                return None;
            }
            Err(e) => {
                // Once per distinct error, not every retry.
                let e = e.to_string();
                if e != last_error {
                    tracing::warn!(error = %e, "no network identity yet; retrying");
                    last_error = e;
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}
