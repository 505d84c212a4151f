//! What Photon's binaries (relay, gateway) and `perf` share, each in one place: identity files
//! and keygen ([`keys`]), log set-up ([`log`]), the `/metrics` HTTP responder ([`http`]), the
//! stage-record format, writer and reader types ([`stages`]), config errors ([`config`]), and
//! background threads stopped by one flag ([`threads`]).
#![forbid(unsafe_code)]

pub mod config;
pub mod http;
pub mod keys;
pub mod log;
pub mod roster;
pub mod stages;
pub mod threads;
