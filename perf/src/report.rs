//! Measurement and report of an end-to-end propagation run.
//!
//! Inputs are JSON lines (one object per line; formats in `perf/README.md`):
//! - [`NodeRecord`]s, written by the emulated nodes ([`crate::emunode`]): when the source node
//!   handed a block or transaction to its gateway, and when each receiving node got it.
//! - [`StageRecord`]s, written by the gateways (and relays, where they can): when a block's
//!   stream passed each stage ([`STAGES`]: compress, seal, FEC, first fragment out, ... deliver).
//!
//! [`Report::build`] gives block propagation time from the source node to every receiving node
//! (p50, p90, p99, max; HdrHistogram in microseconds), the time until 90% of the receivers had
//! each block, bytes on the wire per block, transaction propagation time, and a per-stage
//! breakdown (each stage's offset from the block's arrival at the source gateway). It writes
//! JSON ([`Report::to_json`]), markdown ([`Report::to_markdown`]) and plots ([`Report::plot`]:
//! CDF of propagation time, per-stage bars; SVG and PNG).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The stage-record format (written by the gateways and relays): `photon_ops::stages`.
pub use photon_ops::stages::{StageRecord, STAGES};

/// What an emulated node saw (a JSON line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeEventKind {
    /// The source node gave its gateway a block.
    BlockSent,
    /// A node received a block from its gateway (its last byte).
    BlockReceived,
    TxSent,
    TxReceived,
}

/// One event at an emulated node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub t_ns: u64,
    pub node: String,
    pub event: NodeEventKind,
    /// Block hash or txid, hex as Bitcoin displays it.
    pub id: String,
    /// Serialized size of the block or transaction.
    #[serde(default)]
    pub bytes: u64,
}

/// Records of a run.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    pub nodes: Vec<NodeRecord>,
    pub stages: Vec<StageRecord>,
    /// Lines that were neither record (counted).
    pub unparsed_lines: u64,
    /// Names of the receiving nodes; empty: every node that received anything.
    pub receivers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum AnyRecord {
    Stage(StageRecord),
    Node(NodeRecord),
}

/// Why records could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

impl Samples {
    /// Adds the records of a JSON-lines file (node and stage records may be mixed; blank lines
    /// are skipped, other lines counted in `unparsed_lines`).
    pub fn read_jsonl(&mut self, path: &Path) -> Result<(), ReportError> {
        let read_err = |source| ReportError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        for line in BufReader::new(file).lines() {
            let line = line.map_err(read_err)?;
            self.push_line(&line);
        }
        Ok(())
    }

    /// Adds one JSON line.
    pub fn push_line(&mut self, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        match serde_json::from_str::<AnyRecord>(line) {
            Ok(AnyRecord::Stage(s)) => self.stages.push(s),
            Ok(AnyRecord::Node(n)) => self.nodes.push(n),
            Err(_) => self.unparsed_lines += 1,
        }
    }
}

/// Percentiles of a distribution, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Microsecond histogram up to one hour, 3 significant digits.
fn histogram() -> Histogram<u64> {
    // Bounds are valid constants: 1 µs to 1 h, 3 digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits is valid"))
    })
}

fn percentiles(h: &Histogram<u64>) -> Option<Percentiles> {
    if h.is_empty() {
        return None;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Some(Percentiles {
        count: h.len(),
        mean_ms: h.mean() / 1000.0,
        p50_ms: ms(h.value_at_quantile(0.5)),
        p90_ms: ms(h.value_at_quantile(0.9)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
    })
}

fn record(h: &mut Histogram<u64>, ns: u64) {
    // Saturates at the top bound (1 h); zero is recordable.
    h.saturating_record(ns / 1000);
}

/// One block's row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockRow {
    pub hash: String,
    pub source: String,
    pub bytes: u64,
    /// Bytes of all its fragments (from `last_fragment_out`), where recorded.
    pub wire_bytes: Option<u64>,
    pub receivers: usize,
    pub p50_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Time until 90% of the receivers had it; `None` when fewer did.
    pub t90_ms: Option<f64>,
}

/// One stage's offsets from `block_in` at the source gateway, over blocks (and receivers).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRow {
    pub stage: String,
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub max_ms: f64,
}

