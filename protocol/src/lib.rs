//! The Photon wire protocol, sans-IO: no sockets, no DPDK, no threads, no clock reads.
//!
//! The caller passes `now` and byte buffers; everything here can be tested, fuzzed and
//! benchmarked alone. The specification is `docs/protocol.md`; modules cite its sections.
#![forbid(unsafe_code)]

// §1-2 framing and message kinds; §4.2 per-hop authentication; §5 sealing and identities.
pub mod hopauth;
pub mod identity;
pub mod roster;
pub mod seal;
pub mod wire;

// §3 forward error correction; §4.1 block integrity; §7 sender and assembler state machines.
pub mod assembler;
pub mod fec;
pub mod fifo;
pub mod integrity;
pub mod sender;

// §6 short IDs, block compression and the chain adapter.
pub mod chain;
pub mod compress;
pub mod shortid;
