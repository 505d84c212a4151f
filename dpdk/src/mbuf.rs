use std::ptr::NonNull;

use photon_dpdk_sys as sys;

use crate::error::{Error, Result};
use crate::Mempool;

/// An owning handle to one DPDK packet buffer (possibly the head of a chain).
///
/// Dropping it returns the buffer (and every segment chained after it) to its pool; a
/// segment whose refcount was raised (see [`SharedMbuf`]) only loses one reference.
/// Data access is checked: slices never reach past `data_len`, and mutable access to bytes is
/// only given while nobody else holds a reference to the buffer.
#[repr(transparent)]
#[derive(Debug)]
pub struct Mbuf {
    ptr: NonNull<sys::rte_mbuf>,
}

// SAFETY: an mbuf handle is exclusively owned (no Clone); moving it to another thread moves
// the ownership, which is how DPDK passes mbufs between lcores (rings, queues). Freeing from any
// thread is allowed: rte_pktmbuf_free goes through the pool's MP/MC-safe ops.
unsafe impl Send for Mbuf {}

/// Direct reads of the `rte_mbuf` fields the fast path needs per packet (a call into the shim
/// per field was several percent of the relay core). bindgen sees `struct rte_mbuf` as an
/// opaque 128-byte blob (it is cache-aligned, with anonymous unions), so the offsets are
/// stated here; `csrc/shim.c` checks each against DPDK's header with `_Static_assert`, so a
/// DPDK with another layout fails to build rather than misreads.
mod field {
    use photon_dpdk_sys as sys;

    pub const BUF_ADDR: usize = 0;
    pub const DATA_OFF: usize = 16;
    pub const REFCNT: usize = 18;
    pub const NB_SEGS: usize = 20;
    pub const PKT_LEN: usize = 36;
    pub const DATA_LEN: usize = 40;

    /// Reads the `T` at byte `offset` of the mbuf header.
    ///
    /// # Safety
    /// `m` must point at a live `rte_mbuf`, and `offset` must be one of the offsets above with
    /// `T` the field's type (naturally aligned in the 64-byte-aligned header).
    #[inline(always)]
    pub unsafe fn read<T: Copy>(m: *const sys::rte_mbuf, offset: usize) -> T {
        // SAFETY: per this function's contract the field lies inside the mbuf header, is
        // aligned for T and initialised (DPDK initialises every mbuf header in the pool).
        unsafe { m.cast::<u8>().add(offset).cast::<T>().read() }
    }

    /// The first segment's data pointer: `buf_addr + data_off` (`rte_pktmbuf_mtod`).
    ///
    /// # Safety
    /// As [`read`].
    #[inline(always)]
    pub unsafe fn data(m: *const sys::rte_mbuf) -> *mut u8 {
        // SAFETY: per the contract; data_off is within the buffer by DPDK's invariants.
        unsafe {
            let base: *mut u8 = read(m, BUF_ADDR);
            base.add(usize::from(read::<u16>(m, DATA_OFF)))
        }
    }

    /// The refcount, read atomically (relaxed, as `rte_mbuf_refcnt_read`): other lcores holding
    /// a shared buffer update it concurrently.
    ///
    /// # Safety
    /// As [`read`].
    #[inline(always)]
    pub unsafe fn refcnt(m: *const sys::rte_mbuf) -> u16 {
        // SAFETY: the field is a 2-byte aligned u16 inside the live header, only ever accessed
        // atomically by DPDK; a relaxed atomic load is what rte_mbuf_refcnt_read does.
        unsafe {
            let p = m.cast::<u8>().add(REFCNT).cast::<u16>().cast_mut();
            std::sync::atomic::AtomicU16::from_ptr(p).load(std::sync::atomic::Ordering::Relaxed)
        }
    }
}

/// The error of mbuf operation `op`, refused because `why`.
#[inline]
fn refused(op: &'static str, why: &'static str) -> Error {
    Error::Mbuf { op, why }
}

/// `len` as the `u16` the mbuf API takes.
#[inline]
fn len16(op: &'static str, len: usize) -> Result<u16> {
    u16::try_from(len).map_err(|_| refused(op, "length over 65535"))
}

impl Mbuf {
    pub(crate) fn from_nonnull(ptr: NonNull<sys::rte_mbuf>) -> Mbuf {
        Mbuf { ptr }
    }

