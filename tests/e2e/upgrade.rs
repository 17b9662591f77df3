//! A rolling upgrade of an HA network on PostgreSQL, with the real binaries: a server restarts
//! as the next release (a test-only expand step and contract step, `UMS_TEST_SCHEMA_NEXT`),
//! an old server restarted mid-rollout comes back, the contract step runs once no old server
//! is left, and devices checking in through a broker see no failure.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_upgrade_expands_then_contracts_under_device_load() {
    let url = ums_testkit::shared_database("e2e_upgrade").expect("postgres");
    let released = ums_migrations::latest();
    let expanded = ums_db::SchemaVersion::new(released.major, released.minor + 1);
    let contracted = ums_db::SchemaVersion::new(released.major, released.minor + 2);

    let a = Server::start_ha(&url, None);
    let token = a.token();
    let b = Server::start_ha(&url, Some(&token));
    let token_dir = tempfile::tempdir().expect("dir");
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, &token).expect("token");
    let broker_data = token_dir.path().join("broker-data");
    let join = format!("{},{}", a.admin_addr(), b.admin_addr());
    let broker = Broker::start(
        &[],
        &[
            ("UMS_RATE__PER_SECOND", "0"),
            ("UMS_NETWORK__SERVERS", &join),
            (
                "UMS_NETWORK__TOKEN_FILE",
                token_file.to_str().expect("path"),
            ),
            ("UMS_DATA_DIR", broker_data.to_str().expect("path")),
            ("UMS_NETWORK__ID", "broker-upgrade"),
        ],
    );
    let ca = a.ca_pem();
    let up = |s: &Server| format!("ums_broker_server_up{{server=\"{}\"}}", s.device_addr());
    let both = eventually(Duration::from_secs(15), || async {
        (broker.metric(&up(&a)) == Some(1.0) && broker.metric(&up(&b)) == Some(1.0)).then_some(())
    })
    .await;
    assert!(both.is_some(), "broker:\n{}", broker.log_text());
    let ctl = a.umsctl();
    let (a_id, b_id) = (a.process_id(), b.process_id());
    let before = eventually(Duration::from_secs(10), || async {
        let s = update_status(&ctl);
        (text_of(&s, "summary") == "2 of 2 servers updated").then_some(s)
    })
    .await;
    assert!(before.is_some(), "{:#}", update_status(&ctl));
    assert_eq!(
        text_of(&before.expect("status"), "schema_version"),
        released.to_string()
    );

    // Continuous device load through the broker for the whole rollout.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let retried = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let load: Vec<_> = (0..4)
        .map(|i| {
            let (stop, ok, retried, failed) =
                (stop.clone(), ok.clone(), retried.clone(), failed.clone());
            let (url, ca) = (broker.device_url.clone(), ca.clone());
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
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        retried.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        match device_cycle(&url, &ca, &unit).await {
                            Ok(()) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => failed.lock().expect("lock").push(format!("{e:#}")),
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 1. Server a restarts as the next release: it applies the expand step; the contract step
    //    waits for b, which still runs the released binary. Both report mode=update.
    let a = a.restart(Some(&url), &next_env());
    assert_eq!(schema(&url).await, expanded, "{}", a.log_text());
    let mixed = eventually(Duration::from_secs(10), || async {
        let m = modes(&url).await;
        (m.len() == 2 && m.iter().all(|(_, mode, _)| mode == "update")).then_some(m)
    })
    .await;
    assert!(mixed.is_some(), "registry: {:?}", modes(&url).await);
    // `umsctl update status` shows the expand step applied by the first new server, one of
    // two servers updated, and the contract step waiting for the old one.
    let s = update_status(&ctl);
    assert_eq!(text_of(&s, "schema_version"), expanded.to_string(), "{s:#}");
    assert_eq!(
        history_step(&s, expanded).map(|(p, by, _)| (p, by)),
        Some(("expand".to_owned(), format!("server/{a_id}"))),
        "{s:#}"
    );
    assert_eq!(text_of(&s, "summary"), "1 of 2 servers updated", "{s:#}");
    let waits = s["pending"]
        .as_array()
        .and_then(|p| {
            p.iter()
                .find(|w| text_of(w, "version") == contracted.to_string())
        })
        .cloned()
        .unwrap_or_default();
    assert_eq!(text_of(&waits, "phase"), "contract", "{s:#}");
    assert!(text_of(&waits, "waits_for").contains(&b_id), "{s:#}");
    let table = ctl.ok(&["update", "status"]);
    assert!(
        table.contains("1 of 2 servers updated") && table.contains("pending steps"),
        "{table}"
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

    // 3. b restarts as the next release: no old server is left, the contract step runs and
    //    every server returns to normal.
    let last_old_stopped = ums_db::now_ms();
    let b = b.restart(Some(&url), &next_env());
    let normal = eventually(Duration::from_secs(20), || async {
        let m = modes(&url).await;
        (schema(&url).await == contracted
            && m.len() == 2
            && m.iter()
                .all(|(_, mode, max)| mode == "normal" && *max == contracted.to_string()))
        .then_some(m)
    })
    .await;
    assert!(
        normal.is_some(),
        "schema {} registry {:?}\n{}\n{}",
        schema(&url).await,
        modes(&url).await,
        a.log_text(),
        b.log_text()
    );
    // The status shows the contract step, applied after the last old server left, and every
    // server updated.
    let done = eventually(Duration::from_secs(10), || async {
        let s = update_status(&ctl);
        (text_of(&s, "summary") == "2 of 2 servers updated" && s["in_progress"] != true)
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
        by == format!("server/{a_id}") || by == format!("server/{b_id}"),
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
    let servers: Vec<&serde_json::Value> = s["processes"]
        .as_array()
        .map(|p| {
            p.iter()
                .filter(|p| text_of(p, "kind") == "server" && text_of(p, "status") == "running")
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(servers.len(), 2, "{s:#}");
    assert!(
        servers
            .iter()
            .all(|p| text_of(p, "mode") == "normal" && p["updated"] == true),
        "{s:#}"
    );
    let log = ctl.ok(&["update", "log"]);
    assert!(
        log.contains("contract-waits") && log.contains("contract"),
        "{log}"
    );
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

    let failed = failed.lock().expect("lock").clone();
    let (ok, retried) = (ok.load(Ordering::Relaxed), retried.load(Ordering::Relaxed));
    println!(
        "device cycles: {ok} ok, {retried} retried once, {} failed",
        failed.len()
    );
    assert!(ok > 50, "the load ran: {ok}");
    assert!(
        failed.is_empty(),
        "device cycles failed after a retry: {failed:#?}"
    );
}
