//! The gateway's network side as a sans-IO state machine (quinn style): links to relays and
//! peer gateways, the transaction store, outbound block streams (compress → seal → FEC + signed
//! manifest → paced fragments → key release) and inbound ones (verified fragments → decode →
//! receipt → key → open → decompress → node).
//!
//! Contract: feed [`Gateway::handle_node_event`], [`Gateway::handle_datagram`] and
//! [`Gateway::handle_timeout`] with the caller's `now`; drain [`Gateway::poll_transmit`]
//! (hop-signed datagrams), [`Gateway::poll_node_action`] and [`Gateway::poll_event`]; sleep
//! until [`Gateway::poll_timeout`]. No socket, thread or clock read decides behaviour (CPU stage
//! durations are measured for metrics only). Spec: `docs/protocol.md`; the gateway's own
//! choices and their reasons: `docs/internals/gateway-core.md`.

mod inbound;
mod links;
mod outbound;
mod stages;
mod stats;
mod txs;
pub mod validity;

use photon_protocol::fifo::FifoSet;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::{Block, BlockHash, Transaction};
use photon_protocol::assembler::{AssemblerConfig, AssemblerStats};
pub use photon_protocol::compress::BlockEncoding;
use photon_protocol::fec::RepairPolicy;
use photon_protocol::identity::{Identity, PublicKey};
use photon_protocol::roster::{Roster, RosterError};
use photon_protocol::shortid::{TxStoreConfig, TxStoreStats};
use photon_protocol::wire::{Message, MessageType, Packet, ReceiptRepr, Repr};
use ring::rand::SystemRandom;

use crate::node::NodeEvent;

use self::inbound::{InCtx, Inbound, InboundBlock};
use self::links::{Credentials, Links};
pub use self::links::{LinkKind, LinkState};
use self::outbound::{OutCtx, Outbound};
use self::stages::StageLog;
pub use self::stages::{Stage, StageRecord};
pub use self::stats::GatewayStats;
use self::txs::Txs;

/// The context of an inbound call: the gateway's parts the inbound streams may use, borrowed
/// beside `self.inbound`.
macro_rules! in_cx {
    ($gw:expr) => {
        InCtx {
            links: &$gw.links,
            identity: &$gw.identity,
            store: $gw.txs.store(),
            stages: &mut $gw.stages,
        }
    };
}

/// The context of an outbound call, borrowed beside `self.outbound`.
macro_rules! out_cx {
    ($gw:expr) => {
        OutCtx {
            links: &$gw.links,
            identity: &$gw.identity,
            rng: &$gw.rng,
            store: $gw.txs.store(),
            stages: &mut $gw.stages,
        }
    };
}

/// Index of a link in the gateway's link table (relays first, then peers, in config order).
pub type LinkId = usize;

/// A relay to register with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayEndpoint {
    pub addr: SocketAddr,
    /// The relay's Ed25519 identity: its register acks must be signed by it (§5.3).
    pub public_key: PublicKey,
}

/// A peer gateway reached over a direct UDP link (same protocol, no relay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEndpoint {
    pub addr: SocketAddr,
    pub public_key: PublicKey,
    /// Blocks this peer sends us over the direct link are originated by us to the relays, as if
    /// our node had mined them: the peer hides behind us (censorship resistance).
    pub originate_for: bool,
}

/// When the origin releases a block's key (§2.6, §7; docs/internals/gateway-core.md, "Key release").
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyReleasePolicy {
    /// With the first fragment: for private deployments where relays are trusted.
    Immediate,
    /// Once receipts came from `share` of `receivers` receiving gateways (rounded up, at least
    /// one when `receivers > 0`), or `timeout` after the stream started, whichever is first.
    Receipts {
        share: f64,
        receivers: u32,
        timeout: Duration,
    },
}

