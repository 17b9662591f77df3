//! `ums-devsim`: registers and checks in many simulated devices and reports throughput and
//! latencies. Exits with status 1 when any device failed.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use clap::builder::TypedValueParser as _;
use indicatif::{ProgressBar, ProgressStyle};
use ums_devsim::{Latency, Report, SimConfig};

/// Simulates devices against the device API: each registers with its own secret over its own
/// connection, then checks in and downloads its settings when they changed.
#[derive(Debug, Parser)]
#[command(name = "ums-devsim", version)]
struct Args {
    /// Device API address, or several separated by commas (e.g. every broker of a network):
    /// each device uses the first and moves on to the next as soon as a call cannot reach
    /// the one in use, as a device with a list of load balancers does.
    #[arg(long, default_value = "https://127.0.0.1:30001")]
    addr: String,
    /// PEM file of the CA that signed the server certificate.
    #[arg(long, value_name = "PATH")]
    ca: PathBuf,
    /// Number of devices to simulate.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    devices: usize,
    /// Most devices in flight at once.
    #[arg(long, value_name = "C", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    concurrency: usize,
    /// Unit id prefix (unit ids are PREFIX-00000000, ...); random per run by default.
    #[arg(long)]
    prefix: Option<String>,
    /// Check-ins per device after registering.
    #[arg(long, value_name = "K", default_value_t = 1)]
    checkins: usize,
    /// Times a device whose registration failed tries again, on a new connection after a
    /// random wait (up to a second per try so far); retries are counted in the report.
    #[arg(long, value_name = "N", default_value_t = 0)]
    retries: usize,
    /// Print the report as one JSON line on stdout, and no progress bar.
    #[arg(long)]
    json: bool,
    /// Instead of a herd: one device (unit id PREFIX, default watch-0) registers, then checks
    /// in every MS milliseconds until stopped, reporting the settings revision it applies;
    /// whenever its settings changed it downloads them and prints a JSON line with the time,
    /// the new revision and the number of settings. Shows a device picking up new settings,
    /// and measures how fast a change reaches it.
    #[arg(long, value_name = "MS")]
    watch_ms: Option<u64>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let ca_pem = std::fs::read(&args.ca)
        .with_context(|| format!("cannot read ca file {}", args.ca.display()))?;
    if let Some(ms) = args.watch_ms {
        let unit = args.prefix.unwrap_or_else(|| "watch-0".into());
        return watch(&args.addr, &ca_pem, &unit, ms).await;
    }
    let mut cfg = SimConfig::new(args.addr, ca_pem);
    cfg.devices = args.devices;
    cfg.concurrency = args.concurrency;
    cfg.checkins = args.checkins;
    cfg.retries = args.retries;
    if let Some(prefix) = args.prefix {
        cfg.prefix = prefix;
    }

    let progress = (!args.json && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(cfg.devices as u64);
        if let Ok(style) = ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} devices ({per_sec}, eta {eta})",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    });

    let prefix = cfg.prefix.clone();
    let report = ums_devsim::run(cfg, progress).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", human(&report, &prefix));
    }
    Ok(if report.errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One device checking in every `ms` with the revision it applies, downloading its settings
/// when they changed and printing `{"event": "settings_changed", "at_ms": .., "revision": ..,
/// "settings": ..}` lines. Transient errors are printed as events too and the device goes on.
async fn watch(addr: &str, ca_pem: &[u8], unit: &str, ms: u64) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    };
    let mut dev = ums_devsim::DeviceClient::connect(addr, ca_pem).await?;
    let reg = dev.register(unit, unit).await?;
    dev.check_in("idle", 0).await?;
    let mut known = dev.get_settings().await?.revision;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}",
        serde_json::json!({"event": "ready", "device_id": reg.device_id, "revision": known})
    )?;
    out.flush()?;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(ms.max(1)));
    loop {
        tick.tick().await;
        match dev.check_in("idle", known).await {
            Ok(r) if r.settings_changed => {
                // When the device learnt of the change; the download follows.
                let at_ms = now_ms();
                let event = match dev.get_settings().await {
                    Ok(s) => {
                        known = s.revision;
                        serde_json::json!({"event": "settings_changed", "at_ms": at_ms, "revision": known, "settings": s.settings.len()})
                    }
                    // `known` stays: the next check-in announces the change again.
                    Err(e) => {
                        serde_json::json!({"event": "error", "at_ms": now_ms(), "message": e.message()})
                    }
                };
                writeln!(out, "{event}")?;
                out.flush()?;
            }
            Ok(_) => {}
            Err(e) => {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"event": "error", "at_ms": now_ms(), "message": e.message()})
                )?;
                out.flush()?;
            }
        }
    }
}

fn latency_line(name: &str, l: &Latency) -> String {
    format!(
        "{name:<10} p50 {:>9.2} ms   p99 {:>9.2} ms   max {:>9.2} ms   ({} calls)\n",
        l.p50_ms, l.p99_ms, l.max_ms, l.count
    )
}

/// The report as readable text.
fn human(report: &Report, prefix: &str) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "devices    {} (prefix {prefix})\n",
        report.devices
    ));
    out.push_str(&format!("ok         {}\n", report.ok));
    out.push_str(&format!("errors     {}\n", report.errors));
    if report.retries > 0 {
        out.push_str(&format!(
            "retries    {} ({} devices registered after a retry)\n",
            report.retries, report.ok_after_retry
        ));
    }
    out.push_str(&format!("elapsed    {:.2} s\n", report.elapsed_s));
    out.push_str(&format!(
        "throughput {:.1} ops/s ({} register and check-in calls)\n",
        report.ops_per_s, report.ops
    ));
    out.push_str(&latency_line("register", &report.register));
    out.push_str(&latency_line("check-in", &report.checkin));
    if report.settings.count > 0 {
        out.push_str(&latency_line("settings", &report.settings));
    }
    out.push_str(&latency_line("device", &report.total));
    if !report.error_samples.is_empty() {
        out.push_str("error samples:\n");
        for sample in &report.error_samples {
            out.push_str(&format!("  {sample}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_defaults() {
        let args = Args::try_parse_from(["ums-devsim", "--ca", "ca.pem"]).expect("parse");
        assert_eq!(args.addr, "https://127.0.0.1:30001");
        assert_eq!(args.devices, 1000);
        assert_eq!(args.concurrency, 64);
        assert_eq!(args.checkins, 1);
        assert!(args.prefix.is_none());
        assert!(!args.json);
    }

    #[test]
    fn requires_ca_and_positive_concurrency() {
        assert!(Args::try_parse_from(["ums-devsim"]).is_err());
        assert!(Args::try_parse_from(["ums-devsim", "--ca", "x", "--concurrency", "0"]).is_err());
    }

    #[test]
    fn human_output_lists_errors() {
        let report = Report {
            devices: 2,
            ok: 1,
            errors: 1,
            error_samples: vec!["register: Unavailable: down".into()],
            ..Report::default()
        };
        let text = human(&report, "simabc");
        assert!(text.contains("errors     1"));
        assert!(text.contains("register: Unavailable: down"));
    }
}
