//! Ports for test servers and waiting until one accepts connections.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::bail;

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is released before returning, so a racing process may take it. It is picked below
/// the kernel's ephemeral range (where `bind(0)` and the source ports of outgoing connections
/// come from: a test that opens a thousand connections would otherwise take the port meant for a
/// server), at random, never twice in one process.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    const LOW: u16 = 15_000;
    const HIGH: u16 = 32_000;
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().wrapping_mul(2_654_435_761);
    let span = u32::from(HIGH - LOW);
    for i in 0..span {
        let port = LOW + ((seed.wrapping_add(i.wrapping_mul(7_919))) % span) as u16;
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("could not bind an ephemeral port on 127.0.0.1")
}

/// Waits until `addr` accepts TCP connections, polling every 50 ms.
pub fn wait_for_tcp(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let attempt = remaining.clamp(Duration::from_millis(10), Duration::from_millis(500));
        let err = match TcpStream::connect_timeout(&addr, attempt) {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            bail!("{addr} did not accept connections within {timeout:?}: {err}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TCP forwarder on 127.0.0.1 whose target can be switched, as a Kubernetes Service or a
/// virtual IP follows a database's primary: after [`TcpSwitch::set_target`], new connections
/// go to the new target and the ones open to the old target are cut.
///
/// It also injects the faults of a network between two components: added latency on every
/// forwarded chunk ([`TcpSwitch::set_latency`]), every open connection reset at once
/// ([`TcpSwitch::reset`]), and a half-open path ([`TcpSwitch::set_half_open`]) where
/// connections stay established but nothing gets through in either direction.
pub struct TcpSwitch {
    addr: SocketAddr,
    state: std::sync::Arc<std::sync::Mutex<SwitchState>>,
    faults: std::sync::Arc<Faults>,
}

struct SwitchState {
    target: SocketAddr,
    /// Bumped by every switch; a connection of an older generation is closed.
    generation: u64,
    open: Vec<Conn>,
}

/// An open forwarded connection: both sockets (clones of the pipes' ones) and whether it is
/// being reset, so the pipes close it without a FIN.
struct Conn {
    client: TcpStream,
    upstream: TcpStream,
    abort: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Conn {
    /// Ends the connection: with `reset`, with a TCP RST on both sides (linger 0, no FIN).
    fn cut(&self, reset: bool) {
        use std::sync::atomic::Ordering;
        if reset {
            self.abort.store(true, Ordering::SeqCst);
            for s in [&self.client, &self.upstream] {
                let _ = nix::sys::socket::setsockopt(
                    s,
                    nix::sys::socket::sockopt::Linger,
                    &nix::libc::linger {
                        l_onoff: 1,
                        l_linger: 0,
                    },
                );
                // Wakes the pipe reading from it; the last close then sends the reset.
                let _ = s.shutdown(std::net::Shutdown::Read);
            }
        } else {
            let _ = self.client.shutdown(std::net::Shutdown::Both);
            let _ = self.upstream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The faults applied to every forwarded chunk.
#[derive(Default)]
struct Faults {
    latency_us: std::sync::atomic::AtomicU64,
    half_open: std::sync::atomic::AtomicBool,
}

impl TcpSwitch {
    /// Listens on a free port of 127.0.0.1, forwarding to `target`.
    pub fn start(target: SocketAddr) -> anyhow::Result<TcpSwitch> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, free_port())), target)
    }

    /// Listens on `listen`, forwarding to `target`.
    pub fn start_on(listen: SocketAddr, target: SocketAddr) -> anyhow::Result<TcpSwitch> {
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(SwitchState {
            target,
            generation: 0,
            open: Vec::new(),
        }));
        let faults = Arc::new(Faults::default());
        let (shared, shared_faults) = (state.clone(), faults.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let (target, generation) = {
                    let s = shared.lock().unwrap_or_else(|p| p.into_inner());
                    (s.target, s.generation)
                };
                let Ok(upstream) = TcpStream::connect_timeout(&target, Duration::from_secs(2))
                else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let (Ok(c2), Ok(u2), Ok(keep_c), Ok(keep_u)) = (
                    client.try_clone(),
                    upstream.try_clone(),
                    client.try_clone(),
                    upstream.try_clone(),
                ) else {
                    continue;
                };
                let abort = Arc::new(std::sync::atomic::AtomicBool::new(false));
                {
                    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                    if s.generation != generation {
                        continue;
                    }
                    // Forget the connections that have ended.
                    s.open.retain(|c| c.client.peer_addr().is_ok());
                    s.open.push(Conn {
                        client: keep_c,
                        upstream: keep_u,
                        abort: abort.clone(),
                    });
                }
                let (f1, f2, a2) = (shared_faults.clone(), shared_faults.clone(), abort.clone());
                std::thread::spawn(move || pipe(client, u2, &f1, &abort));
                std::thread::spawn(move || pipe(upstream, c2, &f2, &a2));
            }
        });
        Ok(TcpSwitch {
            addr,
            state,
            faults,
        })
    }

    /// The address to give clients.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Sends new connections to `target` and cuts the open ones.
    pub fn set_target(&self, target: SocketAddr) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.target = target;
        s.generation += 1;
        for c in s.open.drain(..) {
            c.cut(false);
        }
    }

    /// Delays every forwarded chunk, in both directions, by `latency` (zero: none).
    pub fn set_latency(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.faults
            .latency_us
            .store(us, std::sync::atomic::Ordering::SeqCst);
    }

    /// Resets every open connection (a TCP RST to both sides, as a firewall or a crashed
    /// middlebox sends), mid-transfer if data is flowing; new connections are forwarded as
    /// before. Returns how many were reset.
    pub fn reset(&self) -> usize {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let n = s.open.len();
        for c in s.open.drain(..) {
            c.cut(true);
        }
        n
    }

    /// With `true`, the path goes half-open: connections stay established (and new ones are
    /// accepted) but no byte gets through in either direction, as when a peer's host vanishes
    /// without a reset. With `false`, traffic flows again; the connections that lost bytes
    /// meanwhile are reset, since their streams are broken.
    pub fn set_half_open(&self, on: bool) {
        let was = self
            .faults
            .half_open
            .swap(on, std::sync::atomic::Ordering::SeqCst);
        if was && !on {
            self.reset();
        }
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.open.retain(|c| c.client.peer_addr().is_ok());
        s.open.len()
    }
}

