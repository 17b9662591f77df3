//! `cargo xtask bench broker`: what `ums-broker` costs in front of a server.
//!
//! One release `ums-server` (SQLite, fresh data directory) takes the same device load three
//! ways: directly, through `ums-broker`, and through HAProxy in TCP mode (installed with apt
//! when missing and running as root; skipped otherwise). Every simulated device opens a new
//! connection, so the load is connection churn. Then 10,000 idle TCP connections are held open
//! through the broker (and through HAProxy) and the proxy's resident memory is read from /proc.
//!
//! The open-files limit of this process is raised before anything starts; the server, the
//! broker and HAProxy inherit it (the broker needs two descriptors per connection).

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use ums_testkit::ChildGuard;

use super::Server;
use crate::util::{self, step};

/// Arguments of `cargo xtask bench broker`.
#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Simulated devices per run; each opens its own connection.
    #[arg(long, default_value_t = 5000)]
    devices: u64,
    /// Concurrent device sessions in the simulator.
    #[arg(long, default_value_t = 128)]
    concurrency: u32,
    /// Idle connections held open for the memory measurement.
    #[arg(long, default_value_t = 10_000)]
    idle_connections: usize,
    /// Only the memory part: skip the device runs (a quick check while working on the broker's
    /// footprint; the full run is the figure to report, since it measures after churn).
    #[arg(long)]
    memory_only: bool,
}

/// A proxy process under test.
pub(super) struct Proxy {
    pub child: ChildGuard,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Proxy {
    fn rss_mb(&self) -> Option<f64> {
        rss_kb(self.child.id()).map(|kb| kb as f64 / 1024.0)
    }
}

/// Runs the broker benchmark.
pub fn run(args: BrokerArgs) -> anyhow::Result<()> {
    let nofile = raise_nofile();
    step!("open-files limit {nofile} (inherited by the server, the broker and haproxy)");
    super::build_release(&["ums-server", "ums-devsim", "ums-broker"])?;
    for bin in ["ums-server", "ums-devsim", "ums-broker"] {
        super::ensure_exists(&super::release_bin(bin))?;
    }
    let haproxy = find_haproxy();
    // The proxy holds two descriptors per connection: stay under the limit.
    let idle_connections = args
        .idle_connections
        .min((nofile.saturating_sub(300) / 2) as usize);
    if idle_connections < args.idle_connections {
        step!(
            "open-files limit {nofile} allows {idle_connections} proxied connections, not {}",
            args.idle_connections
        );
    }

    let server = Server::start(None)?;
    step!("ums-server ready: devices on {}", server.device_url());
    let broker = start_broker(server.device_addr)?;
    step!("ums-broker on {}", broker.addr);
    let haproxy = match haproxy {
        Some(bin) => Some(start_haproxy(&bin, server.device_addr, nofile)?),
        None => None,
    };
    if let Some(h) = &haproxy {
        step!("haproxy on {}", h.addr);
    }

    let mut targets = vec![("direct", server.device_addr), ("ums-broker", broker.addr)];
    if let Some(h) = &haproxy {
        targets.push(("haproxy", h.addr));
    }
    let mut runs = Vec::new();
    if args.memory_only {
        step!("--memory-only: device runs skipped");
        targets.clear();
    }
    for (mode, addr) in &targets {
        step!(
            "{mode}: {} devices, concurrency {}",
            args.devices,
            args.concurrency
        );
        let result = devsim(&server, *addr, mode, &args)?;
        runs.push(json!({ "mode": mode, "addr": addr.to_string(), "result": result }));
    }

    step!(
        "memory: {} idle connections through ums-broker",
        idle_connections
    );
    let broker_idle_mb = broker.rss_mb();
    let broker_mem = hold_idle(&broker, idle_connections)?;
    let haproxy_mem = match &haproxy {
        Some(h) => {
            step!("memory: {idle_connections} idle connections through haproxy");
            Some(hold_idle(h, idle_connections)?)
        }
        None => None,
    };
    server.stop()?;

    let get = |mode: &str, key: &str| -> Option<f64> {
        runs.iter()
            .find(|r| r["mode"] == mode)
            .and_then(|r| r["result"].pointer(key))
            .and_then(Value::as_f64)
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let minus = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a - b);
    let direct_p99 = get("direct", "/total/p99_ms");
    let summary = json!({
        "broker_over_haproxy_ops": ratio(get("ums-broker", "/ops_per_s"), get("haproxy", "/ops_per_s")),
        "broker_over_direct_ops": ratio(get("ums-broker", "/ops_per_s"), get("direct", "/ops_per_s")),
        "broker_p99_added_ms": minus(get("ums-broker", "/total/p99_ms"), direct_p99),
        "haproxy_p99_added_ms": minus(get("haproxy", "/total/p99_ms"), direct_p99),
        "broker_rss_mb_idle": broker_idle_mb,
        "broker_rss_mb_at_connections": broker_mem.get("rss_mb"),
        "broker_rss_mb_at_10k_estimated": broker_mem.get("rss_mb").and_then(Value::as_f64)
            .zip(broker_idle_mb)
            .map(|(at, idle)| idle + (at - idle) * 10_000.0 / idle_connections.max(1) as f64),
        "haproxy_rss_mb_at_connections": haproxy_mem.as_ref().and_then(|m| m.get("rss_mb").cloned()),
    });
    let doc = json!({
        "bench": "broker",
        "at": super::unix_now(),
        "host_cores": super::host_cores(),
        "devices": args.devices,
        "concurrency": args.concurrency,
        "idle_connections": idle_connections,
        "nofile_limit": nofile,
        "haproxy": haproxy.is_some(),
        "runs": runs,
        "memory": { "ums-broker": broker_mem, "haproxy": haproxy_mem },
        "summary": summary,
    });
    let path = super::write_results("broker", &doc)?;

    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|run| {
            let r = &run["result"];
            vec![
                run["mode"].as_str().unwrap_or("?").to_owned(),
                super::fmt_number(r.get("ok"), 0),
                super::fmt_number(r.get("errors"), 0),
                super::fmt_number(r.get("ops_per_s"), 1),
                super::fmt_number(r.pointer("/total/p50_ms"), 2),
                super::fmt_number(r.pointer("/total/p99_ms"), 2),
            ]
        })
        .collect();
    eprintln!();
    super::print_table(
        &["mode", "ok", "errors", "ops/s", "p50 ms", "p99 ms"],
        &rows,
    );
    eprintln!();
    let s = &doc["summary"];
    super::print_table(
        &["summary", "value"],
        &[
            vec![
                "broker / haproxy ops/s".into(),
                super::fmt_number(s.get("broker_over_haproxy_ops"), 3),
            ],
            vec![
                "broker / direct ops/s".into(),
                super::fmt_number(s.get("broker_over_direct_ops"), 3),
            ],
            vec![
                "broker p99 added ms".into(),
                super::fmt_number(s.get("broker_p99_added_ms"), 2),
            ],
            vec![
                "haproxy p99 added ms".into(),
                super::fmt_number(s.get("haproxy_p99_added_ms"), 2),
            ],
            vec![
                "broker RSS MB idle".into(),
                super::fmt_number(s.get("broker_rss_mb_idle"), 1),
            ],
            vec![
                format!("broker RSS MB at {idle_connections} conns"),
                super::fmt_number(s.get("broker_rss_mb_at_connections"), 1),
            ],
            vec![
                "broker RSS MB at 10000 (scaled)".into(),
                super::fmt_number(s.get("broker_rss_mb_at_10k_estimated"), 1),
            ],
            vec![
                format!("haproxy RSS MB at {idle_connections} conns"),
                super::fmt_number(s.get("haproxy_rss_mb_at_connections"), 1),
            ],
        ],
    );
    eprintln!();
    step!("results written to {}", util::display_path(&path));
    Ok(())
}

