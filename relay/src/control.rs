//! The relay's control path, sans-IO: everything that is not the cut-through fan-out of block
//! fragments (registration, keepalives, short IDs, tx requests, repairs, receipts and key
//! releases, next hops by ARP). Both backends drive the same [`Control`]: the driver passes
//! `now_ms`, the datagram and where it came from; [`Control`] answers with datagrams to send
//! ([`Outgoing`]) and, when membership changed, a new forwarding [`Table`] to publish. Every
//! drop is a [`ControlCounter`]; nothing here logs per message. Design:
//! `docs/internals/relay-control.md`.

pub mod arp;
mod cache;
mod settings;
mod txcache;

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use photon_protocol::fifo::FifoMap;
use photon_protocol::hopauth::{HopKeys, Role};
use photon_protocol::identity::{self, EphemeralKey, Identity, IdentityError, PublicKey};
use photon_protocol::integrity::{self, ManifestFragmentRepr};
use photon_protocol::roster::{Roster, RosterError};
use photon_protocol::seal::BlockKey;
use photon_protocol::shortid::ShortIdAllocator;
use photon_protocol::wire::{
    flags, register_status, FragmentKind, KeepaliveRepr, Message, MessageType, Packet,
    RegisterRepr, RepairRequestRepr, Repr, TxRequestRepr, MAX_DATAGRAM,
};
use ring::rand::SecureRandom;

pub use crate::packet::Source;
pub use arp::{ArpQuery, ArpResolver, ArpStats, WantError};
pub use cache::{CacheKey, FragmentBuf, RepairCache, Stored};
pub use settings::{ControlConfig, ControlSettings};
pub use txcache::{CachedTx, TxCache, TxFragment, FRAGMENT_OVERHEAD as TX_FRAGMENT_OVERHEAD};

use crate::forward::table::{LocalSpec, Peer, PeerKind, PeerSpec, Table, TableError};

/// A datagram the driver must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub to: SocketAddrV4,
    /// Next-hop MAC (DPDK) and relay port index.
    pub mac: [u8; 6],
    pub port: u16,
    /// The whole Photon datagram, hop tag set.
    pub datagram: Vec<u8>,
}

macro_rules! control_counters {
    ($($variant:ident => $name:literal, $help:literal;)*) => {
        /// Control-path counters.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ControlCounter { $($variant),* }

        impl ControlCounter {
            /// Every counter, in index order.
            pub const ALL: &'static [ControlCounter] = &[$(ControlCounter::$variant),*];
            /// A snake_case metric name.
            pub const fn name(self) -> &'static str {
                match self { $(ControlCounter::$variant => $name),* }
            }
            /// What it counts.
            pub const fn help(self) -> &'static str {
                match self { $(ControlCounter::$variant => $help),* }
            }
        }
    };
}

control_counters! {
    Received => "received", "control datagrams handled";
    Malformed => "malformed", "control datagrams that do not parse";
    UnknownSender => "unknown_sender", "control datagrams from a node id that is not registered";
    BadHopTag => "bad_hop_tag", "control datagrams whose hop tag does not verify";
    Unsupported => "unsupported", "control message kinds the relay does not serve (short-ID assignment, register ack)";
    RegisterAccepted => "register_accepted", "registrations accepted";
    RegisterUnknownIdentity => "register_unknown_identity", "registrations refused: identity not on the allow list";
    RegisterBadSignature => "register_bad_signature", "registrations dropped: bad signature";
    RegisterStale => "register_stale", "registrations refused: timestamp outside the window";
    RegisterReplay => "register_replay", "registrations dropped unanswered: nonce seen before (a replay)";
    RegisterBusy => "register_busy", "registrations refused: too many gateways, replay cache full, or this identity holds too many of its nonces";
    RegisterRefusalSuppressed => "register_refusal_suppressed", "registration refusals not sent: more than 64 a second (F11)";
    Keepalives => "keepalives", "keepalives received";
    NatRebinds => "nat_rebinds", "peers whose source address changed";
    KeepaliveStale => "keepalive_stale", "keepalives whose seq is not newer than the session's last (replayed): dropped, no address change (F5)";
    Expired => "expired", "gateways removed after missing keepalives";
    Transactions => "transactions", "transaction fragments passed on";
    ShortIdsAssigned => "short_ids_assigned", "short IDs assigned";
    ShortIdExhausted => "short_id_exhausted", "transactions passed on without an ID: range exhausted";
    TxRequests => "tx_requests", "tx requests received";
    TxRequestServed => "tx_request_served", "requested transactions answered from the relay's transaction cache";
    TxRequestPassedOn => "tx_request_passed_on", "requested short IDs not in the cache, passed on to the gateways";
    TxCached => "tx_cached", "transaction fragments stored in the transaction cache";
    Receipts => "receipts", "receipts passed on";
    KeyReleases => "key_releases", "key releases passed on";
    KeyReleaseDuplicates => "key_release_duplicates", "key releases seen before (dropped)";
    KeyReleaseBadSignature => "key_release_bad_signature", "key releases whose signature does not verify under the stream's origin (dropped, nothing marked)";
    KeyReleaseUnverified => "key_release_unverified", "key releases of streams whose origin is not known here: passed on once per (stream, key), nothing marked";
    OriginsLearned => "origins_learned", "streams bound to their origin by a forwarded manifest fragment whose signature verifies";
    OriginCheckSkipped => "origin_check_skipped", "manifest fragments of unbound streams not checked: the per-tick budget of signature checks was spent";
    ManifestUnverified => "manifest_unverified", "forwarded manifest fragments that bind no origin: bad signature or payload, or an origin that is not a member gateway";
    TxRequestRefused => "tx_request_refused", "tx-request IDs not answered or passed on: named twice in one request, or answered to that node within tx_answer_repeat_ms (F7)";
    ToOrigin => "to_origin", "receipts, tx requests and repair requests passed on toward the stream's known origin only, not to every gateway";
    RosterUpdates => "roster_updates", "newer membership rosters taken while running";
    RosterRefused => "roster_refused", "roster files refused (expired, badly signed, not newer, unreadable): the roster in force stays";
    RosterRemoved => "roster_removed", "registered gateways removed because a newer roster no longer lists them";
    ShortIdFromGateway => "short_id_from_gateway", "short IDs a gateway supplied that nobody asked for: not passed on, the relay assigned its own (F2)";
    TxAnswerRelayed => "tx_answer_relayed", "transaction fragments answering a passed-on tx request, with the answering gateway's short ID, sent only to the links that asked";
    RepairRequests => "repair_requests", "repair requests received";
    RepairServed => "repair_served", "fragments retransmitted from the cache";
    RepairMissed => "repair_missed", "requested fragments not in the cache";
    RepairPassedOn => "repair_passed_on", "fragments a gateway asked for that the cache lacked, asked of the peer relays";
    RetransmitRelayed => "retransmit_relayed", "RETRANSMIT fragments from a peer relay passed on to the gateways that asked";
    UnsolicitedRetransmit => "unsolicited_retransmit", "RETRANSMIT fragments received that nobody here asked for";
    CopiesSent => "copies_sent", "control datagrams emitted";
    TablesBuilt => "tables_built", "forwarding tables built for publication";
    TableErrors => "table_errors", "membership changes that could not be turned into a table";
    ArpRequestsSent => "arp_requests_sent", "ARP requests sent to resolve next hops (DPDK backend)";
    ArpRepliesLearned => "arp_replies_learned", "next-hop MACs learned or changed from ARP (DPDK backend)";
    UnresolvedNextHop => "unresolved_next_hop", "control datagrams not sent to a peer relay whose next hop is not resolved yet (DPDK backend)";
}