/// The report of a run. See the module docs. Read back from `report.json` by
/// [`crate::compare`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// What was replayed (e.g. [`crate::trace::Trace::description`]).
    pub description: String,
    pub receivers: usize,
    pub blocks: Vec<BlockRow>,
    /// Over every (block, receiver) pair that arrived.
    pub block_propagation: Option<Percentiles>,
    /// Over blocks that reached 90% of the receivers.
    pub time_to_90pct: Option<Percentiles>,
    /// Blocks that never reached 90% of the receivers.
    pub blocks_below_90pct: usize,
    /// (block, receiver) pairs that never arrived.
    pub missed_deliveries: u64,
    pub mean_block_bytes: Option<f64>,
    pub mean_wire_bytes: Option<f64>,
    pub tx_propagation: Option<Percentiles>,
    pub missed_tx_deliveries: u64,
    pub stages: Vec<StageRow>,
    /// Negative intervals (a clock went backwards, or records are inconsistent), clamped to 0.
    pub negative_intervals: u64,
    pub unparsed_lines: u64,
    /// Sorted propagation times (ms) for the CDF plot.
    #[serde(skip)]
    pub cdf_ms: Vec<f64>,
    /// With a replayed capture: each block's spread over the capture's own peers beside
    /// Photon's propagation of it ([`Report::add_capture`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capture_blocks: Vec<CaptureBlockRow>,
}

/// One block of a replayed capture: how the capture's P2P peers announced it, and how Photon
/// carried it in the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaptureBlockRow {
    pub hash: String,
    /// Peers of the capture that announced it (`inv`, `headers`, `cmpctblock`).
    pub announcers: usize,
    /// Delay of the median announcer after the first (ms); none without announcers.
    pub announce_median_ms: Option<f64>,
    /// Delay of the last announcer after the first (ms).
    pub announce_spread_ms: Option<f64>,
    /// Whether the block itself was in the capture (and so replayed).
    pub replayed: bool,
    /// Photon: source node to each receiving node, median and max (ms); to 90% of them.
    pub photon_p50_ms: Option<f64>,
    pub photon_max_ms: Option<f64>,
    pub photon_t90_ms: Option<f64>,
}

/// Appends a markdown table to `s`: the `columns` and `alignment` rows as given, then one line a
/// row, its cells between `|`.
fn md_table(
    s: &mut String,
    columns: &str,
    alignment: &str,
    rows: impl Iterator<Item = Vec<String>>,
) {
    use std::fmt::Write;
    let _ = writeln!(s, "{columns}\n{alignment}");
    for row in rows {
        let _ = writeln!(s, "| {} |", row.join(" | "));
    }
}

/// A block hash as the markdown tables show it: block hashes start with a run of zeros, so the
/// 12 digits after it, which tell them apart.
fn short_hash(hash: &str) -> &str {
    let h = hash.trim_start_matches('0');
    h.get(..12).unwrap_or(h)
}

