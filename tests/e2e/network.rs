//! The HA network as processes: three servers on one PostgreSQL joined by one token, events
//! between them, the scheduler singleton moving when its holder is killed, replicated files; HA
//! mode refused on the embedded database. Tokens of another network and a database restarting
//! under a server are tested in process (`crates/ums-server/tests/service`).

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use sha2::Digest;

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
