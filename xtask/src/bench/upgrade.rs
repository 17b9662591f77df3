//! `cargo xtask bench upgrade`: a rolling upgrade of an HA network under device load.
//!
//! Release builds (with the test-only next release compiled in): servers on one PostgreSQL,
//! brokers joined to the network, and simulated devices registering and checking in through
//! every broker without pause. Each server in turn is drained (SIGTERM), started again as the
//! next release (`UMS_TEST_SCHEMA_NEXT=minor`: an expand step, then a contract step) and waited
//! for until the registry shows it running on the new binary. Reports the device calls served
//! and failed, the rollout's duration (first drain to every server `normal` on the contracted
//! schema) and each server's restart gap.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use ums_testkit::{ChildGuard, Postgres, free_port};

use super::Ctl;
use super::Server;
use crate::util::{self, step};

/// Arguments of `cargo xtask bench upgrade`.
#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// Servers in the network.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=8))]
    servers: u32,
    /// Brokers in front of them.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=4))]
    brokers: u32,
    /// Device load generators running without pause, each `ums-devsim` rounds of 50 devices
    /// that register and check in 5 times.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=8))]
    loaders: u32,
    /// Seconds of load before the first server is drained and after the last one rejoined.
    #[arg(long, default_value_t = 3)]
    settle_s: u64,
}

/// The next release, as the server's test-only migrations play it.
const NEXT: (&str, &str) = ("UMS_TEST_SCHEMA_NEXT", "minor");

/// A broker joined to the network, listening on a free loopback port.
struct Broker {
    _child: ChildGuard,
    url: String,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start(servers: &[Server], token: &str, n: u32) -> anyhow::Result<Broker> {
        let dir = tempfile::Builder::new()
            .prefix("ums-bench-broker-")
            .tempdir()?;
        let port = free_port();
        let token_file = dir.path().join("network-token");
        std::fs::write(&token_file, format!("{token}\n"))?;
        let join: Vec<String> = servers.iter().map(|s| s.admin_addr.to_string()).collect();
        let log = std::fs::File::create(dir.path().join("broker.log"))?;
        let bin = super::release_bin("ums-broker");
        let mut cmd = Command::new(&bin);
        cmd.env("UMS_LISTEN", format!("127.0.0.1:{port}"))
            .env("UMS_METRICS__LISTEN", format!("127.0.0.1:{}", free_port()))
            // Every simulated device comes from one address.
            .env("UMS_RATE__PER_SECOND", "0")
            // No static servers: the broker follows the network's running servers.
            .env("UMS_SERVERS", "")
            .env("UMS_NETWORK__SERVERS", join.join(","))
            .env("UMS_NETWORK__TOKEN_FILE", &token_file)
            .env("UMS_NETWORK__ID", format!("broker-bench-{n}"))
            .env("UMS_DATA_DIR", dir.path().join("data"))
            .env("UMS_LOG__LEVEL", "warn")
            .env_remove("UMS_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut child = ChildGuard::new(
            cmd.spawn()
                .with_context(|| format!("could not start {}", bin.display()))?,
        );
        let started = Instant::now();
        while ums_testkit::wait_for_tcp(([127, 0, 0, 1], port).into(), Duration::from_millis(200))
            .is_err()
        {
            if let Some(st) = child.try_wait()? {
                bail!("ums-broker exited at start ({st})");
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("ums-broker did not listen within 30 s");
            }
        }
        Ok(Broker {
            _child: child,
            url: format!("https://127.0.0.1:{port}"),
            _dir: dir,
        })
    }
}

/// What the device load did.
#[derive(Default)]
struct Load {
    /// Successful register, check-in and settings calls.
    served: u64,
    /// Devices that met a failed call (each stops at its first).
    failed_devices: u64,
    devices: u64,
    rounds: u64,
    samples: Vec<String>,
}

