//! The baselines of one end-to-end session side by side (`photon-perf compare`, run by
//! `scripts/baselines.sh`): each variant's `report.json` ([`crate::report::Report`]) becomes a
//! row, with the physical limit of the chosen block computed from that variant's own bytes on the
//! wire, and the two goals checked where their variants are named.
//!
//! The physical limit (perf issue, §5) is the serialization of the block's wire bytes (every
//! fragment of it: compressed, sealed, FEC'd, as the source gateway's `last_fragment_out` record
//! counts them) on the bottleneck link, plus the links' configured delay:
//! `wire_bytes × 8 / rate + path_delay`. It assumes one copy crosses the bottleneck. A single
//! relay's own link must carry one copy per receiver, so the report also gives the tighter
//! fan-out limit: `ceil(0.9 × receivers) × wire_bytes × 8 / rate + path_delay`, the copies the
//! last relay must send before 90% of the receivers can have the block.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bitcoin::consensus::deserialize;
use bitcoin::Block;

use crate::report::Report;

/// One variant of the session: a label and its report.
#[derive(Debug, Clone)]
pub struct Variant {
    pub label: String,
    pub report: Report,
}

/// How the limits are computed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// Bottleneck link rate, Mbit/s.
    pub rate_mbps: f64,
    /// Configured delay summed over the path's links, ms.
    pub path_delay_ms: f64,
}

impl Link {
    /// Milliseconds to serialize `bytes` on the link, plus the path delay.
    pub fn limit_ms(&self, bytes: u64, copies: u64) -> f64 {
        (bytes * copies) as f64 * 8.0 / (self.rate_mbps * 1e3) + self.path_delay_ms
    }
}

/// The chosen block's figures in one variant.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockFigures {
    pub wire_bytes: Option<u64>,
    pub receivers: usize,
    pub t90_ms: Option<f64>,
    /// One copy over the bottleneck.
    pub limit_ms: Option<f64>,
    /// `ceil(0.9 × receivers)` copies over the last relay's link.
    pub fanout_limit_ms: Option<f64>,
}

/// The figures of `hash` (hex, as in the report) in `report`.
pub fn block_figures(report: &Report, hash: &str, link: Link) -> Option<BlockFigures> {
    let row = report.blocks.iter().find(|b| b.hash == hash)?;
    let copies = (0.9 * report.receivers as f64).ceil().max(1.0) as u64;
    Some(BlockFigures {
        wire_bytes: row.wire_bytes,
        receivers: row.receivers,
        t90_ms: row.t90_ms,
        limit_ms: row.wire_bytes.map(|w| link.limit_ms(w, 1)),
        fanout_limit_ms: row.wire_bytes.map(|w| link.limit_ms(w, copies)),
    })
}

