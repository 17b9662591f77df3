//! `cargo xtask bench <name>`: end-to-end benchmarks against release builds.
//!
//! Each benchmark is a sibling subcommand in its own module; they share the
//! helpers here (building, starting a server, writing results).

mod broker;
mod ha;
mod herd;
mod storm;
mod swp;
mod upgrade;

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use ums_testkit::{ChildGuard, Postgres};

use crate::util::{self, step};

/// Arguments of `cargo xtask bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Thundering herd: N simulated devices register at once against a fresh server.
    Herd(herd::HerdArgs),
    /// ums-broker against a direct connection and HAProxy: device churn, then memory at 10,000
    /// idle connections.
    Broker(broker::BrokerArgs),
    /// An HA network of servers on one PostgreSQL: event propagation between servers, scheduler
    /// failover after kill -9, file replication throughput.
    Ha(ha::HaArgs),
    /// Shared Workplace logins through a server and swp-auth against a real slapd: logins per
    /// second and p99 login-to-settings latency.
    Swp(swp::SwpArgs),
    /// A connection storm: N devices (20,000 by default) connecting at once through one broker
    /// to one server; refused devices retry. Peak memory and descriptors, registrations at
    /// once and after retries.
    Storm(storm::StormArgs),
    /// A rolling upgrade of a PostgreSQL network (3 servers, 2 brokers) to the test-only next
    /// release under continuous device load: device requests served and failed, the rollout's
    /// duration, each server's restart gap.
    Upgrade(upgrade::UpgradeArgs),
}

/// Runs `cargo xtask bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.bench {
        Bench::Herd(a) => herd::run(a),
        Bench::Broker(a) => broker::run(a),
        Bench::Ha(a) => ha::run(a),
        Bench::Swp(a) => swp::run(a),
        Bench::Storm(a) => storm::run(a),
        Bench::Upgrade(a) => upgrade::run(a),
    }
    .map(|()| ExitCode::SUCCESS)
}

/// A database backend for the server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// The embedded SQLite database in the data directory.
    Sqlite,
    /// A PostgreSQL cluster started for the benchmark.
    Postgres,
}

impl Backend {
    /// The name used in results.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Builds the given packages' binaries in release mode.
pub fn build_release(packages: &[&str]) -> anyhow::Result<()> {
    let mut cmd = util::cargo();
    cmd.args(["build", "--release", "--bins"]);
    let mut all: Vec<&str> = RELEASE_PACKAGES.to_vec();
    all.extend(packages.iter().filter(|p| !RELEASE_PACKAGES.contains(p)));
    for p in all {
        cmd.args(["-p", p]);
    }
    util::run(&mut cmd)
}

/// The packages every benchmark's release build includes, whatever it runs: cargo unifies the
/// features of shared dependencies over the packages of one build, so building other sets in
/// turn would rebuild those dependencies each time.
const RELEASE_PACKAGES: [&str; 6] = [
    "ums-server",
    "ums-broker",
    "ums-watchdog",
    "swp-auth",
    "umsctl",
    "ums-devsim",
];

/// Path of a release binary.
pub fn release_bin(name: &str) -> PathBuf {
    util::profile_dir(true).join(name)
}

/// Where the databases for one backend come from.
pub enum DatabaseSource {
    /// SQLite in the server's data directory.
    Sqlite,
    /// Fresh databases on a cluster that lives as long as this value.
    Postgres(Postgres),
}

impl DatabaseSource {
    /// Prepares the backend (starts PostgreSQL if needed).
    pub fn start(backend: Backend) -> anyhow::Result<DatabaseSource> {
        match backend {
            Backend::Sqlite => Ok(DatabaseSource::Sqlite),
            Backend::Postgres => {
                step!("starting postgresql");
                let pg = Postgres::start()?;
                step!("postgresql listening on 127.0.0.1:{}", pg.port());
                Ok(DatabaseSource::Postgres(pg))
            }
        }
    }

    /// A database URL for one run, or `None` for SQLite.
    pub fn database(&self, name: &str) -> anyhow::Result<Option<String>> {
        match self {
            DatabaseSource::Sqlite => Ok(None),
            DatabaseSource::Postgres(pg) => pg.create_database(name).map(Some),
        }
    }
}

/// A release `ums-server` running on free ports with a temporary data directory.
///
/// Dropping it stops the server, then removes the directory.
pub struct Server {
    // Field order matters: the process stops before its directory goes away.
    child: ChildGuard,
    /// Address of the device (registration) listener.
    pub device_addr: SocketAddr,
    /// Address of the admin listener.
    pub admin_addr: SocketAddr,
    log: PathBuf,
    env: Vec<(String, String)>,
    bin: PathBuf,
    data: tempfile::TempDir,
}

impl Server {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the server process still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// CPU seconds (user + system) the server process has used so far, from /proc.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as f64;
        Some((utime + stime) / ticks)
    }

