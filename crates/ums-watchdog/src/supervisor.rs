//! Supervision of one child process: start, readiness, restart with backoff, stop on request,
//! shutdown.
//!
//! * The child runs in its own process group, so a signal for it reaches any helper it starts
//!   and a Ctrl-C in the watchdog's terminal does not reach it behind the watchdog's back.
//! * Pid reuse: the child is signalled only while the [`tokio::process::Child`] handle still
//!   holds it unreaped (`Child::id()` is `Some`). Until the watchdog reaps it, the kernel keeps
//!   its pid, and with it the process group id, reserved, so a signal can never reach a process
//!   that merely inherited the number.
//! * The child gets SIGTERM when the watchdog dies (parent-death signal), so a watchdog killed
//!   with SIGKILL leaves no orphan holding the ports its successor needs.
//! * Readiness: a TCP connect to `ready_addr` succeeds within `ready_timeout_ms`; a child that is
//!   not ready by then is stopped and counts as a crash.
//! * Restart: the first restart after a stable run is immediate; each further crash in a row
//!   waits `initial_backoff_ms`, doubled every time, up to `max_backoff_ms`.
//! * Stop: SIGTERM to the process group, `stop_timeout_ms` to exit, then SIGKILL to the group.
//! * Adoption: a child handed over by the watchdog's previous image (`reexec`) is supervised
//!   as if started here: it runs and is ready, its output is read from the pipes handed over,
//!   it is waited for with `waitid` (it is still this process's child, so the same pid rule
//!   holds), restarted when it ends, stopped on request and at shutdown.

use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::Child;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use ums_tls::ComponentKind;

use crate::config::{ChildConfig, Output, RestartConfig};
use crate::reexec::Adopted;

/// A child process: started here, or adopted from the previous image.
pub enum Proc {
    Spawned(Child),
    Adopted(AdoptedProc),
}

/// An adopted child: this process's child without a [`Child`] handle.
pub struct AdoptedProc {
    pid: u32,
    /// Resolves once the process has ended (not reaped yet).
    ended: Option<tokio::task::JoinHandle<()>>,
    /// Set once reaped.
    status: Option<ExitStatus>,
}

impl AdoptedProc {
    /// Adopts `pid` if it is a child of this process; `None` when it is not (any more).
    pub fn new(pid: u32) -> Option<AdoptedProc> {
        use nix::sys::wait::{Id, WaitPidFlag, waitid};
        let raw = Pid::from_raw(i32::try_from(pid).ok()?);
        // Not reaping (WNOWAIT): only whether it is ours.
        waitid(
            Id::Pid(raw),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        )
        .ok()?;
        let ended = tokio::task::spawn_blocking(move || {
            loop {
                match waitid(Id::Pid(raw), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    _ => return,
                }
            }
        });
        Some(AdoptedProc {
            pid,
            ended: Some(ended),
            status: None,
        })
    }

    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        use nix::sys::wait::{WaitStatus, waitpid};
        if let Some(s) = self.status {
            return Ok(s);
        }
        if let Some(ended) = self.ended.as_mut() {
            let _ = ended.await;
            self.ended = None;
        }
        // It has ended: reaping does not block.
        let status = match waitpid(Pid::from_raw(self.pid as i32), None) {
            Ok(WaitStatus::Exited(_, code)) => ExitStatus::from_raw((code & 0xff) << 8),
            Ok(WaitStatus::Signaled(_, sig, core)) => {
                ExitStatus::from_raw(sig as i32 | if core { 0x80 } else { 0 })
            }
            other => {
                // Gone without a status for us: never signal that pid again.
                self.status = Some(ExitStatus::from_raw(0));
                return Err(std::io::Error::other(format!("waitpid: {other:?}")));
            }
        };
        self.status = Some(status);
        Ok(status)
    }
}

impl Proc {
    /// The pid while the process is unreaped.
    pub fn id(&self) -> Option<u32> {
        match self {
            Proc::Spawned(c) => c.id(),
            Proc::Adopted(a) => a.status.is_none().then_some(a.pid),
        }
    }

    /// Waits for the process to end and reaps it.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match self {
            Proc::Spawned(c) => c.wait().await,
            Proc::Adopted(a) => a.wait().await,
        }
    }
}

/// What a child is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for its turn (the process started before it is not ready yet).
    Waiting,
    /// Started, readiness not yet seen.
    Starting,
    /// Ready and serving.
    Running,
    /// Crashed; waiting out the backoff before the next start.
    Backoff,
    /// Being stopped.
    Stopping,
    /// Stopped on request (kept down until started again) or by shutdown.
    Stopped,
}

