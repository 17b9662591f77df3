//! `cargo xtask bench swp`: Shared Workplace logins against a real slapd.
//!
//! A fresh release server (SQLite) and swp-auth, a slapd holding the Active Directory look-alike
//! with N users in nested groups and OUs; `ums-swp-load` sets up the directory, profiles and
//! licences through the admin API, registers the devices, warms up, then logs users in from every
//! device at the given concurrency, and between the logins devices with a user logged in check
//! in while a group's profile keeps changing, downloading the user's merged settings when told
//! they changed. Goal: p99 under 50 ms at 1,000 logins/s or more.

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;
use ums_testkit::ldap::{AD_DOMAIN, AD_NETBIOS, AD_SUFFIX, SERVICE_PASSWORD, Slapd, TestDirectory};
use ums_testkit::{ChildGuard, free_port, wait_for_tcp};

use super::Server;
use crate::util::{self, step};

/// Arguments of `cargo xtask bench swp`.
#[derive(Debug, Args)]
pub struct SwpArgs {
    /// Users in the directory.
    #[arg(long, default_value_t = 5000)]
    users: usize,
    /// Devices logging users in.
    #[arg(long, default_value_t = 256)]
    devices: usize,
    /// Logins in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 20)]
    duration_s: u64,
    /// Check-ins of devices with a user logged in after each login (0: logins only).
    #[arg(long, default_value_t = 2)]
    checkins_per_login: usize,
    /// How often a group's profile changes while its users are logged in, in ms (0: never).
    #[arg(long, default_value_t = 500)]
    change_every_ms: u64,
}

