//! Podman, podman-compose and the Python tools the deployment tests use, installed when
//! missing: Podman from the Debian packages (with runc, since crun fails on some kernels), the
//! Python tools in a virtual environment of their own under `target/tools`.
//!
//! Every podman command runs with `CONTAINERS_CONF` pointing at a configuration written here
//! (runc, the cgroupfs manager, events to a file, ulimits within this process's own), so no
//! file of the machine's is changed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::util::{self, step};

/// The Python tools, pinned: the validators of the Kubernetes manifests and podman-compose.
pub const PY_TOOLS: [&str; 3] = [
    "kubernetes-validate==1.37.0",
    "check-jsonschema==0.39.0",
    "podman-compose==1.6.0",
];

/// Podman and the tools, ready to use.
#[derive(Debug, Clone)]
pub struct Podman {
    conf: PathBuf,
    venv: PathBuf,
}

impl Podman {
    /// Installs what is missing and writes the configuration; fails with a clear message when
    /// podman cannot run a container here.
    pub fn ensure() -> anyhow::Result<Podman> {
        ensure_debian_packages()?;
        let dir = util::target_dir().join("tools");
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let conf = dir.join("containers.conf");
        std::fs::write(&conf, containers_conf())
            .with_context(|| format!("write {}", conf.display()))?;
        let venv = ensure_python_tools(&dir.join("venv"))?;
        let podman = Podman { conf, venv };
        podman.check_runs()?;
        Ok(podman)
    }

    /// A `podman` command with this configuration.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", &self.conf);
        cmd
    }

    /// A `podman-compose` command with this configuration, on the given compose files.
    pub fn compose(&self, project: &str, files: &[PathBuf]) -> Command {
        let mut cmd = Command::new(self.venv.join("bin/podman-compose"));
        cmd.env("CONTAINERS_CONF", &self.conf)
            .env("PATH", path_with(&self.venv.join("bin")))
            .arg("--project-name")
            .arg(project);
        for f in files {
            cmd.arg("--file").arg(f);
        }
        cmd
    }

    /// A tool of the virtual environment (`kubernetes-validate`, `check-jsonschema`).
    pub fn tool(&self, name: &str) -> Command {
        Command::new(self.venv.join("bin").join(name))
    }

    /// Output of a podman command, failing with its stderr unless it succeeds.
    pub fn output(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .cmd()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("run podman")?;
        if !out.status.success() {
            bail!(
                "`podman {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `podman info`, so a machine where podman cannot work fails here, with podman's own
    /// words.
    fn check_runs(&self) -> anyhow::Result<()> {
        let info = self
            .output(&[
                "info",
                "--format",
                "{{.Host.OCIRuntime.Name}} {{.Host.CgroupManager}} {{.Store.GraphDriverName}}",
            ])
            .context("podman cannot run on this machine")?;
        step!("podman: runtime, cgroup manager, storage: {}", info.trim());
        Ok(())
    }
}

/// `PATH` with `dir` first.
fn path_with(dir: &Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_path_buf()];
    if let Some(p) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(paths).unwrap_or_else(|_| dir.as_os_str().to_owned())
}

/// The podman configuration of the tests: runc and cgroupfs (crun and the systemd manager fail
/// on machines without a systemd session), events to a file, and ulimits no higher than this
/// process's hard limits (podman's defaults ask for more, which fails without
/// CAP_SYS_RESOURCE).
fn containers_conf() -> String {
    use nix::sys::resource::{Resource, getrlimit};
    let nofile = getrlimit(Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard.min(1 << 20))
        .unwrap_or(1024);
    // The container's limit on processes counts every process of the user on the host.
    let nproc = getrlimit(Resource::RLIMIT_NPROC)
        .map(|(_, hard)| hard.min(16384))
        .unwrap_or(4096);
    format!(
        r#"# Written by cargo xtask: podman for the deployment tests.
[containers]
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"#
    )
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Podman, runc and catatonit (the pause process of `podman kube play` pods) from the Debian
/// packages.
fn ensure_debian_packages() -> anyhow::Result<()> {
    let all = || have("podman") && have("runc") && have("catatonit");
    if all() {
        step!("podman, runc and catatonit found");
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "podman, runc and catatonit are needed for the deployment tests; install them (e.g. `sudo apt-get install podman runc catatonit`)"
        );
    }
    step!("podman, runc or catatonit not found; installing them with apt-get");
    util::apt_install(&["podman", "runc", "catatonit", "uidmap"])?;
    if !all() {
        bail!("podman, runc and catatonit were installed but do not run");
    }
    Ok(())
}

/// The pinned Python tools in `venv`, installed with pip when the set differs.
fn ensure_python_tools(venv: &Path) -> anyhow::Result<PathBuf> {
    let marker = venv.join("ums-tools.txt");
    let wanted = PY_TOOLS.join("\n");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == wanted) {
        step!("python tools found in {}", util::display_path(venv));
        return Ok(venv.to_path_buf());
    }
    step!(
        "installing {} into {}",
        PY_TOOLS.join(", "),
        util::display_path(venv)
    );
    if !venv.join("bin/pip").exists() {
        let python = ["python3", "python"]
            .into_iter()
            .find(|p| have(p))
            .context("python3 is needed for the deployment tests' tools; install python3")?;
        util::run(Command::new(python).args(["-m", "venv"]).arg(venv)).context(
            "create a python virtual environment (Debian: apt-get install python3-venv)",
        )?;
    }
    util::run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(PY_TOOLS),
    )?;
    std::fs::write(&marker, wanted)?;
    Ok(venv.to_path_buf())
}