/// Runs `ums-devsim` rounds through the brokers until `stop`, adding each round's report.
fn load(
    id: u32,
    addrs: String,
    ca: std::path::PathBuf,
    stop: Arc<AtomicBool>,
    total: Arc<Mutex<Load>>,
) -> std::thread::JoinHandle<anyhow::Result<()>> {
    std::thread::spawn(move || {
        let mut round = 0u64;
        while !stop.load(Ordering::Relaxed) {
            round += 1;
            let out = Command::new(super::release_bin("ums-devsim"))
                .args(["--addr", &addrs])
                .arg("--ca")
                .arg(&ca)
                .args(["--devices", "50", "--concurrency", "8", "--checkins", "5"])
                .args(["--prefix", &format!("upgrade-{id}-{round}"), "--json"])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .context("run ums-devsim")?;
            // A round with failed devices exits 1 and still reports.
            let report = super::last_json_line(&out.stdout)?;
            let mut t = total.lock().unwrap_or_else(|p| p.into_inner());
            t.rounds += 1;
            t.served += report["ops"].as_u64().unwrap_or(0);
            t.devices += report["devices"].as_u64().unwrap_or(0);
            let errors = report["errors"].as_u64().unwrap_or(0);
            t.failed_devices += errors;
            if errors > 0 {
                for s in report["error_samples"].as_array().into_iter().flatten() {
                    if t.samples.len() < 10
                        && let Some(s) = s.as_str()
                    {
                        t.samples.push(s.to_owned());
                    }
                }
            }
        }
        Ok(())
    })
}

