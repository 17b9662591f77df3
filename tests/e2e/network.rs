//! The HA network: three servers on one PostgreSQL joined by one token, events between them, the
//! scheduler singleton moving when its holder dies, replicated files, and tokens of another
//! network refused on both sides.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use sha2::Digest;
use ums_proto::network::v1 as cpb;
use ums_proto::network::v1::network_service_client::NetworkServiceClient;
use ums_tls::{ComponentKind, NetworkToken};

use crate::harness::{Server, Umsctl, eventually, text};

/// Running servers and the scheduler's holder, from `umsctl network list`.
fn registry(ctl: &Umsctl) -> (Vec<String>, Vec<String>) {
    let list = ctl.json(&["network", "list"]);
    let processes = list["processes"].as_array().cloned().unwrap_or_default();
    let running = processes
        .iter()
        .filter(|p| p["kind"] == "server" && p["status"] == "running")
        .map(|p| p["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let scheduler = processes
        .iter()
        .filter(|p| p["scheduler"] == true)
        .map(|p| p["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    (running, scheduler)
}

/// Waits until a device on a server sees a new settings revision; returns how long it took.
async fn until_changed(dev: &mut ums_devsim::DeviceClient, known: &mut u64) -> Duration {
    let start = Instant::now();
    loop {
        let r = dev.check_in("idle", *known).await.expect("check in");
        if r.settings_changed {
            *known = r.settings_revision;
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the change did not reach the device within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn setting(s: &ums_proto::device::v1::GetSettingsResponse, key: &str) -> Option<String> {
    s.settings
        .iter()
        .find(|v| v.key == key)
        .map(|v| v.value.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_servers_share_settings_files_and_the_scheduler() {
    let url = ums_testkit::shared_database("e2e_ha").expect("postgres");
    let a = Server::start_ha(&url, None);
    let token = a.token();
    let mode = std::fs::metadata(a.data.path().join("data/network-token"))
        .expect("token file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the token file is private");
    assert!(token.starts_with("UMS1"), "{token}");
    let b = Server::start_ha(&url, Some(&token));
    let c = Server::start_ha(&url, Some(&token));
    let servers = [&a, &b, &c];
    for s in &servers[1..] {
        assert_eq!(s.ca_pem(), a.ca_pem(), "every server recovered the one CA");
        assert!(
            !s.data.path().join("data/initial-admin-password").exists(),
            "only the first server creates the first administrator"
        );
    }
    let password = a.admin_password();
    let ctl_a = a.umsctl();
    let ctl_b = b.umsctl_with_password(&password);

    // The registry: three servers running, one scheduler.
    let ids: Vec<String> = servers.iter().map(|s| s.process_id()).collect();
    let seen = eventually(Duration::from_secs(15), || async {
        let (running, scheduler) = registry(&ctl_a);
        (running.len() == 3 && scheduler.len() == 1).then_some((running, scheduler))
    })
    .await;
    let (running, scheduler) = seen.unwrap_or_else(|| panic!("registry: {:?}", registry(&ctl_a)));
    for id in &ids {
        assert!(running.contains(id), "{id} missing from {running:?}");
    }
    let human = ctl_a.ok(&["network", "list"]);
    assert!(
        human.contains("scheduler") && human.contains(&ids[1]),
        "{human}"
    );

    // A device on each server.
    let ca = a.ca_pem();
    let mut devices = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        let mut d = ums_devsim::DeviceClient::connect(&s.device_url, &ca)
            .await
            .expect("connect");
        let reg = d
            .register(&format!("00:00:00:00:ha:0{i}"), &format!("ha-{i}"))
            .await
            .expect("register");
        let rev = d
            .check_in("idle", 0)
            .await
            .expect("check in")
            .settings_revision;
        devices.push((d, reg.device_id, rev));
    }

    // A profile change on A reaches the devices checking in on B and C.
    let folder = ctl_a.json(&["folders", "create", "ha-site"])["id"]
        .as_i64()
        .expect("folder");
    let profile = ctl_a.json(&["profiles", "create", "ha-profile", "display.monitors=2"])["id"]
        .as_i64()
        .expect("profile");
    ctl_a.ok(&[
        "assign",
        &profile.to_string(),
        "--folder",
        &folder.to_string(),
    ]);
    for (_, id, _) in &devices {
        ctl_a.ok(&[
            "devices",
            "move",
            &id.to_string(),
            "--folder",
            &folder.to_string(),
        ]);
    }
    let mut latencies = Vec::new();
    for round in 0..5 {
        // Let the previous change settle everywhere, then change one value on A.
        for (d, _, rev) in devices.iter_mut() {
            let r = d.check_in("idle", 0).await.expect("check in");
            *rev = r.settings_revision;
        }
        ctl_a.ok(&[
            "profiles",
            "set",
            &profile.to_string(),
            &format!("display.monitors={}", 3 + round),
        ]);
        for (d, _, rev) in devices[1..].iter_mut() {
            latencies.push(until_changed(d, rev).await);
            let settings = d.get_settings().await.expect("settings");
            assert_eq!(
                setting(&settings, "display.monitors").as_deref(),
                Some((3 + round).to_string().as_str())
            );
        }
    }
    latencies.sort();
    println!(
        "profile change on A seen by devices on B and C: p50 {:?}, max {:?} ({} samples)",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
        latencies.len()
    );
    assert!(
        latencies[latencies.len() / 2] < Duration::from_secs(1),
        "a change must reach the other servers within a second: {latencies:?}"
    );

    // A file uploaded to A is copied to B and C, and a device on C downloads it, resuming.
    let mut content = vec![0u8; 3 * 1024 * 1024 + 17];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut content);
    let sha = hex::encode(sha2::Sha256::digest(&content));
    let local = a.data.path().join("firmware.bin");
    std::fs::write(&local, &content).expect("write file");
    let uploaded = ctl_a.json(&[
        "files",
        "upload",
        local.to_str().expect("path"),
        "--as",
        "firmware/12.01.bin",
    ]);
    assert_eq!(uploaded["sha256"], sha.as_str());
    let file_id = uploaded["id"].as_i64().expect("file id");
    let copied = eventually(Duration::from_secs(20), || async {
        let list = ctl_b.json(&["files", "list"]);
        let file = list["files"]
            .as_array()?
            .iter()
            .find(|f| f["id"] == file_id)?
            .clone();
        let present = file["replicas"]
            .as_array()?
            .iter()
            .filter(|r| r["status"] == "present")
            .count();
        (present == 3).then_some(file)
    })
    .await;
    assert!(
        copied.is_some(),
        "the file did not reach every server: {}",
        ctl_b.ok(&["files", "list"])
    );
    for s in &servers {
        let on_disk = s.data.path().join("data/files").join(&sha[..2]).join(&sha);
        let bytes = std::fs::read(&on_disk).expect("replica on disk");
        assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), sha);
    }
    let (dev_c, _, _) = &mut devices[2];
    let listed = dev_c.list_files().await.expect("list files");
    let entry = listed
        .files
        .iter()
        .find(|f| f.id == file_id)
        .expect("device sees the file");
    let mut got = Vec::new();
    let first = dev_c
        .download_file(file_id, &mut got, Some(1_000_000))
        .await
        .expect("first part");
    assert_eq!(first, 1_000_000);
    dev_c
        .download_file(file_id, &mut got, None)
        .await
        .expect("resume");
    assert_eq!(got.len() as u64, entry.size);
    assert_eq!(hex::encode(sha2::Sha256::digest(&got)), entry.sha256);

    // Deleting removes every copy.
    ctl_a.ok(&["files", "rm", &file_id.to_string()]);
    let gone = eventually(Duration::from_secs(20), || async {
        servers
            .iter()
            .all(|s| {
                !s.data
                    .path()
                    .join("data/files")
                    .join(&sha[..2])
                    .join(&sha)
                    .exists()
            })
            .then_some(())
    })
    .await;
    assert!(gone.is_some(), "a deleted file stays on some server");

    // The scheduler moves when its holder dies.
    let holder = scheduler[0].clone();
    let index = ids
        .iter()
        .position(|i| *i == holder)
        .expect("holder is a server");
    let mut servers = vec![a, b, c];
    let mut dead = servers.remove(index);
    let killed = Instant::now();
    dead.child.0.kill().expect("kill -9");
    let _ = dead.child.0.wait();
    let survivor = &servers[0];
    let ctl = survivor.umsctl_with_password(&password);
    let moved = eventually(Duration::from_secs(20), || async {
        let (running, scheduler) = registry(&ctl);
        (scheduler.len() == 1 && scheduler[0] != holder && !running.contains(&holder))
            .then(|| scheduler[0].clone())
    })
    .await;
    let new_holder =
        moved.unwrap_or_else(|| panic!("the scheduler did not move: {:?}", registry(&ctl)));
    println!(
        "scheduler moved from {holder} to {new_holder} {:?} after kill -9",
        killed.elapsed()
    );
    assert!(killed.elapsed() < Duration::from_secs(10));
    let list = ctl.ok(&["network", "list"]);
    assert!(list.contains("stopped"), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_networks_token_is_refused_on_both_sides() {
    let ours = ums_testkit::shared_database("e2e_net_ours").expect("postgres");
    let theirs = ums_testkit::shared_database("e2e_net_theirs").expect("postgres");
    let a = Server::start_ha(&ours, None);
    let x = Server::start_ha(&theirs, None);
    let foreign = NetworkToken::parse(&x.token()).expect("token");
    let token = NetworkToken::parse(&a.token()).expect("token");

    let join = |token: NetworkToken, id: &str| ums_network::JoinOptions {
        server: a.admin_addr(),
        token,
        kind: ComponentKind::Broker,
        id: id.into(),
        names: vec!["127.0.0.1".into()],
    };

    // A component with the other network's token stops at the CA check, before any secret.
    let err = ums_network::join(&join(foreign.clone(), "broker-x"))
        .await
        .expect_err("foreign token");
    assert!(err.to_string().contains("network token mismatch"), "{err}");
    // The right CA but a secret that is not this network's.
    let forged = NetworkToken::generate(&token.ca_hash);
    let err = ums_network::join(&join(forged, "broker-f"))
        .await
        .expect_err("forged secret");
    assert!(err.to_string().contains("network token mismatch"), "{err}");
    let logged = eventually(Duration::from_secs(5), || async {
        let log = a.log_text();
        (log.matches("network token mismatch").count() >= 2).then_some(())
    })
    .await;
    assert!(
        logged.is_some(),
        "the server logs both refusals:\n{}",
        a.log_text()
    );

    // A server with the other network's token refuses to start on this database.
    let data = tempfile::tempdir().expect("dir");
    std::fs::create_dir_all(data.path().join("data")).expect("dir");
    std::fs::write(data.path().join("data/network-token"), x.token()).expect("token");
    let out = crate::harness::server_command(
        data.path(),
        ums_testkit::free_port(),
        ums_testkit::free_port(),
        Some(&ours),
    )
    .env("UMS_NETWORK__MODE", "ha")
    .env("UMS_NETWORK__INTERNAL_LISTEN", "127.0.0.1:0")
    .output()
    .expect("run server");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("network token mismatch"),
        "{}",
        text(&out)
    );

    // The right token joins; the identity works on the internal port and reports a heartbeat.
    let identity = ums_network::join(&join(token.clone(), "broker-1"))
        .await
        .expect("join");
    assert_eq!(identity.kind, ComponentKind::Broker);
    let channel = ums_network::internal_channel(&identity, &a.internal_addr).expect("channel");
    let mut client = NetworkServiceClient::new(channel);
    client
        .heartbeat(cpb::HeartbeatRequest {
            process: Some(cpb::ProcessInfo {
                id: "broker-1".into(),
                kind: "broker".into(),
                host: "127.0.0.1".into(),
                status: "running".into(),
                clock_ms: ums_db::now_ms(),
                ..Default::default()
            }),
            supervised: vec![],
        })
        .await
        .expect("heartbeat over mutual TLS");
    // A broker cannot report for another process.
    let err = client
        .heartbeat(cpb::HeartbeatRequest {
            process: Some(cpb::ProcessInfo {
                id: "server-evil".into(),
                kind: "server".into(),
                ..Default::default()
            }),
            supervised: vec![],
        })
        .await
        .expect_err("impersonation");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let ctl = a.umsctl();
    let list = ctl.ok(&["network", "list"]);
    assert!(list.contains("broker-1"), "{list}");
    assert!(!list.contains("CLOCK SKEW"), "{list}");
    // A clock two minutes ahead of the servers' is flagged.
    client
        .heartbeat(cpb::HeartbeatRequest {
            process: Some(cpb::ProcessInfo {
                id: "broker-1".into(),
                kind: "broker".into(),
                host: "127.0.0.1".into(),
                status: "running".into(),
                clock_ms: ums_db::now_ms() + 120_000,
                ..Default::default()
            }),
            supervised: vec![],
        })
        .await
        .expect("heartbeat");
    let listed = ctl.json(&["network", "list"]);
    let broker = listed["processes"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["id"] == "broker-1"))
        .cloned()
        .expect("broker-1 listed");
    assert_eq!(broker["clock_skewed"], true, "{broker}");
    assert!(
        broker["clock_offset_ms"].as_i64().unwrap_or(0) > 100_000,
        "{broker}"
    );
    assert!(ctl.ok(&["network", "list"]).contains("CLOCK SKEW"));

    // An identity of the other network cannot even open the internal port.
    let their_identity = ums_network::join(&ums_network::JoinOptions {
        server: x.admin_addr(),
        ..join(foreign, "broker-2")
    })
    .await
    .expect("join the other network");
    let channel =
        ums_network::internal_channel(&their_identity, &a.internal_addr).expect("channel");
    let err = NetworkServiceClient::new(channel)
        .status(cpb::StatusRequest {})
        .await
        .expect_err("foreign certificate");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");

    // The token can be exported again and rotated; the old one keeps working for its grace.
    assert_eq!(ctl.ok(&["token", "export"]).trim(), a.token());
    let rotated = ctl.ok(&["token", "rotate", "--grace", "2"]);
    let new = NetworkToken::parse(rotated.trim()).expect("new token");
    assert_ne!(new, token);
    assert_eq!(
        a.token(),
        new.expose(),
        "the token file holds the new token"
    );
    ums_network::join(&join(token.clone(), "broker-3"))
        .await
        .expect("old token within its grace");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let err = ums_network::join(&join(token, "broker-4"))
        .await
        .expect_err("old token after its grace");
    assert!(err.to_string().contains("network token mismatch"), "{err}");
    ums_network::join(&join(new, "broker-5"))
        .await
        .expect("new token");
}

#[test]
fn ha_mode_on_the_embedded_database_is_refused() {
    let data = tempfile::tempdir().expect("dir");
    let out = crate::harness::server_command(
        data.path(),
        ums_testkit::free_port(),
        ums_testkit::free_port(),
        None,
    )
    .env("UMS_NETWORK__MODE", "ha")
    .output()
    .expect("run server");
    assert!(!out.status.success());
    assert!(text(&out).contains("needs PostgreSQL"), "{}", text(&out));
}

/// The database goes away under a server: it reports itself unavailable, and once the database
/// is back it serves again by itself, with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_survives_its_database_restarting() {
    let pg = ums_testkit::Postgres::start().expect("own postgres");
    let url = pg.create_database("restart").expect("database");
    let server = Server::start_ha(&url, None);
    let mut dev = server.device().await;
    let reg = dev
        .register("00:00:00:00:db:01", "db-restart")
        .await
        .expect("register");
    dev.check_in("idle", 0).await.expect("check in");
    let ca = server.ca_pem();
    let status = |url: String, ca: Vec<u8>| async move {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca));
        let channel = tonic::transport::Endpoint::from_shared(url)
            .ok()?
            .tls_config(tls)
            .ok()?
            .connect()
            .await
            .ok()?;
        NetworkServiceClient::new(channel)
            .status(cpb::StatusRequest {})
            .await
            .ok()
            .map(|r| r.into_inner().available)
    };

    pg.stop_now().expect("stop postgres");
    let stopped_at = Instant::now();
    let down = eventually(Duration::from_secs(20), || {
        let (url, ca) = (server.admin_url.clone(), ca.clone());
        async move { (status(url, ca).await != Some(true)).then_some(()) }
    })
    .await;
    assert!(down.is_some(), "the server must report itself unavailable");
    let err = dev.check_in("idle", 0).await.expect_err("no database");
    assert!(
        matches!(err.code(), tonic::Code::Unavailable | tonic::Code::Internal),
        "{err:?}"
    );

    pg.resume().expect("start postgres");
    let resumed_at = Instant::now();
    println!("database down for {:?}", stopped_at.elapsed());
    let back = eventually(Duration::from_secs(30), || {
        let (url, ca) = (server.admin_url.clone(), ca.clone());
        async move { (status(url, ca).await == Some(true)).then_some(()) }
    })
    .await;
    assert!(
        back.is_some(),
        "the server must come back by itself:\n{}",
        server.log_text()
    );
    println!(
        "server available again {:?} after the database",
        resumed_at.elapsed()
    );
    let again = eventually(Duration::from_secs(10), || {
        let mut d = dev.clone();
        async move { d.check_in("idle", 0).await.ok() }
    })
    .await;
    assert!(again.is_some(), "devices check in again");
    let ctl = server.umsctl();
    let shown = ctl.json(&["devices", "show", &reg.device_id.to_string()]);
    assert_eq!(shown["name"], "db-restart", "nothing was lost");
    let log = server.log_text();
    assert!(log.contains("database is unreachable"), "{log}");
    assert!(log.contains("reachable again"), "{log}");
}
