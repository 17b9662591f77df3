//! `cargo xtask chaos [--duration SECS] [--seed N]`: faults under load.
//!
//! PostgreSQL, three nodes (127.0.0.11-13) of `ums-watchdog` supervising a `ums-server`,
//! two of them a `ums-broker` and the third `swp-auth`, written by the same [`Node`] as
//! `cargo xtask network`. The servers reach PostgreSQL through a fault-injecting forwarder
//! (`ums_testkit::TcpSwitch`), and devices reach the first broker through another. Device
//! workers (`load`) register, check in, download their settings and a file, and report job
//! results that an administrator thread queues with `umsctl`; every acknowledged write is
//! recorded. Faults follow a schedule drawn from the seed (`faults`). Afterwards `audit`
//! checks the database against the ledger, and the report goes to the terminal and to
//! `target/chaos/report.json`.

mod audit;
mod faults;
mod load;

use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use ums_testkit::{Postgres, TcpSwitch};

use crate::bench::Ctl;
use crate::network::{Node, Ports};
use crate::util::{self, step};

/// Arguments of `cargo xtask chaos`.
#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// Seconds of device load; faults are spread over it (one about every 10 s).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(20..))]
    duration: u64,
    /// Seed of the fault schedule and its targets [default: from the clock, printed so a run
    /// can be repeated].
    #[arg(long)]
    seed: Option<u64>,
    /// Device workers, each acting as a dozen devices one call at a time.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Milliseconds a device waits before its one retry of a failed call.
    #[arg(long, default_value_t = 2000)]
    retry_ms: u64,
    /// Use the binaries already built instead of building them.
    #[arg(long)]
    no_build: bool,
}

/// Seconds of load of the chaos run in `cargo xtask test`: two faults.
pub const TEST_DURATION_S: u64 = 35;

impl ChaosArgs {
    /// The short run of `cargo xtask test`, on the binaries it built.
    pub fn for_test() -> ChaosArgs {
        ChaosArgs {
            duration: TEST_DURATION_S,
            seed: None,
            workers: 8,
            retry_ms: 2000,
            no_build: true,
        }
    }
}

/// The binaries a chaos run starts.
const BINARIES: [&str; 5] = [
    "ums-server",
    "ums-broker",
    "ums-watchdog",
    "swp-auth",
    "umsctl",
];

/// Lease of the scheduler in the run's servers (the default): a paused holder is kept stopped
/// for longer.
const LEASE: Duration = Duration::from_secs(5);

/// A small splitmix64 generator: the whole schedule follows from the seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The processes of the run: the nodes and their watchdogs (restarted by the run itself
/// after a kill, as systemd's `Restart=always` would).
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub watchdogs: Vec<Option<Child>>,
    pub bins: PathBuf,
    pub root: PathBuf,
}

/// What runs on a node, found through /proc by binary and configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proc {
    Server,
    Broker,
    SwpAuth,
}

impl Proc {
    pub fn binary(self) -> &'static str {
        match self {
            Proc::Server => "ums-server",
            Proc::Broker => "ums-broker",
            Proc::SwpAuth => "swp-auth",
        }
    }

    fn config(self) -> &'static str {
        match self {
            Proc::Server => "ums-server.toml",
            Proc::Broker => "ums-broker.toml",
            Proc::SwpAuth => "swp-auth.toml",
        }
    }
}

