//! Starting a real server and driving it with the real command-line tools.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ums_testkit::{ChildGuard, bin_path, free_port, wait_for_tcp};

/// A running `ums-server` process with its own data directory.
pub struct Server {
    pub child: ChildGuard,
    pub data: tempfile::TempDir,
    pub device_url: String,
    pub admin_url: String,
    pub log: PathBuf,
    pub ip: Ipv4Addr,
    /// Device, admin and internal port.
    pub ports: (u16, u16, u16),
}

impl Server {
    /// Starts a server on the embedded database, or on `database_url`.
    pub fn start(database_url: Option<&str>) -> Server {
        let data = tempfile::tempdir().expect("data dir");
        Self::start_in(data, database_url)
    }

    pub fn start_in(data: tempfile::TempDir, database_url: Option<&str>) -> Server {
        Self::start_with(data, database_url, &[])
    }

    /// Starts a server with extra environment variables (`UMS_NETWORK__MODE=ha`, ...).
    pub fn start_with(
        data: tempfile::TempDir,
        database_url: Option<&str>,
        env: &[(&str, &str)],
    ) -> Server {
        Self::start_on(Ipv4Addr::LOCALHOST, data, database_url, env)
    }

    /// Starts a server whose ports listen on `ip` (a loopback address such as 127.0.0.2).
    pub fn start_on(
        ip: Ipv4Addr,
        data: tempfile::TempDir,
        database_url: Option<&str>,
        env: &[(&str, &str)],
    ) -> Server {
        let ports = (free_port(), free_port(), free_port());
        Self::start_on_ports(ip, data, database_url, env, ports)
    }

    /// Stops this server (SIGTERM, as an administrator would) and starts it again on the same
    /// data directory and ports with `env`: a restart on another binary, as an upgrade does.
    pub fn restart(self, database_url: Option<&str>, env: &[(&str, &str)]) -> Server {
        let Server {
            mut child,
            data,
            ip,
            ports,
            ..
        } = self;
        child.stop();
        let log = data.path().join("server.log");
        let before = std::fs::read_to_string(&log).unwrap_or_default();
        std::fs::write(data.path().join("server.log.1"), before).expect("keep the log");
        Self::start_on_ports(ip, data, database_url, env, ports)
    }

    fn start_on_ports(
        ip: Ipv4Addr,
        data: tempfile::TempDir,
        database_url: Option<&str>,
        env: &[(&str, &str)],
        ports: (u16, u16, u16),
    ) -> Server {
        let (device_port, admin_port, internal_port) = ports;
        let log = data.path().join("server.log");
        let mut cmd = server_command(data.path(), device_port, admin_port, database_url);
        cmd.env("UMS_DEVICE__LISTEN", format!("{ip}:{device_port}"))
            .env("UMS_ADMIN__LISTEN", format!("{ip}:{admin_port}"))
            .env(
                "UMS_NETWORK__INTERNAL_LISTEN",
                format!("{ip}:{internal_port}"),
            );
        for (k, v) in env {
            cmd.env(k, v);
        }
        let log_file = std::fs::File::create(&log).expect("log file");
        cmd.stdout(log_file.try_clone().expect("log"))
            .stderr(log_file);
        let child = ChildGuard::new(cmd.spawn().expect("spawn ums-server"));
        let server = Server {
            child,
            data,
            device_url: format!("https://{ip}:{device_port}"),
            admin_url: format!("https://{ip}:{admin_port}"),
            log,
            ip,
            ports,
        };
        let started = Instant::now();
        let mut server = server;
        for port in [device_port, admin_port, internal_port] {
            loop {
                if wait_for_tcp((ip, port).into(), Duration::from_millis(200)).is_ok() {
                    break;
                }
                if let Ok(Some(status)) = server.child.0.try_wait() {
                    panic!(
                        "ums-server exited ({status}) before listening:\n{}",
                        server.log_text()
                    );
                }
                if started.elapsed() > Duration::from_secs(60) {
                    panic!(
                        "ums-server did not listen within {:?}:\n{}",
                        started.elapsed(),
                        server.log_text()
                    );
                }
            }
        }
        server
    }

