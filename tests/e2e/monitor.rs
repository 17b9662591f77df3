//! Watching the network as an administrator does: `umsctl network check` on three servers and two
//! brokers (all green, then a stopped broker, a skewed clock, a file gone from a disk and a
//! component with another network's token), its HTML report rendered by headless Chromium, the
//! server's metrics, and the audit log of a profile change.

use std::process::{Command, Stdio};
use std::time::Duration;

use sha2::Digest;
use ums_testkit::{bin_path, free_port};

use crate::harness::{Broker, HA_ENV, Server, Umsctl, eventually, sample, scrape, text};

/// Runs `umsctl network check --fresh --json` (and `--html FILE`); the parsed report and whether
/// it exited 0.
fn check(ctl: &Umsctl, html: Option<&std::path::Path>) -> (serde_json::Value, bool, String) {
    let mut args = vec!["--json", "network", "check", "--fresh"];
    let html_arg;
    if let Some(h) = html {
        html_arg = h.to_str().expect("path").to_owned();
        args.extend(["--html", html_arg.as_str()]);
    }
    let out = ctl.raw(&args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let report: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out)));
    (
        report,
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every file under `dir`, recursively.
fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn rows(report: &serde_json::Value) -> Vec<serde_json::Value> {
    report["results"].as_array().cloned().unwrap_or_default()
}

fn not_ok(report: &serde_json::Value) -> Vec<String> {
    rows(report)
        .iter()
        .filter(|r| r["status"] == "failed" || r["status"] == "warning")
        .map(|r| {
            format!(
                "{} | {} | {} | {}",
                r["section"], r["checked"], r["result"], r["fix"]
            )
        })
        .collect()
}

/// The failed row of `section` whose text mentions every one of `words`, with a cause and a fix.
fn failed_row(report: &serde_json::Value, section: &str, words: &[&str]) -> serde_json::Value {
    rows(report)
        .into_iter()
        .find(|r| {
            let all = format!("{} {}", r["checked"], r["result"]);
            r["section"] == section
                && r["status"] == "failed"
                && words.iter().all(|w| all.contains(w))
        })
        .map(|r| {
            assert!(
                !r["cause"].as_str().unwrap_or_default().is_empty()
                    && !r["fix"].as_str().unwrap_or_default().is_empty(),
                "a failed check names its cause and fix: {r}"
            );
            r
        })
        .unwrap_or_else(|| {
            panic!(
                "no failed `{section}` row mentioning {words:?} in:\n{}",
                not_ok(report).join("\n")
            )
        })
}

fn broker_env<'a>(
    join: &'a str,
    token_file: &'a str,
    data: &'a str,
    id: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("UMS_RATE__PER_SECOND", "0"),
        ("UMS_NETWORK__SERVERS", join),
        ("UMS_NETWORK__TOKEN_FILE", token_file),
        ("UMS_DATA_DIR", data),
        ("UMS_NETWORK__ID", id),
        ("UMS_NETWORK__ADVERTISE_HOST", "127.0.0.1"),
        ("UMS_NETWORK__HEARTBEAT_MS", "250"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_network_check_names_a_stopped_broker_a_skewed_clock_a_lost_file_and_a_foreign_token() {
    let chromium = ums_testkit::chromium_path().expect(
        "headless Chromium renders the HTML report: install the `chromium` package (`cargo xtask test` does)",
    );
    let url = ums_testkit::shared_database("e2e_check").expect("postgres");
    let metrics_a = free_port();
    let metrics_a_text = format!("127.0.0.1:{metrics_a}");
    let mut env: Vec<(&str, &str)> = HA_ENV.to_vec();
    env.push(("UMS_NETWORK__ADVERTISE_HOST", "127.0.0.1"));
    let mut env_a = env.clone();
    env_a.push(("UMS_METRICS__LISTEN", metrics_a_text.as_str()));
    let a = Server::start_with(tempfile::tempdir().expect("dir"), Some(&url), &env_a);
    let token = a.token();
    let with_token = || {
        let data = tempfile::tempdir().expect("dir");
        let dir = data.path().join("data");
        std::fs::create_dir_all(&dir).expect("data dir");
        std::fs::write(dir.join("network-token"), format!("{token}\n")).expect("token");
        data
    };
    let metrics_b = free_port();
    let metrics_b_text = format!("127.0.0.1:{metrics_b}");
    let mut env_b = env.clone();
    env_b.push(("UMS_METRICS__LISTEN", metrics_b_text.as_str()));
    let b = Server::start_with(with_token(), Some(&url), &env_b);
    let c = Server::start_with(with_token(), Some(&url), &env);
    let password = a.admin_password();
    let ctl = a.umsctl();

    let work = tempfile::tempdir().expect("work");
    let token_file = work.path().join("token");
    std::fs::write(&token_file, &token).expect("token file");
    let join = format!("{},{},{}", a.admin_addr(), b.admin_addr(), c.admin_addr());
    let tf = token_file.to_str().expect("path").to_owned();
    let d1 = work
        .path()
        .join("broker-1")
        .to_str()
        .expect("path")
        .to_owned();
    let d2 = work
        .path()
        .join("broker-2")
        .to_str()
        .expect("path")
        .to_owned();
    let broker1 = Broker::start(&[], &broker_env(&join, &tf, &d1, "broker-check-1"));
    let mut broker2 = Broker::start(&[], &broker_env(&join, &tf, &d2, "broker-check-2"));

    // A file on every server.
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let sha = hex::encode(sha2::Sha256::digest(&content));
    let local = work.path().join("firmware.bin");
    std::fs::write(&local, &content).expect("file");
    ctl.ok(&[
        "files",
        "upload",
        local.to_str().expect("path"),
        "--as",
        "firmware/check.bin",
    ]);

    // Everything green: three servers, two brokers that know all three, the file everywhere.
    let green = eventually(Duration::from_secs(30), || async {
        let (report, ok, _) = check(&ctl, None);
        let brokers_know_all = rows(&report).iter().any(|r| {
            r["checked"] == "servers known to broker broker-check-2"
                && r["result"]
                    .as_str()
                    .unwrap_or_default()
                    .matches(" up")
                    .count()
                    == 3
        });
        (ok && report["failed"] == 0 && report["warnings"] == 0 && brokers_know_all)
            .then_some(report)
    })
    .await;
    let green = green.unwrap_or_else(|| {
        let (report, _, _) = check(&ctl, None);
        panic!(
            "the check did not turn green:\n{}",
            not_ok(&report).join("\n")
        )
    });
    let ids: Vec<String> = [&a, &b, &c].iter().map(|s| s.process_id()).collect();
    let pairs: Vec<(String, String)> = rows(&green)
        .iter()
        .filter(|r| {
            r["section"] == "messaging" && r["status"] == "ok" && r["rtt_us"].as_i64() > Some(0)
        })
        .map(|r| {
            (
                r["from"].as_str().unwrap_or_default().to_owned(),
                r["to"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for from in &ids {
        for to in &ids {
            if from != to {
                assert!(
                    pairs.contains(&(from.clone(), to.clone())),
                    "no round trip {from} -> {to} in {pairs:?}"
                );
            }
        }
    }
    for s in &ids[1..] {
        assert!(
            rows(&green)
                .iter()
                .any(|r| r["checked"] == format!("event {} -> {s}", ids[0]) && r["status"] == "ok"),
            "the event from {} to {s} is timed",
            ids[0]
        );
    }
    // A probe file copied from the checking server to the two others, then gone from every disk.
    assert!(
        rows(&green).iter().any(|r| r["section"] == "files"
            && r["status"] == "ok"
            && r["checked"] == format!("probe file from {}", ids[0])
            && r["result"]
                .as_str()
                .unwrap_or_default()
                .starts_with("copied to 2 other servers and verified")),
        "no probe file row in the green report:\n{:#?}",
        rows(&green)
    );
    for s in [&a, &b, &c] {
        let store = s.data.path().join("data/files");
        let held: Vec<_> = walk_files(&store)
            .into_iter()
            .filter(|p| !p.starts_with(store.join("tmp")))
            .collect();
        assert_eq!(
            held.len(),
            1,
            "only the uploaded file stays in {}: {held:?}",
            store.display()
        );
    }
    for broker in ["broker-check-1", "broker-check-2"] {
        assert!(
            rows(&green).iter().any(|r| r["section"] == "device ports"
                && r["status"] == "ok"
                && r["checked"].as_str().unwrap_or_default().contains(broker)),
            "a handshake through {broker}'s device port"
        );
    }
    // What a check costs on this network, and what it measured.
    let started = std::time::Instant::now();
    let (timed, _, _) = check(&ctl, None);
    let took = started.elapsed();
    let times = |prefix: &str| -> Vec<f64> {
        let mut v: Vec<f64> = rows(&timed)
            .iter()
            .filter(|r| {
                r["section"] == "messaging"
                    && r["checked"]
                        .as_str()
                        .unwrap_or_default()
                        .starts_with(prefix)
            })
            .filter_map(|r| r["rtt_us"].as_i64())
            .filter(|us| *us > 0)
            .map(|us| us as f64 / 1000.0)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    println!(
        "network check of 3 servers and 2 brokers: {took:?} (umsctl included); round trips ms {:?}; event arrival ms {:?}",
        times("server "),
        times("event ")
    );
    let table = ctl.ok(&["network", "check"]);
    assert!(table.contains("all checks passed"), "{table}");
    assert!(
        table.contains("cached"),
        "a second check within a minute is the cached report: {table}"
    );

    // The faults.
    // 1. A broker stops.
    broker2.child.0.kill().expect("kill the broker");
    let _ = broker2.child.0.wait();
    // 2. A file disappears from B's disk.
    let on_b = b.data.path().join("data/files").join(&sha[..2]).join(&sha);
    std::fs::remove_file(&on_b).expect("remove the file from B's disk");
    // 3. C restarts with its clock two minutes ahead (the test hook of debug builds).
    let c_id = c.process_id();
    let Server { child, data, .. } = c;
    drop(child);
    let mut env_c = env.clone();
    env_c.push(("UMS_NETWORK__TEST_CLOCK_OFFSET_MS", "120000"));
    let c = Server::start_with(data, Some(&url), &env_c);
    // 4. A broker with another network's token tries to join.
    let foreign = ums_tls::NetworkToken::generate(&"ab".repeat(32)).expose();
    let foreign_file = work.path().join("foreign-token");
    std::fs::write(&foreign_file, foreign).expect("foreign token");
    let out = Command::new(bin_path("ums-broker"))
        .env("UMS_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("UMS_METRICS__LISTEN", "")
        .env("UMS_NETWORK__SERVERS", a.admin_addr())
        .env("UMS_NETWORK__TOKEN_FILE", &foreign_file)
        .env("UMS_DATA_DIR", work.path().join("intruder"))
        .env("UMS_NETWORK__ID", "broker-intruder")
        .stdin(Stdio::null())
        .output()
        .expect("run the foreign broker");
    assert!(
        !out.status.success(),
        "a foreign token must not join: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("network token mismatch"),
        "{}",
        text(&out)
    );

    let html = work.path().join("report.html");
    let b_id = b.process_id();
    let found = eventually(Duration::from_secs(30), || async {
        let (report, ok, _) = check(&ctl, Some(&html));
        let all = not_ok(&report).join("\n");
        let broker_gone = all.contains("\"broker broker-check-2\" | \"stopped");
        let skew = all.contains(&format!("clock of server {c_id}"));
        let file = all.contains(&format!("firmware/check.bin on server {b_id}"));
        let token = all.contains("another network's token");
        (!ok && broker_gone && skew && file && token).then_some(report)
    })
    .await;
    let report = found.unwrap_or_else(|| {
        let (report, _, _) = check(&ctl, None);
        panic!(
            "the check did not name the faults:\n{}",
            not_ok(&report).join("\n")
        )
    });
    let stopped = failed_row(&report, "device ports", &["broker-check-2"]);
    assert!(
        stopped["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("broker-check-2"),
        "{stopped}"
    );
    failed_row(&report, "messaging", &["broker-check-2", "stopped"]);
    let skew = failed_row(&report, "more checks", &["clock of server", &c_id, "ahead"]);
    assert!(
        skew["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("synchronise the clock"),
        "{skew}"
    );
    // The replicator may have copied the file back already: then it is reported as restored.
    let file_row = rows(&report)
        .into_iter()
        .find(|r| {
            r["section"] == "files"
                && r["status"] != "ok"
                && r["checked"] == format!("firmware/check.bin on server {b_id}")
        })
        .unwrap_or_else(|| {
            panic!(
                "the lost file is not named:\n{}",
                not_ok(&report).join("\n")
            )
        });
    assert!(
        file_row["result"]
            .as_str()
            .unwrap_or_default()
            .contains("missing from the"),
        "{file_row}"
    );
    assert!(
        !file_row["fix"].as_str().unwrap_or_default().is_empty(),
        "{file_row}"
    );
    let token_row = failed_row(
        &report,
        "more checks",
        &["network token", "another network's token"],
    );
    assert!(
        token_row["result"]
            .as_str()
            .unwrap_or_default()
            .contains("a broker from"),
        "{token_row}"
    );
    assert!(
        token_row["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("umsctl token export"),
        "{token_row}"
    );

    // The same in the table a terminal shows.
    let out = ctl.raw(&["network", "check"]);
    assert!(!out.status.success(), "a failed check exits non-zero");
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    for needle in [
        "broker-check-2".to_owned(),
        format!("clock of server {c_id}"),
        format!("firmware/check.bin on server {b_id}"),
        "another network's token".to_owned(),
        "fix: ".to_owned(),
    ] {
        assert!(
            table.contains(&needle),
            "`{needle}` missing from the table:\n{table}"
        );
    }
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed checks"));

    // The HTML report names them too, and renders in headless Chromium.
    let page = std::fs::read_to_string(&html).expect("html report");
    for needle in [
        "broker-check-2".to_owned(),
        format!("clock of server {c_id}"),
        format!("firmware/check.bin on server {b_id}"),
        "another network&#39;s token".to_owned(),
        "<table id=\"matrix\">".to_owned(),
    ] {
        assert!(
            page.contains(&needle),
            "`{needle}` missing from the HTML report"
        );
    }
    let shots = ums_testkit::workspace_root().join("target/network-check");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let shot = shots.join("report.png");
    let _ = std::fs::remove_file(&shot);
    let profile = work.path().join("chromium-profile");
    let out = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1400,2400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", html.display()))
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    let png = std::fs::read(&shot)
        .unwrap_or_else(|e| panic!("chromium wrote no screenshot ({e}): {}", text(&out)));
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
    assert!(
        png.len() > 20_000,
        "the screenshot shows a rendered page ({} bytes)",
        png.len()
    );
    println!("network check report rendered: {}", shot.display());

    // The server that ran the checks counted them, and the token mismatch.
    let m = scrape(metrics_a);
    assert!(
        sample(&m, "ums_server_requests_total{api=\"admin\",method=\"AdminService/NetworkCheck\",status=\"ok\"}")
            .is_some_and(|n| n >= 3.0),
        "{m}"
    );
    assert!(
        sample(&m, "ums_server_token_mismatches_total{kind=\"broker\"}").is_some_and(|n| n >= 1.0),
        "{m}"
    );
    assert!(
        sample(&m, "ums_server_db_pool_connections{state=\"max\"}") == Some(32.0),
        "{m}"
    );
    // B answered A's probes and received its probe events.
    let m = scrape(metrics_b);
    assert!(
        sample(&m, "ums_server_requests_total{api=\"internal\",method=\"NetworkService/Probe\",status=\"ok\"}")
            .is_some_and(|n| n >= 3.0),
        "A asked B for its probe: {m}"
    );
    assert!(
        sample(&m, "ums_server_event_lag_seconds_count").is_some_and(|n| n >= 3.0),
        "{m}"
    );
    assert!(
        sample(&m, "ums_server_events_received_total{event=\"probe\"}").is_some_and(|n| n >= 3.0),
        "{m}"
    );
    let _ = (password, broker1, c);
}

/// A profile change lands in the audit log with the administrator's name and address, and
/// `umsctl audit` filters by administrator, action and object.
#[tokio::test]
async fn the_audit_log_records_a_profile_change_with_the_admins_name() {
    let server = Server::start(None);
    let admin = server.umsctl();
    let out = admin.with_env(
        &[
            "admins",
            "create",
            "alice",
            "--permission",
            "settings:write",
            "--permission",
            "settings:read",
        ],
        &[("UMS_NEW_PASSWORD", "alice-password-1")],
    );
    assert!(out.contains("alice"), "{out}");
    let alice_dir = tempfile::tempdir().expect("dir");
    let alice = Umsctl::login_as(
        alice_dir.path(),
        &server.admin_url,
        &server.ca_path(),
        "alice",
        "alice-password-1",
    );
    let profile = alice.json(&["profiles", "create", "kiosk", "display.monitors=1"])["id"]
        .as_i64()
        .expect("profile id");
    alice.ok(&[
        "profiles",
        "set",
        &profile.to_string(),
        "display.monitors=2",
    ]);

    let entries = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut all = vec!["audit"];
        all.extend_from_slice(args);
        admin.json(&all)["entries"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let changes = entries(&["--admin", "alice", "--action", "UpdateProfileParams"]);
    assert_eq!(changes.len(), 1, "{changes:?}");
    let e = &changes[0];
    assert_eq!(e["admin"], "alice");
    assert_eq!(e["target"], format!("profile {profile}"));
    assert!(
        e["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("display.monitors"),
        "{e}"
    );
    assert!(
        e["source"]
            .as_str()
            .unwrap_or_default()
            .starts_with("127.0.0.1:"),
        "{e}"
    );
    assert!(e["at_ms"].as_i64().unwrap_or_default() > 0);
    // The admin's own changes (creating alice) are his, with the password redacted.
    let by_admin = entries(&["--admin", "admin"]);
    assert!(
        by_admin
            .iter()
            .any(|e| e["action"] == "CreateAdmin" && e["target"] == "admin alice"),
        "{by_admin:?}"
    );
    assert!(
        !serde_json::to_string(&by_admin)
            .expect("json")
            .contains("alice-password-1"),
        "a password never reaches the audit log"
    );
    assert!(by_admin.iter().all(|e| e["admin"] == "admin"));
    let by_target = entries(&["--target", &format!("profile {profile}")]);
    assert_eq!(by_target.len(), 2, "create and update: {by_target:?}");
    assert!(entries(&["--admin", "alice", "--since", "+1h"]).is_empty());
    assert_eq!(entries(&["--admin", "alice", "--since", "-1h"]).len(), 2);
    let table = admin.ok(&["audit", "--admin", "alice"]);
    assert!(
        table.contains("UpdateProfileParams") && table.contains("alice"),
        "{table}"
    );
    // Reading is not a change; and alice may not read the log.
    assert_eq!(entries(&["--action", "ListProfiles"]).len(), 0);
    let refused = alice.fails(&["audit"]);
    assert!(refused.contains("audit:read"), "{refused}");
    let bad = admin.fails(&["audit", "--since", "yesterday"]);
    assert!(bad.contains("invalid time"), "{bad}");
}
