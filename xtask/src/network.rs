//! `cargo xtask network`: a local HA network on this machine. PostgreSQL in a temporary
//! directory, and two nodes, each a `ums-watchdog` supervising a `ums-server` and a `ums-broker`:
//! node 1 on 127.0.0.1, node 2 on 127.0.0.2, both on the standard ports. Ctrl-C stops everything.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::util::{self, step};

/// Arguments of `cargo xtask network`.
#[derive(Debug, Args)]
pub struct NetworkArgs {
    /// Where the nodes keep their configuration, data and logs (emptied first)
    /// [default: .ums/network under the workspace root].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Build and run release binaries.
    #[arg(long)]
    release: bool,
}

/// The ports of one node, on its own loopback address.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ports {
    pub broker: u16,
    pub device: u16,
    pub admin: u16,
    pub internal: u16,
    pub watchdog: u16,
    pub metrics: u16,
    pub swp: u16,
}

impl Ports {
    /// The standard ports every node of `cargo xtask network` uses.
    pub const STANDARD: Ports = Ports {
        broker: 30001,
        device: 30002,
        admin: 8443,
        internal: 61616,
        watchdog: 61618,
        metrics: 9102,
        swp: 61617,
    };

    /// Ports that were free a moment ago, for a network that must not clash with another.
    pub fn free() -> Ports {
        let p = ums_testkit::free_port;
        Ports {
            broker: p(),
            device: p(),
            admin: p(),
            internal: p(),
            watchdog: p(),
            metrics: p(),
            swp: p(),
        }
    }
}

/// One node: its loopback address, directory, ports and which processes its watchdog runs
/// (always a server; a broker and swp-auth when asked).
pub(crate) struct Node {
    pub n: u8,
    pub ip: Ipv4Addr,
    pub dir: PathBuf,
    pub ports: Ports,
    pub broker: bool,
    pub swp_auth: bool,
    /// TOML appended to the server's configuration.
    pub server_extra: String,
}

impl Node {
    /// Node `n` of `cargo xtask network`: 127.0.0.n, standard ports, server and broker.
    pub fn new(root: &Path, n: u8) -> Node {
        Node {
            n,
            ip: Ipv4Addr::new(127, 0, 0, n),
            dir: root.join(format!("node{n}")),
            ports: Ports::STANDARD,
            broker: true,
            swp_auth: false,
            server_extra: String::new(),
        }
    }

    pub fn server_dir(&self) -> PathBuf {
        self.dir.join("server")
    }

    pub fn token_file(&self) -> PathBuf {
        self.server_dir().join("network-token")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("watchdog.log")
    }

