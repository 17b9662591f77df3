//! `ums-watchdog` supervising the real `ums-server` and `ums-broker`: a server killed with
//! SIGKILL is back within 2 s, SIGTERM stops everything in order and exits 0, and only servers of
//! the network, over its mutual TLS, can stop or start a process.

use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use ums_proto::network::v1 as pb;
use ums_proto::network::v1::watchdog_service_client::WatchdogServiceClient;
use ums_testkit::{bin_path, free_port};
use ums_tls::{CertAuthority, ComponentKind, NodeIdentity};

use crate::harness::Watchdog;

/// Certificates of one network (the watchdog's, a server's, a broker's) and a server
/// certificate of another network.
struct Network {
    watchdog: NodeIdentity,
    server: NodeIdentity,
    broker: NodeIdentity,
    foreign_server: NodeIdentity,
}

impl Network {
    fn new() -> Network {
        ums_tls::install_crypto_provider();
        let names = vec!["127.0.0.1".to_owned()];
        let ca = CertAuthority::generate("network ca").expect("ca");
        let other = CertAuthority::generate("network ca").expect("other ca");
        let issue = |ca: &CertAuthority, kind, id: &str| {
            ca.issue_node(kind, id, &names)
                .expect("issue a node certificate")
        };
        Network {
            watchdog: issue(&ca, ComponentKind::Watchdog, "watchdog-e2e"),
            server: issue(&ca, ComponentKind::Server, "server-caller"),
            broker: issue(&ca, ComponentKind::Broker, "broker-caller"),
            foreign_server: issue(&other, ComponentKind::Server, "server-foreign"),
        }
    }
}

/// A node: a watchdog supervising a real server (and a broker) on loopback ports.
struct Node {
    wd: Watchdog,
    net: Network,
    device_port: u16,
    broker_port: Option<u16>,
    /// Where the watchdog serves `/metrics`.
    metrics_port: u16,
}

impl Node {
    fn start(with_broker: bool) -> Node {
        let net = Network::new();
        let dir = tempfile::tempdir().expect("node dir");
        let d = dir.path();
        net.watchdog
            .save(&d.join("watchdog/identity"))
            .expect("save the watchdog identity");
        let (internal, device_port, admin_port) = (free_port(), free_port(), free_port());
        let metrics_port = free_port();
        let q = |p: &Path| format!("{:?}", p.display().to_string());
        let mut config = format!(
            r#"
data_dir = {data}
internal_listen = "127.0.0.1:{internal}"

[metrics]
listen = "127.0.0.1:{metrics_port}"

[network]
id = "watchdog-e2e"
advertise_host = "127.0.0.1"

[server]
enabled = true
id = "server-e2e"
binary = {server}
args = ["run"]
ready_addr = "127.0.0.1:{admin_port}"
ready_timeout_ms = 30000
stop_timeout_ms = 10000

[server.env]
UMS_DATA_DIR = {server_data}
UMS_DEVICE__LISTEN = "127.0.0.1:{device_port}"
UMS_ADMIN__LISTEN = "127.0.0.1:{admin_port}"
UMS_NETWORK__INTERNAL_LISTEN = "127.0.0.1:{server_internal}"
"#,
            server_internal = free_port(),
            data = q(&d.join("watchdog")),
            server = q(&bin_path("ums-server")),
            server_data = q(&d.join("server")),
        );
        let mut broker_port = None;
        if with_broker {
            let port = free_port();
            broker_port = Some(port);
            config.push_str(&format!(
                r#"
[broker]
enabled = true
id = "broker-e2e"
binary = {broker}
ready_addr = "127.0.0.1:{port}"
stop_timeout_ms = 10000

[broker.env]
UMS_LISTEN = "127.0.0.1:{port}"
UMS_SERVERS = "127.0.0.1:{device_port}"
UMS_METRICS__LISTEN = ""
UMS_DRAIN_TIMEOUT_S = "2"
"#,
                broker = q(&bin_path("ums-broker")),
            ));
        }
        Node {
            wd: Watchdog::start(dir, internal, &config),
            net,
            device_port,
            broker_port,
            metrics_port,
        }
    }

    fn client(&self, identity: &NodeIdentity) -> WatchdogServiceClient<tonic::transport::Channel> {
        let addr = format!("127.0.0.1:{}", self.wd.internal_port);
        WatchdogServiceClient::new(
            ums_network::internal_channel(identity, &addr).expect("internal channel"),
        )
    }