/// The registry's server `id`: (running, on the next release, mode).
fn server_state(status: &Value, id: &str) -> Option<(bool, bool, String)> {
    let p = status["processes"]
        .as_array()?
        .iter()
        .find(|p| p["id"] == id)?;
    Some((
        p["status"] == "running",
        p["version"]
            .as_str()
            .is_some_and(|v| v.ends_with("+next-minor")),
        p["mode"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// Runs the upgrade benchmark.
pub fn run(args: UpgradeArgs) -> anyhow::Result<()> {
    step!("building release binaries with the test-only next release");
    let mut build = util::cargo();
    build.args(["build", "--release", "--bins"]);
    for p in ["ums-server", "ums-broker", "ums-devsim", "umsctl"] {
        build.args(["-p", p]);
    }
    build.args(["--features", "ums-server/test-migrations"]);
    util::run(&mut build)?;
    for bin in ["ums-server", "ums-broker", "ums-devsim", "umsctl"] {
        super::ensure_exists(&super::release_bin(bin))?;
    }
    let work = tempfile::tempdir().context("temporary directory")?;
    step!("starting postgresql");
    let pg = Postgres::start()?;
    let url = pg.create_database(&format!("upgrade_bench_{}", super::unix_now()))?;
    let env = [("UMS_NETWORK__MODE", "ha")];

    step!("starting {} servers", args.servers);
    let mut servers = vec![Server::start_with(Some(&url), &env, None)?];
    let token = std::fs::read_to_string(servers[0].data_dir().join("network-token"))
        .context("the first server's token")?;
    let token = token.trim().to_owned();
    for _ in 1..args.servers {
        servers.push(Server::start_with(Some(&url), &env, Some(&token))?);
    }
    let ids: Vec<String> = servers
        .iter()
        .map(|s| {
            std::fs::read_to_string(s.data_dir().join("server-id"))
                .map(|t| t.trim().to_owned())
                .context("server-id")
        })
        .collect::<anyhow::Result<_>>()?;
    let password = std::fs::read_to_string(servers[0].data_dir().join("initial-admin-password"))
        .context("admin password")?;
    let ctls = servers
        .iter()
        .map(|s| Ctl::login_server(work.path(), s, password.trim()))
        .collect::<anyhow::Result<Vec<_>>>()?;

    step!("starting {} brokers", args.brokers);
    let brokers = (0..args.brokers)
        .map(|n| Broker::start(&servers, &token, n))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let urls: Vec<String> = brokers.iter().map(|b| b.url.clone()).collect();
    // The brokers follow the servers' watch stream: wait until each forwards to all of them.
    let started = Instant::now();
    loop {
        let list = ctls[0].json(&["network", "list"])?;
        let running_brokers = list["processes"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["kind"] == "broker" && p["status"] == "running")
                    .count()
            })
            .unwrap_or(0);
        if running_brokers == brokers.len() {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the brokers did not join within 60 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    step!(
        "device load: {} generators through {} brokers",
        args.loaders,
        brokers.len()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(Mutex::new(Load::default()));
    let ca = servers[0].ca_path();
    let loaders: Vec<_> = (0..args.loaders)
        .map(|i| {
            // Each generator starts at another broker and moves on to the next when one fails.
            let mut order = urls.clone();
            order.rotate_left(i as usize % urls.len());
            load(i, order.join(","), ca.clone(), stop.clone(), total.clone())
        })
        .collect();
    std::thread::sleep(Duration::from_secs(args.settle_s));
    let before = total.lock().unwrap_or_else(|p| p.into_inner()).served;

    let rollout = Instant::now();
    let mut gaps = Vec::new();
    for (i, server) in servers.iter_mut().enumerate() {
        let id = &ids[i];
        let observer = &ctls[(i + 1) % ctls.len()];
        step!(
            "server {}/{}: drain and restart as the next release",
            i + 1,
            args.servers
        );
        let down = Instant::now();
        server.stop_gracefully();
        let stopped_ms = down.elapsed().as_secs_f64() * 1000.0;
        server.restart_with(&[NEXT])?;
        let ready_ms = down.elapsed().as_secs_f64() * 1000.0;
        loop {
            let status = observer.json(&["update", "status"])?;
            if server_state(&status, id).is_some_and(|(running, next, _)| running && next) {
                break;
            }
            if down.elapsed() > Duration::from_secs(120) {
                bail!("server {id} did not rejoin on the next release within 120 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let rejoined_ms = down.elapsed().as_secs_f64() * 1000.0;
        gaps.push(json!({
            "server": id,
            "drained_and_stopped_ms": stopped_ms,
            "listening_again_ms": ready_ms,
            "rejoined_ms": rejoined_ms,
        }));
    }
    let servers_n = args.servers;
    let done = loop {
        let status = ctls[0].json(&["update", "status"])?;
        let summary = status["summary"].as_str().unwrap_or_default();
        if summary == format!("{servers_n} of {servers_n} servers updated")
            && status["in_progress"] != true
            && status["pending"].as_array().is_none_or(|p| p.is_empty())
        {
            break status;
        }
        if rollout.elapsed() > Duration::from_secs(300) {
            bail!("the rollout did not finish within 300 s: {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let rollout_s = rollout.elapsed().as_secs_f64();
    let during = total.lock().unwrap_or_else(|p| p.into_inner()).served - before;
    std::thread::sleep(Duration::from_secs(args.settle_s));
    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        l.join()
            .map_err(|_| anyhow::anyhow!("a load generator panicked"))??;
    }
    let load = std::mem::take(&mut *total.lock().unwrap_or_else(|p| p.into_inner()));
    let steps: Vec<Value> = done["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .rev()
                .take(2)
                .rev()
                .map(|s| {
                    json!({
                        "version": s["version"],
                        "phase": s["phase"],
                        "applied_by": s["applied_by"],
                    })
                })
                .collect()
        })
        .unwrap_or_default();

    let doc = json!({
        "bench": "upgrade",
        "at": super::unix_now(),
        "host_cores": super::host_cores(),
        "servers": args.servers,
        "brokers": args.brokers,
        "loaders": args.loaders,
        "devices": {
            "requests_served": load.served,
            // A device stops at its first failed call: each failed device is one failed request.
            "requests_failed": load.failed_devices,
            "requests_served_during_rollout": during,
            "devices": load.devices,
            "rounds": load.rounds,
            "error_samples": load.samples,
        },
        "rollout_s": rollout_s,
        "restart_gaps": gaps,
        "schema": done["schema_version"],
        "steps": steps,
        "summary": done["summary"],
    });
    let path = super::write_results("upgrade", &doc)?;
    eprintln!();
    super::print_table(
        &["server", "stopped ms", "listening ms", "rejoined ms"],
        &gaps
            .iter()
            .map(|g| {
                vec![
                    g["server"].as_str().unwrap_or_default().to_owned(),
                    super::fmt_number(g.get("drained_and_stopped_ms"), 0),
                    super::fmt_number(g.get("listening_again_ms"), 0),
                    super::fmt_number(g.get("rejoined_ms"), 0),
                ]
            })
            .collect::<Vec<_>>(),
    );
    eprintln!(
        "rolling upgrade of {} servers: {rollout_s:.1} s; device requests: {} served ({during} during the rollout), {} failed ({} devices)",
        args.servers, load.served, load.failed_devices, load.devices
    );
    for s in &load.samples {
        eprintln!("  failure: {s}");
    }
    eprintln!();
    step!("results written to {}", util::display_path(&path));
    drop(brokers);
    drop(servers);
    drop(pg);
    Ok(())
}