impl Report {
    /// Builds the report from a run's records.
    pub fn build(samples: &Samples, description: &str) -> Report {
        let mut negative = 0u64;
        let mut diff = |later: u64, earlier: u64| {
            if later < earlier {
                negative += 1;
            }
            later.saturating_sub(earlier)
        };

        // Who sent what, who got what.
        let mut sent: HashMap<(NodeEventKind, &str), &NodeRecord> = HashMap::new();
        let mut got: BTreeMap<(NodeEventKind, &str), BTreeMap<&str, u64>> = BTreeMap::new();
        for r in &samples.nodes {
            match r.event {
                NodeEventKind::BlockSent | NodeEventKind::TxSent => {
                    let e = sent.entry((r.event, r.id.as_str())).or_insert(r);
                    if r.t_ns < e.t_ns {
                        *e = r;
                    }
                }
                NodeEventKind::BlockReceived | NodeEventKind::TxReceived => {
                    let first = got
                        .entry((r.event, r.id.as_str()))
                        .or_default()
                        .entry(r.node.as_str())
                        .or_insert(r.t_ns);
                    *first = (*first).min(r.t_ns);
                }
            }
        }
        let receivers: BTreeSet<&str> = if samples.receivers.is_empty() {
            got.values().flat_map(|m| m.keys().copied()).collect()
        } else {
            samples.receivers.iter().map(String::as_str).collect()
        };
        let n_recv = receivers.len();

        // Wire bytes per block from the source gateway's last_fragment_out.
        let stream_block = stream_to_block(&samples.stages);
        let block_of = |s: &StageRecord| -> Option<String> {
            s.block
                .clone()
                .or_else(|| s.stream.and_then(|id| stream_block.get(&id).cloned()))
        };
        let mut wire: HashMap<String, u64> = HashMap::new();
        for s in samples
            .stages
            .iter()
            .filter(|s| s.stage == "last_fragment_out")
        {
            if let (Some(b), Some(bytes)) = (block_of(s), s.bytes) {
                *wire.entry(b).or_default() += bytes;
            }
        }

        let mut prop = histogram();
        let mut t90 = histogram();
        let mut cdf = Vec::new();
        let mut rows = Vec::new();
        let (mut below90, mut missed) = (0usize, 0u64);
        let mut sent_blocks: Vec<&&NodeRecord> = sent
            .iter()
            .filter(|((k, _), _)| *k == NodeEventKind::BlockSent)
            .map(|(_, r)| r)
            .collect();
        sent_blocks.sort_by_key(|r| r.t_ns);
        for s in sent_blocks {
            let arrivals = got.get(&(NodeEventKind::BlockReceived, s.id.as_str()));
            let mut lat: Vec<u64> = receivers
                .iter()
                .filter(|r| **r != s.node)
                .filter_map(|r| arrivals.and_then(|a| a.get(r)))
                .map(|&t| diff(t, s.t_ns))
                .collect();
            lat.sort_unstable();
            let expected = receivers.iter().filter(|r| **r != s.node).count();
            missed += (expected - lat.len()) as u64;
            let mut h = histogram();
            for &l in &lat {
                record(&mut prop, l);
                record(&mut h, l);
                cdf.push(l as f64 / 1e6);
            }
            let need = (expected * 9).div_ceil(10);
            let t = if expected > 0 && lat.len() >= need {
                let v = lat[need.max(1) - 1];
                record(&mut t90, v);
                Some(v as f64 / 1e6)
            } else {
                below90 += 1;
                None
            };
            let p = percentiles(&h);
            rows.push(BlockRow {
                hash: s.id.clone(),
                source: s.node.clone(),
                bytes: s.bytes,
                wire_bytes: wire.get(&s.id).copied(),
                receivers: lat.len(),
                p50_ms: p.map(|p| p.p50_ms),
                max_ms: p.map(|p| p.max_ms),
                t90_ms: t,
            });
        }
        cdf.sort_by(f64::total_cmp);

        let mut txh = histogram();
        let mut missed_tx = 0u64;
        for ((kind, id), s) in &sent {
            if *kind != NodeEventKind::TxSent {
                continue;
            }
            let arrivals = got.get(&(NodeEventKind::TxReceived, *id));
            for r in receivers.iter().filter(|r| **r != s.node) {
                match arrivals.and_then(|a| a.get(r)) {
                    Some(&t) => record(&mut txh, diff(t, s.t_ns)),
                    None => missed_tx += 1,
                }
            }
        }

        // Stage offsets from block_in at the source gateway (or, without one, from the
        // source node's block_sent).
        let mut t0: HashMap<String, u64> = HashMap::new();
        for s in samples.stages.iter().filter(|s| s.stage == "block_in") {
            if let Some(b) = block_of(s) {
                let e = t0.entry(b).or_insert(s.t_ns);
                *e = (*e).min(s.t_ns);
            }
        }
        for r in sent
            .values()
            .filter(|r| r.event == NodeEventKind::BlockSent)
        {
            t0.entry(r.id.clone()).or_insert(r.t_ns);
        }
        let mut by_stage: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
        for s in &samples.stages {
            let Some(start) = block_of(s).and_then(|b| t0.get(&b).copied()) else {
                continue;
            };
            let h = by_stage.entry(s.stage.clone()).or_insert_with(histogram);
            record(h, diff(s.t_ns, start));
        }
        let mut stages: Vec<StageRow> = by_stage
            .iter()
            .filter_map(|(name, h)| {
                percentiles(h).map(|p| StageRow {
                    stage: name.clone(),
                    count: p.count,
                    p50_ms: p.p50_ms,
                    p90_ms: p.p90_ms,
                    max_ms: p.max_ms,
                })
            })
            .collect();
        let rank = |s: &StageRow| {
            STAGES
                .iter()
                .position(|n| *n == s.stage)
                .unwrap_or(STAGES.len())
        };
        stages.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.p50_ms.total_cmp(&b.p50_ms)));

        let mean =
            |v: Vec<u64>| (!v.is_empty()).then(|| v.iter().sum::<u64>() as f64 / v.len() as f64);
        Report {
            description: description.to_string(),
            receivers: n_recv,
            mean_block_bytes: mean(rows.iter().map(|r| r.bytes).filter(|&b| b > 0).collect()),
            mean_wire_bytes: mean(rows.iter().filter_map(|r| r.wire_bytes).collect()),
            blocks: rows,
            block_propagation: percentiles(&prop),
            time_to_90pct: percentiles(&t90),
            blocks_below_90pct: below90,
            missed_deliveries: missed,
            tx_propagation: percentiles(&txh),
            missed_tx_deliveries: missed_tx,
            stages,
            negative_intervals: negative,
            unparsed_lines: samples.unparsed_lines,
            cdf_ms: cdf,
            capture_blocks: Vec::new(),
        }
    }

    /// Adds the capture's own propagation of each block (from the source's
    /// [`crate::capture_feed::FeedSummary`]) beside Photon's: blocks the capture announced, and
    /// blocks it carried whole without an announcement.
    pub fn add_capture(&mut self, summary: &crate::capture_feed::FeedSummary) {
        let mut rows = Vec::new();
        for a in &summary.announcements {
            let photon = self.blocks.iter().find(|b| b.hash == a.hash);
            rows.push(CaptureBlockRow {
                hash: a.hash.clone(),
                announcers: a.announcers,
                announce_median_ms: a.median_ms(),
                announce_spread_ms: a.spread_ms(),
                replayed: a.block_seen_ns.is_some(),
                photon_p50_ms: photon.and_then(|b| b.p50_ms),
                photon_max_ms: photon.and_then(|b| b.max_ms),
                photon_t90_ms: photon.and_then(|b| b.t90_ms),
            });
        }
        self.capture_blocks = rows;
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The report as markdown.
    pub fn to_markdown(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        let _ = writeln!(s, "# Block propagation\n\n{}\n", self.description);
        let _ = writeln!(
            s,
            "{} blocks, {} receiving nodes; {} deliveries missed, {} blocks below 90% of the receivers.\n",
            self.blocks.len(),
            self.receivers,
            self.missed_deliveries,
            self.blocks_below_90pct
        );
        let _ = writeln!(
            s,
            "| measure | count | mean ms | p50 ms | p90 ms | p99 ms | max ms |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
        for (name, p) in [
            (
                "block: source node to each receiving node",
                &self.block_propagation,
            ),
            (
                "block: time to 90% of the receiving nodes",
                &self.time_to_90pct,
            ),
            (
                "transaction: source node to each receiving node",
                &self.tx_propagation,
            ),
        ] {
            match p {
                Some(p) => {
                    let _ = writeln!(
                        s,
                        "| {name} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
                        p.count, p.mean_ms, p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms
                    );
                }
                None => {
                    let _ = writeln!(s, "| {name} | 0 | - | - | - | - | - |");
                }
            }
        }
        let _ = writeln!(
            s,
            "\nBytes per block: {} in the block, {} on the wire (all fragments from the source gateway).\n",
            f(self.mean_block_bytes).replace(".000", ""),
            f(self.mean_wire_bytes).replace(".000", "")
        );
        if !self.blocks.is_empty() {
            let rows = self.blocks.iter().map(|b| {
                vec![
                    format!("…{}…", short_hash(&b.hash)),
                    b.bytes.to_string(),
                    b.wire_bytes.map_or("-".into(), |w| w.to_string()),
                    b.receivers.to_string(),
                    f(b.p50_ms),
                    f(b.max_ms),
                    f(b.t90_ms),
                ]
            });
            let columns =
                "| block | bytes | wire bytes | receivers | p50 ms | max ms | to 90% ms |";
            md_table(&mut s, columns, "|---|---:|---:|---:|---:|---:|---:|", rows);
        }
        if !self.stages.is_empty() {
            let _ = writeln!(
                s,
                "\n## Stages (offset from the block's arrival at the source gateway)\n"
            );
            let rows = self.stages.iter().map(|st| {
                let ms = [st.p50_ms, st.p90_ms, st.max_ms].map(|t| format!("{t:.3}"));
                [st.stage.to_string(), st.count.to_string()]
                    .into_iter()
                    .chain(ms)
                    .collect()
            });
            let columns = "| stage | records | p50 ms | p90 ms | max ms |";
            md_table(&mut s, columns, "|---|---:|---:|---:|---:|", rows);
        }
        if !self.capture_blocks.is_empty() {
            let _ = writeln!(
                s,
                "\n## The capture's own network beside Photon\n\n\
                 Each block the capture saw announced (`inv`, `headers`, `cmpctblock`) or carried \
                 whole: how many of its peers announced it and how long after the first \
                 announcement the median and the last of them did, beside Photon's propagation \
                 of the same block in this run (blocks only announced, never carried whole in \
                 the capture, were not replayed; blocks sent whole without an announcement have \
                 no announcers).\n"
            );
            let rows = self.capture_blocks.iter().map(|b| {
                vec![
                    format!("…{}…", short_hash(&b.hash)),
                    b.announcers.to_string(),
                    f(b.announce_median_ms),
                    f(b.announce_spread_ms),
                    (if b.replayed { "yes" } else { "no" }).to_string(),
                    f(b.photon_p50_ms),
                    f(b.photon_t90_ms),
                    f(b.photon_max_ms),
                ]
            });
            let columns = "| block | announcers | median announcer ms | last announcer ms | replayed | Photon p50 ms | Photon to 90% ms | Photon max ms |";
            md_table(
                &mut s,
                columns,
                "|---|---:|---:|---:|---|---:|---:|---:|",
                rows,
            );
        }
        if self.negative_intervals > 0 || self.unparsed_lines > 0 {
            let _ = writeln!(
                s,
                "\n{} negative intervals clamped to 0; {} unparsed record lines.",
                self.negative_intervals, self.unparsed_lines
            );
        }
        s
    }

    /// Writes `report.json`, `report.md`, and the plots (`propagation_cdf.{svg,png}`,
    /// `stages.{svg,png}`) into `dir`. Returns the files written.
    pub fn write_all(&self, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
        let werr = |path: &Path, reason: String| ReportError::Write {
            path: path.to_owned(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| werr(dir, e.to_string()))?;
        let mut written = Vec::new();
        for (name, text) in [
            ("report.json", self.to_json()),
            ("report.md", self.to_markdown()),
        ] {
            let p = dir.join(name);
            std::fs::write(&p, text).map_err(|e| werr(&p, e.to_string()))?;
            written.push(p);
        }
        written.extend(self.plot(dir)?);
        Ok(written)
    }

    /// Draws the CDF of block propagation time and the per-stage bars, as SVG and PNG.
    pub fn plot(&self, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
        let labels = ensure_font();
        let mut out = Vec::new();
        for ext in ["svg", "png"] {
            let p = dir.join(format!("propagation_cdf.{ext}"));
            plot::cdf(&p, &self.cdf_ms, labels).map_err(|reason| ReportError::Write {
                path: p.clone(),
                reason,
            })?;
            out.push(p);
            let p = dir.join(format!("stages.{ext}"));
            plot::stages(&p, &self.stages, labels).map_err(|reason| ReportError::Write {
                path: p.clone(),
                reason,
            })?;
            out.push(p);
        }
        Ok(out)
    }
}

fn stream_to_block(stages: &[StageRecord]) -> HashMap<u64, String> {
    stages
        .iter()
        .filter_map(|s| Some((s.stream?, s.block.clone()?)))
        .collect()
}

/// Font files tried for plot labels (plotters' `ab_glyph` backend needs one; `PHOTON_FONT`
/// first). Debian's `fonts-dejavu-core` provides the first.
const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Registers a font for plot text once; false when none was found (plots are then drawn
/// without text, and say so on stderr).
pub fn ensure_font() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        let env = std::env::var("PHOTON_FONT").ok();
        for path in env.iter().map(String::as_str).chain(FONT_PATHS) {
            if let Ok(bytes) = std::fs::read(path) {
                // Leaked once per process: plotters keeps fonts for the program's life.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font(
                    "sans-serif",
                    plotters::style::FontStyle::Normal,
                    bytes,
                )
                .is_ok()
                {
                    return true;
                }
            }
        }
        eprintln!(
            "photon-perf: no font found ({}; or set PHOTON_FONT): plots have no labels",
            FONT_PATHS.join(", ")
        );
        false
    })
}