    /// The watchdog's status as a server of the network sees it.
    async fn status(&self) -> Option<pb::WatchdogStatusResponse> {
        let mut client = self.client(&self.net.server);
        let call = client.watchdog_status(pb::WatchdogStatusRequest {});
        match tokio::time::timeout(Duration::from_secs(2), call).await {
            Ok(Ok(r)) => Some(r.into_inner()),
            _ => None,
        }
    }

    /// Waits until every child runs; their status.
    async fn running(&mut self, timeout: Duration) -> pb::WatchdogStatusResponse {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.status().await
                && !s.children.is_empty()
                && s.children.iter().all(|c| c.status == "running")
            {
                return s;
            }
            if let Ok(Some(status)) = self.wd.child.0.try_wait() {
                panic!("ums-watchdog exited ({status}):\n{}", self.wd.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "children not running within {timeout:?}:\n{}",
                self.wd.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn child_pid(status: &pb::WatchdogStatusResponse, kind: &str) -> u32 {
        status
            .children
            .iter()
            .find(|c| c.kind == kind)
            .map(|c| c.pid)
            .unwrap_or_else(|| panic!("no {kind} in {status:?}"))
    }

    fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.wd.dir.path().join("server/tls/ca.pem")).expect("device ca")
    }

    /// One device on a new connection: register and check in, within a second.
    async fn device_ok(&self, port: u16, unit: &str) -> bool {
        let ca = self.ca_pem();
        let attempt = async {
            let mut dev =
                ums_devsim::DeviceClient::connect(&format!("https://127.0.0.1:{port}"), &ca)
                    .await?;
            dev.register(unit, unit).await?;
            dev.check_in("idle", 0).await?;
            anyhow::Ok(())
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(1), attempt).await,
            Ok(Ok(()))
        )
    }

