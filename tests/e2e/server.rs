//! One server as a process: the README's walk-through with `umsctl`, the `ums-devsim` binary's
//! herd, SIGTERM and a refused start. The APIs' behaviour is tested in process
//! (`crates/ums-server/tests/service`).

use std::process::Command;
use std::time::Duration;

use ums_testkit::bin_path;

use crate::harness::{Server, eventually, text};

fn settings_map(s: &ums_proto::device::v1::GetSettingsResponse) -> Vec<(String, String)> {
    s.settings
        .iter()
        .map(|s| (s.key.clone(), s.value.clone()))
        .collect()
}

/// The walk-through of the README with `umsctl`: a device registers, an administrator builds
/// folders and profiles, and the device's next check-in gets the new revision and the merged
/// settings. (On PostgreSQL it runs in process, in the service tests.)
async fn settings_reach_the_device(server: &Server) {
    let ctl = server.umsctl();
    let mut dev = server.device().await;
    let reg = dev
        .register("00:11:22:33:44:55", "reception")
        .await
        .expect("register");
    assert!(reg.created);
    let first = dev.check_in("idle", 0).await.expect("check in");
    assert!(
        first.settings_changed,
        "a new device fetches its settings once"
    );
    let rev = first.settings_revision;
    let unchanged = dev.check_in("idle", rev).await.expect("check in");
    assert!(!unchanged.settings_changed);

    let site = ctl.json(&["folders", "create", "Berlin"])["id"]
        .as_i64()
        .expect("folder id");
    let floor = ctl.json(&[
        "folders",
        "create",
        "Floor 1",
        "--parent",
        &site.to_string(),
    ])["id"]
        .as_i64()
        .expect("folder id");
    let base = ctl.json(&[
        "profiles",
        "create",
        "rdp-base",
        "sessions.rdp0.server=ts1.example.com",
        "display.monitors=2",
        "system.language=de",
    ])["id"]
        .as_i64()
        .expect("profile id");
    let floor_profile = ctl.json(&["profiles", "create", "floor", "display.monitors=3"])["id"]
        .as_i64()
        .expect("profile id");
    ctl.ok(&["assign", &base.to_string(), "--folder", &site.to_string()]);
    ctl.ok(&[
        "assign",
        &floor_profile.to_string(),
        "--folder",
        &floor.to_string(),
    ]);
    let device_id = reg.device_id.to_string();
    ctl.ok(&[
        "devices",
        "move",
        &device_id,
        "--folder",
        &floor.to_string(),
    ]);

    let next = dev.check_in("idle", rev).await.expect("check in");
    assert!(
        next.settings_changed,
        "the move and the assignments change the revision"
    );
    assert!(next.settings_revision > rev);
    let settings = dev.get_settings().await.expect("settings");
    assert_eq!(settings.revision, next.settings_revision);
    let map = settings_map(&settings);
    assert!(
        map.contains(&("display.monitors".into(), "3".into())),
        "closer folder wins: {map:?}"
    );
    assert!(
        map.contains(&("sessions.rdp0.server".into(), "ts1.example.com".into())),
        "{map:?}"
    );
    assert!(
        map.contains(&("system.language".into(), "de".into())),
        "{map:?}"
    );

    // `settings explain` names the origin of every value and what it overrode.
    let explain = ctl.json(&["settings", "explain", &device_id]);
    let values = explain["values"].as_array().expect("values");
    let monitors = values
        .iter()
        .find(|v| v["key"] == "display.monitors")
        .expect("display.monitors explained");
    assert_eq!(monitors["value"], "3");
    assert_eq!(monitors["origin"]["profile_name"], "floor");
    assert_eq!(monitors["origin"]["object_kind"], "folder");
    assert_eq!(monitors["origin"]["object_name"], "Floor 1");
    assert_eq!(monitors["overridden"][0]["value"], "2");
    let table = ctl.ok(&["settings", "explain", &device_id]);
    assert!(
        table.contains("Floor 1") && table.contains("rdp-base"),
        "{table}"
    );

    // A profile change reaches the device on its next check-in.
    ctl.ok(&[
        "profiles",
        "set",
        &floor_profile.to_string(),
        "display.monitors=4",
    ]);
    let after = dev
        .check_in("idle", next.settings_revision)
        .await
        .expect("check in");
    assert!(after.settings_changed);
    let map = settings_map(&dev.get_settings().await.expect("settings"));
    assert!(
        map.contains(&("display.monitors".into(), "4".into())),
        "{map:?}"
    );
}

