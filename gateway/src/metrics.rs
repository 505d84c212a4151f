//! Prometheus metrics (`prometheus-client`, the relay's choice too) and a minimal `/metrics`
//! HTTP endpoint.
//!
//! The driver publishes the core's counters here in its housekeeping (deltas of
//! [`GatewayStats`] snapshots) and observes the per-stage latencies of each block event; the
//! data path itself never touches a metric.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use photon_ops::http::{MetricsError, MetricsServer};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::core::{GatewayEvent, GatewayStats};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// `node` or `network`.
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabel {
    /// `out` (our node's blocks) or `in` (blocks from the network).
    pub direction: &'static str,
    /// `block` (chain encoding) or `compressed`.
    pub form: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OriginLabel {
    /// An origin gateway's public key, 64 hex digits.
    pub origin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

type HistogramFamily = Family<StageLabel, Histogram, fn() -> Histogram>;

fn stage_histogram() -> Histogram {
    // 10 µs .. ~84 s.
    Histogram::new(exponential_buckets(1e-5, 2.0, 24))
}

/// Every metric of the gateway.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    blocks: Family<SourceLabel, Counter>,
    txs: Family<SourceLabel, Counter>,
    bytes: Family<BytesLabel, Counter>,
    stage_seconds: HistogramFamily,
    datagrams_in: Counter,
    datagrams_out: Counter,
    drops: Family<ReasonLabel, Counter>,
    tx_requests: Counter,
    key_releases: Family<ReasonLabel, Counter>,
    peer_fallbacks: Counter,
    roster_updates: Counter,
    invalid_blocks: Family<OriginLabel, Counter>,
    receipts: Counter,
    receipts_not_counted: Family<ReasonLabel, Counter>,
    links_up: Gauge,
    tx_store_bytes: Gauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("photon_gateway");
        let blocks = Family::<SourceLabel, Counter>::default();
        r.register(
            "blocks",
            "Blocks handled, by where they came from",
            blocks.clone(),
        );
        let txs = Family::<SourceLabel, Counter>::default();
        r.register(
            "transactions",
            "Transactions handled, by where they came from",
            txs.clone(),
        );
        let bytes = Family::<BytesLabel, Counter>::default();
        r.register(
            "block_bytes",
            "Block bytes before (form=block) and after (form=compressed) compression",
            bytes.clone(),
        );
        let stage_seconds: HistogramFamily = Family::new_with_constructor(stage_histogram);
        r.register(
            "stage_seconds",
            "Per-stage latency of blocks: out_compress, out_seal, out_fec_manifest, key_release; \
             in_assemble, in_key_wait, in_open, in_decompress, in_total",
            stage_seconds.clone(),
        );
        let datagrams_in = Counter::default();
        r.register(
            "datagrams_received",
            "UDP datagrams received",
            datagrams_in.clone(),
        );
        let datagrams_out = Counter::default();
        r.register(
            "datagrams_sent",
            "UDP datagrams sent",
            datagrams_out.clone(),
        );
        let drops = Family::<ReasonLabel, Counter>::default();
        r.register(
            "dropped",
            "Datagrams and messages dropped, by reason",
            drops.clone(),
        );
        let tx_requests = Counter::default();
        r.register(
            "tx_requests",
            "Tx requests sent for blocks with unknown transactions",
            tx_requests.clone(),
        );
        let key_releases = Family::<ReasonLabel, Counter>::default();
        r.register(
            "key_releases",
            "Keys of our blocks released, by reason",
            key_releases.clone(),
        );
        let invalid_blocks = Family::<OriginLabel, Counter>::default();
        r.register(
            "invalid_blocks",
            "Decoded blocks not handed to the node (bad proof of work, mutation, weight), by origin",
            invalid_blocks.clone(),
        );
        let roster_updates = Counter::default();
        r.register(
            "roster_updates",
            "Newer membership rosters taken while running",
            roster_updates.clone(),
        );
        let peer_fallbacks = Counter::default();
        r.register(
            "peer_fallbacks",
            "Blocks sent to peers directly after no receipt",
            peer_fallbacks.clone(),
        );
        let receipts = Counter::default();
        r.register(
            "receipts",
            "Receipts received for our blocks",
            receipts.clone(),
        );
        let receipts_not_counted = Family::<ReasonLabel, Counter>::default();
        r.register(
            "receipts_not_counted",
            "Receipts for our blocks that did not count toward the key release, by reason: \
             mismatched (another block), unsigned (through a relay, names no receiver), \
             bad_signature, duplicate (receiver already counted, or our own key)",
            receipts_not_counted.clone(),
        );
        let links_up = Gauge::default();
        r.register(
            "links_up",
            "Relay and peer links with a live session",
            links_up.clone(),
        );
        let tx_store_bytes = Gauge::default();
        r.register(
            "tx_store_bytes",
            "Bytes accounted by the transaction store",
            tx_store_bytes.clone(),
        );
        Metrics {
            registry: Arc::new(r),
            blocks,
            txs,
            bytes,
            stage_seconds,
            datagrams_in,
            datagrams_out,
            drops,
            tx_requests,
            key_releases,
            peer_fallbacks,
            roster_updates,
            invalid_blocks,
            receipts,
            receipts_not_counted,
            links_up,
            tx_store_bytes,
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut s, &self.registry);
        s
    }

    fn stage(&self, stage: &'static str, d: Duration) {
        self.stage_seconds
            .get_or_create(&StageLabel { stage })
            .observe(d.as_secs_f64());
    }

    /// Latencies and reasons carried by an event.
    pub fn observe_event(&self, ev: &GatewayEvent) {
        match ev {
            GatewayEvent::BlockOriginated {
                timings, sealed, ..
            } => {
                self.stage("out_compress", timings.compress);
                // Unsealed blocks (encrypt = false) have no seal stage.
                if *sealed {
                    self.stage("out_seal", timings.seal);
                }
                self.stage("out_fec_manifest", timings.fec_manifest);
            }
            GatewayEvent::KeyReleased { reason, after, .. } => {
                self.stage("key_release", *after);
                let reason = match reason {
                    crate::core::ReleaseReason::Immediate => "immediate",
                    crate::core::ReleaseReason::Receipts => "receipts",
                    crate::core::ReleaseReason::Timeout => "timeout",
                };
                self.key_releases
                    .get_or_create(&ReasonLabel { reason })
                    .inc();
            }
            GatewayEvent::BlockDelivered {
                timings, sealed, ..
            } => {
                self.stage("in_assemble", timings.assemble);
                if *sealed {
                    self.stage("in_key_wait", timings.key_wait);
                    self.stage("in_open", timings.open);
                }
                self.stage("in_decompress", timings.decompress);
                self.stage("in_total", timings.total);
            }
            _ => {}
        }
    }

    /// Publishes the counters that grew between two snapshots.
    pub fn publish(
        &self,
        old: &GatewayStats,
        new: &GatewayStats,
        links_up: i64,
        store_bytes: usize,
    ) {
        let add = |c: &Counter, a: u64, b: u64| {
            if b > a {
                c.inc_by(b - a);
            }
        };
        let node = SourceLabel { source: "node" };
        let net = SourceLabel { source: "network" };
        add(
            &self.blocks.get_or_create(&node),
            old.blocks_from_node,
            new.blocks_from_node,
        );
        add(
            &self.blocks.get_or_create(&net),
            old.blocks_from_network,
            new.blocks_from_network,
        );
        add(
            &self.txs.get_or_create(&node),
            old.txs_from_node,
            new.txs_from_node,
        );
        add(
            &self.txs.get_or_create(&net),
            old.txs_from_network,
            new.txs_from_network,
        );
        let b = |direction, form| BytesLabel { direction, form };
        add(
            &self.bytes.get_or_create(&b("out", "block")),
            old.block_bytes_out,
            new.block_bytes_out,
        );
        add(
            &self.bytes.get_or_create(&b("out", "compressed")),
            old.compressed_bytes_out,
            new.compressed_bytes_out,
        );
        add(
            &self.bytes.get_or_create(&b("in", "block")),
            old.block_bytes_in,
            new.block_bytes_in,
        );
        add(
            &self.bytes.get_or_create(&b("in", "compressed")),
            old.compressed_bytes_in,
            new.compressed_bytes_in,
        );
        add(&self.datagrams_in, old.datagrams_in, new.datagrams_in);
        add(&self.datagrams_out, old.datagrams_out, new.datagrams_out);
        let d = |reason| self.drops.get_or_create(&ReasonLabel { reason });
        add(
            &d("malformed"),
            old.dropped_malformed,
            new.dropped_malformed,
        );
        add(
            &d("unknown_peer"),
            old.dropped_unknown_peer,
            new.dropped_unknown_peer,
        );
        add(&d("bad_hop_tag"), old.dropped_bad_tag, new.dropped_bad_tag);
        add(&d("register"), old.dropped_register, new.dropped_register);
        add(
            &d("unexpected"),
            old.dropped_unexpected,
            new.dropped_unexpected,
        );
        add(&d("bad_tx"), old.txs_bad, new.txs_bad);
        add(
            &d("partial_tx_evicted"),
            old.partials_evicted,
            new.partials_evicted,
        );
        add(&d("roster_refused"), old.roster_refused, new.roster_refused);
        add(&self.roster_updates, old.roster_updates, new.roster_updates);
        for (origin, &n) in &new.invalid_blocks_by_origin {
            let before = old
                .invalid_blocks_by_origin
                .get(origin)
                .copied()
                .unwrap_or(0);
            add(
                &self.invalid_blocks.get_or_create(&OriginLabel {
                    origin: origin.clone(),
                }),
                before,
                n,
            );
        }
        add(
            &d("block_bad_pow"),
            old.blocks_invalid_pow,
            new.blocks_invalid_pow,
        );
        add(
            &d("block_mutated"),
            old.blocks_invalid_mutated,
            new.blocks_invalid_mutated,
        );
        add(
            &d("block_too_big"),
            old.blocks_invalid_size,
            new.blocks_invalid_size,
        );
        add(
            &d("paced_queue_full"),
            old.dropped_paced_full,
            new.dropped_paced_full,
        );
        add(
            &d("control_queue_full"),
            old.dropped_control_full,
            new.dropped_control_full,
        );
        add(
            &d("tx_request_repeat"),
            old.tx_request_ids_refused,
            new.tx_request_ids_refused,
        );
        add(
            &d("short_id_conflict"),
            old.short_id_conflicts,
            new.short_id_conflicts,
        );
        add(
            &d("short_id_not_from_relay"),
            old.short_id_not_from_relay,
            new.short_id_not_from_relay,
        );
        add(
            &d("short_id_out_of_range"),
            old.short_id_out_of_range,
            new.short_id_out_of_range,
        );
        add(
            &d("bad_key_release"),
            old.key_releases_bad,
            new.key_releases_bad,
        );
        add(
            &d("key_release_dropped"),
            old.key_releases_dropped,
            new.key_releases_dropped,
        );
        add(
            &self.tx_requests,
            old.tx_requests_sent,
            new.tx_requests_sent,
        );
        add(&self.peer_fallbacks, old.peer_fallbacks, new.peer_fallbacks);
        add(&self.receipts, old.receipts_received, new.receipts_received);
        let r = |reason| {
            self.receipts_not_counted
                .get_or_create(&ReasonLabel { reason })
        };
        add(
            &r("mismatched"),
            old.receipts_mismatched,
            new.receipts_mismatched,
        );
        add(&r("unsigned"), old.receipts_unsigned, new.receipts_unsigned);
        add(
            &r("bad_signature"),
            old.receipts_bad_signature,
            new.receipts_bad_signature,
        );
        add(
            &r("duplicate"),
            old.receipts_duplicate,
            new.receipts_duplicate,
        );
        add(
            &r("not_member"),
            old.receipts_not_member,
            new.receipts_not_member,
        );
        self.links_up.set(links_up);
        self.tx_store_bytes.set(store_bytes as i64);
    }

    /// Serves `GET /metrics` on `addr` (port 0: any) from a thread of its own
    /// (`photon_ops::http`); the responder stops when the returned server is dropped.
    pub fn serve(&self, addr: SocketAddr) -> Result<MetricsServer, MetricsError> {
        let me = self.clone();
        MetricsServer::start(addr, Arc::new(move || me.encode()))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use super::*;

    #[test]
    fn metrics_endpoint_serves_counters_and_histograms() {
        let m = Metrics::new();
        let new = GatewayStats {
            blocks_from_node: 2,
            blocks_from_network: 3,
            block_bytes_out: 1_000_000,
            compressed_bytes_out: 5_000,
            receipts_received: 7,
            receipts_unsigned: 2,
            receipts_duplicate: 1,
            receipts_not_member: 3,
            short_id_conflicts: 4,
            dropped_paced_full: 5,
            invalid_blocks_by_origin: [("ab".repeat(32), 2)].into_iter().collect(),
            ..GatewayStats::default()
        };
        m.publish(&GatewayStats::default(), &new, 2, 1234);
        m.observe_event(&GatewayEvent::BlockOriginated {
            hash: bitcoin::BlockHash::from_raw_hash(bitcoin::hashes::Hash::all_zeros()),
            stream: 1,
            encoding: crate::core::BlockEncoding::Compact,
            sealed: true,
            block_bytes: 1_000_000,
            compressed_bytes: 5_000,
            datagrams_planned: 10,
            timings: crate::core::OutTimings {
                compress: Duration::from_micros(300),
                ..Default::default()
            },
        });
        let server = m.serve("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.local_addr();
        let get = |path: &str| {
            let mut c = TcpStream::connect(addr).unwrap();
            write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut out = String::new();
            c.read_to_string(&mut out).unwrap();
            out
        };
        let body = get("/metrics");
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        assert!(
            body.contains("photon_gateway_blocks_total{source=\"node\"} 2"),
            "{body}"
        );
        assert!(body.contains("photon_gateway_blocks_total{source=\"network\"} 3"));
        assert!(body.contains(
            "photon_gateway_block_bytes_total{direction=\"out\",form=\"compressed\"} 5000"
        ));
        assert!(body.contains("photon_gateway_stage_seconds_count{stage=\"out_compress\"} 1"));
        assert!(body.contains("photon_gateway_links_up 2"));
        assert!(body.contains("photon_gateway_receipts_total 7"), "{body}");
        assert!(body.contains("photon_gateway_receipts_not_counted_total{reason=\"unsigned\"} 2"));
        assert!(body.contains("photon_gateway_receipts_not_counted_total{reason=\"duplicate\"} 1"));
        assert!(body.contains("photon_gateway_receipts_not_counted_total{reason=\"not_member\"} 3"));
        assert!(
            body.contains("photon_gateway_dropped_total{reason=\"short_id_conflict\"} 4"),
            "{body}"
        );
        assert!(body.contains("photon_gateway_dropped_total{reason=\"paced_queue_full\"} 5"));
        assert!(body.contains(&format!(
            "photon_gateway_invalid_blocks_total{{origin=\"{}\"}} 2",
            "ab".repeat(32)
        )));
        assert!(get("/other").starts_with("HTTP/1.1 404"));
    }
}
