//! `photon-perf emunode`: one emulated Bitcoin node as its own process, for the end-to-end
//! propagation run (`scripts/demo.sh`), where each gateway sits in its own network namespace
//! beside one of these.
//!
//! A receiver listens for its gateway, records what reaches it and rewrites its records file
//! (JSON lines, `perf/README.md`) every [`FLUSH_EVERY`] until `--stop-file` exists or
//! `--max-seconds` pass. The source (`--replay`) waits for its gateway, builds a trace from real
//! blocks ([`Trace::from_blocks`]), prints its description, plays it (time-scaled with
//! `--speed`), lingers for late arrivals and writes its records. With `--capture` the source
//! plays a pcap/pcapng capture instead ([`CaptureFeed`]: streamed while it plays, deduplicated
//! across the capture's peers, at the capture's own timing divided by `--speed`, with a progress
//! bar over the file on a terminal, a progress line every 10 s otherwise), and writes the description (the report's first line) and
//! the capture's summary (with each block's announcements across the capture's peers) when the
//! capture has been played to its end.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use photon_perf::capture_feed::{CaptureFeed, FeedConfig, FeedItem};
use photon_perf::emunode::{BlockDelivery, EmuNode, EmuNodeConfig};
use photon_perf::trace::{load_blocks, Event, Trace, TraceConfig};

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
    #[arg(long, value_delimiter = ',', conflicts_with = "capture")]
    replay: Vec<u32>,
    /// Be the source: replay the transactions and blocks of this pcap/pcapng capture, at its
    /// own timing divided by --speed (1: real time).
    #[arg(long)]
    capture: Option<PathBuf>,
    /// Source with --capture: write the capture's summary (counts, each block's announcements
    /// across the capture's peers) here as JSON (`photon-perf report --capture-summary`).
    #[arg(long)]
    summary_out: Option<PathBuf>,
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
    let result = if let Some(capture) = &args.capture {
        replay_capture(args, capture, &node)
    } else if args.replay.is_empty() {
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
    wait_then_start(args, node)?;
    // The trace is already scaled: play it at 1x.
    trace.replay(1.0, |_, e| {
        node.feed(e, BlockDelivery::Unsolicited);
        ControlFlow::Continue(())
    });
    std::thread::sleep(secs(args.linger_s, "linger-s")?);
    Ok(())
}

/// Waits for a gateway's handshake (60 s at most), then `--start-delay-s`, and says the replay
/// starts.
fn wait_then_start(args: &Args, node: &EmuNode) -> Result<(), String> {
    if !node.wait_handshake(Duration::from_secs(60)) {
        return Err(format!(
            "no gateway completed the handshake on {} within 60 s",
            node.local_addr()
        ));
    }
    std::thread::sleep(secs(args.start_delay_s, "start-delay-s")?);
    println!("replaying");
    Ok(())
}

/// How often a replay without a terminal prints a progress line.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// How late an event may be played before it counts as late.
const LATE: Duration = Duration::from_millis(10);

fn replay_capture(args: &Args, capture: &Path, node: &EmuNode) -> Result<(), String> {
    if !(args.speed.is_finite() && args.speed > 0.0) {
        return Err(format!("--speed must be positive (got {})", args.speed));
    }
    // Reading starts now; the bounded channel holds it back until the replay takes events.
    let feed = CaptureFeed::start(capture, FeedConfig::default()).map_err(|e| e.to_string())?;
    println!(
        "capture: {} ({} bytes), replayed as it is read, {}x real time",
        capture.display(),
        feed.file_len,
        args.speed
    );
    wait_then_start(args, node)?;
    let bar = ProgressBar::new(feed.file_len);
    if let Ok(style) = ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {bytes}/{total_bytes} of the capture {msg}",
    ) {
        bar.set_style(style);
    }
    let start = Instant::now();
    let (mut txs, mut blocks, mut late) = (0u64, 0u64, 0u64);
    let mut first_event_at = None;
    let mut summary = None;
    let mut last_line = Instant::now();
    while let Some(item) = feed.recv() {
        match item {
            FeedItem::Event {
                at,
                file_offset,
                event,
            } => {
                let due = start + Duration::from_secs_f64(at.as_secs_f64() / args.speed);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                } else if now - due > LATE {
                    late += 1;
                }
                first_event_at.get_or_insert_with(|| start.elapsed());
                node.feed(&event, BlockDelivery::Unsolicited);
                match event {
                    Event::Tx { .. } => txs += 1,
                    Event::Block { .. } => blocks += 1,
                }
                bar.set_position(file_offset);
                bar.set_message(format!("{txs} txs, {blocks} blocks"));
                // Without a terminal (the demo's log) the bar is hidden: a line every 10 s.
                if bar.is_hidden() && last_line.elapsed() >= PROGRESS_EVERY {
                    last_line = Instant::now();
                    println!(
                        "progress: {:.1}% of the capture read, {txs} txs and {blocks} blocks \
                         played, {:.0} s in",
                        100.0 * file_offset as f64 / feed.file_len.max(1) as f64,
                        start.elapsed().as_secs_f64()
                    );
                }
            }
            FeedItem::End(s) => summary = Some(s),
        }
    }
    bar.finish_and_clear();
    feed.join()?;
    let summary = summary.ok_or("the capture reader ended without a summary")?;
    let description = summary.description(args.speed);
    println!("trace: {description}");
    println!(
        "trace: {txs} transactions and {blocks} blocks played in {:.1} s (first after {:.3} s, \
         {late} more than {} ms late)",
        start.elapsed().as_secs_f64(),
        first_event_at.unwrap_or_default().as_secs_f64(),
        LATE.as_millis()
    );
    if let Some(p) = &args.description_out {
        std::fs::write(p, &description)
            .map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    }
    if let Some(p) = &args.summary_out {
        summary.write(p)?;
    }
    std::thread::sleep(secs(args.linger_s, "linger-s")?);
    Ok(())
}
