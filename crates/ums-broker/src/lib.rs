//! `ums-broker`: the load balancer devices connect to.
//!
//! It listens on the device port and forwards every device TCP connection to the device port of
//! one server, round robin over the servers that are up ([`ServerSet`]). It works at layer 4: TLS
//! passes through untouched, so devices keep trusting the servers' certificates and their
//! credentials reach the servers. Apart from the server set and counters it keeps no state, so
//! several brokers can front the same servers.
//!
//! * Health: every server gets a TCP connect every `health.interval_ms`; one that fails leaves
//!   the rotation, one that passes re-enters.
//! * Failover: a connect that fails (refused, reset, timeout) marks its server down at once and
//!   the next server is tried, so a new device connection never lands on a dead server.
//! * Drain: on the shutdown future the broker stops accepting and gives proxied connections
//!   `drain_timeout_s` to end.
//! * Limits: connections at once, new connections per second per source address, idle time.
//! * Metrics: Prometheus text at `/metrics` ([`metrics::render`]).
//! * PROXY protocol v2 toward servers when `proxy_protocol` is set ([`proxy_protocol`]).

pub mod config;
mod idle;
mod limits;
pub mod metrics;
pub mod network;
pub mod proxy_protocol;
mod server_set;
mod splice;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::idle::IdleSweeper;
use crate::splice::{Ending, Splice};

pub use config::{BrokerConfig, Config};
pub use limits::RateLimiter;
pub use metrics::BrokerCounters;
pub use server_set::{Backend, ServerSet};

/// Runs the broker over the servers of `config` until `shutdown` resolves, then drains.
///
/// The caller binds the listeners, so tests can run the broker on port 0.
pub async fn run(
    config: &Config,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let servers = Arc::new(ServerSet::new(config.servers.clone()));
    run_with_servers(config, servers, listener, metrics_listener, shutdown).await
}

/// Like [`run`], over a server set the caller keeps and may change while the broker runs
/// (`config.servers` is not read).
pub async fn run_with_servers(
    config: &Config,
    servers: Arc<ServerSet>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let counters = Arc::new(BrokerCounters::default());
    let shared = Arc::new(Shared {
        servers: servers.clone(),
        counters: counters.clone(),
        limiter: RateLimiter::new(config.rate_per_second, config.rate_burst),
        active: AtomicUsize::new(0),
        idle: Notify::new(),
        room: Notify::new(),
        max_connections: connection_cap(config.max_connections, ums_service::open_files_limit()),
        connect_timeout: config.connect_timeout,
        sweeper: config.idle_timeout.map(|t| Arc::new(IdleSweeper::new(t))),
        buffer_size: config.buffer_size,
        proxy_protocol: config.proxy_protocol,
    });

    let mut background = tokio::task::JoinSet::new();
    background.spawn(
        servers
            .clone()
            .health_checks(config.health_interval, config.health_timeout),
    );
    if let Some(sweeper) = &shared.sweeper {
        background.spawn(sweeper.clone().run());
    }
    if shared.limiter.enabled() {
        let shared = shared.clone();
        background.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                shared.limiter.prune(Instant::now());
            }
        });
    }
    if let Some(l) = metrics_listener {
        let addr = l.local_addr()?;
        tracing::info!(%addr, "metrics at http://{addr}/metrics");
        let (servers, counters) = (servers.clone(), counters.clone());
        background.spawn(async move {
            if let Err(e) = metrics::serve(l, servers, counters, std::future::pending()).await {
                tracing::error!(error = %e, "metrics endpoint stopped");
            }
        });
    }

    let addr = listener.local_addr()?;
    let names: Vec<String> = servers
        .snapshot()
        .iter()
        .map(|b| b.label().to_owned())
        .collect();
    tracing::info!(%addr, servers = ?names, "accepting devices");
    if names.is_empty() {
        tracing::warn!("no servers configured: every device connection will be closed");
    }

    tokio::pin!(shutdown);
    'accept: loop {
        // At the cap, stop accepting until a connection ends: new devices wait in the listen
        // queue (and the kernel's SYN retries past it) and are served in turn, instead of
        // being accepted only to be closed and retrying in a storm of their own.
        let mut full = false;
        loop {
            let room = shared.room.notified();
            if shared.active.load(Ordering::Relaxed) < shared.max_connections {
                break;
            }
            if !full {
                full = true;
                counters.full.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    max_connections = shared.max_connections,
                    "max_connections reached: new devices wait in the listen queue until a connection ends"
                );
            }
            tokio::select! {
                biased;
                () = &mut shutdown => break 'accept,
                () = room => {}
            }
        }
        if full {
            tracing::info!("below max_connections again: accepting devices");
        }
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => admit(&shared, stream, peer),
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);

    let open = shared.active.load(Ordering::Relaxed);
    tracing::info!(
        open,
        timeout_s = config.drain_timeout.as_secs(),
        "stopped accepting, draining proxied connections"
    );
    let drained = tokio::time::timeout(config.drain_timeout, async {
        loop {
            let notified = shared.idle.notified();
            if shared.active.load(Ordering::Relaxed) == 0 {
                return;
            }
            notified.await;
        }
    })
    .await;
    match drained {
        Ok(()) => tracing::info!("all connections ended"),
        Err(_) => tracing::warn!(
            open = shared.active.load(Ordering::Relaxed),
            "connections still open after the drain timeout, closing them"
        ),
    }
    background.abort_all();
    Ok(())
}

