//! Helpers shared by the commands: progress output, running cargo, paths.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::{Context, bail};
use nix::sys::signal::{SigSet, Signal};

/// Prints a progress line to stderr.
macro_rules! step {
    ($($arg:tt)*) => {
        eprintln!("==> {}", format_args!($($arg)*))
    };
}
pub(crate) use step;

/// Set by Ctrl-C (SIGINT), which the children of this process get as well.
static INTERRUPTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Lets this process outlive Ctrl-C, so it can wait for its children and clean up after them.
///
/// SIGINT is caught, not blocked or ignored: a blocked or ignored signal is inherited through
/// `exec` (a server started from here would never hear Ctrl-C), a caught one is reset to its
/// default action in every child. It is unblocked too, in case whoever started this process
/// blocked it: children inherit the mask.
pub fn outlive_interrupt() {
    let flag = INTERRUPTED.get_or_init(Arc::default).clone();
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGINT, flag) {
        eprintln!("xtask: warning: could not catch SIGINT: {e}");
        return;
    }
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    if let Err(e) = set.thread_unblock() {
        eprintln!("xtask: warning: could not unblock SIGINT: {e}");
    }
}

/// Whether Ctrl-C was pressed since [`outlive_interrupt`].
pub fn interrupted() -> bool {
    INTERRUPTED
        .get()
        .is_some_and(|flag| flag.load(Ordering::Relaxed))
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    ums_testkit::workspace_root()
}

/// The cargo target directory.
///
/// `cargo xtask` always runs `target/debug/xtask`, so it is the parent of the
/// directory holding this executable; falls back to `$CARGO_TARGET_DIR` or
/// `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    if let Ok(exe) = std::env::current_exe()
        && let Some(profile_dir) = exe.parent()
        && profile_dir.file_name() == Some(OsStr::new("debug"))
        && let Some(target) = profile_dir.parent()
    {
        return target.to_path_buf();
    }
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// The directory holding binaries built with the given profile.
pub fn profile_dir(release: bool) -> PathBuf {
    target_dir().join(if release { "release" } else { "debug" })
}

/// A path relative to the current directory when it is below it, for display.
pub fn display_path(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}

/// A `cargo` command run from the workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    // `cargo run -p xtask` sets these for xtask itself; passed on, they make build scripts that
    // read them (ring's) look changed, and every build from xtask would rebuild half the tree.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key == "CARGO_MANIFEST_DIR"
            || key == "CARGO_MANIFEST_PATH"
            || key == "CARGO_PRIMARY_PACKAGE"
            || key == "CARGO_BIN_NAME"
            || key == "CARGO_CRATE_NAME"
            || key.starts_with("CARGO_PKG_")
        {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Renders a command line for progress output.
pub fn render(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program());
    let program = if std::env::var_os("CARGO").as_deref() == Some(program.as_os_str()) {
        // The full toolchain path of cargo is noise.
        "cargo".to_owned()
    } else {
        program.display().to_string()
    };
    let mut parts = vec![program];
    parts.extend(cmd.get_args().map(|a| {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
            format!("'{}'", a.replace('\'', r"'\''"))
        } else {
            a.into_owned()
        }
    }));
    parts.join(" ")
}

/// Runs a command with inherited stdio and returns its exit status.
pub fn status(cmd: &mut Command) -> anyhow::Result<ExitStatus> {
    step!("{}", render(cmd));
    cmd.status()
        .with_context(|| format!("could not run {}", cmd.get_program().to_string_lossy()))
}

/// Installs Debian packages non-interactively: `apt-get update`, then `apt-get install -y
/// --no-install-recommends PACKAGES`.
pub fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    run(Command::new("apt-get")
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Runs a command with inherited stdio and fails unless it succeeds.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let st = status(cmd)?;
    if !st.success() {
        bail!("`{}` failed ({st})", render(cmd));
    }
    Ok(())
}

/// Converts a child's exit status into this process's exit code.
pub fn exit_code(status: ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        (None, Some(sig)) => ExitCode::from(u8::try_from(128 + sig).unwrap_or(1)),
        (None, None) => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signals set in one of the `Sig*:` masks of /proc/<pid>/status.
    fn mask(status: &str, field: &str) -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or_else(|| panic!("no {field} in {status}"))
    }

    #[test]
    fn children_get_sigint_with_its_default_action() {
        // As if whoever started us had blocked SIGINT.
        let mut set = SigSet::empty();
        set.add(Signal::SIGINT);
        set.thread_block().expect("block SIGINT");
        outlive_interrupt();
        let out = Command::new("cat")
            .arg("/proc/self/status")
            .output()
            .expect("run cat");
        let status = String::from_utf8_lossy(&out.stdout);
        let sigint = 1 << (Signal::SIGINT as u64 - 1);
        assert_eq!(mask(&status, "SigBlk:") & sigint, 0, "blocked in the child");
        assert_eq!(mask(&status, "SigIgn:") & sigint, 0, "ignored in the child");
        assert!(!interrupted());
    }
}