    /// SIGTERM to the watchdog; its exit status within `timeout`.
    fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        kill(Pid::from_raw(self.wd.child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.wd.child.0.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "ums-watchdog still runs {timeout:?} after SIGTERM:\n{}",
                self.wd.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_with_sigkill_is_back_through_its_watchdog_within_two_seconds() {
    let mut node = Node::start(false);
    let status = node.running(Duration::from_secs(60)).await;
    let old = Node::child_pid(&status, "server");
    assert!(node.device_ok(node.device_port, "wd-before").await);

    kill(Pid::from_raw(old as i32), Signal::SIGKILL).expect("kill -9");
    let killed = Instant::now();
    let mut attempt = 0;
    while !node
        .device_ok(node.device_port, &format!("wd-after-{attempt}"))
        .await
    {
        attempt += 1;
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "the server is not back 10 s after kill -9:\n{}",
            node.wd.log_text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let back = killed.elapsed();
    let status = node.running(Duration::from_secs(5)).await;
    let new = Node::child_pid(&status, "server");
    println!(
        "restart after kill -9: a device registered and checked in {} ms after the kill (pid {old} -> {new})",
        back.as_millis()
    );
    assert_ne!(new, old);
    assert!(!alive(old));
    assert!(
        back < Duration::from_secs(2),
        "the server took {back:?} to be back:\n{}",
        node.wd.log_text()
    );
    // The watchdog's metrics show the restart and the server up again.
    let metrics = crate::harness::scrape(node.metrics_port);
    assert_eq!(
        crate::harness::sample(
            &metrics,
            "ums_watchdog_child_restarts_total{process=\"server-e2e\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        crate::harness::sample(&metrics, "ums_watchdog_child_up{process=\"server-e2e\"}"),
        Some(1.0),
        "{metrics}"
    );

    let exit = node.terminate(Duration::from_secs(20));
    assert_eq!(exit.code(), Some(0), "{}", node.wd.log_text());
    assert!(!alive(new), "the server outlived its watchdog");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_broker_then_the_server_and_exits_0_leaving_nothing() {
    let mut node = Node::start(true);
    let status = node.running(Duration::from_secs(60)).await;
    let (server, broker) = (
        Node::child_pid(&status, "server"),
        Node::child_pid(&status, "broker"),
    );
    let broker_port = node.broker_port.expect("broker port");
    assert!(
        node.device_ok(broker_port, "via-broker").await,
        "a device through the broker"
    );

    let exit = node.terminate(Duration::from_secs(30));
    let log = node.wd.log_text();
    assert_eq!(exit.code(), Some(0), "{log}");
    // A log file gets plain text, from the watchdog and from its children alike.
    assert!(
        !log.contains('\x1b'),
        "colour escapes in a log file:\n{log}"
    );
    assert!(
        !alive(server) && !alive(broker),
        "a child outlived the watchdog:\n{log}"
    );
    let stopped = |id: &str| {
        log.find(&format!("stopped process={id}"))
            .unwrap_or_else(|| panic!("no stop of {id} in the log:\n{log}"))
    };
    assert!(
        stopped("broker-e2e") < stopped("server-e2e"),
        "the broker must stop first:\n{log}"
    );
    // The children's output reached the watchdog's, prefixed.
    assert!(log.contains("server-e2e| "), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_server_of_the_network_over_mutual_tls_can_stop_or_start_the_server() {
    let mut node = Node::start(false);
    let status = node.running(Duration::from_secs(60)).await;
    let pid = Node::child_pid(&status, "server");
    let stop = || pb::ControlRequest {
        process: "server".into(),
    };

    // No client certificate: the handshake fails.
    let anonymous = Endpoint::from_shared(format!("https://127.0.0.1:{}", node.wd.internal_port))
        .expect("endpoint")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&node.net.watchdog.ca_pem))
                .domain_name("127.0.0.1"),
        )
        .expect("tls")
        .connect_lazy();
    let err = WatchdogServiceClient::new(anonymous)
        .stop_process(stop())
        .await
        .expect_err("no certificate");
    println!("without a certificate: {err:?}");
    // A server of another network (trusting this one's CA, presenting its own certificate).
    let foreign = NodeIdentity {
        ca_pem: node.net.watchdog.ca_pem.clone(),
        ..node.net.foreign_server.clone()
    };
    let err = node
        .client(&foreign)
        .stop_process(stop())
        .await
        .expect_err("another network's certificate");
    println!("with another network's certificate: {err:?}");
    // A broker of this network: certified, but not allowed.
    let err = node
        .client(&node.net.broker)
        .stop_process(stop())
        .await
        .expect_err("a broker");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");

    let status = node.running(Duration::from_secs(5)).await;
    assert_eq!(
        Node::child_pid(&status, "server"),
        pid,
        "refused requests changed nothing"
    );
    assert!(node.device_ok(node.device_port, "still-there").await);

    // A server of the network stops it, and it stays down.
    let stopped = node
        .client(&node.net.server)
        .stop_process(stop())
        .await
        .expect("stop")
        .into_inner()
        .process
        .expect("process");
    assert_eq!(stopped.status, "stopped");
    assert!(!alive(pid));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!node.device_ok(node.device_port, "while-stopped").await);
    let status = node.status().await.expect("status");
    assert_eq!(status.children[0].status, "stopped");

    let started = node
        .client(&node.net.server)
        .start_process(pb::ControlRequest {
            process: "server-e2e".into(),
        })
        .await
        .expect("start")
        .into_inner()
        .process
        .expect("process");
    assert_eq!(started.status, "running");
    assert!(node.device_ok(node.device_port, "after-start").await);

    let exit = node.terminate(Duration::from_secs(20));
    assert_eq!(exit.code(), Some(0), "{}", node.wd.log_text());
}

/// A node of an HA network: a watchdog that joins with the network token and supervises a
/// server on the shared PostgreSQL database (and a broker).
struct HaNode {
    wd: Watchdog,
    admin_port: u16,
    device_port: u16,
    broker_port: u16,
}

impl HaNode {
    /// Starts a node; `token` is the first node's token file, copied into the server's data
    /// directory before its first start, or `None` for the first node.
    fn start(name: &str, db_url: &str, token: Option<&Path>, devices: &[u16]) -> HaNode {
        let dir = tempfile::tempdir().expect("node dir");
        let d = dir.path();
        let server_data = d.join("server");
        if let Some(token) = token {
            std::fs::create_dir_all(&server_data).expect("server dir");
            std::fs::copy(token, server_data.join("network-token")).expect("copy the token");
        }
        let (internal, device_port, admin_port) = (free_port(), free_port(), free_port());
        let (server_internal, broker_port) = (free_port(), free_port());
        let q = |p: &Path| format!("{:?}", p.display().to_string());
        let servers: Vec<String> = devices
            .iter()
            .chain([&device_port])
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let config = format!(
            r#"
data_dir = {data}
internal_listen = "127.0.0.1:{internal}"

[network]
id = "watchdog-{name}"
advertise_host = "127.0.0.1"
servers = ["127.0.0.1:{admin_port}"]
token_file = {token}
heartbeat_ms = 500

[server]
enabled = true
binary = {server}
args = ["run"]
id_file = {server_id}
ready_addr = "127.0.0.1:{admin_port}"
ready_timeout_ms = 30000

[server.env]
UMS_DATA_DIR = {server_data}
UMS_DATABASE_URL = {db}
UMS_DEVICE__LISTEN = "127.0.0.1:{device_port}"
UMS_ADMIN__LISTEN = "127.0.0.1:{admin_port}"
UMS_NETWORK__MODE = "ha"
UMS_NETWORK__INTERNAL_LISTEN = "127.0.0.1:{server_internal}"
UMS_NETWORK__ADVERTISE_HOST = "127.0.0.1"

[broker]
enabled = true
id = "broker-{name}"
binary = {broker}
ready_addr = "127.0.0.1:{broker_port}"

[broker.env]
UMS_LISTEN = "127.0.0.1:{broker_port}"
UMS_SERVERS = "{servers}"
UMS_METRICS__LISTEN = ""
UMS_DRAIN_TIMEOUT_S = "1"
"#,
            data = q(&d.join("watchdog")),
            token = q(&server_data.join("network-token")),
            server = q(&bin_path("ums-server")),
            server_id = q(&server_data.join("server-id")),
            server_data = q(&server_data),
            db = toml_str(db_url),
            broker = q(&bin_path("ums-broker")),
            servers = servers.join(","),
        );
        HaNode {
            wd: Watchdog::start(dir, internal, &config),
            admin_port,
            device_port,
            broker_port,
        }
    }

    fn server_data(&self) -> std::path::PathBuf {
        self.wd.dir.path().join("server")
    }

    fn server_id(&self) -> Option<String> {
        std::fs::read_to_string(self.server_data().join("server-id"))
            .ok()
            .map(|s| s.trim().to_owned())
    }
}

/// The registry as `umsctl network list --json` shows it: id → (status, pid, supervisor).
fn registry(ctl: &crate::harness::Umsctl) -> Vec<(String, String, u64, String)> {
    let list = ctl.json(&["network", "list"]);
    list["processes"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    (
                        p["id"].as_str().unwrap_or_default().to_owned(),
                        p["status"].as_str().unwrap_or_default().to_owned(),
                        p["pid"].as_u64().unwrap_or_default(),
                        p["supervisor_id"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn status_of(ctl: &crate::harness::Umsctl, id: &str) -> Option<(String, u64, String)> {
    registry(ctl)
        .into_iter()
        .find(|p| p.0 == id)
        .map(|(_, s, pid, sup)| (s, pid, sup))
}

/// Waits until `f` holds, at most `timeout`; how long it took.
async fn until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

/// Two nodes on one PostgreSQL database; umsctl logged in to the first.
async fn ha_network(db_prefix: &str) -> (HaNode, HaNode, crate::harness::Umsctl) {
    let url = ums_testkit::shared_database(db_prefix).expect("postgres");
    ha_network_on(&url).await
}

/// [`ha_network`] on the database at `url`.
async fn ha_network_on(url: &str) -> (HaNode, HaNode, crate::harness::Umsctl) {
    let url = url.to_owned();
    let a = HaNode::start("a", &url, None, &[]);
    let token = a.server_data().join("network-token");
    until(Duration::from_secs(60), "node a's token", || token.exists()).await;
    let b = HaNode::start("b", &url, Some(&token), &[a.device_port]);
    let password = a.server_data().join("initial-admin-password");
    until(Duration::from_secs(60), "node a's admin", || {
        password.exists()
    })
    .await;
    until(Duration::from_secs(60), "node a's server", || {
        ums_testkit::wait_for_tcp(
            ([127, 0, 0, 1], a.admin_port).into(),
            Duration::from_millis(100),
        )
        .is_ok()
    })
    .await;
    let ctl = crate::harness::Umsctl::login(
        a.wd.dir.path(),
        &format!("https://127.0.0.1:{}", a.admin_port),
        &a.server_data().join("tls/ca.pem"),
        std::fs::read_to_string(&password).expect("password").trim(),
    );
    (a, b, ctl)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_follows_a_killed_server_and_a_broker_stopped_and_started_through_umsctl() {
    let (a, b, ctl) = ha_network("e2e_watchdog").await;
    let _ = &a;
    let server_b = {
        let b = &b;
        until(Duration::from_secs(60), "node b's server id", || {
            b.server_id().is_some()
        })
        .await;
        b.server_id().expect("server id")
    };
    until(
        Duration::from_secs(60),
        "everything running in the registry",
        || {
            let r = registry(&ctl);
            [
                "watchdog-a",
                "watchdog-b",
                "broker-a",
                "broker-b",
                server_b.as_str(),
            ]
            .iter()
            .all(|id| r.iter().any(|p| p.0 == *id && p.1 == "running"))
        },
    )
    .await;
    let (_, broker_pid, supervisor) = status_of(&ctl, "broker-b").expect("broker-b");
    assert_eq!(supervisor, "watchdog-b");
    let (_, server_pid, _) = status_of(&ctl, &server_b).expect("server b");
    assert!(server_pid != 0);

    // kill -9 of node b's server: back through its watchdog, and the registry shows it running
    // with its new process.
    kill(Pid::from_raw(server_pid as i32), Signal::SIGKILL).expect("kill -9");
    let killed = Instant::now();
    let back = until(Duration::from_secs(10), "server b running again", || {
        status_of(&ctl, &server_b)
            .is_some_and(|(s, pid, _)| s == "running" && pid != server_pid && pid != 0)
    })
    .await;
    println!(
        "registry shows {server_b} running again {} ms after kill -9",
        killed.elapsed().as_millis().max(back.as_millis())
    );

    // The broker of node b, stopped and started through node a's server and node b's watchdog.
    let out = ctl.ok(&["network", "stop", "broker-b"]);
    assert!(out.contains("stopped"), "{out}");
    assert!(!alive(broker_pid as u32), "the broker still runs");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", b.broker_port)).is_err(),
        "the broker still listens"
    );
    until(
        Duration::from_secs(5),
        "broker-b stopped in the registry",
        || status_of(&ctl, "broker-b").is_some_and(|(s, _, _)| s == "stopped"),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        status_of(&ctl, "broker-b").map(|s| s.0),
        Some("stopped".to_owned()),
        "a stopped broker stays stopped"
    );
    let out = ctl.ok(&["network", "start", "broker-b"]);
    assert!(out.contains("running"), "{out}");
    until(
        Duration::from_secs(5),
        "broker-b running in the registry",
        || {
            status_of(&ctl, "broker-b")
                .is_some_and(|(s, pid, _)| s == "running" && pid != broker_pid)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn umsctl_network_stop_and_start_the_other_nodes_server() {
    let (a, b, ctl) = ha_network("e2e_watchdog_stop").await;
    let _ = &a;
    until(Duration::from_secs(60), "node b's server id", || {
        b.server_id().is_some()
    })
    .await;
    let server_b = b.server_id().expect("server id");
    until(
        Duration::from_secs(60),
        "server b supervised in the registry",
        || {
            status_of(&ctl, &server_b)
                .is_some_and(|(s, _, sup)| s == "running" && sup == "watchdog-b")
        },
    )
    .await;
    let (_, pid, _) = status_of(&ctl, &server_b).expect("server b");
    let out = ctl.ok(&["network", "stop", &server_b]);
    assert!(out.contains("stopped"), "{out}");
    assert!(!alive(pid as u32));
    until(
        Duration::from_secs(5),
        "server b stopped in the registry",
        || status_of(&ctl, &server_b).is_some_and(|(s, _, _)| s == "stopped"),
    )
    .await;
    let out = ctl.ok(&["network", "start", &server_b]);
    assert!(out.contains("running"), "{out}");
    until(Duration::from_secs(10), "server b running again", || {
        status_of(&ctl, &server_b).is_some_and(|(s, p, _)| s == "running" && p != pid)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_support_bundle_holds_every_process_config_and_recent_logs_without_secrets() {
    // Trust authentication ignores the password: it is there to be redacted.
    let url = ums_testkit::shared_database("e2e_bundle").expect("postgres");
    let db_secret = "bundle-db-secret-7d1e";
    let url = url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{db_secret}@"),
        1,
    );
    assert!(
        url.contains(db_secret),
        "the test URL has the form postgres://postgres@...: {url}"
    );
    let (a, b, ctl) = ha_network_on(&url).await;
    until(Duration::from_secs(60), "node b's server id", || {
        b.server_id().is_some()
    })
    .await;
    let servers = [
        a.server_id().expect("server a"),
        b.server_id().expect("server b"),
    ];
    until(Duration::from_secs(60), "every process running", || {
        let r = registry(&ctl);
        ["watchdog-a", "watchdog-b", "broker-a", "broker-b"]
            .iter()
            .copied()
            .chain(servers.iter().map(String::as_str))
            .all(|id| r.iter().any(|p| p.0 == id && p.1 == "running"))
    })
    .await;

    let work = tempfile::tempdir().expect("work");
    let file = work.path().join("support.tar.gz");
    let path = file.to_str().expect("path");
    let manifest = ctl.json(&["support-bundle", path]);
    let mut gathered: Vec<&str> = manifest["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    gathered.sort_unstable();
    let mut expected = vec!["watchdog-a", "watchdog-b", &servers[0], &servers[1]];
    expected.sort_unstable();
    assert_eq!(gathered, expected, "{manifest:#}");
    for broker in ["broker-a", "broker-b"] {
        let gap = manifest["missing"]
            .as_array()
            .and_then(|m| m.iter().find(|g| g["id"] == broker))
            .unwrap_or_else(|| panic!("{broker} is not named as missing: {manifest:#}"));
        let node = &broker[broker.len() - 1..];
        assert!(
            gap["reason"]
                .as_str()
                .unwrap_or_default()
                .ends_with(&format!("in the logs of its watchdog watchdog-{node}")),
            "{gap}"
        );
    }
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&file)
        .expect("bundle")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(
        mode, 0o600,
        "the bundle holds logs: only its owner reads it"
    );

    // What an administrator does with it: unpack it with tar and read it.
    let out_dir = work.path().join("unpacked");
    std::fs::create_dir_all(&out_dir).expect("dir");
    let tar = Command::new("tar")
        .arg("-xzf")
        .arg(&file)
        .arg("-C")
        .arg(&out_dir)
        .output()
        .expect("run tar");
    assert!(tar.status.success(), "{}", crate::harness::text(&tar));
    let root = std::fs::read_dir(&out_dir)
        .expect("unpacked")
        .next()
        .expect("one directory")
        .expect("entry")
        .path();
    let read = |rel: &str| {
        std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    };
    let report: serde_json::Value =
        serde_json::from_str(&read("check/report.json")).expect("report JSON");
    assert!(
        report["results"].as_array().is_some_and(|r| !r.is_empty()),
        "{report}"
    );
    assert!(read("check/report.html").contains("<html"));
    assert!(read("check/report.txt").contains("messaging"));
    for (i, id) in servers.iter().enumerate() {
        let dir = format!("processes/server-{id}");
        let config = read(&format!("{dir}/config.toml"));
        assert!(
            config.contains("database_url = \"postgres://postgres:<redacted>@"),
            "{config}"
        );
        // The server that gathered the bundle logged the request; the other one the read.
        let line = if i == 0 {
            "support bundle requested"
        } else {
            "diagnostics read for a support bundle"
        };
        let log = read(&format!("{dir}/log.log"));
        assert!(
            log.contains(line),
            "{id}'s recent log has no `{line}`:\n{log}"
        );
    }
    for node in ["a", "b"] {
        let dir = format!("processes/watchdog-watchdog-{node}");
        assert!(read(&format!("{dir}/config.toml")).contains("[broker]"));
        assert!(read(&format!("{dir}/log.log")).contains("watchdog started"));
        let broker = read(&format!("{dir}/broker-{node}.log"));
        assert!(
            broker.contains("accepting devices"),
            "broker-{node}'s output:\n{broker}"
        );
    }
    // No secret anywhere in it: not the database password, not the network token's secret.
    let token = std::fs::read_to_string(a.server_data().join("network-token")).expect("token");
    let token_secret = token.trim().rsplit("::").next().expect("secret").to_owned();
    assert!(token_secret.len() >= 16, "{token}");
    let mut files = vec![root.clone()];
    let mut seen = 0;
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(
                std::fs::read_dir(&p)
                    .expect("dir")
                    .map(|e| e.expect("entry").path()),
            );
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&p).expect("file")).into_owned();
        seen += 1;
        for secret in [db_secret, token_secret.as_str()] {
            assert!(!text.contains(secret), "{} holds a secret", p.display());
        }
    }
    assert!(seen >= 16, "{seen} files");

    // An existing file is not replaced unless asked.
    let refused = ctl.fails(&["support-bundle", path]);
    assert!(refused.contains("--force"), "{refused}");
    ctl.ok(&["support-bundle", path, "--force"]);
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
