//! One server, its devices and its administrators.

use std::process::Command;
use std::time::Duration;

use tonic::Code;
use ums_testkit::bin_path;

use crate::harness::{Server, eventually, text};

fn settings_map(s: &ums_proto::device::v1::GetSettingsResponse) -> Vec<(String, String)> {
    s.settings
        .iter()
        .map(|s| (s.key.clone(), s.value.clone()))
        .collect()
}

/// The walk-through of the README: a device registers, an administrator builds folders and
/// profiles, and the device's next check-in gets the new revision and the merged settings.
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
async fn settings_reach_the_device_on_postgres() {
    let url = ums_testkit::shared_database("e2e_settings").expect("postgres");
    let server = Server::start(Some(&url));
    settings_reach_the_device(&server).await;
    assert!(
        server.log_text().contains("postgres database"),
        "{}",
        server.log_text()
    );
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
async fn a_device_reads_only_its_own_data() {
    let server = Server::start(None);
    let ctl = server.umsctl();
    let mut a = server.device().await;
    let mut b = server.device().await;
    let a_id = a
        .register("AA:AA:AA:AA:AA:01", "a")
        .await
        .expect("a")
        .device_id;
    let b_id = b
        .register("AA:AA:AA:AA:AA:02", "b")
        .await
        .expect("b")
        .device_id;

    // B's id with A's secret is refused.
    let mut forged = server.device().await;
    forged.set_secret(a.secret().to_vec());
    forged.set_device_id(Some(b_id));
    let err = forged.get_settings().await.expect_err("forged credential");
    assert_eq!(err.code(), Code::Unauthenticated);

    // No credential at all is refused with a message that says what is missing.
    let mut anonymous = server.device().await;
    let err = anonymous
        .check_in("idle", 0)
        .await
        .expect_err("no credential");
    assert_eq!(err.code(), Code::Unauthenticated);

    // Registering A's unit id with another secret does not take over the device.
    let mut impostor = server.device().await;
    let err = impostor
        .register("aa-aa-aa-aa-aa-01", "evil")
        .await
        .expect_err("impostor");
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    // The same device registering again keeps its id (idempotent).
    assert_eq!(
        a.register("AA:AA:AA:AA:AA:01", "a")
            .await
            .expect("again")
            .device_id,
        a_id
    );

    // A job of A cannot be reported by B.
    let job = ctl.json(&["jobs", "create", "reboot", "--device", &a_id.to_string()]);
    let job_id = job["job_ids"][0].as_i64().expect("job id");
    let due = a.check_in("idle", 0).await.expect("check in");
    assert_eq!(due.jobs_due, 1);
    let jobs = a.fetch_jobs().await.expect("fetch");
    assert_eq!(jobs.jobs.len(), 1);
    assert_eq!(jobs.jobs[0].kind, "reboot");
    let err = b
        .report_job_result(job_id, true, "done")
        .await
        .expect_err("other device's job");
    assert_eq!(err.code(), Code::NotFound);
    a.report_job_result(job_id, true, "rebooted")
        .await
        .expect("report");
    let listed = ctl.json(&["jobs", "list", "--device", &a_id.to_string()]);
    assert_eq!(listed["jobs"][0]["state"], "done", "{listed}");
    assert_eq!(listed["jobs"][0]["result"], "rebooted");

    // After an administrator resets A, the unit can register with a new secret.
    ctl.ok(&["devices", "reset-credential", &a_id.to_string()]);
    let mut replaced = server.device().await;
    let again = replaced
        .register("AA:AA:AA:AA:AA:01", "a")
        .await
        .expect("after reset");
    assert_eq!(again.device_id, a_id);
    let err = a.check_in("idle", 0).await.expect_err("old secret is gone");
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_changes_nothing() {
    let server = Server::start(None);
    let ctl = server.umsctl();
    let mut dev = server.device().await;

    let err = dev.register("", "x").await.expect_err("empty unit id");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = dev
        .register("bad unit id!", "x")
        .await
        .expect_err("bad unit id");
    assert_eq!(err.code(), Code::InvalidArgument);
    dev.set_secret(vec![1u8; 4]);
    let err = dev
        .register("00:00:00:00:00:01", "x")
        .await
        .expect_err("short secret");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("secret"), "{err}");
    // An oversized message is refused and the server keeps serving.
    dev.set_secret(vec![7u8; 32]);
    let huge = "x".repeat(512 * 1024);
    let err = dev
        .register("00:00:00:00:00:02", &huge)
        .await
        .expect_err("oversized");
    assert!(
        matches!(
            err.code(),
            Code::ResourceExhausted | Code::OutOfRange | Code::InvalidArgument
        ),
        "{err}"
    );
    dev.register("00:00:00:00:00:03", "ok")
        .await
        .expect("server still serves");

    let p = ctl.json(&["profiles", "create", "p", "display.monitors=2"])["id"]
        .as_i64()
        .expect("id")
        .to_string();
    let err = ctl.fails(&["profiles", "set", &p, "display.monitors=lots"]);
    assert!(
        err.contains("display.monitors") && err.contains("integer"),
        "{err}"
    );
    let err = ctl.fails(&["profiles", "set", &p, "no.such.key=1"]);
    assert!(err.contains("unknown settings parameter"), "{err}");
    let err = ctl.fails(&[
        "profiles",
        "set",
        &p,
        "display.monitors=3",
        "display.resolution=huge",
    ]);
    assert!(err.contains("display.resolution"), "{err}");
    let shown = ctl.json(&["profiles", "show", &p]);
    assert_eq!(
        shown["params"].as_array().map(Vec::len),
        Some(1),
        "one transaction: {shown}"
    );
    assert_eq!(shown["params"][0]["value"], "2");

    let err = ctl.fails(&["folders", "rm", "4242"]);
    assert!(err.contains("not found"), "{err}");
    let err = ctl.fails(&["devices", "show", "4242"]);
    assert!(err.contains("device 4242 not found"), "{err}");

    // Wrong password: a clear refusal, no session.
    let out = Command::new(bin_path("umsctl"))
        .arg("--config")
        .arg(server.data.path().join("other.toml"))
        .args(["init", "--server", &server.admin_url, "--ca"])
        .arg(server.ca_path())
        .args(["--user", "admin"])
        .env("UMS_PASSWORD", "not-the-password")
        .output()
        .expect("umsctl");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wrong user name or password"),
        "{}",
        text(&out)
    );

    // Permissions: a read-only administrator cannot write.
    let out = Command::new(bin_path("umsctl"))
        .arg("--config")
        .arg(server.data.path().join("umsctl.toml"))
        .args([
            "admins",
            "create",
            "viewer",
            "--permission",
            "devices:read",
            "--permission",
            "settings:read",
        ])
        .env("UMS_NEW_PASSWORD", "viewer-password")
        .output()
        .expect("umsctl");
    assert!(out.status.success(), "{}", text(&out));
    let viewer = server.data.path().join("viewer.toml");
    let out = Command::new(bin_path("umsctl"))
        .arg("--config")
        .arg(&viewer)
        .args(["init", "--server", &server.admin_url, "--ca"])
        .arg(server.ca_path())
        .args(["--user", "viewer"])
        .env("UMS_PASSWORD", "viewer-password")
        .output()
        .expect("umsctl");
    assert!(out.status.success(), "{}", text(&out));
    let out = Command::new(bin_path("umsctl"))
        .arg("--config")
        .arg(&viewer)
        .args(["folders", "create", "nope"])
        .output()
        .expect("umsctl");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("settings:write"),
        "{}",
        text(&out)
    );
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

#[tokio::test]
async fn a_generic_grpc_client_discovers_the_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = Server::start(None);
    let ports = [
        (&server.device_url, vec!["ums.device.v1.DeviceService"]),
        (
            &server.admin_url,
            vec![
                "ums.admin.v1.AdminService",
                "ums.network.v1.NetworkService",
                "ums.network.v1.JoinService",
            ],
        ),
    ];
    for (url, wanted) in ports {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(server.ca_pem()));
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .expect("endpoint")
            .tls_config(tls)
            .expect("tls")
            .connect()
            .await
            .expect("connect");
        let mut client = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("reflection")
            .into_inner();
        let response = stream
            .message()
            .await
            .expect("message")
            .expect("a response");
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected reflection answer");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for service in &wanted {
            assert!(
                names.iter().any(|n| n == service),
                "{service} missing on {url}: {names:?}"
            );
        }
        assert_eq!(
            names.len(),
            wanted.len(),
            "{url} lists only what it serves: {names:?}"
        );
    }
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
