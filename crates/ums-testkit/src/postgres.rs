//! A real PostgreSQL for tests: a cluster in a temporary directory run as an unprivileged user
//! ([`Postgres`]), and fresh databases for one test each ([`shared_database`]), created with
//! `psql`.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::unistd::{Gid, Uid, User};

use crate::free_port;
use crate::process::{output_text, run_captured, tail_file};

/// Environment variable naming a directory that holds the PostgreSQL server binaries.
pub const PG_BIN_DIR_ENV: &str = "UMS_PG_BIN";

/// Environment variable carrying the URL of a running server that tests may create databases on.
pub const TEST_PG_URL_ENV: &str = "UMS_TEST_PG_URL";

const SERVER_BINS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// Returns the directory holding `initdb`, `pg_ctl` and `postgres`.
///
/// Looks at `$UMS_PG_BIN` first, then every `$PATH` entry, then the newest
/// `/usr/lib/postgresql/<version>/bin`. Returns `None` when none of them has
/// all three binaries.
pub fn pg_bin_dir() -> Option<PathBuf> {
    candidate_dirs()
        .into_iter()
        .find(|dir| SERVER_BINS.iter().all(|b| is_executable(&dir.join(b))))
}

/// Returns the path of `psql`, searched like [`pg_bin_dir`].
pub fn psql_path() -> Option<PathBuf> {
    pg_bin_dir()
        .into_iter()
        .chain(candidate_dirs())
        .map(|dir| dir.join("psql"))
        .find(|p| is_executable(p))
}

fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os(PG_BIN_DIR_ENV).filter(|v| !v.is_empty()) {
        dirs.push(PathBuf::from(dir));
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    let mut versioned: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version = name
                .split('.')
                .map(|part| part.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versioned.sort_by(|a, b| b.0.cmp(&a.0));
    dirs.extend(versioned.into_iter().map(|(_, dir)| dir));
    dirs
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The account the cluster runs as: `None` means the current user.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: Uid,
    gid: Gid,
}

impl RunAs {
    /// When running as root, picks `postgres` (or `nobody`), since initdb refuses root.
    fn detect() -> anyhow::Result<Option<RunAs>> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(None);
        }
        for name in ["postgres", "nobody"] {
            if let Some(user) = User::from_name(name).context("could not look up system users")? {
                return Ok(Some(RunAs {
                    uid: user.uid,
                    gid: user.gid,
                }));
            }
        }
        bail!(
            "running as root but neither a `postgres` nor a `nobody` user exists to run initdb as"
        )
    }

    fn apply(run_as: Option<RunAs>, cmd: &mut Command) {
        if let Some(r) = run_as {
            cmd.uid(r.uid.as_raw()).gid(r.gid.as_raw());
        }
    }
}

/// A PostgreSQL cluster in a temporary directory, listening on 127.0.0.1.
///
/// Authentication is `trust` and durability is switched off, so it is only fit
/// for tests and benchmarks. Dropping it stops the server and removes the
/// directory.
#[derive(Debug)]
pub struct Postgres {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    log_file: PathBuf,
    port: u16,
    run_as: Option<RunAs>,
    /// `synchronous_commit`: off for speed, on for a primary whose standby must hold every
    /// acknowledged commit.
    sync_commit: bool,
    /// Removed after the server is stopped (fields drop after `Drop::drop`).
    dir: Option<tempfile::TempDir>,
}

impl Postgres {
    /// Creates a cluster with `initdb` and starts it on a free port.
    pub fn start() -> anyhow::Result<Postgres> {
        Self::create(false)
    }

    /// Like [`Postgres::start`], with `synchronous_commit` on: once
    /// [`Postgres::start_standby`] made a standby, a commit is acknowledged only when the
    /// standby holds it, as a primary with a synchronous standby in production.
    pub fn start_primary() -> anyhow::Result<Postgres> {
        Self::create(true)
    }