/// Copies `from` to `to` until either side closes, then closes both; each chunk waits for the
/// latency fault, and is dropped while the path is half-open. An aborted connection is left for
/// the last close to reset.
fn pipe(
    mut from: TcpStream,
    mut to: TcpStream,
    faults: &Faults,
    abort: &std::sync::atomic::AtomicBool,
) {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if faults.half_open.load(Ordering::SeqCst) {
            continue;
        }
        let latency = faults.latency_us.load(Ordering::SeqCst);
        if latency > 0 {
            std::thread::sleep(Duration::from_micros(latency));
        }
        if abort.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    if !abort.load(Ordering::SeqCst) {
        let _ = to.shutdown(std::net::Shutdown::Both);
        let _ = from.shutdown(std::net::Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_bindable_and_outside_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let unique: std::collections::HashSet<_> = ports.iter().collect();
        assert_eq!(unique.len(), ports.len());
        for p in ports {
            assert!(p < 32_768, "{p}");
            TcpListener::bind((Ipv4Addr::LOCALHOST, p)).expect("bindable");
        }
    }

    #[test]
    fn wait_for_tcp_times_out_and_succeeds() -> anyhow::Result<()> {
        let closed = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        assert!(wait_for_tcp(closed, Duration::from_millis(200)).is_err());
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        wait_for_tcp(listener.local_addr()?, Duration::from_secs(2))?;
        Ok(())
    }
}
