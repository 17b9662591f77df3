//! Service tests: a watchdog in-process on port 0, supervising small shell processes, and its
//! internal API called over mutual TLS with certificates of this and of another network.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::oneshot;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use ums_proto::network::v1 as pb;
use ums_proto::network::v1::watchdog_service_client::WatchdogServiceClient;
use ums_tls::{CertAuthority, ComponentKind, NodeIdentity};

use crate::config::{ChildConfig, WatchdogConfig};
use crate::supervisor::Phase;
use crate::{StopOutcome, Watchdog};

fn config(dir: &Path) -> WatchdogConfig {
    let mut cfg = WatchdogConfig {
        data_dir: dir.to_owned(),
        internal_listen: "127.0.0.1:0".into(),
        ..WatchdogConfig::default()
    };
    cfg.network.id = "watchdog-test".into();
    cfg.network.advertise_host = "127.0.0.1".into();
    cfg.restart.initial_backoff_ms = 300;
    cfg.restart.max_backoff_ms = 1000;
    cfg
}

/// A child that runs `script` in `sh`, ready as soon as it is started.
fn shell(id: &str, script: &str) -> ChildConfig {
    ChildConfig {
        enabled: true,
        id: id.into(),
        binary: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        ready_addr: String::new(),
        stop_timeout_ms: 3000,
        ..ChildConfig::default()
    }
}

async fn start(cfg: WatchdogConfig) -> (Watchdog, u16) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let cfg = cfg.validate().expect("valid test configuration");
    (Watchdog::start(cfg, listener).unwrap(), port)
}

/// Runs the watchdog until the returned sender fires; the task yields the stop outcome.
fn run(wd: Watchdog) -> (oneshot::Sender<()>, tokio::task::JoinHandle<StopOutcome>) {
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(wd.run_until(async {
        let _ = rx.await;
    }));
    (tx, task)
}

async fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

