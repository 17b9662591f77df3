//! The one place of the workspace that uses `unsafe`: the hook that runs in the forked child
//! before `exec`, asks the kernel to send it SIGTERM when the watchdog dies, and clears the
//! signal mask (which `exec` keeps), so a child can always be stopped with SIGTERM; and
//! [`adopt_pipe`], which takes over a pipe a previous image of the watchdog handed on by number.
//!
//! Without it a watchdog killed with SIGKILL (OOM killer, a test harness timing out) would leave
//! its server and broker running, holding the ports that the next watchdog's children need.
//! Under systemd the unit's cgroup catches them anyway; this covers every other way to run it.
//!
//! The signal is tied to the thread that forked the child, and `execve` ends every thread but
//! the calling one. So every child is forked by one thread, the spawner (`reexec`), and the
//! watchdog re-executes itself from that same thread: its children then keep running.

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

/// Takes ownership of descriptor `raw` if it is open and a pipe (a FIFO); `None` otherwise.
///
/// Only for the numbers of [`crate::reexec::Adopted::output`]: the previous image of this
/// process left them open across `execve`, and nothing else in this image owns them.
pub fn adopt_pipe(raw: std::os::fd::RawFd) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
    if raw < 0 {
        return None;
    }
    // SAFETY: `raw` is non-negative; the borrow lives only for the fstat call, which fails
    // harmlessly (EBADF) on a descriptor that is not open.
    let stat = nix::sys::stat::fstat(unsafe { BorrowedFd::borrow_raw(raw) }).ok()?;
    if stat.st_mode & nix::libc::S_IFMT != nix::libc::S_IFIFO {
        return None;
    }
    // SAFETY: the descriptor is open and a pipe that the previous image handed on and that
    // no other owner in this image knows of (see above); it is taken once.
    Some(unsafe { OwnedFd::from_raw_fd(raw) })
}
