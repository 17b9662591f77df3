//! Shared Workplace end to end: a real slapd (the Active Directory look-alike), a server and
//! swp-auth as real processes, set up with `umsctl`. The logins' rules and refusals are tested in
//! process (`crates/ums-server/tests/service/swp.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ums_testkit::ldap::{AD_DOMAIN, AD_NETBIOS, AD_SUFFIX, SERVICE_PASSWORD, Slapd, TestDirectory};
use ums_testkit::{ChildGuard, bin_path, free_port, wait_for_tcp};

use crate::harness::Server;

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
