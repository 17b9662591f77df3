//! The update mode fallback of a major schema step, with the real binaries on PostgreSQL: a
//! server restarted on a release with a major step (`UMS_TEST_SCHEMA_NEXT=major`) while the
//! other still runs the older release serves devices from a local copy, refuses an
//! administrator's change with a clear error and tells an unknown device it is in maintenance;
//! once the last server starts on the new release and migrates, the check-ins and job results
//! it kept are in the shared database and both servers are back to normal. The same update
//! behind a broker in front of both servers: no device request fails but the maintenance answer
//! to unknown devices, and every check-in a device was answered for is in the shared database.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ums_devsim::DeviceClient;

use crate::harness::{Broker, HA_ENV, Server, eventually};

fn major_env() -> Vec<(&'static str, &'static str)> {
    let mut env = HA_ENV.to_vec();
    env.push(("UMS_TEST_SCHEMA_NEXT", "major"));
    env
}

/// (id, mode, schema_max) of every running server.
async fn servers(url: &str) -> Vec<(String, String, String)> {
    let db = ums_db::Db::connect(url).await.expect("connect");
    let (rows, now) = db.list_processes().await.expect("registry");
    db.close().await.ok();
    rows.into_iter()
        .filter(|r| r.kind == "server" && r.status == "running" && now - r.last_heartbeat < 1500)
        .map(|r| (r.id, r.mode, r.schema_max.unwrap_or_default()))
        .collect()
}

/// Waits until both servers run `normal` on the `major` schema; fails with their logs.
async fn both_normal_on(url: &str, major: ums_db::SchemaVersion, a: &Server, b: &Server) {
    let normal = eventually(Duration::from_secs(30), || async {
        let s = servers(url).await;
        (s.len() == 2
            && s.iter()
                .all(|(_, mode, max)| mode == "normal" && *max == major.to_string()))
        .then_some(s)
    })
    .await;
    assert!(
        normal.is_some(),
        "registry {:?}\n{}\n{}",
        servers(url).await,
        a.log_text(),
        b.log_text()
    );
}

