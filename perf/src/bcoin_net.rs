//! `photon-perf bcoin-net`: a network of real bcoin nodes on the testbed, node 0 mining blocks
//! filled with wallet transactions made beforehand, each block's arrival taken from every
//! node's own chain (its RPC's best block, polled). With `--mode photon` the nodes have no
//! peers but their gateways (started beside them by scripts/demo.sh); with `--mode p2p` they
//! are each other's peers (a ring with chords: every node connects out to the next
//! `--degree / 2` nodes) and nothing else: the network a user would have without Photon.
//!
//! Writes node records (perf/README.md: `block_sent` at node 0 when its mining RPC returned,
//! `block_received` at each node when its tip becomes the block) for `photon-perf report`, and
//! prints each block's time to 90% of the receiving nodes.

use std::collections::HashMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use photon_perf::realnode::{Bcoin, BcoinConfig};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// `ns:address` of every node, node 0 (the miner) first: the network namespace it runs in
    /// and the address it binds there (P2P 48444, RPC 48445, wallet 48446).
    #[arg(long, value_delimiter = ',', required = true)]
    nodes: Vec<String>,
    /// Where the nodes keep their data and logs.
    #[arg(long)]
    dir: PathBuf,
    /// photon (peers: only the gateways) or p2p (peers: each other).
    #[arg(long, default_value = "photon")]
    mode: String,
    /// Peers per node in p2p mode (each connects out to the next degree/2 nodes).
    #[arg(long, default_value_t = 8)]
    degree: usize,
    /// Blocks measured.
    #[arg(long, default_value_t = 3)]
    blocks: u32,
    /// Wallet transactions made at node 0 before each block (100 outputs each, ~3.4 KB: 280
    /// fill a block to bcoin's limit, ~1 MB).
    #[arg(long, default_value_t = 280)]
    txs_per_block: u32,
    /// Node records (JSON lines) written here.
    #[arg(long)]
    records: PathBuf,
    /// A JSON summary (per block: size, txs, time to 90%) written here.
    #[arg(long)]
    summary: Option<PathBuf>,
}

const P2P_PORT: u16 = 48444;
const WAIT: Duration = Duration::from_secs(300);
/// How often each node's best block is read while a block travels.
const POLL: Duration = Duration::from_millis(5);