/// The control path's counters as plain integers (the control thread owns them).
#[derive(Debug, Clone, Default)]
pub struct ControlCounters {
    values: Vec<u64>,
}

impl ControlCounters {
    fn new() -> Self {
        ControlCounters {
            values: vec![0; ControlCounter::ALL.len()],
        }
    }
    #[inline]
    fn inc(&mut self, c: ControlCounter) {
        self.add(c, 1);
    }
    #[inline]
    fn add(&mut self, c: ControlCounter, n: u64) {
        if let Some(v) = self.values.get_mut(c as usize) {
            *v = v.wrapping_add(n);
        }
    }
    /// One counter.
    pub fn get(&self, c: ControlCounter) -> u64 {
        self.values.get(c as usize).copied().unwrap_or(0)
    }
}

/// A registered or configured peer as the metrics show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub node_id: u32,
    pub kind: PeerKind,
    pub addr: SocketAddrV4,
    /// Hex of the identity (gateways), empty for configured relays.
    pub identity: String,
    /// ms since the last datagram from it (gateways), 0 for configured relays.
    pub idle_ms: u64,
}

/// Published control-path state, readable from any thread (the metrics endpoint).
#[derive(Debug, Default)]
pub struct ControlShared {
    counters: Vec<AtomicU64>,
    gateways: AtomicU64,
    cache_fragments: AtomicU64,
    cache_bytes: AtomicU64,
    peers: std::sync::Mutex<Vec<PeerInfo>>,
}

impl ControlShared {
    pub fn new() -> Self {
        ControlShared {
            counters: ControlCounter::ALL
                .iter()
                .map(|_| AtomicU64::new(0))
                .collect(),
            ..Default::default()
        }
    }
    /// A counter's last published value.
    pub fn get(&self, c: ControlCounter) -> u64 {
        self.counters
            .get(c as usize)
            .map_or(0, |a| a.load(Ordering::Relaxed))
    }
    /// Gateways registered at the last publication.
    pub fn gateways(&self) -> u64 {
        self.gateways.load(Ordering::Relaxed)
    }
    /// Repair cache fragments and bytes at the last publication.
    pub fn cache(&self) -> (u64, u64) {
        (
            self.cache_fragments.load(Ordering::Relaxed),
            self.cache_bytes.load(Ordering::Relaxed),
        )
    }
    /// The peers at the last publication.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.peers.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

struct Gateway {
    identity: PublicKey,
    /// The prefix of its streams (`integrity::stream_prefix` of `identity`, §4.1.6).
    streams: u32,
    addr: SocketAddrV4,
    mac: [u8; 6],
    port: u16,
    keys: HopKeys,
    last_seen_ms: u64,
    /// The highest keepalive `seq` of this session (gateways count up from 1 and never go
    /// back): only a fresh one may move the gateway's address (F5).
    last_keepalive_seq: u32,
}

/// The relay's control path. See the module documentation.
pub struct Control {
    identity: Identity,
    local: LocalSpec,
    settings: ControlSettings,
    rng: Arc<dyn SecureRandom + Send + Sync>,
    static_peers: Vec<PeerSpec>,
    /// Configured peer relays whose next hop's MAC is not known yet (not in the table).
    pending_peers: Vec<PeerSpec>,
    /// (node id, next hop) of the peer relays resolved by ARP.
    arp_peers: Vec<(u32, Ipv4Addr)>,
    arp: ArpResolver,
    gateways: BTreeMap<u32, Gateway>,
    by_identity: HashMap<[u8; 32], u32>,
    next_node: u32,
    /// (identity, nonce) → timestamp_ms + window: until when the nonce must be refused.
    replay: FifoMap<([u8; 32], [u8; 16]), u64>,
    /// Nonces of the replay cache per identity: one allowlisted key cannot fill it (F11).
    replay_per_identity: HashMap<[u8; 32], u32>,
    /// The second (Unix) of the refusal budget and the refusals sent in it.
    refusal_second: u64,
    refusals_this_second: u32,
    short_ids: ShortIdAllocator,
    /// (origin node, origin transfer) → (short ID, relay transfer id, how it goes on).
    txs: FifoMap<(u32, u64), (Option<u32>, u64, TxRoute)>,
    /// Short ID → node ids (at most [`TX_WANTERS`]) whose tx request for it was passed on to
    /// the gateways: the only links a gateway's answer under that ID goes to.
    tx_wanted: FifoMap<u32, Vec<u32>>,
    /// (asking node, short ID) → when its request was last served or passed on (ms).
    tx_answered: FifoMap<(u32, u32), u64>,
    next_transfer: u64,
    key_releases: FifoMap<u64, ()>,
    /// Stream → its origin's key, from a forwarded manifest fragment whose signature verifies
    /// (§4.1): key releases are checked against it before anything is marked (F4).
    stream_origins: FifoMap<u64, [u8; 32]>,
    /// Key releases of streams whose origin is not known here, passed on once per (stream,
    /// key): a bogus one never suppresses the origin's.
    unverified_releases: FifoMap<(u64, [u8; 32]), ()>,
    /// Manifest signature checks left until the next tick.
    origin_checks_left: u32,
    /// Stream → gateways (node ids, at most [`REPAIR_WAITERS`]) whose repair request was
    /// passed on to the peer relays: who gets the RETRANSMIT answers.
    repair_waiting: FifoMap<u64, Vec<u32>>,
    cache: RepairCache<Stored>,
    tx_cache: TxCache,
    table: Arc<Table>,
    table_dirty: bool,
    keepalive_seq: u32,
    counters: ControlCounters,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("identity", &self.identity)
            .field("node_id", &self.local.node_id)
            .field("gateways", &self.gateways.len())
            .finish_non_exhaustive()
    }
}

/// Where datagrams to peer `spec` go: its address, next-hop MAC and relay port.
fn peer_source(spec: &PeerSpec) -> Source {
    Source {
        addr: spec.addr,
        mac: spec.next_hop_mac,
        port: spec.port,
    }
}

