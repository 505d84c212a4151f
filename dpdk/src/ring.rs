use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Arc;

use photon_dpdk_sys as sys;

use crate::error::{from_rte_errno, Error, Result};
use crate::{Eal, Mbuf, MbufBatch};

#[derive(Debug)]
struct RingInner {
    ptr: NonNull<sys::rte_ring>,
}

// SAFETY: the ring is created single-producer/single-consumer and the producer and consumer
// handles are each unique (not Clone); rte_ring's SP/SC operations are safe across two threads.
unsafe impl Send for RingInner {}
// SAFETY: shared only between one producer and one consumer handle, each exclusive on its side.
unsafe impl Sync for RingInner {}

impl Drop for RingInner {
    fn drop(&mut self) {
        // Both halves are gone: free what is left in the ring, then the ring.
        let mut batch = MbufBatch::new();
        loop {
            // SAFETY: nobody else uses the ring any more; the slots are free.
            let n = unsafe {
                sys::photon_ring_dequeue_burst(
                    self.ptr.as_ptr(),
                    batch.free_slots_ptr() as *mut *mut _,
                    batch.room() as u32,
                )
            };
            if n == 0 {
                break;
            }
            // SAFETY: the ring only ever holds owned mbuf pointers (see RingProducer::enqueue).
            unsafe { batch.commit_filled(n as usize) };
            batch.clear();
        }
        // SAFETY: the ring is empty and unused.
        unsafe { sys::rte_ring_free(self.ptr.as_ptr()) }
    }
}

/// An `rte_ring` of mbufs linking two pipeline stages (single producer, single consumer).
pub struct Ring;

/// The enqueue side of a [`Ring`].
#[derive(Debug)]
pub struct RingProducer {
    inner: Arc<RingInner>,
}

/// The dequeue side of a [`Ring`].
#[derive(Debug)]
pub struct RingConsumer {
    inner: Arc<RingInner>,
}

impl Ring {
    /// Creates a ring with room for `count - 1` mbufs (`count` a power of two), split into
    /// its two ends. Mbufs left inside when both ends are dropped are freed.
    pub fn create(_eal: &Eal, name: &str, count: u32) -> Result<(RingProducer, RingConsumer)> {
        let c = CString::new(name).map_err(|_| Error::NulInArgument(name.into()))?;
        let flags = sys::RING_F_SP_ENQ | sys::RING_F_SC_DEQ;
        // SAFETY: valid C string; returns NULL with rte_errno on failure.
        let p = unsafe { sys::rte_ring_create(c.as_ptr(), count, sys::SOCKET_ID_ANY, flags) };
        let ptr = NonNull::new(p).ok_or_else(|| from_rte_errno("rte_ring_create"))?;
        let inner = Arc::new(RingInner { ptr });
        Ok((
            RingProducer {
                inner: inner.clone(),
            },
            RingConsumer { inner },
        ))
    }
}

impl RingProducer {
    /// Moves as many mbufs of the batch as fit into the ring (from the front); the rest stay
    /// in the batch. Returns how many moved.
    pub fn enqueue(&mut self, batch: &mut MbufBatch) -> usize {
        let len = batch.len() as u32;
        // SAFETY: unique producer; the first `len` slots hold owned mbufs; the ring takes
        // ownership of the first n.
        let n = unsafe {
            sys::photon_ring_enqueue_burst(
                self.inner.ptr.as_ptr(),
                batch.filled_ptr() as *const *mut _,
                len,
            )
        };
        batch.consume_front(n as usize);
        n as usize
    }

    /// Enqueues one mbuf, giving it back if the ring is full.
    pub fn enqueue_one(&mut self, m: Mbuf) -> std::result::Result<(), Mbuf> {
        let mut b = MbufBatch::new();
        let _ = b.push(m);
        if self.enqueue(&mut b) == 1 {
            Ok(())
        } else {
            b.pop().map_or(Ok(()), Err)
        }
    }
}

impl RingConsumer {
    /// Moves up to `batch.room()` mbufs from the ring into the batch.
    pub fn dequeue(&mut self, batch: &mut MbufBatch) -> usize {
        // SAFETY: unique consumer; free slots pointer with `room` entries.
        unsafe {
            let n = sys::photon_ring_dequeue_burst(
                self.inner.ptr.as_ptr(),
                batch.free_slots_ptr() as *mut *mut _,
                batch.room() as u32,
            ) as usize;
            batch.commit_filled(n);
            n
        }
    }

    /// Mbufs waiting in the ring.
    pub fn len(&self) -> usize {
        // SAFETY: read-only count.
        unsafe { sys::photon_ring_count(self.inner.ptr.as_ptr()) as usize }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