impl KeyReleasePolicy {
    /// Receipts needed before the timeout; 0 releases at once.
    pub fn receipts_needed(&self) -> u32 {
        match *self {
            KeyReleasePolicy::Immediate => 0,
            KeyReleasePolicy::Receipts {
                share, receivers, ..
            } => {
                if receivers == 0 {
                    return 0;
                }
                let n = (share.clamp(0.0, 1.0) * f64::from(receivers)).ceil() as u32;
                n.clamp(1, receivers)
            }
        }
    }
}

/// How a block from the network goes to the node (`node.delivery`: announce | push |
/// compact). Where the node does not take what a mode sends, the node side announces instead
/// (and says so once): every mode ends with the block at the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// `block`, unsolicited, to nodes known to process it (Bitcoin Core); one round trip
    /// faster than announcing.
    Push,
    /// `headers`/`inv`; the node fetches it (`block` or `cmpctblock`). Every node takes
    /// this: the default.
    Announce,
    /// `cmpctblock` where the node asked for high-bandwidth compact blocks.
    Compact,
}

/// Settings of the core. [`CoreConfig::new`] gives defaults for tests and the binary's config
/// fills in the rest.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub relays: Vec<RelayEndpoint>,
    pub peers: Vec<PeerEndpoint>,
    /// Origins whose blocks we accept (peers are added automatically). Empty with a roster:
    /// the roster's gateways.
    pub trusted_origins: Vec<PublicKey>,
    /// Uplink budget for block fragments, bytes per second, all destinations together.
    pub uplink_bytes_per_sec: u64,
    /// Datagrams that may leave back to back after an idle spell.
    pub burst: u32,
    pub repair: RepairPolicy,
    pub key_release: KeyReleasePolicy,
    /// Peers that sent no receipt for one of our blocks this long after it started get the
    /// whole stream over the direct link.
    pub peer_fallback: Duration,
    /// Blocks from our node go only to peers (which originate them for us), never to relays.
    pub originate_via_peers: bool,
    pub delivery: Delivery,
    /// How our blocks are encoded (§6.3, §6.8). Receivers follow the payload's format byte,
    /// so this only chooses what we send; a deployment uses one value to compare baselines.
    pub block_encoding: BlockEncoding,
    /// Seal our blocks with a per-block key released after receipts (§5). `false`: the
    /// unsealed payload of §6.9, delivered by receivers as soon as it decodes, no key release.
    /// Receivers follow the payload (sealed or not) whatever their own setting.
    pub encrypt: bool,
    pub tx_store: TxStoreConfig,
    pub assembler: AssemblerConfig,
    /// Keepalive period when the relay's ack does not ask for one (and for peer links).
    pub keepalive: Duration,
    /// A link silent for this long is down; a relay link re-registers, the next relay takes over.
    pub link_quiet: Duration,
    /// Register again this long after an unanswered registration.
    pub register_retry: Duration,
    /// Ask again for missing transactions after this long (on the next link).
    pub tx_request_retry: Duration,
    /// Give up on a block whose transactions did not come after this many requests.
    pub tx_request_rounds: u32,
    /// Our outbound streams are kept this long for repair requests and late fallbacks.
    pub outbound_linger: Duration,
    /// Transactions from the node waiting for their short ID, most kept.
    pub max_awaiting_ids: usize,
    /// Keep [`StageRecord`]s for [`Gateway::poll_stage`] (the perf report's stage log).
    pub stage_records: bool,
    /// Bytes queued at most per destination in the paced queue (transactions, tx answers)
    /// and in the control queue (receipts, key releases, requests); more is dropped, counted.
    pub paced_queue_bytes: usize,
    pub control_queue_bytes: usize,
    /// A tx request for an ID we answered on the same direct peer link within this long is not
    /// answered again (F7: answered once per ID; a lost answer is asked again after it). Over
    /// a relay link the relay refuses each asker's repeats.
    pub tx_answer_repeat: Duration,
    /// The deployment's verified roster (`photon_protocol::roster`). With it, only its
    /// gateways' receipts count toward a key release; without it, only those of
    /// `trusted_origins` and `peers` (docs/protocol/8-threat-model.md).
    pub roster: Option<Arc<Roster>>,
    /// The chain's network: blocks from the network must meet its proof-of-work limit.
    pub network: bitcoin::Network,
}