    /// Gives up ownership without freeing (the caller passes it to DPDK).
    pub(crate) fn into_raw(self) -> *mut sys::rte_mbuf {
        let p = self.ptr.as_ptr();
        std::mem::forget(self);
        p
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::rte_mbuf {
        self.ptr.as_ptr()
    }

    /// Bytes in this (first) segment.
    #[inline]
    pub fn data_len(&self) -> usize {
        // SAFETY: self.ptr is a valid mbuf we own; data_len is a u16 at field::DATA_LEN.
        usize::from(unsafe { field::read::<u16>(self.ptr.as_ptr(), field::DATA_LEN) })
    }

    /// Bytes in the whole chain.
    #[inline]
    pub fn pkt_len(&self) -> usize {
        // SAFETY: self.ptr is a valid mbuf we own; pkt_len is a u32 at field::PKT_LEN.
        unsafe { field::read::<u32>(self.ptr.as_ptr(), field::PKT_LEN) as usize }
    }

    /// Number of segments in the chain.
    #[inline]
    pub fn segments(&self) -> usize {
        // SAFETY: self.ptr is a valid mbuf we own; nb_segs is a u16 at field::NB_SEGS.
        usize::from(unsafe { field::read::<u16>(self.ptr.as_ptr(), field::NB_SEGS) })
    }

    /// Free bytes in front of the data (room for [`Mbuf::prepend`]).
    pub fn headroom(&self) -> usize {
        // SAFETY: self.ptr is a valid mbuf we own.
        unsafe { sys::photon_mbuf_headroom(self.ptr.as_ptr()) as usize }
    }

    /// Free bytes after the data in this segment (room for [`Mbuf::append`]).
    pub fn tailroom(&self) -> usize {
        // SAFETY: self.ptr is a valid mbuf we own.
        unsafe { sys::photon_mbuf_tailroom(self.ptr.as_ptr()) as usize }
    }

    /// References to this segment's buffer (1 when we are the only holder).
    #[inline]
    pub fn refcnt(&self) -> u16 {
        // SAFETY: self.ptr is a valid mbuf we own.
        unsafe { field::refcnt(self.ptr.as_ptr()) }
    }

    /// True when the bytes may be written: this segment is direct (owns its buffer) and
    /// nobody else references it.
    #[inline]
    pub fn is_writable(&self) -> bool {
        // SAFETY: self.ptr is a valid mbuf we own.
        let direct = unsafe { sys::photon_mbuf_is_direct(self.ptr.as_ptr()) } != 0;
        direct && self.refcnt() == 1
    }

    /// The first segment's bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        // SAFETY: mtod points at data_len initialised bytes inside the mbuf's buffer, which
        // stays alive while we hold a reference; nobody writes it while a shared reference
        // exists because writers need `&mut self` and `is_writable()`.
        unsafe {
            let p = field::data(self.ptr.as_ptr());
            std::slice::from_raw_parts(p, self.data_len())
        }
    }

    /// The first segment's bytes, mutably; `None` if the buffer is shared (refcount > 1 or an
    /// indirect clone), where writing would change what other holders see.
    #[inline]
    pub fn data_mut(&mut self) -> Option<&mut [u8]> {
        if !self.is_writable() {
            return None;
        }
        // SAFETY: as in data(), and we are the only reference to this buffer (checked above),
        // with `&mut self` excluding other borrows of this handle.
        unsafe {
            let p = field::data(self.ptr.as_ptr());
            Some(std::slice::from_raw_parts_mut(p, self.data_len()))
        }
    }

    /// Grows the data at the front by `len` bytes (taken from the headroom) and returns them.
    pub fn prepend(&mut self, len: usize) -> Result<&mut [u8]> {
        let len16 = len16("prepend", len)?;
        if !self.is_writable() {
            return Err(refused("prepend", "buffer is shared"));
        }
        // SAFETY: valid owned mbuf; rte_pktmbuf_prepend checks the headroom and returns NULL
        // when it is too small; on success `len` bytes at the returned pointer are ours.
        unsafe {
            let p = sys::photon_pktmbuf_prepend(self.ptr.as_ptr(), len16);
            if p.is_null() {
                return Err(refused("prepend", "not enough headroom"));
            }
            Ok(std::slice::from_raw_parts_mut(p as *mut u8, len))
        }
    }

    /// Grows the data at the end by `len` bytes (from the last segment's tailroom) and
    /// returns them (uninitialised contents are whatever the buffer held: overwrite them).
    pub fn append(&mut self, len: usize) -> Result<&mut [u8]> {
        let len16 = len16("append", len)?;
        if !self.is_writable() || self.segments() != 1 {
            return Err(refused("append", "buffer is shared or chained"));
        }
        // SAFETY: valid owned single-segment mbuf; rte_pktmbuf_append checks the tailroom
        // and returns NULL when too small; the returned bytes lie inside our buffer.
        unsafe {
            let p = sys::photon_pktmbuf_append(self.ptr.as_ptr(), len16);
            if p.is_null() {
                return Err(refused("append", "not enough tailroom"));
            }
            Ok(std::slice::from_raw_parts_mut(p as *mut u8, len))
        }
    }