    /// A streaming standby of this server (`pg_basebackup -R`), started on a free port; this
    /// server then waits for it on every commit (`synchronous_standby_names = '*'`).
    /// [`Postgres::promote`] makes it the primary.
    pub fn start_standby(&self) -> anyhow::Result<Postgres> {
        let dir = Self::temp_dir(self.run_as)?;
        let mut standby = Postgres {
            bin_dir: self.bin_dir.clone(),
            data_dir: dir.path().join("data"),
            log_file: dir.path().join("server.log"),
            port: 0,
            run_as: self.run_as,
            sync_commit: self.sync_commit,
            dir: Some(dir),
        };
        let mut cmd = standby.command("pg_basebackup");
        cmd.arg("-D")
            .arg(&standby.data_dir)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-X", "stream", "-R", "--no-sync"])
            .args(["-c", "fast"]);
        let out = run_captured(&mut cmd, "pg_basebackup")?;
        if !out.status.success() {
            bail!(
                "pg_basebackup failed ({}):\n{}",
                out.status,
                output_text(&out).trim_end()
            );
        }
        standby.start_on_a_free_port()?;
        self.sql(
            "postgres",
            "ALTER SYSTEM SET synchronous_standby_names = '*'",
        )?;
        self.sql("postgres", "SELECT pg_reload_conf()")?;
        Ok(standby)
    }