/// What the accept loop and the connection tasks share.
#[derive(Debug)]
struct Shared {
    servers: Arc<ServerSet>,
    counters: Arc<BrokerCounters>,
    limiter: RateLimiter,
    /// Device connections admitted and not yet ended.
    active: AtomicUsize,
    /// Woken when `active` drops to zero.
    idle: Notify,
    /// Woken when a connection ends while `active` was at `max_connections`.
    room: Notify,
    max_connections: usize,
    connect_timeout: Duration,
    /// The idle timeouts of all connections, when there is one.
    sweeper: Option<Arc<IdleSweeper>>,
    buffer_size: usize,
    proxy_protocol: bool,
}

/// Counts one admitted connection until dropped.
#[derive(Debug)]
struct Admitted(Arc<Shared>);

impl Drop for Admitted {
    fn drop(&mut self) {
        let before = self.0.active.fetch_sub(1, Ordering::Relaxed);
        if before >= self.0.max_connections {
            self.0.room.notify_one();
        }
        if before == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Applies the limits to a new device connection and starts its task.
/// Descriptors kept free of device connections: listeners, health checks, metrics, logs.
const RESERVED_FDS: u64 = 128;

/// The connections the broker holds at most: `configured`, or fewer when the open-files limit
/// would run out first (two descriptors a connection). At the cap the broker stops accepting
/// until a connection ends, instead of failing to accept, or to reach a server, for want of a
/// descriptor.
fn connection_cap(configured: usize, open_files: Option<u64>) -> usize {
    let Some(limit) = open_files else {
        return configured;
    };
    let fit = usize::try_from(limit.saturating_sub(RESERVED_FDS) / 2).unwrap_or(usize::MAX);
    if fit < configured {
        tracing::warn!(
            configured,
            open_files_limit = limit,
            max_connections = fit.max(1),
            "the open-files limit allows fewer connections than max_connections"
        );
    }
    configured.min(fit).max(1)
}

fn admit(shared: &Arc<Shared>, device: TcpStream, peer: SocketAddr) {
    if !shared.limiter.allow(peer.ip(), Instant::now()) {
        shared
            .counters
            .rejected_rate
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, "new connections too fast from this address, closed");
        return;
    }
    if shared.active.fetch_add(1, Ordering::Relaxed) >= shared.max_connections {
        shared.active.fetch_sub(1, Ordering::Relaxed);
        shared
            .counters
            .rejected_limit
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, "max_connections reached, closed");
        return;
    }
    let admitted = Admitted(shared.clone());
    tokio::spawn(Connection::Connecting(Box::pin(open(
        admitted, device, peer,
    ))));
}

/// The task of one device connection.
///
/// The connect runs in a box of its own, freed once connected, so for the connection's life
/// the task holds only the small copy state: 256 bytes with tokio's task header.
enum Connection {
    Connecting(Pin<Box<dyn Future<Output = Option<Splice>> + Send>>),
    Copying(Splice),
}

