//! The one place of the workspace that uses `unsafe`: the hook that runs in the forked child
//! before `exec`, asks the kernel to send it SIGTERM when the watchdog dies, and clears the
//! signal mask (which `exec` keeps), so a child can always be stopped with SIGTERM.
//!
//! Without it a watchdog killed with SIGKILL (OOM killer, a test harness timing out) would leave
//! its server and broker running, holding the ports that the next watchdog's children need.
//! Under systemd the unit's cgroup catches them anyway; this covers every other way to run it.
//!
//! The signal is tied to the thread that forked the child. The children are spawned from tokio
//! worker threads, which live as long as the runtime, and the runtime outlives the children
//! (they are stopped before `main` returns).

#![allow(unsafe_code)]

use nix::sys::signal::Signal;
use nix::unistd::{Pid, getppid};

/// Makes `cmd`'s process start with no blocked signal and receive SIGTERM when this process
/// dies.
pub fn set_on(cmd: &mut tokio::process::Command) {
    let parent: Pid = nix::unistd::getpid();
    // SAFETY: the closure runs between fork and exec in the child, where only
    // async-signal-safe functions may be called. It makes three system calls (sigprocmask,
    // prctl, getppid) and builds an io::Error from a raw errno; it neither allocates nor takes
    // a lock.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::signal::SigSet::empty()
                .thread_set_mask()
                .map_err(std::io::Error::from)?;
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)?;
            // The watchdog died between fork and prctl: the signal will never come; do not
            // start an orphan.
            if getppid() != parent {
                return Err(std::io::Error::from(nix::errno::Errno::ESRCH));
            }
            Ok(())
        });
    }
}