impl Control {
    /// A control path for the relay `local` with identity `identity`, the configured peer
    /// relays `static_peers` (with static hop keys; relay–relay handshakes are not done yet),
    /// and `rng` for the ephemeral keys of registrations.
    pub fn new(
        identity: Identity,
        local: LocalSpec,
        static_peers: Vec<PeerSpec>,
        settings: ControlSettings,
        rng: Arc<dyn SecureRandom + Send + Sync>,
    ) -> Result<Control, TableError> {
        let table = Arc::new(Table::new(local.clone(), static_peers.clone())?);
        // A roster names this relay's short-ID range: it wins over the configured one.
        let short_id_range = settings
            .roster
            .as_ref()
            .and_then(|r| r.relay_range(&identity.public_key()))
            .unwrap_or(settings.short_ids);
        Ok(Control {
            identity,
            next_node: settings.first_gateway_node_id,
            replay: FifoMap::new(settings.replay_cache),
            replay_per_identity: HashMap::new(),
            refusal_second: 0,
            refusals_this_second: 0,
            short_ids: ShortIdAllocator::new(short_id_range, settings.on_exhaustion),
            txs: FifoMap::new(settings.tx_memory),
            tx_wanted: FifoMap::new(TX_WANTED_IDS),
            tx_answered: FifoMap::new(TX_WANTED_IDS),
            // Relay transfer ids: the relay's node id in the top 32 bits keeps them apart
            // from other relays' (and gateways') ids at a receiver that sees several.
            next_transfer: u64::from(local.node_id) << 32,
            key_releases: FifoMap::new(settings.key_release_memory),
            stream_origins: FifoMap::new(settings.key_release_memory),
            unverified_releases: FifoMap::new(settings.key_release_memory),
            origin_checks_left: ORIGIN_CHECKS_PER_TICK,
            repair_waiting: FifoMap::new(REPAIR_WAITING_STREAMS),
            cache: RepairCache::new(settings.repair_cache_fragments, settings.repair_cache_bytes),
            tx_cache: TxCache::new(settings.tx_cache_bytes),
            local,
            settings,
            rng,
            static_peers,
            pending_peers: Vec::new(),
            arp_peers: Vec::new(),
            arp: ArpResolver::new([]),
            gateways: BTreeMap::new(),
            by_identity: HashMap::new(),
            table,
            table_dirty: true,
            keepalive_seq: 0,
            counters: ControlCounters::new(),
            scratch: vec![0; MAX_DATAGRAM],
        })
    }

    /// DPDK backend: resolve next hops by ARP. `resolver` holds the static `[[neighbour]]`
    /// entries; `peers` are the configured peer relays whose next hop (their own address
    /// on-link, else `relay.gateway`) has no static entry, each with that next hop. Until
    /// [`Control::learn_neighbour`] resolves it they are in the table receive-only (their
    /// fragments are admitted and fanned out, nothing goes to them) while
    /// [`Control::arp_due`] says when to ask; then they become full peers with the learned MAC
    /// in their header template. Replaces any earlier call's peers.
    pub fn resolve_by_arp(
        &mut self,
        resolver: ArpResolver,
        peers: Vec<(PeerSpec, Ipv4Addr)>,
        now_ms: u64,
    ) -> Result<(), WantError> {
        self.arp = resolver;
        self.arp_peers.clear();
        self.pending_peers.clear();
        for (spec, hop) in peers {
            match self.arp.mac(hop) {
                // A static entry after all: in the table at once.
                Some(mac) => self.static_peers.push(PeerSpec {
                    next_hop_mac: mac,
                    ..spec
                }),
                None => {
                    self.arp.want(hop, spec.port, now_ms)?;
                    self.arp_peers.push((spec.node_id, hop));
                    self.pending_peers.push(spec);
                }
            }
        }
        self.rebuild_table();
        Ok(())
    }

    /// ARP requests due at `now_ms` (who-has IP, out of which port), appended to `out`; the
    /// driver sends them (`crate::packet::emit_arp_request`).
    pub fn arp_due(&mut self, now_ms: u64, out: &mut Vec<ArpQuery>) {
        let before = out.len();
        self.arp.due(now_ms, out);
        self.counters
            .add(ControlCounter::ArpRequestsSent, (out.len() - before) as u64);
    }

    /// An ARP frame addressed to us said `ip` is at `mac` (a reply, a gratuitous ARP, or a
    /// request from `ip`). When that resolves or changes a next hop of peer relays, their
    /// entries get the MAC and a new table is built ([`Control::take_table_update`]). Returns
    /// whether it did.
    pub fn learn_neighbour(&mut self, ip: Ipv4Addr, mac: [u8; 6]) -> bool {
        if !self.arp.learn(ip, mac) {
            return false;
        }
        self.counters.inc(ControlCounter::ArpRepliesLearned);
        for &(node, hop) in &self.arp_peers {
            if hop != ip {
                continue;
            }
            if let Some(i) = self.pending_peers.iter().position(|p| p.node_id == node) {
                let mut spec = self.pending_peers.swap_remove(i);
                spec.next_hop_mac = mac;
                self.static_peers.push(spec);
            } else if let Some(p) = self.static_peers.iter_mut().find(|p| p.node_id == node) {
                p.next_hop_mac = mac;
            }
        }
        self.rebuild_table();
        true
    }

    /// The next-hop resolver (its counters, what is still unresolved).
    pub fn arp(&self) -> &ArpResolver {
        &self.arp
    }

