//! The faults of a chaos run, their schedule (drawn from the seed) and how each is injected and
//! waited out.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ums_testkit::{Postgres, TcpSwitch};

use super::{Cluster, LEASE, Proc, Rng, wait_for};

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 of a server; its watchdog restarts it.
    KillServer,
    /// kill -9 of a broker; its watchdog restarts it, devices move to the other broker.
    KillBroker,
    /// kill -9 of a watchdog (its children get SIGTERM from the kernel); restarted as systemd
    /// would.
    KillWatchdog,
    /// kill -9 of swp-auth; its watchdog restarts it.
    KillSwpAuth,
    /// SIGSTOP of the scheduler's holder for longer than the lease, then SIGCONT: the lease
    /// moves, and the old holder must stand down rather than write with its old fence.
    PauseScheduler,
    /// PostgreSQL stopped (fast: every client cut) and started again.
    RestartPostgres,
    /// Every connection between the servers and PostgreSQL reset mid-transfer.
    ResetDatabase,
    /// The servers' path to PostgreSQL half-open for 3 s: connections stay up, nothing passes.
    HalfOpenDatabase,
    /// 150 ms added to every chunk between the servers and PostgreSQL for 5 s.
    SlowDatabase,
    /// Every device connection through the first broker's forwarder reset, downloads
    /// mid-transfer.
    ResetDevices,
}

const ALL: [Fault; 10] = [
    Fault::KillServer,
    Fault::KillBroker,
    Fault::KillWatchdog,
    Fault::KillSwpAuth,
    Fault::PauseScheduler,
    Fault::RestartPostgres,
    Fault::ResetDatabase,
    Fault::HalfOpenDatabase,
    Fault::SlowDatabase,
    Fault::ResetDevices,
];

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillServer => "kill -9 server",
            Fault::KillBroker => "kill -9 broker",
            Fault::KillWatchdog => "kill -9 watchdog",
            Fault::KillSwpAuth => "kill -9 swp-auth",
            Fault::PauseScheduler => "SIGSTOP scheduler holder",
            Fault::RestartPostgres => "postgresql restart",
            Fault::ResetDatabase => "database connections reset",
            Fault::HalfOpenDatabase => "database path half-open",
            Fault::SlowDatabase => "database latency",
            Fault::ResetDevices => "device connections reset",
        }
    }
}

/// Seconds of load before the first fault and after the last.
const WARMUP: Duration = Duration::from_secs(6);
const COOLDOWN: Duration = Duration::from_secs(8);

/// When each fault comes, from the start of the load: every kind once, in an order drawn from
/// the seed, one about every 10 s (at least 8 s apart); a shorter run takes the first ones, a
/// longer one goes round again.
pub fn schedule(seed: u64, duration_s: u64) -> Vec<(Duration, Fault)> {
    let span = Duration::from_secs(duration_s).saturating_sub(WARMUP + COOLDOWN);
    let gap = Duration::from_secs(10);
    let n = (span.as_secs() / gap.as_secs().max(1)).max(1) as usize;
    let gap = if n > 1 {
        (span / n as u32).max(Duration::from_secs(8))
    } else {
        gap
    };
    let mut rng = Rng::new(seed);
    let mut order = Vec::new();
    while order.len() < n {
        let mut kinds = ALL.to_vec();
        // Fisher-Yates.
        for i in (1..kinds.len()).rev() {
            kinds.swap(i, rng.below(i + 1));
        }
        order.extend(kinds);
    }
    order
        .into_iter()
        .take(n)
        .enumerate()
        .map(|(i, f)| (WARMUP + gap * i as u32, f))
        .collect()
}

/// What one fault did.
pub struct Record {
    pub at_s: f64,
    pub kind: &'static str,
    pub detail: String,
    /// Until the faulted component ran and accepted connections again.
    pub back_s: Option<f64>,
    /// False when the component did not come back or a check of the fault failed.
    pub ok: bool,
}

pub struct Injector<'a> {
    pub cluster: &'a mut Cluster,
    pub pg: &'a Postgres,
    pub db_proxy: &'a TcpSwitch,
    pub device_proxy: &'a TcpSwitch,
    pub rng: Rng,
}