    /// Promotes a standby to primary and waits until it accepts writes.
    pub fn promote(&self) -> anyhow::Result<()> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-w", "-t", "30", "promote"]);
        let out = run_captured(&mut cmd, "pg_ctl promote")?;
        if !out.status.success() {
            bail!(
                "pg_ctl promote failed ({}): {}",
                out.status,
                output_text(&out).trim()
            );
        }
        Ok(())
    }

    /// Stops the server the way a crash does (`immediate`: no checkpoint, every client cut).
    pub fn crash(&self) -> anyhow::Result<()> {
        self.pg_ctl_stop("immediate")
    }

    /// Runs one SQL command on `database` as the superuser; its output (`psql -At`).
    pub fn sql(&self, database: &str, sql: &str) -> anyhow::Result<String> {
        let target = ServerAddr {
            host: "127.0.0.1".to_owned(),
            port: self.port,
            user: "postgres".to_owned(),
            password: None,
        };
        psql(&target, database, sql)
    }

    fn temp_dir(run_as: Option<RunAs>) -> anyhow::Result<tempfile::TempDir> {
        // A top-level directory under /tmp, readable and traversable by the
        // account that runs the server even when we are root.
        let base = if run_as.is_some() {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("ums-pg-")
            .tempdir_in(&base)
            .with_context(|| {
                format!(
                    "could not create a temporary directory in {}",
                    base.display()
                )
            })?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .context("could not set permissions on the temporary directory")?;
        if let Some(r) = run_as {
            nix::unistd::chown(dir.path(), Some(r.uid), Some(r.gid)).with_context(|| {
                format!("could not hand {} to uid {}", dir.path().display(), r.uid)
            })?;
        }
        Ok(dir)
    }

    fn create(sync_commit: bool) -> anyhow::Result<Postgres> {
        let bin_dir = pg_bin_dir().with_context(|| {
            format!(
                "postgresql server binaries (initdb, pg_ctl, postgres) not found in ${PG_BIN_DIR_ENV}, $PATH or /usr/lib/postgresql/*/bin; install the `postgresql` package"
            )
        })?;
        let run_as = RunAs::detect()?;
        let dir = Self::temp_dir(run_as)?;
        let data_dir = dir.path().join("data");
        let log_file = dir.path().join("server.log");
        let mut pg = Postgres {
            bin_dir,
            data_dir,
            log_file,
            port: 0,
            run_as,
            sync_commit,
            dir: Some(dir),
        };
        pg.initdb()?;
        pg.start_on_a_free_port()?;
        Ok(pg)
    }

    fn start_on_a_free_port(&mut self) -> anyhow::Result<()> {
        // The port is picked before the server binds it, so another process
        // may grab it in between: retry a few times with a fresh one.
        let mut last_err = None;
        for _ in 0..3 {
            self.port = free_port();
            match self.pg_ctl_start() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let log = self.log_tail(40);
                    let retry = log.contains("could not bind") || log.contains("already in use");
                    last_err = Some(e);
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("postgresql did not start")))
    }

    /// The TCP port the server listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of the default `postgres` database, as the `postgres` superuser.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Creates a new empty database and returns its URL.
    ///
    /// `name` must match `[a-z0-9_]{1,60}`.
    pub fn create_database(&self, name: &str) -> anyhow::Result<String> {
        let target = ServerAddr {
            host: "127.0.0.1".to_owned(),
            port: self.port,
            user: "postgres".to_owned(),
            password: None,
        };
        create_database_on(&target, name)
    }

    fn command(&self, program: &str) -> Command {
        // A directory of links to the server binaries (such as /usr/local/bin) may lack the
        // other tools: they sit beside the real `pg_ctl`.
        let mut path = self.bin_dir.join(program);
        if !is_executable(&path)
            && let Ok(real) = fs::canonicalize(self.bin_dir.join("pg_ctl"))
            && let Some(dir) = real.parent()
        {
            path = dir.join(program);
        }
        let mut cmd = Command::new(path);
        RunAs::apply(self.run_as, &mut cmd);
        if let Some(dir) = &self.dir {
            // The caller's working directory may not be readable by the server account.
            cmd.current_dir(dir.path());
        }
        cmd.env("LC_ALL", "C").stdin(Stdio::null());
        cmd
    }

    fn initdb(&self) -> anyhow::Result<()> {
        let mut cmd = self.command("initdb");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .arg("--locale=C");
        let out = run_captured(&mut cmd, "initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed ({}):\n{}",
                out.status,
                output_text(&out).trim_end()
            );
        }
        Ok(())
    }

    fn pg_ctl_start(&self) -> anyhow::Result<()> {
        let socket_dir = self
            .dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/tmp"));
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c synchronous_commit={} -c full_page_writes=off -c max_connections=300",
            self.port,
            shell_quote(socket_dir.as_os_str()),
            if self.sync_commit { "on" } else { "off" },
        );
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_file)
            .arg("-o")
            .arg(opts)
            .args(["-w", "-t", "60", "start"]);
        let out = run_captured(&mut cmd, "pg_ctl start")?;
        if !out.status.success() {
            bail!(
                "postgresql did not start on port {} ({}):\n{}\nserver log ({}):\n{}",
                self.port,
                out.status,
                output_text(&out).trim_end(),
                self.log_file.display(),
                self.log_tail(30)
            );
        }
        Ok(())
    }

    fn stop(&self) -> anyhow::Result<()> {
        self.pg_ctl_stop("immediate")
    }

    fn pg_ctl_stop(&self, mode: &str) -> anyhow::Result<()> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-m", mode, "-w", "-t", "30", "stop"]);
        let out = run_captured(&mut cmd, "pg_ctl stop")?;
        if !out.status.success() {
            bail!(
                "pg_ctl stop failed ({}): {}",
                out.status,
                output_text(&out).trim()
            );
        }
        Ok(())
    }

    /// Stops the server (fast shutdown: clients are disconnected at once) and keeps its data,
    /// for tests of a database that restarts; [`Postgres::resume`] starts it again on the same
    /// port.
    pub fn stop_now(&self) -> anyhow::Result<()> {
        self.pg_ctl_stop("fast")
    }

    /// Starts a stopped server again on its port.
    pub fn resume(&self) -> anyhow::Result<()> {
        self.pg_ctl_start()
    }

    /// The last `lines` lines of the server log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail_file(&self.log_file, lines)
    }

    /// Hands the cluster over to a detached guard process that stops it and
    /// removes its directory once the returned pipe is closed, which happens
    /// at the latest when this process exits. Used for per-process clusters
    /// held in a `static`, which is never dropped.
    fn detach_to_guard(mut self) -> anyhow::Result<(Postgres, ChildStdin)> {
        let dir = self
            .dir
            .take()
            .context("cluster has no temporary directory")?
            .keep();
        let script = format!(
            "cat >/dev/null; {} -D {} -m immediate -w -t 30 stop >/dev/null 2>&1; rm -rf {}",
            shell_quote(self.bin_dir.join("pg_ctl").as_os_str()),
            shell_quote(self.data_dir.as_os_str()),
            shell_quote(dir.as_os_str()),
        );
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(script)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Own process group: not killed along with the test's group.
            .process_group(0);
        RunAs::apply(self.run_as, &mut cmd);
        let spawned = cmd.spawn();
        // From here on the directory is owned by the guard (or leaked if it failed).
        self.dir = None;
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let _ = self.stop();
                let _ = fs::remove_dir_all(&dir);
                return Err(e).context("could not spawn the cleanup guard for postgresql");
            }
        };
        let stdin = child
            .stdin
            .take()
            .context("cleanup guard has no stdin pipe")?;
        // Marks the struct as already handled so `Drop` does not stop the server.
        let pg = Postgres {
            bin_dir: self.bin_dir.clone(),
            data_dir: self.data_dir.clone(),
            log_file: self.log_file.clone(),
            port: self.port,
            run_as: self.run_as,
            sync_commit: self.sync_commit,
            dir: None,
        };
        std::mem::forget(self);
        Ok((pg, stdin))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.dir.is_none() {
            // Owned by a cleanup guard (see `detach_to_guard`).
            return;
        }
        if !self.data_dir.join("postmaster.pid").exists() {
            // Stopped already (crashed or stopped by the test).
            return;
        }
        if let Err(e) = self.stop() {
            eprintln!("warning: {e:#}");
        }
    }
}

