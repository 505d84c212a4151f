//! `photon-perf emunode`: one emulated Bitcoin node as its own process, for the end-to-end
//! propagation run (`scripts/demo.sh`), where each gateway sits in its own network namespace
//! beside one of these.
//!
//! A receiver listens for its gateway, records what reaches it and rewrites its records file
//! (JSON lines, `perf/README.md`) every [`FLUSH_EVERY`] until `--stop-file` exists or
//! `--max-seconds` pass. The source (`--replay`) waits for its gateway, builds a trace from real
//! blocks ([`Trace::from_blocks`]), prints its description, plays it (time-scaled with
//! `--speed`), lingers for late arrivals and writes its records.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use photon_perf::emunode::{BlockDelivery, EmuNode, EmuNodeConfig};
use photon_perf::trace::{load_blocks, Trace, TraceConfig};

/// How often a receiver rewrites its records file.
const FLUSH_EVERY: Duration = Duration::from_millis(500);

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The node's name in the records (`node0` is the source by convention).
    #[arg(long)]
    name: String,
    /// Where its gateway connects (the gateway's node.address).
    #[arg(long, default_value = "127.0.0.1:8333")]
    listen: SocketAddr,
    /// JSON-lines records file (rewritten as records come).
    #[arg(long)]
    records: PathBuf,
    /// Stop when this file exists.
    #[arg(long)]
    stop_file: Option<PathBuf>,
    /// Stop after this many seconds at most.
    #[arg(long, default_value_t = 600)]
    max_seconds: u64,
    /// Be the source: replay a trace built from these block heights (comma-separated).
    #[arg(long, value_delimiter = ',')]
    replay: Vec<u32>,
    /// Folder of `<height>.raw` blocks.
    #[arg(long, default_value = "data/bitcoin/mainnet")]
    blocks_dir: PathBuf,
    /// Seconds between blocks in the trace (before scaling).
    #[arg(long, default_value_t = 600.0)]
    block_interval_s: f64,
    /// Play the trace this many times faster than real time.
    #[arg(long, default_value_t = 60.0)]
    speed: f64,
    /// Fraction of each block's transactions that never reaches the receivers.
    #[arg(long, default_value_t = 0.05)]
    missing: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Source: wait this long after the gateway's handshake before playing (the other
    /// gateways register with the relay meanwhile).
    #[arg(long, default_value_t = 2.0)]
    start_delay_s: f64,
    /// Source: wait this long after the last event for late arrivals.
    #[arg(long, default_value_t = 5.0)]
    linger_s: f64,
    /// Source: write the trace's description here (the report's first line).
    #[arg(long)]
    description_out: Option<PathBuf>,
}

fn secs(s: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|e| format!("--{what}: {e}"))
}

pub fn run(args: &Args) -> Result<(), String> {
    let node = EmuNode::listen(EmuNodeConfig::new(&args.name, args.listen))
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    eprintln!("emunode {}: listening on {}", args.name, node.local_addr());
    let result = if args.replay.is_empty() {
        receive(args, &node, deadline)
    } else {
        replay(args, &node)
    };
    let written = write(&node, &args.records);
    node.shutdown();
    result.and(written)
}

fn write(node: &EmuNode, path: &Path) -> Result<(), String> {
    // Written beside and renamed: a reader never sees half a file.
    let tmp = path.with_extension("jsonl.tmp");
    node.write_records(&tmp)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn receive(args: &Args, node: &EmuNode, deadline: Instant) -> Result<(), String> {
    let mut written = 0usize;
    loop {
        std::thread::sleep(FLUSH_EVERY);
        let n = node.records().len();
        if n != written {
            write(node, &args.records)?;
            written = n;
        }
        let stop = args.stop_file.as_ref().is_some_and(|f| f.exists());
        if stop || Instant::now() >= deadline {
            return Ok(());
        }
    }
}

fn replay(args: &Args, node: &EmuNode) -> Result<(), String> {
    let blocks = load_blocks(&args.blocks_dir, &args.replay).map_err(|e| e.to_string())?;
    let interval = secs(args.block_interval_s, "block-interval-s")?;
    let config = TraceConfig {
        seed: args.seed,
        block_interval: interval,
        mempool_window: interval,
        missing_fraction: args.missing,
        first_block_at: interval,
    };
    let trace = Trace::from_blocks(blocks, &config).scaled(args.speed);
    let c = trace.counts();
    println!("trace: {}", trace.description);
    println!(
        "trace: {} blocks, {} transactions announced, {} never announced; {:.1} s to play",
        c.blocks,
        c.txs,
        c.missing,
        trace.duration().as_secs_f64()
    );
    if let Some(p) = &args.description_out {
        std::fs::write(p, &trace.description)
            .map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    }
    if !node.wait_handshake(Duration::from_secs(60)) {
        return Err(format!(
            "no gateway completed the handshake on {} within 60 s",
            node.local_addr()
        ));
    }
    std::thread::sleep(secs(args.start_delay_s, "start-delay-s")?);
    println!("replaying");
    // The trace is already scaled: play it at 1x.
    trace.replay(1.0, |_, e| {
        node.feed(e, BlockDelivery::Unsolicited);
        ControlFlow::Continue(())
    });
    std::thread::sleep(secs(args.linger_s, "linger-s")?);
    Ok(())
}
