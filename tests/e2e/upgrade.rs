//! A rolling upgrade of an HA network of three servers on PostgreSQL, with the real binaries:
//! the servers restart one at a time as the next release (a test-only expand step and contract
//! step, `UMS_TEST_SCHEMA_NEXT`), an old server restarted mid-rollout comes back, the contract
//! step runs once no old server is left, and devices checking in through two brokers (half of
//! them through each) see no failure.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ums_devsim::DeviceClient;

use crate::harness::{Broker, HA_ENV, Server, eventually};

/// One device's cycle through the broker: connect, register, check in. A cycle that fails is
/// retried once on a new connection, as devices do.
async fn device_cycle(url: &str, ca: &[u8], unit: &str) -> anyhow::Result<()> {
    let mut dev = DeviceClient::connect(url, ca).await?;
    dev.register(unit, unit).await?;
    dev.check_in("idle", 0).await?;
    Ok(())
}

fn next_env() -> Vec<(&'static str, &'static str)> {
    let mut env = HA_ENV.to_vec();
    env.push(("UMS_TEST_SCHEMA_NEXT", "minor"));
    env
}

async fn schema(url: &str) -> ums_db::SchemaVersion {
    let db = ums_db::Db::connect(url).await.expect("connect");
    let v = db
        .schema_version()
        .await
        .expect("version")
        .expect("a schema");
    db.close().await.ok();
    v
}

async fn modes(url: &str) -> Vec<(String, String, String)> {
    let db = ums_db::Db::connect(url).await.expect("connect");
    let (rows, now) = db.list_processes().await.expect("registry");
    db.close().await.ok();
    rows.into_iter()
        .filter(|r| r.kind == "server" && r.status == "running" && now - r.last_heartbeat < 1500)
        .map(|r| (r.id, r.mode, r.schema_max.unwrap_or_default()))
        .collect()
}

/// `umsctl --json update status`, as an administrator follows the rollout.
fn update_status(ctl: &crate::harness::Umsctl) -> serde_json::Value {
    ctl.json(&["update", "status"])
}

fn text_of(v: &serde_json::Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_owned()
}

/// The history's step of version `v`: (phase, applied_by, applied_at_ms).
fn history_step(
    status: &serde_json::Value,
    v: ums_db::SchemaVersion,
) -> Option<(String, String, i64)> {
    status["history"]
        .as_array()?
        .iter()
        .find(|h| text_of(h, "version") == v.to_string())
        .map(|h| {
            (
                text_of(h, "phase"),
                text_of(h, "applied_by"),
                h["applied_at_ms"].as_i64().unwrap_or(0),
            )
        })
}

/// The contract step `contracted` as `umsctl update status` lists it among the pending steps:
/// (phase, waits_for).
fn pending_step(status: &serde_json::Value, contracted: ums_db::SchemaVersion) -> (String, String) {
    let step = status["pending"]
        .as_array()
        .and_then(|p| {
            p.iter()
                .find(|w| text_of(w, "version") == contracted.to_string())
        })
        .cloned()
        .unwrap_or_default();
    (text_of(&step, "phase"), text_of(&step, "waits_for"))
}

/// The backups the servers wrote before migrating from `from` to `to`, in their data
/// directories.
fn automatic_backups(
    servers: &[&Server],
    from: ums_db::SchemaVersion,
    to: ums_db::SchemaVersion,
) -> Vec<std::path::PathBuf> {
    let suffix = format!("-schema{from}-before-{to}.umsbak");
    servers
        .iter()
        .filter_map(|s| std::fs::read_dir(s.data.path().join("data/backups")).ok())
        .flatten()
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(&suffix))
        .collect()
}

/// Whether `umsctl --json update log` records a backup into `path`.
fn logged_backup(ctl: &crate::harness::Umsctl, path: &Path) -> bool {
    ctl.json(&["update", "log"])["entries"]
        .as_array()
        .is_some_and(|entries| {
            entries.iter().any(|e| {
                text_of(e, "step") == "backup"
                    && text_of(e, "outcome") == "ok"
                    && text_of(e, "detail").contains(&path.display().to_string())
            })
        })
}