impl CoreConfig {
    pub fn new() -> Self {
        CoreConfig {
            relays: Vec::new(),
            peers: Vec::new(),
            trusted_origins: Vec::new(),
            uplink_bytes_per_sec: 12_500_000,
            burst: 16,
            repair: RepairPolicy::DEFAULT,
            key_release: KeyReleasePolicy::Receipts {
                share: 0.5,
                receivers: 1,
                timeout: Duration::from_secs(3),
            },
            peer_fallback: Duration::from_millis(500),
            originate_via_peers: false,
            delivery: Delivery::Announce,
            block_encoding: BlockEncoding::Compact,
            encrypt: true,
            tx_store: TxStoreConfig::default(),
            assembler: AssemblerConfig::default(),
            keepalive: Duration::from_millis(1000),
            link_quiet: Duration::from_millis(3000),
            register_retry: Duration::from_millis(1000),
            tx_request_retry: Duration::from_millis(200),
            tx_request_rounds: 5,
            outbound_linger: Duration::from_secs(30),
            max_awaiting_ids: 100_000,
            stage_records: false,
            paced_queue_bytes: 16 << 20,
            control_queue_bytes: 4 << 20,
            tx_answer_repeat: Duration::from_millis(400),
            roster: None,
            network: bitcoin::Network::Bitcoin,
        }
    }
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig::new()
    }
}

/// What the gateway asks of its node connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeAction {
    SendBlock(Block),
    AnnounceBlock(Block),
    SendCmpctBlock(Block),
    AnnounceTx(Transaction),
}

/// Durations of an outbound block's stages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutTimings {
    pub compress: Duration,
    /// Sealing; unsealed (`encrypt = false`): the copy behind the plain marker (§6.9).
    pub seal: Duration,
    /// FEC encode, shard hashes, manifest build and signature.
    pub fec_manifest: Duration,
}

/// Durations of an inbound block's stages, from its first fragment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InTimings {
    /// First fragment → K verified shards decoded.
    pub assemble: Duration,
    /// Decoded → key in hand (zero if the key came first, or the block was not sealed).
    pub key_wait: Duration,
    /// Zero for an unsealed block.
    pub open: Duration,
    /// Decompression, including waiting for requested transactions.
    pub decompress: Duration,
    /// First fragment → handed to the node.
    pub total: Duration,
}

/// Why the key of one of our blocks went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseReason {
    Immediate,
    Receipts,
    Timeout,
}

/// What happened, for logs, metrics and tests.
#[derive(Debug, Clone, PartialEq)]
pub enum GatewayEvent {
    LinkUp {
        link: LinkId,
        kind: LinkKind,
        addr: SocketAddr,
    },
    LinkDown {
        link: LinkId,
        kind: LinkKind,
        addr: SocketAddr,
    },
    /// A relay refused our registration (status of §2.9).
    RegisterRefused { link: LinkId, status: u8 },
    /// A block of our node (or of a peer we originate for) went out as `stream`.
    BlockOriginated {
        hash: BlockHash,
        stream: u64,
        encoding: BlockEncoding,
        sealed: bool,
        block_bytes: usize,
        compressed_bytes: usize,
        datagrams_planned: usize,
        timings: OutTimings,
    },
    KeyReleased {
        stream: u64,
        receipts: u32,
        reason: ReleaseReason,
        after: Duration,
    },
    /// The stream went to peers directly: they sent no receipt in time.
    PeerFallback { stream: u64, peers: usize },
    /// A block from the network was handed to the node.
    BlockDelivered {
        hash: BlockHash,
        stream: u64,
        /// The sender's encoding and whether it sealed the block (read from the payload).
        encoding: BlockEncoding,
        sealed: bool,
        via: LinkKind,
        tx_requests: u32,
        compressed_bytes: usize,
        block_bytes: usize,
        timings: InTimings,
    },
    /// A stream whose block could not be delivered.
    BlockFailed { stream: u64, reason: String },
}

