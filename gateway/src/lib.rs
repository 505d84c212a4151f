//! The Photon gateway: speaks its node's P2P protocol and the Photon protocol to relays.
//!
//! - [`node`]: the Bitcoin P2P peer to the local node (sans-IO `NodePeer`, TCP driver).
//! - [`core`]: the network side as a sans-IO state machine ([`core::Gateway`]).
//! - [`driver`]: the thread that joins node connection, core and socket.
//! - [`config`]: the TOML configuration; [`metrics`]: Prometheus `/metrics`.
#![forbid(unsafe_code)]
pub mod config;
pub mod core;
pub mod driver;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod metrics;
pub mod node;