    pub fn ca_path(&self) -> PathBuf {
        self.data.path().join("data/tls/ca.pem")
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.ca_path()).expect("ca.pem")
    }

    pub fn admin_password(&self) -> String {
        std::fs::read_to_string(self.data.path().join("data/initial-admin-password"))
            .expect("initial admin password")
            .trim()
            .to_owned()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A device client connected to this server.
    pub async fn device(&self) -> ums_devsim::DeviceClient {
        ums_devsim::DeviceClient::connect(&self.device_url, &self.ca_pem())
            .await
            .expect("connect device")
    }

    /// `umsctl` logged in as the first administrator, with its config in the data directory.
    pub fn umsctl(&self) -> Umsctl {
        self.umsctl_with_password(&self.admin_password())
    }

    /// `umsctl` logged in to this server as `admin` with the given password (the first server of
    /// a network created the account).
    pub fn umsctl_with_password(&self, password: &str) -> Umsctl {
        let ctl = Umsctl {
            config: self.data.path().join("umsctl.toml"),
        };
        let out = ctl
            .command()
            .args(["init", "--server", &self.admin_url, "--ca"])
            .arg(self.ca_path())
            .args(["--user", "admin"])
            .env("UMS_PASSWORD", password)
            .output()
            .expect("umsctl init");
        assert!(out.status.success(), "umsctl init failed: {}", text(&out));
        ctl
    }
}

/// HA mode with short timings, so failures show within seconds in tests.
pub const HA_ENV: [(&str, &str); 5] = [
    ("UMS_NETWORK__MODE", "ha"),
    ("UMS_NETWORK__HEARTBEAT_MS", "250"),
    ("UMS_NETWORK__SILENT_AFTER_MS", "1500"),
    ("UMS_NETWORK__LEASE_MS", "1500"),
    ("UMS_NETWORK__POLL_MS", "500"),
];

/// The command line of a server with the given ports and database.
pub fn server_command(
    dir: &Path,
    device_port: u16,
    admin_port: u16,
    database_url: Option<&str>,
) -> Command {
    let mut cmd = Command::new(bin_path("ums-server"));
    cmd.arg("run")
        .env("UMS_DATA_DIR", dir.join("data"))
        .env("UMS_DEVICE__LISTEN", format!("127.0.0.1:{device_port}"))
        .env("UMS_ADMIN__LISTEN", format!("127.0.0.1:{admin_port}"))
        .env("UMS_LOG__LEVEL", "info")
        .env_remove("UMS_DATABASE_URL")
        .stdin(Stdio::null());
    if let Some(url) = database_url {
        cmd.env("UMS_DATABASE_URL", url);
    }
    cmd
}

/// The admin command line, with its own config file.
pub struct Umsctl {
    config: PathBuf,
}

