//! The DPDK backend: EAL, ports, pools and rings from a config ([`dataplane`]), the pinned
//! per-core run-to-completion [`pipeline`], and the [`control_core`] that drives the sans-IO
//! control path from the data cores' rings; [`run`] starts them all.

pub mod control_core;
pub mod dataplane;
pub mod pipeline;
pub mod run;
