//! Shared Workplace: a real slapd (the Active Directory look-alike), the server and swp-auth in
//! process; a device user logs in through the server and gets the merged settings; refusals are
//! clear. (`tests/e2e` sets the same up with `umsctl` and the real binaries.)

use std::collections::BTreeMap;

use tonic::Code;
use ums_proto::admin::v1 as pb;
use ums_testkit::ldap::{AD_DOMAIN, AD_NETBIOS, AD_SUFFIX, SERVICE_PASSWORD, Slapd, TestDirectory};

use crate::harness::{Admin, SwpAuth, TestServer, assign, params, profile};

fn settings(list: &[ums_proto::device::v1::Setting]) -> BTreeMap<String, String> {
    list.iter()
        .map(|s| (s.key.clone(), s.value.clone()))
        .collect()
}

/// Assigns a profile to a user, a group or an OU of the only directory.
async fn assign_user(
    admin: &mut Admin,
    profile_id: i64,
    who: (&str, &str),
) -> Result<(), tonic::Status> {
    let mut req = pb::AssignUserRequest {
        profile_id,
        ..Default::default()
    };
    match who {
        ("user", name) => req.user = name.into(),
        ("group", name) => req.group = name.into(),
        ("ou", name) => req.ou = name.into(),
        (kind, _) => panic!("no principal kind {kind}"),
    }
    admin.assign_user(req).await.map(|_| ())
}

async fn set_swp(
    admin: &mut Admin,
    device_id: i64,
    licensed: Option<bool>,
    enabled: Option<bool>,
) -> pb::SharedWorkplaceState {
    admin
        .set_shared_workplace(pb::SetSharedWorkplaceRequest {
            device_id,
            licensed,
            enabled,
        })
        .await
        .expect("set the Shared Workplace state")
        .into_inner()
}

