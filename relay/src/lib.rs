//! The Photon relay: cut-through fan-out of block fragments, on DPDK poll-mode drivers or on a
//! kernel UDP socket. The tree is the architecture (`docs/internals/relay.md` has the why):
//! - [`packet`]: every frame and datagram parser and writer (Ethernet/ARP/IPv4/UDP/ICMP
//!   through smoltcp's views, the Photon classification, the forwarded copy's header).
//! - [`forward`]: the forwarding sequence, sans-IO: admission, dedup, hold (store-and-forward),
//!   the forwarding table and its publication, one header per destination. Both backends drive
//!   [`forward::sequence::Forwarder`].
//! - [`control`]: the sans-IO control path (registration, keepalives, short IDs, repairs,
//!   receipts, key releases, ARP).
//! - [`dpdk`] (cargo feature `dpdk`, on by default): the DPDK backend: data plane set-up, the
//!   per-core pipeline, the control core.
//! - [`socket`]: the kernel-socket backend.
//! - [`ops`]: configuration, counters, the `/metrics` endpoint, stage records.
//! - `fuzzing` (cargo feature `fuzzing`): the fuzz entry point.
//! - `testkit` (tests, and cargo feature `test-support`): frame builders the tests share.
#![forbid(unsafe_code)]

pub mod control;
#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod forward;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod ops;
pub mod packet;
pub mod socket;
#[cfg(any(test, feature = "test-support"))]
#[doc(hidden)]
pub mod testkit;
