//! `photon-perf`: Photon's benchmarks and (later) testbed driver.
//!
//! Every benchmark prints its figures side by side with the reference it is compared against,
//! measured in the same run (see perf/RESULTS.md for recorded results and their commands).

mod iofwd;

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
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Iofwd(args) => iofwd::run(&args),
    };
    if let Err(e) = result {
        eprintln!("photon-perf: {e}");
        std::process::exit(1);
    }
}