/// Device cycles done through one broker: succeeded, retried once, failed after the retry.
#[derive(Default)]
struct Load {
    ok: AtomicU64,
    retried: AtomicU64,
    failed: std::sync::Mutex<Vec<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_upgrade_expands_then_contracts_under_device_load() {
    let url = ums_testkit::shared_database("e2e_upgrade").expect("postgres");
    let released = ums_migrations::latest();
    let expanded = ums_db::SchemaVersion::new(released.major, released.minor + 1);
    let contracted = ums_db::SchemaVersion::new(released.major, released.minor + 2);

    // Three servers on the released binary, two brokers in front of all three.
    let a = Server::start_ha(&url, None);
    let token = a.token();
    let b = Server::start_ha(&url, Some(&token));
    let c = Server::start_ha(&url, Some(&token));
    let token_dir = tempfile::tempdir().expect("dir");
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, &token).expect("token");
    let join = format!("{},{},{}", a.admin_addr(), b.admin_addr(), c.admin_addr());
    let brokers = [
        Broker::joined(
            &join,
            &token_file,
            &token_dir.path().join("broker-1"),
            "broker-upgrade-1",
        ),
        Broker::joined(
            &join,
            &token_file,
            &token_dir.path().join("broker-2"),
            "broker-upgrade-2",
        ),
    ];
    let ca = a.ca_pem();
    let up = |s: &Server| format!("ums_broker_server_up{{server=\"{}\"}}", s.device_addr());
    for broker in &brokers {
        let all = eventually(Duration::from_secs(15), || async {
            [&a, &b, &c]
                .iter()
                .all(|s| broker.metric(&up(s)) == Some(1.0))
                .then_some(())
        })
        .await;
        assert!(all.is_some(), "broker:\n{}", broker.log_text());
    }
    let ctl = a.umsctl();
    let (a_id, b_id, c_id) = (a.process_id(), b.process_id(), c.process_id());
    let before = eventually(Duration::from_secs(10), || async {
        let s = update_status(&ctl);
        (text_of(&s, "summary") == "3 of 3 servers updated").then_some(s)
    })
    .await;
    assert!(before.is_some(), "{:#}", update_status(&ctl));
    assert_eq!(
        text_of(&before.expect("status"), "schema_version"),
        released.to_string()
    );