mod plot {
    use std::path::Path;

    use plotters::prelude::*;

    use super::StageRow;

    const SIZE: (u32, u32) = (900, 560);

    macro_rules! on_backend {
        ($path:expr, $size:expr, |$area:ident| $body:block) => {{
            let path: &Path = $path;
            if path.extension().is_some_and(|e| e == "svg") {
                let $area = SVGBackend::new(path, $size).into_drawing_area();
                $body
                $area.present().map_err(|e| e.to_string())
            } else {
                let $area = BitMapBackend::new(path, $size).into_drawing_area();
                $body
                $area.present().map_err(|e| e.to_string())
            }
        }};
    }

    /// CDF of propagation times (ms, sorted).
    pub fn cdf(path: &Path, sorted_ms: &[f64], labels: bool) -> Result<(), String> {
        let max = sorted_ms.last().copied().unwrap_or(1.0).max(1e-3) * 1.05;
        let n = sorted_ms.len().max(1) as f64;
        let points: Vec<(f64, f64)> = sorted_ms
            .iter()
            .enumerate()
            .map(|(i, &v)| (v, (i + 1) as f64 / n))
            .collect();
        on_backend!(path, SIZE, |area| {
            area.fill(&WHITE).map_err(|e| e.to_string())?;
            let mut b = ChartBuilder::on(&area);
            b.margin(20);
            if labels {
                b.caption(
                    "Block propagation: source node to each receiving node",
                    ("sans-serif", 22),
                )
                .x_label_area_size(45)
                .y_label_area_size(55);
            }
            let mut chart = b
                .build_cartesian_2d(0.0..max, 0.0..1.0)
                .map_err(|e| e.to_string())?;
            if labels {
                chart
                    .configure_mesh()
                    .x_desc("propagation time (ms)")
                    .y_desc("fraction of deliveries")
                    .draw()
                    .map_err(|e| e.to_string())?;
            } else {
                chart
                    .configure_mesh()
                    .disable_x_mesh()
                    .disable_y_mesh()
                    .x_labels(0)
                    .y_labels(0)
                    .draw()
                    .map_err(|e| e.to_string())?;
            }
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    BLUE.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?;
        })
    }

