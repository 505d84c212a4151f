use photon_dpdk_sys as sys;

use crate::Mbuf;

/// The usual DPDK burst size (l2fwd's MAX_PKT_BURST).
pub const MAX_BURST: usize = 32;

/// Up to [`MAX_BURST`] owned mbufs: what one RX burst returns or one TX burst sends.
///
/// Slots are `Option<Mbuf>`, which has the layout of `*mut rte_mbuf` (Mbuf is a transparent
/// `NonNull`), so DPDK's burst calls read and write the slots directly: no copy, no allocation.
/// Invariant: `slots[..len]` are `Some`, `slots[len..]` are `None`.
pub struct MbufBatch {
    slots: [Option<Mbuf>; MAX_BURST],
    len: usize,
}

impl Default for MbufBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MbufBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MbufBatch").field("len", &self.len).finish()
    }
}

impl MbufBatch {
    pub fn new() -> MbufBatch {
        MbufBatch {
            slots: [const { None }; MAX_BURST],
            len: 0,
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == MAX_BURST
    }

    /// Free slots.
    #[inline]
    pub fn room(&self) -> usize {
        MAX_BURST - self.len
    }

    /// Adds an mbuf; gives it back when the batch is full.
    #[inline]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len == MAX_BURST {
            return Err(m);
        }
        self.slots[self.len] = Some(m);
        self.len += 1;
        Ok(())
    }

    /// Removes the last mbuf.
    #[inline]
    pub fn pop(&mut self) -> Option<Mbuf> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        self.slots[self.len].take()
    }

    /// The mbufs, in order.
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = &Mbuf> {
        self.slots[..self.len].iter().flatten()
    }

    /// The mbufs, mutably.
    #[inline]
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Mbuf> {
        self.slots[..self.len].iter_mut().flatten()
    }

    /// Takes every mbuf out, in order, leaving the batch empty.
    #[inline]
    pub fn drain(&mut self) -> impl Iterator<Item = Mbuf> + '_ {
        let n = std::mem::replace(&mut self.len, 0);
        self.slots[..n].iter_mut().filter_map(Option::take)
    }

    /// Frees every mbuf (counted drops are the caller's business).
    #[inline]
    pub fn clear(&mut self) {
        for m in self.drain() {
            drop(m);
        }
    }

    /// Pointer to the free slots, for a burst call that fills up to `room()` of them.
    pub(crate) fn free_slots_ptr(&mut self) -> *mut *mut sys::rte_mbuf {
        // Option<Mbuf> is layout-compatible with *mut rte_mbuf (None == NULL).
        self.slots[self.len..].as_mut_ptr() as *mut *mut sys::rte_mbuf
    }

    /// Records that a burst call wrote `n` mbufs into the free slots.
    ///
    /// # Safety
    /// The `n` slots after `len` must hold valid mbuf pointers now owned by this batch.
    pub(crate) unsafe fn commit_filled(&mut self, n: usize) {
        debug_assert!(self.len + n <= MAX_BURST);
        self.len += n;
    }

    /// Pointer to the filled slots, for a burst call that consumes a prefix of them.
    pub(crate) fn filled_ptr(&mut self) -> *mut *mut sys::rte_mbuf {
        self.slots.as_mut_ptr() as *mut *mut sys::rte_mbuf
    }

    /// Records that a burst call took ownership of the first `n` mbufs: forgets them (without
    /// freeing) and moves the rest to the front.
    pub(crate) fn consume_front(&mut self, n: usize) {
        let n = n.min(self.len);
        for slot in &mut self.slots[..n] {
            // The driver (or ring) owns these now: clear the slot without freeing.
            std::mem::forget(slot.take());
        }
        if n < self.len {
            self.slots[..self.len].rotate_left(n);
        }
        self.len -= n;
    }
}

impl Drop for MbufBatch {
    fn drop(&mut self) {
        self.clear();
    }
}
