//! The Photon relay: cut-through fan-out of block fragments on DPDK poll-mode drivers.
//!
//! Layers, sans-IO first:
//! - [`packet`]: Ethernet/ARP/IPv4/UDP/ICMP with smoltcp's zero-copy views: [`packet::classify`]
//!   a frame, answer ARP and ICMP echo in place, build a forwarded copy's header.
//! - [`table`]: the forwarding table (peers, their observed addresses, hop keys, fan-out list),
//!   immutable and published to running cores by [`publish`].
//! - [`dedup`]: the lock-free shared table that forwards each fragment once.
//! - [`forward`]: the decision for one fragment (admit, then one header per destination).
//! - [`counters`]: per-core counters, published in the housekeeping branch.
//! - [`pipeline`]: the per-core DPDK run loop driving the above.
//! - [`config`]: the TOML configuration; [`dataplane`]: EAL, ports, pools, rings and pinned
//!   cores from a config.
#![forbid(unsafe_code)]

pub mod config;
pub mod counters;
pub mod dataplane;
pub mod dedup;
pub mod forward;
pub mod packet;
pub mod pipeline;
pub mod publish;
pub mod table;
