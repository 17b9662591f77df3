//! `cargo xtask bench storm`: N devices connecting at once through one `ums-broker` to one
//! `ums-server` (SQLite, fresh data directory).
//!
//! Every device opens its own TLS connection and registers, all at the same moment (the
//! simulators' concurrency is the device count); a device that is refused or cut tries again
//! after a random wait (`ums-devsim --retries`). The devices are split over several simulator
//! processes, since each holds a descriptor per device. What is measured: whether the server
//! and the broker are still running afterwards, how many devices registered at once and after
//! retries and what the refused ones were told, the peak descriptors of the server and the
//! broker, and the server's peak resident memory (VmHWM).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use super::Server;
use crate::util::{self, step};

/// Arguments of `cargo xtask bench storm`.
#[derive(Debug, Args)]
pub struct StormArgs {
    /// Devices connecting at once.
    #[arg(long, default_value_t = 20_000)]
    devices: u64,
    /// Simulator processes the devices are split over.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    simulators: u64,
    /// Times a refused device tries again.
    #[arg(long, default_value_t = 8)]
    retries: u32,
    /// Run the debug binaries as they are built (`cargo build --bins`), without a release
    /// build: for a quick check of the limits; memory and time figures are a release build's
    /// only without it.
    #[arg(long)]
    debug: bool,
}

/// Descriptors a process has open, from /proc.
fn open_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// Runs the storm benchmark.
pub fn run(args: StormArgs) -> anyhow::Result<()> {
    let nofile = super::broker::raise_nofile();
    step!("open-files limit {nofile} (inherited by the server, the broker and the simulators)");
    let bins = ["ums-server", "ums-broker", "ums-devsim"];
    let bin = |name: &str| {
        if args.debug {
            util::profile_dir(false).join(name)
        } else {
            super::release_bin(name)
        }
    };
    if args.debug {
        step!("--debug: the debug binaries as built (`cargo build --bins`)");
    } else {
        super::build_release(&bins)?;
    }
    for b in bins {
        super::ensure_exists(&bin(b))?;
    }

    let mut server = Server::start_from(&bin("ums-server"), None, &[], None)?;
    let broker = super::broker::start_broker_bin(&bin("ums-broker"), server.device_addr)?;
    step!(
        "ums-server on {}, ums-broker on {}",
        server.device_addr,
        broker.addr
    );

    // Peak descriptors of the server and the broker, sampled while the storm lasts.
    let stop = Arc::new(AtomicBool::new(false));
    let (server_fds, broker_fds) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let sampler = {
        let (stop, s, b) = (stop.clone(), server_fds.clone(), broker_fds.clone());
        let (sp, bp) = (server.pid(), broker.child.id());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(n) = open_fds(sp) {
                    s.fetch_max(n, Ordering::Relaxed);
                }
                if let Some(n) = open_fds(bp) {
                    b.fetch_max(n, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let per = args.devices.div_ceil(args.simulators);
    step!(
        "{} devices at once through the broker: {} simulators of {per}, up to {} retries each",
        args.devices,
        args.simulators,
        args.retries
    );
    let started = Instant::now();
    let mut children = Vec::new();
    for k in 0..args.simulators {
        let n = per.min(args.devices.saturating_sub(k * per));
        if n == 0 {
            break;
        }
        let mut cmd = Command::new(bin("ums-devsim"));
        cmd.arg("--addr")
            .arg(format!("https://{}", broker.addr))
            .arg("--ca")
            .arg(server.ca_path())
            .args(["--devices", &n.to_string()])
            .args(["--concurrency", &n.to_string()])
            .args(["--retries", &args.retries.to_string()])
            .args(["--checkins", "1"])
            .args(["--prefix", &format!("storm{k}")])
            .arg("--json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        children.push(cmd.spawn().context("start ums-devsim")?);
    }
    let mut results = Vec::new();
    for child in children {
        let out = child.wait_with_output().context("wait for ums-devsim")?;
        match super::last_json_line(&out.stdout) {
            Ok(v) => results.push(v),
            Err(e) => bail!("ums-devsim ({}) gave no report: {e:#}", out.status),
        }
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();

    let sum = |key: &str| -> u64 {
        results
            .iter()
            .filter_map(|r| r.get(key).and_then(Value::as_u64))
            .sum()
    };
    let mut refused_told: Vec<String> = Vec::new();
    for r in &results {
        for key in ["retried_error_samples", "error_samples"] {
            for e in r[key].as_array().into_iter().flatten() {
                if let Some(e) = e.as_str()
                    && refused_told.len() < 10
                    && !refused_told.iter().any(|x| x == e)
                {
                    refused_told.push(e.to_owned());
                }
            }
        }
    }
    let server_alive = server.running();
    let server_peak_rss_mb =
        super::broker::status_kb(server.pid(), "VmHWM:").map(|kb| kb as f64 / 1024.0);
    let broker_peak_rss_mb =
        super::broker::status_kb(broker.child.id(), "VmHWM:").map(|kb| kb as f64 / 1024.0);
    let mut broker_child = broker.child;
    let broker_alive = matches!(broker_child.try_wait(), Ok(None));
    let ok = sum("ok");
    let doc = json!({
        "bench": "storm",
        "at": super::unix_now(),
        "host_cores": super::host_cores(),
        "build": if args.debug { "debug" } else { "release" },
        "open_files_limit": nofile,
        "devices": args.devices,
        "simulators": args.simulators,
        "elapsed_s": elapsed_s,
        "registered": ok,
        "registered_after_retry": sum("ok_after_retry"),
        "retries": sum("retries"),
        "failed": sum("errors"),
        "what_refused_devices_were_told": refused_told,
        "server_running_after": server_alive,
        "broker_running_after": broker_alive,
        "server_peak_rss_mb": server_peak_rss_mb,
        "broker_peak_rss_mb": broker_peak_rss_mb,
        "server_peak_fds": server_fds.load(Ordering::Relaxed),
        "broker_peak_fds": broker_fds.load(Ordering::Relaxed),
        "simulator_reports": results,
    });
    let path = super::write_results("storm", &doc)?;
    eprintln!();
    super::print_table(
        &[
            "devices",
            "registered",
            "after retry",
            "retries",
            "failed",
            "server peak RSS MB",
            "server fds",
            "broker fds",
            "elapsed s",
        ],
        &[vec![
            args.devices.to_string(),
            ok.to_string(),
            sum("ok_after_retry").to_string(),
            sum("retries").to_string(),
            sum("errors").to_string(),
            super::fmt_number(doc.get("server_peak_rss_mb"), 1),
            server_fds.load(Ordering::Relaxed).to_string(),
            broker_fds.load(Ordering::Relaxed).to_string(),
            format!("{elapsed_s:.1}"),
        ]],
    );
    for e in &refused_told {
        eprintln!("  refused: {e}");
    }
    eprintln!();
    step!("results written to {}", util::display_path(&path));
    if !server_alive || !broker_alive {
        bail!(
            "the storm stopped {}; server log:\n{}",
            if server_alive {
                "the broker"
            } else {
                "the server"
            },
            server.log_tail(30)
        );
    }
    server.stop()?;
    Ok(())
}
