//! The copy loop of one proxied connection: a hand-written future that moves bytes both ways
//! between the device and the server, small enough that 10,000 idle connections cost little
//! more than their sockets.
//!
//! Reads go into a scratch buffer of the worker thread, not of the connection, and are written
//! to the other side at once. Only bytes the receiver does not take at once are copied to a
//! buffer of the connection, kept until it takes them, and then freed; while they wait, that
//! direction reads nothing more. An idle connection holds no buffer at all, and no timer: its
//! idle timeout is a slot of the [`IdleSweeper`].

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::Admitted;
use crate::idle::{IdleSweeper, now_ms};
use crate::server_set::Backend;

/// The largest `buffer_size` (the configuration refuses more).
pub(crate) const MAX_BUFFER: usize = 64 * 1024;

thread_local! {
    /// What a read fills before it is written on: one per worker thread, grown to the largest
    /// `buffer_size` asked for.
    static SCRATCH: RefCell<Vec<MaybeUninit<u8>>> = const { RefCell::new(Vec::new()) };
}

/// How a proxied connection ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Both sides closed.
    Closed,
    /// No byte in either direction for the idle timeout.
    Idle,
}

/// One direction of the copy.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Half {
    #[default]
    Open,
    /// The sender finished: pass the half-close on once what is pending was written.
    Closing,
    Done,
}

/// Copies both directions until both sides closed, an error, or the idle timeout.
///
/// Holds the connection's admission (counted until dropped) and counts bytes and one active
/// connection on `backend`. Kept small: with the task around it, it fills 256 bytes.
#[derive(Debug)]
pub(crate) struct Splice {
    admitted: Admitted,
    device: TcpStream,
    server: TcpStream,
    backend: Arc<Backend>,
    /// Bytes from the device the server has not taken yet; empty, with no allocation, when the
    /// server keeps up.
    up_pending: Box<[u8]>,
    /// Bytes from the server the device has not taken yet.
    down_pending: Box<[u8]>,
    /// When the last byte moved, in [`now_ms`].
    last_ms: u64,
    /// When the idle slot fires.
    due_ms: u64,
    /// Slot in the idle sweeper, `u32::MAX` until the first poll takes one.
    idle_slot: u32,
    up: Half,
    down: Half,
    /// Which direction goes first in the next poll, so neither starves the other.
    down_first: bool,
}

impl Splice {
    /// A copy between `device` and `server`; counts as active on `backend` until dropped.
    pub(crate) fn new(
        admitted: Admitted,
        device: TcpStream,
        server: TcpStream,
        backend: Arc<Backend>,
    ) -> Self {
        backend.total.fetch_add(1, Ordering::Relaxed);
        backend.active.fetch_add(1, Ordering::Relaxed);
        Self {
            admitted,
            device,
            server,
            backend,
            up_pending: Box::default(),
            down_pending: Box::default(),
            last_ms: now_ms(),
            due_ms: 0,
            idle_slot: u32::MAX,
            up: Half::Open,
            down: Half::Open,
            down_first: false,
        }
    }

    /// The server this connection goes to.
    pub(crate) fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The device's address, when the socket still knows it.
    pub(crate) fn peer(&self) -> Option<std::net::SocketAddr> {
        self.device.peer_addr().ok()
    }

    fn sweeper(&self) -> Option<&IdleSweeper> {
        self.admitted.0.sweeper.as_deref()
    }

    fn poll_up(
        &mut self,
        cx: &mut Context<'_>,
        scratch: &mut [MaybeUninit<u8>],
    ) -> Poll<io::Result<()>> {
        poll_half(
            cx,
            &mut self.device,
            &mut self.server,
            &mut self.up_pending,
            &mut self.up,
            scratch,
            &self.backend.bytes_up,
            &mut self.last_ms,
        )
    }

    fn poll_down(
        &mut self,
        cx: &mut Context<'_>,
        scratch: &mut [MaybeUninit<u8>],
    ) -> Poll<io::Result<()>> {
        poll_half(
            cx,
            &mut self.server,
            &mut self.device,
            &mut self.down_pending,
            &mut self.down,
            scratch,
            &self.backend.bytes_down,
            &mut self.last_ms,
        )
    }