impl Phase {
    /// The registry's word for it: `running` or `stopped`.
    pub fn registry_status(self) -> &'static str {
        match self {
            Phase::Running => "running",
            _ => "stopped",
        }
    }
}

/// A child's state as the rest of the watchdog sees it.
#[derive(Debug, Clone)]
pub struct ChildState {
    pub phase: Phase,
    /// The pid while a process is alive.
    pub pid: Option<u32>,
    /// When the current process was started, ms since the Unix epoch; 0 when none.
    pub started_at_ms: i64,
    /// Restarts after a crash since the watchdog started.
    pub restarts: u64,
    /// How the last process ended, such as `exit status: 1` or `signal: 9 (SIGKILL)`.
    pub last_exit: Option<String>,
    /// The first start attempt is over (ready, failed or stopped): the next child may start.
    pub settled: bool,
    /// The id the child gave itself (from `id_file`), once read.
    pub registry_id: Option<String>,
}

/// How a stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopOutcome {
    /// No process was running.
    NotRunning,
    /// The process exited after SIGTERM within its stop timeout.
    Exited,
    /// The process did not exit in time; its process group was killed.
    Killed,
}

enum Command {
    Stop(oneshot::Sender<StopOutcome>),
    Start(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<StopOutcome>),
}

/// What [`spawn`] needs to know about a child.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub kind: ComponentKind,
    pub id: String,
    pub config: ChildConfig,
    /// Where `output = "file"` writes `<id>.log`.
    pub logs_dir: PathBuf,
    /// The installed release (`<release dir>/current`): when it holds `bin/<the binary's file
    /// name>`, that is what runs, so switching the link and restarting runs the new release.
    pub release_current: Option<PathBuf>,
}

impl ChildSpec {
    /// The executable to start: the installed release's, else the configured one.
    pub fn binary(&self) -> PathBuf {
        let cfg = &self.config;
        self.release_current
            .as_ref()
            .zip(cfg.binary.file_name())
            .map(|(current, name)| current.join("bin").join(name))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| cfg.binary.clone())
    }
}

/// The handle of one supervised child.
pub struct ChildHandle {
    pub kind: ComponentKind,
    pub id: String,
    commands: mpsc::Sender<Command>,
    state: watch::Receiver<ChildState>,
    ready_timeout: Duration,
    /// Copies of the running process's output pipes (for the hand-over at re-exec).
    pub(crate) output: Arc<Mutex<Vec<OwnedFd>>>,
}

impl ChildHandle {
    /// The id the registry knows the child by: the one it gave itself (`id_file`), else the
    /// configured one.
    pub fn registry_id(&self) -> String {
        self.state
            .borrow()
            .registry_id
            .clone()
            .unwrap_or_else(|| self.id.clone())
    }

    /// The current state.
    pub fn state(&self) -> ChildState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every change of state.
    pub fn subscribe(&self) -> watch::Receiver<ChildState> {
        self.state.clone()
    }

    /// Stops the child and keeps it down until [`ChildHandle::start`]; returns once it is gone.
    pub async fn stop(&self) -> StopOutcome {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Stop(tx)).await.is_err() {
            return StopOutcome::NotRunning;
        }
        rx.await.unwrap_or(StopOutcome::NotRunning)
    }

    /// Starts a child that was stopped on request (at once, without backoff); returns once the
    /// start is under way. A running child is left alone.
    pub async fn start(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Start(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Waits until the child runs and is ready, at most its readiness timeout; `false` when it
    /// did not get there.
    pub async fn wait_running(&self) -> bool {
        let mut state = self.state.clone();
        let running = state.wait_for(|s| s.phase == Phase::Running);
        matches!(
            tokio::time::timeout(self.ready_timeout + Duration::from_secs(1), running).await,
            Ok(Ok(_))
        )
    }

    /// Stops the child for good: the supervisor ends.
    pub async fn shutdown(&self) -> StopOutcome {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).await.is_err() {
            return StopOutcome::NotRunning;
        }
        rx.await.unwrap_or(StopOutcome::NotRunning)
    }
}