/// A stage's p50 offset (ms from the block's arrival at the source gateway), if recorded.
fn stage_p50(report: &Report, stage: &str) -> Option<f64> {
    report
        .stages
        .iter()
        .find(|s| s.stage == stage)
        .map(|s| s.p50_ms)
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// Which variants the goals compare (labels), and their thresholds.
#[derive(Debug, Clone, Default)]
pub struct Goals {
    /// Our configuration: time to 90% of the block ≤ 1.2 × the physical limit.
    pub ours: Option<String>,
    /// Cut-through ≤ 0.6 × store-and-forward (time to 90% of the block).
    pub cut_through: Option<String>,
    pub store_and_forward: Option<String>,
}

/// The markdown comparison. `block_hash`: the block the limits and goals are about.
pub fn markdown(variants: &[Variant], block_hash: &str, link: Link, goals: &Goals) -> String {
    let mut s = String::new();
    let short = block_hash
        .get(block_hash.len().saturating_sub(12)..)
        .unwrap_or(block_hash);
    let _ = writeln!(s, "# Baselines side by side\n");
    let _ = writeln!(
        s,
        "Block for limits and goals: …{short}. Link: {} Mbit/s, path delay {} ms. Limit = wire \
         bytes × 8 / rate + delay (one copy); fan-out limit = ceil(0.9 × receivers) copies over \
         the last relay's link.\n",
        link.rate_mbps, link.path_delay_ms
    );
    let _ = writeln!(
        s,
        "| variant | blocks to 90% | missed deliveries | t90 mean ms | t90 p50 ms | t90 max ms \
         | block wire bytes | block t90 ms | limit ms | × limit | fan-out limit ms | × fan-out limit |"
    );
    let _ = writeln!(
        s,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for v in variants {
        let r = &v.report;
        let t90 = r.time_to_90pct.as_ref();
        let b = block_figures(r, block_hash, link);
        let b_t90 = b.as_ref().and_then(|b| b.t90_ms);
        let lim = b.as_ref().and_then(|b| b.limit_ms);
        let flim = b.as_ref().and_then(|b| b.fanout_limit_ms);
        let _ = writeln!(
            s,
            "| {} | {}/{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            v.label,
            r.blocks.len() - r.blocks_below_90pct.min(r.blocks.len()),
            r.blocks.len(),
            r.missed_deliveries,
            ms(t90.map(|p| p.mean_ms)),
            ms(t90.map(|p| p.p50_ms)),
            ms(t90.map(|p| p.max_ms)),
            b.as_ref()
                .and_then(|b| b.wire_bytes)
                .map_or("-".into(), |w| w.to_string()),
            ms(b_t90),
            lim.map_or("-".into(), |v| format!("{v:.2}")),
            ratio(b_t90, lim).map_or("-".into(), |v| format!("{v:.0}×")),
            flim.map_or("-".into(), |v| format!("{v:.2}")),
            ratio(b_t90, flim).map_or("-".into(), |v| format!("{v:.0}×")),
        );
    }
    let _ = writeln!(
        s,
        "\nStage offsets, p50 ms from the block's arrival at the source gateway (all blocks and \
         receivers):\n"
    );
    const SHOWN: [&str; 8] = [
        "first_fragment_out",
        "relay",
        "last_fragment_out",
        "first_fragment_in",
        "last_fragment_in",
        "key_in",
        "decode",
        "deliver",
    ];
    let _ = writeln!(s, "| variant | {} |", SHOWN.join(" | "));
    let _ = writeln!(s, "|---|{}", "---:|".repeat(SHOWN.len()));
    for v in variants {
        let cells: Vec<String> = SHOWN
            .iter()
            .map(|st| ms(stage_p50(&v.report, st)))
            .collect();
        let _ = writeln!(s, "| {} | {} |", v.label, cells.join(" | "));
    }
    let find = |label: &Option<String>| {
        label
            .as_ref()
            .and_then(|l| variants.iter().find(|v| &v.label == l))
    };
    let _ = writeln!(s);
    if let Some(v) = find(&goals.ours) {
        if let Some(b) = block_figures(&v.report, block_hash, link) {
            let x = ratio(b.t90_ms, b.limit_ms);
            let _ = writeln!(
                s,
                "Goal 1 ({}): block time to 90% {} ms vs physical limit {} ms: {} the limit \
                 (goal ≤ 1.2×): **{}**; vs the fan-out limit {} ms: {}.",
                v.label,
                ms(b.t90_ms),
                b.limit_ms.map_or("-".into(), |v| format!("{v:.2}")),
                x.map_or("-".into(), |x| format!("{x:.1}×")),
                verdict(x, 1.2),
                b.fanout_limit_ms.map_or("-".into(), |v| format!("{v:.2}")),
                ratio(b.t90_ms, b.fanout_limit_ms).map_or("-".into(), |x| format!("{x:.1}×")),
            );
        }
    }
    if let (Some(ct), Some(sf)) = (find(&goals.cut_through), find(&goals.store_and_forward)) {
        let a = block_figures(&ct.report, block_hash, link).and_then(|b| b.t90_ms);
        let b = block_figures(&sf.report, block_hash, link).and_then(|b| b.t90_ms);
        let x = ratio(a, b);
        let mean = ratio(
            ct.report.time_to_90pct.map(|p| p.mean_ms),
            sf.report.time_to_90pct.map(|p| p.mean_ms),
        );
        let _ = writeln!(
            s,
            "Goal 2: cut-through ({}) {} ms vs store-and-forward ({}) {} ms for the block: {} \
             (goal ≤ 0.6): **{}**; over all blocks' mean time to 90%: {}.",
            ct.label,
            ms(a),
            sf.label,
            ms(b),
            x.map_or("-".into(), |x| format!("{x:.2}×")),
            verdict(x, 0.6),
            mean.map_or("-".into(), |x| format!("{x:.2}×")),
        );
    }
    s
}

fn verdict(x: Option<f64>, goal: f64) -> &'static str {
    match x {
        Some(x) if x <= goal => "met",
        Some(_) => "missed",
        None => "not measured",
    }
}

/// `photon-perf compare`: the baselines of one session side by side.
#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// Variants as `label=path`, path a report folder or its report.json, in table order.
    #[arg(required = true)]
    pub runs: Vec<String>,
    /// The block the limits and goals are about: its raw file (e.g.
    /// data/bitcoin/mainnet/702861.raw).
    #[arg(long)]
    pub block: PathBuf,
    /// Bottleneck link rate, Mbit/s.
    #[arg(long, default_value_t = 1000.0)]
    pub rate_mbps: f64,
    /// Configured delay summed over the path's links, ms.
    #[arg(long, default_value_t = 0.0)]
    pub path_delay_ms: f64,
    /// Label of our configuration (goal 1).
    #[arg(long)]
    pub ours: Option<String>,
    /// Labels of the cut-through and store-and-forward variants (goal 2).
    #[arg(long)]
    pub cut_through: Option<String>,
    #[arg(long)]
    pub store_and_forward: Option<String>,
    /// Also write the markdown here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Errors of `compare`.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("{0}: expected label=path")]
    BadRun(String),
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a report.json: {reason}")]
    NotAReport { path: PathBuf, reason: String },
    #[error("{path}: not a block: {reason}")]
    NotABlock { path: PathBuf, reason: String },
}

