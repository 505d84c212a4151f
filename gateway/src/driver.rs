//! The thin driver: one thread that joins the node connection, the sans-IO [`Gateway`] core and
//! one UDP socket (batched I/O, `photon_udp`).
//!
//! Loop: node events → core; timers; node actions → node; datagrams out (`sendmmsg`); events →
//! logs, metrics and the handle; then one `recvmmsg` that waits at most until the core's next
//! timer (bounded to [`MAX_WAIT`] so node events are picked up promptly). Counters are
//! published to the [`GatewayHandle`] snapshot and to the metrics every [`PUBLISH_EVERY`].

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use photon_protocol::assembler::AssemblerStats;
use photon_protocol::identity::Identity;
use photon_protocol::shortid::TxStoreStats;

use crate::core::{
    CoreConfig, Gateway, GatewayEvent, GatewayStats, LinkKind, LinkState, NodeAction, Stage,
};
use crate::metrics::Metrics;
use crate::node::{Backoff, ConnectionEvent, NodeConfig, NodeConnection, NodeEvent, NodeStats};
use photon_ops::stages::{unix_ns, StageFile, StageLine};
use photon_ops::threads::StopThreads;
use photon_udp::{Arena, ArenaPages, BatchRecv, BatchSend};

/// Longest wait for a datagram or a node event before the loop runs its timers anyway.
pub const MAX_WAIT: Duration = Duration::from_millis(2);
const MIN_WAIT: Duration = Duration::from_micros(20);
/// Snapshot and metrics publication period.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// A link without a session this long after start (or after going quiet) is reported.
const UNREACHABLE_AFTER: Duration = Duration::from_secs(5);

/// What the driver runs.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub core: CoreConfig,
    /// UDP address to bind.
    pub listen: SocketAddr,
    pub node_addr: SocketAddr,
    pub node: NodeConfig,
    pub node_backoff: Backoff,
    /// Datagrams per `recvmmsg`.
    pub recv_batch: usize,
    /// Events offered to [`GatewayHandle::events`] (dropped when the queue is full; 0: none).
    pub event_queue: usize,
    /// Put the receive arena on a hugepage where one is free.
    pub hugepages: bool,
    /// Socket receive buffer asked for, bytes (0: the system's default).
    pub recv_buffer: usize,
    /// Stage records (JSON lines, `perf/README.md`) appended to this file under this node
    /// name; needs `core.stage_records`.
    pub stage_log: Option<(std::path::PathBuf, String)>,
    /// Watches the roster file: a newer signed roster replaces the one in force
    /// ([`Gateway::replace_roster`]) at the next publish, without a restart.
    pub roster_watch: Option<photon_ops::roster::RosterWatcher>,
}

impl DriverConfig {
    /// A gateway beside a node on this machine, as the tests run one: reconnects to the node
    /// within 50-500 ms, 32 datagrams per receive, 4,096 events offered, an 8 MiB receive
    /// buffer, no hugepages, no stage log, no roster. The core checks blocks against the
    /// node's network.
    pub fn local(
        mut core: CoreConfig,
        listen: SocketAddr,
        node_addr: SocketAddr,
        node: NodeConfig,
    ) -> Self {
        core.network = node.network;
        DriverConfig {
            core,
            listen,
            node_addr,
            node,
            node_backoff: Backoff::new(Duration::from_millis(50), Duration::from_millis(500)),
            recv_batch: 32,
            event_queue: 4096,
            hugepages: false,
            recv_buffer: 8 << 20,
            stage_log: None,
            roster_watch: None,
        }
    }
}

/// The driver's published state.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub stats: GatewayStats,
    pub assembler: AssemblerStats,
    pub store: TxStoreStats,
    pub links: Vec<(LinkKind, SocketAddr, LinkState)>,
    pub node: NodeStats,
    pub blocks_waiting_for_key: usize,
    pub arena: Option<ArenaPages>,
    pub send_dropped: u64,
}

/// A running gateway.
pub struct GatewayHandle {
    thread: StopThreads,
    local_addr: SocketAddr,
    snapshot: Arc<Mutex<Snapshot>>,
    events: Receiver<GatewayEvent>,
}

impl GatewayHandle {
    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The last published state (at most [`PUBLISH_EVERY`] old).
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Events, if `event_queue > 0`.
    pub fn events(&self) -> &Receiver<GatewayEvent> {
        &self.events
    }

