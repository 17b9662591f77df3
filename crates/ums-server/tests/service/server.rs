//! One server, its devices and its administrators, through the device and admin APIs.

use tonic::Code;
use ums_proto::admin::v1 as pb;

use crate::harness::{TestServer, assign, folder, move_device, params, profile};

fn settings_map(s: &ums_proto::device::v1::GetSettingsResponse) -> Vec<(String, String)> {
    s.settings
        .iter()
        .map(|s| (s.key.clone(), s.value.clone()))
        .collect()
}

/// The walk-through of the README on PostgreSQL (`tests/e2e` walks it with `umsctl` on
/// SQLite): a device registers, an administrator builds folders and profiles, and the device's
/// next check-in gets the new revision and the merged settings.
#[tokio::test]
async fn settings_reach_the_device_on_postgres() {
    let url = ums_testkit::shared_database("svc_settings").expect("postgres");
    let server = TestServer::start(Some(&url)).await;
    assert_eq!(server.backend, "postgres");
    let mut admin = server.admin();
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

    let site = folder(&mut admin, "Berlin", None).await;
    let floor = folder(&mut admin, "Floor 1", Some(site)).await;
    let base = profile(
        &mut admin,
        "rdp-base",
        &[
            "sessions.rdp0.server=ts1.example.com",
            "display.monitors=2",
            "system.language=de",
        ],
        false,
    )
    .await;
    let floor_profile = profile(&mut admin, "floor", &["display.monitors=3"], false).await;
    assign(&mut admin, base, None, Some(site)).await;
    assign(&mut admin, floor_profile, None, Some(floor)).await;
    move_device(&mut admin, reg.device_id, floor).await;

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

    // The explanation names the origin of every value and what it overrode.
    let explain = admin
        .explain_settings(pb::ExplainSettingsRequest {
            device_id: reg.device_id,
            ..Default::default()
        })
        .await
        .expect("explain")
        .into_inner();
    let monitors = explain
        .values
        .iter()
        .find(|v| v.key == "display.monitors")
        .expect("display.monitors explained");
    let origin = monitors.origin.clone().expect("origin");
    assert_eq!(monitors.value, "3");
    assert_eq!(origin.profile_name, "floor");
    assert_eq!(origin.object_kind, "folder");
    assert_eq!(origin.object_name, "Floor 1");
    assert_eq!(monitors.overridden[0].value, "2");
    let origins: Vec<pb::Origin> = explain
        .values
        .iter()
        .filter_map(|v| v.origin.clone())
        .collect();
    assert!(
        origins.iter().any(|o| o.object_name == "Floor 1")
            && origins.iter().any(|o| o.profile_name == "rdp-base"),
        "{origins:?}"
    );

    // A profile change reaches the device on its next check-in.
    admin
        .update_profile_params(pb::UpdateProfileParamsRequest {
            id: floor_profile,
            set: params(&["display.monitors=4"]),
            unset: vec![],
        })
        .await
        .expect("set");
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
    server.stop().await;
}

#[tokio::test]
async fn a_device_reads_only_its_own_data() {
    let server = TestServer::start(None).await;
    let mut admin = server.admin();
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
    let job = admin
        .create_jobs(pb::CreateJobsRequest {
            kind: "reboot".into(),
            device_id: Some(a_id),
            ..Default::default()
        })
        .await
        .expect("create job")
        .into_inner();
    let job_id = job.job_ids[0];
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
    let listed = admin
        .list_jobs(pb::ListJobsRequest {
            device_id: Some(a_id),
            ..Default::default()
        })
        .await
        .expect("list jobs")
        .into_inner();
    assert_eq!(listed.jobs[0].state, "done", "{listed:?}");
    assert_eq!(listed.jobs[0].result, "rebooted");

    // After an administrator resets A, the unit can register with a new secret.
    admin
        .reset_device_credential(pb::ResetDeviceCredentialRequest { id: a_id })
        .await
        .expect("reset the credential");
    let mut replaced = server.device().await;
    let again = replaced
        .register("AA:AA:AA:AA:AA:01", "a")
        .await
        .expect("after reset");
    assert_eq!(again.device_id, a_id);
    let err = a.check_in("idle", 0).await.expect_err("old secret is gone");
    assert_eq!(err.code(), Code::Unauthenticated);
    server.stop().await;
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_changes_nothing() {
    let server = TestServer::start(None).await;
    let mut admin = server.admin();
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

    let p = profile(&mut admin, "p", &["display.monitors=2"], false).await;
    let set = |pairs: &'static [&'static str]| {
        let mut admin = admin.clone();
        async move {
            admin
                .update_profile_params(pb::UpdateProfileParamsRequest {
                    id: p,
                    set: params(pairs),
                    unset: vec![],
                })
                .await
                .expect_err("refused")
        }
    };
    let err = set(&["display.monitors=lots"]).await;
    assert!(
        err.message().contains("display.monitors") && err.message().contains("integer"),
        "{err}"
    );
    let err = set(&["no.such.key=1"]).await;
    assert!(
        err.message().contains("unknown settings parameter"),
        "{err}"
    );
    let err = set(&["display.monitors=3", "display.resolution=huge"]).await;
    assert!(err.message().contains("display.resolution"), "{err}");
    let shown = admin
        .get_profile(pb::GetProfileRequest { id: p })
        .await
        .expect("show")
        .into_inner();
    assert_eq!(shown.params.len(), 1, "one transaction: {shown:?}");
    assert_eq!(shown.params[0].value, "2");

    let err = admin
        .delete_folder(pb::DeleteFolderRequest { id: 4242 })
        .await
        .expect_err("no such folder");
    assert!(err.message().contains("not found"), "{err}");
    let err = admin
        .get_device(pb::GetDeviceRequest { id: 4242 })
        .await
        .expect_err("no such device");
    assert!(err.message().contains("device 4242 not found"), "{err}");

    // Wrong password: a clear refusal, no session.
    let err = server
        .login("admin", "not-the-password")
        .await
        .expect_err("wrong password");
    assert!(
        err.message().contains("wrong user name or password"),
        "{err}"
    );

    // Permissions: a read-only administrator cannot write.
    admin
        .create_admin(pb::CreateAdminRequest {
            username: "viewer".into(),
            password: "viewer-password".into(),
            permissions: vec!["devices:read".into(), "settings:read".into()],
        })
        .await
        .expect("create the viewer");
    let mut viewer = server
        .login("viewer", "viewer-password")
        .await
        .expect("the viewer logs in");
    let err = viewer
        .create_folder(pb::CreateFolderRequest {
            name: "nope".into(),
            parent_id: None,
        })
        .await
        .expect_err("read-only");
    assert!(err.message().contains("settings:write"), "{err}");
    server.stop().await;
}

#[tokio::test]
async fn a_generic_grpc_client_discovers_the_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = TestServer::start(None).await;
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
        let channel = crate::harness::channel(url, &server.ca_pem)
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
    server.stop().await;
}
