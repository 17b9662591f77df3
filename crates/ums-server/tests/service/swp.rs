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

async fn add_directory(admin: &mut Admin, slapd: &Slapd) {
    admin
        .create_directory(pb::DirectorySpec {
            name: "corp".into(),
            kind: "ad".into(),
            domain: AD_DOMAIN.into(),
            netbios: AD_NETBIOS.into(),
            urls: vec![slapd.ldaps_url()],
            base_dn: AD_SUFFIX.into(),
            bind_dn: format!("cn=svc-ums,ou=Service,{AD_SUFFIX}"),
            bind_password: SERVICE_PASSWORD.into(),
            ca_pem: slapd.ca_pem().into(),
            ..Default::default()
        })
        .await
        .expect("add the directory");
}

async fn add_licence(admin: &mut Admin, name: &str, seats: i64, expires: &str) -> pb::SwpLicence {
    admin
        .create_swp_licence(pb::CreateSwpLicenceRequest {
            name: name.into(),
            seats,
            expires: expires.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("add licence {name}: {e:?}"))
        .into_inner()
}

/// While alice is logged in, check-ins and settings downloads are hers and follow every change of
/// her profiles; the forced logout gives the device its own settings back; the folder switch, a
/// profile's switch and the licence pool (seats, expiry) decide who may log in.
#[tokio::test]
async fn a_session_follows_the_user_and_licences_come_from_the_pool() {
    let slapd = Slapd::start(&TestDirectory::sample()).expect("slapd");
    let swp = SwpAuth::bind();
    let url = swp.url.clone();
    let server = TestServer::start_with(None, |cfg| cfg.swp.url = url).await;
    let swp = swp.start(&server);
    let mut admin = server.admin();
    add_directory(&mut admin, &slapd).await;

    let device_base = profile(&mut admin, "device-base", &["audio.volume=20"], false).await;
    let sales = profile(&mut admin, "sales", &["display.monitors=2"], false).await;
    assign_user(&mut admin, sales, ("group", "sales"))
        .await
        .expect("assign to sales");
    let desks = crate::harness::folder(&mut admin, "desks", None).await;
    assign(&mut admin, device_base, None, Some(desks)).await;

    let mut device = server.device().await;
    let id = device
        .register("00:aa:bb:cc:dd:11", "desk-11")
        .await
        .expect("register")
        .device_id;
    crate::harness::move_device(&mut admin, id, desks).await;

    // Nothing licenses the device yet.
    let e = device
        .login("alice", "alice-pw-1")
        .await
        .expect_err("no licence");
    assert!(e.message().contains("no Shared Workplace licence"), "{e:?}");
    // A pool with one seat, but Shared Workplace is off everywhere.
    add_licence(&mut admin, "order-1", 1, "2099-12-31").await;
    let e = device.login("alice", "alice-pw-1").await.expect_err("off");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("switched off"), "{e:?}");
    // On for the folder: the device inherits it and takes the seat.
    admin
        .set_folder_shared_workplace(pb::SetFolderSharedWorkplaceRequest {
            folder_id: desks,
            enabled: Some(true),
        })
        .await
        .expect("folder switch");

    // A domain no directory has is refused like a wrong password, and like an unknown user.
    let e = device
        .login("OTHER\\alice", "alice-pw-1")
        .await
        .expect_err("unknown domain");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert_eq!(e.message(), "wrong user name or password");
    let unknown = device
        .login("AD\\mallory", "alice-pw-1")
        .await
        .expect_err("unknown user");
    assert_eq!(
        (e.code(), e.message()),
        (unknown.code(), unknown.message()),
        "{unknown:?}"
    );

    let login = device
        .login("AD\\alice", "alice-pw-1")
        .await
        .unwrap_or_else(|e| panic!("login: {e:?}\n{}", swp.log_text()));
    assert_eq!(
        settings(&login.settings)
            .get("display.monitors")
            .map(String::as_str),
        Some("2")
    );
    let pool = admin
        .list_swp_licences(pb::ListSwpLicencesRequest {})
        .await
        .expect("licences")
        .into_inner();
    assert_eq!(pool.licences.len(), 1);
    assert_eq!((pool.licences[0].seats, pool.licences[0].used), (1, 1));
    assert_eq!(pool.licences[0].expires, "2099-12-31");

    // The check-in knows the session: nothing changed since the login.
    let c = device
        .check_in("idle", login.revision)
        .await
        .expect("check in");
    assert!(!c.settings_changed, "{c:?}");
    assert_eq!(c.settings_revision, login.revision);
    // A settings download during the session gets hers.
    let got = device.get_settings().await.expect("settings");
    assert_eq!(got.revision, login.revision);
    assert_eq!(
        settings(&got.settings)
            .get("display.monitors")
            .map(String::as_str),
        Some("2")
    );

    // A change of her group's profile reaches her next check-in.
    admin
        .update_profile_params(pb::UpdateProfileParamsRequest {
            id: sales,
            set: params(&["display.monitors=3"]),
            unset: vec![],
        })
        .await
        .expect("change the group's profile");
    let c = device
        .check_in("idle", login.revision)
        .await
        .expect("check in");
    assert!(c.settings_changed, "{c:?}");
    let got = device.get_settings().await.expect("settings");
    assert_eq!(got.revision, c.settings_revision);
    let s = settings(&got.settings);
    assert_eq!(
        s.get("display.monitors").map(String::as_str),
        Some("3"),
        "{s:?}"
    );
    assert_eq!(
        s.get("audio.volume").map(String::as_str),
        Some("20"),
        "{s:?}"
    );
    // And a change on the device's side too.
    admin
        .update_profile_params(pb::UpdateProfileParamsRequest {
            id: device_base,
            set: params(&["audio.volume=30"]),
            unset: vec![],
        })
        .await
        .expect("change the device's profile");
    let c2 = device
        .check_in("idle", got.revision)
        .await
        .expect("check in");
    assert!(c2.settings_changed, "{c2:?}");
    let got = device.get_settings().await.expect("settings");
    let s = settings(&got.settings);
    assert_eq!(
        s.get("audio.volume").map(String::as_str),
        Some("30"),
        "{s:?}"
    );
    assert_eq!(
        s.get("display.monitors").map(String::as_str),
        Some("3"),
        "{s:?}"
    );

    // Who is logged in where.
    let sessions = admin
        .list_swp_sessions(pb::ListSwpSessionsRequest::default())
        .await
        .expect("sessions")
        .into_inner()
        .sessions;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(
        (sessions[0].device_id, sessions[0].user.as_str()),
        (id, "alice")
    );
    assert_eq!(sessions[0].device_name, "desk-11");
    assert_eq!(sessions[0].display_name, "Alice Smith");

    // Forced out: the next check-in finds the change and the device gets its own settings.
    admin
        .end_swp_session(pb::EndSwpSessionRequest { device_id: id })
        .await
        .expect("forced logout");
    let c3 = device
        .check_in("idle", got.revision)
        .await
        .expect("check in");
    assert!(c3.settings_changed, "{c3:?}");
    let own = device.get_settings().await.expect("settings");
    let s = settings(&own.settings);
    assert_eq!(s.get("display.monitors"), None, "{s:?}");
    assert_eq!(
        s.get("audio.volume").map(String::as_str),
        Some("30"),
        "{s:?}"
    );
    let e = admin
        .end_swp_session(pb::EndSwpSessionRequest { device_id: id })
        .await
        .expect_err("nobody left");
    assert_eq!(e.code(), Code::NotFound);
    let none = admin
        .list_swp_sessions(pb::ListSwpSessionsRequest::default())
        .await
        .expect("sessions")
        .into_inner();
    assert!(none.sessions.is_empty(), "{none:?}");

    // A second device, outside the folder: off until a profile of its own switches it on, then
    // the only seat is taken.
    let mut second = server.device().await;
    let id2 = second
        .register("00:aa:bb:cc:dd:12", "desk-12")
        .await
        .expect("register")
        .device_id;
    let e = second.login("bob", "bob-pw-1").await.expect_err("off");
    assert!(e.message().contains("switched off"), "{e:?}");
    let on = profile(
        &mut admin,
        "swp-on",
        &["sharedworkplace.enabled=true"],
        false,
    )
    .await;
    assign(&mut admin, on, Some(id2), None).await;
    let e = second.login("bob", "bob-pw-1").await.expect_err("full");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("all 1 seats"), "{e:?}");

    // Only an expired licence left: new logins end with a message that says so.
    admin
        .delete_swp_licence(pb::DeleteSwpLicenceRequest {
            id: pool.licences[0].id,
        })
        .await
        .expect("remove the licence");
    let old = add_licence(&mut admin, "order-0", 10, "2020-01-31").await;
    assert!(old.expired);
    let e = device
        .login("alice", "alice-pw-1")
        .await
        .expect_err("expired");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message()
            .contains("licence `order-0` expired on 2020-01-31"),
        "{e:?}"
    );
    // Bad licences are refused and change nothing.
    for (name, seats, expires) in [
        ("x", 0, "2099-01-01"),
        ("y", 5, "31.12.2099"),
        ("order-0", 5, "2099-01-01"),
    ] {
        let r = admin
            .create_swp_licence(pb::CreateSwpLicenceRequest {
                name: name.into(),
                seats,
                expires: expires.into(),
            })
            .await;
        assert!(r.is_err(), "{name} {seats} {expires}");
    }
    let pool = admin
        .list_swp_licences(pb::ListSwpLicencesRequest {})
        .await
        .expect("licences")
        .into_inner();
    assert_eq!(pool.licences.len(), 1, "{pool:?}");
    server.stop().await;
}

