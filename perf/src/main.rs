//! `photon-perf`: Photon's benchmarks, the end-to-end run's emulated nodes and report, and the
//! capture replay tools.
//!
//! Every benchmark prints its figures side by side with the reference it is compared against,
//! measured in the same run (see perf/RESULTS.md for recorded results and their commands).
#![forbid(unsafe_code)]

mod bcoin_net;
mod e2e;
mod gateway_bench;
mod iofwd;
mod relay_bench;
mod veth_bench;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "photon-perf", about = "Photon benchmarks and testbed")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// io-forward between two net_null devices on one pinned core, on Photon's DPDK binding,
    /// measured in the same run as dpdk-testpmd --forward-mode=io on the same devices.
    Iofwd(iofwd::Args),
    /// Fragments/s one gateway core receives on loopback with batched recvmmsg, beside a plain
    /// one-datagram-per-recv loop in the same run.
    GatewayRx(gateway_bench::Args),
    /// The relay's per-core fan-out throughput (fan-out 1, 8, 16) beside dpdk-testpmd io-forward,
    /// and the latency it adds at half load.
    RelayBench(relay_bench::Args),
    /// The relay's DPDK and kernel-socket backends on the same af_packet/veth testbed: packets
    /// per second through one relay core at a fan-out, measured one after the other.
    VethBench(veth_bench::Args),
    /// The veth-bench generator (run by veth-bench inside the generator's namespace).
    #[command(hide = true)]
    VethGen(veth_bench::GenArgs),
    /// The Bitcoin P2P messages (version, inv, tx, block, cmpctblock, headers) of a pcap or
    /// pcapng capture, with TCP reassembly; prints what it found and counted.
    ReplayPcap(photon_perf::replay::ReplayPcapArgs),
    /// A large pcap made of copies of a real one (time- and port-shifted), for parse-rate and
    /// memory measurements.
    CaptureTile(photon_perf::replay::write::TileArgs),
    /// The propagation report (percentiles, time to 90%, bytes on the wire, per-stage
    /// breakdown; JSON, markdown, SVG/PNG plots) from the JSON-lines records of a run.
    Report(photon_perf::report::ReportArgs),
    /// The baselines of one session side by side (report.json of each variant), with the
    /// physical limit of a chosen block and the perf goals checked (scripts/baselines.sh).
    Compare(photon_perf::compare::CompareArgs),
    /// One emulated Bitcoin node as its own process (the end-to-end run, scripts/demo.sh):
    /// records what its gateway delivers; with --replay, plays a trace of real blocks; with
    /// --capture, the transactions and blocks of a pcap/pcapng capture at its own timing.
    Emunode(e2e::Args),
    /// A network of real bcoin nodes on the testbed (scripts/demo.sh with PHOTON_DEMO_NODE=
    /// bcoin): node 0 mines blocks of wallet transactions; each block's arrival from every
    /// node's own chain; through Photon (--mode photon) or as a P2P graph (--mode p2p).
    BcoinNet(bcoin_net::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Iofwd(args) => iofwd::run(&args),
        Cmd::GatewayRx(args) => gateway_bench::run(&args),
        Cmd::RelayBench(args) => relay_bench::run(&args),
        Cmd::VethBench(args) => veth_bench::run(&args),
        Cmd::VethGen(args) => veth_bench::run_gen(&args),
        Cmd::ReplayPcap(args) => photon_perf::replay::run_replay_pcap(&args),
        Cmd::CaptureTile(args) => photon_perf::replay::write::run_tile(&args),
        Cmd::Report(args) => photon_perf::report::run_report(&args),
        Cmd::Compare(args) => photon_perf::compare::run_compare(&args),
        Cmd::Emunode(args) => e2e::run(&args),
        Cmd::BcoinNet(args) => bcoin_net::run(&args),
    };
    if let Err(e) = result {
        eprintln!("photon-perf: {e}");
        std::process::exit(1);
    }
}
