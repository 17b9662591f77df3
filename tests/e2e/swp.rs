//! Shared Workplace end to end: a real slapd (the Active Directory look-alike), a server and
//! swp-auth as real processes; a device user logs in through the server and gets the merged
//! settings; refusals are clear.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tonic::Code;
use ums_testkit::ldap::{AD_DOMAIN, AD_NETBIOS, AD_SUFFIX, SERVICE_PASSWORD, Slapd, TestDirectory};
use ums_testkit::{ChildGuard, bin_path, free_port, wait_for_tcp};

use crate::harness::Server;

/// A running `swp-auth` with an identity issued from the server's CA.
pub struct SwpAuth {
    pub child: ChildGuard,
    log: PathBuf,
}

impl SwpAuth {
    pub fn start(server_data: &Path, port: u16, dir: &Path) -> SwpAuth {
        ums_tls::install_crypto_provider();
        let tls = server_data.join("data/tls");
        let (ca, _) = ums_tls::CertAuthority::load_or_create(&tls, "UMS device communication CA")
            .expect("ca");
        let identity = ca
            .issue_node(
                ums_tls::ComponentKind::SwpAuth,
                "swp-auth-e2e",
                &["127.0.0.1".to_owned()],
            )
            .expect("identity");
        let identity_dir = dir.join("identity");
        identity.save(&identity_dir).expect("save identity");
        let log = dir.join("swp-auth.log");
        let log_file = std::fs::File::create(&log).expect("log");
        let child = Command::new(bin_path("swp-auth"))
            .env("UMS_NETWORK__IDENTITY_DIR", &identity_dir)
            .env("UMS_INTERNAL__LISTEN", format!("127.0.0.1:{port}"))
            .env("UMS_LOG__LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .spawn()
            .expect("spawn swp-auth");
        let mut s = SwpAuth {
            child: ChildGuard::new(child),
            log,
        };
        let started = Instant::now();
        while wait_for_tcp(([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("swp-auth exited ({status}):\n{}", s.log_text());
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "swp-auth did not listen:\n{}",
                s.log_text()
            );
        }
        s
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A server whose `[swp] url` points at `swp_port`.
fn start_server(database_url: Option<&str>, swp_port: u16) -> Server {
    let url = format!("https://127.0.0.1:{swp_port}");
    Server::start_with(
        tempfile::tempdir().expect("data dir"),
        database_url,
        &[("UMS_SWP__URL", url.as_str())],
    )
}

fn settings(list: &[ums_proto::device::v1::Setting]) -> BTreeMap<String, String> {
    list.iter()
        .map(|s| (s.key.clone(), s.value.clone()))
        .collect()
}

fn profile(ctl: &crate::harness::Umsctl, name: &str, params: &[&str], priority: bool) -> String {
    let mut args = vec!["profiles", "create", name];
    if priority {
        args.push("--priority");
    }
    args.extend_from_slice(params);
    ctl.json(&args)["id"]
        .as_i64()
        .expect("profile id")
        .to_string()
}

async fn logins_through_the_server(database_url: Option<&str>) {
    let mut slapd = Slapd::start(&TestDirectory::sample()).expect("slapd");
    let swp_port = free_port();
    let server = start_server(database_url, swp_port);
    let work = tempfile::tempdir().expect("work dir");
    let mut swp = SwpAuth::start(server.data.path(), swp_port, work.path());
    let ctl = server.umsctl();

    // The directory, as an administrator adds it.
    let ca_file = work.path().join("directory-ca.pem");
    std::fs::write(&ca_file, slapd.ca_pem()).expect("ca file");
    let pw_file = work.path().join("bind-password");
    std::fs::write(&pw_file, format!("{SERVICE_PASSWORD}\n")).expect("pw file");
    let dead = format!("ldaps://127.0.0.1:{}", free_port());
    let dir = ctl.json(&[
        "swp",
        "add-directory",
        "corp",
        "--domain",
        AD_DOMAIN,
        "--netbios",
        AD_NETBIOS,
        "--url",
        &dead,
        "--url",
        &slapd.ldaps_url(),
        "--base-dn",
        AD_SUFFIX,
        "--bind-dn",
        &format!("cn=svc-ums,ou=Service,{AD_SUFFIX}"),
        "--bind-password-file",
        pw_file.to_str().expect("path"),
        "--ca-file",
        ca_file.to_str().expect("path"),
    ]);
    assert_eq!(dir["has_bind_password"], true);
    let listed = ctl.ok(&["--json", "swp", "directories"]);
    assert!(!listed.contains(SERVICE_PASSWORD), "{listed}");
    if database_url.is_none() {
        // The bind password is stored sealed, never in clear.
        let db = std::fs::read(server.data.path().join("data/ums.db")).unwrap_or_default();
        let wal = std::fs::read(server.data.path().join("data/ums.db-wal")).unwrap_or_default();
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
        &ctl,
        "device-base",
        &[
            "audio.volume=20",
            "display.monitors=1",
            "network.proxy=http://proxy:3128",
            "sessions.rdp0.server=ts-device",
        ],
        false,
    );
    let device_prio = profile(
        &ctl,
        "device-prio",
        &["desktop.wallpaper_file=device.png"],
        true,
    );
    let own = profile(&ctl, "alice-own", &["audio.volume=80"], false);
    let sales = profile(
        &ctl,
        "sales",
        &["display.monitors=2", "sessions.rdp0.server=ts-sales"],
        false,
    );
    let staff = profile(
        &ctl,
        "staff",
        &["display.monitors=3", "system.language=de"],
        false,
    );
    let berlin = profile(
        &ctl,
        "berlin",
        &["system.timezone=Europe/Berlin", "system.language=fr"],
        false,
    );
    let berlin_prio = profile(
        &ctl,
        "berlin-prio",
        &["desktop.wallpaper_file=berlin.png"],
        true,
    );
    let domain_users = profile(&ctl, "domain-users", &["input.keyboard_layout=de"], false);
    ctl.ok(&["swp", "assign", &own, "--user", "AD\\alice"]);
    ctl.ok(&["swp", "assign", &sales, "--group", "sales"]);
    ctl.ok(&[
        "swp",
        "assign",
        &staff,
        "--group",
        &format!("cn=staff,ou=Groups,{AD_SUFFIX}"),
    ]);
    ctl.ok(&["swp", "assign", &berlin, "--ou", "Berlin"]);
    ctl.ok(&["swp", "assign", &berlin_prio, "--ou", "Berlin"]);
    ctl.ok(&["swp", "assign", &domain_users, "--group", "Domain Users"]);

    // Device-only parameters never go into a profile for users.
    let refused = ctl.fails(&["swp", "assign", &device_base, "--user", "alice"]);
    assert!(refused.contains("device-only"), "{refused}");
    assert!(refused.contains("network.proxy"), "{refused}");
    let refused = ctl.fails(&["profiles", "set", &own, "security.ssh=true"]);
    assert!(refused.contains("device-only"), "{refused}");

    let mut device = server.device().await;
    let id = device
        .register("00:aa:bb:cc:dd:01", "shared-desk-1")
        .await
        .expect("register")
        .device_id;
    let id_s = id.to_string();
    ctl.ok(&["assign", &device_base, "--device", &id_s]);
    ctl.ok(&["assign", &device_prio, "--device", &id_s]);

    // No licence, no login.
    let e = device
        .login("alice", "alice-pw-1")
        .await
        .expect_err("unlicensed");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("no Shared Workplace licence"), "{e:?}");
    ctl.ok(&["swp", "device", &id_s, "--licensed", "true"]);

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
    let explained = ctl.json(&["settings", "explain", &id_s, "--user", "alice"]);
    assert_eq!(explained["user"]["login"], "alice");
    assert_eq!(explained["user"]["primary_group"], "Domain Users");
    let groups: Vec<&str> = explained["user"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g.as_str())
        .collect();
    assert_eq!(groups, ["Domain Users", "sales", "staff", "everyone"]);
    let values = explained["values"].as_array().expect("values");
    let monitors = values
        .iter()
        .find(|v| v["key"] == "display.monitors")
        .expect("monitors");
    assert_eq!(monitors["value"], "2");
    assert_eq!(monitors["origin"]["object_kind"], "group");
    assert_eq!(monitors["origin"]["object_name"], "sales");
    assert_eq!(monitors["overridden"].as_array().map(Vec::len), Some(2));
    let text = ctl.ok(&["settings", "explain", &id_s, "--user", "alice"]);
    assert!(
        text.contains("user alice (Alice Smith) in directory corp"),
        "{text}"
    );
    assert!(text.contains("group \"sales\""), "{text}");

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
    let off = ctl.json(&["swp", "device", &id_s, "--enabled", "false"]);
    assert_eq!(off["licensed"], true);
    let e = device.login("alice", "alice-pw-1").await.expect_err("off");
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("switched off"), "{e:?}");
    ctl.ok(&["swp", "device", &id_s, "--enabled", "true"]);

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
    swp.child.stop();
    let e = device
        .login("alice", "alice-pw-1")
        .await
        .expect_err("no swp-auth");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("login service is unreachable"),
        "{e:?}"
    );
}

#[tokio::test]
async fn shared_workplace_logins_on_sqlite() {
    logins_through_the_server(None).await;
}

#[tokio::test]
async fn shared_workplace_logins_on_postgres() {
    let url = ums_testkit::shared_database("e2e_swp").expect("postgres");
    logins_through_the_server(Some(&url)).await;
}
