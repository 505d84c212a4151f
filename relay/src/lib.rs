//! The Photon relay: cut-through fan-out of block fragments on DPDK poll-mode drivers.
//!
//! Layers, sans-IO first:
//! - [`packet`]: Ethernet/ARP/IPv4/UDP/ICMP with smoltcp's zero-copy views: [`packet::classify`]
//!   a frame, answer ARP and ICMP echo in place, build a forwarded copy's header.
//! - [`table`]: the forwarding table (peers, their observed addresses, hop keys, fan-out list),
//!   immutable and published to running cores by [`publish`].
//! - [`dedup`]: the lock-free shared table that forwards each fragment once.
//! - [`forward`]: the decision for one fragment (admit, then one header per destination);
//!   [`hold`]: the store-and-forward baseline (hold a stream until its block could be rebuilt).
//! - [`counters`]: per-core counters, published in the housekeeping branch.
//! - [`pipeline`]: the per-core DPDK run loop driving the above.
//! - [`config`]: the TOML configuration; [`dataplane`]: EAL, ports, pools, rings and pinned
//!   cores from a config.
//! - [`control`]: the sans-IO control path (registration, keepalives, short IDs, repairs,
//!   receipts and key releases); [`socket`]: the kernel-socket backend (batched UDP, same
//!   forwarding decision); [`metrics`]: the Prometheus endpoint and log settings.
//! - [`stages`]: stage records (`[perf] stage_log`) for the propagation report.
//! - [`fuzzing`]: the fuzz entry point over the frame classifier and the control path.
#![forbid(unsafe_code)]

pub mod config;
pub mod control;
pub mod counters;
pub mod dataplane;
pub mod dedup;
pub mod forward;
pub mod fuzzing;
pub mod hold;
pub mod metrics;
pub mod packet;
pub mod pipeline;
pub mod publish;
pub mod socket;
pub mod stages;
pub mod table;
