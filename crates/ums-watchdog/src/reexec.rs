//! The watchdog's own update: it re-executes itself (`execve`, same pid) into the new release's
//! binary and its children keep running, adopted by the new image.
//!
//! * One thread forks every child and is the one that calls `execve`: the spawner. A child's
//!   parent-death signal is tied to the thread that forked it, and `execve` ends every other
//!   thread (each of their children would get SIGTERM). `ums-watchdog` makes its main thread the
//!   spawner ([`Spawner`]); a watchdog in a library user's process gets a dedicated thread.
//! * The supervisors keep a copy of each child's output pipes; before `execve` another copy
//!   of each is made without the close-on-exec flag, and [`ADOPT_VAR`] tells the new image, as JSON, each
//!   running child's id, pid, start time, restarts and pipe numbers ([`Adopted`]).
//! * The new image waits for an adopted child with `waitid` in a blocking thread: it is still
//!   this process's child, so its pid stays reserved until the watchdog reaps it.
//! * When `execve` fails, nothing changed: the extra copies are closed and the old image runs
//!   on.

use std::ffi::CString;
use std::io::Read as _;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::mpsc;

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use serde::{Deserialize, Serialize};
use tokio::process::Child;
use tokio::sync::oneshot;

use crate::Node;
use crate::supervisor::Phase;

/// The variable that hands the running children to the new image.
pub const ADOPT_VAR: &str = "UMS_WATCHDOG_ADOPT";

/// A running child handed from one image of the watchdog to the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adopted {
    /// The configured id (`server`, `broker-a`).
    pub id: String,
    pub pid: u32,
    pub started_at_ms: i64,
    pub restarts: u64,
    pub registry_id: Option<String>,
    /// Read ends of its stdout and stderr pipes (`output = "prefix"`), open in this process.
    pub output: Vec<RawFd>,
}

enum Request {
    Spawn(
        Box<tokio::process::Command>,
        tokio::runtime::Handle,
        oneshot::Sender<std::io::Result<Child>>,
    ),
    Exec(Exec, oneshot::Sender<nix::Error>),
    Quit,
}

struct Exec {
    path: CString,
    args: Vec<CString>,
    env: Vec<CString>,
}

static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();

/// The spawner's end of the channel, claimed by the thread that is to serve it.
pub struct Spawner(mpsc::Receiver<Request>);

impl Spawner {
    /// Claims the spawner for a thread that will call [`Spawner::serve`]; `None` when there
    /// is one already.
    pub fn claim() -> Option<Spawner> {
        let (tx, rx) = mpsc::channel();
        SPAWNER.set(tx).ok()?;
        Some(Spawner(rx))
    }

    /// Forks children and re-executes on the calling thread until [`quit`].
    pub fn serve(self) {
        run(&self.0);
    }
}

/// Ends [`Spawner::serve`].
pub fn quit() {
    if let Some(tx) = SPAWNER.get() {
        let _ = tx.send(Request::Quit);
    }
}

fn run(rx: &mpsc::Receiver<Request>) {
    while let Ok(req) = rx.recv() {
        match req {
            Request::Spawn(mut cmd, runtime, reply) => {
                let _entered = runtime.enter();
                let _ = reply.send(cmd.spawn());
            }
            Request::Exec(e, reply) => {
                // Returns only on failure.
                let err = match nix::unistd::execve(&e.path, &e.args, &e.env) {
                    Err(err) => err,
                    Ok(never) => match never {},
                };
                let _ = reply.send(err);
            }
            Request::Quit => return,
        }
    }
}

fn spawner() -> &'static mpsc::Sender<Request> {
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        let started = std::thread::Builder::new()
            .name("ums-spawner".into())
            .spawn(move || run(&rx));
        if let Err(e) = started {
            // Requests then fail with a clear error instead of hanging.
            tracing::error!(error = %e, "could not start the spawner thread");
        }
        tx
    })
}

fn gone() -> std::io::Error {
    std::io::Error::other("the spawner thread is gone")
}