impl Future for Connection {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match this {
                Connection::Connecting(open) => match ready!(open.as_mut().poll(cx)) {
                    Some(splice) => *this = Connection::Copying(splice),
                    None => return Poll::Ready(()),
                },
                Connection::Copying(splice) => {
                    let ending = ready!(Pin::new(&mut *splice).poll(cx));
                    let server = splice.backend().addr();
                    match ending {
                        Ok(Ending::Closed) => {}
                        Ok(Ending::Idle) => {
                            tracing::debug!(peer = ?splice.peer(), %server, "idle timeout, closed")
                        }
                        Err(e) => tracing::debug!(
                            peer = ?splice.peer(), %server, error = %e,
                            "connection ended with an error"
                        ),
                    }
                    return Poll::Ready(());
                }
            }
        }
    }
}

/// Connects a device to a server (and sends the PROXY header); `None` when that failed.
async fn open(admitted: Admitted, device: TcpStream, peer: SocketAddr) -> Option<Splice> {
    let shared = &*admitted.0;
    let Some((backend, mut server)) = shared.servers.connect(shared.connect_timeout).await else {
        shared.counters.no_server.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%peer, "no server accepted the connection, closed");
        return None;
    };
    let _ = device.set_nodelay(true);
    let _ = server.set_nodelay(true);
    if shared.proxy_protocol {
        let local = match device.local_addr() {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "device connection gone");
                return None;
            }
        };
        let header = proxy_protocol::header_v2(peer, local);
        if let Err(e) = server.write_all(&header).await {
            backend.connect_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(server = %backend.addr(), error = %e, "could not send the proxy header");
            return None;
        }
    }
    Some(Splice::new(admitted, device, server, backend))
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[test]
    fn connections_are_capped_by_the_open_files_limit() {
        // Two descriptors a connection, with room for the listeners and health checks.
        assert_eq!(connection_cap(50_000, Some(20_000)), (20_000 - 128) / 2);
        assert_eq!(connection_cap(100, Some(20_000)), 100);
        assert_eq!(connection_cap(50_000, None), 50_000);
        assert_eq!(connection_cap(50_000, Some(10)), 1);
    }

    /// An echo server that uppercases nothing: it returns what it reads.
    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    fn config(servers: &[SocketAddr]) -> BrokerConfig {
        BrokerConfig {
            servers: servers.iter().map(ToString::to_string).collect(),
            listen: "127.0.0.1:0".into(),
            metrics: config::MetricsConfig {
                listen: String::new(),
            },
            ..BrokerConfig::default()
        }
    }

    async fn start(
        cfg: BrokerConfig,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let cfg = cfg.validate().expect("valid test configuration");
        let task = tokio::spawn(async move {
            run(&cfg, listener, None, async move {
                let _ = rx.await;
            })
            .await
        });
        (addr, tx, task)
    }

    async fn roundtrip(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
        // A closed connection may also show up as a reset: treat it as no answer.
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let mut out = Vec::new();
        if s.write_all(data).await.is_ok() && s.shutdown().await.is_ok() {
            let _ = s.read_to_end(&mut out).await;
        }
        out
    }

    #[tokio::test]
    async fn proxies_bytes_both_ways_and_drains() {
        let echo = echo_server().await;
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr");
        let (addr, stop, task) = start(config(&[dead, echo])).await;
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        for _ in 0..3 {
            assert_eq!(roundtrip(addr, &big).await, big);
        }
        // A connection open across the shutdown keeps flowing; new ones are refused.
        let mut open = TcpStream::connect(addr).await.expect("connect");
        open.write_all(b"ping").await.expect("write");
        let mut four = [0u8; 4];
        open.read_exact(&mut four).await.expect("echo");
        stop.send(()).expect("stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(TcpStream::connect(addr).await.is_err(), "stopped accepting");
        open.write_all(b"pong").await.expect("write");
        open.read_exact(&mut four)
            .await
            .expect("echo after shutdown");
        assert_eq!(&four, b"pong");
        drop(open);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("drained in time")
            .expect("join")
            .expect("run");
    }

    /// A receiver slower than the sender: the broker keeps what it could not pass on, reads
    /// nothing more until it could, and every byte arrives in order.
    #[tokio::test]
    async fn a_slow_receiver_gets_every_byte_in_order() {
        let echo = echo_server().await;
        let (addr, _stop, _task) = start(config(&[echo])).await;
        let s = TcpStream::connect(addr).await.expect("connect");
        let (mut r, mut w) = s.into_split();
        let big: Vec<u8> = (0..8_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = big.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.expect("write");
            w.shutdown().await.expect("shutdown");
        });
        let mut got = Vec::with_capacity(big.len());
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = r.read(&mut chunk).await.expect("read");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
            if got.len() < 2_000_000 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        writer.await.expect("writer");
        assert_eq!(got.len(), big.len());
        assert!(got == big, "bytes differ");
    }

    /// A device that half-closes still gets the server's answer; the byte counters add up.
    #[tokio::test]
    async fn half_close_passes_through_and_bytes_are_counted() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    if s.read_to_end(&mut got).await.is_ok() && !got.is_empty() {
                        // Answer only after the device finished sending.
                        let _ = s.write_all(format!("got {}", got.len()).as_bytes()).await;
                    }
                });
            }
        });
        let servers = Arc::new(ServerSet::new([server]));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cfg = config(&[server]).validate().expect("valid");
        let set = servers.clone();
        let task = tokio::spawn(async move {
            run_with_servers(&cfg, set, listener, None, std::future::pending()).await
        });
        assert_eq!(roundtrip(addr, b"twelve bytes").await, b"got 12");
        let backend = servers.snapshot()[0].clone();
        let counted = async {
            while backend.active_connections() != 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), counted)
            .await
            .expect("connection ended");
        assert_eq!(backend.total_connections(), 1);
        assert_eq!(backend.bytes_up.load(Ordering::Relaxed), 12);
        assert_eq!(backend.bytes_down.load(Ordering::Relaxed), 6);
        task.abort();
    }

    /// What an idle connection costs besides its sockets: the copy state stays small.
    #[test]
    fn the_copy_state_is_small() {
        // tokio adds 104 bytes to the future and rounds the task up to 128 bytes.
        let size = std::mem::size_of::<Connection>();
        assert!(size <= 152, "the connection task's future is {size} bytes");
    }

    #[tokio::test]
    async fn idle_connections_are_closed() {
        let echo = echo_server().await;
        let mut cfg = config(&[echo]);
        cfg.idle_timeout_s = 1;
        let (addr, _stop, _task) = start(cfg).await;
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let started = Instant::now();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("closed before 5 s")
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert!(started.elapsed() >= Duration::from_millis(900));
    }

    #[tokio::test]
    async fn the_rate_limit_closes_and_the_connection_limit_queues_new_connections() {
        let echo = echo_server().await;
        let mut cfg = config(&[echo]);
        cfg.rate.per_second = 1;
        cfg.rate.burst = 2;
        let (addr, _stop, _task) = start(cfg).await;
        assert_eq!(roundtrip(addr, b"a").await, b"a");
        assert_eq!(roundtrip(addr, b"b").await, b"b");
        assert_eq!(roundtrip(addr, b"c").await, b"", "over the rate: closed");

        // At max_connections the next device waits, and is served once a connection ends.
        let mut cfg = config(&[echo]);
        cfg.max_connections = 1;
        let (addr, _stop, _task) = start(cfg).await;
        let mut first = TcpStream::connect(addr).await.expect("connect");
        first.write_all(b"x").await.expect("write");
        let mut one = [0u8; 1];
        first.read_exact(&mut one).await.expect("echo");
        let second = tokio::spawn(roundtrip(addr, b"y"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !second.is_finished(),
            "over the limit: waits while the first is open"
        );
        drop(first);
        let answer = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("served after the first ended")
            .expect("join");
        assert_eq!(answer, b"y");
    }

    #[tokio::test]
    async fn proxy_header_precedes_the_device_bytes() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = l.local_addr().expect("addr");
        let mut cfg = config(&[server]);
        cfg.proxy_protocol = true;
        let (addr, _stop, _task) = start(cfg).await;
        let mut device = TcpStream::connect(addr).await.expect("connect");
        let device_addr = device.local_addr().expect("addr");
        device.write_all(b"hello").await.expect("write");
        device.shutdown().await.expect("shutdown");
        // The health check connects too: take the connection that carries bytes.
        let got = loop {
            let (mut s, _) = l.accept().await.expect("accept");
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got).await;
            if !got.is_empty() {
                break got;
            }
        };
        let header = proxy_protocol::header_v2(device_addr, addr);
        assert_eq!(&got[..header.len()], &header[..]);
        assert_eq!(&got[header.len()..], b"hello");
    }
}