struct Record {
    t_ns: u64,
    node: String,
    event: &'static str,
    id: String,
    bytes: u64,
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

pub fn run(args: &Args) -> Result<(), String> {
    let p2p = match args.mode.as_str() {
        "photon" => false,
        "p2p" => true,
        m => return Err(format!("--mode must be photon or p2p (got {m})")),
    };
    let specs: Vec<(String, Ipv4Addr)> = args
        .nodes
        .iter()
        .map(|s| {
            let (ns, addr) = s
                .split_once(':')
                .ok_or_else(|| format!("--nodes entry {s:?} is not ns:address"))?;
            let addr = addr
                .parse()
                .map_err(|e| format!("--nodes entry {s:?}: {e}"))?;
            Ok((ns.to_string(), addr))
        })
        .collect::<Result<_, String>>()?;
    let n = specs.len();
    if n < 2 {
        return Err("--nodes needs node 0 and at least one receiver".into());
    }
    let out = (args.degree / 2).clamp(1, n - 1);
    let mut nodes = Vec::new();
    for (i, (ns, host)) in specs.iter().enumerate() {
        let mut c = BcoinConfig::loopback(&format!("node{i}"), &args.dir);
        c.host = *host;
        c.p2p_port = P2P_PORT;
        c.http_port = P2P_PORT + 1;
        c.wallet_port = P2P_PORT + 2;
        c.netns = Some(ns.clone());
        if p2p {
            c.connect = (1..=out)
                .map(|k| SocketAddr::from((specs[(i + k) % n].1, P2P_PORT)))
                .collect();
        }
        nodes.push(c);
    }
    eprintln!(
        "bcoin-net: starting {n} bcoin nodes ({})",
        if p2p {
            format!("p2p, each connecting out to the next {out}")
        } else {
            "photon: peers are their gateways only".to_string()
        }
    );
    // Started one after another: each takes a few seconds on a loaded core.
    let nodes: Vec<Bcoin> = nodes
        .into_iter()
        .map(|c| Bcoin::start(c).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    for node in &nodes {
        node.wait_until("a peer", WAIT, |x| x.peers().is_ok_and(|p| !p.is_empty()))
            .map_err(|e| e.to_string())?;
    }
    let miner = &nodes[0];
    let to = miner.new_address().map_err(|e| e.to_string())?;

    // Coins: 110 blocks (10 mature coinbases), then one transaction splitting them into one
    // coin per transaction to come, confirmed; every node follows.
    eprintln!("bcoin-net: mining 110 blocks and splitting coins");
    let warm = miner.mine(110, &to).map_err(|e| e.to_string())?;
    wait_all(&nodes, warm.last().ok_or("mined nothing")?)?;
    std::thread::sleep(Duration::from_millis(500));
    let coins = args.blocks * args.txs_per_block;
    let split = miner
        .wallet_http_send(&to, 50_000_000, coins)
        .map_err(|e| e.to_string())?;
    eprintln!("bcoin-net: split tx {split}");
    let b = miner.mine(1, &to).map_err(|e| e.to_string())?;
    wait_all(&nodes, &b[0])?;

    let mut records = Vec::new();
    let mut rows = Vec::new();
    for k in 0..args.blocks {
        // The mempool first: transactions from node 0's wallet, until every node holds them.
        let sent_at = Instant::now();
        for _ in 0..args.txs_per_block {
            let txid = miner
                .wallet_http_send(&to, 100_000, 100)
                .map_err(|e| e.to_string())?;
            records.push(Record {
                t_ns: unix_ns(),
                node: "node0".into(),
                event: "tx_sent",
                id: txid,
                bytes: 0,
            });
        }
        let made = sent_at.elapsed();
        let want = miner.mempool().map_err(|e| e.to_string())?.len();
        let mut synced = Duration::ZERO;
        for node in &nodes[1..] {
            synced = synced.max(
                node.wait_until("the mempool", WAIT, |x| {
                    x.mempool().is_ok_and(|m| m.len() >= want)
                })
                .map_err(|e| e.to_string())?,
            );
        }
        eprintln!(
            "bcoin-net: block {}: {} txs made in {:.1} s, in every mempool {:.1} s later",
            k + 1,
            args.txs_per_block,
            made.as_secs_f64(),
            synced.as_secs_f64()
        );
        // The block: arrivals watched on every receiver from before it is asked for.
        let watch = Watch::start(&nodes[1..]);
        let asked = unix_ns();
        let hash = miner
            .mine(1, &to)
            .map_err(|e| e.to_string())?
            .pop()
            .ok_or("mined nothing")?;
        // Propagation is counted from the block's existence: `generatetoaddress` returned. The
        // node announces it just before, so a receiver can see it a little earlier: 0 then.
        let t0 = unix_ns();
        let mined_ns = t0 - asked;
        let block = miner
            .rpc("getblock", json!([hash]))
            .map_err(|e| e.to_string())?;
        let bytes = block["size"].as_u64().unwrap_or(0);
        let txs = block["tx"].as_array().map_or(0, |t| t.len());
        let arrivals = watch.until(&hash, WAIT)?;
        records.push(Record {
            t_ns: t0,
            node: "node0".into(),
            event: "block_sent",
            id: hash.clone(),
            bytes,
        });
        let mut deltas: Vec<f64> = Vec::new();
        for (i, t) in arrivals.iter().enumerate() {
            records.push(Record {
                t_ns: *t,
                node: format!("node{}", i + 1),
                event: "block_received",
                id: hash.clone(),
                bytes,
            });
            deltas.push(t.saturating_sub(t0) as f64 / 1e6);
        }
        deltas.sort_by(f64::total_cmp);
        let t90 = deltas[((deltas.len() as f64 * 0.9).ceil() as usize).clamp(1, deltas.len()) - 1];
        eprintln!(
            "bcoin-net: block {} {hash}: {bytes} B, {txs} txs; mined in {:.1} ms; t90 {t90:.1} ms, last {:.1} ms",
            k + 1,
            mined_ns as f64 / 1e6,
            deltas[deltas.len() - 1]
        );
        rows.push(json!({
            "hash": hash, "bytes": bytes, "txs": txs, "mined_ms": mined_ns as f64 / 1e6,
            "t90_ms": t90, "max_ms": deltas[deltas.len() - 1], "arrivals_ms": deltas,
            "mempool_synced_ms": synced.as_secs_f64() * 1e3,
        }));
    }
    let mut f = std::fs::File::create(&args.records).map_err(|e| e.to_string())?;
    for r in &records {
        let line =
            json!({"t_ns": r.t_ns, "node": r.node, "event": r.event, "id": r.id, "bytes": r.bytes});
        writeln!(f, "{line}").map_err(|e| e.to_string())?;
    }
    // Every receiver still has its peers: nobody was dropped for misbehaving.
    let mut punished = Vec::new();
    for node in &nodes {
        let bad = node.misbehaviour_lines();
        if !bad.is_empty() {
            punished.push(format!("{}: {}", node.name(), bad.join(" | ")));
        }
    }
    let summary = json!({
        "mode": args.mode, "nodes": n, "degree": if p2p { 2 * out } else { 0 },
        "blocks": rows, "misbehaviour": punished,
    });
    if let Some(p) = &args.summary {
        std::fs::write(
            p,
            serde_json::to_string_pretty(&summary).unwrap_or_default(),
        )
        .map_err(|e| e.to_string())?;
    }
    if !punished.is_empty() {
        return Err(format!("nodes logged misbehaviour: {punished:?}"));
    }
    Ok(())
}

fn wait_all(nodes: &[Bcoin], hash: &str) -> Result<(), String> {
    for node in nodes {
        node.wait_tip(hash, WAIT).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// One thread per receiver reading its best block every [`POLL`]; the first time each tip
/// is seen is kept.
struct Watch {
    seen: Arc<Mutex<Vec<HashMap<String, u64>>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn start(nodes: &[Bcoin]) -> Watch {
        let seen = Arc::new(Mutex::new(vec![HashMap::new(); nodes.len()]));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let rpc = node.rpc_handle();
                let (seen, stop) = (seen.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(tip) = rpc.best_block() {
                            let t = unix_ns();
                            if let Ok(mut s) = seen.lock() {
                                s[i].entry(tip).or_insert(t);
                            }
                        }
                        std::thread::sleep(POLL);
                    }
                })
            })
            .collect();
        Watch {
            seen,
            stop,
            threads,
        }
    }

    /// When each receiver first had `hash` as its tip.
    fn until(self, hash: &str, timeout: Duration) -> Result<Vec<u64>, String> {
        let start = Instant::now();
        let result = loop {
            let got: Option<Vec<u64>> = self
                .seen
                .lock()
                .ok()
                .and_then(|s| s.iter().map(|m| m.get(hash).copied()).collect());
            if let Some(t) = got {
                break Ok(t);
            }
            if start.elapsed() > timeout {
                break Err(format!("block {hash} not at every node after {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        result
    }
}