    // Continuous device load for the whole rollout, half of the devices through each broker.
    let stop = Arc::new(AtomicBool::new(false));
    let loads: [Arc<Load>; 2] = Default::default();
    let load: Vec<_> = (0..4)
        .map(|i| {
            let stop = stop.clone();
            let counts = loads[i % 2].clone();
            let (url, ca) = (brokers[i % 2].device_url.clone(), ca.clone());
            tokio::spawn(async move {
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let unit = format!(
                        "00:00:{i:02x}:{:02x}:{:02x}:{:02x}",
                        n >> 16 & 0xff,
                        n >> 8 & 0xff,
                        n & 0xff
                    );
                    if device_cycle(&url, &ca, &unit).await.is_ok() {
                        counts.ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        counts.retried.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        match device_cycle(&url, &ca, &unit).await {
                            Ok(()) => {
                                counts.ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => counts.failed.lock().expect("lock").push(format!("{e:#}")),
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 1. Server a restarts as the next release: it applies the expand step; the contract step
    //    waits for b and c, which still run the released binary. Every server reports
    //    mode=update.
    let a = a.restart(Some(&url), &next_env());
    assert_eq!(schema(&url).await, expanded, "{}", a.log_text());
    let mixed = eventually(Duration::from_secs(10), || async {
        let m = modes(&url).await;
        (m.len() == 3 && m.iter().all(|(_, mode, _)| mode == "update")).then_some(m)
    })
    .await;
    assert!(mixed.is_some(), "registry: {:?}", modes(&url).await);
    // `umsctl update status` shows the expand step applied by the first new server, one of
    // three servers updated, and the contract step waiting for the two old ones by id.
    let s = update_status(&ctl);
    assert_eq!(text_of(&s, "schema_version"), expanded.to_string(), "{s:#}");
    assert_eq!(
        history_step(&s, expanded).map(|(p, by, _)| (p, by)),
        Some(("expand".to_owned(), format!("server/{a_id}"))),
        "{s:#}"
    );
    assert_eq!(text_of(&s, "summary"), "1 of 3 servers updated", "{s:#}");
    let (phase, waits_for) = pending_step(&s, contracted);
    assert_eq!(phase, "contract", "{s:#}");
    assert!(
        waits_for.contains(&b_id) && waits_for.contains(&c_id) && !waits_for.contains(&a_id),
        "{s:#}"
    );
    let table = ctl.ok(&["update", "status"]);
    assert!(
        table.contains("1 of 3 servers updated") && table.contains("pending steps"),
        "{table}"
    );
    // Before the expand step, a backed the database (which holds data) up into its data
    // directory, mode 0600, recorded in the update log, where `update plan` finds it.
    let expand_backup = automatic_backups(&[&a], released, expanded);
    assert_eq!(expand_backup.len(), 1, "{}", a.log_text());
    let mode = std::fs::metadata(&expand_backup[0])
        .expect("backup")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    assert!(logged_backup(&ctl, &expand_backup[0]));
    let plan = ctl.raw(&["update", "plan"]);
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.contains(&expand_backup[0].display().to_string()),
        "{plan}"
    );

    // 2. The old b, restarted mid-rollout, comes back on the expanded schema.
    let b = b.restart(Some(&url), &HA_ENV);
    assert!(
        b.log_text().contains("only expanded beyond it"),
        "{}",
        b.log_text()
    );
    assert_eq!(
        schema(&url).await,
        expanded,
        "the old server never downgrades"
    );

    // 3. b restarts as the next release: two of three are updated and the contract step
    //    still waits, now for c alone.
    let b = b.restart(Some(&url), &next_env());
    let two = eventually(Duration::from_secs(10), || async {
        let s = update_status(&ctl);
        (text_of(&s, "summary") == "2 of 3 servers updated").then_some(s)
    })
    .await;
    assert!(two.is_some(), "{:#}", update_status(&ctl));
    let s = two.expect("status");
    assert_eq!(text_of(&s, "schema_version"), expanded.to_string(), "{s:#}");
    let (phase, waits_for) = pending_step(&s, contracted);
    assert_eq!(phase, "contract", "{s:#}");
    assert!(
        waits_for.contains(&c_id) && !waits_for.contains(&a_id) && !waits_for.contains(&b_id),
        "{s:#}"
    );

    // 4. c, the last old server, restarts as the next release: no old server is left, the
    //    contract step runs and every server returns to normal.
    let last_old_stopped = ums_db::now_ms();
    let c = c.restart(Some(&url), &next_env());
    let normal = eventually(Duration::from_secs(20), || async {
        let m = modes(&url).await;
        (schema(&url).await == contracted
            && m.len() == 3
            && m.iter()
                .all(|(_, mode, max)| mode == "normal" && *max == contracted.to_string()))
        .then_some(m)
    })
    .await;
    assert!(
        normal.is_some(),
        "schema {} registry {:?}\n{}\n{}\n{}",
        schema(&url).await,
        modes(&url).await,
        a.log_text(),
        b.log_text(),
        c.log_text()
    );
    // The status shows the contract step, applied after the last old server left, and every
    // process (servers and brokers) running in mode normal.
    let done = eventually(Duration::from_secs(10), || async {
        let s = update_status(&ctl);
        (text_of(&s, "summary") == "3 of 3 servers updated" && s["in_progress"] != true)
            .then_some(s)
    })
    .await;
    assert!(done.is_some(), "{:#}", update_status(&ctl));
    let s = done.expect("status");
    assert_eq!(
        text_of(&s, "schema_version"),
        contracted.to_string(),
        "{s:#}"
    );
    let (phase, by, at) = history_step(&s, contracted).expect("the contract step");
    assert_eq!(phase, "contract", "{s:#}");
    assert!(
        [&a_id, &b_id, &c_id]
            .iter()
            .any(|id| by == format!("server/{id}")),
        "{s:#}"
    );
    assert!(
        at >= last_old_stopped,
        "contract at {at}, last old server stopped at {last_old_stopped}"
    );
    assert!(
        s["pending"].as_array().is_none_or(|p| p.is_empty()),
        "{s:#}"
    );
    let running: Vec<&serde_json::Value> = s["processes"]
        .as_array()
        .map(|p| {
            p.iter()
                .filter(|p| text_of(p, "status") == "running")
                .collect()
        })
        .unwrap_or_default();
    let servers: Vec<&&serde_json::Value> = running
        .iter()
        .filter(|p| text_of(p, "kind") == "server")
        .collect();
    assert_eq!(servers.len(), 3, "{s:#}");
    assert!(servers.iter().all(|p| p["updated"] == true), "{s:#}");
    assert_eq!(
        running
            .iter()
            .filter(|p| text_of(p, "kind") == "broker")
            .count(),
        2,
        "{s:#}"
    );
    assert!(
        running.iter().all(|p| text_of(p, "mode") == "normal"),
        "{s:#}"
    );
    let log = ctl.ok(&["update", "log"]);
    assert!(
        log.contains("contract-waits") && log.contains("contract"),
        "{log}"
    );
    // The contract step was backed up before too, by the server that applied it.
    let contract_backup = automatic_backups(&[&a, &b, &c], expanded, contracted);
    assert!(!contract_backup.is_empty(), "{by}");
    assert!(contract_backup.iter().all(|p| logged_backup(&ctl, p)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.expect("load task");
    }

    // Every step is recorded: the history names each step's phase and binary, the update log
    // the migration, the contract and the modes.
    let db = ums_db::Db::connect(&url).await.expect("connect");
    let history = db.schema_history().await.expect("history");
    let last_two: Vec<_> = history
        .iter()
        .rev()
        .take(2)
        .map(|h| {
            (
                h.version,
                h.phase,
                h.binary_version.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(last_two[0].0, contracted);
    assert_eq!(last_two[0].1, Some(ums_db::Phase::Contract));
    assert_eq!(last_two[1].0, expanded);
    assert_eq!(last_two[1].1, Some(ums_db::Phase::Expand));
    assert!(
        last_two.iter().all(|h| h.2.ends_with("+next-minor")),
        "{last_two:?}"
    );
    let steps: Vec<String> = db
        .update_log(100)
        .await
        .expect("log")
        .into_iter()
        .map(|r| format!("{} {} {}", r.step, r.outcome, r.detail))
        .collect();
    for want in [
        "migrate ok",
        "contract-waits ok",
        "contract ok",
        "mode ok update",
        "mode ok normal",
    ] {
        assert!(
            steps.iter().any(|s| s.starts_with(want)),
            "{want} missing from {steps:#?}"
        );
    }
    db.close().await.ok();

    // An old binary cannot start on the contracted schema, and says why.
    let out = crate::harness::server_command(
        tempfile::tempdir().expect("dir").path(),
        ums_testkit::free_port(),
        ums_testkit::free_port(),
        Some(&url),
    )
    .envs(HA_ENV)
    .output()
    .expect("run server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&contracted.to_string())
            && stderr.contains(&released.to_string())
            && stderr.contains("contract"),
        "{stderr}"
    );

    for (i, l) in loads.iter().enumerate() {
        let failed = l.failed.lock().expect("lock").clone();
        let (ok, retried) = (
            l.ok.load(Ordering::Relaxed),
            l.retried.load(Ordering::Relaxed),
        );
        println!(
            "broker {}: device cycles {ok} ok, {retried} retried once, {} failed",
            i + 1,
            failed.len()
        );
        assert!(ok > 25, "the load ran through broker {}: {ok}", i + 1);
        assert!(
            failed.is_empty(),
            "device cycles through broker {} failed after a retry: {failed:#?}",
            i + 1
        );
    }
}
