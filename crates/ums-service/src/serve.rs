//! Serving an axum router (gRPC routes and JSON routes alike) over TLS.
//!
//! The caller binds the listener and owns the shutdown future, so services run on port 0 in
//! tests. Concurrent TLS handshakes are capped: at 08:00 thousands of devices connect at once
//! and unbounded handshakes would starve the requests of connected devices of CPU.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// The component at the other end of a mutual-TLS connection, from its node certificate. Served
/// requests carry it as an extension when the listener's configuration asks for client
/// certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub kind: ums_tls::ComponentKind,
    pub id: String,
    /// Hex sha256 of the peer's certificate.
    pub fingerprint: String,
}

/// The address of the client behind a request: from the PROXY v2 header when the listener reads
/// one, else the TCP peer. Served requests carry it as an extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// Limits of a TLS listener.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Handshakes in progress at once; further connections wait their turn.
    pub max_handshakes: usize,
    /// Time a client gets to complete its handshake.
    pub handshake_timeout: Duration,
    /// Time connections in flight get to finish after shutdown begins.
    pub drain_timeout: Duration,
    /// Every connection starts with a PROXY protocol v2 header (a load balancer stands in
    /// front); the client's address is taken from it.
    pub proxy_protocol: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_handshakes: 256,
            handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            proxy_protocol: false,
        }
    }
}

/// Accepts TLS connections on `listener` and serves `router` over HTTP/1.1 or HTTP/2 (chosen by
/// ALPN) until `shutdown` resolves; then stops accepting and lets connections in flight finish
/// for at most `drain_timeout`.
pub async fn serve_tls(
    name: &'static str,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: axum::Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let handshakes = Arc::new(Semaphore::new(options.max_handshakes.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(v) => v,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let handshakes = handshakes.clone();
        let router = router.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let timeout = options.handshake_timeout;
        let proxy_protocol = options.proxy_protocol;
        tokio::spawn(async move {
            let mut stream = stream;
            let mut client = peer;
            let tls = {
                let Ok(_permit) = handshakes.acquire().await else {
                    return;
                };
                if proxy_protocol {
                    match tokio::time::timeout(timeout, crate::proxy::read_v2(&mut stream)).await {
                        Ok(Ok(addr)) => client = addr.unwrap_or(peer),
                        Ok(Err(e)) => {
                            tracing::debug!(listener = name, %peer, error = %e, "connection refused");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(listener = name, %peer, "no PROXY header in time");
                            return;
                        }
                    }
                }
                match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(listener = name, %peer, error = %e, "tls handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(listener = name, %peer, "tls handshake timed out");
                        return;
                    }
                }
            };
            let peer_identity = tls.get_ref().1.peer_certificates().and_then(|certs| {
                let leaf = certs.first()?;
                let (kind, id) = ums_tls::peer_component(leaf)?;
                Some(Peer {
                    kind,
                    id,
                    fingerprint: ums_tls::der_fingerprint(leaf),
                })
            });
            let service = TowerToHyperService::new(tower::ServiceExt::map_request(
                router,
                move |mut req: http::Request<hyper::body::Incoming>| {
                    if let Some(p) = &peer_identity {
                        req.extensions_mut().insert(p.clone());
                    }
                    req.extensions_mut().insert(ClientAddr(client));
                    req
                },
            ));
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(listener = name, %peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(options.drain_timeout) => {
            tracing::warn!(listener = name, "connections still open after the drain timeout");
        }
    }
}
