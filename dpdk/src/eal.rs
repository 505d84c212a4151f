use std::ffi::CString;
use std::os::raw::c_char;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{rte_errno, strerror, Args, Error, Result};

static STARTED: AtomicBool = AtomicBool::new(false);

/// Proof that the EAL is running in this process. DPDK calls that need the EAL take `&Eal`.
///
/// The EAL starts once per process and is never restarted; this handle is `'static` in practice
/// (keep it for the life of the program, e.g. in a `OnceLock`).
#[derive(Debug)]
pub struct Eal {
    _private: (),
}

impl Eal {
    /// Starts the EAL with `args` as if they were a command line (`args[0]` is the program
    /// name). A bad argument, a device that cannot be probed or missing memory comes back as
    /// [`Error::EalInit`] with DPDK's message; DPDK prints its own log lines to stderr as well.
    ///
    /// Typical test arguments: `["photon", "--no-huge", "--no-shconf", "--no-pci", "-m", "256",
    /// "--vdev", "net_ring0"]`.
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal> {
        if STARTED.swap(true, Ordering::SeqCst) {
            return Err(Error::EalAlreadyInitialized);
        }
        let owned: Vec<String> = args.iter().map(|a| a.as_ref().to_owned()).collect();
        let cstrings = owned
            .iter()
            .map(|a| CString::new(a.as_str()).map_err(|_| Error::NulInArgument(a.clone())))
            .collect::<Result<Vec<_>>>()?;
        // rte_eal_init may permute argv (getopt) and keeps pointers into it (e.g. for the
        // program name), so the strings and the array are leaked: the EAL lives as long as
        // the process.
        let cstrings: &'static mut [CString] = Vec::leak(cstrings);
        let argv: Vec<*mut c_char> = cstrings
            .iter_mut()
            .map(|c| c.as_ptr() as *mut c_char)
            .collect();
        let argv: &'static mut [*mut c_char] = Vec::leak(argv);
        let argc = argv.len() as i32;
        // SAFETY: argv points to `argc` valid NUL-terminated strings that are never freed;
        // STARTED guarantees this is the only call in the process.
        let ret = unsafe { photon_dpdk_sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            let errno = rte_errno();
            return Err(Error::EalInit {
                errno,
                message: strerror(errno),
                args: Args(&owned).to_string(),
            });
        }
        Ok(Eal { _private: () })
    }

    /// Creates (hot-plugs) a virtual device after start-up with `rte_dev_probe`, e.g.
    /// `("net_ring0", "")` or `("net_null0", "size=64")`.
    pub fn create_vdev(&self, name: &str, args: &str) -> Result<()> {
        let devargs = if args.is_empty() {
            name.to_owned()
        } else {
            format!("{name},{args}")
        };
        let c =
            CString::new(devargs.as_str()).map_err(|_| Error::NulInArgument(devargs.clone()))?;
        // SAFETY: valid C string for the duration of the call; the EAL is running.
        let ret = unsafe { photon_dpdk_sys::rte_dev_probe(c.as_ptr()) };
        crate::error::check("rte_dev_probe", ret).map(|_| ())
    }

    /// Number of ethdev ports the EAL found.
    pub fn port_count(&self) -> u16 {
        // SAFETY: plain query on the running EAL.
        unsafe { photon_dpdk_sys::rte_eth_dev_count_avail() }
    }

    /// The NUMA socket of the calling thread.
    pub fn socket_id(&self) -> i32 {
        // SAFETY: plain query on the running EAL.
        unsafe { photon_dpdk_sys::rte_socket_id() as i32 }
    }

    /// The calling thread's DPDK lcore id, or `None` for a thread DPDK does not know.
    pub fn lcore_id(&self) -> Option<u32> {
        // SAFETY: reads a per-thread variable.
        let id = unsafe { photon_dpdk_sys::photon_lcore_id() };
        (id < photon_dpdk_sys::RTE_MAX_LCORE).then_some(id)
    }
}