    /// Stops the thread and waits for it.
    pub fn shutdown(mut self) {
        self.thread.stop();
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind UDP {addr}: {error} (check network.listen)")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot start the gateway thread: {0}")]
    Thread(std::io::Error),
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Binds the socket, connects to the node and starts the gateway thread.
pub fn spawn(
    config: DriverConfig,
    identity: Identity,
    metrics: Option<Metrics>,
) -> Result<GatewayHandle, StartError> {
    let sock = UdpSocket::bind(config.listen).map_err(|error| StartError::Bind {
        addr: config.listen,
        error,
    })?;
    let local_addr = sock.local_addr().map_err(|error| StartError::Bind {
        addr: config.listen,
        error,
    })?;
    let snapshot = Arc::new(Mutex::new(Snapshot::default()));
    let (event_tx, events) = mpsc::sync_channel(config.event_queue.max(1));
    let mut thread = StopThreads::new();
    let (stop, snap2) = (thread.flag(), snapshot.clone());
    thread
        .spawn("photon-gateway", move || {
            run(config, identity, sock, &stop, &snap2, event_tx, metrics);
        })
        .map_err(StartError::Thread)?;
    Ok(GatewayHandle {
        thread,
        local_addr,
        snapshot,
        events,
    })
}

fn log_event(ev: &GatewayEvent) {
    match ev {
        GatewayEvent::LinkUp { kind, addr, .. } => tracing::info!(?kind, %addr, "link up"),
        GatewayEvent::LinkDown { kind, addr, .. } => {
            tracing::warn!(?kind, %addr, "link quiet: failing over / re-registering")
        }
        GatewayEvent::RegisterRefused { link, status } => {
            tracing::warn!(
                link,
                status,
                "relay refused our registration (status of §2.9)"
            )
        }
        GatewayEvent::BlockOriginated {
            hash,
            stream,
            encoding,
            sealed,
            block_bytes,
            compressed_bytes,
            datagrams_planned,
            timings,
        } => tracing::info!(
            %hash, stream = format_args!("{stream:016x}"), encoding = encoding.name(), sealed,
            block_bytes, compressed_bytes,
            datagrams_planned, compress_us = timings.compress.as_micros() as u64,
            seal_us = timings.seal.as_micros() as u64,
            fec_manifest_us = timings.fec_manifest.as_micros() as u64,
            "block from node sent"
        ),
        GatewayEvent::KeyReleased {
            stream,
            receipts,
            reason,
            after,
        } => tracing::info!(
            stream = format_args!("{stream:016x}"),
            receipts,
            ?reason,
            after_ms = after.as_millis() as u64,
            "key released"
        ),
        GatewayEvent::PeerFallback { stream, peers } => tracing::warn!(
            stream = format_args!("{stream:016x}"),
            peers,
            "no receipt in time: sending to peers directly"
        ),
        GatewayEvent::BlockDelivered {
            hash,
            encoding,
            sealed,
            via,
            tx_requests,
            timings,
            ..
        } => tracing::info!(
            %hash, encoding = encoding.name(), sealed, ?via, tx_requests,
            assemble_us = timings.assemble.as_micros() as u64,
            key_wait_us = timings.key_wait.as_micros() as u64,
            open_us = timings.open.as_micros() as u64,
            decompress_us = timings.decompress.as_micros() as u64,
            total_us = timings.total.as_micros() as u64,
            "block from the network decoded: handed to the node side"
        ),
        GatewayEvent::BlockFailed { stream, reason } => {
            tracing::warn!(stream = format_args!("{stream:016x}"), %reason, "block not delivered")
        }
    }
}