    /// Starts the server and waits until it accepts device connections and
    /// has written its CA certificate.
    pub fn start(database_url: Option<&str>) -> anyhow::Result<Server> {
        Self::start_with(database_url, &[], None)
    }

    /// Starts a server with extra `UMS_` variables; with `token`, the network token is written
    /// to the data directory first so the server joins that network.
    pub fn start_with(
        database_url: Option<&str>,
        env: &[(&str, &str)],
        token: Option<&str>,
    ) -> anyhow::Result<Server> {
        Self::start_from(&release_bin("ums-server"), database_url, env, token)
    }

    /// Like [`Server::start_with`], running the `ums-server` binary `bin`.
    pub fn start_from(
        bin: &Path,
        database_url: Option<&str>,
        env: &[(&str, &str)],
        token: Option<&str>,
    ) -> anyhow::Result<Server> {
        let data = tempfile::Builder::new()
            .prefix("ums-bench-")
            .tempdir()
            .context("could not create a temporary data directory")?;
        if let Some(token) = token {
            fs::write(data.path().join("network-token"), format!("{token}\n"))
                .context("could not write the network token")?;
        }
        let device_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, ums_testkit::free_port()));
        let admin_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, ums_testkit::free_port()));
        let internal_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, ums_testkit::free_port()));
        let mut all_env: Vec<(String, String)> = vec![
            ("UMS_DATA_DIR".into(), data.path().display().to_string()),
            ("UMS_DEVICE__LISTEN".into(), device_addr.to_string()),
            ("UMS_ADMIN__LISTEN".into(), admin_addr.to_string()),
            (
                "UMS_NETWORK__INTERNAL_LISTEN".into(),
                internal_addr.to_string(),
            ),
            ("UMS_LOG__LEVEL".into(), "warn".into()),
        ];
        if let Some(url) = database_url {
            all_env.push(("UMS_DATABASE_URL".into(), url.into()));
        }
        all_env.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let log = data.path().join("server.log");
        let child = spawn_server(bin, &all_env, &log)?;
        let mut server = Server {
            child,
            device_addr,
            admin_addr,
            log,
            env: all_env,
            bin: bin.to_path_buf(),
            data,
        };
        server
            .wait_ready(Duration::from_secs(60))
            .map_err(|e| anyhow::anyhow!("{e:#}; server log:\n{}", server.log_tail(30)))?;
        Ok(server)
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.0.kill().context("could not kill ums-server")?;
        let _ = self.child.0.wait();
        Ok(())
    }

    /// Starts the server again in its data directory on its ports.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.child = spawn_server(&self.bin, &self.env, &self.log)?;
        self.wait_ready(Duration::from_secs(60))
    }

    /// Stops the server as an administrator does: SIGTERM, so it drains (SIGKILL after 5 s).
    pub fn stop_gracefully(&mut self) {
        self.child.stop();
    }

    /// Starts the server again in its data directory on its ports with more variables, e.g.
    /// as another release; they stay for later restarts.
    pub fn restart_with(&mut self, env: &[(&str, &str)]) -> anyhow::Result<()> {
        for (k, v) in env {
            self.env.retain(|(key, _)| key != k);
            self.env.push(((*k).to_owned(), (*v).to_owned()));
        }
        self.restart()
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let ca = self.ca_path();
        loop {
            if let Some(st) = self.child.try_wait().context("could not poll ums-server")? {
                bail!("ums-server exited during startup ({st})");
            }
            if ums_testkit::wait_for_tcp(self.device_addr, Duration::from_millis(200)).is_ok()
                && ca.is_file()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "ums-server not ready within {timeout:?} (device port {}, {})",
                    self.device_addr,
                    ca.display()
                );
            }
        }
    }

    /// The CA certificate clients must trust.
    pub fn ca_path(&self) -> PathBuf {
        self.data.path().join("tls").join("ca.pem")
    }

    /// The `https://` URL of the device listener.
    pub fn device_url(&self) -> String {
        format!("https://{}", self.device_addr)
    }

    /// The last lines of the server's output.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops the server now, failing if it had already died.
    pub fn stop(mut self) -> anyhow::Result<()> {
        if let Some(st) = self.child.try_wait().context("could not poll ums-server")? {
            bail!(
                "ums-server exited during the run ({st}); log:\n{}",
                self.log_tail(30)
            );
        }
        self.child.stop();
        Ok(())
    }
}

