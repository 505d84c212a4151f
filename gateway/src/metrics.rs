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
use crate::node::NodeStats;

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabel {
    /// `block` or `cmpctblock`.
    pub message: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabel {
    /// `announce_tx`, `send_block`, `announce_block`, `send_cmpct_block`.
    pub call: &'static str,
    pub reason: &'static str,
}

type HistogramFamily = Family<StageLabel, Histogram, fn() -> Histogram>;

fn stage_histogram() -> Histogram {
    // 10 µs .. ~84 s.
    Histogram::new(exponential_buckets(1e-5, 2.0, 24))
}

/// Declares [`Metrics`]: each field's doc comment is its help text and `name` its metric name
/// (after the `photon_gateway_` prefix); [`Metrics::new`] makes each with `make` (default:
/// `Default::default()`) and registers them in this order, the exposition's.
macro_rules! metrics {
    ($($(#[doc = $doc:literal])+ $field:ident: $ty:ty = $name:literal $(, $make:expr)?;)*) => {
        /// Every metric of the gateway.
        #[derive(Clone)]
        pub struct Metrics {
            registry: Arc<Registry>,
            $($(#[doc = $doc])+ $field: $ty,)*
        }

        impl Metrics {
            pub fn new() -> Metrics {
                let mut r = Registry::with_prefix("photon_gateway");
                $(
                    let $field: $ty = metrics!(@make $($make)?);
                    let help: Vec<&str> = [$($doc),+].iter().map(|line| line.trim()).collect();
                    r.register($name, help.join(" "), $field.clone());
                )*
                Metrics {
                    registry: Arc::new(r),
                    $($field,)*
                }
            }
        }
    };
    (@make) => {
        Default::default()
    };
    (@make $make:expr) => {
        $make
    };
}

metrics! {
    /// Blocks handled, by where they came from
    blocks: Family<SourceLabel, Counter> = "blocks";
    /// Transactions handled, by where they came from
    txs: Family<SourceLabel, Counter> = "transactions";
    /// Block bytes before (form=block) and after (form=compressed) compression
    bytes: Family<BytesLabel, Counter> = "block_bytes";
    /// Per-stage latency of blocks: out_compress, out_seal, out_fec_manifest, key_release;
    /// in_assemble, in_key_wait, in_open, in_decompress, in_total
    stage_seconds: HistogramFamily = "stage_seconds", Family::new_with_constructor(stage_histogram);
    /// UDP datagrams received
    datagrams_in: Counter = "datagrams_received";
    /// UDP datagrams sent
    datagrams_out: Counter = "datagrams_sent";
    /// Datagrams and messages dropped, by reason
    drops: Family<ReasonLabel, Counter> = "dropped";
    /// Tx requests sent for blocks with unknown transactions
    tx_requests: Counter = "tx_requests";
    /// Keys of our blocks released, by reason
    key_releases: Family<ReasonLabel, Counter> = "key_releases";
    /// Decoded blocks not handed to the node (bad proof of work, mutation, weight), by origin
    invalid_blocks: Family<OriginLabel, Counter> = "invalid_blocks";
    /// Newer membership rosters taken while running
    roster_updates: Counter = "roster_updates";
    /// Blocks sent to peers directly after no receipt
    peer_fallbacks: Counter = "peer_fallbacks";
    /// Receipts received for our blocks
    receipts: Counter = "receipts";
    /// Receipts for our blocks that did not count toward the key release, by reason:
    /// mismatched (another block), unsigned (through a relay, names no receiver),
    /// bad_signature, duplicate (receiver already counted, or our own key)
    receipts_not_counted: Family<ReasonLabel, Counter> = "receipts_not_counted";
    /// Relay and peer links with a live session
    links_up: Gauge = "links_up";
    /// Bytes accounted by the transaction store
    tx_store_bytes: Gauge = "tx_store_bytes";
    /// Blocks from the network handed to the node (pushed, or sent on its getdata), by message
    node_blocks_delivered: Family<MessageLabel, Counter> = "node_blocks_delivered";
    /// Calls to the node side not carried out, by call and reason (not_handshaken,
    /// send_buffer_full, compact_block)
    node_refusals: Family<CallLabel, Counter> = "node_refusals";
    /// Blocks announced to the node because it does not take what node.delivery sends
    node_delivery_fallbacks: Counter = "node_delivery_fallbacks";
    /// Items of the node's getdata we did not have (answered notfound)
    node_getdata_not_found: Counter = "node_getdata_not_found";
}

impl Metrics {
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
        // Adds what `field` grew by between the snapshots.
        let add = |c: &Counter, field: fn(&GatewayStats) -> u64| {
            let (a, b) = (field(old), field(new));
            if b > a {
                c.inc_by(b - a);
            }
        };
        let node = SourceLabel { source: "node" };
        let net = SourceLabel { source: "network" };
        add(&self.blocks.get_or_create(&node), |s| s.blocks_from_node);
        add(&self.blocks.get_or_create(&net), |s| s.blocks_from_network);
        add(&self.txs.get_or_create(&node), |s| s.txs_from_node);
        add(&self.txs.get_or_create(&net), |s| s.txs_from_network);
        let bytes = |direction, form| self.bytes.get_or_create(&BytesLabel { direction, form });
        add(&bytes("out", "block"), |s| s.block_bytes_out);
        add(&bytes("out", "compressed"), |s| s.compressed_bytes_out);
        add(&bytes("in", "block"), |s| s.block_bytes_in);
        add(&bytes("in", "compressed"), |s| s.compressed_bytes_in);
        add(&self.datagrams_in, |s| s.datagrams_in);
        add(&self.datagrams_out, |s| s.datagrams_out);
        let d = |reason| self.drops.get_or_create(&ReasonLabel { reason });
        add(&d("malformed"), |s| s.dropped_malformed);
        add(&d("unknown_peer"), |s| s.dropped_unknown_peer);
        add(&d("bad_hop_tag"), |s| s.dropped_bad_tag);
        add(&d("register"), |s| s.dropped_register);
        add(&d("unexpected"), |s| s.dropped_unexpected);
        add(&d("bad_tx"), |s| s.txs_bad);
        add(&d("bad_key_release"), |s| s.key_releases_bad);
        add(&d("partial_tx_evicted"), |s| s.partials_evicted);
        add(&d("roster_refused"), |s| s.roster_refused);
        add(&self.roster_updates, |s| s.roster_updates);
        for (origin, &n) in &new.invalid_blocks_by_origin {
            let before = old
                .invalid_blocks_by_origin
                .get(origin)
                .copied()
                .unwrap_or(0);
            if n > before {
                self.invalid_blocks
                    .get_or_create(&OriginLabel {
                        origin: origin.clone(),
                    })
                    .inc_by(n - before);
            }
        }
        add(&d("block_bad_pow"), |s| s.blocks_invalid_pow);
        add(&d("block_mutated"), |s| s.blocks_invalid_mutated);
        add(&d("block_too_big"), |s| s.blocks_invalid_size);
        add(&d("paced_queue_full"), |s| s.dropped_paced_full);
        add(&d("control_queue_full"), |s| s.dropped_control_full);
        add(&d("tx_request_repeat"), |s| s.tx_request_ids_refused);
        add(&d("short_id_conflict"), |s| s.short_id_conflicts);
        add(&d("short_id_not_from_relay"), |s| s.short_id_not_from_relay);
        add(&d("short_id_out_of_range"), |s| s.short_id_out_of_range);
        add(&d("key_release_dropped"), |s| s.key_releases_dropped);
        add(&self.tx_requests, |s| s.tx_requests_sent);
        add(&self.peer_fallbacks, |s| s.peer_fallbacks);
        add(&self.receipts, |s| s.receipts_received);
        let r = |reason| {
            self.receipts_not_counted
                .get_or_create(&ReasonLabel { reason })
        };
        add(&r("mismatched"), |s| s.receipts_mismatched);
        add(&r("unsigned"), |s| s.receipts_unsigned);
        add(&r("bad_signature"), |s| s.receipts_bad_signature);
        add(&r("duplicate"), |s| s.receipts_duplicate);
        add(&r("not_member"), |s| s.receipts_not_member);
        self.links_up.set(links_up);
        self.tx_store_bytes.set(store_bytes as i64);
    }

    /// A block from the network went to the node as `message`.
    pub fn node_block_delivered(&self, message: &'static str) {
        self.node_blocks_delivered
            .get_or_create(&MessageLabel { message })
            .inc();
    }

    /// A call to the node side was refused.
    pub fn node_refused(&self, call: &'static str, reason: &'static str) {
        self.node_refusals
            .get_or_create(&CallLabel { call, reason })
            .inc();
    }

    /// Publishes the node side's counters that grew between two snapshots.
    pub fn publish_node(&self, old: &NodeStats, new: &NodeStats) {
        let add = |c: &Counter, field: fn(&NodeStats) -> u64| {
            let (a, b) = (field(old), field(new));
            if b > a {
                c.inc_by(b - a);
            }
        };
        add(&self.node_delivery_fallbacks, |s| s.delivery_fallbacks);
        add(&self.node_getdata_not_found, |s| s.getdata_not_found);
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

    #[test]
    fn node_side_deliveries_refusals_and_fallbacks_are_counted() {
        let m = Metrics::new();
        m.node_block_delivered("cmpctblock");
        m.node_block_delivered("cmpctblock");
        m.node_refused("announce_tx", "not_handshaken");
        let new = NodeStats {
            delivery_fallbacks: 3,
            getdata_not_found: 1,
            ..NodeStats::default()
        };
        m.publish_node(&NodeStats::default(), &new);
        m.publish_node(&new, &new);
        let body = m.encode();
        for line in [
            "photon_gateway_node_blocks_delivered_total{message=\"cmpctblock\"} 2",
            "photon_gateway_node_refusals_total{call=\"announce_tx\",reason=\"not_handshaken\"} 1",
            "photon_gateway_node_delivery_fallbacks_total 3",
            "photon_gateway_node_getdata_not_found_total 1",
        ] {
            assert!(body.contains(line), "{line} not in\n{body}");
        }
    }
}