fn run(
    config: DriverConfig,
    identity: Identity,
    sock: UdpSocket,
    stop: &AtomicBool,
    snapshot: &Mutex<Snapshot>,
    events: SyncSender<GatewayEvent>,
    metrics: Option<Metrics>,
) {
    let our_key = identity.public_key();
    tracing::info!(listen = %sock.local_addr().map_or(config.listen, |a| a), key = %our_key,
        node = %config.node_addr, "gateway starting");
    // The loop waits in ppoll (microsecond timeouts; SO_RCVTIMEO is rounded up to scheduler
    // ticks: a 20 us read timeout blocked ~8 ms here) on the UDP socket and on a socket the
    // node thread pokes after each event.
    let (wake_rx, wake_tx) = match UnixDatagram::pair() {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "cannot create the node waker socket pair");
            return;
        }
    };
    let _ = wake_rx.set_nonblocking(true);
    if let Err(e) = sock.set_nonblocking(true) {
        tracing::error!(error = %e, "cannot make the UDP socket non-blocking");
        return;
    }
    let node = NodeConnection::connect_with_waker(
        config.node_addr,
        config.node.clone(),
        config.node_backoff.clone(),
        wake_tx,
    );
    let start = Instant::now();
    let mut core = Gateway::new(config.core.clone(), identity, start, unix_ms());
    let arena = if config.hugepages {
        Arena::new()
    } else {
        Arena::normal()
    };
    if config.recv_buffer > 0 {
        match photon_udp::set_recv_buffer(&sock, config.recv_buffer) {
            Ok(got) if got < config.recv_buffer => tracing::warn!(
                asked = config.recv_buffer,
                got,
                "UDP receive buffer smaller than asked (raise net.core.rmem_max): bursts may drop"
            ),
            Ok(got) => tracing::info!(bytes = got, "UDP receive buffer"),
            Err(e) => tracing::warn!(error = %e, "cannot set the UDP receive buffer"),
        }
    }
    // UDP GRO where the kernel has it (a relay's run of fragments comes up as one buffer,
    // split in udp.rs); the fallback is logged there.
    let mut rx = BatchRecv::with_gro(&sock, arena, config.recv_batch);
    // GSO for runs of equal-size datagrams to one destination (a block's fragments paced to
    // a relay); turned off, logged, where the kernel or route refuses it.
    let mut tx = BatchSend::with_gso();
    // The last receive filled its batch: more is probably queued, so do not wait.
    let mut busy = false;
    let mut next_publish = start;
    let mut roster_watch = config.roster_watch.clone();
    let mut published = GatewayStats::default();
    let mut published_node = NodeStats::default();
    let mut down_since: Vec<Option<Instant>> = vec![Some(start); core.links().len()];
    let mut warned = vec![false; down_since.len()];
    let offer_events = config.event_queue > 0;
    let mut stage_log = config.stage_log.as_ref().and_then(|(path, name)| {
        match StageLog::open(path, name, start) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open perf.stage_log");
                None
            }
        }
    });

    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while let Ok(ev) = node.events().try_recv() {
            match ev {
                ConnectionEvent::Node(NodeEvent::BlockSent { hash, message }) => {
                    tracing::info!(%hash, message = message.name(), "block delivered to node");
                    if let Some(m) = &metrics {
                        m.node_block_delivered(message.name());
                    }
                }
                ConnectionEvent::Node(NodeEvent::DeliveryFallback { mode, used, reason }) => {
                    tracing::warn!(
                        mode,
                        used,
                        reason,
                        "node.delivery: the node does not take \
                        what this mode sends; announcing instead"
                    )
                }
                ConnectionEvent::Node(e) => core.handle_node_event(now, e),
                ConnectionEvent::Connected(a) => tracing::info!(node = %a, "connected to node"),
                ConnectionEvent::Disconnected {
                    error,
                    reconnect_in,
                } => tracing::warn!(node = %config.node_addr, %error,
                    retry_ms = reconnect_in.as_millis() as u64,
                    "node unreachable or connection lost (check node.address)"),
                ConnectionEvent::CallRefused { call, error } => {
                    tracing::warn!(call, %error, "node side refused a call");
                    if let Some(m) = &metrics {
                        m.node_refused(call, error.reason());
                    }
                }
            }
        }
        if core.poll_timeout().is_some_and(|t| t <= now) {
            core.handle_timeout(now);
        }
        while let Some(action) = core.poll_node_action() {
            match action {
                NodeAction::SendBlock(b) => node.send_block(b),
                NodeAction::AnnounceBlock(b) => node.announce_block(b),
                NodeAction::SendCmpctBlock(b) => node.send_cmpct_block(b),
                NodeAction::AnnounceTx(t) => node.announce_tx(t),
            }
        }
        // Fresh: node events (a block's compression and FEC) may have taken a while.
        let now = Instant::now();
        loop {
            if tx.is_full() {
                let _ = tx.flush(&sock);
            }
            let Some(slot) = tx.slot() else { break };
            match core.poll_transmit(now, slot) {
                Some(t) => tx.commit(t.len, t.dst),
                None => break,
            }
        }
        if !tx.is_empty() {
            let _ = tx.flush(&sock);
        }
        if let Some(log) = &mut stage_log {
            log.drain(&mut core);
        }
        while let Some(ev) = core.poll_event() {
            log_event(&ev);
            if let Some(m) = &metrics {
                m.observe_event(&ev);
            }
            if offer_events {
                let _ = events.try_send(ev);
            }
        }
        if now >= next_publish {
            next_publish = now + PUBLISH_EVERY;
            if let Some(w) = &mut roster_watch {
                match w.poll(unix_ms() / 1000) {
                    None => {}
                    Some(Ok(r)) => {
                        let serial = r.serial;
                        match core.replace_roster(r) {
                            Ok(()) => tracing::info!(serial, "newer roster in force"),
                            Err(e) => {
                                core.note_roster_refused();
                                tracing::warn!(error = %e, "roster refused");
                            }
                        }
                    }
                    Some(Err(e)) => {
                        core.note_roster_refused();
                        tracing::warn!(error = %e, "roster file refused; the roster in force stays");
                    }
                }
            }
            if let Some(log) = &mut stage_log {
                log.flush();
            }
            let links = core.links();
            for (i, (kind, addr, state)) in links.iter().enumerate() {
                if *state == LinkState::Up {
                    down_since[i] = None;
                    warned[i] = false;
                } else {
                    let since = *down_since[i].get_or_insert(now);
                    if !warned[i] && now - since >= UNREACHABLE_AFTER {
                        warned[i] = true;
                        tracing::warn!(?kind, %addr, our_key = %our_key,
                            "no session after {}s: unreachable, or it does not know our key / we \
                             have the wrong key for it (check relays/peers in the config)",
                            UNREACHABLE_AFTER.as_secs());
                    }
                }
            }
            let stats = core.stats();
            let store = core.tx_store_stats();
            let node_stats = node.stats();
            if let Some(m) = &metrics {
                let up = links.iter().filter(|l| l.2 == LinkState::Up).count() as i64;
                m.publish(&published, &stats, up, store.bytes);
                m.publish_node(&published_node, &node_stats);
            }
            let snap = Snapshot {
                stats: stats.clone(),
                assembler: *core.assembler_stats(),
                store,
                links,
                node: node_stats.clone(),
                blocks_waiting_for_key: core.blocks_waiting_for_key(),
                arena: Some(rx.arena_pages()),
                send_dropped: tx.dropped,
            };
            *snapshot.lock().unwrap_or_else(PoisonError::into_inner) = snap;
            published = stats;
            published_node = node_stats;
        }
        let next = core
            .poll_timeout()
            .map_or(MAX_WAIT, |t| t.saturating_duration_since(Instant::now()));
        let want = next.clamp(MIN_WAIT, MAX_WAIT);
        if !busy {
            wait_readable(&sock, &wake_rx, want);
            let mut drain = [0u8; 64];
            while matches!(wake_rx.recv(&mut drain), Ok(n) if n > 0) {}
        }
        let messages = rx.messages;
        match rx.recv(&sock, |from, d| {
            core.handle_datagram(Instant::now(), from, d)
        }) {
            // Buffers, not datagrams: with GRO one buffer holds many.
            Ok(_) => busy = rx.messages - messages >= rx.batch() as u64,
            Err(e) => {
                busy = false;
                tracing::warn!(error = %e, "UDP receive failed");
                std::thread::sleep(MAX_WAIT);
            }
        }
    }
    if let Some(log) = &mut stage_log {
        log.drain(&mut core);
        log.flush();
    }
    node.shutdown();
}

