//! The relay's Prometheus `/metrics`: renders the per-core counters ([`crate::ops::counters`])
//! and the control path's ([`crate::control::ControlShared`]), published in housekeeping, as
//! OpenMetrics text; a scrape only reads atomics, so the data path never notices one. Every
//! name is prefixed `photon_relay_`; counters end in `_total`. The HTTP responder is
//! `photon_ops::http`. Exposed:
//! - per data core, label `core`: `rx_packets`, `rx_bytes`, `tx_packets`, `tx_bytes`,
//!   `fragments`, `fanout_copies`, `dedup_hits`, `to_control`, `from_control`, `arp_replies`,
//!   `icmp_replies`; `drops` with label `reason` (every [`DropReason`]); gauge
//!   `table_generation`;
//! - control path: `control_<name>` for every [`ControlCounter`]; gauges `gateways`,
//!   `repair_cache_fragments`, `repair_cache_bytes`; per peer, gauge `peer_idle_ms` with labels
//!   `node_id`, `kind`, `addr`.

use std::sync::Arc;

pub use photon_ops::http::{MetricsError, MetricsServer, RenderFn};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter as PromCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::control::{ControlCounter, ControlShared};
use crate::forward::table::PeerKind;
use crate::ops::config::MetricsConfig;
use crate::ops::counters::{CoreCounters, Counter, DropReason};

/// Serves `/metrics` ([`MetricsServer`]) on `cfg.listen` if `cfg.enabled`, and says where;
/// `None` if not.
pub fn serve(cfg: &MetricsConfig, render: Arc<RenderFn>) -> Result<Option<MetricsServer>, String> {
    if !cfg.enabled {
        return Ok(None);
    }
    let server = MetricsServer::start(cfg.listen, render).map_err(|e| e.to_string())?;
    tracing::info!(listen = %server.local_addr(), "serving /metrics");
    Ok(Some(server))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CoreLabel {
    core: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabel {
    core: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    node_id: String,
    kind: String,
    addr: String,
}

const PREFIX: &str = "photon_relay";

fn counter_help(c: Counter) -> &'static str {
    match c {
        Counter::RxPackets => "datagrams or frames received",
        Counter::RxBytes => "bytes received",
        Counter::TxPackets => "datagrams or frames sent",
        Counter::TxBytes => "bytes sent",
        Counter::Fragments => "block fragments accepted and fanned out",
        Counter::FanoutCopies => "fan-out copies sent",
        Counter::DedupHits => "fragments dropped as already forwarded",
        Counter::ToControl => "messages passed to the control path",
        Counter::FromControl => "frames the control path sent through this core",
        Counter::ArpReplies => "ARP requests answered",
        Counter::IcmpReplies => "ICMP echo requests answered",
        Counter::ToRepairCache => "forwarded fragments handed to the control core's repair cache",
        Counter::HoldHeld => "store-and-forward: fragments held",
        Counter::HoldReleased => "store-and-forward: held fragments released to the fan-out",
        Counter::HoldStreamsComplete => "store-and-forward: streams released complete",
        Counter::HoldStreamsTimeout => "store-and-forward: streams released after the hold timeout",
        Counter::HoldStreamsOverflow => {
            "store-and-forward: streams released early to stay within the hold bounds"
        }
        Counter::Drop(_) => "drops by reason",
    }
}

/// Encodes the current values (OpenMetrics text).
pub fn render(cores: &[Arc<CoreCounters>], control: Option<&ControlShared>) -> String {
    let mut reg = Registry::with_prefix(PREFIX);
    let snaps: Vec<_> = cores.iter().map(|c| c.snapshot()).collect();
    for c in Counter::all() {
        if matches!(c, Counter::Drop(_)) {
            continue;
        }
        let fam = Family::<CoreLabel, PromCounter>::default();
        for (i, s) in snaps.iter().enumerate() {
            fam.get_or_create(&CoreLabel {
                core: i.to_string(),
            })
            .inc_by(s.get(c));
        }
        reg.register(c.name(), counter_help(c), fam);
    }
    let drops = Family::<DropLabel, PromCounter>::default();
    for (i, s) in snaps.iter().enumerate() {
        for r in DropReason::ALL {
            drops
                .get_or_create(&DropLabel {
                    core: i.to_string(),
                    reason: r.name().into(),
                })
                .inc_by(s.get(Counter::Drop(r)));
        }
    }
    reg.register("drops", "frames or datagrams dropped, by reason", drops);
    let generation = Family::<CoreLabel, Gauge>::default();
    for (i, c) in cores.iter().enumerate() {
        generation
            .get_or_create(&CoreLabel {
                core: i.to_string(),
            })
            .set(c.table_generation() as i64);
    }
    reg.register(
        "table_generation",
        "forwarding-table generation each core uses",
        generation,
    );
    if let Some(ctl) = control {
        for &c in ControlCounter::ALL {
            let counter = PromCounter::<u64>::default();
            counter.inc_by(ctl.get(c));
            reg.register(format!("control_{}", c.name()), c.help(), counter);
        }
        let gateways = Gauge::<i64>::default();
        gateways.set(ctl.gateways() as i64);
        reg.register("gateways", "gateways registered", gateways);
        let (frags, bytes) = ctl.cache();
        let g = Gauge::<i64>::default();
        g.set(frags as i64);
        reg.register("repair_cache_fragments", "fragments in the repair cache", g);
        let g = Gauge::<i64>::default();
        g.set(bytes as i64);
        reg.register("repair_cache_bytes", "bytes in the repair cache", g);
        let idle = Family::<PeerLabel, Gauge>::default();
        for p in ctl.peers() {
            idle.get_or_create(&PeerLabel {
                node_id: p.node_id.to_string(),
                kind: match p.kind {
                    PeerKind::Gateway { .. } => "gateway".into(),
                    PeerKind::Relay => "relay".into(),
                },
                addr: p.addr.to_string(),
            })
            .set(p.idle_ms as i64);
        }
        reg.register(
            "peer_idle_ms",
            "ms since the last datagram from each peer (0 for configured relays)",
            idle,
        );
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
    out
}
