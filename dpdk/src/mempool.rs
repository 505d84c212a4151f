use std::ffi::CString;
use std::ptr::NonNull;

use photon_dpdk_sys as sys;

use crate::error::{from_rte_errno, Error, Result};
use crate::{Eal, Mbuf, SharedMbuf, MAX_BURST};

/// Most copies one [`Mempool::alloc_chained`] call makes (a burst's worth).
pub const MAX_CHAINED: usize = MAX_BURST;

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

/// The mbufs of a bulk allocation that no `Mbuf` owns yet; freed when dropped.
struct Untaken<'a>(&'a [*mut sys::rte_mbuf]);

impl Drop for Untaken<'_> {
    fn drop(&mut self) {
        for &m in self.0 {
            // SAFETY: each pointer is a live mbuf from the bulk allocation that nothing else
            // owns or references (rte_pktmbuf_free of NULL is a no-op).
            unsafe { sys::photon_pktmbuf_free(m) }
        }
    }
}

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

    /// A fan-out's header mbufs in one call into the shim: `n` (at most [`MAX_CHAINED`]) fresh
    /// mbufs from this pool in one bulk get, each holding `len` bytes that `init(i, bytes)`
    /// writes (i = 0..n, in order), each chained in front of a new reference to `payload` (the
    /// refcount is raised by `n` in one update). What `init` returns with `Some` is pushed to
    /// `out` beside its chain; a copy for which it returns `None` is freed at once (its
    /// payload reference with it). `out` should have room for `n` more (then nothing
    /// allocates). Per copy this saves what [`Mempool::alloc_init`] + [`Mbuf::chain_shared`]
    /// pay twice: a call into the shim, a mempool-cache access and a payload refcount update.
    ///
    /// As with `alloc_init`, `init` sees stale pool bytes and is expected to overwrite them.
    /// Errors: `n` over [`MAX_CHAINED`] or `len` over a fresh buffer's room (nothing
    /// allocated, `init` not called); the pool cannot give `n` mbufs ([`Error::PoolEmpty`]).
    #[inline]
    pub fn alloc_chained<T>(
        &self,
        len: usize,
        payload: &SharedMbuf,
        n: usize,
        mut init: impl FnMut(usize, &mut [u8]) -> Option<T>,
        out: &mut Vec<(Mbuf, T)>,
    ) -> Result<()> {
        if n > MAX_CHAINED {
            return Err(Error::Mbuf {
                op: "alloc_chained",
                why: "more than MAX_CHAINED copies",
            });
        }
        let len16 = u16::try_from(len).map_err(|_| Error::Mbuf {
            op: "alloc_chained",
            why: "length over 65535",
        })?;
        let mut mbufs = [std::ptr::null_mut::<sys::rte_mbuf>(); MAX_CHAINED];
        let mut data = [std::ptr::null_mut::<std::os::raw::c_char>(); MAX_CHAINED];
        // SAFETY: the pool and payload pointers are valid (the payload is a single direct
        // segment: `SharedMbuf` is only made from one, and we hold a reference to it for the
        // whole call); `mbufs` and `data` have room for `n <= MAX_CHAINED` entries and are
        // written only on success. The shim raises the payload's refcount by `n`: one
        // reference for each chain made here.
        let rc = unsafe {
            sys::photon_pktmbuf_alloc_chained(
                self.ptr.as_ptr(),
                len16,
                payload.as_ptr(),
                mbufs.as_mut_ptr(),
                data.as_mut_ptr(),
                n as std::os::raw::c_uint,
            )
        };
        match rc {
            0 => {}
            -2 => {
                return Err(Error::Mbuf {
                    op: "alloc_chained",
                    why: "not enough tailroom",
                })
            }
            _ => {
                return Err(Error::PoolEmpty {
                    pool: format!("{:p}", self.ptr),
                })
            }
        }
        // Each mbuf becomes an owned `Mbuf` just before its `init`; those not reached yet are
        // freed by the guard (with their payload references) if `init` unwinds.
        let mut untaken = Untaken(&mbufs[..n]);
        for (i, &d) in data[..n].iter().enumerate() {
            let Some((&m, rest)) = untaken.0.split_first() else {
                break;
            };
            untaken.0 = rest;
            let Some(ptr) = NonNull::new(m) else {
                continue;
            };
            let mbuf = Mbuf::from_nonnull(ptr);
            if d.is_null() {
                continue;
            }
            // SAFETY: `d` points at the `len` bytes reserved at the start of `mbuf`'s own
            // buffer (fresh, direct, refcount 1, owned by `mbuf` alone; the payload behind it is
            // another buffer); the slice ends before `mbuf` can move or drop.
            let bytes = unsafe { std::slice::from_raw_parts_mut(d.cast::<u8>(), len) };
            if let Some(t) = init(i, bytes) {
                out.push((mbuf, t));
            }
        }
        Ok(())
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
