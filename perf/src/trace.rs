//! Replay input B: a trace of transactions and blocks, built from real blocks or from a capture.
//!
//! There is no capture of today's mempool traffic in `data/bitcoin`, so
//! [`Trace::from_blocks`] builds the mempool from the blocks themselves: block `i` is found at
//! `first_block_at + i * block_interval`; its transactions (all but the coinbase) arrive over
//! the `mempool_window` before it as a Poisson stream (the arrival times of a Poisson process
//! that has `n` arrivals in the window: uniform order statistics, drawn from `n + 1`
//! exponential gaps), in block order so that parents come before children. A chosen fraction
//! never reaches the receivers: those transactions have no [`Event::Tx`] and are listed in the
//! block's [`Event::Block::missing`] (with their in-block descendants, which could not enter a
//! mempool without them), so they must travel with the block. Everything is drawn from one
//! seed (ChaCha8). [`Trace::description`] says all this in the replay's output.
//!
//! [`Trace::from_capture`] makes a trace of the transactions and blocks of a capture (input A),
//! at the times they were first seen, from messages already in memory; a capture of any length
//! is replayed through the testbed by [`crate::capture_feed`] instead, which streams it.
//!
//! [`Trace::replay`] plays a trace in real time or scaled, with a progress bar on long runs.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::consensus::encode::deserialize;
use bitcoin::p2p::message::NetworkMessage;
use bitcoin::{Block, Transaction, Txid};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::replay::CapturedMessage;

/// One thing that happens in a replay.
#[derive(Debug, Clone)]
pub enum Event {
    /// A transaction enters the mempool (the source node's; the network carries it on).
    Tx {
        tx: Arc<Transaction>,
        /// Index of the block that will confirm it (into the trace's blocks), if known.
        block: Option<usize>,
    },
    /// A block is found at the source node.
    Block {
        block: Arc<Block>,
        /// Index of this block in the trace.
        index: usize,
        /// Its transactions (coinbase excluded) that had no [`Event::Tx`]: no receiver has them.
        missing: Vec<Txid>,
    },
}

/// How [`Trace::from_blocks`] builds the mempool.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TraceConfig {
    pub seed: u64,
    /// Time between blocks.
    pub block_interval: Duration,
    /// A block's transactions arrive over this window before it.
    pub mempool_window: Duration,
    /// Fraction of each block's transactions (0..=1) that never reaches the receivers.
    pub missing_fraction: f64,
    /// When the first block is found (at least `mempool_window`, so its window fits).
    pub first_block_at: Duration,
}

impl Default for TraceConfig {
    /// Bitcoin's 10-minute blocks, transactions over the 10 minutes before, 5% missing.
    fn default() -> Self {
        TraceConfig {
            seed: 1,
            block_interval: Duration::from_secs(600),
            mempool_window: Duration::from_secs(600),
            missing_fraction: 0.05,
            first_block_at: Duration::from_secs(600),
        }
    }
}

/// Why blocks could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a serialized block: {reason}")]
    NotABlock { path: PathBuf, reason: String },
}

/// A replay: events at offsets from its start, in time order.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub events: Vec<(Duration, Event)>,
    /// How the trace was made, for the replay's output.
    pub description: String,
}

/// Counts of a trace.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TraceCounts {
    pub blocks: usize,
    pub txs: usize,
    pub missing: usize,
}

/// Loads `dir/<height>.raw` (bare serialized blocks, as in `data/bitcoin/mainnet`).
pub fn load_blocks(dir: &Path, heights: &[u32]) -> Result<Vec<Block>, TraceError> {
    heights
        .iter()
        .map(|h| {
            let path = dir.join(format!("{h}.raw"));
            let bytes = std::fs::read(&path).map_err(|source| TraceError::Read {
                path: path.clone(),
                source,
            })?;
            deserialize::<Block>(&bytes).map_err(|e| TraceError::NotABlock {
                path,
                reason: e.to_string(),
            })
        })
        .collect()
}