/// Creates a fresh database for one test and returns its URL.
///
/// With `UMS_TEST_PG_URL` set (as `cargo xtask test` does), the database is
/// created on that server. Otherwise one [`Postgres`] is started per process
/// on first use; it is stopped and removed by a guard process once this
/// process exits. The database is named `<prefix>_<pid>_<counter>`.
pub fn shared_database(name_prefix: &str) -> anyhow::Result<String> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut prefix: String = name_prefix
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .collect();
    prefix.truncate(40);
    if prefix.is_empty() {
        prefix.push_str("test");
    }
    let name = format!(
        "{prefix}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );

    if let Some(url) = std::env::var(TEST_PG_URL_ENV)
        .ok()
        .filter(|u| !u.is_empty())
    {
        let server =
            ServerAddr::parse(&url).with_context(|| format!("invalid {TEST_PG_URL_ENV}"))?;
        return create_database_on(&server, &name);
    }

    let pg = process_postgres()?;
    pg.create_database(&name)
}

/// The per-process cluster behind [`shared_database`].
fn process_postgres() -> anyhow::Result<&'static Postgres> {
    struct Shared {
        pg: Postgres,
        // Kept open for the life of the process; closing it triggers the cleanup.
        _guard: ChildStdin,
    }
    static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();
    let shared = SHARED.get_or_init(|| {
        Postgres::start()
            .and_then(Postgres::detach_to_guard)
            .map(|(pg, guard)| Shared { pg, _guard: guard })
            .map_err(|e| format!("{e:#}"))
    });
    match shared {
        Ok(s) => Ok(&s.pg),
        Err(e) => bail!("could not start the per-process postgresql: {e}"),
    }
}

/// Where to reach a server with `psql`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServerAddr {
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
}

impl ServerAddr {
    /// Parses `postgres://[user[:password]@]host[:port][/db][?params]`.
    fn parse(url: &str) -> anyhow::Result<ServerAddr> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .context("url must start with postgres:// or postgresql://")?;
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (user.to_owned(), Some(pass.to_owned())),
                None => (u.to_owned(), None),
            },
            None => ("postgres".to_owned(), None),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').context("unterminated ipv6 address")?;
            (h.to_owned(), after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (hostport.to_owned(), None),
            }
        };
        let port = match port {
            Some(p) => p.parse().with_context(|| format!("invalid port {p:?}"))?,
            None => 5432,
        };
        if host.is_empty() {
            bail!("url has no host");
        }
        Ok(ServerAddr {
            host,
            port,
            user: if user.is_empty() {
                "postgres".to_owned()
            } else {
                user
            },
            password,
        })
    }

    fn url(&self, database: &str) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match &self.password {
            Some(p) => format!(
                "postgres://{}:{p}@{host}:{}/{database}",
                self.user, self.port
            ),
            None => format!("postgres://{}@{host}:{}/{database}", self.user, self.port),
        }
    }
}

fn validate_db_name(name: &str) -> anyhow::Result<()> {
    let ok = (1..=60).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !ok {
        bail!("invalid database name {name:?}: expected 1 to 60 characters of [a-z0-9_]");
    }
    Ok(())
}

fn create_database_on(server: &ServerAddr, name: &str) -> anyhow::Result<String> {
    validate_db_name(name)?;
    let sql = format!("CREATE DATABASE \"{name}\"");
    psql(server, "postgres", &sql).with_context(|| format!("could not create database {name}"))?;
    Ok(server.url(name))
}

