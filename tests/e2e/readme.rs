//! The README's own commands, as a new user runs them: `cargo xtask up` and Ctrl-C, the JSON
//! API with curl, the simulator `cargo xtask network` prints, a device picking up new settings,
//! and the README itself.

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use ums_testkit::{bin_path, free_port, wait_for_tcp};

use crate::harness::{Broker, HA_ENV, Server, eventually, text};

/// A child that leads its own process group; the whole group is killed on drop.
struct Group(Child);

impl Group {
    fn pgid(&self) -> Pid {
        Pid::from_raw(self.0.id() as i32)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = killpg(self.pgid(), Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// `cargo xtask up` runs `target/debug/xtask up` (cargo execs it), which builds and then runs
/// the server in the foreground. Ctrl-C sends SIGINT to the foreground process group: the
/// server must stop gracefully and xtask exit with it, leaving no process behind.
#[test]
fn ctrl_c_stops_cargo_xtask_up() {
    let dir = tempfile::tempdir().expect("dir");
    let admin_port = free_port();
    let log = dir.path().join("up.log");
    let log_file = std::fs::File::create(&log).expect("log");
    let mut cmd = Command::new(bin_path("xtask"));
    cmd.arg("up")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        // The binaries are built already; the build step is a no-op.
        .env("CARGO", "true")
        .env("UMS_DEVICE__LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("UMS_ADMIN__LISTEN", format!("127.0.0.1:{admin_port}"))
        .env(
            "UMS_NETWORK__INTERNAL_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env_remove("UMS_DATABASE_URL")
        .env_remove("UMS_CONFIG")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log"))
        .stderr(log_file)
        // Its own group, as a shell gives a foreground job.
        .process_group(0);
    let mut up = Group(cmd.spawn().expect("spawn xtask up"));
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let addr = ([127, 0, 0, 1], admin_port).into();
    if let Err(e) = wait_for_tcp(addr, Duration::from_secs(60)) {
        panic!("the server did not start ({e}):\n{}", text());
    }

    killpg(up.pgid(), Signal::SIGINT).expect("SIGINT to the group");
    let sent = Instant::now();
    let status = loop {
        if let Some(status) = up.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(20),
            "xtask up still runs 20 s after Ctrl-C:\n{}",
            text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = text();
    assert!(status.success(), "xtask up exited with {status}:\n{log}");
    assert!(log.contains("received SIGINT"), "{log}");
    assert!(
        !log.contains('\x1b'),
        "colour escapes in a log file:\n{log}"
    );
    assert_eq!(
        killpg(up.pgid(), None),
        Err(Errno::ESRCH),
        "a process of the group is left:\n{log}"
    );
}

/// Every code block of the README and ARCHITECTURE is closed: an opening fence may name a
/// language, the closing one is bare, and none is left open at the end.
#[test]
fn every_code_fence_of_the_docs_is_closed() {
    for doc in ["README.md", "ARCHITECTURE.md"] {
        let text = std::fs::read_to_string(ums_testkit::workspace_root().join(doc)).expect(doc);
        let mut open: Option<usize> = None;
        for (i, line) in text.lines().enumerate() {
            let Some(info) = line.trim_start().strip_prefix("```") else {
                continue;
            };
            open = match open {
                None => Some(i + 1),
                Some(start) => {
                    assert!(
                        info.trim().is_empty(),
                        "{doc}:{}: a fence that names a language closes the block opened on line {start}: is a fence missing?",
                        i + 1
                    );
                    None
                }
            };
        }
        assert_eq!(
            open, None,
            "{doc}: the code block opened on this line is never closed"
        );
    }
}

/// One HTTP/1.1 request over TLS, as curl sends it: the status and the body of the answer.
async fn https(addr: &str, ca_pem: &[u8], request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    ums_tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    let pem = String::from_utf8_lossy(ca_pem);
    for cert in ums_tls::parse_certs(&pem).expect("ca") {
        roots.add(cert).expect("root");
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("tls handshake");
    tls.write_all(request.as_bytes()).await.expect("request");
    let mut answer = Vec::new();
    // The server closes after the answer (`connection: close`); a TLS close without
    // close_notify still leaves the whole answer read.
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an http answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    (status, body.to_owned())
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
}

fn post(path: &str, token: Option<&str>, body: &str) -> String {
    let auth = token.map_or_else(String::new, |t| format!("authorization: Bearer {t}\r\n"));
    format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{auth}content-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The README's curl commands: log in, take the token from the answer, list devices; the
/// health probe; and a 404, not an empty 200, for a path the admin port does not serve.
#[tokio::test]
async fn the_json_api_as_the_readme_shows_it() {
    let server = Server::start(None);
    let addr = server.admin_addr();
    let ca = server.ca_pem();
    let login = serde_json::json!({"username": "admin", "password": server.admin_password()});
    let (status, body) = https(&addr, &ca, &post("/api/v1/Login", None, &login.to_string())).await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("json");
    let token = answer["token"].as_str().expect("a token").to_owned();

    let (status, body) = https(&addr, &ca, &post("/api/v1/ListDevices", Some(&token), "{}")).await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(answer["total"], 0, "{body}");

    let (status, body) = https(&addr, &ca, &get("/api/v1/health")).await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(answer["status"], "ok", "{body}");

    // `/` is the web console, which sends a browser without a session to its login page.
    let (status, _) = https(&addr, &ca, &get("/")).await;
    assert_eq!(status, 303, "GET /");
    for path in ["/api/v1/nothing/here", "/metrics", "/no/such/page"] {
        let (status, body) = https(&addr, &ca, &get(path)).await;
        assert_eq!(status, 404, "GET {path}: {body}");
        let answer: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(answer["code"], "not_found", "GET {path}: {body}");
    }
    let (status, body) = https(
        &addr,
        &ca,
        &post("/api/v1/NoSuchMethod", Some(&token), "{}"),
    )
    .await;
    assert_eq!(status, 404, "{body}");
}

/// The layout of `cargo xtask network`: a server on 127.0.0.1 and one on 127.0.0.2, each with
/// the names it is configured with there (its own address, and both brokers' in
/// `device.names`), on one PostgreSQL; a broker on 127.0.0.2 in front of both, without the
/// per-address rate limit (every simulated device comes from one address). The command it
/// prints, `ums-devsim --addr https://127.0.0.2:30001 --ca ... --devices 1000`, must see no
/// error: whichever server the broker picks, its certificate names the broker's address.
/// Then again with one server stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_cargo_xtask_network_prints_succeeds_through_a_broker() {
    let url = ums_testkit::shared_database("e2e_readme_network").expect("postgres");
    let node = |n: u8| Ipv4Addr::new(127, 0, 0, n);
    let names = format!("{},{}", node(1), node(2));
    let server = |n: u8, token: Option<&str>| {
        let data = tempfile::tempdir().expect("data dir");
        if let Some(token) = token {
            let dir = data.path().join("data");
            std::fs::create_dir_all(&dir).expect("data dir");
            std::fs::write(dir.join("network-token"), format!("{token}\n")).expect("token");
        }
        let ip = node(n).to_string();
        let mut env: Vec<(&str, &str)> = HA_ENV.to_vec();
        env.extend([
            ("UMS_TLS__NAMES", ip.as_str()),
            ("UMS_NETWORK__ADVERTISE_HOST", ip.as_str()),
            ("UMS_DEVICE__NAMES", names.as_str()),
        ]);
        Server::start_on(node(n), data, Some(&url), &env)
    };
    let mut a = server(1, None);
    let b = server(2, Some(&a.token()));
    let broker = Broker::start_on(
        node(2),
        &[a.device_addr(), b.device_addr()],
        &[("UMS_RATE__PER_SECOND", "0")],
    );
    let ca = a.ca_path();
    let devsim = || {
        let out = Command::new(bin_path("ums-devsim"))
            .args(["--addr", &broker.device_url, "--ca"])
            .arg(&ca)
            .args(["--devices", "1000"])
            .output()
            .expect("run ums-devsim");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && stdout.contains("errors     0\n"),
            "{}\nbroker log:\n{}",
            text(&out),
            broker.log_text()
        );
    };

    devsim();
    for s in [&a, &b] {
        let series = format!(
            "ums_broker_connections_total{{server=\"{}\"}}",
            s.device_addr()
        );
        assert!(
            broker.metric(&series).unwrap_or(0.0) > 0.0,
            "no device reached {}:\n{}",
            s.device_addr(),
            broker.metrics()
        );
    }

    a.child.stop();
    let up = format!("ums_broker_server_up{{server=\"{}\"}}", a.device_addr());
    let left = eventually(Duration::from_secs(10), || async {
        (broker.metric(&up) == Some(0.0)).then_some(())
    })
    .await;
    assert!(left.is_some(), "{}", broker.metrics());
    devsim();
}

/// "Run it": a device watched with `ums-devsim --watch-ms` picks up a profile assigned to it,
/// and `umsctl devices show` tells that it is online and applies the current revision.
#[test]
fn a_watched_device_picks_up_new_settings_and_devices_show_says_so() {
    use std::io::BufRead as _;
    let server = Server::start(None);
    let ctl = server.umsctl();
    let mut watch = ums_testkit::ChildGuard::new(
        Command::new(bin_path("ums-devsim"))
            .args(["--addr", &server.device_url, "--ca"])
            .arg(server.ca_path())
            .args(["--watch-ms", "200", "--prefix", "watched-1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run ums-devsim --watch-ms"),
    );
    let (tx, events) = std::sync::mpsc::channel::<serde_json::Value>();
    let stdout = watch.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(event) = serde_json::from_str(&line) {
                let _ = tx.send(event);
            }
        }
    });
    let next = |kind: &str| loop {
        let event = events
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no {kind} event from ums-devsim --watch-ms"));
        if event["event"] == kind {
            break event;
        }
        assert_ne!(event["event"], "error", "{event}");
    };
    let ready = next("ready");
    let id = ready["device_id"].as_i64().expect("device id").to_string();

    ctl.ok(&["profiles", "create", "watched", "display.monitors=2"]);
    let profile = ctl.json(&["profiles", "list"])["profiles"][0]["id"]
        .as_i64()
        .expect("profile id")
        .to_string();
    ctl.ok(&["assign", &profile, "--device", &id]);
    let changed = next("settings_changed");
    let revision = changed["revision"].as_u64().expect("revision");
    assert!(changed["settings"].as_u64() >= Some(1), "{changed}");

    // The device reports the revision it applies at its next check-in, 200 ms later.
    let shown = (0..100)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            ctl.json(&["devices", "show", &id])
        })
        .find(|d| d["applied_revision"] == revision)
        .expect("the applied revision reaches the server");
    assert_eq!(shown["settings_revision"], revision, "{shown}");
    assert_eq!(shown["online"], true, "{shown}");
    let text = ctl.ok(&["devices", "show", &id]);
    assert!(text.contains(&format!("{revision} (current)")), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("online:") && l.ends_with("yes")),
        "{text}"
    );
}