/// How long a component may take to come back.
const BACK_WITHIN: Duration = Duration::from_secs(45);

impl Injector<'_> {
    pub fn inject(&mut self, fault: Fault, started: Instant) -> Record {
        let at = Instant::now();
        let at_s = at.duration_since(started).as_secs_f64();
        let (detail, back, ok) = match self.run(fault) {
            Ok((detail, back)) => {
                let ok = back.is_some() || !needs_back(fault);
                (detail, back, ok)
            }
            Err(e) => (format!("{e:#}"), None, false),
        };
        Record {
            at_s,
            kind: fault.name(),
            detail,
            back_s: back.map(|b| b.as_secs_f64()),
            ok,
        }
    }

    /// Injects `fault`; a description, and how long the component took to come back.
    fn run(&mut self, fault: Fault) -> anyhow::Result<(String, Option<Duration>)> {
        let c = &mut *self.cluster;
        match fault {
            Fault::KillServer | Fault::KillBroker | Fault::KillSwpAuth => {
                let what = match fault {
                    Fault::KillServer => Proc::Server,
                    Fault::KillBroker => Proc::Broker,
                    _ => Proc::SwpAuth,
                };
                let candidates: Vec<usize> = (0..c.nodes.len())
                    .filter(|i| c.procs(*i).contains(&what))
                    .collect();
                let i = candidates[self.rng.below(candidates.len())];
                let pid = c.pid(i, what).ok_or_else(|| {
                    anyhow::anyhow!("{} of node {} not running", what.binary(), c.nodes[i].n)
                })?;
                let t = Instant::now();
                kill(Pid::from_raw(pid), Signal::SIGKILL)?;
                let back =
                    wait_for(BACK_WITHIN, || c.is_up(i, what, Some(pid))).map(|_| t.elapsed());
                Ok((
                    format!("node {} {} (pid {pid})", c.nodes[i].n, what.binary()),
                    back,
                ))
            }
            Fault::KillWatchdog => {
                let i = self.rng.below(c.nodes.len());
                let child = c.watchdogs[i]
                    .as_mut()
                    .ok_or_else(|| anyhow::anyhow!("no watchdog on node {}", c.nodes[i].n))?;
                let pid = child.id();
                let t = Instant::now();
                child.kill()?;
                let _ = child.wait();
                // Its children stop on the kernel's SIGTERM; what outlives the stop timeout
                // is killed, as systemd's KillMode=mixed does, before the restart.
                let procs = c.procs(i);
                let olds: Vec<i32> = procs.iter().filter_map(|p| c.pid(i, *p)).collect();
                let gone = wait_for(Duration::from_secs(15), || {
                    procs.iter().all(|p| c.pid(i, *p).is_none())
                });
                if gone.is_none() {
                    for p in &olds {
                        let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
                    }
                }
                c.start_watchdog(i)?;
                let back = wait_for(BACK_WITHIN, || procs.iter().all(|p| c.is_up(i, *p, None)))
                    .map(|_| t.elapsed());
                Ok((
                    format!(
                        "node {} ums-watchdog (pid {pid}), restarted with its children",
                        c.nodes[i].n
                    ),
                    back,
                ))
            }
            Fault::PauseScheduler => {
                let (holder, fence) = super::audit::lease(self.pg)?
                    .ok_or_else(|| anyhow::anyhow!("no server holds the scheduler lease"))?;
                let i = (0..c.nodes.len())
                    .find(|i| {
                        std::fs::read_to_string(c.nodes[*i].server_dir().join("server-id"))
                            .is_ok_and(|id| id.trim() == holder)
                    })
                    .ok_or_else(|| {
                        anyhow::anyhow!("the holder {holder} is none of the run's servers")
                    })?;
                let pid = c.pid(i, Proc::Server).ok_or_else(|| {
                    anyhow::anyhow!("server of node {} not running", c.nodes[i].n)
                })?;
                let log_before = std::fs::metadata(c.nodes[i].log())
                    .map(|m| m.len())
                    .unwrap_or(0);
                let pause = LEASE + Duration::from_secs(3);
                kill(Pid::from_raw(pid), Signal::SIGSTOP)?;
                std::thread::sleep(pause);
                let during = super::audit::lease(self.pg)?;
                kill(Pid::from_raw(pid), Signal::SIGCONT)?;
                let t = Instant::now();
                let moved = during
                    .as_ref()
                    .is_some_and(|(h, f)| *h != holder && *f > fence);
                // The resumed server learns at its next renewal that the lease is gone and
                // stops acting as the scheduler; its sweep is fenced by the token anyway.
                let stood_down = wait_for(Duration::from_secs(10), || {
                    new_log(&c.nodes[i].log(), log_before).is_some_and(|t| {
                        t.contains("no longer runs the network scheduler")
                            || t.contains("the lease moved to another server")
                    })
                });
                let back =
                    wait_for(BACK_WITHIN, || c.is_up(i, Proc::Server, None)).map(|_| t.elapsed());
                let detail = format!(
                    "node {} server {holder} (pid {pid}, fence {fence}) stopped {:.0} s; lease then {}; {}",
                    c.nodes[i].n,
                    pause.as_secs_f64(),
                    match &during {
                        Some((h, f)) => format!("held by {h} with fence {f}"),
                        None => "held by nobody".to_owned(),
                    },
                    if stood_down.is_some() {
                        "the resumed server stood down"
                    } else {
                        "the resumed server did not say it stood down"
                    }
                );
                if !moved || stood_down.is_none() {
                    anyhow::bail!("{detail}");
                }
                Ok((detail, back))
            }
            Fault::RestartPostgres => {
                let t = Instant::now();
                self.pg.stop_now()?;
                self.pg.resume()?;
                let up = t.elapsed();
                Ok((
                    format!("down and up again in {:.2} s", up.as_secs_f64()),
                    Some(up),
                ))
            }
            Fault::ResetDatabase => {
                let n = self.db_proxy.reset();
                Ok((format!("{n} connections reset"), None))
            }
            Fault::HalfOpenDatabase => {
                let open = self.db_proxy.open_connections();
                self.db_proxy.set_half_open(true);
                std::thread::sleep(Duration::from_secs(3));
                self.db_proxy.set_half_open(false);
                Ok((
                    format!("{open} connections black-holed for 3 s, then reset"),
                    None,
                ))
            }
            Fault::SlowDatabase => {
                self.db_proxy.set_latency(Duration::from_millis(150));
                std::thread::sleep(Duration::from_secs(5));
                self.db_proxy.set_latency(Duration::ZERO);
                Ok(("150 ms per chunk for 5 s".to_owned(), None))
            }
            Fault::ResetDevices => {
                let n = self.device_proxy.reset();
                Ok((format!("{n} device connections reset"), None))
            }
        }
    }
}