impl Trace {
    /// A mempool built from real blocks; see the module docs.
    pub fn from_blocks(blocks: Vec<Block>, config: &TraceConfig) -> Trace {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let window = config.mempool_window.as_secs_f64();
        let first = config.first_block_at.max(config.mempool_window);
        let fraction = config.missing_fraction.clamp(0.0, 1.0);
        let mut events = Vec::new();
        let (mut total_txs, mut total_missing) = (0usize, 0usize);
        let n_blocks = blocks.len();
        for (index, block) in blocks.into_iter().enumerate() {
            let found_at = first + config.block_interval * index as u32;
            let txs = block.txdata.get(1..).unwrap_or_default();
            let n = txs.len();
            // Which never reach the receivers: a random subset, closed under spending.
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut rng);
            let mut missing_set: HashSet<Txid> = order[..(fraction * n as f64).round() as usize]
                .iter()
                .map(|&i| txs[i].compute_txid())
                .collect();
            for tx in txs {
                if tx
                    .input
                    .iter()
                    .any(|i| missing_set.contains(&i.previous_output.txid))
                {
                    missing_set.insert(tx.compute_txid());
                }
            }
            // Poisson arrivals with n points in the window: normalised sums of exponentials.
            let gaps: Vec<f64> = (0..=n).map(|_| -(1.0 - rng.gen::<f64>()).ln()).collect();
            let total: f64 = gaps.iter().sum();
            let window_start = found_at.as_secs_f64() - window;
            let mut acc = 0.0;
            let mut missing = Vec::new();
            for (tx, gap) in txs.iter().zip(&gaps) {
                acc += gap;
                let txid = tx.compute_txid();
                if missing_set.contains(&txid) {
                    missing.push(txid);
                    continue;
                }
                let at = Duration::from_secs_f64((window_start + window * acc / total).max(0.0));
                events.push((
                    at,
                    Event::Tx {
                        tx: Arc::new(tx.clone()),
                        block: Some(index),
                    },
                ));
            }
            total_txs += n;
            total_missing += missing.len();
            events.push((
                found_at,
                Event::Block {
                    block: Arc::new(block),
                    index,
                    missing,
                },
            ));
        }
        // Stable: a block's own transactions stay before it, parents before children.
        events.sort_by_key(|(t, _)| *t);
        let description = format!(
            "mempool built from the transactions of {n_blocks} real mainnet blocks (no captured \
             mempool traffic): each block's {total_txs} transactions (coinbase excluded) arrive \
             as a Poisson stream over the {:.0} s before it, blocks every {:.0} s; {total_missing} \
             of them ({:.1}%, {:.1}% chosen at random plus their in-block descendants) never \
             reach the receivers and travel only with their block; seed {}",
            config.mempool_window.as_secs_f64(),
            config.block_interval.as_secs_f64(),
            100.0 * total_missing as f64 / total_txs.max(1) as f64,
            100.0 * fraction,
            config.seed
        );
        Trace {
            events,
            description,
        }
    }

    /// The transactions and blocks of a capture, at the times each was first seen (offsets from
    /// the first kept message). A block's `missing` lists its transactions not seen as `tx`
    /// before it.
    pub fn from_capture(messages: &[CapturedMessage]) -> Trace {
        let Some(t0) = messages.iter().map(|m| m.ts_ns).min() else {
            return Trace {
                events: Vec::new(),
                description: "empty capture".into(),
            };
        };
        let mut seen_tx: HashMap<Txid, usize> = HashMap::new();
        let mut seen_block = HashSet::new();
        let mut events = Vec::new();
        let mut sorted: Vec<&CapturedMessage> = messages.iter().collect();
        sorted.sort_by_key(|m| m.ts_ns);
        let mut index = 0;
        for m in sorted {
            let at = Duration::from_nanos(m.ts_ns - t0);
            match &m.message {
                NetworkMessage::Tx(tx) if !seen_tx.contains_key(&tx.compute_txid()) => {
                    seen_tx.insert(tx.compute_txid(), events.len());
                    events.push((
                        at,
                        Event::Tx {
                            tx: Arc::new(tx.clone()),
                            block: None,
                        },
                    ));
                }
                NetworkMessage::Block(block) if !seen_block.contains(&block.block_hash()) => {
                    seen_block.insert(block.block_hash());
                    {
                        let missing = block
                            .txdata
                            .iter()
                            .skip(1)
                            .map(|t| t.compute_txid())
                            .filter(|id| !seen_tx.contains_key(id))
                            .collect();
                        for t in block.txdata.iter().skip(1) {
                            if let Some(&i) = seen_tx.get(&t.compute_txid()) {
                                if let Event::Tx { block, .. } = &mut events[i].1 {
                                    block.get_or_insert(index);
                                }
                            }
                        }
                        events.push((
                            at,
                            Event::Block {
                                block: Arc::new(block.clone()),
                                index,
                                missing,
                            },
                        ));
                        index += 1;
                    }
                }
                _ => {}
            }
        }
        let c = counts(&events);
        Trace {
            description: format!(
                "captured traffic: {} transactions and {} blocks as first seen in the capture \
                 ({} block transactions not seen before their block)",
                c.txs, c.blocks, c.missing
            ),
            events,
        }
    }

    /// Counts of events.
    pub fn counts(&self) -> TraceCounts {
        counts(&self.events)
    }

    /// Offset of the last event.
    pub fn duration(&self) -> Duration {
        self.events.last().map_or(Duration::ZERO, |(t, _)| *t)
    }

    /// The same trace with every offset divided by `speed` (2.0: twice as fast).
    pub fn scaled(&self, speed: f64) -> Trace {
        let speed = if speed.is_finite() && speed > 0.0 {
            speed
        } else {
            1.0
        };
        Trace {
            events: self
                .events
                .iter()
                .map(|(t, e)| (Duration::from_secs_f64(t.as_secs_f64() / speed), e.clone()))
                .collect(),
            description: format!("{} (played at {speed}x)", self.description),
        }
    }

    /// Plays the trace in real time divided by `speed`: calls `on_event` with each event at
    /// its (scaled) time from now, until the end or until it returns `Break`. A progress bar
    /// (stderr, hidden when not a terminal) shows on replays longer than 10 s.
    pub fn replay(
        &self,
        speed: f64,
        mut on_event: impl FnMut(Duration, &Event) -> ControlFlow<()>,
    ) {
        let speed = if speed.is_finite() && speed > 0.0 {
            speed
        } else {
            1.0
        };
        let scaled = |t: Duration| Duration::from_secs_f64(t.as_secs_f64() / speed);
        let bar = if scaled(self.duration()) > Duration::from_secs(10) {
            let b = ProgressBar::new(self.events.len() as u64);
            if let Ok(style) = ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} events {msg}",
            ) {
                b.set_style(style);
            }
            b
        } else {
            ProgressBar::hidden()
        };
        let start = Instant::now();
        for (t, e) in &self.events {
            let due = start + scaled(*t);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if let Event::Block { index, .. } = e {
                bar.set_message(format!("block {index}"));
            }
            bar.inc(1);
            if on_event(*t, e).is_break() {
                break;
            }
        }
        bar.finish_and_clear();
    }
}

