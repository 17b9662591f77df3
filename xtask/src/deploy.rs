//! `cargo xtask deploy-test` (also run by `cargo xtask test`): the container deployments for
//! real.
//!
//! 1. The images (`cargo xtask images`).
//! 2. The compose `ha` profile with the loopback override (host networking, every service on
//!    its own 127.0.0.x address): up, 1,000 devices register and check in through a broker
//!    container, one server container is stopped and 1,000 more devices work through the other
//!    broker, then `down -v`, and no container, volume or network of the project is left.
//! 3. The Kubernetes manifests against the schemas of a current release, strictly
//!    (kubernetes-validate; the CloudNativePG Cluster with check-jsonschema against the
//!    vendored schema), and `podman kube play` of the server pod from the StatefulSet.
//!
//! Nothing is skipped: a machine where podman cannot run fails with podman's message.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use crate::images;
use crate::podman::Podman;
use crate::util::{self, step};

/// Arguments of `cargo xtask deploy-test`.
#[derive(Debug, Args)]
pub struct DeployTestArgs {
    /// Use the release binaries already built.
    #[arg(long)]
    pub no_build: bool,
    /// Devices per run of the simulator.
    #[arg(long, default_value_t = 1000)]
    pub devices: usize,
    /// Run only one part (for work on it); `cargo xtask test` runs both.
    #[arg(long, value_enum)]
    pub only: Option<Part>,
}

/// A part of the deployment tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Compose,
    Kubernetes,
}

/// The compose project of the test; its containers, volumes and network carry this name.
const PROJECT: &str = "umstest";
/// A current Kubernetes release, whose schemas the manifests must pass.
pub const KUBERNETES_VERSION: &str = "1.37.0";

const POSTGRES: SocketAddr = addr(10, 5432);
const SERVER_1_ADMIN: SocketAddr = addr(11, 8443);
const SERVER_2_ADMIN: SocketAddr = addr(12, 8443);
const BROKER_1: SocketAddr = addr(21, 30001);
const BROKER_2: SocketAddr = addr(22, 30001);
/// The network `podman kube play` creates for its pods when it does not exist.
const KUBE_NETWORK: &str = "podman-default-kube-network";

/// The loopback address of the `podman kube play` smoke pod.
const SMOKE_IP: [u8; 4] = [127, 0, 0, 41];

const fn addr(last: u8, port: u16) -> SocketAddr {
    SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, last)),
        port,
    )
}

