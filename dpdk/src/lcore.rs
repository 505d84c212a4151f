//! Pinned data-plane threads registered as DPDK lcores.

use std::thread::JoinHandle;

use photon_dpdk_sys as sys;

use crate::error::{rte_errno, strerror, Error, Result};
use crate::Eal;

/// What a pinned lcore thread knows about itself.
#[derive(Debug, Clone, Copy)]
pub struct Lcore {
    /// The CPU core the thread is pinned to.
    pub core: usize,
    /// The lcore id DPDK gave the thread (indexes per-lcore mempool caches).
    pub lcore_id: u32,
}

/// Spawns a std thread pinned to `core` (core_affinity) and registered as a DPDK lcore
/// (`rte_thread_register`), so per-lcore mempool caches work; it unregisters on exit.
/// Fails (inside the thread, returned by `join`) if the core does not exist or DPDK has no
/// free lcore slot.
pub fn spawn<F, T>(
    _eal: &Eal,
    core: usize,
    name: &str,
    f: F,
) -> std::io::Result<JoinHandle<Result<T>>>
where
    F: FnOnce(Lcore) -> T + Send + 'static,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            // Not limited to the current affinity mask: after rte_eal_init the main thread (and
            // so every thread it spawns) is confined to the EAL's main lcore.
            let pinned = core_affinity::set_for_current(core_affinity::CoreId { id: core });
            if !pinned {
                return Err(Error::Pin { core });
            }
            // SAFETY: the EAL is running (the caller holds &Eal); registers the calling thread.
            if unsafe { sys::rte_thread_register() } != 0 {
                let e = rte_errno();
                return Err(Error::ThreadRegister {
                    message: strerror(e),
                });
            }
            // SAFETY: reads the per-thread lcore id just assigned.
            let lcore_id = unsafe { sys::photon_lcore_id() };
            let out = f(Lcore { core, lcore_id });
            // SAFETY: this thread registered above; unregistering frees its lcore slot.
            unsafe { sys::rte_thread_unregister() };
            Ok(out)
        })
}

/// The CPU cores this process may run on (ask before `Eal::init`, which narrows the calling
/// thread's affinity to the EAL's main lcore).
pub fn available_cores() -> Vec<usize> {
    core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect()
}
