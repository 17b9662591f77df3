//! `cargo xtask bench herd`: N simulated devices register at once.
//!
//! Every (backend, device count) pair gets a fresh server and data directory
//! (and a fresh PostgreSQL database), so each run measures first
//! registrations.

use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;

use super::{Backend, DatabaseSource, Server};
use crate::util::{self, step};

/// Arguments of `cargo xtask bench herd`.
#[derive(Debug, Args)]
pub struct HerdArgs {
    /// Device counts to run, one fresh server each.
    #[arg(long, value_delimiter = ',', default_value = "10000,50000")]
    devices: Vec<u64>,
    /// Concurrent device sessions in the simulator.
    #[arg(long, default_value_t = 256)]
    concurrency: u32,
    /// Database backends to run against.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<Backend>,
}

/// Runs the herd benchmark.
pub fn run(args: HerdArgs) -> anyhow::Result<()> {
    if args.devices.is_empty() || args.backends.is_empty() {
        bail!("nothing to run: --devices and --backends must not be empty");
    }
    super::build_release(&["ums-server", "ums-devsim"])?;
    let devsim = super::release_bin("ums-devsim");
    super::ensure_exists(&super::release_bin("ums-server"))?;
    super::ensure_exists(&devsim)?;

    let mut runs = Vec::new();
    for &backend in &args.backends {
        let source = DatabaseSource::start(backend)?;
        for &devices in &args.devices {
            step!(
                "herd: backend {}, {devices} devices, concurrency {}",
                backend.name(),
                args.concurrency
            );
            let db = source.database(&format!("herd_{devices}_{}", super::unix_now()))?;
            let server = Server::start(db.as_deref())?;
            step!(
                "ums-server ready: devices on {}, admin on {}",
                server.device_url(),
                server.admin_addr
            );

            let mut cmd = Command::new(&devsim);
            cmd.arg("--addr")
                .arg(server.device_url())
                .arg("--ca")
                .arg(server.ca_path())
                .args(["--devices", &devices.to_string()])
                .args(["--concurrency", &args.concurrency.to_string()])
                .args(["--prefix", &format!("bench{devices}")])
                .arg("--json")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            step!("{}", util::render(&cmd));
            let cpu_before = server.cpu_seconds();
            let out = cmd
                .output()
                .with_context(|| format!("could not run {}", devsim.display()))?;
            if !out.status.success() {
                bail!(
                    "ums-devsim failed ({}); server log:\n{}",
                    out.status,
                    server.log_tail(30)
                );
            }
            let result = super::last_json_line(&out.stdout)
                .context("could not read the ums-devsim result")?;
            // The simulator shares the machine's cores with the server; the server's own CPU
            // time tells what one server core does when devices are real.
            let server_cpu_s = match (cpu_before, server.cpu_seconds()) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            };
            server.stop()?;
            let ok = result
                .get("ok")
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0);
            runs.push(json!({
                "backend": backend.name(),
                "devices": devices,
                "concurrency": args.concurrency,
                "server_cpu_s": server_cpu_s,
                "devices_per_server_cpu_s": server_cpu_s.filter(|s| *s > 0.0).map(|s| ok / s),
                "result": result,
            }));
        }
    }

    let doc = json!({
        "bench": "herd",
        "at": super::unix_now(),
        "host_cores": super::host_cores(),
        "runs": runs,
    });
    let path = super::write_results("herd", &doc)?;

    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|run| {
            let result = &run["result"];
            vec![
                run["backend"].as_str().unwrap_or("?").to_owned(),
                run["devices"].to_string(),
                super::fmt_number(result.get("ops_per_s"), 1),
                super::fmt_number(result.pointer("/total/p50_ms"), 2),
                super::fmt_number(result.pointer("/total/p99_ms"), 2),
                super::fmt_number(result.get("elapsed_s"), 1),
                super::fmt_number(run.get("devices_per_server_cpu_s"), 0),
            ]
        })
        .collect();
    eprintln!();
    super::print_table(
        &[
            "backend",
            "devices",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "elapsed s",
            "devices/server-cpu-s",
        ],
        &rows,
    );
    eprintln!();
    step!("results written to {}", util::display_path(&path));
    Ok(())
}