/// Waits until the UDP socket or the node waker is readable, or `timeout` passed (ppoll:
/// nanosecond timeout, hrtimer-backed). Errors (EINTR) just end the wait early.
fn wait_readable(sock: &UdpSocket, waker: &UnixDatagram, timeout: Duration) {
    use nix::poll::{ppoll, PollFd, PollFlags};
    use nix::sys::time::TimeSpec;
    let mut fds = [
        PollFd::new(sock.as_fd(), PollFlags::POLLIN),
        PollFd::new(waker.as_fd(), PollFlags::POLLIN),
    ];
    let _ = ppoll(&mut fds, Some(TimeSpec::from_duration(timeout)), None);
}

/// The stage-record file ([`StageFile`]): records are formatted as they are drained and
/// written when a block's last stage at this gateway is seen (`deliver`, `last_fragment_out`,
/// `key_release`) or at the next publication; never once per fragment.
struct StageLog {
    file: StageFile,
    /// `Instant` ↔ unix ns at start.
    base: Instant,
    base_unix_ns: u64,
}

impl StageLog {
    fn open(path: &std::path::Path, node: &str, base: Instant) -> std::io::Result<StageLog> {
        let file = StageFile::open(path, node)?;
        // `base` is a little earlier than the clock read: take now for both.
        let base_unix_ns = unix_ns().saturating_sub(base.elapsed().as_nanos() as u64);
        Ok(StageLog {
            file,
            base,
            base_unix_ns,
        })
    }

    fn drain(&mut self, core: &mut Gateway) {
        let mut block_done = false;
        while let Some(r) = core.poll_stage() {
            let t_ns =
                self.base_unix_ns + r.at.saturating_duration_since(self.base).as_nanos() as u64;
            self.file.push(&StageLine {
                t_ns,
                stage: r.stage.as_str(),
                block: r.block,
                stream: r.stream,
                bytes: r.bytes,
            });
            block_done |= matches!(
                r.stage,
                Stage::Deliver | Stage::LastFragmentOut | Stage::KeyRelease
            );
        }
        if block_done {
            self.flush();
        }
    }

    fn flush(&mut self) {
        self.file.flush();
    }
}