    /// Appends `bytes` (copy) to a single-segment mbuf.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) -> Result<()> {
        self.append(bytes.len())?.copy_from_slice(bytes);
        Ok(())
    }

    /// Removes `len` bytes from the front of the data.
    #[inline]
    pub fn adj(&mut self, len: usize) -> Result<()> {
        let len16 = len16("adj", len)?;
        // SAFETY: valid owned mbuf; rte_pktmbuf_adj returns NULL if len > data_len. It only
        // moves this handle's data offset; for a shared buffer every holder has its own
        // (indirect) mbuf header, or the caller owns the only reference.
        let p = unsafe { sys::photon_pktmbuf_adj(self.ptr.as_ptr(), len16) };
        if p.is_null() {
            Err(refused("adj", "longer than the first segment"))
        } else {
            Ok(())
        }
    }

    /// Removes `len` bytes from the end of the data.
    #[inline]
    pub fn trim(&mut self, len: usize) -> Result<()> {
        let len16 = len16("trim", len)?;
        // SAFETY: valid owned mbuf; rte_pktmbuf_trim returns -1 if len > last segment's length.
        let r = unsafe { sys::photon_pktmbuf_trim(self.ptr.as_ptr(), len16) };
        if r != 0 {
            Err(refused("trim", "longer than the last segment"))
        } else {
            Ok(())
        }
    }

    /// Chains `tail` after this mbuf's last segment (`rte_pktmbuf_chain`). On failure (too
    /// many segments) both are given back.
    pub fn chain(self, tail: Mbuf) -> std::result::Result<Mbuf, (Error, Mbuf, Mbuf)> {
        // SAFETY: both are valid owned mbufs; on success the chain owns tail (so we must not
        // free it separately: into_raw below); on failure nothing changed.
        let r = unsafe { sys::photon_pktmbuf_chain(self.ptr.as_ptr(), tail.as_ptr()) };
        if r != 0 {
            return Err((refused("chain", "too many segments"), self, tail));
        }
        let _ = tail.into_raw();
        Ok(self)
    }

    /// Chains a shared payload after this header mbuf: the zero-copy fan-out of DPDK's
    /// ipv4_multicast example. The payload's reference moves into the chain; freeing the
    /// chain drops it.
    pub fn chain_shared(
        self,
        payload: SharedMbuf,
    ) -> std::result::Result<Mbuf, (Error, Mbuf, SharedMbuf)> {
        // SAFETY: the header is a valid owned mbuf and the payload a valid single-segment
        // mbuf whose reference we hold; rte_pktmbuf_chain writes the header's last segment
        // `next` pointer and the header's nb_segs/pkt_len; of the payload it only stores
        // `pkt_len = data_len`, the value a single segment already has, so other holders of
        // the payload see no change. On success the chain owns
        // our reference (freed by rte_pktmbuf_free, which decrements the payload's refcount).
        let r = unsafe { sys::photon_pktmbuf_chain(self.ptr.as_ptr(), payload.as_ptr()) };
        if r != 0 {
            return Err((refused("chain_shared", "too many segments"), self, payload));
        }
        std::mem::forget(payload);
        Ok(self)
    }

    /// An indirect clone (`rte_pktmbuf_clone`): new mbuf headers from `pool` that point at this
    /// chain's buffers, whose refcounts are raised. Neither copy is writable afterwards.
    pub fn clone_into(&self, pool: &Mempool) -> Result<Mbuf> {
        // SAFETY: valid mbuf and pool; returns NULL when the pool is empty.
        let c = unsafe { sys::photon_pktmbuf_clone(self.ptr.as_ptr(), pool.as_ptr()) };
        NonNull::new(c)
            .map(Mbuf::from_nonnull)
            .ok_or(Error::PoolEmpty {
                pool: "clone pool".into(),
            })
    }

    /// Turns a single-segment, direct mbuf into a [`SharedMbuf`] for fan-out.
    #[inline]
    pub fn into_shared(self) -> std::result::Result<SharedMbuf, (Error, Mbuf)> {
        if self.segments() != 1 {
            // rte_pktmbuf_free walks `next` of a shared segment once per holder, so only
            // single-segment payloads can be shared by refcount.
            return Err((refused("into_shared", "payload must be one segment"), self));
        }
        // SAFETY: reading a flag of a valid mbuf.
        if unsafe { sys::photon_mbuf_is_direct(self.ptr.as_ptr()) } == 0 {
            return Err((
                refused("into_shared", "payload must be a direct mbuf"),
                self,
            ));
        }
        let ptr = self.ptr;
        std::mem::forget(self);
        Ok(SharedMbuf { ptr })
    }

    /// The bytes of every segment in order.
    pub fn segments_data(&self) -> SegmentIter<'_> {
        SegmentIter {
            next: self.ptr.as_ptr(),
            _owner: std::marker::PhantomData,
        }
    }

    /// Copies the whole chain into a Vec (for tests and slow paths).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.pkt_len());
        for s in self.segments_data() {
            v.extend_from_slice(s);
        }
        v
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own this mbuf chain; rte_pktmbuf_free returns each segment to its pool
        // or drops one reference from shared segments.
        unsafe { sys::photon_pktmbuf_free(self.ptr.as_ptr()) }
    }
}