impl Cluster {
    /// The pid of `what` on node `i`, if it runs.
    pub fn pid(&self, i: usize, what: Proc) -> Option<i32> {
        let config = self.nodes[i].dir.join(what.config());
        let config = config.as_os_str().as_encoded_bytes();
        let entries = std::fs::read_dir("/proc").ok()?;
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .find(|pid| {
                let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                    return false;
                };
                let mut args = cmdline.split(|b| *b == 0);
                let is_binary = args.next().is_some_and(|a| {
                    Path::new(std::ffi::OsStr::from_bytes(a)).file_name()
                        == Some(std::ffi::OsStr::new(what.binary()))
                });
                is_binary && args.any(|a| a == config) && !is_zombie(*pid)
            })
    }

    /// What runs on node `i`.
    pub fn procs(&self, i: usize) -> Vec<Proc> {
        let n = &self.nodes[i];
        let mut v = vec![Proc::Server];
        if n.broker {
            v.push(Proc::Broker);
        }
        if n.swp_auth {
            v.push(Proc::SwpAuth);
        }
        v
    }

    /// The address `what` of node `i` accepts connections on once it is up.
    pub fn ready_addr(&self, i: usize, what: Proc) -> std::net::SocketAddr {
        let n = &self.nodes[i];
        match what {
            Proc::Server => n.device_addr(),
            Proc::Broker => n.broker_addr(),
            Proc::SwpAuth => n.swp_addr(),
        }
    }

    /// Whether `what` on node `i` runs (another pid than `not`) and accepts connections.
    pub fn is_up(&self, i: usize, what: Proc, not: Option<i32>) -> bool {
        self.pid(i, what).is_some_and(|p| Some(p) != not)
            && std::net::TcpStream::connect_timeout(
                &self.ready_addr(i, what),
                Duration::from_millis(300),
            )
            .is_ok()
    }

    /// Whether node `i`'s watchdog runs.
    pub fn watchdog_alive(&mut self, i: usize) -> bool {
        self.watchdogs[i]
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Starts node `i`'s watchdog (again).
    pub fn start_watchdog(&mut self, i: usize) -> anyhow::Result<()> {
        let child = self.nodes[i].start(&self.bins)?;
        self.watchdogs[i] = Some(child);
        Ok(())
    }

    /// Everything that should run and does not.
    pub fn missing(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..self.nodes.len() {
            if !self.watchdog_alive(i) {
                out.push(format!("node {}: ums-watchdog", self.nodes[i].n));
            }
            for p in self.procs(i) {
                if !self.is_up(i, p, None) {
                    out.push(format!("node {}: {}", self.nodes[i].n, p.binary()));
                }
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.watchdogs.iter_mut().flatten() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for child in self.watchdogs.iter_mut().flatten() {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // A server stopped with SIGSTOP when the run was interrupted, or a child of a killed
        // watchdog that outlived it: this run's processes, found by its directory.
        for pid in crate::network::processes_under(&self.root) {
            let pid = Pid::from_raw(pid as i32);
            let _ = kill(pid, Signal::SIGCONT);
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

use std::os::unix::ffi::OsStrExt as _;

/// Polls `ready` every 100 ms until it holds or `timeout` passes; how long it took.
pub fn wait_for(timeout: Duration, mut ready: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if ready() {
            return Some(started.elapsed());
        }
        if started.elapsed() > timeout || util::interrupted() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The file every device downloads: seeded random bytes.
fn file_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed ^ 0x5eed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Runs `cargo xtask chaos`.
pub fn run(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    Ok(if passes(args)? {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs a chaos run; whether it passed.
pub fn passes(args: ChaosArgs) -> anyhow::Result<bool> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            % 1_000_000
    });
    step!(
        "chaos run: {} s of device load, seed {seed} (repeat it with --seed {seed})",
        args.duration
    );
    if !args.no_build {
        let mut build = util::cargo();
        build.args(["build", "--bins"]);
        for p in [
            "ums-server",
            "ums-broker",
            "ums-watchdog",
            "swp-auth",
            "umsctl",
        ] {
            build.args(["-p", p]);
        }
        util::run(&mut build)?;
    }
    let bins = util::profile_dir(false);
    for b in BINARIES {
        if !bins.join(b).is_file() {
            bail!(
                "{} is missing; build it (or drop --no-build)",
                bins.join(b).display()
            );
        }
    }
    let out_dir = util::target_dir().join("chaos");
    let root = out_dir.join("run");
    if root.exists() {
        std::fs::remove_dir_all(&root).with_context(|| format!("empty {}", root.display()))?;
    }
    std::fs::create_dir_all(&root)?;

    step!("starting postgresql");
    let pg = Postgres::start()?;
    let direct_url = pg.create_database("ums_chaos")?;
    let db_proxy = TcpSwitch::start(([127, 0, 0, 1], pg.port()).into())?;
    let url = direct_url.replace(
        &format!(":{}/", pg.port()),
        &format!(":{}/", db_proxy.port()),
    );
    step!(
        "servers reach postgresql (127.0.0.1:{}) through a fault-injecting forwarder on 127.0.0.1:{}",
        pg.port(),
        db_proxy.port()
    );

    let mut nodes: Vec<Node> = (1..=3u8)
        .map(|n| {
            let mut node = Node::new(&root, 10 + n);
            node.n = n;
            node.dir = root.join(format!("node{n}"));
            node.ports = Ports::free();
            node.broker = n <= 2;
            node.swp_auth = n == 3;
            node
        })
        .collect();
    for node in &nodes {
        for addr in node.addrs() {
            if let Err(e) = std::net::TcpListener::bind(addr) {
                bail!("{addr} is not free ({e}); is another chaos run going on?");
            }
        }
    }
    for node in &mut nodes {
        node.server_extra = "\n[log]\nlevel = \"info\"\n".to_owned();
    }
    for node in &nodes {
        node.write_config(&nodes, &url, &bins)?;
    }
    let mut cluster = Cluster {
        watchdogs: nodes.iter().map(|_| None).collect(),
        nodes,
        bins,
        root: root.clone(),
    };
    cluster.start_watchdog(0)?;
    wait_for(Duration::from_secs(120), || {
        cluster.nodes[0].token_file().exists()
    })
    .context("node 1 did not create the network token")?;
    for i in 1..cluster.nodes.len() {
        cluster.nodes[i].copy_token_from(&cluster.nodes[0])?;
        cluster.start_watchdog(i)?;
    }
    step!("waiting for every process of the three nodes");
    if wait_for(Duration::from_secs(180), || cluster.missing().is_empty()).is_none() {
        bail!(
            "not up within 180 s: {}; see the logs in {}",
            cluster.missing().join(", "),
            util::display_path(&root)
        );
    }

    // The administrator: logged in to every server, to queue jobs through any of them.
    let n1 = &cluster.nodes[0];
    let ca = n1.server_dir().join("tls/ca.pem");
    let password = std::fs::read_to_string(n1.server_dir().join("initial-admin-password"))
        .context("the initial admin password")?;
    let umsctl = cluster.bins.join("umsctl");
    let ctls = cluster
        .nodes
        .iter()
        .map(|n| {
            Ctl::login(
                &root,
                &umsctl,
                &format!("https://{}", n.admin_addr()),
                &ca,
                password.trim(),
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let bytes = file_bytes(seed, 512 * 1024);
    let file_path = root.join("firmware.bin");
    std::fs::write(&file_path, &bytes)?;
    let uploaded = ctls[0].json(&[
        "files",
        "upload",
        file_path.to_str().context("path")?,
        "--as",
        "chaos/firmware.bin",
    ])?;
    let file_id = uploaded["id"].as_i64().context("file id")?;
    step!("file {file_id} uploaded; waiting until every server holds it");
    let replicas = |pg: &Postgres| audit::present_replicas(pg, file_id).unwrap_or(0);
    wait_for(Duration::from_secs(60), || replicas(&pg) == 3)
        .context("the file did not reach every server")?;

    let device_proxy = TcpSwitch::start_on(
        (cluster.nodes[0].ip, ums_testkit::free_port()).into(),
        cluster.nodes[0].broker_addr(),
    )?;
    let addrs = vec![
        format!("https://{}", device_proxy.addr()),
        format!("https://{}", cluster.nodes[1].broker_addr()),
    ];
    step!(
        "{} device workers on {} (the first broker through a fault-injecting forwarder)",
        args.workers,
        addrs.join(" and ")
    );
    let prefix = format!("chaos{seed}");
    let load = load::Load::start(load::LoadConfig {
        addrs,
        ca_pem: std::fs::read(&ca)?,
        workers: args.workers,
        prefix: prefix.clone(),
        file: (file_id, Arc::new(bytes.clone())),
        pace: Duration::from_millis(40),
        retry_after: Duration::from_millis(args.retry_ms),
        call_timeout: Duration::from_secs(4),
    })?;
    let started = Instant::now();

    // Jobs for the devices, queued through any server that answers.
    let stop_jobs = Arc::new(AtomicBool::new(false));
    let queued = Arc::new(AtomicU64::new(0));
    let queue_failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let jobs_thread = {
        let (stop, queued, failures, ledger) = (
            stop_jobs.clone(),
            queued.clone(),
            queue_failures.clone(),
            load.ledger.clone(),
        );
        let mut rng = Rng::new(seed ^ 0x10b5);
        let workers = args.workers;
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_secs(2));
                let ids = ledger
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .device_ids();
                // The newest devices: the ones the workers still hold and check in.
                let ids = &ids[ids.len().saturating_sub(workers * load::DEVICES_PER_WORKER)..];
                if ids.is_empty() {
                    continue;
                }
                for _ in 0..3 {
                    let id = ids[rng.below(ids.len())].to_string();
                    let first = rng.below(ctls.len());
                    let done = (0..ctls.len()).any(|k| {
                        ctls[(first + k) % ctls.len()]
                            .json(&["jobs", "create", "reboot", "--device", &id])
                            .is_ok()
                    });
                    if done {
                        queued.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failures
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(format!("no server queued a job for device {id}"));
                    }
                }
            }
        })
    };

    let done = {
        let mut injector = faults::Injector {
            cluster: &mut cluster,
            pg: &pg,
            db_proxy: &db_proxy,
            device_proxy: &device_proxy,
            rng: Rng::new(seed),
        };
        let schedule = faults::schedule(seed, args.duration);
        step!(
            "{} faults: {}",
            schedule.len(),
            schedule
                .iter()
                .map(|(at, f)| format!("{}@{}s", f.name(), at.as_secs()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut done = Vec::new();
        for (at, fault) in schedule {
            if util::interrupted() {
                bail!("interrupted");
            }
            if let Some(wait) = at.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
            let record = injector.inject(fault, started);
            step!(
                "{:>5.1} s  {}: {}{}",
                record.at_s,
                record.kind,
                record.detail,
                record
                    .back_s
                    .map(|b| format!("; back after {b:.2} s"))
                    .unwrap_or_default()
            );
            done.push(record);
        }
        done
    };
    if let Some(wait) = Duration::from_secs(args.duration).checked_sub(started.elapsed()) {
        std::thread::sleep(wait);
    }
    stop_jobs.store(true, Ordering::SeqCst);
    let _ = jobs_thread.join();
    let ledger = load.stop();
    let load_s = started.elapsed().as_secs_f64();
    step!("load stopped after {load_s:.0} s; waiting for every process, then the audit");

    let back = wait_for(Duration::from_secs(60), || cluster.missing().is_empty());
    let missing = cluster.missing();
    let registry = audit::registry(&pg, Duration::from_secs(30))?;
    let audit = audit::audit(&pg, &prefix, &ledger, file_id, &bytes, &cluster)?;

    // Recovery as the devices saw it: the last first-try failure after each fault, before the
    // next one.
    let mut faults_json = Vec::new();
    for (k, f) in done.iter().enumerate() {
        let from = started + Duration::from_secs_f64(f.at_s);
        let until = done
            .get(k + 1)
            .map(|n| started + Duration::from_secs_f64(n.at_s))
            .unwrap_or_else(Instant::now);
        let in_window: Vec<Instant> = ledger
            .first_failures
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| *t >= from && *t < until)
            .collect();
        let failed = ledger
            .failures
            .iter()
            .filter(|(t, _)| *t >= from && *t < until)
            .count();
        let served_again = in_window
            .iter()
            .max()
            .map(|t| t.duration_since(from).as_secs_f64())
            .unwrap_or(0.0);
        faults_json.push(json!({
            "at_s": f.at_s,
            "kind": f.kind,
            "detail": f.detail,
            "component_back_s": f.back_s,
            "devices_served_again_s": served_again,
            "first_try_failures": in_window.len(),
            "failed_after_retry": failed,
            "ok": f.ok,
        }));
    }

    let total = ledger.total();
    let within = total.succeeded + total.succeeded_on_retry;
    let pct = if total.attempted == 0 {
        0.0
    } else {
        100.0 * within as f64 / total.attempted as f64
    };
    let mut reasons = Vec::new();
    if audit.lost_registrations + audit.lost_job_results > 0 {
        reasons.push(format!(
            "{} acknowledged writes lost",
            audit.lost_registrations + audit.lost_job_results
        ));
    }
    if audit.duplicate_devices > 0 {
        reasons.push(format!("{} duplicate devices", audit.duplicate_devices));
    }
    if pct < 99.9 {
        reasons.push(format!(
            "{pct:.3} % of device operations succeeded within one retry (< 99.9 %)"
        ));
    }
    if total.attempted < 100 {
        reasons.push(format!(
            "only {} device operations: too few to tell",
            total.attempted
        ));
    }
    if back.is_none() || !missing.is_empty() {
        reasons.push(format!("not running at the end: {}", missing.join(", ")));
    }
    if !registry.not_running.is_empty() {
        reasons.push(format!(
            "the registry does not show running: {}",
            registry.not_running.join(", ")
        ));
    }
    if !audit.files_verified {
        reasons.push(format!("replicated file: {}", audit.file_problem));
    }
    if ledger.corrupt_downloads > 0 {
        reasons.push(format!("{} corrupt downloads", ledger.corrupt_downloads));
    }
    for f in done.iter().filter(|f| !f.ok) {
        reasons.push(format!("{}: {}", f.kind, f.detail));
    }
    let pass = reasons.is_empty();
    let queue_failures = queue_failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let report = json!({
        "seed": seed,
        "duration_s": load_s,
        "topology": {
            "servers": 3, "brokers": 2, "watchdogs": 3, "swp_auth": 1, "postgresql": 1,
            "device_workers": args.workers,
            "retry_after_ms": args.retry_ms,
        },
        "operations": {
            "attempted": total.attempted,
            "succeeded": total.succeeded,
            "succeeded_on_one_retry": total.succeeded_on_retry,
            "failed": total.failed,
            "within_one_retry_pct": pct,
            "by_kind": ledger.ops,
        },
        "acknowledged": {
            "registrations": ledger.registrations.len(),
            "job_results": ledger.job_results.len(),
        },
        "acknowledged_writes_lost": {
            "registrations": audit.lost_registrations,
            "job_results": audit.lost_job_results,
        },
        "duplicate_devices": audit.duplicate_devices,
        "corrupt_downloads": ledger.corrupt_downloads,
        "jobs_queued": queued.load(Ordering::Relaxed),
        "job_queue_failures": queue_failures.len(),
        "files_verified": audit.files_verified,
        "registry": registry.rows,
        "not_running": missing,
        "faults": faults_json,
        "error_samples": ledger.error_samples,
        "pass": pass,
        "reasons": reasons,
    });
    std::fs::create_dir_all(&out_dir)?;
    let path = out_dir.join("report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;

    eprintln!();
    let rows: Vec<Vec<String>> = report["faults"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            vec![
                crate::bench::fmt_number(f.get("at_s"), 1),
                f["kind"].as_str().unwrap_or("?").to_owned(),
                f["component_back_s"]
                    .as_f64()
                    .map(|v| format!("{v:.2}"))
                    .unwrap_or_else(|| "-".into()),
                crate::bench::fmt_number(f.get("devices_served_again_s"), 2),
                f["first_try_failures"].to_string(),
                f["failed_after_retry"].to_string(),
            ]
        })
        .collect();
    crate::bench::print_table(
        &[
            "at s",
            "fault",
            "back s",
            "served again s",
            "first-try failures",
            "failed after retry",
        ],
        &rows,
    );
    eprintln!();
    eprintln!(
        "operations: {} attempted, {} succeeded, {} succeeded on one retry, {} failed ({pct:.3} % within one retry)",
        total.attempted, total.succeeded, total.succeeded_on_retry, total.failed
    );
    eprintln!(
        "acknowledged: {} registrations, {} job results; lost: {} registrations, {} job results; {} duplicate devices",
        ledger.registrations.len(),
        ledger.job_results.len(),
        audit.lost_registrations,
        audit.lost_job_results,
        audit.duplicate_devices
    );
    eprintln!(
        "replicated file verified on every server: {}; every process running: {}",
        audit.files_verified,
        missing.is_empty() && registry.not_running.is_empty()
    );
    for e in &ledger.error_samples {
        eprintln!("  error: {e}");
    }
    step!("report written to {}", util::display_path(&path));
    drop(cluster);
    drop(pg);
    if pass {
        step!("chaos run passed");
        Ok(true)
    } else {
        for r in &reasons {
            eprintln!("xtask: chaos: {r}");
        }
        step!(
            "chaos run failed; logs in {} (repeat with --seed {seed})",
            util::display_path(&root)
        );
        Ok(false)
    }
}