/// Starts supervising a child. It is first started once `after` (the child before it in start
/// order) has settled; `changed` is notified on every change of state. With `adopted`, the
/// process handed over by the previous image is supervised instead of starting one.
pub fn spawn(
    spec: ChildSpec,
    restart: RestartConfig,
    after: Option<watch::Receiver<ChildState>>,
    changed: Arc<Notify>,
    adopted: Option<Adopted>,
) -> ChildHandle {
    let (commands, rx) = mpsc::channel(8);
    let (state_tx, state) = watch::channel(ChildState {
        phase: Phase::Waiting,
        pid: None,
        started_at_ms: 0,
        restarts: 0,
        last_exit: None,
        settled: false,
        registry_id: None,
    });
    let output = Arc::new(Mutex::new(Vec::new()));
    let handle = ChildHandle {
        kind: spec.kind,
        id: spec.id.clone(),
        commands,
        state,
        ready_timeout: Duration::from_millis(spec.config.ready_timeout_ms),
        output: output.clone(),
    };
    let supervisor = Supervisor {
        spec,
        restart,
        commands: rx,
        state: state_tx,
        changed,
        output,
    };
    tokio::spawn(supervisor.run(after, adopted));
    handle
}

struct Supervisor {
    spec: ChildSpec,
    restart: RestartConfig,
    commands: mpsc::Receiver<Command>,
    state: watch::Sender<ChildState>,
    changed: Arc<Notify>,
    output: Arc<Mutex<Vec<OwnedFd>>>,
}

/// How one run of the process ended.
enum Ended {
    /// It exited by itself after `uptime`.
    Exited(ExitStatus, Duration),
    /// It did not become ready in time and was stopped.
    NotReady,
    /// Stopped on request.
    Stopped(oneshot::Sender<StopOutcome>, StopOutcome),
    /// Stopped by shutdown.
    Shutdown(oneshot::Sender<StopOutcome>, StopOutcome),
}

impl Supervisor {
    fn update(&self, f: impl FnOnce(&mut ChildState)) {
        self.state.send_modify(f);
        self.changed.notify_one();
    }