/// Raises the open-files limit as far as allowed; returns the soft limit in effect.
pub(super) fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    const WANT: u64 = 65_536;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    // Root may raise the hard limit too; others get up to theirs.
    if setrlimit(Resource::RLIMIT_NOFILE, WANT.max(soft), WANT.max(hard)).is_ok() {
        return WANT.max(soft);
    }
    if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

fn free_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, ums_testkit::free_port()))
}

/// Resident memory of a process in KiB, from /proc.
fn rss_kb(pid: u32) -> Option<u64> {
    status_kb(pid, "VmRSS:")
}

/// A KiB figure of /proc/<pid>/status: `VmRSS:`, `RssAnon:` (heap and stacks), `RssFile:` (the
/// mapped binary and libraries).
pub(super) fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn wait_listening(child: &mut ChildGuard, addr: SocketAddr, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while ums_testkit::wait_for_tcp(addr, Duration::from_millis(200)).is_err() {
        if let Some(st) = child.try_wait()? {
            bail!(
                "process exited ({st}):\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            bail!("nothing listens on {addr} after 20 s");
        }
    }
    Ok(())
}

fn start_broker(server: SocketAddr) -> anyhow::Result<Proxy> {
    start_broker_bin(&super::release_bin("ums-broker"), server)
}

/// Starts the broker binary `bin` on a free port in front of `server`.
pub(super) fn start_broker_bin(bin: &Path, server: SocketAddr) -> anyhow::Result<Proxy> {
    let dir = tempfile::Builder::new()
        .prefix("ums-bench-broker-")
        .tempdir()?;
    let addr = free_addr();
    let log = dir.path().join("broker.log");
    let log_file = fs::File::create(&log)?;
    let mut cmd = Command::new(bin);
    cmd.env("UMS_LISTEN", addr.to_string())
        .env("UMS_SERVERS", server.to_string())
        .env("UMS_METRICS__LISTEN", free_addr().to_string())
        // All simulated devices come from one address.
        .env("UMS_RATE__PER_SECOND", "0")
        .env("UMS_LOG__LEVEL", "warn")
        .env_remove("UMS_CONFIG")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    let mut child = ChildGuard::new(
        cmd.spawn()
            .with_context(|| format!("could not start {}", bin.display()))?,
    );
    wait_listening(&mut child, addr, &log)?;
    Ok(Proxy {
        child,
        addr,
        _dir: dir,
    })
}

/// `haproxy` on the PATH, installed with apt when missing and running as root.
fn find_haproxy() -> Option<std::path::PathBuf> {
    let which = || {
        Command::new("sh")
            .args(["-c", "command -v haproxy"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|p| !p.is_empty())
            .map(std::path::PathBuf::from)
    };
    if let Some(p) = which() {
        return Some(p);
    }
    if nix::unistd::geteuid().is_root() {
        step!("haproxy missing: apt-get install -y haproxy");
        let ok = Command::new("apt-get")
            .args(["install", "-y", "haproxy"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok && let Some(p) = which() {
            return Some(p);
        }
    }
    step!("haproxy not available: its runs are skipped");
    None
}

fn start_haproxy(bin: &Path, server: SocketAddr, nofile: u64) -> anyhow::Result<Proxy> {
    let maxconn = nofile.saturating_sub(500) / 2;
    let dir = tempfile::Builder::new()
        .prefix("ums-bench-haproxy-")
        .tempdir()?;
    let addr = free_addr();
    let cfg = dir.path().join("haproxy.cfg");
    fs::write(
        &cfg,
        format!(
            "global\n    maxconn {maxconn}\n\ndefaults\n    mode tcp\n    timeout connect 1s\n    timeout client 60s\n    timeout server 60s\n\nfrontend devices\n    bind {addr}\n    default_backend servers\n\nbackend servers\n    balance roundrobin\n    server s1 {server}\n"
        ),
    )?;
    let log = dir.path().join("haproxy.log");
    let log_file = fs::File::create(&log)?;
    let mut cmd = Command::new(bin);
    cmd.arg("-f")
        .arg(&cfg)
        .arg("-db")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    let mut child = ChildGuard::new(
        cmd.spawn()
            .with_context(|| format!("could not start {}", bin.display()))?,
    );
    wait_listening(&mut child, addr, &log)?;
    Ok(Proxy {
        child,
        addr,
        _dir: dir,
    })
}

fn devsim(
    server: &Server,
    addr: SocketAddr,
    mode: &str,
    args: &BrokerArgs,
) -> anyhow::Result<Value> {
    let bin = super::release_bin("ums-devsim");
    let mut cmd = Command::new(&bin);
    cmd.arg("--addr")
        .arg(format!("https://{addr}"))
        .arg("--ca")
        .arg(server.ca_path())
        .args(["--devices", &args.devices.to_string()])
        .args(["--concurrency", &args.concurrency.to_string()])
        .args([
            "--prefix",
            &format!("{}{}", mode.replace('-', ""), super::unix_now()),
        ])
        .arg("--json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    step!("{}", util::render(&cmd));
    let out = cmd
        .output()
        .with_context(|| format!("could not run {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "ums-devsim failed ({}); server log:\n{}",
            out.status,
            server.log_tail(30)
        );
    }
    super::last_json_line(&out.stdout).context("could not read the ums-devsim result")
}

/// Opens `n` idle TCP connections through `proxy` and reads its memory while they are open.
///
/// The server gives a connection that never starts TLS its handshake timeout (10 s), so the
/// reading is taken as soon as the connections are up.
fn hold_idle(proxy: &Proxy, n: usize) -> anyhow::Result<Value> {
    let before = proxy.rss_mb();
    let started = Instant::now();
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let s = TcpStream::connect_timeout(&proxy.addr, Duration::from_secs(2))
            .with_context(|| format!("connection {i} of {n} to {}", proxy.addr))?;
        conns.push(s);
    }
    let connect_s = started.elapsed().as_secs_f64();
    // Let the proxy accept and connect the last ones to the server.
    std::thread::sleep(Duration::from_millis(500));
    let rss = proxy.rss_mb();
    let mb = |key| status_kb(proxy.child.id(), key).map(|kb| kb as f64 / 1024.0);
    let (anon, file) = (mb("RssAnon:"), mb("RssFile:"));
    let fds = fs::read_dir(format!("/proc/{}/fd", proxy.child.id()))
        .map(|d| d.count())
        .ok();
    drop(conns);
    std::thread::sleep(Duration::from_millis(500));
    step!(
        "{n} connections in {connect_s:.1} s: RSS {} MB, {} open descriptors",
        rss.map(|v| format!("{v:.1}")).unwrap_or_else(|| "?".into()),
        fds.map(|v| v.to_string()).unwrap_or_else(|| "?".into()),
    );
    Ok(json!({
        "connections": n,
        "connect_s": connect_s,
        "rss_mb_before": before,
        "rss_mb": rss,
        "rss_anon_mb": anon,
        "rss_file_mb": file,
        "open_fds": fds,
    }))
}
