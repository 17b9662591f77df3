//! Child processes of tests: [`ChildGuard`], which stops a child on drop, the paths of the
//! workspace and of its built binaries, and running a command with its output captured.

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

pub(crate) fn run_captured(cmd: &mut Command, what: &str) -> anyhow::Result<Output> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.output().with_context(|| {
        format!(
            "could not run {what} ({})",
            cmd.get_program().to_string_lossy()
        )
    })
}

pub(crate) fn output_text(out: &Output) -> String {
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    s
}

pub(crate) fn tail_file(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    match fs::File::open(path) {
        Ok(mut f) => {
            let _ = f.read_to_string(&mut text);
        }
        Err(e) => return format!("(could not read {}: {e})", path.display()),
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The workspace root directory.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(Path::parent)
        .unwrap_or(manifest)
        .to_path_buf()
}

/// Path of a binary built by this workspace, next to the running executable.
///
/// Test executables live in `target/<profile>/deps`, binaries in
/// `target/<profile>`; both are handled.
///
/// # Panics
///
/// Panics with instructions when the binary has not been built.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("could not determine the current executable");
    let mut dir = exe
        .parent()
        .expect("current executable has no parent directory")
        .to_path_buf();
    if dir.file_name() == Some(OsStr::new("deps")) {
        dir.pop();
    }
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        panic!(
            "binary {} does not exist; run `cargo build --bins` (or `cargo xtask test`) first",
            path.display()
        );
    }
    path
}

/// The headless browser the HTML reports are rendered with (Debian's `chromium`), if installed.
pub fn chromium_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser"] {
        for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// The WebDriver server of Debian's Chromium (`chromedriver`, package `chromium-driver`), if
/// installed: the web console's end-to-end test drives the browser with it.
pub fn chromedriver_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("chromedriver"))
        .find(|candidate| candidate.is_file())
}

/// Owns a child process and stops it on drop: SIGTERM, up to 5 s of grace, then SIGKILL.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Wraps a spawned child.
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard(child)
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Stops the child now, as on drop; does nothing if it has already exited.
    pub fn stop(&mut self) {
        if matches!(self.0.try_wait(), Ok(Some(_))) {
            return;
        }
        let Ok(raw) = i32::try_from(self.0.id()) else {
            let _ = self.0.kill();
            let _ = self.0.wait();
            return;
        };
        // ESRCH (already gone) and other errors fall through to the wait below.
        let _ = signal::kill(Pid::from_raw(raw), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match self.0.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(25)),
            }
        }
        // `Child::kill` sends SIGKILL and tolerates an already exited child.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl From<Child> for ChildGuard {
    fn from(child: Child) -> ChildGuard {
        ChildGuard(child)
    }
}

impl std::ops::Deref for ChildGuard {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;

    #[test]
    fn child_guard_terminates() -> anyhow::Result<()> {
        let child = Command::new("sleep").arg("30").spawn()?;
        let pid = Pid::from_raw(i32::try_from(child.id())?);
        let started = Instant::now();
        drop(ChildGuard::new(child));
        assert!(started.elapsed() < Duration::from_secs(4));
        assert_eq!(signal::kill(pid, None), Err(Errno::ESRCH));
        // A child that ignores SIGTERM is killed after the grace period.
        // Its `sleep` grandchild outlives it, so it gets no handle on the test's output.
        let child = Command::new("sh")
            .args(["-c", "trap '' TERM; sleep 30"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let pid = Pid::from_raw(i32::try_from(child.id())?);
        std::thread::sleep(Duration::from_millis(200));
        drop(ChildGuard::new(child));
        assert_eq!(signal::kill(pid, None), Err(Errno::ESRCH));
        Ok(())
    }

    #[test]
    fn workspace_root_has_manifest() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        assert!(workspace_root().join("xtask").is_dir());
    }
}