    /// Configured peer relays not sent to yet (receive-only in the table): their next hop's MAC
    /// is unknown.
    pub fn pending_peers(&self) -> impl Iterator<Item = u32> + '_ {
        self.pending_peers.iter().map(|p| p.node_id)
    }

    /// The relay's public key (what gateways are configured with).
    pub fn public_key(&self) -> PublicKey {
        self.identity.public_key()
    }

    /// The forwarding table as of now (the data path may still use the previous one until the
    /// driver publishes this).
    pub fn table(&self) -> &Arc<Table> {
        &self.table
    }

    /// A new table to publish if membership changed since the last call (the first call
    /// always returns one).
    pub fn take_table_update(&mut self) -> Option<Arc<Table>> {
        if std::mem::take(&mut self.table_dirty) {
            Some(self.table.clone())
        } else {
            None
        }
    }

    /// The counters so far.
    pub fn counters(&self) -> &ControlCounters {
        &self.counters
    }

    /// The repair cache.
    pub fn cache(&self) -> &RepairCache<Stored> {
        &self.cache
    }

    /// The transaction cache (answers tx requests).
    pub fn tx_cache(&self) -> &TxCache {
        &self.tx_cache
    }

    /// Registered gateways.
    pub fn gateway_count(&self) -> usize {
        self.gateways.len()
    }

    /// The node id a gateway identity got, if registered.
    pub fn node_of(&self, identity: &PublicKey) -> Option<u32> {
        self.by_identity.get(&identity.0).copied()
    }

    /// Every peer, for metrics.
    pub fn peers(&self, now_ms: u64) -> Vec<PeerInfo> {
        let relays = self
            .static_peers
            .iter()
            .chain(&self.pending_peers)
            .map(|p| PeerInfo {
                node_id: p.node_id,
                kind: p.kind,
                addr: p.addr,
                identity: String::new(),
                idle_ms: 0,
            });
        let gws = self.gateways.iter().map(|(&node_id, g)| PeerInfo {
            node_id,
            kind: PeerKind::Gateway { streams: g.streams },
            addr: g.addr,
            identity: g.identity.to_string(),
            idle_ms: now_ms.saturating_sub(g.last_seen_ms),
        });
        relays.chain(gws).collect()
    }

    /// Copies the counters and gauges to `shared` (the driver's housekeeping).
    pub fn publish(&self, shared: &ControlShared, now_ms: u64) {
        for (cell, &v) in shared.counters.iter().zip(&self.counters.values) {
            cell.store(v, Ordering::Relaxed);
        }
        shared
            .gateways
            .store(self.gateways.len() as u64, Ordering::Relaxed);
        shared
            .cache_fragments
            .store(self.cache.len() as u64, Ordering::Relaxed);
        shared
            .cache_bytes
            .store(self.cache.bytes() as u64, Ordering::Relaxed);
        if let Ok(mut p) = shared.peers.lock() {
            *p = self.peers(now_ms);
        }
    }

    /// Keeps a copy of a fragment the data path forwarded, for repair requests.
    #[inline]
    pub fn record_fragment(&mut self, datagram: &[u8]) {
        if let Some(key) = RepairCache::<Stored>::key_of(datagram) {
            if key.kind == FragmentKind::Manifest && !self.stream_origins.contains(&key.stream) {
                self.learn_origin(datagram);
            }
        }
        self.cache.insert_datagram(datagram);
    }

    /// Binds a stream to its origin from a forwarded manifest fragment (§4.1: each carries
    /// the origin key, the signed metadata and a Merkle proof of its chunk, so one fragment
    /// proves the origin signed a manifest for the stream). Only a member gateway's key (the
    /// allow list, when there is one) binds. Called once per stream until it binds.
    fn learn_origin(&mut self, datagram: &[u8]) {
        // A signature check per unbound stream's manifest fragment: bounded per tick, so junk
        // manifest fragments for made-up streams cannot eat the forwarding thread.
        if self.origin_checks_left == 0 {
            self.counters.inc(ControlCounter::OriginCheckSkipped);
            return;
        }
        self.origin_checks_left -= 1;
        let bound = self.manifest_origin(datagram);
        match bound {
            Some((stream, origin)) => {
                self.stream_origins.insert(stream, origin);
                self.counters.inc(ControlCounter::OriginsLearned);
            }
            None => self.counters.inc(ControlCounter::ManifestUnverified),
        }
    }

    /// Takes a newer roster (verified by the caller against the operators' keys,
    /// `photon_ops::roster::RosterWatcher`): refused unless its serial is above the one held.
    /// When the allow list came from the roster it is replaced, and registered gateways the
    /// new roster no longer lists are removed at once (a new table). The short-ID range stays
    /// the one the relay started with (an allocator is not moved while running: restart to
    /// change it).
    pub fn replace_roster(&mut self, roster: Arc<Roster>) -> Result<(), RosterError> {
        if let Some(current) = &self.settings.roster {
            if let Err(e) = roster.check_replaces(current) {
                self.counters.inc(ControlCounter::RosterRefused);
                return Err(e);
            }
        }
        if self.settings.allow_from_roster {
            let allowed: std::collections::HashSet<[u8; 32]> =
                roster.gateways().map(|k| k.0).collect();
            let before = self.gateways.len();
            let by_identity = &mut self.by_identity;
            self.gateways.retain(|_, g| {
                let keep = allowed.contains(&g.identity.0);
                if !keep {
                    by_identity.remove(&g.identity.0);
                }
                keep
            });
            if self.gateways.len() != before {
                self.counters.add(
                    ControlCounter::RosterRemoved,
                    (before - self.gateways.len()) as u64,
                );
                self.rebuild_table();
            }
            self.settings.allowed_gateways = Some(allowed);
        }
        self.settings.roster = Some(roster);
        self.counters.inc(ControlCounter::RosterUpdates);
        Ok(())
    }

    /// Counts a roster file the driver refused (expired, badly signed, unreadable).
    pub fn note_roster_refused(&mut self) {
        self.counters.inc(ControlCounter::RosterRefused);
    }

    /// The roster in force, if any.
    pub fn roster(&self) -> Option<&Arc<Roster>> {
        self.settings.roster.as_ref()
    }

    /// (stream, origin) of a manifest fragment whose signature verifies under its origin key,
    /// an allowed gateway's when there is an allow list.
    fn manifest_origin(&self, datagram: &[u8]) -> Option<(u64, [u8; 32])> {
        let p = Packet::new_checked(datagram).ok()?;
        let repr = Repr::parse(&p).ok()?;
        let Message::Fragment(f) = repr.message else {
            return None;
        };
        let m = ManifestFragmentRepr::parse(f.payload).ok()?;
        if m.meta.stream != f.stream || !integrity::is_stream_of(f.stream, &m.meta.origin) {
            return None;
        }
        if let Some(allowed) = &self.settings.allowed_gateways {
            if !allowed.contains(&m.meta.origin) {
                return None;
            }
        }
        m.verify(&m.root()).ok()?;
        Some((f.stream, m.meta.origin))
    }

    /// The origin this relay bound `stream` to, if any.
    pub fn stream_origin(&self, stream: u64) -> Option<PublicKey> {
        self.stream_origins.get(&stream).map(|k| PublicKey(*k))
    }

    /// Keeps a fragment a DPDK data core forwarded and handed over without copying: an mbuf
    /// chain whose first segment is the fragment's Photon header and whose second is the
    /// received payload buffer, shared by refcount with the forwarded copies. Evicting it (or
    /// dropping the control path) frees it. Returns whether it was stored.
    #[cfg(feature = "dpdk")]
    #[inline]
    pub fn record_fragment_mbuf(&mut self, m: photon_dpdk::Mbuf) -> bool {
        if let Some(key) = RepairCache::<Stored>::key_of_header(m.data()) {
            if key.kind == FragmentKind::Manifest && !self.stream_origins.contains(&key.stream) {
                // Once per stream until it binds: a copy out of the chain is cheap enough.
                self.learn_origin(&m.to_vec());
            }
        }
        self.cache.insert_mbuf(m)
    }

    /// Housekeeping: removes gateways silent for too long and forgets registration nonces
    /// whose window has passed.
    pub fn tick(&mut self, now_ms: u64) {
        self.origin_checks_left = ORIGIN_CHECKS_PER_TICK;
        let limit =
            u64::from(self.settings.keepalive_ms) * u64::from(self.settings.expiry_keepalives);
        let before = self.gateways.len();
        let by_identity = &mut self.by_identity;
        self.gateways.retain(|_, g| {
            let alive = now_ms.saturating_sub(g.last_seen_ms) <= limit;
            if !alive {
                by_identity.remove(&g.identity.0);
            }
            alive
        });
        let expired = before - self.gateways.len();
        if expired > 0 {
            self.counters.add(ControlCounter::Expired, expired as u64);
            self.rebuild_table();
        }
        while let Some((_, &until)) = self.replay.oldest() {
            if until >= now_ms {
                break;
            }
            if let Some(((identity, _), _)) = self.replay.pop_oldest() {
                if let Some(n) = self.replay_per_identity.get_mut(&identity) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.replay_per_identity.remove(&identity);
                    }
                }
            }
        }
    }

    /// Handles one control datagram (anything the data path does not fan out itself) that
    /// came from `src`; appends what to send to `out`.
    pub fn handle(&mut self, now_ms: u64, src: Source, datagram: &[u8], out: &mut Vec<Outgoing>) {
        self.counters.inc(ControlCounter::Received);
        let Ok(packet) = Packet::new_checked(datagram) else {
            self.counters.inc(ControlCounter::Malformed);
            return;
        };
        let Ok(msg_type) = packet.msg_type() else {
            self.counters.inc(ControlCounter::Malformed);
            return;
        };
        if msg_type == MessageType::Register {
            self.register(now_ms, src, &packet, out);
            return;
        }
        // Everything else must come from a peer with a session, under its hop key.
        let Some(slot) = self.table.slot_of(packet.sender()) else {
            self.counters.inc(ControlCounter::UnknownSender);
            return;
        };
        let Some(peer) = self.table.peer(slot) else {
            self.counters.inc(ControlCounter::UnknownSender);
            return;
        };
        let Some(keys) = peer.spec.keys.as_ref() else {
            self.counters.inc(ControlCounter::UnknownSender);
            return;
        };
        if !keys.recv.verify_packet(&packet) {
            self.counters.inc(ControlCounter::BadHopTag);
            return;
        }
        let from_kind = peer.spec.kind;
        let Ok(repr) = Repr::parse(&packet) else {
            self.counters.inc(ControlCounter::Malformed);
            return;
        };
        let sender = repr.sender;
        if let Some(g) = self.gateways.get_mut(&sender) {
            g.last_seen_ms = now_ms;
        }
        match repr.message {
            Message::Keepalive(ka) => self.keepalive(sender, src, ka, out),
            Message::Transaction(tx) => self.transaction(sender, slot, from_kind, &repr, tx, out),
            Message::Receipt(ref r) => {
                self.counters.inc(ControlCounter::Receipts);
                let fwd = Repr {
                    sender: self.local.node_id,
                    hops: repr.hops.saturating_add(1),
                    flags: repr.flags,
                    message: repr.message.clone(),
                };
                self.toward_origin(r.stream, &fwd, slot, from_kind, out);
            }
            Message::KeyRelease(ref kr) => {
                if self.key_releases.contains(&kr.stream) {
                    self.counters.inc(ControlCounter::KeyReleaseDuplicates);
                    return;
                }
                // Checked against the stream's origin before anything is marked (F4): a
                // release from anyone else can neither pass nor suppress the origin's.
                match self.stream_origins.get(&kr.stream) {
                    Some(origin) => {
                        if BlockKey::from_release(kr, &PublicKey(*origin)).is_err() {
                            self.counters.inc(ControlCounter::KeyReleaseBadSignature);
                            return;
                        }
                        self.key_releases.insert(kr.stream, ());
                    }
                    None => {
                        if self.unverified_releases.contains(&(kr.stream, kr.key)) {
                            self.counters.inc(ControlCounter::KeyReleaseDuplicates);
                            return;
                        }
                        self.unverified_releases.insert((kr.stream, kr.key), ());
                        self.counters.inc(ControlCounter::KeyReleaseUnverified);
                    }
                }
                self.counters.inc(ControlCounter::KeyReleases);
                self.pass_on(&repr, slot, from_kind, out);
            }
            Message::RepairRequest(ref req) => {
                self.counters.inc(ControlCounter::RepairRequests);
                let (stream, kind) = (req.stream, req.kind);
                let missing = req.missing.clone();
                let missed = self.serve_repair(slot, stream, kind, &missing, out);
                if !missed.is_empty() && from_kind.is_gateway() {
                    self.pass_on_repair(sender, stream, kind, missed, repr.hops, out);
                }
            }
            Message::Fragment(_) => {
                // The data path forwards fresh fragments itself; what reaches the control path
                // is a retransmission: the answer of a peer relay to a request passed on for
                // one of our gateways, or someone else's business.
                self.relay_retransmit(packet.datagram(), from_kind, out);
            }
            Message::TxRequest(ref req) => {
                self.counters.inc(ControlCounter::TxRequests);
                self.serve_tx_request(now_ms, &repr, req, slot, from_kind, out);
            }
            Message::ShortIdAssign(_) | Message::RegisterAck(_) | Message::Register(_) => {
                self.counters.inc(ControlCounter::Unsupported)
            }
        }
    }

    /// A transaction fragment (§2.2, §2.3; F2 in docs/protocol/8-threat-model.md). Only relays
    /// assign short IDs: a gateway's transaction gets the next ID of this relay's range (the
    /// same one for every fragment of one (origin, transfer)), whatever ID the gateway wrote,
    /// and is fanned out with it, back to the origin too. The one exception is a gateway's
    /// answer to a tx request this relay passed on: its ID goes on unchanged, but only to the
    /// links that asked for that ID, and it is not cached (the relay cannot check the binding,
    /// so it must not serve it to others). An ID from a peer relay (its own range) goes on as
    /// it came, by split horizon.
    fn transaction(
        &mut self,
        sender: u32,
        slot: usize,
        from_kind: PeerKind,
        repr: &Repr<'_>,
        mut tx: photon_protocol::wire::TransactionRepr<'_>,
        out: &mut Vec<Outgoing>,
    ) {
        self.counters.inc(ControlCounter::Transactions);
        let key = (sender, tx.transfer);
        let (short_id, transfer, route) = match self.txs.get(&key) {
            Some(&v) => v,
            None => {
                let (id, route) = match (tx.short_id, from_kind) {
                    (Some(id), PeerKind::Relay) => (Some(id), TxRoute::Passed),
                    (Some(id), PeerKind::Gateway { .. }) if self.tx_wanted.contains(&id) => {
                        (Some(id), TxRoute::Answer)
                    }
                    (supplied, _) => {
                        if supplied.is_some() {
                            self.counters.inc(ControlCounter::ShortIdFromGateway);
                        }
                        match self.short_ids.next_id() {
                            Ok(id) => {
                                self.counters.inc(ControlCounter::ShortIdsAssigned);
                                (Some(id.0), TxRoute::Assigned)
                            }
                            Err(_) => {
                                self.counters.inc(ControlCounter::ShortIdExhausted);
                                (None, TxRoute::Passed)
                            }
                        }
                    }
                };
                self.next_transfer = self.next_transfer.wrapping_add(1);
                let v = (id, self.next_transfer, route);
                self.txs.insert(key, v);
                v
            }
        };
        tx.short_id = short_id;
        tx.transfer = transfer;
        let fwd = Repr {
            sender: self.local.node_id,
            hops: repr.hops.saturating_add(1),
            flags: repr.flags,
            message: Message::Transaction(tx),
        };
        if route == TxRoute::Answer {
            let wanted = short_id
                .and_then(|id| self.tx_wanted.get(&id))
                .cloned()
                .unwrap_or_default();
            self.counters.inc(ControlCounter::TxAnswerRelayed);
            self.send_to_slots(&fwd, out, |to, peer| {
                to != slot && peer.spec.keys.is_some() && wanted.contains(&peer.spec.node_id)
            });
            return;
        }
        if let (Some(id), Message::Transaction(t)) = (short_id, &fwd.message) {
            if self.tx_cache.record(id, transfer, t) {
                self.counters.inc(ControlCounter::TxCached);
            }
        }
        // The origin gets its transaction back only when this relay just gave it an ID.
        let include_origin = route == TxRoute::Assigned;
        self.fan_out(&fwd, slot, from_kind, include_origin, out);
    }

    fn register<T: AsRef<[u8]>>(
        &mut self,
        now_ms: u64,
        src: Source,
        packet: &Packet<T>,
        out: &mut Vec<Outgoing>,
    ) {
        let Ok(reg) = RegisterRepr::parse(packet) else {
            self.counters.inc(ControlCounter::Malformed);
            return;
        };
        // The signature first (F11): a datagram that does not prove its identity gets no
        // answer, so spoofed registrations cost us one verification and reflect nothing.
        match identity::verify_register(&reg, now_ms, self.settings.register_window_ms) {
            Ok(_) => {}
            Err(IdentityError::Stale { .. }) => {
                self.counters.inc(ControlCounter::RegisterStale);
                self.refuse(now_ms, src, &reg, register_status::STALE, out);
                return;
            }
            Err(_) => {
                self.counters.inc(ControlCounter::RegisterBadSignature);
                return;
            }
        }
        if let Some(allowed) = &self.settings.allowed_gateways {
            if !allowed.contains(&reg.identity) {
                self.counters.inc(ControlCounter::RegisterUnknownIdentity);
                self.refuse(now_ms, src, &reg, register_status::UNKNOWN_IDENTITY, out);
                return;
            }
        }
        let nonce_key = (reg.identity, reg.nonce);
        if self.replay.contains(&nonce_key) {
            // A replayed capture (possibly from a spoofed source): no answer at all.
            self.counters.inc(ControlCounter::RegisterReplay);
            return;
        }
        let known = self.by_identity.get(&reg.identity).copied();
        let held = self
            .replay_per_identity
            .get(&reg.identity)
            .copied()
            .unwrap_or(0);
        if (known.is_none() && self.gateways.len() >= self.settings.max_gateways)
            || self.replay.len() >= self.replay.capacity()
            || held >= REPLAY_PER_IDENTITY
        {
            self.counters.inc(ControlCounter::RegisterBusy);
            self.refuse(now_ms, src, &reg, register_status::BUSY, out);
            return;
        }
        let Some(node) = known.or_else(|| self.allocate_node()) else {
            self.counters.inc(ControlCounter::RegisterBusy);
            self.refuse(now_ms, src, &reg, register_status::BUSY, out);
            return;
        };
        let Ok(eph) = EphemeralKey::generate(&*self.rng) else {
            self.counters.inc(ControlCounter::RegisterBusy);
            return;
        };
        let ack = identity::register_ack(
            &self.identity,
            &eph,
            &reg,
            register_status::ACCEPTED,
            node,
            now_ms,
            self.settings.keepalive_ms,
        );
        let ctx = identity::registration_context(&reg, &ack, self.local.node_id);
        let Ok(keys) = eph.agree(&reg.ephemeral, &ctx, Role::Responder) else {
            // The gateway's X25519 key is invalid: its signature was fine, so tell it.
            self.counters.inc(ControlCounter::Malformed);
            return;
        };
        self.replay.insert(
            nonce_key,
            reg.timestamp_ms
                .saturating_add(self.settings.register_window_ms),
        );
        *self.replay_per_identity.entry(reg.identity).or_insert(0) += 1;
        let repr = Repr::new(self.local.node_id, Message::RegisterAck(ack));
        let Some(datagram) = self.emit_signed(&repr, Some(&keys)) else {
            return;
        };
        self.counters.inc(ControlCounter::RegisterAccepted);
        self.by_identity.insert(reg.identity, node);
        self.gateways.insert(
            node,
            Gateway {
                identity: PublicKey(reg.identity),
                streams: integrity::stream_prefix(&reg.identity),
                addr: src.addr,
                mac: src.mac,
                port: src.port,
                keys,
                last_seen_ms: now_ms,
                last_keepalive_seq: 0,
            },
        );
        self.rebuild_table();
        self.push(src, datagram, out);
    }

    /// A signed refusal (node id 0, keepalive 0). The relay's ephemeral key is fresh and
    /// thrown away: no session is made.
    fn refuse(
        &mut self,
        now_ms: u64,
        src: Source,
        reg: &RegisterRepr,
        status: u8,
        out: &mut Vec<Outgoing>,
    ) {
        // At most MAX_REFUSALS_PER_SEC signed refusals a second (F11): each costs a key and a
        // signature, and a verified request may still be a replay of a stale capture.
        if now_ms / 1000 != self.refusal_second {
            self.refusal_second = now_ms / 1000;
            self.refusals_this_second = 0;
        }
        if self.refusals_this_second >= MAX_REFUSALS_PER_SEC {
            self.counters.inc(ControlCounter::RegisterRefusalSuppressed);
            return;
        }
        self.refusals_this_second += 1;
        let Ok(eph) = EphemeralKey::generate(&*self.rng) else {
            return;
        };
        let ack = identity::register_ack(&self.identity, &eph, reg, status, 0, now_ms, 0);
        let repr = Repr::new(self.local.node_id, Message::RegisterAck(ack));
        if let Some(d) = self.emit_signed(&repr, None) {
            self.push(src, d, out);
        }
    }

    fn allocate_node(&mut self) -> Option<u32> {
        // At most max_gateways + static peers + 1 ids are taken, so this ends quickly.
        let configured = self.static_peers.len() + self.pending_peers.len();
        for _ in 0..=(self.settings.max_gateways + configured + 1) {
            let id = self.next_node;
            self.next_node = self.next_node.wrapping_add(1).max(1);
            let taken = id == 0
                || id == self.local.node_id
                || self.gateways.contains_key(&id)
                || self.static_peers.iter().any(|p| p.node_id == id)
                || self.pending_peers.iter().any(|p| p.node_id == id);
            if !taken {
                return Some(id);
            }
        }
        None
    }

    fn keepalive(&mut self, sender: u32, src: Source, ka: KeepaliveRepr, out: &mut Vec<Outgoing>) {
        self.counters.inc(ControlCounter::Keepalives);
        if let Some(g) = self.gateways.get_mut(&sender) {
            // The hop tag authenticates the keepalive, its seq makes it fresh: a captured one
            // replayed (from any address) is dropped, so it cannot point the gateway's fan-out
            // elsewhere (F5).
            if ka.seq <= g.last_keepalive_seq {
                self.counters.inc(ControlCounter::KeepaliveStale);
                return;
            }
            g.last_keepalive_seq = ka.seq;
            if g.addr != src.addr || g.port != src.port {
                // NAT rebinding (or the gateway moved): follow it, authenticated by the tag.
                g.addr = src.addr;
                g.mac = src.mac;
                g.port = src.port;
                self.counters.inc(ControlCounter::NatRebinds);
                self.rebuild_table();
            }
        }
        self.keepalive_seq = self.keepalive_seq.wrapping_add(1);
        let repr = Repr::new(
            self.local.node_id,
            Message::Keepalive(KeepaliveRepr {
                seq: self.keepalive_seq,
                echo: ka.seq,
            }),
        );
        let Some(slot) = self.table.slot_of(sender) else {
            return;
        };
        self.send_to_slot(&repr, slot, out);
    }

    /// Answers what the cache holds; returns the indices it lacks.
    fn serve_repair(
        &mut self,
        slot: usize,
        stream: u64,
        kind: FragmentKind,
        missing: &[u16],
        out: &mut Vec<Outgoing>,
    ) -> Vec<u16> {
        let mut missed = Vec::new();
        // A handle of its own: the loop below borrows the peer's key while queueing copies.
        let table = self.table.clone();
        let Some(peer) = table.peer(slot) else {
            return missed;
        };
        let Some(keys) = peer.spec.keys.as_ref() else {
            return missed;
        };
        let to = peer_source(&peer.spec);
        for &index in missing {
            let key = CacheKey {
                stream,
                kind,
                index,
            };
            let Some(cached) = self.cache.get(&key) else {
                self.counters.inc(ControlCounter::RepairMissed);
                missed.push(index);
                continue;
            };
            let mut d = Vec::with_capacity(cached.byte_len());
            cached.copy_to(&mut d);
            let Ok(mut p) = Packet::new_checked(&mut d[..]) else {
                continue;
            };
            p.set_flags(p.flags() | flags::RETRANSMIT);
            p.set_sender(self.local.node_id);
            p.set_hops(p.hops().saturating_add(1));
            let _ = keys.send.sign_packet(&mut p);
            self.counters.inc(ControlCounter::RepairServed);
            self.push(to, d, out);
        }
        missed
    }

    /// Asks for the fragments of `stream` gateway `gateway` asked for and the cache lacks,
    /// toward the stream's origin: the origin itself when it is registered here (the gateway
    /// whose prefix the stream carries, §4.1.6), else the peer relays; and remembers who asked.
    fn pass_on_repair(
        &mut self,
        gateway: u32,
        stream: u64,
        kind: FragmentKind,
        missed: Vec<u16>,
        hops: u8,
        out: &mut Vec<Outgoing>,
    ) {
        let origin = self.table.origin_of(stream).filter(|&slot| {
            self.table
                .peer(slot)
                .is_some_and(|p| p.spec.keys.is_some() && p.spec.node_id != gateway)
        });
        let has_relay = || {
            self.table
                .peers()
                .iter()
                .any(|p| p.spec.kind == PeerKind::Relay && p.spec.keys.is_some())
        };
        if origin.is_none() && !has_relay() {
            return;
        }
        let mut waiting = self
            .repair_waiting
            .get(&stream)
            .cloned()
            .unwrap_or_default();
        if !waiting.contains(&gateway) && waiting.len() < REPAIR_WAITERS {
            waiting.push(gateway);
        }
        self.repair_waiting.insert(stream, waiting);
        self.counters
            .add(ControlCounter::RepairPassedOn, missed.len() as u64);
        let fwd = Repr {
            sender: self.local.node_id,
            hops: hops.saturating_add(1),
            flags: 0,
            message: Message::RepairRequest(RepairRequestRepr::new(stream, kind, missed)),
        };
        match origin {
            Some(slot) => {
                self.counters.inc(ControlCounter::ToOrigin);
                self.send_to_slot(&fwd, slot, out);
            }
            None => self.send_to_slots(&fwd, out, |_, peer| {
                peer.spec.kind == PeerKind::Relay && peer.spec.keys.is_some()
            }),
        }
    }

    /// A RETRANSMIT fragment that reached the control path: from a peer relay, for a stream
    /// our gateways asked repairs of, it is cached and passed on to them (sender = this relay,
    /// hops + 1, their hop keys); anything else is counted and dropped.
    fn relay_retransmit(&mut self, datagram: &[u8], from_kind: PeerKind, out: &mut Vec<Outgoing>) {
        let Ok(p) = Packet::new_checked(datagram) else {
            return;
        };
        // From a peer relay, or from the stream's origin answering a request passed to it.
        let waiting = match self.repair_waiting.get(&p.stream()) {
            Some(w) if from_kind.may_send(p.stream()) => w.clone(),
            _ => {
                self.counters.inc(ControlCounter::UnsolicitedRetransmit);
                return;
            }
        };
        self.cache.insert_datagram(datagram);
        for node in waiting {
            let Some(slot) = self.table.slot_of(node) else {
                continue;
            };
            let mut d = datagram.to_vec();
            let Ok(mut q) = Packet::new_checked(&mut d[..]) else {
                continue;
            };
            q.set_sender(self.local.node_id);
            q.set_hops(q.hops().saturating_add(1));
            self.counters.inc(ControlCounter::RetransmitRelayed);
            self.send_datagram_to_slot(d, slot, out);
        }
    }

    /// A tx request (§2.4): every requested transaction the cache holds whole is sent back to
    /// the requester (one transaction message per fragment, with its short ID, under the
    /// requester's hop key); the IDs it does not hold are passed on in one request like a
    /// receipt (to everyone but the sender), where the block's origin answers.
    ///
    /// F7: each ID is answered once to the asker: named twice in one request, or answered to
    /// that node within `tx_answer_repeat_ms`, it is not answered or passed on again
    /// (`tx_request_refused`). The rest goes toward the block's origin when this relay knows
    /// it (the manifest it forwarded): to that gateway alone if it is registered here, else to
    /// the peer relays; to everyone only when the origin is unknown.
    fn serve_tx_request(
        &mut self,
        now_ms: u64,
        repr: &Repr<'_>,
        req: &TxRequestRepr,
        slot: usize,
        from_kind: PeerKind,
        out: &mut Vec<Outgoing>,
    ) {
        let mut missing = Vec::new();
        let asker = repr.sender;
        for (i, &id) in req.short_ids.iter().enumerate() {
            // A peer relay's request gathers many gateways' (split horizon): only a gateway's
            // own repeats are refused.
            let recent = from_kind.is_gateway()
                && self
                    .tx_answered
                    .get(&(asker, id))
                    .is_some_and(|&t| now_ms.saturating_sub(t) < self.settings.tx_answer_repeat_ms);
            if recent || req.short_ids[..i].contains(&id) {
                self.counters.inc(ControlCounter::TxRequestRefused);
                continue;
            }
            self.tx_answered.remove(&(asker, id));
            self.tx_answered.insert((asker, id), now_ms);
            let Some(tx) = self.tx_cache.get_complete(id) else {
                missing.push(id);
                continue;
            };
            // The cache stays borrowed while its fragments are emitted: emit into fresh
            // datagrams (the control path is not the hot path), then sign and send them.
            let node = self.local.node_id;
            let answers: Vec<Vec<u8>> = tx
                .reprs(id)
                .filter_map(|t| {
                    let r = Repr::new(node, Message::Transaction(t));
                    let mut buf = vec![0u8; MAX_DATAGRAM];
                    let n = r.emit(&mut buf).ok()?;
                    buf.truncate(n);
                    Some(buf)
                })
                .collect();
            self.counters.inc(ControlCounter::TxRequestServed);
            for d in answers {
                self.send_datagram_to_slot(d, slot, out);
            }
        }
        if missing.is_empty() {
            return;
        }
        self.counters
            .add(ControlCounter::TxRequestPassedOn, missing.len() as u64);
        // Who asked: the answers under these IDs go back to them only.
        let asker = repr.sender;
        for &id in &missing {
            match self.tx_wanted.get_mut(&id) {
                Some(w) => {
                    if !w.contains(&asker) && w.len() < TX_WANTERS {
                        w.push(asker);
                    }
                }
                None => {
                    self.tx_wanted.insert(id, vec![asker]);
                }
            }
        }
        let fwd = Repr {
            sender: self.local.node_id,
            hops: repr.hops.saturating_add(1),
            flags: repr.flags,
            message: Message::TxRequest(TxRequestRepr {
                stream: req.stream,
                short_ids: missing,
            }),
        };
        self.toward_origin(req.stream, &fwd, slot, from_kind, out);
    }

    /// Sends what only the origin of `stream` needs (a receipt, the IDs of a tx request) toward
    /// it when this relay bound the stream to an origin: to that gateway alone if it is
    /// registered here, else to the peer relays (a peer relay's message goes no further, split
    /// horizon); to everyone but the sender only when the origin is unknown. Counted
    /// `to_origin`: nothing a member sends for another's stream is multiplied by the fan-out.
    fn toward_origin(
        &mut self,
        stream: u64,
        fwd: &Repr<'_>,
        slot: usize,
        from_kind: PeerKind,
        out: &mut Vec<Outgoing>,
    ) {
        let Some(origin) = self.stream_origins.get(&stream).copied() else {
            return self.fan_out(fwd, slot, from_kind, false, out);
        };
        self.counters.inc(ControlCounter::ToOrigin);
        match self.by_identity.get(&origin).copied() {
            Some(node) => self.send_to_slots(fwd, out, |to, peer| {
                to != slot && peer.spec.node_id == node && peer.spec.keys.is_some()
            }),
            None if from_kind.is_gateway() => self.send_to_slots(fwd, out, |to, peer| {
                to != slot
                    && peer.spec.kind == PeerKind::Relay
                    && peer.fans_out
                    && peer.spec.keys.is_some()
            }),
            None => {}
        }
    }

    /// Signs an emitted datagram for the peer in `slot` and queues it.
    fn send_datagram_to_slot(&mut self, mut d: Vec<u8>, slot: usize, out: &mut Vec<Outgoing>) {
        let Some(peer) = self.table.peer(slot) else {
            return;
        };
        let Some(keys) = peer.spec.keys.as_ref() else {
            return;
        };
        if self
            .pending_peers
            .iter()
            .any(|p| p.node_id == peer.spec.node_id)
        {
            self.counters.inc(ControlCounter::UnresolvedNextHop);
            return;
        }
        if keys.send.sign_header(&mut d).is_err() {
            return;
        }
        let to = peer_source(&peer.spec);
        self.push(to, d, out);
    }

    /// Receipts and key releases: to everyone but the sender (split horizon for relays).
    fn pass_on(
        &mut self,
        repr: &Repr<'_>,
        from: usize,
        from_kind: PeerKind,
        out: &mut Vec<Outgoing>,
    ) {
        let fwd = Repr {
            sender: self.local.node_id,
            hops: repr.hops.saturating_add(1),
            flags: repr.flags,
            message: repr.message.clone(),
        };
        self.fan_out(&fwd, from, from_kind, false, out);
    }

    fn fan_out(
        &mut self,
        repr: &Repr<'_>,
        from: usize,
        from_kind: PeerKind,
        include_origin: bool,
        out: &mut Vec<Outgoing>,
    ) {
        self.send_to_slots(repr, out, |slot, peer| {
            peer.fans_out
                && (slot != from || include_origin)
                && !(from_kind == PeerKind::Relay && peer.spec.kind == PeerKind::Relay)
                && peer.spec.keys.is_some()
        });
    }

    /// Emits `repr` once (nothing once it has travelled `max_hops` hops) and sends a copy to
    /// every peer slot `to` picks; `send_datagram_to_slot` signs each with that peer's key.
    fn send_to_slots(
        &mut self,
        repr: &Repr<'_>,
        out: &mut Vec<Outgoing>,
        to: impl Fn(usize, &Peer) -> bool,
    ) {
        if repr.hops >= self.local.max_hops {
            return;
        }
        let Ok(n) = repr.emit(&mut self.scratch) else {
            self.counters.inc(ControlCounter::Malformed);
            return;
        };
        let table = self.table.clone();
        for (slot, peer) in table.peers().iter().enumerate() {
            if to(slot, peer) {
                let d = self.scratch[..n].to_vec();
                self.send_datagram_to_slot(d, slot, out);
            }
        }
    }

    fn send_to_slot(&mut self, repr: &Repr<'_>, slot: usize, out: &mut Vec<Outgoing>) {
        let Some(peer) = self.table.peer(slot) else {
            return;
        };
        let to = peer_source(&peer.spec);
        let keys = peer.spec.keys.clone();
        if let Some(d) = self.emit_signed(repr, keys.as_ref()) {
            self.push(to, d, out);
        }
    }

    fn emit_signed(&mut self, repr: &Repr<'_>, keys: Option<&HopKeys>) -> Option<Vec<u8>> {
        let n = repr.emit(&mut self.scratch).ok()?;
        let mut d = self.scratch[..n].to_vec();
        if let Some(k) = keys {
            k.send.sign_header(&mut d).ok()?;
        }
        Some(d)
    }

    /// Queues `datagram` to `src` (a source seen, or a peer as [`peer_source`] names it).
    fn push(&mut self, src: Source, datagram: Vec<u8>, out: &mut Vec<Outgoing>) {
        self.counters.inc(ControlCounter::CopiesSent);
        out.push(Outgoing {
            to: src.addr,
            mac: src.mac,
            port: src.port,
            datagram,
        });
    }

    fn rebuild_table(&mut self) {
        let mut specs = self.static_peers.clone();
        // Peer relays whose next hop is not resolved yet are in the table to be received from
        // (their fragments are admitted and fanned out to everyone else), not sent to: not
        // subscribed, and the control path sends them nothing (`unresolved_next_hop`).
        specs.extend(self.pending_peers.iter().map(|p| PeerSpec {
            subscribed: false,
            ..p.clone()
        }));
        specs.extend(self.gateways.iter().map(|(&node_id, g)| PeerSpec {
            node_id,
            kind: PeerKind::Gateway { streams: g.streams },
            addr: g.addr,
            next_hop_mac: g.mac,
            port: g.port,
            keys: Some(g.keys.clone()),
            subscribed: true,
        }));
        match Table::new(self.local.clone(), specs) {
            Ok(t) => {
                self.table = Arc::new(t);
                self.table_dirty = true;
                self.counters.inc(ControlCounter::TablesBuilt);
            }
            Err(_) => self.counters.inc(ControlCounter::TableErrors),
        }
    }
}

