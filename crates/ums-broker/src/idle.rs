//! Idle timeouts of proxied connections: one sweeper task over a slab of wakers instead of a
//! timer inside every connection.
//!
//! A connection keeps the time of its last byte itself (no shared write per byte). It registers
//! a slot holding its waker and the time it becomes due, `last + timeout`. The sweeper wakes
//! every slot that is due; the woken connection either closes (nothing moved since) or arms its
//! slot again for `last + timeout`. So a busy connection is woken once per timeout, an idle one
//! is closed between `timeout` and `timeout + tick` after its last byte, and a slot costs 24
//! bytes.

use std::sync::{Mutex, MutexGuard, OnceLock};
use std::task::Waker;
use std::time::{Duration, Instant};

/// Milliseconds since the first call: the clock of idle accounting.
pub(crate) fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The slab of connections that have an idle timeout.
#[derive(Debug)]
pub(crate) struct IdleSweeper {
    timeout_ms: u64,
    slots: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    entries: Vec<Slot>,
    /// Indexes of free entries.
    free: Vec<u32>,
}

#[derive(Debug)]
struct Slot {
    /// When to wake the connection; `u64::MAX` once woken, until it arms the slot again.
    due_ms: u64,
    /// `None`: the entry is free.
    waker: Option<Waker>,
}

impl IdleSweeper {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            timeout_ms: (timeout.as_millis() as u64).max(1),
            slots: Mutex::new(Slots::default()),
        }
    }

    /// The idle timeout in milliseconds.
    pub(crate) fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        match self.slots.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Takes a slot that wakes `waker` at `due_ms`; returns its index.
    pub(crate) fn register(&self, due_ms: u64, waker: &Waker) -> u32 {
        let mut slots = self.lock();
        let slot = Slot {
            due_ms,
            waker: Some(waker.clone()),
        };
        match slots.free.pop() {
            Some(i) => {
                slots.entries[i as usize] = slot;
                i
            }
            None => {
                slots.entries.push(slot);
                (slots.entries.len() - 1) as u32
            }
        }
    }

    /// Arms slot `index` again for `due_ms`.
    pub(crate) fn rearm(&self, index: u32, due_ms: u64, waker: &Waker) {
        let mut slots = self.lock();
        if let Some(slot) = slots.entries.get_mut(index as usize) {
            slot.due_ms = due_ms;
            match &slot.waker {
                Some(w) if w.will_wake(waker) => {}
                _ => slot.waker = Some(waker.clone()),
            }
        }
    }

    /// Frees slot `index`.
    pub(crate) fn remove(&self, index: u32) {
        let mut slots = self.lock();
        let Some(slot) = slots.entries.get_mut(index as usize) else {
            return;
        };
        if slot.waker.take().is_some() {
            slots.free.push(index);
        }
        // Give the memory of a peak back once every connection has gone.
        if slots.free.len() == slots.entries.len() && slots.entries.capacity() > 1024 {
            slots.entries = Vec::new();
            slots.free = Vec::new();
        }
    }

    /// Wakes the connections that are due at `now_ms`; returns how many.
    pub(crate) fn sweep(&self, now_ms: u64) -> usize {
        let mut slots = self.lock();
        let mut woken = 0;
        for slot in &mut slots.entries {
            if slot.due_ms <= now_ms
                && let Some(w) = &slot.waker
            {
                w.wake_by_ref();
                slot.due_ms = u64::MAX;
                woken += 1;
            }
        }
        woken
    }

    /// Slots in use.
    #[cfg(test)]
    fn len(&self) -> usize {
        let slots = self.lock();
        slots.entries.len() - slots.free.len()
    }

    /// Sweeps forever, a quarter of the timeout apart and at least once a second.
    pub(crate) async fn run(self: std::sync::Arc<Self>) {
        let tick = Duration::from_millis((self.timeout_ms / 4).clamp(10, 1000));
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            self.sweep(now_ms());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn wakes_what_is_due_once_until_rearmed() {
        let sweeper = IdleSweeper::new(Duration::from_secs(1));
        let (a, b) = (
            Arc::new(Count(AtomicUsize::new(0))),
            Arc::new(Count(AtomicUsize::new(0))),
        );
        let (wa, wb) = (Waker::from(a.clone()), Waker::from(b.clone()));
        let ia = sweeper.register(100, &wa);
        let ib = sweeper.register(200, &wb);
        assert_eq!(sweeper.sweep(50), 0);
        assert_eq!(sweeper.sweep(150), 1);
        assert_eq!(sweeper.sweep(160), 0, "woken once until armed again");
        sweeper.rearm(ia, 300, &wa);
        assert_eq!(sweeper.sweep(250), 1);
        assert_eq!(sweeper.sweep(300), 1);
        assert_eq!(a.0.load(Ordering::Relaxed), 2);
        assert_eq!(b.0.load(Ordering::Relaxed), 1);
        sweeper.remove(ia);
        assert_eq!(sweeper.len(), 1);
        // A freed entry is reused.
        assert_eq!(sweeper.register(400, &wa), ia);
        sweeper.remove(ia);
        sweeper.remove(ib);
        sweeper.remove(ib);
        assert_eq!(sweeper.len(), 0);
    }

    #[test]
    fn memory_goes_back_after_a_peak() {
        let sweeper = IdleSweeper::new(Duration::from_secs(1));
        let w = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let slots: Vec<u32> = (0..5000).map(|_| sweeper.register(0, &w)).collect();
        for &i in &slots[..4999] {
            sweeper.remove(i);
        }
        assert_eq!(sweeper.sweep(1), 1);
        assert!(sweeper.lock().entries.capacity() >= 5000);
        sweeper.remove(slots[4999]);
        assert_eq!(sweeper.len(), 0);
        assert_eq!(sweeper.lock().entries.capacity(), 0);
    }
}