/// Reads `label=path` (a folder holding report.json, or the file).
pub fn load_variant(spec: &str) -> Result<Variant, CompareError> {
    let (label, path) = spec
        .split_once('=')
        .filter(|(l, p)| !l.is_empty() && !p.is_empty())
        .ok_or_else(|| CompareError::BadRun(spec.into()))?;
    let mut path = PathBuf::from(path);
    if path.is_dir() {
        path.push("report.json");
    }
    let text = std::fs::read_to_string(&path).map_err(|source| CompareError::Read {
        path: path.clone(),
        source,
    })?;
    let report = serde_json::from_str(&text).map_err(|e| CompareError::NotAReport {
        path,
        reason: e.to_string(),
    })?;
    Ok(Variant {
        label: label.into(),
        report,
    })
}

/// The hash (hex, display order) of the raw block in `path`.
pub fn block_hash(path: &Path) -> Result<String, CompareError> {
    let bytes = std::fs::read(path).map_err(|source| CompareError::Read {
        path: path.into(),
        source,
    })?;
    let block: Block = deserialize(&bytes).map_err(|e| CompareError::NotABlock {
        path: path.into(),
        reason: e.to_string(),
    })?;
    Ok(block.block_hash().to_string())
}

/// Runs `photon-perf compare`.
pub fn run_compare(args: &CompareArgs) -> Result<(), String> {
    let variants = args
        .runs
        .iter()
        .map(|r| load_variant(r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let hash = block_hash(&args.block).map_err(|e| e.to_string())?;
    let link = Link {
        rate_mbps: args.rate_mbps,
        path_delay_ms: args.path_delay_ms,
    };
    let goals = Goals {
        ours: args.ours.clone(),
        cut_through: args.cut_through.clone(),
        store_and_forward: args.store_and_forward.clone(),
    };
    let md = markdown(&variants, &hash, link, &goals);
    print!("{md}");
    if let Some(out) = &args.out {
        std::fs::write(out, &md).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{BlockRow, Percentiles};

    fn report(t90: f64, wire: u64) -> Report {
        Report {
            description: String::new(),
            receivers: 7,
            blocks: vec![BlockRow {
                hash: "ab".repeat(32),
                source: "node0".into(),
                bytes: 1_000_000,
                wire_bytes: Some(wire),
                receivers: 7,
                p50_ms: Some(t90 / 2.0),
                max_ms: Some(t90),
                t90_ms: Some(t90),
            }],
            block_propagation: None,
            time_to_90pct: Some(Percentiles {
                count: 1,
                mean_ms: t90,
                p50_ms: t90,
                p90_ms: t90,
                p99_ms: t90,
                max_ms: t90,
            }),
            blocks_below_90pct: 0,
            missed_deliveries: 0,
            mean_block_bytes: None,
            mean_wire_bytes: None,
            tx_propagation: None,
            missed_tx_deliveries: 0,
            stages: vec![],
            negative_intervals: 0,
            unparsed_lines: 0,
            cdf_ms: vec![],
            capture_blocks: Vec::new(),
        }
    }

    #[test]
    fn limits_are_serialization_plus_delay() {
        let link = Link {
            rate_mbps: 1000.0,
            path_delay_ms: 2.0,
        };
        // 125,000 B = 1 Mbit = 1 ms at 1 Gbit/s; 7 receivers -> 7 copies for 90%.
        let b = block_figures(&report(10.0, 125_000), &"ab".repeat(32), link).unwrap();
        assert!((b.limit_ms.unwrap() - 3.0).abs() < 1e-9);
        assert!((b.fanout_limit_ms.unwrap() - 9.0).abs() < 1e-9);
        assert!(block_figures(&report(10.0, 1), "cd", link).is_none());
    }

    #[test]
    fn goals_are_judged_against_their_thresholds() {
        let link = Link {
            rate_mbps: 1000.0,
            path_delay_ms: 0.0,
        };
        let v = vec![
            Variant {
                label: "ct".into(),
                report: report(5.0, 125_000),
            },
            Variant {
                label: "sf".into(),
                report: report(10.0, 125_000),
            },
        ];
        let goals = Goals {
            ours: Some("ct".into()),
            cut_through: Some("ct".into()),
            store_and_forward: Some("sf".into()),
        };
        let md = markdown(&v, &"ab".repeat(32), link, &goals);
        // 5 ms vs a 1 ms limit: missed; 5 / 10 = 0.5 <= 0.6: met.
        assert!(
            md.contains("5.0× the limit (goal ≤ 1.2×): **missed**"),
            "{md}"
        );
        assert!(md.contains("0.50× (goal ≤ 0.6): **met**"), "{md}");
        assert!(md.contains("| ct | 1/1 | 0 | 5.0 | 5.0 | 5.0 | 125000 | 5.0 | 1.00 | 5× |"));
    }

    #[test]
    fn a_report_round_trips_through_json_and_bad_specs_are_errors() {
        let dir = std::env::temp_dir().join(format!("photon-compare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("report.json"), report(3.0, 10).to_json()).unwrap();
        let v = load_variant(&format!("x={}", dir.display())).unwrap();
        assert_eq!(v.label, "x");
        assert_eq!(v.report.blocks[0].t90_ms, Some(3.0));
        assert!(matches!(
            load_variant("nolabel"),
            Err(CompareError::BadRun(_))
        ));
        std::fs::write(dir.join("bad.json"), "{}").unwrap();
        assert!(matches!(
            load_variant(&format!("y={}/bad.json", dir.display())),
            Err(CompareError::NotAReport { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