/// A datagram to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub dst: SocketAddr,
    pub len: usize,
}

/// The gateway core. See the module documentation for the call order.
///
/// It owns four sub-state machines (links, transactions, outbound and inbound streams), each
/// with its own handle/poll methods and counters, and routes between them: their datagrams go
/// to the control or paced queue, their events to `events`, decoded blocks to the node.
pub struct Gateway {
    config: CoreConfig,
    identity: Identity,
    rng: SystemRandom,
    /// Unix time in ms at `epoch`, to timestamp registrations without reading the clock.
    epoch: Instant,
    epoch_unix_ms: u64,

    links: Links,
    txs: Txs,
    outbound: Outbound,
    inbound: Inbound,
    /// Blocks delivered to or received from the node, to drop duplicates and echoes.
    known_blocks: FifoSet<BlockHash>,
    /// The easiest target a block from the network may claim (`CoreConfig::network`).
    pow_limit: bitcoin::Target,
    /// The trusted origins are the roster's gateways (none were configured, or the config's
    /// came from the roster): a newer roster replaces them.
    trusted_from_roster: bool,

    control: LinkQueue,
    /// Transactions out, paced at the uplink rate (a burst of thousands would overflow the
    /// relay's socket buffer).
    paced: LinkQueue,
    paced_next: Instant,
    node_actions: VecDeque<NodeAction>,
    events: VecDeque<GatewayEvent>,
    stages: StageLog,
    next_housekeeping: Instant,
    stats: GatewayStats,
}

/// A FIFO of datagrams bounded in bytes per destination (F7): a datagram that would pass its
/// destination's budget is refused (the caller counts it), so no peer's requests can make us
/// queue without bound, and one slow destination cannot starve the others' budget.
struct LinkQueue {
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    bytes: HashMap<SocketAddr, usize>,
    limit: usize,
}

impl LinkQueue {
    fn new(limit: usize) -> Self {
        LinkQueue {
            queue: VecDeque::new(),
            bytes: HashMap::new(),
            limit,
        }
    }

    /// Queues `d`; `false` (dropped) when its destination's budget would be passed.
    fn push(&mut self, d: (SocketAddr, Vec<u8>)) -> bool {
        let held = self.bytes.entry(d.0).or_insert(0);
        if *held + d.1.len() > self.limit {
            return false;
        }
        *held += d.1.len();
        self.queue.push_back(d);
        true
    }