fn counts(events: &[(Duration, Event)]) -> TraceCounts {
    let mut c = TraceCounts::default();
    for (_, e) in events {
        match e {
            Event::Tx { .. } => c.txs += 1,
            Event::Block { missing, .. } => {
                c.blocks += 1;
                c.missing += missing.len();
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/bitcoin/mainnet")
    }

    fn blocks() -> Vec<Block> {
        load_blocks(&data_dir(), &[227835, 227836]).expect("blocks in data/bitcoin")
    }

    #[test]
    fn every_tx_before_its_block_or_missing() {
        let cfg = TraceConfig {
            missing_fraction: 0.1,
            ..TraceConfig::default()
        };
        let b = blocks();
        let n_txs: usize = b.iter().map(|b| b.txdata.len() - 1).sum();
        let trace = Trace::from_blocks(b, &cfg);
        let c = trace.counts();
        assert_eq!(c.blocks, 2);
        assert_eq!(c.txs + c.missing, n_txs);
        // At least the 10% chosen (rounded), perhaps more with descendants.
        assert!(c.missing >= (121.0f64 * 0.1).round() as usize + (99.0f64 * 0.1).round() as usize);
        let mut seen = HashSet::new();
        for (t, e) in &trace.events {
            match e {
                Event::Tx { tx, block } => {
                    let i = block.expect("block index");
                    let found = cfg.first_block_at + cfg.block_interval * i as u32;
                    assert!(*t < found && *t + cfg.mempool_window >= found);
                    // Parents first.
                    for input in &tx.input {
                        let parent = input.previous_output.txid;
                        let in_same_block = trace.events.iter().any(|(_, e)| {
                            matches!(e, Event::Tx { tx, .. } if tx.compute_txid() == parent)
                        });
                        if in_same_block {
                            assert!(seen.contains(&parent));
                        }
                    }
                    seen.insert(tx.compute_txid());
                }
                Event::Block { block, missing, .. } => {
                    for tx in block.txdata.iter().skip(1) {
                        let id = tx.compute_txid();
                        assert!(seen.contains(&id) ^ missing.contains(&id));
                    }
                }
            }
        }
        assert!(trace.description.contains("Poisson"));
        assert!(trace.description.contains("never reach the receivers"));
    }

    #[test]
    fn seeded_and_poisson_like() {
        let cfg = TraceConfig {
            missing_fraction: 0.0,
            ..TraceConfig::default()
        };
        let a = Trace::from_blocks(blocks(), &cfg);
        let b = Trace::from_blocks(blocks(), &cfg);
        let times = |t: &Trace| t.events.iter().map(|(d, _)| *d).collect::<Vec<_>>();
        assert_eq!(times(&a), times(&b));
        let other = Trace::from_blocks(
            blocks(),
            &TraceConfig {
                seed: 2,
                ..cfg.clone()
            },
        );
        assert_ne!(times(&a), times(&other));
        // Inter-arrival gaps of block 0's 121 txs: exponential, so their coefficient of
        // variation is near 1 (a regular stream would give 0).
        let t: Vec<f64> = a
            .events
            .iter()
            .filter(|(_, e)| matches!(e, Event::Tx { block: Some(0), .. }))
            .map(|(d, _)| d.as_secs_f64())
            .collect();
        let gaps: Vec<f64> = t.windows(2).map(|w| w[1] - w[0]).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let sd = (gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64).sqrt();
        assert!((sd / mean - 1.0).abs() < 0.35, "cv {}", sd / mean);
        assert!((mean - 600.0 / 122.0).abs() < 2.0, "mean gap {mean}");
    }

    #[test]
    fn scaled_replay_plays_in_order_and_stops() {
        let trace = Trace::from_blocks(blocks(), &TraceConfig::default()).scaled(1e6);
        let mut got = 0;
        trace.replay(1.0, |_, e| {
            got += 1;
            if matches!(e, Event::Block { index: 0, .. }) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        let first_block = trace
            .events
            .iter()
            .position(|(_, e)| matches!(e, Event::Block { .. }))
            .unwrap();
        assert_eq!(got, first_block + 1);
    }

    #[test]
    fn load_refuses_garbage() {
        let dir = std::env::temp_dir().join(format!("photon-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("1.raw"), b"not a block").unwrap();
        assert!(matches!(
            load_blocks(&dir, &[1]),
            Err(TraceError::NotABlock { .. })
        ));
        assert!(matches!(
            load_blocks(&dir, &[2]),
            Err(TraceError::Read { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
