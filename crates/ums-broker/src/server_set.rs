//! The servers the broker forwards to, their health and their counters.
//!
//! The set is shared by the accept loop, the health checks and the metrics endpoint, and can be
//! changed at run time ([`ServerSet::add`], [`ServerSet::remove`], [`ServerSet::replace`]), so a
//! future watch stream of the HA network can feed it. Connections already proxied to a removed
//! server keep their [`Backend`] and run to their end.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::TcpStream;

/// One server and its counters.
#[derive(Debug)]
pub struct Backend {
    addr: SocketAddr,
    label: String,
    up: AtomicBool,
    /// Connections proxied now.
    pub(crate) active: AtomicU64,
    /// Connections proxied since start.
    pub(crate) total: AtomicU64,
    /// Connects by devices' connections that failed.
    pub(crate) connect_failures: AtomicU64,
    /// Bytes from devices to the server.
    pub(crate) bytes_up: AtomicU64,
    /// Bytes from the server to devices.
    pub(crate) bytes_down: AtomicU64,
}

impl Backend {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            label: addr.to_string(),
            // Optimistic: a new server takes connections until a check or a connect fails.
            up: AtomicBool::new(true),
            active: AtomicU64::new(0),
            total: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
        }
    }

    /// The server's device address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's name in metrics and logs.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether the server is in the rotation.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Puts the server into the rotation or takes it out; logs a change.
    pub fn set_up(&self, up: bool) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!(server = %self.addr, "server is up, back in the rotation");
            } else {
                tracing::warn!(server = %self.addr, "server is down, out of the rotation");
            }
        }
    }

    /// Connections being proxied to this server now.
    pub fn active_connections(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Connections proxied to this server since start.
    pub fn total_connections(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// The servers of the rotation, in a round-robin order.
#[derive(Debug, Default)]
pub struct ServerSet {
    servers: RwLock<Arc<[Arc<Backend>]>>,
    next: AtomicUsize,
}

impl ServerSet {
    /// A set of the given servers, all taken as up until checked.
    pub fn new(addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        let set = Self::default();
        set.replace(addrs);
        set
    }

    /// The servers now, in configuration order.
    pub fn snapshot(&self) -> Arc<[Arc<Backend>]> {
        match self.servers.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn update(&self, f: impl FnOnce(&[Arc<Backend>]) -> Vec<Arc<Backend>>) {
        let mut guard = match self.servers.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let new = f(&guard);
        *guard = new.into();
    }

    /// Adds a server; returns false when it is in the set already.
    pub fn add(&self, addr: SocketAddr) -> bool {
        let mut added = false;
        self.update(|old| {
            let mut v = old.to_vec();
            if !v.iter().any(|b| b.addr == addr) {
                v.push(Arc::new(Backend::new(addr)));
                added = true;
            }
            v
        });
        if added {
            tracing::info!(server = %addr, "server added");
        }
        added
    }

    /// Removes a server from the rotation; its proxied connections run on. Returns false when it
    /// was not in the set.
    pub fn remove(&self, addr: SocketAddr) -> bool {
        let mut removed = false;
        self.update(|old| {
            let v: Vec<_> = old.iter().filter(|b| b.addr != addr).cloned().collect();
            removed = v.len() != old.len();
            v
        });
        if removed {
            tracing::info!(server = %addr, "server removed");
        }
        removed
    }

    /// Makes the set exactly `addrs`, keeping the state and counters of servers that stay.
    pub fn replace(&self, addrs: impl IntoIterator<Item = SocketAddr>) {
        let addrs: Vec<SocketAddr> = addrs.into_iter().collect();
        self.update(|old| {
            let mut v: Vec<Arc<Backend>> = Vec::with_capacity(addrs.len());
            for addr in addrs {
                if v.iter().any(|b| b.addr == addr) {
                    continue;
                }
                match old.iter().find(|b| b.addr == addr) {
                    Some(b) => v.push(b.clone()),
                    None => v.push(Arc::new(Backend::new(addr))),
                }
            }
            v
        });
    }

    /// The order in which to try servers for one new connection: the servers that are up,
    /// starting at the next in the rotation, then those marked down as a last resort (a check
    /// may be a moment behind a server that came back).
    pub fn candidates(&self) -> Vec<Arc<Backend>> {
        let all = self.snapshot();
        let n = all.len();
        if n == 0 {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let rotated = all[start..].iter().chain(&all[..start]);
        let (up, down): (Vec<_>, Vec<_>) = rotated.cloned().partition(|b| b.is_up());
        let mut out = up;
        out.extend(down);
        out
    }

    /// Connects to the first server of [`ServerSet::candidates`] that accepts within
    /// `timeout`. A server whose connect fails is marked down at once and the next is tried.
    /// `None` when every server failed.
    pub async fn connect(&self, timeout: Duration) -> Option<(Arc<Backend>, TcpStream)> {
        for backend in self.candidates() {
            match tokio::time::timeout(timeout, TcpStream::connect(backend.addr)).await {
                Ok(Ok(stream)) => {
                    backend.set_up(true);
                    return Some((backend, stream));
                }
                Ok(Err(e)) if local_failure(&e) => {
                    // Out of descriptors or memory here: says nothing about the server.
                    tracing::warn!(server = %backend.addr, error = %e, "cannot open a connection to a server");
                    return None;
                }
                Ok(Err(e)) => {
                    tracing::debug!(server = %backend.addr, error = %e, "connect failed, trying the next server");
                }
                Err(_) => {
                    tracing::debug!(server = %backend.addr, "connect timed out, trying the next server");
                }
            }
            backend.connect_failures.fetch_add(1, Ordering::Relaxed);
            backend.set_up(false);
        }
        None
    }

    /// Checks every server with a TCP connect every `interval`, forever: a server that fails
    /// leaves the rotation, one that passes re-enters it.
    pub async fn health_checks(self: Arc<Self>, interval: Duration, timeout: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let mut checks = tokio::task::JoinSet::new();
            for backend in self.snapshot().iter().cloned() {
                checks.spawn(async move {
                    match tokio::time::timeout(timeout, TcpStream::connect(backend.addr)).await {
                        Ok(Ok(_)) => backend.set_up(true),
                        // The check could not even be tried: the server keeps its state.
                        Ok(Err(e)) if local_failure(&e) => {}
                        _ => backend.set_up(false),
                    }
                });
            }
            while checks.join_next().await.is_some() {}
        }
    }
}

/// Whether a failed connect failed for want of a local resource (descriptors, buffers,
/// memory) rather than because of the server.
fn local_failure(e: &std::io::Error) -> bool {
    // Linux: ENOMEM, ENFILE, EMFILE, ENOBUFS.
    matches!(e.raw_os_error(), Some(12 | 23 | 24 | 105))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_is_not_the_servers_fault() {
        assert!(local_failure(&std::io::Error::from_raw_os_error(24)));
        assert!(local_failure(&std::io::Error::from_raw_os_error(23)));
        assert!(!local_failure(&std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused
        )));
        assert!(!local_failure(&std::io::Error::from_raw_os_error(111)));
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn firsts(set: &ServerSet, rounds: usize) -> Vec<u16> {
        (0..rounds)
            .map(|_| set.candidates()[0].addr().port())
            .collect()
    }

    #[test]
    fn round_robin_over_all_servers() {
        let set = ServerSet::new([addr(1), addr(2), addr(3)]);
        assert_eq!(firsts(&set, 6), [1, 2, 3, 1, 2, 3]);
        // Every candidate list holds every server once.
        let mut all: Vec<u16> = set.candidates().iter().map(|b| b.addr().port()).collect();
        all.sort_unstable();
        assert_eq!(all, [1, 2, 3]);
    }

    #[test]
    fn round_robin_skips_down_servers() {
        let set = ServerSet::new([addr(1), addr(2), addr(3)]);
        set.snapshot()[1].set_up(false);
        let picks = firsts(&set, 6);
        assert!(!picks.contains(&2), "{picks:?}");
        assert!(picks.contains(&1) && picks.contains(&3), "{picks:?}");
        // The down server is still tried, last.
        assert_eq!(set.candidates().last().map(|b| b.addr().port()), Some(2));
        // Back up: back in the rotation.
        set.snapshot()[1].set_up(true);
        assert!(firsts(&set, 3).contains(&2));
    }

    #[test]
    fn add_remove_and_replace_keep_counters() {
        let set = ServerSet::new([addr(1)]);
        assert!(set.add(addr(2)));
        assert!(!set.add(addr(2)));
        set.snapshot()[0].total.fetch_add(5, Ordering::Relaxed);
        set.replace([addr(1), addr(3)]);
        let ports: Vec<u16> = set.snapshot().iter().map(|b| b.addr().port()).collect();
        assert_eq!(ports, [1, 3]);
        assert_eq!(set.snapshot()[0].total_connections(), 5);
        assert!(set.remove(addr(1)));
        assert!(!set.remove(addr(1)));
        assert_eq!(set.snapshot().len(), 1);
        assert!(ServerSet::default().candidates().is_empty());
    }

    /// A port nothing listens on: bound, then closed.
    fn dead_port() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    }

    #[tokio::test]
    async fn a_failed_connect_fails_over_to_the_next_server() {
        let live = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let live_addr = live.local_addr().expect("addr");
        let dead = dead_port();
        let set = ServerSet::new([dead, live_addr]);
        for _ in 0..4 {
            let (backend, _stream) = set
                .connect(Duration::from_secs(1))
                .await
                .expect("the live server");
            assert_eq!(backend.addr(), live_addr);
        }
        let dead_backend = set.snapshot()[0].clone();
        assert!(!dead_backend.is_up(), "marked down at the first failure");
        assert!(dead_backend.connect_failures.load(Ordering::Relaxed) >= 1);
        drop(live);
        assert!(set.connect(Duration::from_secs(1)).await.is_none());
    }

    #[tokio::test]
    async fn health_checks_take_servers_out_and_back_in() {
        let live = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let live_addr = live.local_addr().expect("addr");
        let dead = dead_port();
        let set = Arc::new(ServerSet::new([dead, live_addr]));
        let task = tokio::spawn(
            set.clone()
                .health_checks(Duration::from_millis(20), Duration::from_millis(200)),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let snap = set.snapshot();
        assert!(!snap[0].is_up());
        assert!(snap[1].is_up());
        drop(live);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!snap[1].is_up());
        let _back = tokio::net::TcpListener::bind(live_addr)
            .await
            .expect("rebind");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(snap[1].is_up());
        task.abort();
    }
}