/// Runs the benchmark.
pub fn run(args: SwpArgs) -> anyhow::Result<()> {
    super::build_release(&["ums-server", "swp-auth", "ums-devsim"])?;
    let load = super::release_bin("ums-swp-load");
    let swp_bin = super::release_bin("swp-auth");
    super::ensure_exists(&load)?;
    super::ensure_exists(&swp_bin)?;

    step!(
        "slapd: generating {} users in nested groups and OUs",
        args.users
    );
    let slapd = Slapd::start(&TestDirectory::many(args.users))?;
    step!("slapd listening on {}", slapd.ldaps_url());

    let swp_port = free_port();
    let swp_url = format!("https://127.0.0.1:{swp_port}");
    let server = Server::start_with(None, &[("UMS_SWP__URL", swp_url.as_str())], None)?;
    step!("ums-server ready: devices on {}", server.device_url());

    let work = tempfile::Builder::new()
        .prefix("ums-bench-swp-")
        .tempdir()?;
    let identity = work.path().join("identity");
    ums_testkit::ldap::issue_swp_auth_identity(
        &server.data_dir().join("tls"),
        "swp-auth-bench",
        &identity,
    )?;
    let log = work.path().join("swp-auth.log");
    let mut swp = ChildGuard::new(
        Command::new(&swp_bin)
            .env("UMS_NETWORK__IDENTITY_DIR", &identity)
            .env("UMS_INTERNAL__LISTEN", format!("127.0.0.1:{swp_port}"))
            .env("UMS_LOG__LEVEL", "warn")
            // The load logs the same users in again and again: lift the limits.
            .env("UMS_LIMITS__USER_BURST", "1000000")
            .env("UMS_LIMITS__USER_PER_MINUTE", "1000000")
            .env("UMS_LIMITS__DEVICE_BURST", "1000000")
            .env("UMS_LIMITS__DEVICE_PER_MINUTE", "1000000")
            .stdin(Stdio::null())
            .stdout(File::create(&log)?)
            .stderr(File::create(work.path().join("swp-auth.err"))?)
            .spawn()
            .context("start swp-auth")?,
    );
    let started = Instant::now();
    while wait_for_tcp(
        ([127, 0, 0, 1], swp_port).into(),
        Duration::from_millis(200),
    )
    .is_err()
    {
        if let Some(st) = swp.try_wait()? {
            bail!("swp-auth exited ({st})");
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("swp-auth did not listen within 30 s");
        }
    }

    let directory = work.path().join("directory.json");
    std::fs::write(
        &directory,
        serde_json::to_string(&json!({
            "name": "corp",
            "kind": "ad",
            "domain": AD_DOMAIN,
            "netbios": AD_NETBIOS,
            "urls": [slapd.ldaps_url()],
            "base_dn": AD_SUFFIX,
            "bind_dn": format!("cn=svc-ums,ou=Service,{AD_SUFFIX}"),
            "bind_password": SERVICE_PASSWORD,
            "ca_pem": slapd.ca_pem(),
        }))?,
    )?;
    let mut cmd = Command::new(&load);
    cmd.arg("--addr")
        .arg(server.device_url())
        .arg("--admin")
        .arg(format!("https://{}", server.admin_addr))
        .arg("--ca")
        .arg(server.ca_path())
        .arg("--admin-password-file")
        .arg(server.data_dir().join("initial-admin-password"))
        .arg("--directory-json")
        .arg(&directory)
        .args(["--devices", &args.devices.to_string()])
        .args(["--users", &args.users.to_string()])
        .args(["--concurrency", &args.concurrency.to_string()])
        .args(["--duration-s", &args.duration_s.to_string()])
        .args(["--checkins-per-login", &args.checkins_per_login.to_string()])
        .args(["--change-every-ms", &args.change_every_ms.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    step!("{}", util::render(&cmd));
    let mut child = cmd.spawn().context("run ums-swp-load")?;
    // The load's progress goes on to the terminal; the server's CPU time is read when the
    // measured window begins, so it counts the window's work only (not the set-up or the
    // warm-up).
    let progress = child.stderr.take().context("ums-swp-load's stderr")?;
    let mut cpu_at_start = None;
    for line in std::io::BufRead::lines(std::io::BufReader::new(progress)) {
        let Ok(line) = line else { break };
        if line.starts_with("measuring") {
            cpu_at_start = server.cpu_seconds();
        }
        eprintln!("{line}");
    }
    let out = child.wait_with_output().context("run ums-swp-load")?;
    let cpu_at_end = server.cpu_seconds();
    if !out.status.success() {
        bail!(
            "ums-swp-load failed ({}); server log:\n{}\nswp-auth log:\n{}",
            out.status,
            server.log_tail(30),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let result = super::last_json_line(&out.stdout)?;
    let server_cpu_s = match (cpu_at_start, cpu_at_end) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    swp.stop();
    server.stop()?;
    drop(slapd);

    let logins_per_s = result
        .get("logins_per_s")
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0);
    let p99 = result
        .pointer("/latency/p99_ms")
        .and_then(|v| v.as_f64())
        .unwrap_or(f64::MAX);
    let doc = json!({
        "bench": "swp",
        "at": super::unix_now(),
        "host_cores": super::host_cores(),
        "users": args.users,
        "devices": args.devices,
        "concurrency": args.concurrency,
        "directory": "slapd (Active Directory look-alike), ldaps",
        "logins_per_s": logins_per_s,
        "p50_ms": result.pointer("/latency/p50_ms"),
        "p99_ms": p99,
        "checkins_per_login": args.checkins_per_login,
        "checkins_per_s": result.get("checkins_per_s"),
        "checkin_p99_ms": result.pointer("/checkin_latency/p99_ms"),
        "settings_changed": result.get("settings_changed"),
        "user_settings": result.get("user_settings"),
        "profile_changes": result.get("profile_changes"),
        // Over the measured window; per login with the check-ins between the logins.
        "server_cpu_s": server_cpu_s,
        "server_cpu_ms_per_login": server_cpu_s
            .zip(result["logins"].as_f64())
            .filter(|(_, n)| *n > 0.0)
            .map(|(s, n)| s * 1000.0 / n),
        "goal": { "p99_ms_below": 50.0, "logins_per_s_at_least": 1000.0 },
        "goal_met": p99 < 50.0 && logins_per_s >= 1000.0,
        "result": result,
    });
    let path = super::write_results("swp", &doc)?;
    eprintln!();
    super::print_table(
        &[
            "logins/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "check-ins/s",
            "check-in p99 ms",
            "user settings",
            "server ms/login",
            "errors",
            "goal met",
        ],
        &[vec![
            format!("{logins_per_s:.0}"),
            super::fmt_number(result.pointer("/latency/p50_ms"), 2),
            format!("{p99:.2}"),
            super::fmt_number(result.pointer("/latency/max_ms"), 2),
            super::fmt_number(result.get("checkins_per_s"), 0),
            super::fmt_number(result.pointer("/checkin_latency/p99_ms"), 2),
            result["user_settings"].to_string(),
            super::fmt_number(doc.get("server_cpu_ms_per_login"), 3),
            result["errors"].to_string(),
            doc["goal_met"].to_string(),
        ]],
    );
    eprintln!();
    step!("results written to {}", util::display_path(&path));
    Ok(())
}
