//! Software releases end to end: two nodes under watchdogs on PostgreSQL, a release key made
//! with `umsctl release keygen`, bundles signed with `umsctl release sign` and uploaded with
//! `umsctl release upload`. A release whose binaries differ from the running ones reaches both
//! nodes one after the other while devices check in through both brokers without a failed
//! request; a release whose server does not start is rolled back on the first node and the
//! rollout stops there; tampered, unsigned and older releases are refused.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ums_devsim::DeviceClient;
use ums_testkit::{bin_path, free_port};

use crate::harness::{Umsctl, Watchdog};

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A node: a watchdog supervising a server and a broker; every broker knows both servers.
struct Node {
    wd: Watchdog,
    name: &'static str,
    admin_port: u16,
    broker_port: u16,
}

struct Ports {
    device: u16,
    admin: u16,
    broker: u16,
}

impl Node {
    fn start(
        name: &'static str,
        db: &str,
        token: Option<&Path>,
        own: &Ports,
        all: &[&Ports],
        public_key: &str,
    ) -> Node {
        let dir = tempfile::tempdir().expect("node dir");
        let d = dir.path();
        let server_data = d.join("server");
        std::fs::create_dir_all(&server_data).expect("server dir");
        if let Some(token) = token {
            std::fs::copy(token, server_data.join("network-token")).expect("copy the token");
        }
        let q = |p: &Path| toml_str(&p.display().to_string());
        let servers: Vec<String> = all
            .iter()
            .map(|p| format!("127.0.0.1:{}", p.device))
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

[release]
public_keys = [{key}]
check_interval_ms = 500
healthy_for_ms = 2000

[server]
enabled = true
binary = {server}
args = ["run"]
id_file = {server_id}
ready_addr = "127.0.0.1:{admin_port}"
ready_timeout_ms = 15000

[server.env]
UMS_DATA_DIR = {server_data}
UMS_DATABASE_URL = {db}
UMS_DEVICE__LISTEN = "127.0.0.1:{device_port}"
UMS_ADMIN__LISTEN = "127.0.0.1:{admin_port}"
UMS_NETWORK__MODE = "ha"
UMS_NETWORK__INTERNAL_LISTEN = "127.0.0.1:{server_internal}"
UMS_NETWORK__ADVERTISE_HOST = "127.0.0.1"
UMS_NETWORK__DRAIN_MS = "1500"
UMS_RELEASE__PUBLIC_KEYS = {key}

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
UMS_RATE__PER_SECOND = "0"
"#,
            internal = free_port(),
            server_internal = free_port(),
            admin_port = own.admin,
            device_port = own.device,
            broker_port = own.broker,
            data = q(&d.join("watchdog")),
            token = q(&server_data.join("network-token")),
            key = toml_str(public_key),
            server = q(&bin_path("ums-server")),
            server_id = q(&server_data.join("server-id")),
            server_data = q(&server_data),
            db = toml_str(db),
            broker = q(&bin_path("ums-broker")),
            servers = servers.join(","),
        );
        Node {
            wd: Watchdog::start(dir, free_port(), &config),
            name,
            admin_port: own.admin,
            broker_port: own.broker,
        }
    }

    fn id(&self) -> String {
        format!("watchdog-{}", self.name)
    }

    fn server_data(&self) -> PathBuf {
        self.wd.dir.path().join("server")
    }

    fn release_dir(&self) -> PathBuf {
        self.wd.dir.path().join("watchdog/release")
    }
}

async fn until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}

/// `umsctl --json ARGS`, `None` while the server it talks to restarts.
fn try_json(ctl: &Umsctl, args: &[&str]) -> Option<serde_json::Value> {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = ctl.raw(&all);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The node rows of `umsctl release status --json` (none while the server restarts).
fn nodes(ctl: &Umsctl) -> Vec<serde_json::Value> {
    try_json(ctl, &["release", "status"])
        .and_then(|v| v["nodes"].as_array().cloned())
        .unwrap_or_default()
}

fn node<'a>(nodes: &'a [serde_json::Value], id: &str) -> Option<&'a serde_json::Value> {
    nodes.iter().find(|n| n["node_id"] == id)
}

