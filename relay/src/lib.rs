//! The Photon relay: cut-through fan-out of block fragments on DPDK poll-mode drivers.
#![forbid(unsafe_code)]