/// Streams whose passed-on repair requests are remembered (oldest forgotten first).
const REPAIR_WAITING_STREAMS: usize = 4096;
/// Registration nonces one identity may hold in the replay cache (a gateway registers every
/// few seconds at most: 64 within the 30 s window is far beyond an honest one).
const REPLAY_PER_IDENTITY: u32 = 64;
/// Manifest signature checks (stream origin binding) per tick at most (ticks are 20-100 ms:
/// thousands of new streams a second, far above any block rate).
const ORIGIN_CHECKS_PER_TICK: u32 = 256;
/// Signed registration refusals sent per second at most.
const MAX_REFUSALS_PER_SEC: u32 = 64;
/// Short IDs whose tx request was passed on, remembered at most, and askers kept per ID.
const TX_WANTED_IDS: usize = 16_384;
const TX_WANTERS: usize = 16;

/// How a transaction goes on from this relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxRoute {
    /// This relay gave it an ID from its range: to everyone, the origin included.
    Assigned,
    /// With a peer relay's ID, or without an ID (range exhausted): to everyone but the sender.
    Passed,
    /// A gateway's answer to a passed-on tx request: only to the links that asked.
    Answer,
}
/// Gateways remembered per such stream.
const REPAIR_WAITERS: usize = 16;

/// Milliseconds since the Unix epoch from the system clock (what drivers pass as `now_ms`;
/// registrations carry Unix time, §2.8).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
