//! The `photon-perf` library: what the benchmarks, the testbed and the end-to-end propagation
//! run are built from.
//!
//! - [`replay`]: Bitcoin P2P messages pulled out of packet captures (pcap and pcapng), with TCP
//!   reassembly that survives lost packets and mid-stream starts.
//! - [`capture_feed`]: a capture replayed through the testbed: streamed, deduplicated across
//!   its peers, at its own timing; each block's announcements across the capture's peers.
//! - [`trace`]: a replay built from real blocks (their transactions arrive as a Poisson stream
//!   before each block; a chosen fraction never reaches the receivers).
//! - [`impair`]: a seeded delay/jitter/loss/reorder/duplicate link (sans-IO core and a UDP
//!   forwarder), since netem is not available everywhere.
//! - [`report`]: propagation percentiles, bytes on the wire, per-stage breakdown; JSON, markdown
//!   and plots. Its input formats (JSON lines the gateways and emulated nodes write) are in
//!   `perf/README.md`.
//! - [`emunode`]: an emulated Bitcoin node the gateway connects to: it feeds a replay and
//!   records what reaches it.
//! - [`realnode`]: real full nodes written by others (bcoin), started, stopped and driven over
//!   their RPC.
//! - [`testbed`]: network namespaces, veth links and a bridge (`scripts/testbed.sh`).

#![forbid(unsafe_code)]

pub mod capture_feed;
pub mod compare;
pub mod emunode;
pub mod impair;
pub mod realnode;
pub mod replay;
pub mod report;
pub mod testbed;
pub mod trace;
