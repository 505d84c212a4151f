//! Operations: the Prometheus `/metrics` endpoint and the `[metrics]` / `[log]` settings.
//!
//! The counters live where they are counted (per data core in [`crate::ops::counters`], the control
//! path's in [`crate::control::ControlShared`]) and are published there in housekeeping; a
//! scrape only reads those atomics and encodes them with `prometheus-client` (OpenMetrics text),
//! so the data path never notices a scrape. The HTTP side is a tiny `std::net::TcpListener`
//! responder on its own thread: `GET /metrics` answers the text, anything else 404.
//!
//! Exposed (every name prefixed `photon_relay_`; counters end in `_total`):
//! - per data core, label `core`: `rx_packets`, `rx_bytes`, `tx_packets`, `tx_bytes`,
//!   `fragments`, `fanout_copies`, `dedup_hits`, `to_control`, `from_control`, `arp_replies`,
//!   `icmp_replies`; `drops` with label `reason` (every [`DropReason`]); gauge
//!   `table_generation`;
//! - control path: `control_<name>` for every [`ControlCounter`]; gauges `gateways`,
//!   `repair_cache_fragments`, `repair_cache_bytes`; per peer, gauge `peer_idle_ms` with labels
//!   `node_id`, `kind`, `addr`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter as PromCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;

use crate::control::{ControlCounter, ControlShared};
use crate::forward::table::PeerKind;
use crate::ops::config::ConfigError;
use crate::ops::counters::{CoreCounters, Counter, DropReason};

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics` at all.
    pub enabled: bool,
    /// Management address to listen on (keep it off the data network).
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// `[log]`: structured logs (`tracing`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter (`info`, `photon_relay=debug`); the `RUST_LOG` environment variable
    /// overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl LogConfig {
    /// Checks the filter parses.
    pub fn validate(&self) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.level)
            .map(|_| ())
            .map_err(|e| ConfigError::Invalid {
                key: "log.level".into(),
                message: format!("{:?} is not a tracing filter: {e}", self.level),
            })
    }
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
                    PeerKind::Gateway => "gateway".into(),
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

/// Why the metrics endpoint did not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for /metrics on {addr}: {source} (change metrics.listen, or set metrics.enabled = false)")]
pub struct MetricsError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// The `/metrics` HTTP responder on its own thread.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    quit: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

type RenderFn = dyn Fn() -> String + Send + Sync;

impl MetricsServer {
    /// [`MetricsServer::start`] on `cfg.listen` if `cfg.enabled` (and says where); `None` if
    /// not.
    pub fn start_if_enabled(
        cfg: &MetricsConfig,
        render: Arc<RenderFn>,
    ) -> Result<Option<MetricsServer>, String> {
        if !cfg.enabled {
            return Ok(None);
        }
        let server = MetricsServer::start(cfg.listen, render).map_err(|e| e.to_string())?;
        tracing::info!(listen = %server.local_addr(), "serving /metrics");
        Ok(Some(server))
    }

    /// Listens on `addr` (port 0: any free port) and answers each `GET /metrics` with
    /// `render()`.
    pub fn start(addr: SocketAddr, render: Arc<RenderFn>) -> Result<MetricsServer, MetricsError> {
        let err = |source| MetricsError { addr, source };
        let listener = TcpListener::bind(addr).map_err(err)?;
        let addr = listener.local_addr().map_err(err)?;
        listener.set_nonblocking(true).map_err(err)?;
        let quit = Arc::new(AtomicBool::new(false));
        let q = quit.clone();
        let thread = std::thread::Builder::new()
            .name("photon-relay-metrics".into())
            .spawn(move || {
                while !q.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => serve(stream, &*render),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
            .map_err(err)?;
        Ok(MetricsServer {
            addr,
            quit,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.quit.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Answers one connection: reads the request head (bounded: 8 KiB, 2 s), then one response.
fn serve(mut stream: TcpStream, render: &RenderFn) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 8192];
    let mut len = 0;
    while len < buf.len() {
        match stream.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let response = if method == "GET" && (path == "/metrics" || path.starts_with("/metrics?")) {
        let body = render();
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        let body = "not found: try GET /metrics\n";
        format!(
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let _ = stream.write_all(response.as_bytes());
}
