use std::fmt;

/// What went wrong in a DPDK call, with DPDK's own explanation where it gives one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// `rte_eal_init` failed: a bad argument, a missing device, no memory...
    #[error("EAL initialisation failed: {message} (rte_errno {errno}); arguments: {args}")]
    EalInit {
        errno: i32,
        message: String,
        args: String,
    },
    /// The EAL was already started in this process (it starts once per process).
    #[error("the EAL is already initialised in this process")]
    EalAlreadyInitialized,
    /// An argument could not be passed to C (it contains a NUL byte).
    #[error("argument {0:?} contains a NUL byte")]
    NulInArgument(String),
    /// A named ethdev port does not exist.
    #[error("no DPDK port named {name:?}: check the --vdev/--allow arguments and that the device is bound to a DPDK driver")]
    PortNotFound { name: String },
    /// A DPDK call returned an error code.
    #[error("{call} failed: {message} (errno {errno})")]
    Call {
        call: &'static str,
        errno: i32,
        message: String,
    },
    /// An mbuf operation did not fit (not enough headroom/tailroom, too many segments, ...).
    #[error("mbuf operation {op} failed: {why}")]
    Mbuf { op: &'static str, why: &'static str },
    /// The pool had no free buffer.
    #[error("mempool {pool} is empty")]
    PoolEmpty { pool: String },
    /// A queue index past what the port was configured with, or already taken.
    #[error("queue {queue} of port {port} is not available: {why}")]
    Queue {
        port: u16,
        queue: u16,
        why: &'static str,
    },
    /// The calling thread is not a DPDK lcore and could not be registered.
    #[error("could not register the thread as a DPDK lcore: {message}")]
    ThreadRegister { message: String },
    /// Pinning the thread to a core failed.
    #[error("could not pin the thread to core {core}")]
    Pin { core: usize },
}

/// Result of a DPDK operation.
pub type Result<T> = std::result::Result<T, Error>;

/// DPDK's text for an errno value (`rte_strerror` knows DPDK's own codes as well as libc's).
pub(crate) fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated string
    // that stays valid at least until the next call on this thread; we copy it at once.
    unsafe {
        let p = photon_dpdk_sys::rte_strerror(errno);
        if p.is_null() {
            return format!("errno {errno}");
        }
        std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// The current thread's `rte_errno`.
pub(crate) fn rte_errno() -> i32 {
    // SAFETY: reads the per-lcore errno variable of the calling thread; no preconditions.
    unsafe { photon_dpdk_sys::photon_errno() }
}

/// Turns a DPDK return code into a `Result`: negative values are `-errno` (ethdev style).
pub(crate) fn check(call: &'static str, ret: i32) -> Result<i32> {
    if ret >= 0 {
        Ok(ret)
    } else {
        let errno = -ret;
        Err(Error::Call {
            call,
            errno,
            message: strerror(errno),
        })
    }
}

/// For calls that return NULL/-1 and set `rte_errno`.
pub(crate) fn from_rte_errno(call: &'static str) -> Error {
    let errno = rte_errno();
    Error::Call {
        call,
        errno,
        message: strerror(errno),
    }
}

pub(crate) struct Args<'a>(pub &'a [String]);

impl fmt::Display for Args<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(" "))
    }
}