impl Umsctl {
    fn command(&self) -> Command {
        let mut cmd = Command::new(bin_path("umsctl"));
        cmd.arg("--config")
            .arg(&self.config)
            .env_remove("UMS_SERVER")
            .env_remove("UMS_CA")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `umsctl ARGS`, expecting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().expect("run umsctl");
        assert!(
            out.status.success(),
            "umsctl {args:?} failed: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `umsctl --json ARGS`, expecting success; returns the parsed output.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("umsctl {args:?}: not JSON ({e}): {out}"))
    }

    /// Runs `umsctl ARGS` whatever its outcome.
    pub fn raw(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run umsctl")
    }

    /// Runs `umsctl ARGS` with extra environment variables, expecting success; returns stdout.
    pub fn with_env(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let mut cmd = self.command();
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run umsctl");
        assert!(
            out.status.success(),
            "umsctl {args:?} failed: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `umsctl ARGS`, expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().expect("run umsctl");
        assert!(
            !out.status.success(),
            "umsctl {args:?} should fail: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

pub fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Server {
    /// Starts a server whose device CA is `other`'s: the CA files are copied into the new data
    /// directory before the first start, so the new server issues its certificate from that CA
    /// and devices trusting one trust both.
    pub fn start_sharing_ca(other: &Server, database_url: Option<&str>) -> Server {
        let data = tempfile::tempdir().expect("data dir");
        let tls = data.path().join("data/tls");
        std::fs::create_dir_all(&tls).expect("tls dir");
        let from = other.data.path().join("data/tls");
        for file in ["ca.pem", "ca-key.pem"] {
            std::fs::copy(from.join(file), tls.join(file)).expect("copy the CA");
        }
        Self::start_in(data, database_url)
    }

    /// Starts a server of an HA network on `database_url`. With `token` (the text of a network
    /// token) it is written to the new data directory first, so the server joins the network
    /// the token belongs to; without, the server creates the network if the database has none.
    pub fn start_ha(database_url: &str, token: Option<&str>) -> Server {
        let data = tempfile::tempdir().expect("data dir");
        if let Some(token) = token {
            let dir = data.path().join("data");
            std::fs::create_dir_all(&dir).expect("data dir");
            std::fs::write(dir.join("network-token"), format!("{token}\n")).expect("token");
        }
        Self::start_with(data, Some(database_url), &HA_ENV)
    }

    /// The network token file this server wrote or read.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data.path().join("data/network-token"))
            .expect("network token")
            .trim()
            .to_owned()
    }

    /// The server's registry id.
    pub fn process_id(&self) -> String {
        std::fs::read_to_string(self.data.path().join("data/server-id"))
            .expect("server-id")
            .trim()
            .to_owned()
    }

    /// `IP:PORT` of the admin API.
    pub fn admin_addr(&self) -> String {
        self.admin_url.trim_start_matches("https://").to_owned()
    }

    /// `IP:PORT` of the device API.
    pub fn device_addr(&self) -> String {
        self.device_url.trim_start_matches("https://").to_owned()
    }
}

/// A running `ums-broker` process in front of some servers.
pub struct Broker {
    pub child: ChildGuard,
    /// Holds the log; removed on drop.
    _dir: tempfile::TempDir,
    /// `https://IP:PORT`: what devices connect to.
    pub device_url: String,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub metrics_port: u16,
    pub log: PathBuf,
}

impl Broker {
    /// Starts a broker on free loopback ports in front of `servers` (`host:port` each), with
    /// extra `UMS_` variables.
    pub fn start(servers: &[String], env: &[(&str, &str)]) -> Broker {
        Self::start_on(Ipv4Addr::LOCALHOST, servers, env)
    }

    /// Starts a broker listening on `ip` (a loopback address such as 127.0.0.2).
    pub fn start_on(ip: Ipv4Addr, servers: &[String], env: &[(&str, &str)]) -> Broker {
        let dir = tempfile::tempdir().expect("broker dir");
        let port = free_port();
        let metrics_port = free_port();
        let log = dir.path().join("broker.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(bin_path("ums-broker"));
        cmd.env("UMS_LISTEN", format!("{ip}:{port}"))
            .env("UMS_SERVERS", servers.join(","))
            .env("UMS_METRICS__LISTEN", format!("{ip}:{metrics_port}"))
            .env("UMS_LOG__LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = ChildGuard::new(cmd.spawn().expect("spawn ums-broker"));
        let mut broker = Broker {
            child,
            _dir: dir,
            device_url: format!("https://{ip}:{port}"),
            ip,
            port,
            metrics_port,
            log,
        };
        let started = Instant::now();
        for p in [port, metrics_port] {
            while wait_for_tcp((ip, p).into(), Duration::from_millis(200)).is_err() {
                if let Ok(Some(status)) = broker.child.0.try_wait() {
                    panic!("ums-broker exited ({status}):\n{}", broker.log_text());
                }
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "ums-broker did not listen:\n{}",
                    broker.log_text()
                );
            }
        }
        broker
    }

    /// Starts a broker joined to an HA network through the servers of `join` (`host:port` of
    /// their admin ports, comma-separated) with the network token in `token_file`: it follows
    /// the servers through a server's watch stream. `data` is its data directory, `id` its
    /// registry id.
    pub fn joined(join: &str, token_file: &Path, data: &Path, id: &str) -> Broker {
        Broker::start(
            &[],
            &[
                ("UMS_RATE__PER_SECOND", "0"),
                ("UMS_NETWORK__SERVERS", join),
                (
                    "UMS_NETWORK__TOKEN_FILE",
                    token_file.to_str().expect("path"),
                ),
                ("UMS_DATA_DIR", data.to_str().expect("path")),
                ("UMS_NETWORK__ID", id),
            ],
        )
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The body of `GET /metrics`.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut s =
            std::net::TcpStream::connect((self.ip, self.metrics_port)).expect("connect to metrics");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .expect("request");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("response");
        let (head, body) = text.split_once("\r\n\r\n").expect("http response");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        body.to_owned()
    }

    /// The value of one sample of `/metrics`, such as `ums_broker_server_up{server="..."}`.
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.metrics().lines().find_map(|l| {
            let (s, v) = l.rsplit_once(' ')?;
            (s == series).then(|| v.parse().ok()).flatten()
        })
    }
}

/// The body of `GET /metrics` on `127.0.0.1:port`.
pub fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let (head, body) = text.split_once("\r\n\r\n").expect("http response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// The value of one sample in a `/metrics` body, such as `ums_server_logins_total{...}`.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (s, v) = l.rsplit_once(' ')?;
        (s == series).then(|| v.parse().ok()).flatten()
    })
}

/// A running `ums-watchdog` process with its configuration written to its own directory.
pub struct Watchdog {
    pub child: ChildGuard,
    pub dir: tempfile::TempDir,
    /// Port of its internal API (mutual TLS).
    pub internal_port: u16,
    pub log: PathBuf,
}

impl Watchdog {
    /// Starts a watchdog with `config` (TOML) in `dir`; returns once it runs (its children may
    /// still be starting).
    pub fn start(dir: tempfile::TempDir, internal_port: u16, config: &str) -> Watchdog {
        let file = dir.path().join("ums-watchdog.toml");
        std::fs::write(&file, config).expect("write the watchdog config");
        let log = dir.path().join("watchdog.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(bin_path("ums-watchdog"));
        cmd.arg("--config")
            .arg(&file)
            .env_remove("UMS_CONFIG")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file);
        let child = ChildGuard::new(cmd.spawn().expect("spawn ums-watchdog"));
        Watchdog {
            child,
            dir,
            internal_port,
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Umsctl {
    /// `umsctl` with its config in `dir`, not logged in: for the commands that need no server.
    pub fn offline(dir: &Path) -> Umsctl {
        Umsctl {
            config: dir.join("umsctl.toml"),
        }
    }

    /// `umsctl` logged in to `admin_url` as the first administrator, its config in `dir`.
    pub fn login(dir: &Path, admin_url: &str, ca: &Path, password: &str) -> Umsctl {
        Self::login_as(dir, admin_url, ca, "admin", password)
    }

    /// `umsctl` logged in to `admin_url` as `user`, its config in `dir`.
    pub fn login_as(dir: &Path, admin_url: &str, ca: &Path, user: &str, password: &str) -> Umsctl {
        let ctl = Umsctl {
            config: dir.join("umsctl.toml"),
        };
        let out = ctl
            .command()
            .args(["init", "--server", admin_url, "--ca"])
            .arg(ca)
            .args(["--user", user])
            .env("UMS_PASSWORD", password)
            .output()
            .expect("umsctl init");
        assert!(out.status.success(), "umsctl init failed: {}", text(&out));
        ctl
    }
}