    fn pop(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        let d = self.queue.pop_front()?;
        if let Some(held) = self.bytes.get_mut(&d.0) {
            *held = held.saturating_sub(d.1.len());
            if *held == 0 {
                self.bytes.remove(&d.0);
            }
        }
        Some(d)
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// Block hashes remembered to drop duplicates and echoes from the node.
const KNOWN_BLOCKS: usize = 4096;
/// Housekeeping (store expiry, reassembly expiry) period.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Datagrams of the paced queue that may leave back to back after an idle spell.
const PACED_BURST: u32 = 32;
/// Events kept when nobody drains them.
const MAX_EVENTS: usize = 4096;

impl Gateway {
    /// A gateway with `identity`, started at `now` which is `unix_ms` on the wall clock.
    pub fn new(mut config: CoreConfig, identity: Identity, now: Instant, unix_ms: u64) -> Self {
        // Without a configured list, the roster's gateways are the trusted origins.
        let trusted_from_roster = config.trusted_origins.is_empty() && config.roster.is_some();
        let mut trusted: Vec<[u8; 32]> = match &config.roster {
            Some(r) if trusted_from_roster => r.gateways().map(|k| k.0).collect(),
            _ => config.trusted_origins.iter().map(|k| k.0).collect(),
        };
        trusted.extend(config.peers.iter().map(|p| p.public_key.0));
        trusted.sort_unstable();
        trusted.dedup();
        config.assembler.trusted_origins = trusted;
        let links = Links::new(&config, identity.public_key(), now);
        let stages = StageLog::new(config.stage_records);
        let control = LinkQueue::new(config.control_queue_bytes);
        let paced = LinkQueue::new(config.paced_queue_bytes);
        let pow_limit = crate::node::pow::pow_limit(config.network);
        let outbound = Outbound::new(&config);
        let inbound = Inbound::new(
            config.assembler.clone(),
            config.tx_request_retry,
            config.tx_request_rounds,
        );
        Gateway {
            inbound,
            txs: Txs::new(
                config.tx_store,
                config.max_awaiting_ids,
                config.tx_answer_repeat,
                config.roster.as_deref(),
            ),
            config,
            identity,
            rng: SystemRandom::new(),
            epoch: now,
            epoch_unix_ms: unix_ms,
            links,
            known_blocks: FifoSet::new(KNOWN_BLOCKS),
            pow_limit,
            trusted_from_roster,
            outbound,
            control,
            paced,
            paced_next: now,
            node_actions: VecDeque::new(),
            events: VecDeque::new(),
            stages,
            next_housekeeping: now + HOUSEKEEPING,
            stats: GatewayStats::default(),
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.identity.public_key()
    }

    /// Takes a newer roster (already verified by the caller against the operators' keys, e.g.
    /// `photon_ops::roster::RosterWatcher`): refused unless its serial is above the one held.
    /// From now on its gateways are the receipt signers and (when the config listed no trusted
    /// origins) the trusted origins, and its relays' ranges bound short IDs. Streams already
    /// bound keep their origin.
    pub fn replace_roster(&mut self, roster: Arc<Roster>) -> Result<(), RosterError> {
        if let Some(current) = &self.config.roster {
            roster.check_replaces(current)?;
        }
        self.outbound.set_receipt_signers(&roster);
        self.txs.set_roster(&roster);
        if self.config.trusted_origins.is_empty() {
            self.trusted_from_roster = true;
        }
        if self.trusted_from_roster {
            let mut trusted: Vec<[u8; 32]> = roster.gateways().map(|k| k.0).collect();
            trusted.extend(self.config.peers.iter().map(|p| p.public_key.0));
            self.inbound.set_trusted_origins(trusted);
        }
        self.config.roster = Some(roster);
        self.stats.roster_updates += 1;
        Ok(())
    }

    /// Counts a roster the driver refused (expired, badly signed, not newer, unreadable).
    pub fn note_roster_refused(&mut self) {
        self.stats.roster_refused += 1;
    }

    /// The roster in force, if any.
    pub fn roster(&self) -> Option<&Arc<Roster>> {
        self.config.roster.as_ref()
    }

    /// Counters of the gateway and its parts, as one snapshot.
    pub fn stats(&self) -> GatewayStats {
        let mut s = self.stats.clone();
        self.links.stats().add_to(&mut s);
        self.txs.stats().add_to(&mut s);
        self.inbound.stats().add_to(&mut s);
        self.outbound.stats().add_to(&mut s);
        s
    }

    pub fn assembler_stats(&self) -> &AssemblerStats {
        self.inbound.assembler_stats()
    }

    pub fn tx_store_stats(&self) -> TxStoreStats {
        self.txs.store_stats()
    }

    /// State of each link, in link order (relays, then peers).
    pub fn links(&self) -> Vec<(LinkKind, SocketAddr, LinkState)> {
        self.links
            .iter()
            .map(|l| (l.kind, l.addr, l.state()))
            .collect()
    }

    /// The relay that carries transactions now.
    pub fn primary_relay(&self) -> Option<SocketAddr> {
        self.links.primary().map(|i| self.links[i].addr)
    }

    /// Inbound streams decoded but still without their key (the key is withheld).
    pub fn blocks_waiting_for_key(&self) -> usize {
        self.inbound.waiting_for_key()
    }

    fn unix_ms(&self, now: Instant) -> u64 {
        self.epoch_unix_ms + now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn event(&mut self, ev: GatewayEvent) {
        if self.events.len() < MAX_EVENTS {
            self.events.push_back(ev);
        }
    }

    pub fn poll_event(&mut self) -> Option<GatewayEvent> {
        self.events.pop_front()
    }

    pub fn poll_node_action(&mut self) -> Option<NodeAction> {
        self.node_actions.pop_front()
    }

    /// An event from the node side.
    pub fn handle_node_event(&mut self, now: Instant, event: NodeEvent) {
        match event {
            NodeEvent::BlockReceived { block, hash, .. } => {
                if !self.known_blocks.insert(hash) {
                    // Our own delivery echoed back, or a block the network already gave us.
                    self.stats.blocks_duplicate += 1;
                    return;
                }
                self.stats.blocks_from_node += 1;
                self.originate(now, &block);
            }
            NodeEvent::TxReceived { tx, .. } => {
                self.txs.handle_node_tx(now, &tx, &self.links);
                self.drain_txs(now);
            }
            NodeEvent::Handshaken(_)
            | NodeEvent::BlockAnnounced { .. }
            | NodeEvent::BlockRejected { .. }
            | NodeEvent::BlockSent { .. }
            | NodeEvent::DeliveryFallback { .. } => {}
        }
    }

    /// One datagram received from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += datagram.len() as u64;
        let Ok(packet) = Packet::new_checked(datagram) else {
            self.stats.dropped_malformed += 1;
            return;
        };
        let Ok(msg_type) = packet.msg_type() else {
            self.stats.dropped_malformed += 1;
            return;
        };
        // Registration messages carry their own Ed25519 signatures and no hop tag.
        match msg_type {
            MessageType::Register => {
                let creds = Credentials {
                    identity: &self.identity,
                    rng: &self.rng,
                    unix_ms: self.unix_ms(now),
                };
                self.links.handle_register(now, from, &packet, &creds);
                return self.drain_links();
            }
            MessageType::RegisterAck => {
                self.links.handle_register_ack(now, from, &packet);
                return self.drain_links();
            }
            _ => {}
        }
        let Some(link) = self.links.by_addr(&from) else {
            self.stats.dropped_unknown_peer += 1;
            return;
        };
        if !self.links[link].verify(&packet) {
            self.stats.dropped_bad_tag += 1;
            return;
        }
        self.links.heard(now, link);
        self.drain_links();
        if msg_type.is_block_fragment() {
            if self.outbound.is_ours(packet.stream()) {
                // Our own block reflected back to us.
                self.stats.dropped_unexpected += 1;
                return;
            }
            self.inbound
                .handle_fragment(now, link, &packet, &mut in_cx!(self));
            self.drain_inbound();
            return;
        }
        let Ok(repr) = Repr::parse(&packet) else {
            self.stats.dropped_malformed += 1;
            return;
        };
        match repr.message {
            Message::Keepalive(k) => self.links.handle_keepalive(link, &k),
            Message::Transaction(t) => {
                self.txs.handle_transaction(now, &self.links, link, &t);
                self.drain_txs(now);
            }
            Message::ShortIdAssign(a) => {
                self.txs.handle_short_id_assign(now, &self.links, link, &a);
                self.drain_txs(now);
            }
            Message::TxRequest(r) => {
                let ours = self.outbound.is_ours(r.stream);
                self.txs.handle_tx_request(now, &self.links, link, &r, ours);
                self.drain_txs(now);
            }
            Message::Receipt(r) => self.handle_receipt(now, link, &r),
            Message::KeyRelease(k) => {
                self.inbound
                    .handle_key_release(now, link, &k, &mut in_cx!(self));
                self.drain_inbound();
            }
            Message::RepairRequest(r) => self.outbound.handle_repair_request(link, &r),
            Message::Fragment(_) | Message::Register(_) | Message::RegisterAck(_) => {
                self.stats.dropped_unexpected += 1;
            }
        }
    }

    /// Timers: registration, keepalive, failover, key release, peer fallback, repair requests,
    /// transaction requests, expiry. Call when [`Gateway::poll_timeout`] is due (calling it
    /// early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        let creds = Credentials {
            identity: &self.identity,
            rng: &self.rng,
            unix_ms: self.unix_ms(now),
        };
        self.links.handle_timeout(now, &creds);
        self.drain_links();
        self.inbound.handle_timeout(now, &mut in_cx!(self));
        self.drain_inbound();
        self.outbound.handle_timeout(now, &mut out_cx!(self));
        self.drain_outbound();
        self.txs.handle_timeout(now, &self.links);
        self.drain_txs(now);
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + HOUSEKEEPING;
            self.txs.expire(now);
        }
    }