async fn logins_through_the_server(database_url: Option<&str>) {
    let mut slapd = Slapd::start(&TestDirectory::sample()).expect("slapd");
    let swp = SwpAuth::bind();
    let url = swp.url.clone();
    let server = TestServer::start_with(database_url, |cfg| cfg.swp.url = url).await;
    let mut swp = swp.start(&server);
    let mut admin = server.admin();

    // The directory, as an administrator adds it.
    let dead = format!("ldaps://127.0.0.1:{}", ums_testkit::free_port());
    let dir = admin
        .create_directory(pb::DirectorySpec {
            name: "corp".into(),
            kind: "ad".into(),
            domain: AD_DOMAIN.into(),
            netbios: AD_NETBIOS.into(),
            urls: vec![dead, slapd.ldaps_url()],
            base_dn: AD_SUFFIX.into(),
            bind_dn: format!("cn=svc-ums,ou=Service,{AD_SUFFIX}"),
            bind_password: SERVICE_PASSWORD.into(),
            ca_pem: slapd.ca_pem().into(),
            ..Default::default()
        })
        .await
        .expect("add the directory")
        .into_inner();
    assert!(dir.has_bind_password);
    let listed = admin
        .list_directories(pb::ListDirectoriesRequest {})
        .await
        .expect("directories")
        .into_inner();
    let listed = serde_json::to_string(&listed).expect("json");
    assert!(!listed.contains(SERVICE_PASSWORD), "{listed}");
    if database_url.is_none() {
        // The bind password is stored sealed, never in clear.
        let db = std::fs::read(server.data_dir.join("ums.db")).unwrap_or_default();
        let wal = std::fs::read(server.data_dir.join("ums.db-wal")).unwrap_or_default();
        let needle = SERVICE_PASSWORD.as_bytes();
        for bytes in [&db, &wal] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "the bind password is in the database file in clear"
            );
        }
    }

    // Profiles on the device's side and on the user's.
    let device_base = profile(
        &mut admin,
        "device-base",
        &[
            "audio.volume=20",
            "display.monitors=1",
            "network.proxy=http://proxy:3128",
            "sessions.rdp0.server=ts-device",
        ],
        false,
    )
    .await;
    let device_prio = profile(
        &mut admin,
        "device-prio",
        &["desktop.wallpaper_file=device.png"],
        true,
    )
    .await;
    let own = profile(&mut admin, "alice-own", &["audio.volume=80"], false).await;
    let sales = profile(
        &mut admin,
        "sales",
        &["display.monitors=2", "sessions.rdp0.server=ts-sales"],
        false,
    )
    .await;
    let staff = profile(
        &mut admin,
        "staff",
        &["display.monitors=3", "system.language=de"],
        false,
    )
    .await;
    let berlin = profile(
        &mut admin,
        "berlin",
        &["system.timezone=Europe/Berlin", "system.language=fr"],
        false,
    )
    .await;
    let berlin_prio = profile(
        &mut admin,
        "berlin-prio",
        &["desktop.wallpaper_file=berlin.png"],
        true,
    )
    .await;
    let domain_users = profile(
        &mut admin,
        "domain-users",
        &["input.keyboard_layout=de"],
        false,
    )
    .await;
    let staff_dn = format!("cn=staff,ou=Groups,{AD_SUFFIX}");
    for (profile_id, who) in [
        (own, ("user", "AD\\alice")),
        (sales, ("group", "sales")),
        (staff, ("group", staff_dn.as_str())),
        (berlin, ("ou", "Berlin")),
        (berlin_prio, ("ou", "Berlin")),
        (domain_users, ("group", "Domain Users")),
    ] {
        assign_user(&mut admin, profile_id, who)
            .await
            .unwrap_or_else(|e| panic!("assign {profile_id} to {who:?}: {e:?}"));
    }

    // Device-only parameters never go into a profile for users.
    let refused = assign_user(&mut admin, device_base, ("user", "alice"))
        .await
        .expect_err("device-only parameters for a user");
    assert!(refused.message().contains("device-only"), "{refused}");
    assert!(refused.message().contains("network.proxy"), "{refused}");
    let refused = admin
        .update_profile_params(pb::UpdateProfileParamsRequest {
            id: own,
            set: params(&["security.ssh=true"]),
            unset: vec![],
        })
        .await
        .expect_err("a device-only parameter in a user's profile");
    assert!(refused.message().contains("device-only"), "{refused}");

    let mut device = server.device().await;
    let id = device
        .register("00:aa:bb:cc:dd:01", "shared-desk-1")
        .await
        .expect("register")
        .device_id;
    assign(&mut admin, device_base, Some(id), None).await;
    assign(&mut admin, device_prio, Some(id), None).await;

    // No licence, no login.
    let e = device
        .login("alice", "alice-pw-1")
        .await
        .expect_err("unlicensed");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("no Shared Workplace licence"), "{e:?}");
    set_swp(&mut admin, id, Some(true), None).await;

    // The merged settings, in the documented order.
    let login = device
        .login("alice@ad.example.org", "alice-pw-1")
        .await
        .unwrap_or_else(|e| panic!("login: {e:?}\n{}", swp.log_text()));
    assert_eq!(login.user, "alice");
    assert_eq!(login.display_name, "Alice Smith");
    let s = settings(&login.settings);
    let get = |k: &str| s.get(k).map(String::as_str);
    assert_eq!(get("audio.volume"), Some("80"), "user beats device: {s:?}");
    assert_eq!(
        get("display.monitors"),
        Some("2"),
        "direct group beats nested group: {s:?}"
    );
    assert_eq!(get("system.language"), Some("de"), "group beats OU: {s:?}");
    assert_eq!(get("system.timezone"), Some("Europe/Berlin"), "{s:?}");
    assert_eq!(
        get("input.keyboard_layout"),
        Some("de"),
        "primary group: {s:?}"
    );
    assert_eq!(get("network.proxy"), Some("http://proxy:3128"), "{s:?}");
    assert_eq!(
        get("desktop.wallpaper_file"),
        Some("berlin.png"),
        "user-side priority beats device priority: {s:?}"
    );
    assert_eq!(get("sessions.rdp0.server"), Some("ts-sales"), "{s:?}");
    assert_eq!(get("sessions.rdp1.server"), Some("ts-device"), "{s:?}");

    // What the administrator sees.
    let explained = admin
        .explain_settings(pb::ExplainSettingsRequest {
            device_id: id,
            user: "alice".into(),
            directory: String::new(),
        })
        .await
        .expect("explain")
        .into_inner();
    let user = explained.user.clone().expect("the user");
    assert_eq!(user.login, "alice");
    assert_eq!(user.display_name, "Alice Smith");
    assert_eq!(user.directory, "corp");
    assert_eq!(user.primary_group, "Domain Users");
    assert_eq!(user.groups, ["Domain Users", "sales", "staff", "everyone"]);
    let monitors = explained
        .values
        .iter()
        .find(|v| v.key == "display.monitors")
        .expect("monitors");
    let origin = monitors.origin.clone().expect("origin");
    assert_eq!(monitors.value, "2");
    assert_eq!(origin.object_kind, "group");
    assert_eq!(origin.object_name, "sales");
    assert_eq!(monitors.overridden.len(), 2);

    // Refusals, each with a clear answer.
    for (user, password) in [
        ("alice", "wrong-password"),
        ("mallory", "alice-pw-1"),
        ("*", "alice-pw-1"),
        ("alice)(sAMAccountName=*", "alice-pw-1"),
        ("*)(|(objectClass=*)", "x"),
    ] {
        let e = device.login(user, password).await.expect_err(user);
        assert_eq!(e.code(), Code::Unauthenticated, "{user}: {e:?}");
        assert_eq!(e.message(), "wrong user name or password", "{user}");
    }
    let e = device.login("alice", "").await.expect_err("empty password");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "password is empty");

    // Switched off on the device: it keeps its licence.
    let off = set_swp(&mut admin, id, None, Some(false)).await;
    assert!(off.licensed);
    let e = device.login("alice", "alice-pw-1").await.expect_err("off");
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("switched off"), "{e:?}");
    set_swp(&mut admin, id, None, Some(true)).await;

    // Logout: back to the device's own settings. A change of user is logout + login.
    let own_settings = device.logout().await.expect("logout");
    let s = settings(&own_settings.settings);
    assert_eq!(s.get("audio.volume").map(String::as_str), Some("20"));
    assert_eq!(s.get("display.monitors").map(String::as_str), Some("1"));
    let bob = device.login("AD\\bob", "bob-pw-1").await.expect("bob");
    assert_eq!(bob.user, "bob");
    assert_eq!(
        settings(&bob.settings)
            .get("audio.volume")
            .map(String::as_str),
        Some("20"),
        "alice's own profile is not bob's"
    );

    // The directory goes down: a clear refusal naming the directory.
    slapd.stop();
    let e = device.login("alice", "alice-pw-1").await.expect_err("down");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("directory `corp` is unreachable"),
        "{e:?}"
    );
    slapd.restart().expect("restart slapd");
    device.login("alice", "alice-pw-1").await.expect("back up");

    // swp-auth goes down: the server says the login service is unreachable.
    swp.stop().await;
    let e = device
        .login("alice", "alice-pw-1")
        .await
        .expect_err("no swp-auth");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("login service is unreachable"),
        "{e:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn shared_workplace_logins_on_sqlite() {
    logins_through_the_server(None).await;
}

#[tokio::test]
async fn shared_workplace_logins_on_postgres() {
    let url = ums_testkit::shared_database("svc_swp").expect("postgres");
    logins_through_the_server(Some(&url)).await;
}