/// Iterator over the data of each segment of a chain.
pub struct SegmentIter<'a> {
    next: *mut sys::rte_mbuf,
    _owner: std::marker::PhantomData<&'a Mbuf>,
}

impl<'a> Iterator for SegmentIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.next.is_null() {
            return None;
        }
        // SAFETY: `next` is a segment of a chain borrowed for 'a; its data stays valid and
        // unmodified while the chain is borrowed.
        unsafe {
            let m = self.next;
            self.next = sys::photon_mbuf_next(m);
            let p = field::data(m);
            Some(std::slice::from_raw_parts(
                p,
                usize::from(field::read::<u16>(m, field::DATA_LEN)),
            ))
        }
    }
}

/// A read-only, reference-counted handle to one single-segment packet buffer, for zero-copy
/// fan-out: each `clone()` raises the buffer's refcount (`rte_mbuf_refcnt_update`), each drop
/// lowers it, and the buffer returns to its pool when the last reference goes (by drop or by
/// the driver freeing a transmitted chain).
#[derive(Debug)]
pub struct SharedMbuf {
    ptr: NonNull<sys::rte_mbuf>,
}

// SAFETY: the refcount is updated atomically by DPDK and the bytes are never written while
// shared, so handles may move between threads.
unsafe impl Send for SharedMbuf {}

impl SharedMbuf {
    pub(crate) fn as_ptr(&self) -> *mut sys::rte_mbuf {
        self.ptr.as_ptr()
    }

    /// The payload bytes.
    pub fn data(&self) -> &[u8] {
        // SAFETY: the buffer is alive while we hold a reference and nobody writes it (no
        // holder of a SharedMbuf can get mutable access).
        unsafe {
            let p = field::data(self.ptr.as_ptr());
            let len = field::read::<u16>(self.ptr.as_ptr(), field::DATA_LEN);
            std::slice::from_raw_parts(p, usize::from(len))
        }
    }

    /// Current number of references.
    #[inline]
    pub fn refcnt(&self) -> u16 {
        // SAFETY: read of a valid mbuf.
        unsafe { field::refcnt(self.ptr.as_ptr()) }
    }

    /// Takes `n` more references at once (one atomic add for a whole fan-out), returned as
    /// handles.
    pub fn share_n(&self, n: u16, out: &mut Vec<SharedMbuf>) {
        if n == 0 {
            return;
        }
        // SAFETY: valid mbuf we hold a reference to; the refcount is 16-bit and DPDK expects the
        // caller to stay under its limit (a fan-out is bounded far below 65535).
        unsafe { sys::photon_mbuf_refcnt_update(self.ptr.as_ptr(), n as i16) };
        for _ in 0..n {
            out.push(SharedMbuf { ptr: self.ptr });
        }
    }

    /// Returns the plain mbuf if this is the last reference.
    pub fn try_unshare(self) -> std::result::Result<Mbuf, SharedMbuf> {
        if self.refcnt() == 1 {
            let ptr = self.ptr;
            std::mem::forget(self);
            Ok(Mbuf::from_nonnull(ptr))
        } else {
            Err(self)
        }
    }
}

impl Clone for SharedMbuf {
    fn clone(&self) -> SharedMbuf {
        // SAFETY: valid mbuf we hold a reference to; atomic increment.
        unsafe { sys::photon_mbuf_refcnt_update(self.ptr.as_ptr(), 1) };
        SharedMbuf { ptr: self.ptr }
    }
}

impl Drop for SharedMbuf {
    fn drop(&mut self) {
        // SAFETY: drops our one reference; rte_pktmbuf_free decrements a shared segment and
        // frees it when the count reaches zero. The segment is single (checked in into_shared).
        unsafe { sys::photon_pktmbuf_free(self.ptr.as_ptr()) }
    }
}