    pub fn broker_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.ports.broker))
    }

    pub fn device_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.ports.device))
    }

    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.ports.admin))
    }

    pub fn swp_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.ports.swp))
    }

    /// Writes the node's configuration files.
    pub fn write_config(&self, nodes: &[Node], db_url: &str, bins: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("create {}", self.dir.display()))?;
        let ip = self.ip;
        let ports = self.ports;
        let q = |p: &Path| toml_string(&p.display().to_string());
        let server = format!(
            r#"# ums-server of node {n} (written by cargo xtask)
data_dir = {data}
database_url = {db}

[device]
listen = "{ip}:{device}"
behind_broker = true
# Devices reach the network through any broker, and each broker sends them to any server:
# every server's certificate names every broker's address.
names = [{broker_names}]

[admin]
listen = "{ip}:{admin}"

[tls]
names = ["{ip}", "localhost"]

[network]
mode = "ha"
internal_listen = "{ip}:{internal}"
advertise_host = "{ip}"
{extra}"#,
            n = self.n,
            data = q(&self.server_dir()),
            db = toml_string(db_url),
            device = ports.device,
            admin = ports.admin,
            internal = ports.internal,
            broker_names = nodes
                .iter()
                .filter(|o| o.broker)
                .map(|o| format!("\"{}\"", o.ip))
                .collect::<Vec<_>>()
                .join(", "),
            extra = self.server_extra,
        );
        let all_devices: Vec<String> = nodes
            .iter()
            .map(|o| format!("\"{}\"", o.device_addr()))
            .collect();
        let broker = format!(
            r#"# ums-broker of node {n} (written by cargo xtask)
listen = "{ip}:{broker}"
servers = [{servers}]
drain_timeout_s = 2

[rate]
# Every simulated device connects from one loopback address: no per-address rate limit.
per_second = 0

[metrics]
listen = "{ip}:{metrics}"
"#,
            n = self.n,
            broker = ports.broker,
            metrics = ports.metrics,
            servers = all_devices.join(", "),
        );
        let all_admin: Vec<String> = std::iter::once(self)
            .chain(nodes.iter().filter(|o| o.n != self.n))
            .map(|o| format!("\"{}\"", o.admin_addr()))
            .collect();
        let swp = format!(
            r#"# swp-auth of node {n} (written by cargo xtask)
data_dir = {data}

[internal]
listen = "{ip}:{swp}"

[network]
id = "swp-auth-node{n}"
advertise_host = "{ip}"
servers = [{servers}]
token_file = {token}
"#,
            n = self.n,
            data = q(&self.dir.join("swp-auth")),
            swp = ports.swp,
            servers = all_admin.join(", "),
            token = q(&self.token_file()),
        );
        let swp_child = if self.swp_auth {
            format!(
                r#"
[swp_auth]
enabled = true
id = "swp-auth-node{n}"
binary = {bin}
config = {cfg}
ready_addr = "{ip}:{swp}"
stop_timeout_ms = 5000
"#,
                n = self.n,
                bin = q(&bins.join("swp-auth")),
                cfg = q(&self.dir.join("swp-auth.toml")),
                swp = ports.swp,
            )
        } else {
            String::new()
        };
        let watchdog = format!(
            r#"# ums-watchdog of node {n} (written by cargo xtask)
data_dir = {data}
internal_listen = "{ip}:{watchdog}"

[network]
id = "watchdog-node{n}"
advertise_host = "{ip}"
servers = [{servers}]
token_file = {token}

[server]
enabled = true
binary = {server_bin}
args = ["run"]
config = {server_cfg}
id_file = {server_id}
ready_addr = "{ip}:{admin}"
stop_timeout_ms = 10000

[broker]
enabled = {broker_enabled}
id = "broker-node{n}"
binary = {broker_bin}
config = {broker_cfg}
ready_addr = "{ip}:{broker}"
stop_timeout_ms = 5000
{swp_child}"#,
            n = self.n,
            data = q(&self.dir.join("watchdog")),
            watchdog = ports.watchdog,
            admin = ports.admin,
            broker = ports.broker,
            broker_enabled = self.broker,
            servers = all_admin.join(", "),
            token = q(&self.token_file()),
            server_bin = q(&bins.join("ums-server")),
            server_cfg = q(&self.dir.join("ums-server.toml")),
            server_id = q(&self.server_dir().join("server-id")),
            broker_bin = q(&bins.join("ums-broker")),
            broker_cfg = q(&self.dir.join("ums-broker.toml")),
        );
        let mut files = vec![
            ("ums-server.toml", server),
            ("ums-broker.toml", broker),
            ("ums-watchdog.toml", watchdog),
        ];
        if self.swp_auth {
            files.push(("swp-auth.toml", swp));
        }
        for (name, text) in files {
            let path = self.dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        }
        Ok(())
    }

    /// Starts the node's watchdog, its output appended to the node's `watchdog.log`.
    pub fn start(&self, bins: &Path) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .with_context(|| format!("open {}", self.log().display()))?;
        let mut cmd = Command::new(bins.join("ums-watchdog"));
        cmd.arg("--config")
            .arg(self.dir.join("ums-watchdog.toml"))
            .env_remove("UMS_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Other UMS_ variables of this shell would configure the watchdog.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("UMS_") {
                cmd.env_remove(&key);
            }
        }
        step!("node {}: {}", self.n, util::render(&cmd));
        cmd.spawn().context("start ums-watchdog")
    }

    /// Copies the network token of `from` (the node that created the network) into this
    /// node's server directory, mode 0600, before its first start.
    pub fn copy_token_from(&self, from: &Node) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(self.server_dir())?;
        std::fs::set_permissions(self.server_dir(), std::fs::Permissions::from_mode(0o700))?;
        std::fs::copy(from.token_file(), self.token_file())?;
        std::fs::set_permissions(self.token_file(), std::fs::Permissions::from_mode(0o600))?;
        Ok(())
    }

    /// The ports this node takes.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        let p = self.ports;
        let mut ports = vec![p.device, p.admin, p.internal, p.watchdog];
        if self.broker {
            ports.extend([p.broker, p.metrics]);
        }
        if self.swp_auth {
            ports.push(p.swp);
        }
        ports
            .into_iter()
            .map(|port| SocketAddr::from((self.ip, port)))
            .collect()
    }
}

