//! Photon's safe layer over the system DPDK (22.11 LTS).
//!
//! This crate and `photon-dpdk-sys` are the only places in Photon where `unsafe` is allowed;
//! every `unsafe` block says why it is sound. The pieces:
//!
//! - [`Eal`]: the Environment Abstraction Layer, started once per process from an argument list;
//!   errors come back as values with DPDK's own message.
//! - [`Mempool`]: packet-buffer pools (`rte_pktmbuf_pool_create`), with in-use counts for leak checks.
//! - [`Mbuf`]: an owning packet buffer (Drop frees), checked data access, headroom prepend,
//!   chaining, and [`SharedMbuf`] for zero-copy fan-out by refcount.
//! - [`MbufBatch`]: a burst of owned mbufs; RX fills it, TX takes what the driver accepted and
//!   leaves the rest owned (to retry or drop).
//! - [`Port`], [`RxQueue`], [`TxQueue`]: ethdev ports with N queues (RSS when N > 1), link status.
//! - [`Ring`]: `rte_ring` links between pipeline stages, split into a producer and a consumer.
//! - [`lcore::spawn`]: a std thread pinned with core_affinity and registered as a DPDK lcore.

mod batch;
mod eal;
mod error;
pub mod lcore;
mod mbuf;
mod mempool;
mod port;
mod ring;

pub use batch::{MbufBatch, MAX_BURST};
pub use eal::Eal;
pub use error::{Error, Result};
pub use mbuf::{Mbuf, SharedMbuf};
pub use mempool::{Mempool, MAX_CHAINED};
pub use port::{Link, Port, PortConfig, PortStats, RxQueue, TxQueue};
pub use ring::{Ring, RingConsumer, RingProducer};

/// Reads the CPU's time-stamp counter (`rte_rdtsc`): a cheap monotonic clock for per-packet
/// latency stamps. Convert with [`tsc_hz`].
#[inline]
pub fn rdtsc() -> u64 {
    // rte_rdtsc is the rdtsc instruction; inline here rather than a call into the shim (it
    // is read once per poll of every pipeline).
    #[cfg(target_arch = "x86_64")]
    // SAFETY: rdtsc has no preconditions and touches no memory.
    return unsafe { core::arch::x86_64::_rdtsc() };
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: photon_rdtsc executes rte_rdtsc; it has no preconditions.
    unsafe {
        photon_dpdk_sys::photon_rdtsc()
    }
}

/// Hints the CPU to load the cache line holding `value` into all cache levels
/// (`rte_prefetch0`), so a later access does not stall: the DPDK examples prefetch the next
/// packets' headers, and a table bucket can be prefetched one burst pass before it is used.
#[inline(always)]
pub fn prefetch<T: ?Sized>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint: it never faults, reads no memory architecturally and has no
    // effect on program state; SSE is part of the x86_64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
            value as *const T as *const i8,
        )
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// TSC ticks per second as measured by the EAL (valid after [`Eal::init`]).
pub fn tsc_hz(_eal: &Eal) -> u64 {
    // SAFETY: rte_get_tsc_hz reads a value the EAL computed at init; `_eal` proves init happened.
    unsafe { photon_dpdk_sys::rte_get_tsc_hz() }
}