/// Starts `cmd` on the spawner thread.
pub async fn spawn(cmd: tokio::process::Command) -> std::io::Result<Child> {
    let (tx, rx) = oneshot::channel();
    spawner()
        .send(Request::Spawn(
            Box::new(cmd),
            tokio::runtime::Handle::current(),
            tx,
        ))
        .map_err(|_| gone())?;
    rx.await.map_err(|_| gone())?
}

/// The children handed over by the previous image (empty when this image was started
/// normally). A malformed hand-over is logged and yields nothing.
pub fn handed_over() -> Vec<Adopted> {
    let Some(text) = std::env::var_os(ADOPT_VAR) else {
        return Vec::new();
    };
    match parse(&text.to_string_lossy()) {
        Ok(list) => list,
        Err(e) => {
            tracing::error!(variable = ADOPT_VAR, error = %e, "children handed over unreadable; none adopted");
            Vec::new()
        }
    }
}

/// Parses a hand-over: every pid positive, every pipe number given once.
pub fn parse(text: &str) -> Result<Vec<Adopted>, String> {
    let list: Vec<Adopted> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut fds: Vec<RawFd> = list.iter().flat_map(|a| a.output.clone()).collect();
    let n = fds.len();
    fds.sort_unstable();
    fds.dedup();
    if fds.len() != n || fds.iter().any(|&fd| fd < 0) {
        return Err("a pipe number is negative or given twice".into());
    }
    if let Some(a) = list.iter().find(|a| a.pid == 0 || a.pid > i32::MAX as u32) {
        return Err(format!("{}: pid {} is not a process id", a.id, a.pid));
    }
    Ok(list)
}

/// The release's watchdog binary when it differs from the running one: `current/bin/<this
/// binary's file name>`, resolved to its version directory.
pub fn new_binary(current: &Path) -> Result<Option<PathBuf>, String> {
    let running = Path::new("/proc/self/exe");
    let name =
        std::fs::read_link(running).map_err(|e| format!("read {}: {e}", running.display()))?;
    let Some(file) = name.file_name() else {
        return Ok(None);
    };
    // The name as it was installed, without a " (deleted)" the kernel may append.
    let file = file.to_string_lossy();
    let file = file.strip_suffix(" (deleted)").unwrap_or(&file);
    let candidate = current.join("bin").join(file);
    if !candidate.is_file() {
        return Ok(None);
    }
    let candidate = std::fs::canonicalize(&candidate)
        .map_err(|e| format!("resolve {}: {e}", candidate.display()))?;
    if same_content(running, &candidate)? {
        return Ok(None);
    }
    Ok(Some(candidate))
}

fn same_content(a: &Path, b: &Path) -> Result<bool, String> {
    let open = |p: &Path| std::fs::File::open(p).map_err(|e| format!("open {}: {e}", p.display()));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let len = |f: &std::fs::File, p: &Path| {
        f.metadata()
            .map(|m| m.len())
            .map_err(|e| format!("stat {}: {e}", p.display()))
    };
    if len(&fa, a)? != len(&fb, b)? {
        return Ok(false);
    }
    let mut ba = vec![0u8; 1 << 16];
    let mut bb = vec![0u8; 1 << 16];
    loop {
        let n = fa
            .read(&mut ba)
            .map_err(|e| format!("read {}: {e}", a.display()))?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])
            .map_err(|e| format!("read {}: {e}", b.display()))?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