    /// One bar per stage from the previous stage's median offset to its own (a waterfall).
    pub fn stages(path: &Path, rows: &[StageRow], labels: bool) -> Result<(), String> {
        let max = rows.iter().map(|r| r.p50_ms).fold(1e-3, f64::max) * 1.45;
        let n = rows.len().max(1);
        on_backend!(path, (SIZE.0, 120 + 32 * n as u32), |area| {
            area.fill(&WHITE).map_err(|e| e.to_string())?;
            let mut b = ChartBuilder::on(&area);
            b.margin(20);
            if labels {
                b.caption(
                    "Per-stage breakdown (median offset from block arrival)",
                    ("sans-serif", 22),
                )
                .x_label_area_size(45)
                .y_label_area_size(150);
            }
            let mut chart = b
                .build_cartesian_2d(0.0..max, 0.0..n as f64)
                .map_err(|e| e.to_string())?;
            if labels {
                chart
                    .configure_mesh()
                    .disable_y_mesh()
                    .y_labels(0)
                    .x_desc("ms since the block reached the source gateway")
                    .draw()
                    .map_err(|e| e.to_string())?;
            }
            let mut prev = 0.0f64;
            let bars: Vec<Rectangle<(f64, f64)>> = rows
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let y = (n - i) as f64;
                    let from = prev.min(r.p50_ms);
                    prev = prev.max(r.p50_ms);
                    let color = Palette99::pick(i).filled();
                    Rectangle::new(
                        [(from, y - 0.8), (r.p50_ms.max(from + max * 0.002), y - 0.2)],
                        color,
                    )
                })
                .collect();
            chart.draw_series(bars).map_err(|e| e.to_string())?;
            if labels {
                // Each stage's name and median right of its bar.
                let text = rows.iter().enumerate().map(|(i, r)| {
                    let y = (n - i) as f64 - 0.35;
                    Text::new(
                        format!("{} {:.2} ms", r.stage, r.p50_ms),
                        (r.p50_ms + max * 0.01, y),
                        ("sans-serif", 14),
                    )
                });
                chart.draw_series(text).map_err(|e| e.to_string())?;
            }
        })
    }
}

