//! Helpers shared by the commands: progress output, running cargo, paths.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus};

use anyhow::{Context, bail};
use nix::sys::signal::{SigSet, Signal};

/// Prints a progress line to stderr.
macro_rules! step {
    ($($arg:tt)*) => {
        eprintln!("==> {}", format_args!($($arg)*))
    };
}
pub(crate) use step;

/// Blocks SIGINT in this process; see `main`.
pub fn block_interrupt() {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    if let Err(e) = set.thread_block() {
        eprintln!("xtask: warning: could not block SIGINT: {e}");
    }
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
