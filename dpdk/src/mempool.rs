use std::ffi::CString;
use std::ptr::NonNull;

use photon_dpdk_sys as sys;

use crate::error::{from_rte_errno, Error, Result};
use crate::{Eal, Mbuf};

/// A pool of packet buffers (`rte_pktmbuf_pool_create`).
///
/// Pools live until the process exits: DPDK cannot free a pool while any of its mbufs is still
/// referenced (by a queue, a ring, another thread), and a data-plane process keeps its pools for
/// its whole life anyway. The handle is a cheap copyable reference.
#[derive(Clone, Copy, Debug)]
pub struct Mempool {
    ptr: NonNull<sys::rte_mempool>,
}

// SAFETY: a pktmbuf pool's default ops ("ring_mp_mc") are multi-producer/multi-consumer safe,
// so the same pool may be used from several threads; the per-lcore caches are indexed by the
// calling thread's lcore id, which DPDK manages.
unsafe impl Send for Mempool {}
// SAFETY: as above; all methods go through thread-safe DPDK calls.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `n` mbufs with `data_room` bytes each (headroom included: use
    /// `RTE_MBUF_DEFAULT_BUF_SIZE`, 2048 + 128, for full-size frames) and a per-lcore cache
    /// of `cache` buffers (0 to disable; at most 512 and at most n / 1.5).
    pub fn new(_eal: &Eal, name: &str, n: u32, cache: u32, data_room: u16) -> Result<Mempool> {
        let cname = CString::new(name).map_err(|_| Error::NulInArgument(name.into()))?;
        // SAFETY: cname is a valid C string; the EAL is running (proved by `_eal`).
        let ptr = unsafe {
            sys::rte_pktmbuf_pool_create(cname.as_ptr(), n, cache, 0, data_room, sys::SOCKET_ID_ANY)
        };
        NonNull::new(ptr)
            .map(|ptr| Mempool { ptr })
            .ok_or_else(|| from_rte_errno("rte_pktmbuf_pool_create"))
    }

    /// Default data room: 2048 bytes of data plus DPDK's headroom.
    pub const DEFAULT_DATA_ROOM: u16 = sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16;

    /// Allocates one mbuf (empty, with the default headroom).
    #[inline]
    pub fn alloc(&self) -> Result<Mbuf> {
        // SAFETY: the pool pointer is valid for the life of the process.
        let m = unsafe { sys::photon_pktmbuf_alloc(self.ptr.as_ptr()) };
        NonNull::new(m)
            .map(Mbuf::from_nonnull)
            .ok_or_else(|| Error::PoolEmpty {
                pool: format!("{:p}", self.ptr),
            })
    }

    /// Allocates one mbuf holding `len` bytes of data and lets `init` write them, in a single
    /// call into the C shim (a fresh mbuf is direct, one segment and unshared, so none of
    /// [`Mbuf::append`]'s separate checks are needed). For per-packet header buffers.
    ///
    /// The bytes `init` sees are uninitialised pool memory from an earlier use of the buffer
    /// (zeroed or stale, never undefined): `init` is expected to overwrite them all.
    #[inline]
    pub fn alloc_init<R>(
        &self,
        len: usize,
        init: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<(Mbuf, R)> {
        let len16 = u16::try_from(len).map_err(|_| Error::Mbuf {
            op: "alloc_init",
            why: "length over 65535",
        })?;
        let mut m: *mut sys::rte_mbuf = std::ptr::null_mut();
        let mut data: *mut std::os::raw::c_char = std::ptr::null_mut();
        // SAFETY: the pool pointer is valid for the life of the process; `m` and `data` are
        // valid out-pointers, written only on success.
        let rc =
            unsafe { sys::photon_pktmbuf_alloc_len(self.ptr.as_ptr(), len16, &mut m, &mut data) };
        match (rc, NonNull::new(m)) {
            (0, Some(ptr)) if !data.is_null() => {
                let mbuf = Mbuf::from_nonnull(ptr);
                // SAFETY: `data` points at the `len` bytes rte_pktmbuf_append reserved inside
                // the buffer of `mbuf`, which we own alone (fresh, direct, refcount 1) and which
                // stays alive while `mbuf` does; the slice does not outlive this call. The bytes
                // are initialised memory of the pool's buffer (the pool zeroes it on creation).
                let bytes = unsafe { std::slice::from_raw_parts_mut(data.cast::<u8>(), len) };
                let r = init(bytes);
                Ok((mbuf, r))
            }
            (-2, _) => Err(Error::Mbuf {
                op: "alloc_init",
                why: "not enough tailroom",
            }),
            _ => Err(Error::PoolEmpty {
                pool: format!("{:p}", self.ptr),
            }),
        }
    }

    /// Mbufs currently taken from the pool (in flight anywhere: queues, rings, our code).
    /// Includes buffers parked in per-lcore caches as "available".
    pub fn in_use(&self) -> u32 {
        // SAFETY: read-only query on a valid pool.
        unsafe { sys::rte_mempool_in_use_count(self.ptr.as_ptr()) }
    }

    /// Mbufs free in the pool (its ring plus per-lcore caches).
    pub fn available(&self) -> u32 {
        // SAFETY: read-only query on a valid pool.
        unsafe { sys::rte_mempool_avail_count(self.ptr.as_ptr()) }
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.ptr.as_ptr()
    }
}