fn set_cloexec(fd: impl AsFd, on: bool) -> nix::Result<()> {
    let flags = if on {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    fcntl(fd, FcntlArg::F_SETFD(flags)).map(|_| ())
}

fn cstring(bytes: &[u8]) -> Result<CString, String> {
    CString::new(bytes).map_err(|_| "an argument or variable holds a NUL byte".to_owned())
}

/// Re-executes this process into `binary` with the same arguments and environment, handing
/// every child over. Returns only on failure, which changes nothing: the children stay
/// supervised by this image.
pub async fn exec(node: &Node, binary: &Path) -> String {
    let children = node.children();
    let mut outputs = Vec::with_capacity(children.len());
    let mut list = Vec::with_capacity(children.len());
    for child in children {
        let s = child.state();
        let (Phase::Running, Some(pid)) = (s.phase, s.pid) else {
            return format!("{} is not running ({:?})", child.id, s.phase);
        };
        // Copies of the supervisor's pipes, held until execve: they stay open whatever the
        // supervisor does meanwhile.
        let out = {
            let held = child.output.lock().unwrap_or_else(|p| p.into_inner());
            match held
                .iter()
                .map(|fd| fd.try_clone())
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(o) => o,
                Err(e) => return format!("{}: copy its output pipes: {e}", child.id),
            }
        };
        list.push(Adopted {
            id: child.id.clone(),
            pid,
            started_at_ms: s.started_at_ms,
            restarts: s.restarts,
            registry_id: s.registry_id.clone(),
            output: out.iter().map(|fd| fd.as_raw_fd()).collect(),
        });
        outputs.push(out);
    }
    let handover = match serde_json::to_string(&list) {
        Ok(j) => j,
        Err(e) => return format!("hand-over: {e}"),
    };
    let req = match request(binary, &handover) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let fds: Vec<_> = outputs.iter().flat_map(|o| o.iter()).collect();
    for fd in &fds {
        if let Err(e) = set_cloexec(fd, false) {
            return format!("keep a child's output pipe open across exec: {e}");
        }
    }
    tracing::info!(binary = %binary.display(), children = %handover, "re-executing into the new watchdog binary");
    let (tx, rx) = oneshot::channel();
    let err = match spawner().send(Request::Exec(req, tx)) {
        Ok(()) => match rx.await {
            Ok(e) => format!("execve {}: {e}", binary.display()),
            Err(_) => gone().to_string(),
        },
        Err(_) => gone().to_string(),
    };
    // The copies close here; the supervisors' own pipes were never touched.
    drop(outputs);
    err
}

fn request(binary: &Path, handover: &str) -> Result<Exec, String> {
    let path = cstring(binary.as_os_str().as_bytes())?;
    let mut args = vec![path.clone()];
    for a in std::env::args_os().skip(1) {
        args.push(cstring(a.as_bytes())?);
    }
    let mut env = Vec::new();
    for (k, v) in std::env::vars_os() {
        if k == ADOPT_VAR {
            continue;
        }
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        env.push(cstring(&kv)?);
    }
    env.push(cstring(format!("{ADOPT_VAR}={handover}").as_bytes())?);
    Ok(Exec { path, args, env })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_over_is_parsed_and_a_bad_one_refused() {
        let ok = r#"[{"id":"server","pid":42,"started_at_ms":1,"restarts":0,"registry_id":null,"output":[7,8]}]"#;
        assert_eq!(parse(ok).unwrap()[0].output, [7, 8]);
        for bad in [
            "",
            "{}",
            r#"[{"id":"a","pid":0,"started_at_ms":1,"restarts":0,"registry_id":null,"output":[]}]"#,
            r#"[{"id":"a","pid":4,"started_at_ms":1,"restarts":0,"registry_id":null,"output":[7]},{"id":"b","pid":5,"started_at_ms":1,"restarts":0,"registry_id":null,"output":[7]}]"#,
            r#"[{"id":"a","pid":4,"started_at_ms":1,"restarts":0,"registry_id":null,"output":[-1]}]"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_running_binary_is_not_new_and_another_is() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let name = exe.file_name().unwrap();
        assert_eq!(new_binary(dir.path()).unwrap(), None, "no binary");
        std::fs::copy(&exe, bin.join(name)).unwrap();
        assert_eq!(new_binary(dir.path()).unwrap(), None, "the same bytes");
        let mut other = std::fs::read(&exe).unwrap();
        other.extend_from_slice(b"\nother\n");
        std::fs::write(bin.join(name), other).unwrap();
        assert_eq!(
            new_binary(dir.path()).unwrap(),
            Some(std::fs::canonicalize(bin.join(name)).unwrap())
        );
    }
}