    /// Both directions once, in alternating order; `Ready(Ok)` when both are done.
    fn poll_copy(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let size = self.admitted.0.buffer_size.clamp(1, MAX_BUFFER);
        SCRATCH.with_borrow_mut(|scratch| {
            if scratch.len() < size {
                scratch.resize(size, MaybeUninit::uninit());
            }
            let scratch = &mut scratch[..size];
            self.down_first = !self.down_first;
            let (first, second) = if self.down_first {
                (self.poll_down(cx, scratch), self.poll_up(cx, scratch))
            } else {
                (self.poll_up(cx, scratch), self.poll_down(cx, scratch))
            };
            match (first, second) {
                (Poll::Ready(Err(e)), _) | (_, Poll::Ready(Err(e))) => Poll::Ready(Err(e)),
                (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => Poll::Ready(Ok(())),
                _ => Poll::Pending,
            }
        })
    }

    /// Whether the idle timeout has passed; arms the sweeper's slot otherwise.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(sweeper) = self.admitted.0.sweeper.as_deref() else {
            return false;
        };
        let now = now_ms();
        let timeout = sweeper.timeout_ms();
        if now.saturating_sub(self.last_ms) >= timeout {
            return true;
        }
        let due = self.last_ms + timeout;
        if self.idle_slot == u32::MAX {
            self.idle_slot = sweeper.register(due, cx.waker());
            self.due_ms = due;
        } else if now >= self.due_ms {
            // The slot fired (or is about to) while bytes moved: arm it for the new deadline.
            sweeper.rearm(self.idle_slot, due, cx.waker());
            self.due_ms = due;
        }
        false
    }
}

impl Future for Splice {
    type Output = io::Result<Ending>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match this.poll_copy(cx) {
            Poll::Ready(Ok(())) => return Poll::Ready(Ok(Ending::Closed)),
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        // Checked after the copy, so bytes that arrive at the deadline still count.
        if this.idle_expired(cx) {
            return Poll::Ready(Ok(Ending::Idle));
        }
        Poll::Pending
    }
}

impl Drop for Splice {
    fn drop(&mut self) {
        self.backend.active.fetch_sub(1, Ordering::Relaxed);
        if self.idle_slot != u32::MAX
            && let Some(sweeper) = self.sweeper()
        {
            sweeper.remove(self.idle_slot);
        }
    }
}

/// Moves bytes from `src` to `dst` until neither has more to do now (`Pending`), `src` ended
/// and the end was passed on (`Ready(Ok)`, and from then on), or an error.
#[allow(clippy::too_many_arguments)]
fn poll_half(
    cx: &mut Context<'_>,
    src: &mut TcpStream,
    dst: &mut TcpStream,
    pending: &mut Box<[u8]>,
    half: &mut Half,
    scratch: &mut [MaybeUninit<u8>],
    bytes: &AtomicU64,
    last_ms: &mut u64,
) -> Poll<io::Result<()>> {
    loop {
        // What the receiver has not taken yet goes first.
        while !pending.is_empty() {
            let n = ready!(Pin::new(&mut *dst).poll_write(cx, pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            // Keep only the rest (rare: the receiver took part of a read), none once all is out.
            *pending = pending[n..].into();
        }
        match *half {
            Half::Open => {}
            Half::Closing => {
                // The sender finished; pass the half-close on and keep the other direction
                // open until it ends too. A receiver already gone is no error here.
                let _ = ready!(Pin::new(&mut *dst).poll_shutdown(cx));
                *half = Half::Done;
                return Poll::Ready(Ok(()));
            }
            Half::Done => return Poll::Ready(Ok(())),
        }

        let mut buf = ReadBuf::uninit(scratch);
        ready!(Pin::new(&mut *src).poll_read(cx, &mut buf))?;
        let data = buf.filled();
        if data.is_empty() {
            *half = Half::Closing;
            continue;
        }
        bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        *last_ms = now_ms();
        let mut sent = 0;
        while sent < data.len() {
            match Pin::new(&mut *dst).poll_write(cx, &data[sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // The receiver is behind: keep the rest and read nothing more until it
                    // took it. Its writability wakes this task.
                    *pending = data[sent..].into();
                    return Poll::Pending;
                }
            }
        }
    }
}
