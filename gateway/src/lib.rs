//! The Photon gateway: speaks its node's P2P protocol and the Photon protocol to relays.
#![forbid(unsafe_code)]
pub mod node;
