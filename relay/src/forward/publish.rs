//! Publishing a new forwarding table to running data cores without stopping them.
//!
//! The control path builds a whole new immutable value (an `Arc<T>`) and [`Publisher::publish`]es
//! it; each data core's [`Reader`] checks one atomic generation number per poll iteration (a
//! plain load on x86) and, only when it changed, takes the new `Arc` from the slot. The slot's
//! mutex is taken by a data core only with `try_lock` and only right after a publish: a data
//! core never blocks (if the control path holds the lock at that instant, the core keeps its
//! current table and retries on the next iteration), and no lock is ever taken per packet.
//!
//! Why not `arc-swap` (RCU-like, lock-free loads): per-burst loads are not needed when a
//! generation counter already says "nothing changed", and this keeps the dependency list short.
//! The old table is freed by whichever side drops its last reference; the publisher keeps the
//! previous one too, so a data core usually only decrements a count when it switches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, TryLockError};

#[derive(Debug)]
struct Slot<T> {
    generation: AtomicU64,
    current: Mutex<Arc<T>>,
}

/// The control path's end: replaces the published value.
#[derive(Debug)]
pub struct Publisher<T> {
    slot: Arc<Slot<T>>,
    previous: Option<Arc<T>>,
}

/// A data core's end: the value it uses now, refreshed when a new one is published.
#[derive(Debug)]
pub struct Reader<T> {
    slot: Arc<Slot<T>>,
    seen: u64,
    current: Arc<T>,
}

/// Creates a publisher with `initial` as the published value.
pub fn channel<T>(initial: T) -> Publisher<T> {
    Publisher {
        slot: Arc::new(Slot {
            generation: AtomicU64::new(0),
            current: Mutex::new(Arc::new(initial)),
        }),
        previous: None,
    }
}

impl<T> Publisher<T> {
    /// A reader starting at the current value (one per data core).
    pub fn reader(&self) -> Reader<T> {
        let current = lock(&self.slot.current).clone();
        Reader {
            slot: self.slot.clone(),
            seen: self.slot.generation.load(Ordering::Acquire),
            current,
        }
    }

    /// Makes `value` the table every reader switches to on its next [`Reader::refresh`].
    /// Returns the new generation number.
    pub fn publish(&mut self, value: T) -> u64 {
        let mut slot = lock(&self.slot.current);
        self.previous = Some(std::mem::replace(&mut *slot, Arc::new(value)));
        // Bumped while holding the lock: a reader that sees the new generation and gets the
        // lock finds the new value.
        self.slot.generation.fetch_add(1, Ordering::Release) + 1
    }

    /// The value published last.
    pub fn current(&self) -> Arc<T> {
        lock(&self.slot.current).clone()
    }

    /// Publications so far.
    pub fn generation(&self) -> u64 {
        self.slot.generation.load(Ordering::Acquire)
    }
}

fn lock<T>(m: &Mutex<Arc<T>>) -> std::sync::MutexGuard<'_, Arc<T>> {
    // A panic while holding this lock cannot leave the Arc half-written: take it anyway.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<T> Reader<T> {
    /// Switches to the latest published value if there is one; returns whether it switched.
    /// Never blocks.
    #[inline]
    pub fn refresh(&mut self) -> bool {
        let g = self.slot.generation.load(Ordering::Acquire);
        if g == self.seen {
            return false;
        }
        let guard = match self.slot.current.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        self.current = guard.clone();
        drop(guard);
        self.seen = g;
        true
    }

    /// The value in use.
    #[inline]
    pub fn get(&self) -> &T {
        &self.current
    }

    /// Generation of the value in use.
    pub fn generation(&self) -> u64 {
        self.seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_switch_on_refresh_only() {
        let mut p = channel(1u32);
        let mut r = p.reader();
        assert_eq!(*r.get(), 1);
        assert!(!r.refresh());
        assert_eq!(p.publish(2), 1);
        assert_eq!(*r.get(), 1, "the reader keeps its value until it refreshes");
        assert!(r.refresh());
        assert_eq!(*r.get(), 2);
        assert_eq!(r.generation(), 1);
        p.publish(3);
        p.publish(4);
        assert!(r.refresh());
        assert_eq!(*r.get(), 4, "intermediate values are skipped");
    }

    #[test]
    fn reader_on_another_thread_sees_every_publication_eventually() {
        let mut p = channel(0u64);
        let mut r = p.reader();
        let t = std::thread::spawn(move || {
            let mut last = 0;
            while last != 1000 {
                r.refresh();
                let v = *r.get();
                assert!(v >= last, "values only move forward");
                last = v;
            }
        });
        for v in 1..=1000 {
            p.publish(v);
        }
        t.join().unwrap();
    }
}