/// `photon-perf report`: builds the report of a run from its JSON-lines records.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// JSON-lines files of node and stage records.
    #[arg(required = true)]
    pub records: Vec<PathBuf>,
    /// Where report.json, report.md and the plots go.
    #[arg(long, default_value = "perf-report")]
    pub out: PathBuf,
    /// What the run replayed (first line of the report).
    #[arg(long, default_value = "")]
    pub description: String,
    /// The source's capture summary (`photon-perf emunode --capture ... --summary-out`): adds
    /// each block's announcements across the capture's peers beside Photon's propagation.
    #[arg(long)]
    pub capture_summary: Option<PathBuf>,
}

/// Runs `photon-perf report`.
pub fn run_report(args: &ReportArgs) -> Result<(), String> {
    let mut samples = Samples::default();
    for p in &args.records {
        samples.read_jsonl(p).map_err(|e| e.to_string())?;
    }
    let mut report = Report::build(&samples, &args.description);
    if let Some(p) = &args.capture_summary {
        report.add_capture(&crate::capture_feed::FeedSummary::read(p)?);
    }
    let files = report.write_all(&args.out).map_err(|e| e.to_string())?;
    print!("{}", report.to_markdown());
    for f in files {
        println!("wrote {}", f.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(t_ns: u64, node: &str, event: NodeEventKind, id: &str) -> NodeRecord {
        NodeRecord {
            t_ns,
            node: node.into(),
            event,
            id: id.into(),
            bytes: 1000,
        }
    }

    /// One block from `src` to 10 receivers arriving 1..=10 ms later; receiver 10 never gets
    /// the second block.
    fn samples() -> Samples {
        let mut s = Samples::default();
        for (b, t0) in [("aa", 1_000_000_000u64), ("bb", 2_000_000_000)] {
            s.nodes.push(node(t0, "src", NodeEventKind::BlockSent, b));
            for r in 1..=10u64 {
                if b == "bb" && r == 10 {
                    continue;
                }
                s.nodes.push(node(
                    t0 + r * 1_000_000,
                    &format!("n{r}"),
                    NodeEventKind::BlockReceived,
                    b,
                ));
            }
        }
        s
    }

    #[test]
    fn percentiles_of_known_samples() {
        let r = Report::build(&samples(), "synthetic");
        let p = r.block_propagation.unwrap();
        assert_eq!(p.count, 19);
        // 1..=10 ms and 1..=9 ms: median 5 ms, max 10 ms (HdrHistogram: 3 significant digits).
        assert!((p.p50_ms - 5.0).abs() < 0.01, "{p:?}");
        assert!((p.max_ms - 10.0).abs() < 0.011, "{p:?}");
        assert!((p.p90_ms - 9.0).abs() < 0.01, "{p:?}");
        assert_eq!(r.receivers, 10);
        assert_eq!(r.missed_deliveries, 1);
        // Block aa: 90% of 10 is the 9th arrival (9 ms). Block bb: 9 of 10 arrived: 9 ms.
        assert_eq!(r.blocks[0].t90_ms, Some(9.0));
        assert_eq!(r.blocks[1].t90_ms, Some(9.0));
        assert_eq!(r.blocks_below_90pct, 0);
        assert_eq!(r.cdf_ms.len(), 19);
        assert!(r.cdf_ms.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn below_90_percent_is_counted() {
        let mut s = samples();
        s.nodes
            .retain(|n| !(n.id == "bb" && (n.node == "n9" || n.node == "n8")));
        let r = Report::build(&s, "");
        assert_eq!(r.blocks[1].t90_ms, None);
        assert_eq!(r.blocks_below_90pct, 1);
        assert_eq!(r.missed_deliveries, 3);
    }

    #[test]
    fn stages_and_wire_bytes_from_jsonl() {
        let mut s = samples();
        let lines = [
            r#"{"t_ns":1000000000,"node":"gw0","stage":"block_in","block":"aa","stream":7}"#,
            r#"{"t_ns":1000500000,"node":"gw0","stage":"compress","stream":7}"#,
            r#"{"t_ns":1001000000,"node":"gw0","stage":"last_fragment_out","stream":7,"bytes":4321}"#,
            r#"{"t_ns":1003000000,"node":"gw1","stage":"deliver","block":"aa"}"#,
            r#"{"t_ns":1004000000,"node":"gw2","stage":"deliver","block":"aa"}"#,
            r#"{"t_ns":1000000000,"node":"src","event":"tx_sent","id":"t1","bytes":200}"#,
            r#"{"t_ns":1000200000,"node":"n1","event":"tx_received","id":"t1"}"#,
            "not json",
            "",
        ];
        for l in lines {
            s.push_line(l);
        }
        assert_eq!(s.unparsed_lines, 1);
        let r = Report::build(&s, "");
        let names: Vec<&str> = r.stages.iter().map(|s| s.stage.as_str()).collect();
        assert_eq!(
            names,
            ["block_in", "compress", "last_fragment_out", "deliver"]
        );
        assert!((r.stages[1].p50_ms - 0.5).abs() < 0.001);
        assert_eq!(r.stages[3].count, 2);
        assert_eq!(r.blocks[0].wire_bytes, Some(4321));
        let tx = r.tx_propagation.unwrap();
        assert_eq!(tx.count, 1);
        assert!((tx.p50_ms - 0.2).abs() < 0.001);
        // 9 other receivers never got t1.
        assert_eq!(r.missed_tx_deliveries, 9);
        let md = r.to_markdown();
        assert!(md.contains("| deliver | 2 |"));
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["blocks"][0]["wire_bytes"], 4321);
    }

    #[test]
    fn plots_are_written_and_not_empty() {
        let mut s = samples();
        s.push_line(r#"{"t_ns":1000000000,"node":"gw0","stage":"block_in","block":"aa"}"#);
        s.push_line(r#"{"t_ns":1002000000,"node":"gw0","stage":"fec","block":"aa"}"#);
        let r = Report::build(&s, "plot test");
        let dir = std::env::temp_dir().join(format!("photon-report-{}", std::process::id()));
        let files = r.write_all(&dir).unwrap();
        assert_eq!(files.len(), 6);
        for f in &files {
            let len = std::fs::metadata(f).unwrap().len();
            assert!(len > 500, "{} is {len} bytes", f.display());
        }
        let png = std::fs::read(dir.join("propagation_cdf.png")).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let svg = std::fs::read_to_string(dir.join("stages.svg")).unwrap();
        assert!(svg.contains("<rect"));
        if ensure_font() {
            assert!(svg.contains("fec"));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn capture_announcements_beside_photon() {
        use crate::capture_feed::{
            BlockAnnouncements, CaptureStatsSummary, FeedCounts, FeedSummary,
        };
        let row = |hash: &str, delays: Vec<f64>, seen: bool| BlockAnnouncements {
            hash: hash.into(),
            announcers: delays.len(),
            first_ns: 1,
            delays_ms: delays,
            by_command: BTreeMap::new(),
            block_seen_ns: seen.then_some(2),
        };
        let summary = FeedSummary {
            capture: PathBuf::from("x.pcap"),
            stats: CaptureStatsSummary::default(),
            counts: FeedCounts::default(),
            t0_ns: Some(1),
            announcements: vec![
                row("aa", vec![0.0, 12.5, 40.0], true),
                row("bb", vec![], true),
                row("cc", vec![0.0], false),
            ],
            announcements_dropped: 0,
            sync_headers: 0,
            sync_invs: 0,
        };
        let mut r = Report::build(&samples(), "capture x.pcap");
        r.add_capture(&summary);
        let aa = &r.capture_blocks[0];
        assert_eq!(
            (aa.announcers, aa.announce_median_ms, aa.announce_spread_ms),
            (3, Some(12.5), Some(40.0))
        );
        assert_eq!(aa.photon_t90_ms, Some(9.0));
        assert_eq!(r.capture_blocks[1].announce_median_ms, None);
        assert!(!r.capture_blocks[2].replayed);
        assert_eq!(r.capture_blocks[2].photon_p50_ms, None);
        let md = r.to_markdown();
        assert!(
            md.contains("| …aa… | 3 | 12.500 | 40.000 | yes | 5.003 | 9.000 | 10.007 |"),
            "{md}"
        );
        assert!(md.contains("| …bb… | 0 | - | - | yes |"), "{md}");
    }
}
