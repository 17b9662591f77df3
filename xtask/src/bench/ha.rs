//! `cargo xtask bench ha`: an HA network of release servers on one PostgreSQL.
//!
//! - **Event propagation**: an administrator changes a profile on the first server; devices
//!   checking in every 2 ms on each other server (`ums-devsim --watch-ms`) report when they see
//!   the new revision. Measured from the moment the admin call returned.
//! - **Scheduler failover**: the scheduler's holder is killed with SIGKILL; measured until the
//!   registry (read through a surviving server) shows another holder. The killed server is then
//!   started again, so every round starts from a full network.
//! - **File replication**: a file of random bytes is uploaded to the first server; measured until
//!   every server holds a verified copy.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use ums_testkit::Postgres;

use super::Server;
use crate::util::{self, step};

/// Arguments of `cargo xtask bench ha`.
#[derive(Debug, Args)]
pub struct HaArgs {
    /// Servers in the network.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=8))]
    servers: u32,
    /// Profile changes to propagate.
    #[arg(long, default_value_t = 50)]
    changes: u32,
    /// Scheduler failovers to provoke.
    #[arg(long, default_value_t = 3)]
    failovers: u32,
    /// Size of the replicated file in MiB.
    #[arg(long, default_value_t = 64)]
    file_mib: u64,
}

/// `umsctl` with its own configuration file, logged in to one server.
pub(super) struct Ctl {
    config: PathBuf,
}

