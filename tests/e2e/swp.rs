//! Shared Workplace end to end: a real slapd (the Active Directory look-alike), a server and
//! swp-auth as real processes, set up with `umsctl`. The logins' rules and refusals are tested in
//! process (`crates/ums-server/tests/service/swp.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ums_testkit::ldap::{AD_DOMAIN, AD_NETBIOS, AD_SUFFIX, SERVICE_PASSWORD, Slapd, TestDirectory};
use ums_testkit::{ChildGuard, bin_path, free_port, wait_for_tcp};

use crate::harness::{Server, eventually};

/// A running `swp-auth` with an identity issued from the server's CA.
pub struct SwpAuth {
    pub child: ChildGuard,
    log: PathBuf,
}

impl SwpAuth {
    /// Starts swp-auth on `port`, serving `/metrics` on `metrics_port`.
    pub fn start(server_data: &Path, port: u16, metrics_port: u16, dir: &Path) -> SwpAuth {
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
            .env("UMS_METRICS__LISTEN", format!("127.0.0.1:{metrics_port}"))
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

/// A server on the embedded database whose `[swp] url` points at `swp_port`, serving
/// `/metrics` on `metrics_port`.
fn start_server(swp_port: u16, metrics_port: u16) -> Server {
    let url = format!("https://127.0.0.1:{swp_port}");
    let metrics = format!("127.0.0.1:{metrics_port}");
    Server::start_with(
        tempfile::tempdir().expect("data dir"),
        None,
        &[
            ("UMS_SWP__URL", url.as_str()),
            ("UMS_METRICS__LISTEN", metrics.as_str()),
        ],
    )
}

fn settings(list: &[ums_proto::device::v1::Setting]) -> BTreeMap<String, String> {
    list.iter()
        .map(|s| (s.key.clone(), s.value.clone()))
        .collect()
}

/// `umsctl profiles create NAME PARAMS...`; returns the new profile's id.
fn profile(ctl: &crate::harness::Umsctl, name: &str, params: &[&str]) -> String {
    let mut args = vec!["profiles", "create", name];
    args.extend_from_slice(params);
    ctl.json(&args)["id"]
        .as_i64()
        .expect("profile id")
        .to_string()
}

/// What an administrator does with `umsctl` and the real binaries: a directory added from its
/// password and CA files, profiles for a user and a group, the device's licence, a user's login
/// through the server and swp-auth processes, and what `umsctl` prints about the user.
#[tokio::test]
async fn umsctl_sets_up_a_shared_workplace_login() {
    let slapd = Slapd::start(&TestDirectory::sample()).expect("slapd");
    let swp_port = free_port();
    let (server_metrics, swp_metrics) = (free_port(), free_port());
    let server = start_server(swp_port, server_metrics);
    let work = tempfile::tempdir().expect("work dir");
    let swp = SwpAuth::start(server.data.path(), swp_port, swp_metrics, work.path());
    let ctl = server.umsctl();

    // The directory, as an administrator adds it.
    let ca_file = work.path().join("directory-ca.pem");
    std::fs::write(&ca_file, slapd.ca_pem()).expect("ca file");
    let pw_file = work.path().join("bind-password");
    std::fs::write(&pw_file, format!("{SERVICE_PASSWORD}\n")).expect("pw file");
    let dir = ctl.json(&[
        "swp",
        "add-directory",
        "corp",
        "--domain",
        AD_DOMAIN,
        "--netbios",
        AD_NETBIOS,
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

    // Profiles for the device and for the user's side.
    let device_base = profile(
        &ctl,
        "device-base",
        &["audio.volume=20", "network.proxy=http://proxy:3128"],
    );
    let own = profile(&ctl, "alice-own", &["audio.volume=80"]);
    let sales = profile(&ctl, "sales", &["display.monitors=2"]);
    ctl.ok(&["swp", "assign", &own, "--user", "AD\\alice"]);
    ctl.ok(&["swp", "assign", &sales, "--group", "sales"]);
    // Device-only parameters never go into a profile for users.
    let refused = ctl.fails(&["swp", "assign", &device_base, "--user", "alice"]);
    assert!(refused.contains("device-only"), "{refused}");
    assert!(refused.contains("network.proxy"), "{refused}");

    let mut device = server.device().await;
    let id = device
        .register("00:aa:bb:cc:dd:01", "shared-desk-1")
        .await
        .expect("register")
        .device_id;
    let id_s = id.to_string();
    ctl.ok(&["assign", &device_base, "--device", &id_s]);
    let licensed = ctl.ok(&["swp", "device", &id_s, "--licensed", "true"]);
    assert!(licensed.contains("licensed, on"), "{licensed}");

    // A login through the server and swp-auth processes.
    let login = device
        .login("alice@ad.example.org", "alice-pw-1")
        .await
        .unwrap_or_else(|e| panic!("login: {e:?}\n{}", swp.log_text()));
    assert_eq!(login.user, "alice");
    let s = settings(&login.settings);
    let get = |k: &str| s.get(k).map(String::as_str);
    assert_eq!(get("audio.volume"), Some("80"), "user beats device: {s:?}");
    assert_eq!(get("display.monitors"), Some("2"), "{s:?}");
    assert_eq!(get("network.proxy"), Some("http://proxy:3128"), "{s:?}");

    // Both services counted the login.
    let wrong = device
        .login("alice@ad.example.org", "not-her-password")
        .await;
    assert!(wrong.is_err(), "a wrong password is refused");
    let m = crate::harness::scrape(swp_metrics);
    let sample = |m: &str, s: &str| crate::harness::sample(m, s);
    assert_eq!(
        sample(
            &m,
            "ums_swp_auth_requests_total{method=\"authenticate\",outcome=\"ok\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "ums_swp_auth_requests_total{method=\"authenticate\",outcome=\"wrong_credentials\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "ums_swp_auth_request_duration_seconds_count{method=\"authenticate\"}"
        ),
        Some(2.0),
        "{m}"
    );
    let m = crate::harness::scrape(server_metrics);
    assert_eq!(
        sample(&m, "ums_server_logins_total{kind=\"swp\",outcome=\"ok\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "ums_server_logins_total{kind=\"swp\",outcome=\"failed\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "ums_server_logins_total{kind=\"admin\",outcome=\"ok\"}"),
        Some(1.0),
        "{m}"
    );
    assert!(
        sample(
            &m,
            "ums_server_requests_total{api=\"device\",method=\"DeviceService/Login\",status=\"ok\"}"
        ) == Some(1.0),
        "{m}"
    );
    assert!(
        sample(
            &m,
            "ums_server_requests_total{api=\"device\",method=\"DeviceService/Login\",status=\"unauthenticated\"}"
        ) == Some(1.0),
        "{m}"
    );
    assert!(
        sample(&m, "ums_server_checkin_batch_size_count").is_some_and(|n| n >= 1.0),
        "registrations go through the batch writer: {m}"
    );

    // What the administrator reads.
    let text = ctl.ok(&["settings", "explain", &id_s, "--user", "alice"]);
    assert!(
        text.contains("user alice (Alice Smith) in directory corp"),
        "{text}"
    );
    assert!(text.contains("group \"sales\""), "{text}");
}

/// An `swp-auth` process that joins the network with the token through both servers, reports
/// itself in the registry, and serves on `127.0.0.1:port`.
fn start_joined_swp_auth(
    id: &str,
    token: &str,
    servers: &[String],
    port: u16,
    dir: &Path,
) -> SwpAuth {
    std::fs::create_dir_all(dir).expect("swp-auth dir");
    let token_file = dir.join("network-token");
    std::fs::write(&token_file, format!("{token}\n")).expect("token file");
    let log = dir.join("swp-auth.log");
    let log_file = std::fs::File::create(&log).expect("log");
    let child = Command::new(bin_path("swp-auth"))
        .env("UMS_DATA_DIR", dir.join("data"))
        .env("UMS_NETWORK__SERVERS", servers.join(","))
        .env("UMS_NETWORK__TOKEN_FILE", &token_file)
        .env("UMS_NETWORK__ID", id)
        .env("UMS_NETWORK__ADVERTISE_HOST", "127.0.0.1")
        .env("UMS_NETWORK__HEARTBEAT_MS", "250")
        .env("UMS_INTERNAL__LISTEN", format!("127.0.0.1:{port}"))
        .env("UMS_LOG__LEVEL", "info")
        // The load logs the same users in again and again.
        .env("UMS_LIMITS__USER_BURST", "1000000")
        .env("UMS_LIMITS__USER_PER_MINUTE", "1000000")
        .env("UMS_LIMITS__DEVICE_BURST", "1000000")
        .env("UMS_LIMITS__DEVICE_PER_MINUTE", "1000000")
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

/// The swp-auth processes `umsctl network list` shows running.
fn running_swp_auth(ctl: &crate::harness::Umsctl) -> Vec<String> {
    let list = ctl.json(&["network", "list"]);
    let mut ids: Vec<String> = list["processes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|p| p["kind"] == "swp-auth" && p["status"] == "running")
        .map(|p| p["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    ids
}

fn setting_of(s: &[ums_proto::device::v1::Setting], key: &str) -> Option<String> {
    s.iter().find(|v| v.key == key).map(|v| v.value.clone())
}

/// Two servers on PostgreSQL and two swp-auth processes that joined the network: both show in
/// `umsctl network list`; alice logs in through server A and a change of her group's profile on
/// server B reaches her next check-in within a second; the sessions are listed and one is forced
/// out; kill -9 of one swp-auth during a login load fails no login; a folder's switch and the
/// licence pool decide who may log in, and an expired licence ends new logins with a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_two_swp_auth_sessions_follow_the_user() {
    let url = ums_testkit::shared_database("e2e_swp_ha").expect("postgres");
    let slapd = Slapd::start(&TestDirectory::sample()).expect("slapd");
    let a = Server::start_ha(&url, None);
    let token = a.token();
    let b = Server::start_ha(&url, Some(&token));
    let servers = vec![a.admin_addr(), b.admin_addr()];
    let work = tempfile::tempdir().expect("work dir");
    let mut swp1 = start_joined_swp_auth(
        "swp-auth-1",
        &token,
        &servers,
        free_port(),
        &work.path().join("s1"),
    );
    let swp2 = start_joined_swp_auth(
        "swp-auth-2",
        &token,
        &servers,
        free_port(),
        &work.path().join("s2"),
    );
    let ctl_a = a.umsctl();
    let ctl_b = b.umsctl_with_password(&a.admin_password());

    // Both swp-auth are processes of the network.
    let both = vec!["swp-auth-1".to_owned(), "swp-auth-2".to_owned()];
    let seen = eventually(Duration::from_secs(10), || async {
        (running_swp_auth(&ctl_b) == both).then_some(())
    })
    .await;
    assert!(
        seen.is_some(),
        "network list: {:?}\n{}\n{}",
        running_swp_auth(&ctl_b),
        swp1.log_text(),
        swp2.log_text()
    );

    // The directory, the group's profile, a folder with Shared Workplace on, the licence pool.
    let pw_file = work.path().join("bind-password");
    std::fs::write(&pw_file, format!("{SERVICE_PASSWORD}\n")).expect("pw file");
    let ca_file = work.path().join("directory-ca.pem");
    std::fs::write(&ca_file, slapd.ca_pem()).expect("ca file");
    ctl_a.ok(&[
        "swp",
        "add-directory",
        "corp",
        "--domain",
        AD_DOMAIN,
        "--netbios",
        AD_NETBIOS,
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
    let device_base = profile(&ctl_a, "device-base", &["audio.volume=20"]);
    let sales = profile(&ctl_a, "sales", &["display.monitors=2"]);
    ctl_a.ok(&["swp", "assign", &sales, "--group", "sales"]);
    let desks = ctl_a.json(&["folders", "create", "desks"])["id"]
        .as_i64()
        .expect("folder")
        .to_string();
    ctl_a.ok(&["assign", &device_base, "--folder", &desks]);
    let licence = ctl_a.json(&[
        "swp",
        "licences",
        "add",
        "order-1",
        "--seats",
        "20",
        "--expires",
        "2099-12-31",
    ]);
    let licence_id = licence["id"].as_i64().expect("licence id").to_string();

    let ca = a.ca_pem();
    let mut desk = ums_devsim::DeviceClient::connect(&a.device_url, &ca)
        .await
        .expect("connect");
    let desk_id = desk
        .register("00:aa:bb:cc:ee:01", "desk-1")
        .await
        .expect("register")
        .device_id;
    ctl_a.ok(&["devices", "move", &desk_id.to_string(), "--folder", &desks]);
    let e = desk.login("alice", "alice-pw-1").await.expect_err("off");
    assert!(e.message().contains("switched off"), "{e:?}");
    ctl_a.ok(&["swp", "folder", &desks, "--enabled", "true"]);
    let login = eventually(Duration::from_secs(5), || {
        let mut d = desk.clone();
        async move { d.login("AD\\alice", "alice-pw-1").await.ok() }
    })
    .await
    .unwrap_or_else(|| panic!("login through A:\n{}", a.log_text()));
    assert_eq!(
        setting_of(&login.settings, "display.monitors").as_deref(),
        Some("2")
    );

    // The same device checking in on server B knows the session too.
    let mut desk_b = ums_devsim::DeviceClient::connect(&b.device_url, &ca)
        .await
        .expect("connect");
    desk_b.set_device_id(Some(desk_id));
    desk_b.set_secret(desk.secret().to_vec());
    let c = desk_b
        .check_in("idle", login.revision)
        .await
        .expect("check in on B");
    assert!(!c.settings_changed, "B sees the session: {c:?}");

    // A change of her group's profile on B reaches her next check-in on A within a second.
    ctl_b.ok(&["profiles", "set", &sales, "display.monitors=3"]);
    let started = Instant::now();
    let mut known = login.revision;
    loop {
        let r = desk.check_in("idle", known).await.expect("check in");
        if r.settings_changed {
            known = r.settings_revision;
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the change took over a second"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = desk.get_settings().await.expect("settings");
    assert_eq!(got.revision, known);
    assert_eq!(
        setting_of(&got.settings, "display.monitors").as_deref(),
        Some("3")
    );
    assert_eq!(
        setting_of(&got.settings, "audio.volume").as_deref(),
        Some("20")
    );

    // Logout returns the device's own settings.
    let own = desk.logout().await.expect("logout");
    assert_eq!(setting_of(&own.settings, "display.monitors"), None);
    assert_eq!(
        setting_of(&own.settings, "audio.volume").as_deref(),
        Some("20")
    );

    // A login load through both servers; one swp-auth is killed with SIGKILL during it.
    let mut devices = Vec::new();
    for i in 0..8 {
        let s = if i % 2 == 0 { &a } else { &b };
        let mut d = ums_devsim::DeviceClient::connect(&s.device_url, &ca)
            .await
            .expect("connect");
        let id = d
            .register(&format!("00:aa:bb:cc:ef:{i:02}"), &format!("load-{i}"))
            .await
            .expect("register")
            .device_id;
        ctl_a.ok(&["devices", "move", &id.to_string(), "--folder", &desks]);
        devices.push(d);
    }
    let users: Vec<(String, String)> = ["alice", "bob", "carol"]
        .iter()
        .map(|u| ((*u).to_owned(), format!("{u}-pw-1")))
        .collect();
    let load = tokio::spawn(ums_devsim::run_logins(
        devices,
        users,
        8,
        Duration::from_secs(4),
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    swp1.child.kill().expect("kill -9 swp-auth-1");
    let report = load.await.expect("load task").expect("load");
    assert!(report.logins > 20, "{report:?}");
    assert_eq!(
        report.errors,
        0,
        "no login fails: {report:?}\n{}",
        a.log_text()
    );

    // Who is logged in where; one is forced out.
    let sessions = ctl_b.json(&["swp", "sessions"]);
    let sessions = sessions["sessions"].as_array().cloned().unwrap_or_default();
    assert_eq!(sessions.len(), 8, "{sessions:?}");
    let forced = sessions[0]["device_id"].as_i64().expect("device id");
    let out = ctl_b.ok(&["swp", "logout", &forced.to_string()]);
    assert!(out.contains("logged out of device"), "{out}");
    let left = ctl_a.json(&["swp", "sessions"]);
    assert_eq!(left["sessions"].as_array().map(Vec::len), Some(7), "{left}");

    // Only an expired licence: a new login ends with a message that says so.
    ctl_a.ok(&["swp", "licences", "rm", &licence_id]);
    ctl_a.ok(&[
        "swp",
        "licences",
        "add",
        "order-0",
        "--seats",
        "20",
        "--expires",
        "2020-01-31",
    ]);
    let listed = ctl_a.ok(&["swp", "licences", "list"]);
    assert!(listed.contains("expired"), "{listed}");
    let refused = eventually(Duration::from_secs(5), || {
        let mut d = desk_b.clone();
        async move {
            match d.login("alice", "alice-pw-1").await {
                Err(e) if e.message().contains("expired on 2020-01-31") => Some(e),
                _ => None,
            }
        }
    })
    .await;
    assert!(
        refused.is_some(),
        "an expired licence must refuse new logins"
    );
    drop(swp2);
}
