//! The gRPC service `ums.swp.v1.SwpAuthService` on the internal port, over mutual TLS: the
//! caller's certificate must be signed by the network CA and name a server.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use ums_proto::swp::v1 as pb;
use ums_proto::swp::v1::swp_auth_service_server::{SwpAuthService, SwpAuthServiceServer};
use ums_service::{Peer, ServeOptions};
use ums_tls::{ComponentKind, NodeIdentity};

use std::time::Instant;

use ums_service::metrics::{CounterVec, HistogramVec, LATENCY_BUCKETS};

use crate::{AuthError, Authenticator, Config, user_pb};

/// The sockets `swp-auth` serves on.
pub struct Listeners {
    pub internal: TcpListener,
    /// Plain HTTP for `/metrics`, when configured.
    pub metrics: Option<TcpListener>,
}

/// The service behind the internal port.
pub struct SwpAuthApi {
    pub auth: Arc<Authenticator>,
    pub metrics: Arc<Metrics>,
}

/// What `/metrics` shows: calls by method and outcome, and their latency.
pub struct Metrics {
    pub requests: CounterVec,
    pub seconds: HistogramVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: CounterVec::new(
                "ums_swp_auth_requests_total",
                "Calls from servers by method (authenticate, lookup) and outcome (ok, or the gRPC code name of the refusal).",
                &["method", "outcome"],
            ),
            seconds: HistogramVec::new(
                "ums_swp_auth_request_duration_seconds",
                "Time to answer a call, directory included.",
                &["method"],
                LATENCY_BUCKETS,
            ),
        }
    }
}

impl Metrics {
    fn record<T>(&self, method: &str, start: Instant, out: &Result<T, AuthError>) {
        let outcome = match out {
            Ok(_) => "ok",
            Err(AuthError::WrongCredentials) => "wrong_credentials",
            Err(AuthError::Refused(_)) => "refused",
            Err(AuthError::Invalid(_)) => "invalid",
            Err(AuthError::NotFound(_)) => "not_found",
            Err(AuthError::Unavailable(_)) => "unavailable",
            Err(AuthError::Config(_)) => "config",
            Err(AuthError::RateLimited(_)) => "rate_limited",
        };
        self.requests.inc(&[method, outcome]);
        self.seconds
            .observe(&[method], start.elapsed().as_secs_f64());
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        self.requests.render(&mut out);
        self.seconds.render(&mut out);
        out
    }
}

/// Only servers may ask: a broker or watchdog of the same network has no business with user
/// passwords.
fn require_server<T>(req: &Request<T>) -> Result<(), Status> {
    match req.extensions().get::<Peer>() {
        Some(p) if p.kind == ComponentKind::Server => Ok(()),
        Some(p) => {
            tracing::warn!(kind = %p.kind, id = %p.id, "refused a caller that is not a server");
            Err(Status::permission_denied(format!(
                "only servers may call swp-auth, not a {}",
                p.kind
            )))
        }
        None => Err(Status::unauthenticated(
            "a node certificate of the network is required",
        )),
    }
}

#[tonic::async_trait]
impl SwpAuthService for SwpAuthApi {
    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        require_server(&request)?;
        let r = request.into_inner();
        let start = Instant::now();
        let out = self.auth.authenticate(&r).await;
        self.metrics.record("authenticate", start, &out);
        let user = out?;
        tracing::debug!(user = %user.login, device_id = r.device_id, "user authenticated");
        Ok(Response::new(user_pb(user)))
    }

    async fn lookup_user(
        &self,
        request: Request<pb::LookupUserRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        require_server(&request)?;
        let start = Instant::now();
        let out = self.auth.lookup(&request.into_inner()).await;
        self.metrics.record("lookup", start, &out);
        let user = out?;
        Ok(Response::new(user_pb(user)))
    }
}

/// Serves the internal API until `shutdown` resolves, then drains calls in flight.
pub async fn run(
    cfg: &Config,
    identity: NodeIdentity,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    ums_tls::install_crypto_provider();
    if identity.kind != ComponentKind::SwpAuth {
        anyhow::bail!(
            "the identity in {} is a {} certificate, not swp-auth's",
            cfg.network.identity_dir.display(),
            identity.kind
        );
    }
    let tls = identity.mtls_server_config(&[b"h2"])?;
    let metrics = Arc::new(Metrics::default());
    let api = SwpAuthApi {
        auth: Authenticator::new(cfg),
        metrics: metrics.clone(),
    };
    let (stop_metrics, stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(l) = listeners.metrics {
        ums_service::metrics::spawn(l, Arc::new(move || metrics.render()), async move {
            let _ = stopped.await;
        });
    }
    let router = tonic::service::Routes::new(SwpAuthServiceServer::new(api))
        .add_service(ums_network::diagnostics::service(
            &identity.id,
            ums_tls::ComponentKind::SwpAuth,
            env!("CARGO_PKG_VERSION"),
        ))
        .into_axum_router();
    let port = listeners.internal.local_addr()?.port();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let beat = tokio::spawn(crate::heartbeat::run(
        cfg.network.clone(),
        identity,
        port,
        stop_rx,
    ));
    // The heartbeat that says "stopped" goes out while calls in flight drain.
    let shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    ums_service::serve_tls(
        "internal",
        listeners.internal,
        tls,
        router,
        ServeOptions::default(),
        shutdown,
    )
    .await;
    let _ = stop_metrics.send(());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), beat).await;
    tracing::info!("stopped");
    Ok(())
}