/// A device that registered earlier, connecting again to `url` with its credential.
async fn reconnect(url: &str, ca: &[u8], id: i64, secret: &[u8]) -> DeviceClient {
    let mut dev = DeviceClient::connect(url, ca).await.expect("connect");
    dev.set_device_id(Some(id));
    dev.set_secret(secret.to_vec());
    dev
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_major_step_falls_back_to_update_mode_and_loses_no_check_in() {
    let url = ums_testkit::shared_database("e2e_update_mode").expect("postgres");
    let released = ums_migrations::latest();
    let major = ums_db::SchemaVersion::new(released.major + 1, 0);

    let a = Server::start_ha(&url, None);
    let b = Server::start_ha(&url, Some(&a.token()));
    let ca = a.ca_pem();
    let password = a.admin_password();

    // Three devices of the released network.
    let mut devices = Vec::new();
    for n in 0..3 {
        let mut dev = b.device().await;
        let unit = format!("00:00:00:00:0b:0{n}");
        let id = dev
            .register(&unit, &unit)
            .await
            .expect("register")
            .device_id;
        dev.check_in("idle", 0).await.expect("check in");
        devices.push((unit, id, dev.secret().to_vec()));
    }
    let ctl_a = a.umsctl();
    ctl_a.ok(&[
        "jobs",
        "create",
        "reboot",
        "--device",
        &devices[0].1.to_string(),
    ]);

    // 1. b restarts on the release with the major step while a still runs the older one: b
    //    cannot migrate and serves from a local copy, reporting mode=update.
    let b = b.restart(Some(&url), &major_env());
    let in_update = eventually(Duration::from_secs(15), || async {
        servers(&url)
            .await
            .iter()
            .any(|(id, mode, max)| {
                *id == b.process_id() && mode == "update" && *max == major.to_string()
            })
            .then_some(())
    })
    .await;
    assert!(
        in_update.is_some(),
        "registry {:?}\n{}",
        servers(&url).await,
        b.log_text()
    );
    let db = ums_db::Db::connect(&url).await.expect("connect");
    assert_eq!(
        db.schema_version().await.expect("schema"),
        Some(released),
        "nothing migrated yet"
    );

    // Devices keep working on b: check-ins, the job, a known device registering again.
    let before_update = ums_db::now_ms();
    for (n, (unit, id, secret)) in devices.iter().enumerate() {
        let mut dev = reconnect(&b.device_url, &ca, *id, secret).await;
        let answer = dev.check_in("in-update-mode", 40 + n as u64).await;
        assert!(
            answer.is_ok(),
            "check-in on b: {answer:?}\n{}",
            b.log_text()
        );
        dev.get_settings().await.expect("settings from the copy");
        if n == 0 {
            let jobs = dev.fetch_jobs().await.expect("jobs").jobs;
            assert_eq!(jobs.len(), 1, "the job comes from the copy");
            dev.report_job_result(jobs[0].id, true, "rebooted during the update")
                .await
                .expect("job result");
            let again = dev.register(unit, unit).await.expect("known device");
            assert!(!again.created);
            assert_eq!(again.device_id, *id);
        }
    }
    // An unknown device is told to come back later, at once.
    let mut stranger = b.device().await;
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        stranger.register("00:00:00:00:0b:99", "new"),
    )
    .await
    .expect("an answer, not a hang")
    .expect_err("no registration in update mode");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("maintenance") && refused.message().contains("retry"),
        "{refused:?}"
    );
    // An administrator's change is refused with the reason; reading still works.
    let ctl_b = b.umsctl_with_password(&password);
    ctl_b.ok(&["devices", "list"]);
    let err = ctl_b.fails(&["folders", "create", "made-during-update"]);
    assert!(
        err.contains("update mode") && err.contains("refused") && err.contains("end-mode"),
        "{err}"
    );
    // Update mode cannot be ended before the shared database is at b's schema.
    let err = ctl_b.fails(&["update", "end-mode"]);
    assert!(
        err.contains(&format!("the shared database is at schema {released}"))
            && err.contains(&major.to_string()),
        "{err}"
    );
    // What b took is not in the shared database yet.
    let d = db.get_device(devices[1].1).await.expect("device");
    assert_eq!(d.state, "idle");

    // 2. a restarts on the new release: the only other server runs it already (on its copy),
    //    so a migrates the shared database; b replays its journal and reconnects.
    let a = a.restart(Some(&url), &major_env());
    assert_eq!(
        db.schema_version().await.expect("schema"),
        Some(major),
        "{}",
        a.log_text()
    );
    both_normal_on(&url, major, &a, &b).await;

    // Every check-in b kept is in the shared database: last contact, applied revision, state.
    for (n, (_, id, _)) in devices.iter().enumerate() {
        let d = db.get_device(*id).await.expect("device");
        assert_eq!(d.state, "in-update-mode", "device {id}");
        assert_eq!(d.applied_revision, Some(40 + n as i64), "device {id}");
        assert!(
            d.last_contact.is_some_and(|t| t >= before_update),
            "device {id}: {:?}",
            d.last_contact
        );
    }
    let jobs = db
        .list_jobs(Some(devices[0].1), None, 10)
        .await
        .expect("jobs");
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0].state.as_str(), jobs[0].result.as_str()),
        ("done", "rebooted during the update"),
        "the job result reached the shared database"
    );
    assert!(
        db.get_device(devices[0].1)
            .await
            .expect("d")
            .next_job_at
            .is_none()
    );
    let steps: Vec<String> = db
        .update_log(100)
        .await
        .expect("log")
        .into_iter()
        .map(|r| format!("{} {} {}", r.step, r.outcome, r.detail))
        .collect();
    for want in ["update-mode ok entered", "update-mode ok ended"] {
        assert!(
            steps.iter().any(|s| s.starts_with(want)),
            "{want} missing from {steps:#?}"
        );
    }
    assert!(
        !b.data.path().join("data/update-mode").exists(),
        "the local copy is removed after the replay"
    );
    db.close().await.ok();

    // b is a normal server again: nothing to end, changes go through, the stranger registers.
    let out = ctl_b.ok(&["update", "end-mode"]);
    assert!(out.contains("not in update mode"), "{out}");
    ctl_b.ok(&["folders", "create", "made-after-update"]);
    let mut stranger = b.device().await;
    let joined = stranger.register("00:00:00:00:0b:99", "new").await;
    assert!(joined.is_ok_and(|r| r.created));
}