/// The watchdogs; stopped (SIGTERM, then up to 30 s) when dropped.
struct Watchdogs(Vec<(u8, Child)>);

impl Watchdogs {
    /// The first watchdog that exited, with its status.
    fn exited(&mut self) -> Option<(u8, std::process::ExitStatus)> {
        self.0
            .iter_mut()
            .find_map(|(n, c)| c.try_wait().ok().flatten().map(|s| (*n, s)))
    }

    /// Waits until every watchdog has exited; their statuses.
    fn wait_all(&mut self) -> Vec<(u8, std::process::ExitStatus)> {
        self.0
            .iter_mut()
            .filter_map(|(n, c)| c.wait().ok().map(|s| (*n, s)))
            .collect()
    }
}

impl Drop for Watchdogs {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for (_, child) in &mut self.0 {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `cargo xtask network`.
pub fn run(args: NetworkArgs) -> anyhow::Result<ExitCode> {
    let root = match args.dir {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => std::env::current_dir()?.join(dir),
        None => util::workspace_root().join(".ums").join("network"),
    };
    let nodes = [Node::new(&root, 1), Node::new(&root, 2)];
    for addr in nodes.iter().flat_map(Node::addrs) {
        if let Err(e) = TcpListener::bind(addr) {
            bail!("{addr} is not free ({e}); is another `cargo xtask up` or `network` running?");
        }
    }

    let mut build = util::cargo();
    build.args(["build", "--bins"]);
    for p in [
        "ums-server",
        "ums-broker",
        "ums-watchdog",
        "umsctl",
        "ums-devsim",
    ] {
        build.args(["-p", p]);
    }
    if args.release {
        build.arg("--release");
    }
    util::run(&mut build)?;
    let bins = util::profile_dir(args.release);

    step!("starting PostgreSQL in a temporary directory");
    let pg = ums_testkit::Postgres::start()?;
    let db_url = pg.create_database("ums_network")?;

    if root.exists() {
        std::fs::remove_dir_all(&root).with_context(|| format!("empty {}", root.display()))?;
    }
    for node in &nodes {
        node.write_config(&nodes, &db_url, &bins)?;
    }

    // Node 1 creates the network; node 2 joins with its token, copied before its first start.
    let mut watchdogs = Watchdogs(Vec::new());
    watchdogs.0.push((1, nodes[0].start(&bins)?));
    wait_until(
        &mut watchdogs,
        &nodes,
        "node 1 to create the network token",
        || nodes[0].token_file().exists(),
    )?;
    nodes[1].copy_token_from(&nodes[0])?;
    watchdogs.0.push((2, nodes[1].start(&bins)?));
    for node in &nodes {
        let broker = node.broker_addr();
        let what = format!("node {}'s server and broker", node.n);
        wait_until(&mut watchdogs, &nodes, &what, || {
            std::net::TcpStream::connect_timeout(&broker, Duration::from_millis(200)).is_ok()
        })?;
    }

    let n1 = &nodes[0];
    let data = util::display_path(&n1.server_dir());
    let umsctl = util::display_path(&bins.join("umsctl"));
    let devsim = util::display_path(&bins.join("ums-devsim"));
    eprintln!();
    eprintln!(
        "a local HA network is running: 2 nodes, each ums-watchdog + ums-server + ums-broker"
    );
    eprintln!("  database:       {}", redact(&db_url));
    eprintln!("  network token:  {}/network-token (mode 0600)", data);
    eprintln!("  device CA:      {data}/tls/ca.pem");
    eprintln!("  devices:        https://127.0.0.1:30001 and https://127.0.0.2:30001 (brokers)");
    eprintln!(
        "  admin:          https://127.0.0.1:8443 and https://127.0.0.2:8443, user admin, password in {data}/initial-admin-password"
    );
    eprintln!(
        "  logs:           {}/node{{1,2}}/watchdog.log (server and broker lines prefixed)",
        util::display_path(&root)
    );
    eprintln!();
    eprintln!("in another terminal:");
    eprintln!(
        "  UMS_PASSWORD=$(cat {data}/initial-admin-password) {umsctl} init --server https://127.0.0.1:8443 --ca {data}/tls/ca.pem --user admin"
    );
    eprintln!("  {umsctl} network list");
    eprintln!("  {devsim} --addr https://127.0.0.2:30001 --ca {data}/tls/ca.pem --devices 1000");
    eprintln!(
        "  {umsctl} network stop <server id>   # its watchdog stops it; `network start` brings it back"
    );
    eprintln!("press Ctrl-C to stop everything");
    eprintln!();

    // Ctrl-C reaches the watchdogs (same process group); each stops its broker, then its server.
    let statuses = watchdogs.wait_all();
    let mut code = ExitCode::SUCCESS;
    for (n, status) in &statuses {
        step!("node {n}: ums-watchdog exited ({status})");
        if !status.success() {
            code = util::exit_code(*status);
        }
    }
    drop(pg);
    let left = processes_under(&root);
    if left.is_empty() {
        step!("stopped; no process left");
    } else {
        eprintln!("xtask: warning: processes still running: {left:?}");
        code = ExitCode::FAILURE;
    }
    Ok(code)
}

/// Polls `ready` every 100 ms for up to 90 s, failing early when a watchdog exits.
fn wait_until(
    watchdogs: &mut Watchdogs,
    nodes: &[Node],
    what: &str,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    step!("waiting for {what}");
    let deadline = Instant::now() + Duration::from_secs(90);
    while !ready() {
        if util::interrupted() {
            bail!("interrupted while waiting for {what}");
        }
        if let Some((n, status)) = watchdogs.exited() {
            bail!(
                "the watchdog of node {n} exited ({status}); see {}",
                nodes[usize::from(n) - 1].log().display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "gave up waiting for {what}; see the logs in {}",
                nodes[0].dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Pids of processes whose command line or environment names `dir`.
pub(crate) fn processes_under(dir: &Path) -> Vec<u32> {
    let needle = dir.as_os_str().as_encoded_bytes();
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            ["cmdline", "environ"].iter().any(|f| {
                std::fs::read(format!("/proc/{pid}/{f}"))
                    .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            })
        })
        .collect()
}

pub(crate) fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The URL without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> toml::Table {
        let text = std::fs::read_to_string(path).expect("config");
        text.parse()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Each broker sends a device to either server, so a device that trusts one broker's
    /// address must find it in every server's certificate; and the simulator's devices all
    /// come from one address, which the broker's default rate limit would refuse.
    #[test]
    fn every_server_is_valid_for_every_broker_and_no_rate_limit_refuses_the_simulator() {
        let dir = tempfile::tempdir().expect("dir");
        let nodes = [Node::new(dir.path(), 1), Node::new(dir.path(), 2)];
        for node in &nodes {
            node.write_config(&nodes, "postgres://ums@127.0.0.1/ums", Path::new("/bin"))
                .expect("write");
        }
        for node in &nodes {
            let server = read(&node.dir.join("ums-server.toml"));
            let names: Vec<&str> = server["device"]["names"]
                .as_array()
                .expect("device.names")
                .iter()
                .filter_map(|v| v.as_str())
                .collect();
            for other in &nodes {
                let broker = read(&other.dir.join("ums-broker.toml"));
                let listen = broker["listen"].as_str().expect("listen");
                let host = listen.rsplit_once(':').expect("host:port").0;
                assert!(
                    names.contains(&host),
                    "node {}'s server is not valid for broker {listen}: {names:?}",
                    node.n
                );
                assert_eq!(broker["rate"]["per_second"].as_integer(), Some(0));
            }
        }
    }
}