fn running_pid(wd: &Watchdog, process: &str) -> Option<u32> {
    let s = wd.node().find(process)?.state();
    (s.phase == Phase::Running).then_some(s.pid).flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_child_is_back_at_once_and_a_crash_loop_backs_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.server = shell("server-1", "exec sleep 1000");
    let (wd, _) = start(cfg).await;
    let first = eventually(Duration::from_secs(5), || running_pid(&wd, "server")).await;

    kill(Pid::from_raw(first as i32), Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    let second = eventually(Duration::from_secs(2), || {
        running_pid(&wd, "server").filter(|p| *p != first)
    })
    .await;
    let back = killed.elapsed();
    assert!(back < Duration::from_millis(500), "restart took {back:?}");
    assert_eq!(wd.node().find("server-1").unwrap().state().restarts, 1);

    // A second crash right away is a crash loop: the next start waits for the backoff.
    kill(Pid::from_raw(second as i32), Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    eventually(Duration::from_secs(3), || {
        running_pid(&wd, "server").filter(|p| *p != second)
    })
    .await;
    assert!(
        killed.elapsed() >= Duration::from_millis(300),
        "no backoff: {:?}",
        killed.elapsed()
    );

    let (stop, task) = run(wd);
    stop.send(()).unwrap();
    assert_eq!(task.await.unwrap(), StopOutcome::Exited);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_child_stays_down_until_started_and_shutdown_stops_the_broker_first() {
    let dir = tempfile::tempdir().unwrap();
    let order = dir.path().join("order");
    let up = |id: &str| dir.path().join(format!("{id}.up"));
    let mut cfg = config(dir.path());
    // Each writes `<id>.up` once its trap is set, and its id to `order` on SIGTERM.
    let script = |id: &str| {
        format!(
            "trap 'echo {id} >> {}; exit 0' TERM; sleep 1000 & touch {}; wait",
            order.display(),
            up(id).display()
        )
    };
    cfg.server = shell("server-1", &script("server"));
    cfg.broker = shell("broker-1", &script("broker"));
    let (wd, _) = start(cfg).await;
    eventually(Duration::from_secs(5), || running_pid(&wd, "server")).await;
    let broker_pid = eventually(Duration::from_secs(5), || running_pid(&wd, "broker-1")).await;

    for id in ["server", "broker"] {
        eventually(Duration::from_secs(5), || up(id).exists().then_some(())).await;
    }
    let broker = wd.node().find("broker").unwrap();
    assert_eq!(broker.stop().await, StopOutcome::Exited);
    assert!(!alive(broker_pid), "the stopped broker still runs");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let state = broker.state();
    assert_eq!(state.phase, Phase::Stopped);
    assert_eq!(state.pid, None);
    assert_eq!(wd.node().children_info()[1].status, "stopped");

    std::fs::remove_file(up("broker")).unwrap();
    broker.start().await;
    assert!(broker.wait_running().await);
    assert_ne!(running_pid(&wd, "broker"), Some(broker_pid));
    std::fs::remove_file(&order).unwrap();
    for id in ["server", "broker"] {
        eventually(Duration::from_secs(5), || up(id).exists().then_some(())).await;
    }

    let (stop, task) = run(wd);
    stop.send(()).unwrap();
    assert_eq!(task.await.unwrap(), StopOutcome::Exited);
    assert_eq!(std::fs::read_to_string(&order).unwrap(), "broker\nserver\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_ignores_sigterm_is_killed_with_its_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let grandchild = dir.path().join("grandchild");
    let mut cfg = config(dir.path());
    // The ignored SIGTERM is inherited by the sleep, a second member of the process group.
    cfg.server = shell(
        "server-1",
        &format!(
            "trap '' TERM; sleep 1000 & echo $! > {}; wait",
            grandchild.display()
        ),
    );
    cfg.server.stop_timeout_ms = 300;
    let (wd, _) = start(cfg).await;
    let leader = eventually(Duration::from_secs(5), || running_pid(&wd, "server")).await;
    let sleeper: u32 = eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(&grandchild)
            .ok()?
            .trim()
            .parse()
            .ok()
    })
    .await;

    let (stop, task) = run(wd);
    stop.send(()).unwrap();
    assert_eq!(task.await.unwrap(), StopOutcome::Killed);
    assert!(!alive(leader), "the child survived");
    eventually(Duration::from_secs(2), || (!alive(sleeper)).then_some(())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_that_cannot_start_is_retried_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.server = shell("server-1", "");
    cfg.server.binary = dir.path().join("no-such-binary");
    let (wd, _) = start(cfg).await;
    let child = wd.node().find("server").unwrap();
    eventually(Duration::from_secs(2), || {
        let s = child.state();
        (s.settled
            && s.last_exit
                .as_deref()
                .is_some_and(|e| e.starts_with("not started")))
        .then_some(())
    })
    .await;
    let (stop, task) = run(wd);
    stop.send(()).unwrap();
    assert_eq!(task.await.unwrap(), StopOutcome::NotRunning);
}

/// Identities of one network, and a server of another.
struct Network {
    watchdog: NodeIdentity,
    server: NodeIdentity,
    broker: NodeIdentity,
    foreign_server: NodeIdentity,
}

fn network() -> Network {
    ums_tls::install_crypto_provider();
    let names = vec!["127.0.0.1".to_owned()];
    let ca = CertAuthority::generate("network ca").unwrap();
    let other = CertAuthority::generate("network ca").unwrap();
    Network {
        watchdog: ca
            .issue_node(ComponentKind::Watchdog, "watchdog-test", &names)
            .unwrap(),
        server: ca
            .issue_node(ComponentKind::Server, "server-a", &names)
            .unwrap(),
        broker: ca
            .issue_node(ComponentKind::Broker, "broker-a", &names)
            .unwrap(),
        foreign_server: other
            .issue_node(ComponentKind::Server, "server-x", &names)
            .unwrap(),
    }
}

fn client(identity: &NodeIdentity, port: u16) -> WatchdogServiceClient<tonic::transport::Channel> {
    WatchdogServiceClient::new(
        ums_network::internal_channel(identity, &format!("127.0.0.1:{port}")).unwrap(),
    )
}

/// The call failed at the connection, not in a handler: the TLS handshake was refused. With
/// TLS 1.3 the client learns of it from the alert the watchdog sends after the client's
/// certificate (or its absence), which surfaces as one of these codes; a handler's refusal
/// would be PermissionDenied or Unauthenticated.
fn handshake_refused(err: &tonic::Status) -> bool {
    matches!(
        err.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled
    ) && err.metadata().is_empty()
}

fn control(process: &str) -> pb::ControlRequest {
    pb::ControlRequest {
        process: process.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_servers_of_the_network_may_stop_or_start_a_process() {
    let dir = tempfile::tempdir().unwrap();
    let net = network();
    net.watchdog.save(&dir.path().join("identity")).unwrap();
    let mut cfg = config(dir.path());
    cfg.server = shell("server-1", "exec sleep 1000");
    let (wd, port) = start(cfg).await;
    let pid = eventually(Duration::from_secs(5), || running_pid(&wd, "server")).await;

    // The API is up once the identity is loaded.
    let mut server = client(&net.server, port);
    let mut status = None;
    for _ in 0..100 {
        match server.watchdog_status(pb::WatchdogStatusRequest {}).await {
            Ok(r) => {
                status = Some(r.into_inner());
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let status = status.expect("watchdog status over mutual TLS");
    let me = status.watchdog.unwrap();
    assert_eq!(
        (me.id.as_str(), me.kind.as_str()),
        ("watchdog-test", "watchdog")
    );
    assert_eq!(me.internal_port, u32::from(port));
    assert_eq!(me.cert_fingerprint, net.watchdog.fingerprint());
    assert_eq!(status.children.len(), 1);
    let child = &status.children[0];
    assert_eq!(
        (
            child.id.as_str(),
            child.kind.as_str(),
            child.status.as_str()
        ),
        ("server-1", "server", "running")
    );
    assert_eq!(
        (child.pid, child.supervisor_id.as_str()),
        (pid, "watchdog-test")
    );

    // A broker of the network is certified but may not control anything.
    let err = client(&net.broker, port)
        .stop_process(control("server"))
        .await
        .expect_err("a broker may not stop a process");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // A server of another network (trusting this network's CA, presenting its own
    // certificate) and a client without a certificate fail the handshake.
    let foreign = NodeIdentity {
        ca_pem: net.watchdog.ca_pem.clone(),
        ..net.foreign_server.clone()
    };
    let err = client(&foreign, port)
        .stop_process(control("server"))
        .await
        .expect_err("a foreign server may not stop a process");
    assert!(handshake_refused(&err), "{err:?}");
    let anonymous = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&net.watchdog.ca_pem))
                .domain_name("127.0.0.1"),
        )
        .unwrap()
        .connect_lazy();
    let err = WatchdogServiceClient::new(anonymous)
        .stop_process(control("server"))
        .await
        .expect_err("a client without a certificate may not stop a process");
    assert!(handshake_refused(&err), "{err:?}");
    assert_eq!(
        running_pid(&wd, "server"),
        Some(pid),
        "refused requests changed nothing"
    );

    // A server of the network stops and starts it.
    let stopped = server
        .stop_process(control("server-1"))
        .await
        .unwrap()
        .into_inner()
        .process
        .unwrap();
    assert_eq!((stopped.status.as_str(), stopped.pid), ("stopped", 0));
    assert!(!alive(pid));
    let err = server
        .stop_process(control("nothing-like-it"))
        .await
        .expect_err("unknown process");
    assert_eq!(err.code(), Code::NotFound);
    let started = server
        .start_process(control("server"))
        .await
        .unwrap()
        .into_inner()
        .process
        .unwrap();
    assert_eq!(started.status, "running");
    assert!(started.pid != 0 && started.pid != pid);

    let (stop, task) = run(wd);
    stop.send(()).unwrap();
    assert_eq!(task.await.unwrap(), StopOutcome::Exited);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_is_reported_under_the_id_it_keeps_in_its_id_file() {
    let dir = tempfile::tempdir().unwrap();
    let id_file = dir.path().join("server-id");
    std::fs::write(&id_file, "server-k3x9\n").unwrap();
    let mut cfg = config(dir.path());
    cfg.server = shell("server-1", "exec sleep 1000");
    cfg.server.id_file = id_file;
    let (wd, _) = start(cfg).await;
    eventually(Duration::from_secs(5), || running_pid(&wd, "server")).await;
    let info = &wd.node().children_info()[0];
    assert_eq!(
        (info.id.as_str(), info.supervisor_id.as_str()),
        ("server-k3x9", "watchdog-test")
    );
    for name in ["server-k3x9", "server-1", "server"] {
        assert!(wd.node().find(name).is_some(), "{name}");
    }
    let (stop, task) = run(wd);
    stop.send(()).unwrap();
    assert_eq!(task.await.unwrap(), StopOutcome::Exited);
}

/// `deploy/systemd/<name>` as (section, key, value) entries, failing on a malformed line.
fn unit_entries(name: &str) -> Vec<(String, String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/systemd")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut section = String::new();
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{}:{}: not KEY=VALUE: {line}", path.display(), n + 1));
        assert!(
            !section.is_empty(),
            "{}:{}: entry before any section",
            path.display(),
            n + 1
        );
        entries.push((
            section.clone(),
            key.trim().to_owned(),
            value.trim().to_owned(),
        ));
    }
    entries
}

#[test]
fn the_systemd_unit_is_a_hardened_notify_service_that_stops_children_through_the_watchdog() {
    let entries = unit_entries("ums-watchdog.service");
    let get = |section: &str, key: &str| -> Vec<&str> {
        entries
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    };
    let one = |section: &str, key: &str| -> &str {
        match get(section, key).as_slice() {
            [v] => v,
            other => panic!("[{section}] {key}: expected one value, found {other:?}"),
        }
    };
    assert_eq!(one("Service", "Type"), "notify");
    assert_eq!(one("Service", "NotifyAccess"), "main");
    assert!(one("Service", "ExecStart").starts_with("/usr/bin/ums-watchdog --config "));
    assert_eq!(one("Service", "User"), "ums");
    // Only the watchdog gets SIGTERM, so it can stop the broker before the server.
    assert_eq!(one("Service", "KillMode"), "mixed");
    assert_eq!(one("Service", "SuccessExitStatus"), "3");
    assert_eq!(one("Service", "RestartPreventExitStatus"), "2");
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ReadWritePaths", "/var/lib/ums"),
        ("StateDirectory", "ums"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(one("Service", key), value, "[Service] {key}");
    }
    assert_eq!(one("Install", "WantedBy"), "multi-user.target");

    let users = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/systemd/ums-sysusers.conf"),
    )
    .unwrap();
    assert!(users.lines().any(|l| l.starts_with("u ums ")), "{users}");
}

/// `systemd-analyze verify` on the unit, with ExecStart pointing at an executable that exists
/// here; skipped where the tool is missing.
#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let Ok(version) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        println!("skipped: systemd-analyze is not installed");
        return;
    };
    if !version.status.success() {
        println!("skipped: systemd-analyze --version failed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/systemd/ums-watchdog.service"),
    )
    .unwrap()
    .replace("/usr/bin/ums-watchdog", "/bin/true");
    let path = dir.path().join("ums-watchdog.service");
    std::fs::write(&path, unit).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    assert!(
        !stderr.contains("ums-watchdog.service"),
        "warnings about the unit: {stderr}"
    );
}

/// A process started by this test as the previous image of a watchdog would have: its own
/// process group, stdout a pipe whose read end is left open by number (as across execve).
fn previous_image_child(script: &str) -> crate::reexec::Adopted {
    use std::os::fd::{IntoRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    // Waited for by the watchdog that adopts it, as a handed-over child is.
    #[allow(clippy::zombie_processes)]
    let mut child = std::process::Command::new("/bin/sh")
        .args(["-c", script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let out = OwnedFd::from(child.stdout.take().unwrap()).into_raw_fd();
    crate::reexec::Adopted {
        id: "server-1".into(),
        pid: child.id(),
        started_at_ms: 1_000,
        restarts: 4,
        registry_id: Some("server-registry-id".into()),
        output: vec![out],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_over_child_is_adopted_its_output_read_restarted_when_it_dies_and_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.server = shell("server-1", "echo restarted-child; exec sleep 1000");
    let handed = previous_image_child(
        "trap 'exit 0' TERM; while true; do echo adopted-child-line; sleep 0.05; done",
    );
    let pid = handed.pid;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let wd =
        Watchdog::start_adopting(cfg.validate().unwrap(), listener, vec![handed.clone()]).unwrap();

    // Running and ready at once, with the same pid, start time, restarts and registry id.
    eventually(Duration::from_secs(2), || running_pid(&wd, "server")).await;
    let s = wd.node().find("server-1").unwrap().state();
    assert_eq!((s.phase, s.pid), (Phase::Running, Some(pid)));
    assert_eq!((s.started_at_ms, s.restarts), (1_000, 4));
    assert_eq!(s.registry_id.as_deref(), Some("server-registry-id"));
    assert!(alive(pid));
    // Its output is read (and kept for support bundles) from the pipe handed over.
    let recent = ums_service::diagnostics::ring("server-1");
    eventually(Duration::from_secs(5), || {
        recent
            .snapshot()
            .0
            .contains("adopted-child-line")
            .then_some(())
    })
    .await;
    // The pipe is close-on-exec again: the next children do not inherit it.
    let flags = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", handed.output[0])).unwrap();
    let flags = flags.lines().find(|l| l.starts_with("flags:")).unwrap();
    let octal = u32::from_str_radix(flags.trim_start_matches("flags:").trim(), 8).unwrap();
    assert_ne!(octal & 0o2000000, 0, "not close-on-exec: {flags}");

    // Killed, it is reaped and restarted as any child.
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let next = eventually(Duration::from_secs(5), || {
        running_pid(&wd, "server").filter(|p| *p != pid)
    })
    .await;
    assert!(!alive(pid), "the killed child was not reaped");
    let s = wd.node().find("server-1").unwrap().state();
    assert_eq!(s.restarts, 5);
    assert!(
        s.last_exit.as_deref().unwrap_or_default().contains("9"),
        "{:?}",
        s.last_exit
    );

    let (stop, task) = run(wd);
    stop.send(()).unwrap();
    assert_eq!(task.await.unwrap(), StopOutcome::Exited);
    assert!(!alive(next));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_child_is_stopped_with_sigterm_at_shutdown_and_a_stranger_is_not_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let stopped = dir.path().join("stopped");
    let mut cfg = config(dir.path());
    cfg.server = shell("server-1", "exec sleep 1000");
    cfg.broker = shell("broker-1", "exec sleep 1000");
    let handed = previous_image_child(&format!(
        "trap 'touch {}; exit 0' TERM; sleep 1000 & wait",
        stopped.display()
    ));
    let pid = handed.pid;
    // pid 1 is no child of this process: the broker is started anew instead.
    let stranger = crate::reexec::Adopted {
        id: "broker-1".into(),
        pid: 1,
        output: Vec::new(),
        ..handed.clone()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let wd = Watchdog::start_adopting(cfg.validate().unwrap(), listener, vec![handed, stranger])
        .unwrap();
    let adopted = eventually(Duration::from_secs(2), || running_pid(&wd, "server")).await;
    assert_eq!(adopted, pid);
    let broker = eventually(Duration::from_secs(5), || running_pid(&wd, "broker")).await;
    assert_ne!(broker, 1);
    assert_eq!(wd.node().find("broker").unwrap().state().restarts, 0);

    let (stop, task) = run(wd);
    stop.send(()).unwrap();
    assert_eq!(task.await.unwrap(), StopOutcome::Exited);
    assert!(stopped.exists(), "the adopted child got no SIGTERM");
    assert!(!alive(pid) && !alive(broker));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_re_exec_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.server = shell("server-1", "while true; do echo line; sleep 0.1; done");
    let (wd, _) = start(cfg).await;
    let pid = eventually(Duration::from_secs(5), || running_pid(&wd, "server")).await;
    // Not executable: execve fails (EACCES) and returns.
    let binary = dir.path().join("ums-watchdog");
    std::fs::write(&binary, b"not a program").unwrap();
    let error = crate::reexec::exec(wd.node(), &binary).await;
    assert!(
        error.contains("execve") && error.contains("EACCES"),
        "{error}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(running_pid(&wd, "server"), Some(pid));
    let s = wd.node().find("server").unwrap().state();
    assert_eq!(s.restarts, 0);

    let (stop, task) = run(wd);
    stop.send(()).unwrap();
    assert_eq!(task.await.unwrap(), StopOutcome::Exited);
    assert!(!alive(pid));
}