impl Ctl {
    pub(super) fn login(dir: &Path, server: &Server, password: &str) -> anyhow::Result<Ctl> {
        let ctl = Ctl {
            config: dir.join(format!("umsctl-{}.toml", server.admin_addr.port())),
        };
        let ca = server.data_dir().join("tls/ca.pem");
        let out = ctl
            .command()
            .args([
                "init",
                "--server",
                &format!("https://{}", server.admin_addr),
            ])
            .arg("--ca")
            .arg(&ca)
            .args(["--user", "admin"])
            .env("UMS_PASSWORD", password)
            .output()
            .context("run umsctl init")?;
        if !out.status.success() {
            bail!(
                "umsctl init failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(ctl)
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(super::release_bin("umsctl"));
        cmd.arg("--config").arg(&self.config).stdin(Stdio::null());
        cmd
    }

    pub(super) fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let out = self
            .command()
            .arg("--json")
            .args(args)
            .output()
            .context("run umsctl")?;
        if !out.status.success() {
            bail!(
                "umsctl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout).with_context(|| format!("umsctl {args:?}: not json"))
    }

    /// The scheduler's holder and the running servers.
    fn registry(&self) -> anyhow::Result<(Option<String>, Vec<String>)> {
        let list = self.json(&["network", "list"])?;
        let ps = list["processes"].as_array().cloned().unwrap_or_default();
        let holder = ps
            .iter()
            .find(|p| p["scheduler"] == true)
            .and_then(|p| p["id"].as_str())
            .map(str::to_owned);
        let running = ps
            .iter()
            .filter(|p| p["kind"] == "server" && p["status"] == "running")
            .filter_map(|p| p["id"].as_str().map(str::to_owned))
            .collect();
        Ok((holder, running))
    }
}

/// A device checking in every 2 ms, with its output lines on a channel.
struct Watcher {
    child: Child,
    lines: mpsc::Receiver<Value>,
    device_id: i64,
}

impl Watcher {
    fn start(server: &Server, unit: &str) -> anyhow::Result<Watcher> {
        let mut child = Command::new(super::release_bin("ums-devsim"))
            .args(["--addr", &server.device_url()])
            .arg("--ca")
            .arg(server.ca_path())
            .args(["--prefix", unit, "--watch-ms", "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start ums-devsim --watch-ms")?;
        let stdout = child.stdout.take().context("devsim stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send(v).is_err()
                {
                    break;
                }
            }
        });
        let ready = rx
            .recv_timeout(Duration::from_secs(30))
            .context("ums-devsim did not register")?;
        let device_id = ready["device_id"].as_i64().context("ready line")?;
        Ok(Watcher {
            child,
            lines: rx,
            device_id,
        })
    }

    /// The time (ms since the epoch) of the next settings change this device sees.
    fn next_change(&self, timeout: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .lines
                .recv_timeout(left)
                .context("the device did not see the change")?;
            if v["event"] == "settings_changed" {
                return v["at_ms"].as_u64().context("at_ms");
            }
        }
    }

    /// Drops pending lines.
    fn drain(&self) {
        while self.lines.try_recv().is_ok() {}
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn stats(mut v: Vec<f64>) -> Value {
    v.sort_by(|a, b| a.total_cmp(b));
    json!({
        "count": v.len(),
        "p50": percentile(&v, 0.50),
        "p99": percentile(&v, 0.99),
        "max": v.last().copied().unwrap_or(f64::NAN),
    })
}

/// Runs the HA benchmark.
pub fn run(args: HaArgs) -> anyhow::Result<()> {
    super::build_release(&["ums-server", "umsctl", "ums-devsim"])?;
    for bin in ["ums-server", "umsctl", "ums-devsim"] {
        super::ensure_exists(&super::release_bin(bin))?;
    }
    let work = tempfile::tempdir().context("temporary directory")?;
    step!("starting postgresql");
    let pg = Postgres::start()?;
    let url = pg.create_database(&format!("ha_bench_{}", super::unix_now()))?;
    let env = [("UMS_NETWORK__MODE", "ha")];

    step!("starting {} servers", args.servers);
    let mut servers = vec![Server::start_with(Some(&url), &env, None)?];
    let token = std::fs::read_to_string(servers[0].data_dir().join("network-token"))
        .context("the first server's token")?;
    for _ in 1..args.servers {
        servers.push(Server::start_with(Some(&url), &env, Some(token.trim()))?);
    }
    let password = std::fs::read_to_string(servers[0].data_dir().join("initial-admin-password"))
        .context("admin password")?;
    let ctls = servers
        .iter()
        .map(|s| Ctl::login(work.path(), s, password.trim()))
        .collect::<anyhow::Result<Vec<_>>>()?;

    // Event propagation.
    step!(
        "event propagation: {} profile changes on server 1",
        args.changes
    );
    let folder = ctls[0].json(&["folders", "create", "bench"])?["id"]
        .as_i64()
        .context("folder id")?;
    let profile = ctls[0].json(&["profiles", "create", "bench", "display.monitors=1"])?["id"]
        .as_i64()
        .context("profile id")?;
    ctls[0].json(&[
        "assign",
        &profile.to_string(),
        "--folder",
        &folder.to_string(),
    ])?;
    let watchers = servers[1..]
        .iter()
        .enumerate()
        .map(|(i, s)| Watcher::start(s, &format!("ha-watch-{i}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for w in &watchers {
        ctls[0].json(&[
            "devices",
            "move",
            &w.device_id.to_string(),
            "--folder",
            &folder.to_string(),
        ])?;
        w.next_change(Duration::from_secs(10))?;
    }
    let mut propagation = Vec::new();
    for i in 0..args.changes {
        for w in &watchers {
            w.drain();
        }
        ctls[0].json(&[
            "profiles",
            "set",
            &profile.to_string(),
            &format!("display.monitors={}", 2 + i % 5),
        ])?;
        let returned = now_ms();
        for w in &watchers {
            let seen = w.next_change(Duration::from_secs(10))?;
            propagation.push(seen.saturating_sub(returned) as f64);
        }
    }
    drop(watchers);
    let propagation = stats(propagation);

    // Scheduler failover.
    let mut failovers = Vec::new();
    for round in 0..args.failovers {
        let (holder, _) = ctls[0].registry()?;
        let holder = holder.context("no scheduler")?;
        let ids: Vec<String> = servers
            .iter()
            .map(|s| {
                std::fs::read_to_string(s.data_dir().join("server-id"))
                    .map(|t| t.trim().to_owned())
                    .unwrap_or_default()
            })
            .collect();
        let victim = ids
            .iter()
            .position(|i| *i == holder)
            .context("the scheduler is not one of our servers")?;
        let watcher_ctl = &ctls[(victim + 1) % ctls.len()];
        step!("failover {}: kill -9 {holder}", round + 1);
        servers[victim].kill()?;
        let killed = Instant::now();
        let moved = loop {
            if let Ok((Some(h), _)) = watcher_ctl.registry()
                && h != holder
            {
                break killed.elapsed();
            }
            if killed.elapsed() > Duration::from_secs(60) {
                bail!("the scheduler did not move within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        failovers.push(moved.as_secs_f64() * 1000.0);
        servers[victim].restart()?;
        let back = Instant::now();
        while !watcher_ctl.registry()?.1.contains(&holder) {
            if back.elapsed() > Duration::from_secs(60) {
                bail!("the restarted server did not show as running");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let failover = stats(failovers);

    // File replication.
    step!(
        "file replication: {} MiB to {} servers",
        args.file_mib,
        args.servers
    );
    let file = work.path().join("firmware.bin");
    {
        use std::io::Write as _;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file)?);
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..args.file_mib {
            for chunk in buf.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
            }
            f.write_all(&buf)?;
        }
    }
    let started = Instant::now();
    let uploaded = ctls[0].json(&[
        "files",
        "upload",
        file.to_str().context("path")?,
        "--as",
        "bench/firmware.bin",
    ])?;
    let upload_s = started.elapsed().as_secs_f64();
    let id = uploaded["id"].as_i64().context("file id")?;
    let copied_at = Instant::now();
    loop {
        let list = ctls[0].json(&["files", "list"])?;
        let present = list["files"]
            .as_array()
            .and_then(|fs| fs.iter().find(|f| f["id"] == id))
            .and_then(|f| f["replicas"].as_array())
            .map(|rs| rs.iter().filter(|r| r["status"] == "present").count())
            .unwrap_or(0);
        if present == args.servers as usize {
            break;
        }
        if copied_at.elapsed() > Duration::from_secs(600) {
            bail!("the file did not reach every server within 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let replicate_s = copied_at.elapsed().as_secs_f64();
    let mib = args.file_mib as f64;
    let copies = f64::from(args.servers - 1);

    let doc = json!({
        "bench": "ha",
        "at": super::unix_now(),
        "host_cores": super::host_cores(),
        "servers": args.servers,
        "event_propagation_ms": propagation,
        "scheduler_failover_ms": failover,
        "file_replication": {
            "mib": args.file_mib,
            "upload_s": upload_s,
            "upload_mib_per_s": mib / upload_s,
            "replicate_s": replicate_s,
            "copies": copies,
            "replicated_mib_per_s": mib * copies / replicate_s,
        },
    });
    let path = super::write_results("ha", &doc)?;
    eprintln!();
    super::print_table(
        &["measure", "p50", "p99", "max", "n"],
        &[
            vec![
                "event propagation ms".into(),
                super::fmt_number(propagation.get("p50"), 1),
                super::fmt_number(propagation.get("p99"), 1),
                super::fmt_number(propagation.get("max"), 1),
                propagation["count"].to_string(),
            ],
            vec![
                "scheduler failover ms".into(),
                super::fmt_number(failover.get("p50"), 0),
                super::fmt_number(failover.get("p99"), 0),
                super::fmt_number(failover.get("max"), 0),
                failover["count"].to_string(),
            ],
        ],
    );
    eprintln!(
        "file of {} MiB: upload {:.1} MiB/s; copied to {} servers in {:.2} s ({:.1} MiB/s replicated)",
        args.file_mib,
        mib / upload_s,
        copies,
        replicate_s,
        mib * copies / replicate_s
    );
    eprintln!();
    step!("results written to {}", util::display_path(&path));
    drop(servers);
    drop(pg);
    Ok(())
}