#[tokio::test]
async fn settings_reach_the_device_on_sqlite() {
    let server = Server::start(None);
    settings_reach_the_device(&server).await;
}

#[tokio::test]
async fn devsim_registers_and_checks_in_a_thousand_devices() {
    let server = Server::start(None);
    let out = Command::new(bin_path("ums-devsim"))
        .args(["--addr", &server.device_url, "--ca"])
        .arg(server.ca_path())
        .args(["--devices", "1000", "--concurrency", "64", "--json"])
        .output()
        .expect("run ums-devsim");
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a report line")).expect("json report");
    assert_eq!(report["ok"], 1000, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    let ctl = server.umsctl();
    let listed = ctl.json(&["devices", "list", "--limit", "1"]);
    assert_eq!(listed["total"], 1000, "{listed}");
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_sigterm_stops_cleanly() {
    let mut server = Server::start(None);
    let url = format!(
        "sqlite://{}?mode=rwc",
        server.data.path().join("data/ums.db").display()
    );
    // SIGTERM: the server drains and exits with success.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(server.child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("sigterm");
    let status = eventually(Duration::from_secs(15), || {
        let s = server.child.0.try_wait().ok().flatten();
        async move { s }
    })
    .await
    .expect("server exits after SIGTERM");
    assert!(
        status.success(),
        "exit status {status}: {}",
        server.log_text()
    );

    // A newer server migrated the database; this one refuses it, naming both versions.
    let (db, _) = ums_db::Db::open(&url).await.expect("open");
    let newer = ums_migrations::SchemaVersion::new(ums_migrations::latest().major + 1, 0);
    db.debug_set_schema_version(newer)
        .await
        .expect("set version");
    db.close().await.expect("close");
    let out = crate::harness::server_command(
        server.data.path(),
        ums_testkit::free_port(),
        ums_testkit::free_port(),
        None,
    )
    .output()
    .expect("run server");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&newer.to_string())
            && stderr.contains(&ums_migrations::latest().to_string()),
        "{stderr}"
    );
}

/// `umsctl profiles rm` of a profile in use is refused by the server, naming where it is
/// assigned; `--force` deletes it with its assignments, and the device's settings change.
#[tokio::test]
async fn a_profile_in_use_is_removed_only_with_force() {
    let server = Server::start(None);
    let ctl = server.umsctl();
    let mut dev = server.device().await;
    let device_id = dev
        .register("00:00:00:00:rm:01", "rm")
        .await
        .expect("register")
        .device_id
        .to_string();
    ctl.ok(&["folders", "create", "Berlin"]);
    ctl.ok(&["profiles", "create", "rdp-base", "display.monitors=2"]);
    ctl.ok(&["assign", "1", "--folder", "1"]);
    ctl.ok(&["assign", "1", "--device", &device_id]);
    let revision = ctl.json(&["devices", "show", &device_id])["settings_revision"].clone();

    let err = ctl.fails(&["profiles", "rm", "1"]);
    assert!(err.contains("profile 1 `rdp-base` is assigned to"), "{err}");
    for place in [
        format!("device {device_id}"),
        "folder 1 \"Berlin\"".to_owned(),
    ] {
        assert!(err.contains(&place), "{place} missing: {err}");
    }
    assert!(err.contains("umsctl profiles rm 1 --force"), "{err}");
    assert_eq!(ctl.json(&["profiles", "list"])["profiles"][0]["id"], 1);

    assert_eq!(
        ctl.ok(&["profiles", "rm", "1", "--force"]),
        "deleted profile 1\n"
    );
    let left = ctl.json(&["assignments"]);
    assert_eq!(
        left["assignments"].as_array().map_or(0, Vec::len),
        0,
        "{left}"
    );
    let after = ctl.json(&["devices", "show", &device_id])["settings_revision"].clone();
    assert_ne!(after, revision, "the device's settings changed");
}
