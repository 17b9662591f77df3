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
pub struct TcpSwitch {
    port: u16,
    state: std::sync::Arc<std::sync::Mutex<SwitchState>>,
}

struct SwitchState {
    target: SocketAddr,
    /// Bumped by every switch; a connection of an older generation is closed.
    generation: u64,
    open: Vec<(u64, TcpStream)>,
}

impl TcpSwitch {
    /// Listens on a free port, forwarding to `target`.
    pub fn start(target: SocketAddr) -> anyhow::Result<TcpSwitch> {
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, free_port()))?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(Mutex::new(SwitchState {
            target,
            generation: 0,
            open: Vec::new(),
        }));
        let shared = state.clone();
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
                let (Ok(c2), Ok(u2), Ok(keep)) =
                    (client.try_clone(), upstream.try_clone(), client.try_clone())
                else {
                    continue;
                };
                {
                    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                    if s.generation != generation {
                        continue;
                    }
                    s.open.push((generation, keep));
                }
                std::thread::spawn(move || pipe(client, u2));
                std::thread::spawn(move || pipe(upstream, c2));
            }
        });
        Ok(TcpSwitch { port, state })
    }

    /// The address to give clients.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Sends new connections to `target` and cuts the open ones.
    pub fn set_target(&self, target: SocketAddr) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.target = target;
        s.generation += 1;
        for (_, c) in s.open.drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Copies `from` to `to` until either side closes, then closes both.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
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
