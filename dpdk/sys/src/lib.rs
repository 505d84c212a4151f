//! Raw bindings to the system DPDK (22.11 LTS, found with pkg-config) and to Photon's C shim
//! (`csrc/shim.h`) for DPDK's static-inline fast-path functions.
//!
//! Everything here is `unsafe` to call; the safe layer is the `photon-dpdk` crate.

/// bindgen's output, unedited. Its accessors for C bitfields contain `unsafe` blocks that
/// bindgen writes without comments; the lints that require them apply to our code, not to
/// generated FFI declarations.
#[allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code
)]
#[allow(
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc
)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}

pub use generated::*;