/// The registry's pid of a process, from `umsctl network list --json`.
fn pid_of(ctl: &Umsctl, supervisor: &str, kind: &str) -> Option<u32> {
    let list = try_json(ctl, &["network", "list"])?;
    list["processes"]
        .as_array()?
        .iter()
        .find(|p| p["supervisor_id"] == supervisor && p["kind"] == kind && p["status"] == "running")
        .and_then(|p| p["pid"].as_u64())
        .map(|p| p as u32)
}

/// The executable a process runs.
fn exe(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default()
}

/// A bundle whose binaries are the built ones with a marker appended: other bytes, so other
/// hashes, that run the same (an ELF file ignores what follows it). The watchdog's too: each
/// node's watchdog re-executes into it once its children are updated.
fn bundle(dir: &Path, revision: u64, server: Option<&[u8]>) -> PathBuf {
    let b = dir.join(format!("bundle-{revision}"));
    for (role, bin) in [
        ("server", "ums-server"),
        ("broker", "ums-broker"),
        ("watchdog", "ums-watchdog"),
    ] {
        let path = b.join(role).join("bin").join(bin);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        let content = match (role, server) {
            ("server", Some(script)) => script.to_vec(),
            _ => {
                let mut c = std::fs::read(bin_path(bin)).expect("binary");
                c.extend_from_slice(format!("\nums release test revision {revision}\n").as_bytes());
                c
            }
        };
        std::fs::write(&path, content).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    b
}

fn sign(ctl: &Umsctl, key: &Path, bundle: &Path, revision: u64) {
    ctl.ok(&[
        "release",
        "sign",
        bundle.to_str().expect("path"),
        "--key",
        key.to_str().expect("path"),
        "--release-version",
        &format!("0.0.{revision}"),
        "--revision",
        &revision.to_string(),
    ]);
}

/// The steps of the update log: (node, revision, step).
fn steps(ctl: &Umsctl) -> Vec<(String, u64, String)> {
    ctl.json(&["release", "log", "--limit", "1000"])["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            (
                e["node_id"].as_str().unwrap_or_default().to_owned(),
                e["revision"].as_u64().unwrap_or_default(),
                e["step"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Two nodes on one PostgreSQL database with a release key made by `umsctl release keygen`
/// and pinned by both: returns them, a logged-in umsctl and the private key file, once every
/// process of both runs.
async fn two_nodes(database: &str, work: &Path) -> (Node, Node, Umsctl, PathBuf) {
    let url = ums_testkit::shared_database(database).expect("postgres");
    let keygen = Umsctl::offline(work);
    let key = work.join("release.key");
    let made = keygen.json(&["release", "keygen", key.to_str().expect("path")]);
    let public = made["public_key"].as_str().expect("public key").to_owned();

    let pa = Ports {
        device: free_port(),
        admin: free_port(),
        broker: free_port(),
    };
    let pb_ = Ports {
        device: free_port(),
        admin: free_port(),
        broker: free_port(),
    };
    let a = Node::start("a", &url, None, &pa, &[&pa, &pb_], &public);
    let token = a.server_data().join("network-token");
    until(Duration::from_secs(60), "node a's token", || token.exists()).await;
    let b = Node::start("b", &url, Some(&token), &pb_, &[&pa, &pb_], &public);
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
    let ca_path = a.server_data().join("tls/ca.pem");
    let ctl = Umsctl::login(
        work,
        &format!("https://127.0.0.1:{}", a.admin_port),
        &ca_path,
        std::fs::read_to_string(&password).expect("password").trim(),
    );
    until(
        Duration::from_secs(90),
        "both nodes' processes running",
        || {
            ["watchdog-a", "watchdog-b"]
                .iter()
                .all(|w| pid_of(&ctl, w, "server").is_some() && pid_of(&ctl, w, "broker").is_some())
        },
    )
    .await;
    (a, b, ctl, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signed_release_reaches_both_nodes_one_after_the_other_and_a_broken_one_stops_at_the_first()
 {
    let work = tempfile::tempdir().expect("work dir");
    let (a, b, ctl, key) = two_nodes("e2e_release", work.path()).await;
    let ca_path = a.server_data().join("tls/ca.pem");
    let before = [
        pid_of(&ctl, "watchdog-a", "server").expect("pid"),
        pid_of(&ctl, "watchdog-b", "server").expect("pid"),
    ];

    // Devices check in through both brokers (a device moves to the next broker when one cannot
    // be reached) all through the rollout.
    let ca = std::fs::read(&ca_path).expect("ca");
    let brokers = format!(
        "https://127.0.0.1:{},https://127.0.0.1:{}",
        a.broker_port, b.broker_port
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for d in 0..4 {
        let (stop, ok, failed, ca, brokers) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            ca.clone(),
            brokers.clone(),
        );
        load.push(tokio::spawn(async move {
            let unit = format!("00:00:00:00:0e:{d:02}");
            let mut dev = DeviceClient::connect(&brokers, &ca).await.expect("connect");
            dev.register(&unit, &unit).await.expect("register");
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                // A device retries a call once, as the simulator's devices do.
                let first = dev.check_in("idle", 0).await;
                let outcome = match first {
                    Ok(_) => Ok(()),
                    Err(_) => dev.check_in("idle", 0).await.map(|_| ()),
                };
                match outcome {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        errors.push(format!("{e:#}"));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            errors
        }));
    }

    // Revision 1: binaries that differ from the running ones.
    let one = bundle(work.path(), 1, None);
    sign(&ctl, &key, &one, 1);
    let started = Instant::now();
    let out = ctl.ok(&["release", "upload", one.to_str().expect("path")]);
    assert!(out.contains("revision 1"), "{out}");
    until(Duration::from_secs(300), "both nodes on revision 1", || {
        let n = nodes(&ctl);
        ["watchdog-a", "watchdog-b"].iter().all(|id| {
            node(&n, id).is_some_and(|n| n["installed_revision"] == 1 && n["state"] == "updated")
        })
    })
    .await;
    // Last, each watchdog re-executes into the release's binary: the same pid, now running
    // from the version directory, its children kept.
    for n in [&a, &b] {
        let want = n
            .release_dir()
            .join("versions/1/bin/ums-watchdog")
            .canonicalize()
            .expect("installed");
        let pid = n.wd.child.id();
        until(Duration::from_secs(60), "the watchdog re-executed", || {
            exe(pid) == want
        })
        .await;
    }
    let rollout = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for l in load {
        errors.extend(l.await.expect("device task"));
    }
    let (ok_n, failed_n) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "2-node rollout of revision 1: {} ms; device check-ins during it: {ok_n} answered, {failed_n} failed",
        rollout.as_millis()
    );
    assert_eq!(failed_n, 0, "failed device requests: {errors:?}");
    assert!(ok_n > 20, "the devices kept checking in ({ok_n})");

    // One after the other: the second node began only after the first was done.
    let log = steps(&ctl);
    let first_done = |id: &str| log.iter().position(|s| s.0 == id && s.2 == "done");
    let first_step = |id: &str| log.iter().position(|s| s.0 == id && s.1 == 1);
    let (da, db) = (
        first_done("watchdog-a").expect("a done"),
        first_done("watchdog-b").expect("b done"),
    );
    let (sa, sb) = (
        first_step("watchdog-a").expect("a began"),
        first_step("watchdog-b").expect("b began"),
    );
    assert!(
        da < sb || db < sa,
        "the nodes updated at the same time: {log:?}"
    );
    for s in [
        "compare", "download", "install", "switch", "restart", "check", "done", "reexec",
    ] {
        for n in [&a, &b] {
            assert!(
                log.iter().any(|l| l.0 == n.id() && l.2 == s),
                "{} logged no {s}: {log:?}",
                n.id()
            );
        }
    }
    // Both servers now run the release's binary, from its version directory.
    for n in [&a, &b] {
        let pid = pid_of(&ctl, &n.id(), "server").expect("server pid");
        assert!(
            !before.contains(&pid),
            "{}'s server was not restarted",
            n.id()
        );
        assert_eq!(
            exe(pid),
            n.release_dir()
                .join("versions/1/bin/ums-server")
                .canonicalize()
                .expect("installed"),
        );
        let state =
            std::fs::read_to_string(n.release_dir().join("installed.json")).expect("state file");
        assert!(state.contains("\"revision\": 1"), "{state}");
        let local_log =
            std::fs::read_to_string(n.release_dir().join("update.log")).expect("update.log");
        assert!(local_log.contains("step=done"), "{local_log}");
        assert!(local_log.contains("step=reexec"), "{local_log}");
    }
    // The children the watchdogs handed over at re-exec still run with the same pids, are
    // reported by the new image and serve.
    for n in [&a, &b] {
        let steps = node_steps(&ctl, &n.id());
        let detail = steps
            .iter()
            .find(|s| s.0 == 1 && s.1 == "reexec")
            .map(|s| s.2.clone())
            .expect("reexec step");
        assert!(
            detail.starts_with(&format!("watchdog pid {}:", n.wd.child.id())),
            "{detail}"
        );
        let kept: Vec<u32> = detail
            .split_once("keep running: ")
            .expect("children in the detail")
            .1
            .split(", ")
            .map(|c| {
                c.rsplit_once(" pid ")
                    .expect("pid")
                    .1
                    .parse()
                    .expect("number")
            })
            .collect();
        let running = [
            pid_of(&ctl, &n.id(), "server").expect("server pid"),
            pid_of(&ctl, &n.id(), "broker").expect("broker pid"),
        ];
        assert_eq!(kept, running, "{}: {detail}", n.id());
        ums_testkit::wait_for_tcp(
            ([127, 0, 0, 1], n.admin_port).into(),
            Duration::from_secs(5),
        )
        .expect("the server serves");
        ums_testkit::wait_for_tcp(
            ([127, 0, 0, 1], n.broker_port).into(),
            Duration::from_secs(5),
        )
        .expect("the broker serves");
        assert!(
            n.wd.log_text()
                .contains("adopted from the previous watchdog image"),
            "{}",
            n.wd.log_text()
        );
    }
    let text = ctl.ok(&["release", "status"]);
    assert!(
        text.contains("the network's software revision is 1"),
        "{text}"
    );

    // Refused before anything is stored: a file changed after signing, an unsigned manifest,
    // the same revision again.
    let two = bundle(work.path(), 2, None);
    sign(&ctl, &key, &two, 2);
    let server_file = two.join("server/bin/ums-server");
    let original = std::fs::read(&server_file).expect("read");
    std::fs::write(&server_file, b"tampered").expect("tamper");
    let err = ctl.fails(&["release", "upload", two.to_str().expect("path")]);
    assert!(err.contains("does not match the signed manifest"), "{err}");
    std::fs::write(&server_file, &original).expect("restore");
    let manifest = two.join("manifest.json");
    let signed = std::fs::read_to_string(&manifest).expect("manifest");
    let mut unsigned: serde_json::Value = serde_json::from_str(&signed).expect("json");
    unsigned["signatures"] = serde_json::json!([]);
    std::fs::write(&manifest, unsigned.to_string()).expect("write");
    let err = ctl.fails(&["release", "upload", two.to_str().expect("path")]);
    assert!(err.contains("unsigned"), "{err}");
    let err = ctl.fails(&["release", "upload", one.to_str().expect("path")]);
    assert!(err.contains("already released"), "{err}");

    // Revision 2: its server exits at once. The first node to take it switches back and the
    // rollout stops: the other node stays on revision 1.
    let broken = bundle(
        work.path(),
        2,
        Some(b"#!/bin/sh\necho broken >&2\nexit 3\n"),
    );
    sign(&ctl, &key, &broken, 2);
    ctl.ok(&["release", "upload", broken.to_str().expect("path")]);
    let mut failed_node = String::new();
    until(Duration::from_secs(120), "a node rolled back", || {
        let n = nodes(&ctl);
        match n
            .iter()
            .find(|n| n["state"] == "rolled-back" && n["target_revision"] == 2)
        {
            Some(f) => {
                failed_node = f["node_id"].as_str().unwrap_or_default().to_owned();
                true
            }
            None => false,
        }
    })
    .await;
    let other = if failed_node == a.id() { &b } else { &a };
    let failed_one = if failed_node == a.id() { &a } else { &b };
    until(
        Duration::from_secs(60),
        "the failed node's server running again",
        || pid_of(&ctl, &failed_node, "server").is_some(),
    )
    .await;
    let pid = pid_of(&ctl, &failed_node, "server").expect("pid");
    assert!(
        exe(pid).ends_with("versions/1/bin/ums-server"),
        "{:?}",
        exe(pid)
    );
    // Several check intervals later the other node has not taken revision 2.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let n = nodes(&ctl);
    let o = node(&n, &other.id()).expect("other node");
    assert_eq!(o["installed_revision"], 1, "{o}");
    assert!(
        !steps(&ctl).iter().any(|s| s.0 == other.id() && s.1 == 2),
        "the rollout went on to {}",
        other.id()
    );
    let f = node(&n, &failed_node).expect("failed node");
    assert_eq!(f["installed_revision"], 1, "{f}");
    assert!(
        f["error"].as_str().is_some_and(|e| e.contains("did not")),
        "{f}"
    );
    let state = std::fs::read_to_string(failed_one.release_dir().join("installed.json"))
        .expect("state file");
    assert!(state.contains("\"revision\": 1"), "{state}");
    let text = ctl.ok(&["release", "log", "--node", &failed_node]);
    assert!(text.contains("rollback"), "{text}");

    // SIGTERM to the other node's re-executed watchdog stops the children it adopted (never
    // restarted since), and it exits 0.
    let other_id = other.id();
    let (mut a, mut b) = (a, b);
    let o = if other_id == a.id() { &mut a } else { &mut b };
    let kids = [
        pid_of(&ctl, &other_id, "server").expect("server pid"),
        pid_of(&ctl, &other_id, "broker").expect("broker pid"),
    ];
    assert!(
        o.wd.log_text()
            .contains("adopted from the previous watchdog image"),
        "{}",
        o.wd.log_text()
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(o.wd.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = o.wd.child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running:\n{}",
            o.wd.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}:\n{}", o.wd.log_text());
    for pid in kids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "child {pid} survived its watchdog"
        );
    }
}

/// The revisions a node's steps named, with their step and detail, from `umsctl release log`.
fn node_steps(ctl: &Umsctl, node: &str) -> Vec<(u64, String, String)> {
    try_json(ctl, &["release", "log", "--node", node, "--limit", "1000"])
        .and_then(|v| v["entries"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|e| {
            (
                e["revision"].as_u64().unwrap_or_default(),
                e["step"].as_str().unwrap_or_default().to_owned(),
                e["detail"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Both nodes report `revision` installed and their update done.
fn both_on(ctl: &Umsctl, revision: u64) -> bool {
    let n = nodes(ctl);
    ["watchdog-a", "watchdog-b"].iter().all(|id| {
        node(&n, id).is_some_and(|n| n["installed_revision"] == revision && n["state"] == "updated")
    })
}

/// Both servers run revision `revision`'s binary, from its version directory, and the state
/// files say so.
fn both_run(ctl: &Umsctl, nodes: [&Node; 2], revision: u64) {
    for n in nodes {
        let pid = pid_of(ctl, &n.id(), "server").expect("server pid");
        assert_eq!(
            exe(pid),
            n.release_dir()
                .join(format!("versions/{revision}/bin/ums-server"))
                .canonicalize()
                .expect("installed"),
            "{}",
            n.id()
        );
        let state =
            std::fs::read_to_string(n.release_dir().join("installed.json")).expect("state file");
        assert!(
            state.starts_with(&format!("{{\n  \"revision\": {revision},")),
            "{state}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_rollout_starts_no_node_resume_continues_it_and_a_rollback_brings_both_back() {
    let work = tempfile::tempdir().expect("work dir");
    let (a, b, ctl, key) = two_nodes("e2e_release_rollout", work.path()).await;

    let one = bundle(work.path(), 1, None);
    sign(&ctl, &key, &one, 1);
    ctl.ok(&["release", "upload", one.to_str().expect("path")]);
    until(Duration::from_secs(300), "both nodes on revision 1", || {
        both_on(&ctl, 1)
    })
    .await;

    // Paused: revision 2 is the newest release, and no node starts it.
    let out = ctl.ok(&["release", "pause"]);
    assert!(out.contains("rollout paused"), "{out}");
    let two = bundle(work.path(), 2, None);
    sign(&ctl, &key, &two, 2);
    ctl.ok(&["release", "upload", two.to_str().expect("path")]);
    // Ten check intervals of both nodes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for n in [&a, &b] {
        assert!(
            !node_steps(&ctl, &n.id()).iter().any(|s| s.0 == 2),
            "{} began revision 2 while paused",
            n.id()
        );
    }
    assert!(both_on(&ctl, 1), "{:?}", nodes(&ctl));
    let text = ctl.ok(&["release", "status"]);
    assert!(text.contains("paused by admin"), "{text}");
    assert!(
        text.contains("the network's software revision is 2"),
        "{text}"
    );

    // Resumed: both nodes take revision 2, one after the other.
    let out = ctl.ok(&["release", "resume"]);
    assert!(out.contains("rollout resumed"), "{out}");
    until(Duration::from_secs(300), "both nodes on revision 2", || {
        both_on(&ctl, 2)
    })
    .await;
    let log = steps(&ctl);
    let first = |id: &str, step: Option<&str>| {
        log.iter()
            .position(|s| s.0 == id && s.1 == 2 && step.is_none_or(|st| s.2 == st))
            .expect("logged")
    };
    let (da, db) = (
        first("watchdog-a", Some("done")),
        first("watchdog-b", Some("done")),
    );
    let (sa, sb) = (first("watchdog-a", None), first("watchdog-b", None));
    assert!(
        da < sb || db < sa,
        "the nodes updated at the same time: {log:?}"
    );
    both_run(&ctl, [&a, &b], 2);

    // Rolled back: the network wants revision 1 again and both nodes switch back to it.
    let out = ctl.ok(&["release", "rollback"]);
    assert!(out.contains("rolled back to revision 1 (from 2)"), "{out}");
    // Until a node reports revision 1 installed (after its check of healthy_for_ms at least),
    // the rollback is under way.
    let text = ctl.ok(&["release", "status"]);
    assert!(
        text.contains("rolling back to revision 1 from 2 by admin"),
        "{text}"
    );
    until(
        Duration::from_secs(300),
        "both nodes back on revision 1",
        || both_on(&ctl, 1),
    )
    .await;
    until(Duration::from_secs(60), "both servers running", || {
        pid_of(&ctl, "watchdog-a", "server").is_some()
            && pid_of(&ctl, "watchdog-b", "server").is_some()
    })
    .await;
    both_run(&ctl, [&a, &b], 1);
    for n in [&a, &b] {
        let s = node_steps(&ctl, &n.id());
        let after: Vec<_> = s
            .iter()
            .skip_while(|s| !(s.0 == 2 && s.1 == "done"))
            .collect();
        for step in ["compare", "switch", "restart", "check", "done"] {
            assert!(
                after.iter().any(|s| s.0 == 1 && s.1 == step),
                "{} logged no {step} of the rollback: {s:?}",
                n.id()
            );
        }
        assert!(
            after
                .iter()
                .any(|s| s.1 == "done" && s.2.contains("rolled back from revision 2")),
            "{s:?}"
        );
        assert!(
            !after.iter().any(|s| s.1 == "download"),
            "the previous revision was downloaded again: {s:?}"
        );
        let local =
            std::fs::read_to_string(n.release_dir().join("update.log")).expect("update.log");
        assert!(local.contains("rolled back from revision 2"), "{local}");
    }
    let text = ctl.ok(&["release", "status"]);
    assert!(
        text.contains("the network's software revision is 1"),
        "{text}"
    );
    assert!(
        text.contains("rolled back to revision 1 from 2 by admin"),
        "{text}"
    );
    // Each step of the rollout is an administrator's, in the audit log.
    let audit = ctl.json(&["audit", "--limit", "50"]);
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in ["PauseRelease", "ResumeRelease", "RollbackRelease"] {
        assert!(
            actions.contains(&action),
            "{action} not audited: {actions:?}"
        );
    }
}
