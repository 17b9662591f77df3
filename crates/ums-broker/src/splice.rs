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
#[derive(Debug, Default)]
struct Half {
    /// Bytes read and not yet taken by the receiver; empty, with no allocation, when it keeps up.
    pending: Box<[u8]>,
    /// How much of `pending` was written.
    written: u32,
    state: HalfState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum HalfState {
    #[default]
    Open,
    /// The sender finished: pass the half-close on once `pending` is written.
    Closing,
    Done,
}

/// The idle timeout of one connection.
#[derive(Debug)]
struct Idle {
    sweeper: Arc<IdleSweeper>,
    /// Slot in the sweeper, `u32::MAX` until the first poll registers one.
    slot: u32,
    /// When the slot fires.
    due_ms: u64,
}

/// Copies both directions until both sides closed, an error, or the idle timeout.
///
/// Counts bytes on `backend` and, while alive, one active connection of it.
#[derive(Debug)]
pub(crate) struct Splice {
    device: TcpStream,
    server: TcpStream,
    backend: Arc<Backend>,
    up: Half,
    down: Half,
    idle: Option<Idle>,
    /// When the last byte moved, in [`now_ms`].
    last_ms: u64,
    buffer_size: u32,
    /// Which direction goes first in the next poll, so neither starves the other.
    down_first: bool,
}

impl Splice {
    /// A copy between `device` and `server`; counts as active on `backend` until dropped.
    pub(crate) fn new(
        device: TcpStream,
        server: TcpStream,
        backend: Arc<Backend>,
        buffer_size: usize,
        idle: Option<Arc<IdleSweeper>>,
    ) -> Self {
        backend.total.fetch_add(1, Ordering::Relaxed);
        backend.active.fetch_add(1, Ordering::Relaxed);
        Self {
            device,
            server,
            backend,
            up: Half::default(),
            down: Half::default(),
            idle: idle.map(|sweeper| Idle {
                sweeper,
                slot: u32::MAX,
                due_ms: 0,
            }),
            last_ms: now_ms(),
            buffer_size: buffer_size.clamp(1, MAX_BUFFER) as u32,
            down_first: false,
        }
    }

    /// The server this connection goes to.
    pub(crate) fn backend(&self) -> &Backend {
        &self.backend
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
            &mut self.down,
            scratch,
            &self.backend.bytes_down,
            &mut self.last_ms,
        )
    }

    /// Both directions once, in alternating order; `Ready(Ok)` when both are done.
    fn poll_copy(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let size = self.buffer_size as usize;
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
        let Some(idle) = &mut self.idle else {
            return false;
        };
        let now = now_ms();
        let timeout = idle.sweeper.timeout_ms();
        if now.saturating_sub(self.last_ms) >= timeout {
            return true;
        }
        let due = self.last_ms + timeout;
        if idle.slot == u32::MAX {
            idle.slot = idle.sweeper.register(due, cx.waker());
            idle.due_ms = due;
        } else if now >= idle.due_ms {
            // The slot fired (or is about to) while bytes moved: arm it for the new deadline.
            idle.sweeper.rearm(idle.slot, due, cx.waker());
            idle.due_ms = due;
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
        if let Some(idle) = &self.idle
            && idle.slot != u32::MAX
        {
            idle.sweeper.remove(idle.slot);
        }
    }
}

/// Moves bytes from `src` to `dst` until neither has more to do now (`Pending`), `src` ended
/// and the end was passed on (`Ready(Ok)`, and from then on), or an error.
fn poll_half(
    cx: &mut Context<'_>,
    src: &mut TcpStream,
    dst: &mut TcpStream,
    half: &mut Half,
    scratch: &mut [MaybeUninit<u8>],
    bytes: &AtomicU64,
    last_ms: &mut u64,
) -> Poll<io::Result<()>> {
    loop {
        // What the receiver has not taken yet goes first.
        while !half.pending.is_empty() {
            let rest = &half.pending[half.written as usize..];
            let n = ready!(Pin::new(&mut *dst).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n == rest.len() {
                half.pending = Box::default();
                half.written = 0;
            } else {
                half.written += n as u32;
            }
        }
        match half.state {
            HalfState::Open => {}
            HalfState::Closing => {
                // The sender finished; pass the half-close on and keep the other direction
                // open until it ends too. A receiver already gone is no error here.
                let _ = ready!(Pin::new(&mut *dst).poll_shutdown(cx));
                half.state = HalfState::Done;
                return Poll::Ready(Ok(()));
            }
            HalfState::Done => return Poll::Ready(Ok(())),
        }

        let mut buf = ReadBuf::uninit(scratch);
        ready!(Pin::new(&mut *src).poll_read(cx, &mut buf))?;
        let data = buf.filled();
        if data.is_empty() {
            half.state = HalfState::Closing;
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
                    half.pending = data[sent..].into();
                    half.written = 0;
                    return Poll::Pending;
                }
            }
        }
    }
}