/// What the devices behind the broker saw during the update: check-ins answered (first time or
/// after one retry on a new connection, as devices do), registrations of unknown devices
/// answered with the documented maintenance status or served, and everything else.
#[derive(Default)]
struct Seen {
    check_ins: AtomicU64,
    retried: AtomicU64,
    registered: AtomicU64,
    maintenance: AtomicU64,
    failed: Mutex<Vec<String>>,
}

/// One check-in of a known device through `url`, on a new connection (so the broker's round
/// robin spreads the devices over both servers), retried once.
async fn check_in_once(
    url: &str,
    ca: &[u8],
    (id, secret): (i64, &[u8]),
    revision: u64,
    seen: &Seen,
) -> bool {
    let attempt = || async {
        let mut dev = DeviceClient::connect(url, ca).await?;
        dev.set_device_id(Some(id));
        dev.set_secret(secret.to_vec());
        dev.check_in(&format!("rev-{revision}"), revision).await?;
        anyhow::Ok(())
    };
    if attempt().await.is_ok() {
        seen.check_ins.fetch_add(1, Ordering::Relaxed);
        return true;
    }
    seen.retried.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    match attempt().await {
        Ok(()) => {
            seen.check_ins.fetch_add(1, Ordering::Relaxed);
            true
        }
        Err(e) => {
            seen.failed
                .lock()
                .expect("lock")
                .push(format!("device {id} revision {revision}: {e:#}"));
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn update_mode_behind_a_broker_fails_no_device_request_and_keeps_every_check_in() {
    let url = ums_testkit::shared_database("e2e_update_mode_broker").expect("postgres");
    let released = ums_migrations::latest();
    let major = ums_db::SchemaVersion::new(released.major + 1, 0);

    let a = Server::start_ha(&url, None);
    let token = a.token();
    let b = Server::start_ha(&url, Some(&token));
    let dir = tempfile::tempdir().expect("dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token).expect("token");
    let broker = Broker::joined(
        &format!("{},{}", a.admin_addr(), b.admin_addr()),
        &token_file,
        &dir.path().join("broker"),
        "broker-update-mode",
    );
    let up = |s: &Server| format!("ums_broker_server_up{{server=\"{}\"}}", s.device_addr());
    let both = eventually(Duration::from_secs(15), || async {
        (broker.metric(&up(&a)) == Some(1.0) && broker.metric(&up(&b)) == Some(1.0)).then_some(())
    })
    .await;
    assert!(both.is_some(), "broker:\n{}", broker.log_text());
    let ca = a.ca_pem();

    // Eight devices of the released network, registered through the broker.
    let mut known = Vec::new();
    for n in 0..8 {
        let mut dev = DeviceClient::connect(&broker.device_url, &ca)
            .await
            .expect("connect");
        let unit = format!("00:00:00:00:0c:0{n}");
        let id = dev
            .register(&unit, &unit)
            .await
            .expect("register")
            .device_id;
        known.push((id, dev.secret().to_vec()));
    }

    // 1. b restarts on the release with the major step while a runs the older one: b serves
    //    from its local copy behind the same broker.
    let b = b.restart(Some(&url), &major_env());
    let in_update = eventually(Duration::from_secs(15), || async {
        servers(&url)
            .await
            .iter()
            .any(|(id, mode, _)| *id == b.process_id() && mode == "update")
            .then_some(())
    })
    .await;
    assert!(in_update.is_some(), "{}", b.log_text());
    let b_up = eventually(Duration::from_secs(10), || async {
        (broker.metric(&up(&b)) == Some(1.0)).then_some(())
    })
    .await;
    assert!(b_up.is_some(), "broker:\n{}", broker.log_text());

    // Devices check in through the broker without pause, each with a new revision, and
    // unknown devices try to register, until both servers are normal again.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let acknowledged: Arc<Mutex<HashMap<i64, u64>>> = Arc::default();
    let mut load = Vec::new();
    for pair in known.chunks(2).map(<[_]>::to_vec) {
        let (stop, seen, acknowledged) = (stop.clone(), seen.clone(), acknowledged.clone());
        let (url, ca) = (broker.device_url.clone(), ca.clone());
        load.push(tokio::spawn(async move {
            let mut revision = 100u64;
            while !stop.load(Ordering::Relaxed) {
                revision += 1;
                for (id, secret) in &pair {
                    if check_in_once(&url, &ca, (*id, secret), revision, &seen).await {
                        acknowledged.lock().expect("lock").insert(*id, revision);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    {
        let (stop, seen) = (stop.clone(), seen.clone());
        let (url, ca) = (broker.device_url.clone(), ca.clone());
        load.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let unit = format!("00:00:00:0d:{:02x}:{:02x}", n >> 8 & 0xff, n & 0xff);
                // Served, or told maintenance (b does not know the device); anything else is
                // tried once more on a new connection, as devices do.
                let attempt = || async {
                    let mut dev = DeviceClient::connect(&url, &ca).await?;
                    match dev.register(&unit, &unit).await {
                        Ok(_) => anyhow::Ok(false),
                        Err(s)
                            if s.code() == tonic::Code::Unavailable
                                && s.message().starts_with("maintenance:") =>
                        {
                            Ok(true)
                        }
                        Err(s) => Err(anyhow::anyhow!("{s:?}")),
                    }
                };
                let answer = match attempt().await {
                    Ok(maintenance) => Ok(maintenance),
                    Err(_) => {
                        seen.retried.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        attempt().await
                    }
                };
                match answer {
                    Ok(false) => {
                        seen.registered.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(true) => {
                        seen.maintenance.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => seen
                        .failed
                        .lock()
                        .expect("lock")
                        .push(format!("registration of {unit}: {e:#}")),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 2. a restarts on the new release and migrates; b replays its journal and reconnects.
    let a = a.restart(Some(&url), &major_env());
    both_normal_on(&url, major, &a, &b).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.expect("load task");
    }

    let failed = seen.failed.lock().expect("lock").clone();
    let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
    println!(
        "check-ins {} ({} retried once), registrations {} served, {} told maintenance, {} failed",
        count(&seen.check_ins),
        count(&seen.retried),
        count(&seen.registered),
        count(&seen.maintenance),
        failed.len()
    );
    assert!(failed.is_empty(), "device requests failed: {failed:#?}");
    assert!(count(&seen.check_ins) > 50, "the load ran");
    assert!(
        count(&seen.maintenance) > 0,
        "b in update mode told unknown devices to come back later"
    );

    // Every check-in a device was answered for is in the shared database: the last one of
    // every device, whether a served it or b journaled it, and b's journal was replayed.
    let db = ums_db::Db::connect(&url).await.expect("connect");
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert_eq!(acknowledged.len(), known.len());
    for (id, revision) in &acknowledged {
        let d = db.get_device(*id).await.expect("device");
        assert_eq!(
            (d.state.as_str(), d.applied_revision),
            (format!("rev-{revision}").as_str(), Some(*revision as i64)),
            "device {id}"
        );
    }
    let replayed: u64 = db
        .update_log(200)
        .await
        .expect("log")
        .iter()
        .filter(|r| r.step == "update-mode" && r.detail.starts_with("ended"))
        .filter_map(|r| {
            r.detail
                .split_once("): ")?
                .1
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(replayed > 0, "b journaled check-ins in update mode");
    db.close().await.ok();
}