fn spawn_server(bin: &Path, env: &[(String, String)], log: &Path) -> anyhow::Result<ChildGuard> {
    let log_file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("could not open {}", log.display()))?;
    let mut cmd = Command::new(bin);
    cmd.arg("run")
        .env_remove("UMS_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(
            log_file
                .try_clone()
                .context("could not open the server log")?,
        )
        .stderr(log_file);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok(ChildGuard::new(cmd.spawn().with_context(|| {
        format!("could not start {}", bin.display())
    })?))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Number of CPUs available to this process.
pub fn host_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Writes a result document to `target/bench/<name>.json` and returns its path.
pub fn write_results(name: &str, doc: &serde_json::Value) -> anyhow::Result<PathBuf> {
    let dir = util::target_dir().join("bench");
    fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    let path = dir.join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(doc).context("could not encode results")?;
    fs::write(&path, text + "\n").with_context(|| format!("could not write {}", path.display()))?;
    Ok(path)
}

/// Parses the last non-empty line of a tool's stdout as one JSON object.
pub fn last_json_line(stdout: &[u8]) -> anyhow::Result<serde_json::Value> {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .context("no output")?;
    let value: serde_json::Value = serde_json::from_str(line.trim())
        .with_context(|| format!("last output line is not json: {line}"))?;
    if !value.is_object() {
        bail!("last output line is not a json object: {line}");
    }
    Ok(value)
}

/// Prints a left-aligned text table to stderr.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    eprintln!("{}", line(header.to_vec()));
    eprintln!(
        "{}",
        line(
            widths
                .iter()
                .map(|w| "-".repeat(*w))
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str)
                .collect()
        )
    );
    for row in rows {
        eprintln!("{}", line(row.iter().map(String::as_str).collect()));
    }
}

/// Formats a number from a JSON document, or `?` when it is absent.
pub fn fmt_number(value: Option<&serde_json::Value>, decimals: usize) -> String {
    match value.and_then(serde_json::Value::as_f64) {
        Some(v) => format!("{v:.decimals$}"),
        None => "?".to_owned(),
    }
}

/// Whether `path` exists, for messages about missing builds.
pub fn ensure_exists(path: &Path) -> anyhow::Result<()> {
    if !path.is_file() {
        bail!(
            "{} does not exist; the release build did not produce it",
            path.display()
        );
    }
    Ok(())
}

/// `umsctl` with its own configuration file, logged in to one server's admin API.
pub struct Ctl {
    config: PathBuf,
    bin: PathBuf,
}

impl Ctl {
    /// Logs in to the release server `server` as `admin`.
    pub fn login_server(dir: &Path, server: &Server, password: &str) -> anyhow::Result<Ctl> {
        Self::login(
            dir,
            &release_bin("umsctl"),
            &format!("https://{}", server.admin_addr),
            &server.data_dir().join("tls/ca.pem"),
            password,
        )
    }

    /// Logs in with the `umsctl` binary `bin` to the admin API at `url`, trusting `ca`.
    pub fn login(
        dir: &Path,
        bin: &Path,
        url: &str,
        ca: &Path,
        password: &str,
    ) -> anyhow::Result<Ctl> {
        let name: String = url
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let ctl = Ctl {
            config: dir.join(format!("umsctl-{name}.toml")),
            bin: bin.to_path_buf(),
        };
        let out = ctl
            .command()
            .args(["init", "--server", url])
            .arg("--ca")
            .arg(ca)
            .args(["--user", "admin"])
            .env("UMS_PASSWORD", password)
            .output()
            .context("run umsctl init")?;
        if !out.status.success() {
            bail!(
                "umsctl init failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(ctl)
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--config").arg(&self.config).stdin(Stdio::null());
        cmd
    }

    /// Runs `umsctl --json ARGS` and parses what it prints.
    pub fn json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let out = self
            .command()
            .arg("--json")
            .args(args)
            .output()
            .context("run umsctl")?;
        if !out.status.success() {
            bail!(
                "umsctl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout).with_context(|| format!("umsctl {args:?}: not json"))
    }

    /// The scheduler's holder and the running servers.
    pub fn registry(&self) -> anyhow::Result<(Option<String>, Vec<String>)> {
        let list = self.json(&["network", "list"])?;
        let ps = list["processes"].as_array().cloned().unwrap_or_default();
        let holder = ps
            .iter()
            .find(|p| p["scheduler"] == true)
            .and_then(|p| p["id"].as_str())
            .map(str::to_owned);
        let running = ps
            .iter()
            .filter(|p| p["kind"] == "server" && p["status"] == "running")
            .filter_map(|p| p["id"].as_str().map(str::to_owned))
            .collect();
        Ok((holder, running))
    }
}