/// Every user who logs into a shared device gets their own profile, not only the first: three
/// users in turn (with and without a logout between them), each one's check-ins and settings
/// downloads carry that user's settings. The screen settings a user may have (resolution,
/// layout, refresh, rotation, screens, connectors) come from the user's profile; the device-only
/// parameters of the catalog are refused in a profile for users.
#[tokio::test]
async fn every_user_of_a_shared_device_gets_their_own_profile() {
    let slapd = Slapd::start(&TestDirectory::sample()).expect("slapd");
    let swp = SwpAuth::bind();
    let url = swp.url.clone();
    let server = TestServer::start_with(None, |cfg| cfg.swp.url = url).await;
    let swp = swp.start(&server);
    let mut admin = server.admin();
    add_directory(&mut admin, &slapd).await;

    let device_base = profile(
        &mut admin,
        "device-base",
        &["audio.volume=20", "display.color_depth=24"],
        false,
    )
    .await;
    let screens = [
        (
            "alice",
            "alice-pw-1",
            &[
                "audio.volume=81",
                "display.resolution=2560x1440",
                "display.layout=extend_left",
                "display.monitors=2",
            ][..],
        ),
        (
            "bob",
            "bob-pw-1",
            &[
                "audio.volume=82",
                "display.refresh_hz=75",
                "display.rotation=left",
                "display.screen0.connector=dvi",
            ][..],
        ),
        (
            "carol",
            "carol-pw-1",
            &["audio.volume=83", "display.resolution=3840x2160"][..],
        ),
    ];
    let mut own = Vec::new();
    for (user, _, pairs) in &screens {
        let id = profile(&mut admin, &format!("{user}-own"), pairs, false).await;
        assign_user(&mut admin, id, ("user", user))
            .await
            .unwrap_or_else(|e| panic!("assign to {user}: {e:?}"));
        own.push(id);
    }
    // The device-only parameters of the catalog are refused in a profile for users, and the
    // profile keeps what it had.
    let alice_own = own[0];
    for key in [
        "partition.custom.enabled=true",
        "browser.plugin0.name=flash",
        "appliance.mode=citrix",
        "input.mouse.three_button_emulation=true",
        "display.color_depth=16",
        "sharedworkplace.logoff_hotkey=Ctrl+Alt+L",
        "sharedworkplace.logoff_launcher=true",
    ] {
        let refused = admin
            .update_profile_params(pb::UpdateProfileParamsRequest {
                id: alice_own,
                set: params(&[key]),
                unset: vec![],
            })
            .await
            .expect_err(key);
        assert_eq!(refused.code(), Code::InvalidArgument, "{key}: {refused:?}");
        assert!(
            refused.message().contains("device-only"),
            "{key}: {refused}"
        );
        let name = key.split('=').next().unwrap_or(key);
        assert!(refused.message().contains(name), "{key}: {refused}");
    }

    let mut device = server.device().await;
    let id = device
        .register("00:aa:bb:cc:dd:31", "shift-desk")
        .await
        .expect("register")
        .device_id;
    assign(&mut admin, device_base, Some(id), None).await;
    set_swp(&mut admin, id, Some(true), Some(true)).await;

    let mut revision = device
        .check_in("idle", 0)
        .await
        .expect("check in")
        .settings_revision;
    // Alice, Bob (after a logout), Carol (a change of user without a logout), Alice again.
    for (round, (user, password, pairs)) in screens.iter().chain(&screens[..1]).enumerate() {
        if round == 1 {
            device.logout().await.expect("logout");
        }
        let login = device
            .login(user, password)
            .await
            .unwrap_or_else(|e| panic!("{user}: {e:?}\n{}", swp.log_text()));
        assert_eq!(login.user, *user);
        let c = device.check_in("idle", revision).await.expect("check in");
        assert!(c.settings_changed, "{user}: {c:?}");
        assert_eq!(c.settings_revision, login.revision, "{user}");
        revision = c.settings_revision;
        for got in [
            settings(&login.settings),
            settings(&device.get_settings().await.expect("settings").settings),
        ] {
            for pair in *pairs {
                let (k, v) = pair.split_once('=').expect("pair");
                assert_eq!(got.get(k).map(String::as_str), Some(v), "{user}: {got:?}");
            }
            // The device's colour depth stays; nobody else's screens leak in.
            assert_eq!(
                got.get("display.color_depth").map(String::as_str),
                Some("24")
            );
            let others = screens
                .iter()
                .filter(|(u, _, _)| u != user)
                .flat_map(|(_, _, p)| p.iter())
                .filter(|p| {
                    !pairs
                        .iter()
                        .any(|own| own.split('=').next() == p.split('=').next())
                });
            for p in others {
                let (k, _) = p.split_once('=').expect("pair");
                assert_eq!(got.get(k), None, "{user} got {k}: {got:?}");
            }
        }
    }
    server.stop().await;
}