/// Runs one SQL command with `psql` and returns its standard output.
fn psql(server: &ServerAddr, database: &str, sql: &str) -> anyhow::Result<String> {
    let psql = psql_path().with_context(|| {
        format!("psql not found in ${PG_BIN_DIR_ENV}, $PATH or /usr/lib/postgresql/*/bin; install the `postgresql-client` package")
    })?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut cmd = Command::new(&psql);
        cmd.args(["-X", "-q", "-A", "-t", "-h", &server.host])
            .args(["-p", &server.port.to_string()])
            .args(["-U", &server.user, "-d", database])
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null());
        match &server.password {
            Some(p) => cmd.env("PGPASSWORD", p),
            None => cmd.env_remove("PGPASSWORD"),
        };
        let out = run_captured(&mut cmd, "psql")?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let text = output_text(&out);
        // CREATE DATABASE fails when another session happens to use the template.
        if attempt < 5 && text.contains("is being accessed by other users") {
            std::thread::sleep(Duration::from_millis(200 * attempt));
            continue;
        }
        bail!("psql failed ({}): {}", out.status, text.trim());
    }
}

/// Quotes a string for `/bin/sh`.
fn shell_quote(s: &OsStr) -> String {
    format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr, TcpStream};

    use super::*;

    fn psql_select_one(url: &str) -> anyhow::Result<String> {
        let server = ServerAddr::parse(url)?;
        let db = url
            .rsplit('/')
            .next()
            .context("url has no database")?
            .to_owned();
        psql(&server, &db, "select 1")
    }

    #[test]
    fn postgres_lifecycle() -> anyhow::Result<()> {
        let pg = Postgres::start()?;
        let port = pg.port();
        assert_eq!(
            pg.url(),
            format!("postgres://postgres@127.0.0.1:{port}/postgres")
        );
        let a = pg.create_database("alpha_1")?;
        let b = pg.create_database("beta_2")?;
        assert_eq!(a, format!("postgres://postgres@127.0.0.1:{port}/alpha_1"));
        for url in [&a, &b, &pg.url()] {
            let out = psql_select_one(url)?;
            assert!(out.contains('1'), "unexpected psql output: {out}");
        }
        assert!(pg.create_database("alpha_1").is_err(), "duplicate database");
        assert!(pg.create_database("Bad-Name").is_err());
        let dir = pg.data_dir().parent().map(Path::to_path_buf);
        drop(pg);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        assert!(
            TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
            "server still accepts connections after drop"
        );
        if let Some(dir) = dir {
            assert!(!dir.exists(), "{} not removed", dir.display());
        }
        Ok(())
    }

    #[test]
    fn shared_database_creates_distinct_databases() -> anyhow::Result<()> {
        let a = shared_database("Kit-Shared")?;
        let b = shared_database("kit_shared")?;
        assert_ne!(a, b);
        assert!(a.contains(&format!("/kit_shared_{}_", std::process::id())));
        psql_select_one(&a)?;
        psql_select_one(&b)?;
        Ok(())
    }

    #[test]
    fn parses_server_urls() -> anyhow::Result<()> {
        let s = ServerAddr::parse("postgres://postgres@127.0.0.1:5555/postgres")?;
        assert_eq!(s.host, "127.0.0.1");
        assert_eq!(s.port, 5555);
        assert_eq!(s.user, "postgres");
        assert_eq!(s.url("x"), "postgres://postgres@127.0.0.1:5555/x");
        let s = ServerAddr::parse("postgresql://u:p@db.example/app?sslmode=disable")?;
        assert_eq!((s.host.as_str(), s.port), ("db.example", 5432));
        assert_eq!(s.password.as_deref(), Some("p"));
        let s = ServerAddr::parse("postgres://[::1]:6000")?;
        assert_eq!((s.host.as_str(), s.port), ("::1", 6000));
        assert_eq!(s.url("d"), "postgres://postgres@[::1]:6000/d");
        assert!(ServerAddr::parse("mysql://x").is_err());
        Ok(())
    }

    #[test]
    fn database_names_are_validated() {
        assert!(validate_db_name("ok_name_1").is_ok());
        assert!(validate_db_name("").is_err());
        assert!(validate_db_name("a\"b").is_err());
        assert!(validate_db_name(&"a".repeat(61)).is_err());
    }
}