    async fn run(mut self, after: Option<watch::Receiver<ChildState>>, adopted: Option<Adopted>) {
        let id = self.spec.id.clone();
        let mut adopted = adopted.and_then(|a| self.adopt(a));
        if adopted.is_some() {
            // Ready already: nothing to wait for.
        } else if let Some(mut before) = after {
            // Wait for the child before this one, but obey a command meanwhile.
            tokio::select! {
                () = async { let _ = before.wait_for(|s| s.settled).await; } => {}
                Some(cmd) = self.commands.recv() => match cmd {
                    Command::Shutdown(reply) => {
                        self.update(|s| { s.phase = Phase::Stopped; s.settled = true; });
                        let _ = reply.send(StopOutcome::NotRunning);
                        return;
                    }
                    Command::Stop(reply) => {
                        self.update(|s| { s.phase = Phase::Stopped; s.settled = true; });
                        let _ = reply.send(StopOutcome::NotRunning);
                        if !self.held().await {
                            return;
                        }
                    }
                    Command::Start(reply) => { let _ = reply.send(()); }
                },
            }
        }

        // Crashes in a row; decides the backoff.
        let mut crashes: u32 = 0;
        loop {
            if let Some(proc_) = adopted.take() {
                let ended = self.watch_process(proc_, true).await;
                if !self.ended(ended, &mut crashes).await {
                    return;
                }
                continue;
            }
            let delay = backoff(&self.restart, crashes);
            if !delay.is_zero() {
                self.update(|s| s.phase = Phase::Backoff);
                tracing::info!(process = %id, delay_ms = delay.as_millis() as u64, "restarting after backoff");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    Some(cmd) = self.commands.recv() => match cmd {
                        Command::Start(reply) => { let _ = reply.send(()); }
                        Command::Stop(reply) => {
                            self.update(|s| s.phase = Phase::Stopped);
                            let _ = reply.send(StopOutcome::NotRunning);
                            if !self.held().await {
                                return;
                            }
                            crashes = 0;
                            continue;
                        }
                        Command::Shutdown(reply) => {
                            self.update(|s| s.phase = Phase::Stopped);
                            let _ = reply.send(StopOutcome::NotRunning);
                            return;
                        }
                    },
                }
            }

            let child = match self.start_process().await {
                Ok(c) => Proc::Spawned(c),
                Err(e) => {
                    tracing::error!(process = %id, binary = %self.spec.binary().display(), error = %e, "could not start");
                    crashes = crashes.saturating_add(1).max(2);
                    self.update(|s| {
                        s.last_exit = Some(format!("not started: {e}"));
                        s.settled = true;
                    });
                    continue;
                }
            };
            let ended = self.watch_process(child, false).await;
            if !self.ended(ended, &mut crashes).await {
                return;
            }
        }
    }

    /// Takes over a process handed over by the previous image; `None` when it is not this
    /// process's child (any more): it is then started anew.
    fn adopt(&mut self, a: Adopted) -> Option<Proc> {
        let Some(p) = AdoptedProc::new(a.pid) else {
            tracing::warn!(process = %a.id, pid = a.pid, "handed over but not a child of this process; starting it anew");
            return None;
        };
        let mut copies = Vec::new();
        for raw in &a.output {
            let Some(fd) = crate::pdeathsig::adopt_pipe(*raw) else {
                tracing::warn!(process = %a.id, fd = raw, "handed-over output is not a pipe; not read");
                continue;
            };
            if let Ok(copy) = fd.try_clone() {
                copies.push(copy);
            }
            // Back to close-on-exec: the next children must not inherit it.
            let _ = nix::fcntl::fcntl(
                fd.as_fd(),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            );
            match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
                Ok(r) => {
                    tokio::spawn(copy_lines(
                        format!("{}| ", self.spec.id),
                        r,
                        ums_service::diagnostics::ring(&self.spec.id),
                    ));
                }
                Err(e) => {
                    tracing::warn!(process = %a.id, fd = raw, error = %e, "handed-over output not read")
                }
            }
        }
        *self.output.lock().unwrap_or_else(|p| p.into_inner()) = copies;
        tracing::info!(process = %a.id, pid = a.pid, "adopted from the previous watchdog image");
        self.update(|s| {
            s.pid = Some(a.pid);
            s.started_at_ms = a.started_at_ms;
            s.restarts = a.restarts;
            s.registry_id = a.registry_id.clone();
        });
        Some(Proc::Adopted(p))
    }

    /// Handles the end of a run; `false` when the supervisor ends.
    async fn ended(&mut self, ended: Ended, crashes: &mut u32) -> bool {
        let id = self.spec.id.clone();
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        match ended {
            Ended::Exited(status, uptime) => {
                let stable = uptime >= Duration::from_secs(self.restart.stable_after_s);
                *crashes = if stable { 1 } else { crashes.saturating_add(1) };
                tracing::warn!(process = %id, %status, uptime_ms = uptime.as_millis() as u64, "exited; restarting");
                self.update(|s| {
                    s.phase = Phase::Backoff;
                    s.pid = None;
                    s.restarts += 1;
                    s.last_exit = Some(status.to_string());
                    s.settled = true;
                });
            }
            Ended::NotReady => {
                *crashes = crashes.saturating_add(1);
                self.update(|s| {
                    s.phase = Phase::Backoff;
                    s.pid = None;
                    s.restarts += 1;
                    s.last_exit = Some("not ready in time".into());
                    s.settled = true;
                });
            }
            Ended::Stopped(reply, outcome) => {
                tracing::info!(process = %id, ?outcome, "stopped on request; stays down until started");
                self.update(|s| {
                    s.phase = Phase::Stopped;
                    s.pid = None;
                    s.started_at_ms = 0;
                    s.settled = true;
                });
                let _ = reply.send(outcome);
                if !self.held().await {
                    return false;
                }
                *crashes = 0;
            }
            Ended::Shutdown(reply, outcome) => {
                tracing::info!(process = %id, ?outcome, "stopped");
                self.update(|s| {
                    s.phase = Phase::Stopped;
                    s.pid = None;
                    s.settled = true;
                });
                let _ = reply.send(outcome);
                return false;
            }
        }
        true
    }

    /// Keeps a child stopped on request down until Start (`true`) or shutdown (`false`).
    async fn held(&mut self) -> bool {
        while let Some(cmd) = self.commands.recv().await {
            match cmd {
                Command::Stop(reply) => {
                    let _ = reply.send(StopOutcome::NotRunning);
                }
                Command::Start(reply) => {
                    tracing::info!(process = %self.spec.id, "starting on request");
                    let _ = reply.send(());
                    return true;
                }
                Command::Shutdown(reply) => {
                    let _ = reply.send(StopOutcome::NotRunning);
                    return false;
                }
            }
        }
        false
    }

    async fn start_process(&self) -> std::io::Result<Child> {
        let cfg = &self.spec.config;
        let mut cmd = tokio::process::Command::new(self.spec.binary());
        cmd.args(&cfg.args);
        if !cfg.config.as_os_str().is_empty() {
            cmd.arg("--config").arg(&cfg.config);
        }
        // The watchdog's own UMS_ variables configure the watchdog (UMS_DATA_DIR, UMS_CONFIG):
        // a child gets only those of its `env` table. systemd's socket is the watchdog's too.
        for (key, _) in std::env::vars_os() {
            if key.as_encoded_bytes().starts_with(b"UMS_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env_remove("NOTIFY_SOCKET")
            .envs(&cfg.env)
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        if !cfg.workdir.as_os_str().is_empty() {
            cmd.current_dir(&cfg.workdir);
        }
        match cfg.output {
            Output::Prefix => {
                cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            }
            Output::File => {
                let file = open_log(&self.spec.logs_dir, &self.spec.id)?;
                ums_service::diagnostics::register_file(
                    &self.spec.id,
                    &log_path(&self.spec.logs_dir, &self.spec.id),
                );
                cmd.stdout(file.try_clone()?).stderr(file);
            }
        }
        crate::pdeathsig::set_on(&mut cmd);
        let mut child = crate::reexec::spawn(cmd).await?;
        let mut copies = Vec::new();
        for fd in [
            child
                .stdout
                .as_ref()
                .map(|o| o.as_fd().try_clone_to_owned()),
            child
                .stderr
                .as_ref()
                .map(|o| o.as_fd().try_clone_to_owned()),
        ]
        .into_iter()
        .flatten()
        {
            match fd {
                Ok(fd) => copies.push(fd),
                Err(e) => {
                    tracing::warn!(process = %self.spec.id, error = %e, "could not keep a copy of its output pipe; it will not be handed over at re-exec")
                }
            }
        }
        *self.output.lock().unwrap_or_else(|p| p.into_inner()) = copies;
        if cfg.output == Output::Prefix {
            let prefix = format!("{}| ", self.spec.id);
            let recent = ums_service::diagnostics::ring(&self.spec.id);
            if let Some(out) = child.stdout.take() {
                tokio::spawn(copy_lines(prefix.clone(), out, recent.clone()));
            }
            if let Some(err) = child.stderr.take() {
                tokio::spawn(copy_lines(prefix, err, recent));
            }
        }
        Ok(child)
    }

    /// Waits for readiness, then for the process to end or a command to end it.
    /// `adopted`: the process was handed over running and ready.
    async fn watch_process(&mut self, mut child: Proc, adopted: bool) -> Ended {
        let started = Instant::now();
        let pid = child.id();
        if adopted {
            self.update(|s| {
                s.phase = Phase::Running;
                s.pid = pid;
                s.settled = true;
            });
        } else {
            tracing::info!(process = %self.spec.id, pid = pid.unwrap_or_default(), "started");
            self.update(|s| {
                s.phase = Phase::Starting;
                s.pid = pid;
                s.started_at_ms = now_ms();
            });
        }
        let cfg = self.spec.config.clone();
        let ready = wait_ready(&cfg.ready_addr, Duration::from_millis(cfg.ready_timeout_ms));
        tokio::pin!(ready);
        let mut is_ready = adopted;
        let stop_timeout = Duration::from_millis(cfg.stop_timeout_ms);
        loop {
            tokio::select! {
                biased;
                status = child.wait() => {
                    let status = match status {
                        Ok(s) => s,
                        // Waiting failed (should not happen): treat it as a crash.
                        Err(e) => {
                            tracing::error!(process = %self.spec.id, error = %e, "could not wait for the process");
                            let _ = terminate(&mut child, stop_timeout).await;
                            return Ended::NotReady;
                        }
                    };
                    return Ended::Exited(status, started.elapsed());
                }
                Some(cmd) = self.commands.recv() => match cmd {
                    Command::Start(reply) => { let _ = reply.send(()); }
                    Command::Stop(reply) => {
                        self.update(|s| s.phase = Phase::Stopping);
                        let outcome = terminate(&mut child, stop_timeout).await;
                        return Ended::Stopped(reply, outcome);
                    }
                    Command::Shutdown(reply) => {
                        self.update(|s| s.phase = Phase::Stopping);
                        let outcome = terminate(&mut child, stop_timeout).await;
                        return Ended::Shutdown(reply, outcome);
                    }
                },
                ok = &mut ready, if !is_ready => {
                    if ok {
                        is_ready = true;
                        tracing::info!(
                            process = %self.spec.id,
                            pid = pid.unwrap_or_default(),
                            ready_ms = started.elapsed().as_millis() as u64,
                            "ready"
                        );
                        let registry_id = read_id(&cfg.id_file);
                        self.update(|s| {
                            s.phase = Phase::Running;
                            s.settled = true;
                            if registry_id.is_some() {
                                s.registry_id = registry_id;
                            }
                        });
                    } else {
                        tracing::error!(
                            process = %self.spec.id,
                            ready_addr = %cfg.ready_addr,
                            timeout_ms = cfg.ready_timeout_ms,
                            "not ready in time; stopping it"
                        );
                        self.update(|s| s.phase = Phase::Stopping);
                        let _ = terminate(&mut child, stop_timeout).await;
                        return Ended::NotReady;
                    }
                }
            }
        }
    }
}

/// The delay before the next start after `crashes` crashes in a row: none for the first,
/// then `initial_backoff_ms` doubling up to `max_backoff_ms`.
pub fn backoff(cfg: &RestartConfig, crashes: u32) -> Duration {
    if crashes <= 1 {
        return Duration::ZERO;
    }
    let factor = 1u64 << (crashes - 2).min(32);
    Duration::from_millis(
        cfg.initial_backoff_ms
            .saturating_mul(factor)
            .min(cfg.max_backoff_ms),
    )
}

/// SIGTERM to the child's process group, `timeout` to exit, then SIGKILL to the group.
///
/// Signals go out only while `child` is unreaped (`Child::id()` is `Some`): its pid and process
/// group id are then still reserved for it.
pub async fn terminate(child: &mut Proc, timeout: Duration) -> StopOutcome {
    let Some(pid) = child.id() else {
        return StopOutcome::NotRunning;
    };
    let group = Pid::from_raw(pid as i32);
    // ESRCH cannot happen for an unreaped leader; any error means it is gone already.
    let _ = killpg(group, Signal::SIGTERM);
    if tokio::time::timeout(timeout, child.wait()).await.is_ok() {
        return StopOutcome::Exited;
    }
    if child.id().is_some() {
        tracing::warn!(
            pid,
            timeout_ms = timeout.as_millis() as u64,
            "did not exit after SIGTERM; killing its process group"
        );
        let _ = killpg(group, Signal::SIGKILL);
    }
    let _ = child.wait().await;
    StopOutcome::Killed
}

/// Polls `addr` with TCP connects until one succeeds (`true`) or `timeout` passes (`false`).
/// An empty address is ready at once.
pub async fn wait_ready(addr: &str, timeout: Duration) -> bool {
    if addr.is_empty() {
        return true;
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(addr),
        )
        .await;
        if let Ok(Ok(_)) = attempt {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The id in `file` (trimmed), if the file is configured and holds one.
fn read_id(file: &Path) -> Option<String> {
    if file.as_os_str().is_empty() {
        return None;
    }
    match std::fs::read_to_string(file) {
        Ok(text) if !text.trim().is_empty() => Some(text.trim().to_owned()),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "could not read the child's id");
            None
        }
    }
}

/// Lines longer than this are cut into pieces.
const MAX_LINE: u64 = 64 * 1024;

/// Copies a child's output to the watchdog's stderr, each line prefixed, and keeps the recent
/// lines (without the prefix) for support bundles.
async fn copy_lines(
    prefix: String,
    from: impl AsyncRead + Unpin,
    recent: std::sync::Arc<ums_service::diagnostics::RecentLines>,
) {
    use std::io::Write;
    let mut reader = BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        line.extend_from_slice(prefix.as_bytes());
        match (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if !line.ends_with(b"\n") {
            line.push(b'\n');
        }
        // One write per line keeps lines of several children from interleaving.
        let _ = std::io::stderr().lock().write_all(&line);
        recent.push(&String::from_utf8_lossy(&line[prefix.len()..]));
    }
}

fn log_path(dir: &Path, id: &str) -> std::path::PathBuf {
    dir.join(format!("{id}.log"))
}

fn open_log(dir: &Path, id: &str) -> std::io::Result<std::fs::File> {
    std::fs::create_dir_all(dir)?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(dir, id))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_immediate_first_then_doubles_to_the_cap() {
        let cfg = RestartConfig {
            initial_backoff_ms: 500,
            max_backoff_ms: 3000,
            stable_after_s: 30,
        };
        let ms: Vec<u64> = (0..7)
            .map(|n| backoff(&cfg, n).as_millis() as u64)
            .collect();
        assert_eq!(ms, [0, 0, 500, 1000, 2000, 3000, 3000]);
        assert_eq!(backoff(&cfg, u32::MAX).as_millis(), 3000);
    }
}