    /// The next instant [`Gateway::handle_timeout`] or [`Gateway::poll_transmit`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = Some(self.next_housekeeping);
        let mut take = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        take(self.links.poll_timeout());
        take(self.inbound.poll_timeout());
        take(self.outbound.poll_timeout(self.epoch));
        take(self.txs.poll_timeout());
        if !self.control.is_empty() {
            take(Some(self.epoch));
        }
        if !self.paced.is_empty() {
            take(Some(self.paced_next));
        }
        t
    }

    /// The next datagram to send, written into `buf` (at least
    /// [`photon_protocol::wire::MAX_DATAGRAM`] bytes), already hop-signed for its destination;
    /// `None` when nothing may leave before [`Gateway::poll_timeout`].
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let from_paced =
            self.control.is_empty() && !self.paced.is_empty() && now >= self.paced_next;
        let queued = if from_paced {
            self.paced.pop()
        } else {
            self.control.pop()
        };
        let t = if let Some((dst, bytes)) = queued {
            let len = bytes.len().min(buf.len());
            buf[..len].copy_from_slice(&bytes[..len]);
            if from_paced {
                // Credit for PACED_BURST datagrams after an idle spell, then the uplink rate.
                let rate = self.config.uplink_bytes_per_sec.max(1);
                let cost = Duration::from_nanos(len as u64 * 1_000_000_000 / rate);
                let floor = now.checked_sub(cost * PACED_BURST).unwrap_or(now);
                self.paced_next = self.paced_next.max(floor) + cost;
            }
            Transmit { dst, len }
        } else {
            self.outbound.poll_transmit(now, buf, &mut out_cx!(self))?
        };
        self.stats.datagrams_out += 1;
        self.stats.bytes_out += t.len as u64;
        Some(t)
    }

    /// What the transaction side wants sent, announced to the node and given to waiting
    /// blocks, in that order.
    fn drain_txs(&mut self, now: Instant) {
        while let Some(d) = self.txs.poll_transmit() {
            if !self.paced.push(d) {
                self.stats.dropped_paced_full += 1;
            }
        }
        while let Some(tx) = self.txs.poll_announce() {
            self.node_actions.push_back(NodeAction::AnnounceTx(tx));
        }
        while let Some((id, tx)) = self.txs.poll_arrived() {
            self.inbound.tx_arrived(now, id, &tx, &mut in_cx!(self));
            self.drain_inbound();
        }
    }

    /// A receipt for one of our streams.
    fn handle_receipt(&mut self, now: Instant, link: LinkId, r: &ReceiptRepr) {
        self.outbound
            .handle_receipt(now, link, r, &mut out_cx!(self));
        self.drain_outbound();
    }

    /// Sends `block` to the network as a new stream of ours.
    fn originate(&mut self, now: Instant, block: &Block) {
        self.outbound.originate(now, block, &mut out_cx!(self));
        self.drain_outbound();
    }

    /// What the outbound streams want sent (key releases) and reported.
    fn drain_outbound(&mut self) {
        while let Some(d) = self.outbound.poll_control() {
            if !self.control.push(d) {
                self.stats.dropped_control_full += 1;
            }
        }
        while let Some(ev) = self.outbound.poll_event() {
            self.event(ev);
        }
    }

    /// Stream ids of our outbound blocks still kept, oldest first.
    pub fn outbound_stream_ids(&self) -> Vec<u64> {
        self.outbound.stream_ids()
    }

    /// What the inbound streams want sent and reported, and the blocks they decoded.
    fn drain_inbound(&mut self) {
        while let Some(d) = self.inbound.poll_transmit() {
            if !self.control.push(d) {
                self.stats.dropped_control_full += 1;
            }
        }
        while let Some(ev) = self.inbound.poll_event() {
            self.event(ev);
        }
        while let Some(b) = self.inbound.poll_block() {
            self.deliver(b);
        }
    }

    /// A block from the network to the node (and, for a peer we originate for, to the
    /// relays as ours), unless the node has it already.
    fn deliver(&mut self, b: InboundBlock) {
        let hash = b.block.block_hash();
        if self.known_blocks.contains(&hash) {
            self.stats.blocks_duplicate += 1;
            return;
        }
        // F6: nothing the node would reject goes to it (a trusted origin may still send junk).
        if let Err(e) = validity::check_block(&b.block, self.pow_limit) {
            match e {
                validity::BlockInvalid::Pow(_) => self.stats.blocks_invalid_pow += 1,
                validity::BlockInvalid::Mutated => self.stats.blocks_invalid_mutated += 1,
                validity::BlockInvalid::TooHeavy { .. } | validity::BlockInvalid::Empty => {
                    self.stats.blocks_invalid_size += 1
                }
            }
            if let Some(origin) = b.origin {
                let n = self
                    .stats
                    .invalid_blocks_by_origin
                    .entry(origin.to_string())
                    .or_insert(0);
                *n += 1;
            }
            let origin = b
                .origin
                .map_or_else(|| "unknown".to_string(), |o| o.to_string());
            self.event(GatewayEvent::BlockFailed {
                stream: b.stream,
                reason: format!("invalid block from origin {origin}: {e}"),
            });
            return;
        }
        self.known_blocks.insert(hash);
        let (now, stream) = (b.at, b.stream);
        self.stages
            .record(now, Stage::Decode, Some(stream), Some(hash), None);
        let block_bytes = b.block.total_size();
        self.stats.blocks_from_network += 1;
        self.stats.block_bytes_in += block_bytes as u64;
        self.stats.compressed_bytes_in += b.compressed_bytes as u64;
        let originate_for = match b.via {
            LinkKind::Peer(p) => self.config.peers[p].originate_for,
            LinkKind::Relay(_) => false,
        };
        if originate_for {
            // A peer hides behind us: its block goes to the relays as ours.
            self.originate(now, &b.block);
        }
        let action = match self.config.delivery {
            Delivery::Push => NodeAction::SendBlock(b.block),
            Delivery::Announce => NodeAction::AnnounceBlock(b.block),
            Delivery::Compact => NodeAction::SendCmpctBlock(b.block),
        };
        self.node_actions.push_back(action);
        // Handed to the node connection (the driver passes node actions on in the same turn).
        self.stages
            .record(now, Stage::Deliver, Some(stream), Some(hash), None);
        self.event(GatewayEvent::BlockDelivered {
            hash,
            stream,
            encoding: b.encoding,
            sealed: b.sealed,
            via: b.via,
            tx_requests: b.tx_requests,
            compressed_bytes: b.compressed_bytes,
            block_bytes,
            timings: b.timings,
        });
    }

    /// What the links want sent and reported, in order.
    fn drain_links(&mut self) {
        while let Some(d) = self.links.poll_transmit() {
            if !self.control.push(d) {
                self.stats.dropped_control_full += 1;
            }
        }
        while let Some(ev) = self.links.poll_event() {
            self.event(ev);
        }
    }
}

#[cfg(test)]
mod tests;