/// Runs `cargo xtask deploy-test`.
pub fn run(args: DeployTestArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    // PostgreSQL's image is staged from the machine's packages.
    crate::test::ensure_postgres()?;
    let podman = Podman::ensure()?;
    if !args.no_build {
        let t = Instant::now();
        images::build_release()?;
        step!("release build: {:.0} s", t.elapsed().as_secs_f64());
    }
    let t = Instant::now();
    let built = images::build_all(&podman, "latest")?;
    step!("images built in {:.0} s", t.elapsed().as_secs_f64());
    images::print_sizes(&built);

    let compose = if args.only.is_none_or(|p| p == Part::Compose) {
        compose_single(&podman)?;
        Some(compose_ha(&podman, args.devices)?)
    } else {
        step!("--only kubernetes: the compose tests do not run");
        None
    };
    if args.only.is_none_or(|p| p == Part::Kubernetes) {
        kubernetes(&podman)?;
    } else {
        step!("--only compose: the Kubernetes tests do not run");
    }

    step!(
        "deployment tests passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    images::print_sizes(&built);
    if let Some(compose) = compose {
        step!(
            "compose ha: up to the first device check-in {:.1} s (postgres healthy {:.1} s)",
            compose.first_checkin.as_secs_f64(),
            compose.postgres_ready.as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What the compose test measured.
struct ComposeReport {
    postgres_ready: Duration,
    first_checkin: Duration,
}

fn compose_dir() -> PathBuf {
    util::workspace_root().join("deploy/compose")
}

/// What exists in podman before the test: what must exist after it.
#[derive(Debug, PartialEq, Eq)]
struct Inventory {
    containers: Vec<String>,
    volumes: Vec<String>,
    networks: Vec<String>,
    pods: Vec<String>,
}

impl Inventory {
    fn take(podman: &Podman) -> anyhow::Result<Inventory> {
        let list = |args: &[&str]| -> anyhow::Result<Vec<String>> {
            let mut v: Vec<String> = podman
                .output(args)?
                .lines()
                .map(str::to_owned)
                .filter(|l| !l.is_empty())
                .collect();
            v.sort();
            Ok(v)
        };
        Ok(Inventory {
            containers: list(&["ps", "--all", "--format", "{{.Names}}"])?,
            volumes: list(&["volume", "ls", "--format", "{{.Name}}"])?,
            networks: list(&["network", "ls", "--format", "{{.Name}}"])?,
            pods: list(&["pod", "ps", "--format", "{{.Name}}"])?,
        })
    }
}

/// The compose stack of the test; `down -v` when dropped, whatever happened.
struct Stack<'a> {
    podman: &'a Podman,
    /// `COMPOSE_PROFILES`.
    profile: &'static str,
    files: Vec<PathBuf>,
    log_dir: PathBuf,
}

impl Stack<'_> {
    fn compose(&self) -> Command {
        let mut cmd = self.podman.compose(PROJECT, &self.files);
        cmd.current_dir(compose_dir())
            .env("COMPOSE_PROFILES", self.profile)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `podman-compose ARGS`, its output into the log directory.
    fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        let name = args.join("-").replace(['/', ' '], "_");
        let log = self
            .log_dir
            .join(format!("compose-{}-{name}.log", self.profile));
        let file = std::fs::File::create(&log)?;
        let mut cmd = self.compose();
        cmd.args(args).stdout(file.try_clone()?).stderr(file);
        step!("{}", util::render(&cmd));
        let status = cmd.status().context("run podman-compose")?;
        if !status.success() {
            bail!(
                "podman-compose {} failed ({status}); its output: {}",
                args.join(" "),
                log.display()
            );
        }
        Ok(())
    }

    fn container(service: &str) -> String {
        format!("{PROJECT}_{service}_1")
    }

    /// Runs the container's own health check (`podman healthcheck run`).
    fn healthy(&self, service: &str) -> bool {
        self.podman
            .cmd()
            .args(["healthcheck", "run", &Self::container(service)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Saves every container's log beside the compose logs.
    fn save_logs(&self) {
        let Ok(names) = self.podman.output(&[
            "ps",
            "--all",
            "--filter",
            &format!("label=io.podman.compose.project={PROJECT}"),
            "--format",
            "{{.Names}}",
        ]) else {
            return;
        };
        for name in names.lines().filter(|n| !n.is_empty()) {
            if let Ok(out) = self.podman.cmd().args(["logs", name]).output() {
                let mut text = out.stdout;
                text.extend_from_slice(&out.stderr);
                let _ = std::fs::write(self.log_dir.join(format!("{name}.log")), text);
            }
        }
    }

    fn down(&self) -> anyhow::Result<()> {
        self.run(&["down", "--volumes", "--timeout", "20"])
    }
}

impl Drop for Stack<'_> {
    fn drop(&mut self) {
        self.save_logs();
        if let Err(e) = self.down() {
            eprintln!("xtask: warning: tearing down the compose stack: {e:#}");
        }
    }
}

/// Polls `ready` every 250 ms until it holds or `timeout` passes.
fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    step!("waiting for {what}");
    let deadline = Instant::now() + timeout;
    while !ready() {
        if Instant::now() > deadline {
            bail!("gave up waiting for {what} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(())
}

fn tcp_open(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Fails unless every address the stack takes is free.
fn check_free(addrs: &[SocketAddr]) -> anyhow::Result<()> {
    for a in addrs {
        if let Err(e) = TcpListener::bind(a) {
            bail!(
                "{a} is not free ({e}): another deployment test or `cargo xtask network` running?"
            );
        }
    }
    Ok(())
}

/// The simulator's JSON report.
fn devsim(
    addr: SocketAddr,
    ca: &Path,
    devices: usize,
    checkins: usize,
) -> anyhow::Result<serde_json::Value> {
    let mut cmd = Command::new(util::profile_dir(true).join("ums-devsim"));
    cmd.arg("--addr")
        .arg(format!("https://{addr}"))
        .arg("--ca")
        .arg(ca)
        .args(["--devices", &devices.to_string()])
        .args(["--checkins", &checkins.to_string()])
        .args(["--concurrency", "64", "--json"])
        .stdin(Stdio::null());
    let out = cmd.output().context("run ums-devsim")?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "ums-devsim printed no report ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok(report)
}

/// Runs the simulator and fails unless every device succeeded.
fn devices_work(what: &str, addr: SocketAddr, ca: &Path, devices: usize) -> anyhow::Result<()> {
    step!("{devices} devices register and check in through {what} ({addr})");
    let report = devsim(addr, ca, devices, 2)?;
    let ok = report["ok"].as_u64().unwrap_or(0);
    let errors = report["errors"].as_u64().unwrap_or(u64::MAX);
    step!(
        "  {ok} devices ok, {errors} failed, {:.1} s, check-in p99 {} ms",
        report["elapsed_s"].as_f64().unwrap_or(f64::NAN),
        report["checkin"]["p99_ms"]
    );
    if ok != devices as u64 || errors != 0 {
        bail!(
            "{errors} of {devices} devices failed through {what}: {}",
            report["error_samples"]
        );
    }
    Ok(())
}

/// Resident and peak memory of a container's main process (from /proc), and its CPU time.
fn memory(podman: &Podman, container: &str) -> String {
    let Ok(pid) = podman.output(&["inspect", "--format", "{{.State.Pid}}", container]) else {
        return "not running".into();
    };
    let pid = pid.trim();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| "?".into())
    };
    // utime and stime, fields 14 and 15 of /proc/PID/stat, in clock ticks (100 per second).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let ticks: u64 = after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<u64>().ok())
        .sum();
    format!(
        "RSS {}, peak {}, CPU {:.1} s",
        field("VmRSS:"),
        field("VmHWM:"),
        ticks as f64 / 100.0
    )
}

/// `ums_broker_connections_total` per server, from a broker's metrics.
fn broker_totals(metrics: SocketAddr) -> anyhow::Result<Vec<(String, u64)>> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&metrics, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: broker\r\nconnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("ums_broker_connections_total{server=\""))
        .filter_map(|l| {
            let (server, rest) = l.split_once("\"}")?;
            Some((server.to_owned(), rest.trim().parse().ok()?))
        })
        .collect())
}

/// The default profile: one server on the embedded database, started with one `up`.
fn compose_single(podman: &Podman) -> anyhow::Result<()> {
    let dir = compose_dir();
    let log_dir = util::target_dir().join("deploy-test");
    std::fs::create_dir_all(&log_dir)?;
    let before = Inventory::take(podman)?;
    let device = addr(40, 30001);
    check_free(&[device, addr(40, 8443)])?;
    let stack = Stack {
        podman,
        profile: "single",
        files: vec![dir.join("compose.yaml"), dir.join("compose.loopback.yaml")],
        log_dir: log_dir.clone(),
    };
    stack.down()?;
    let t0 = Instant::now();
    stack.run(&["up", "-d"])?;
    wait_for(
        "the single server to pass its health check",
        Duration::from_secs(90),
        || stack.healthy("server"),
    )?;
    let mount = podman
        .output(&[
            "volume",
            "inspect",
            "--format",
            "{{.Mountpoint}}",
            &format!("{PROJECT}_server-data"),
        ])?
        .trim()
        .to_owned();
    let ca = log_dir.join("ca-single.pem");
    std::fs::copy(Path::new(&mount).join("tls/ca.pem"), &ca).context("the single server's CA")?;
    step!(
        "compose single profile: healthy {:.1} s after `up`",
        t0.elapsed().as_secs_f64()
    );
    devices_work("the single server", device, &ca, 100)?;
    drop(stack);
    let after = Inventory::take(podman)?;
    if after != before {
        bail!(
            "the compose stack left something behind:\n  before: {before:?}\n  after:  {after:?}"
        );
    }
    Ok(())
}

fn compose_ha(podman: &Podman, devices: usize) -> anyhow::Result<ComposeReport> {
    let dir = compose_dir();
    let log_dir = util::target_dir().join("deploy-test");
    std::fs::create_dir_all(&log_dir)?;
    let before = Inventory::take(podman)?;
    check_free(&[
        POSTGRES,
        SERVER_1_ADMIN,
        SERVER_2_ADMIN,
        BROKER_1,
        BROKER_2,
        addr(31, 61617),
    ])?;

    let stack = Stack {
        podman,
        profile: "ha",
        files: vec![dir.join("compose.yaml"), dir.join("compose.loopback.yaml")],
        log_dir: log_dir.clone(),
    };
    // A stack left by an interrupted run goes first.
    stack.down()?;

    let t0 = Instant::now();
    // The order compose.yaml declares with depends_on, step by step: podman before 4.6
    // ignores `condition: service_healthy`, and podman-compose's `--requires` between the
    // containers fails on 4.3 for a chain of dependencies ("depends on container ... not
    // found in input list"). So each step is `up --no-deps` of the services whose
    // dependencies have passed their own health checks.
    stack.run(&["up", "-d", "--no-deps", "postgres"])?;
    wait_for(
        "postgres to pass its health check",
        Duration::from_secs(90),
        || tcp_open(POSTGRES) && stack.healthy("postgres"),
    )?;
    let postgres_ready = t0.elapsed();
    stack.run(&["up", "-d", "--no-deps", "network-init"])?;
    let code = podman.output(&["wait", &Stack::container("network-init")])?;
    if code.trim() != "0" {
        bail!(
            "network-init exited with status {}; see {}",
            code.trim(),
            log_dir
                .join(format!("{}.log", Stack::container("network-init")))
                .display()
        );
    }
    stack.run(&["up", "-d", "--no-deps", "server-1", "server-2"])?;
    wait_for(
        "server-1 to pass its health check",
        Duration::from_secs(120),
        || stack.healthy("server-1"),
    )?;
    stack.run(&["up", "-d", "--no-deps", "broker-1", "broker-2", "swp-auth"])?;
    // network-init has finished: server-1's volume holds the device CA.
    let ca = log_dir.join("ca.pem");
    let mount = podman
        .output(&[
            "volume",
            "inspect",
            "--format",
            "{{.Mountpoint}}",
            &format!("{PROJECT}_server-1-data"),
        ])?
        .trim()
        .to_owned();
    std::fs::copy(Path::new(&mount).join("tls/ca.pem"), &ca)
        .context("the device CA of server-1")?;
    // The brokers join the network and learn the servers from its watch stream; the first
    // device that gets through marks the stack as started.
    wait_for(
        "the first device check-in through broker-1",
        Duration::from_secs(120),
        || devsim(BROKER_1, &ca, 1, 1).is_ok_and(|r| r["ok"] == 1),
    )?;
    let first_checkin = t0.elapsed();
    step!(
        "compose ha profile: first device checked in {:.1} s after `up` began",
        first_checkin.as_secs_f64()
    );
    for service in ["server-1", "server-2", "broker-1", "broker-2", "swp-auth"] {
        wait_for(
            &format!("{service} to pass its health check"),
            Duration::from_secs(120),
            || stack.healthy(service),
        )?;
    }

    devices_work("broker-1", BROKER_1, &ca, devices)?;
    let totals = broker_totals(addr(21, 9102))?;
    step!("broker-1 connections per server: {totals:?}");
    for server in ["127.0.0.11:30002", "127.0.0.12:30002"] {
        if !totals.iter().any(|(s, n)| s == server && *n > 0) {
            bail!("broker-1 sent no device to {server}: {totals:?}");
        }
    }

    // What the services hold after 1,000 devices: the basis of the Kubernetes requests.
    for service in [
        "server-1", "server-2", "broker-1", "broker-2", "swp-auth", "postgres",
    ] {
        step!(
            "  {service}: {}",
            memory(podman, &Stack::container(service))
        );
    }

    step!("stopping the server-1 container");
    let stopped = Instant::now();
    podman.output(&["stop", "--time", "20", &Stack::container("server-1")])?;
    step!(
        "server-1 stopped in {:.1} s",
        stopped.elapsed().as_secs_f64()
    );
    devices_work("broker-2 with server-1 stopped", BROKER_2, &ca, devices)?;
    devices_work(
        "broker-1 with server-1 stopped",
        BROKER_1,
        &ca,
        devices / 10,
    )?;

    drop(stack);
    let after = Inventory::take(podman)?;
    if after != before {
        bail!(
            "the compose stack left something behind:\n  before: {before:?}\n  after:  {after:?}"
        );
    }
    step!("compose stack down: no container, volume, network or pod left");
    Ok(ComposeReport {
        postgres_ready,
        first_checkin,
    })
}

/// The manifests of `deploy/kubernetes` against the schemas, then the server pod under
/// `podman kube play`.
fn kubernetes(podman: &Podman) -> anyhow::Result<()> {
    let dir = util::workspace_root().join("deploy/kubernetes");
    let mut files = crate::kube::manifest_files(&dir)?;
    // Applied by hand during an upgrade, not by the kustomization.
    files.push(dir.join("upgrade/migrate.yaml"));
    crate::kube::validate(podman, &dir, &files)?;
    let before = Inventory::take(podman)?;
    let smoke = crate::kube::smoke(podman, &dir, SMOKE_IP);
    // `podman kube play` creates its default network even for a pod on the host's network,
    // and `kube down` keeps it: remove it when this test created it.
    if !before.networks.iter().any(|n| n == KUBE_NETWORK)
        && let Err(e) = podman.output(&["network", "rm", KUBE_NETWORK])
    {
        step!("could not remove {KUBE_NETWORK}: {e:#}");
    }
    smoke?;
    let after = Inventory::take(podman)?;
    if after != before {
        bail!("podman kube down left something behind:\n  before: {before:?}\n  after:  {after:?}");
    }
    Ok(())
}