/// Whether the fault takes a component down that must come back.
fn needs_back(fault: Fault) -> bool {
    matches!(
        fault,
        Fault::KillServer
            | Fault::KillBroker
            | Fault::KillWatchdog
            | Fault::KillSwpAuth
            | Fault::PauseScheduler
            | Fault::RestartPostgres
    )
}

/// What a log gained after `offset`.
fn new_log(path: &std::path::Path, offset: u64) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let from = usize::try_from(offset).ok()?.min(bytes.len());
    Some(String::from_utf8_lossy(&bytes[from..]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_two_minute_schedule_has_every_fault_once_and_follows_the_seed() {
        let s = schedule(7, 120);
        assert_eq!(s.len(), ALL.len());
        for f in ALL {
            assert_eq!(s.iter().filter(|(_, g)| *g == f).count(), 1, "{f:?}");
        }
        assert!(
            s.windows(2)
                .all(|w| w[1].0 >= w[0].0 + Duration::from_secs(8))
        );
        assert!(
            s.last()
                .is_some_and(|(at, _)| *at + COOLDOWN <= Duration::from_secs(120))
        );
        assert_eq!(
            schedule(7, 120).iter().map(|x| x.1).collect::<Vec<_>>(),
            s.iter().map(|x| x.1).collect::<Vec<_>>()
        );
        assert_ne!(
            schedule(8, 120).iter().map(|x| x.1).collect::<Vec<_>>(),
            s.iter().map(|x| x.1).collect::<Vec<_>>()
        );
        assert_eq!(schedule(7, 35).len(), 2);
    }
}
