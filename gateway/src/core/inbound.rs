//! Blocks in, as one owned state machine ([`Inbound`]): fragments verified before FEC
//! (assembler, §4.1.4, §7.2) → decoded → receipt (§2.5) → key release (§2.6) → open (§5) →
//! decompress from the tx store, asking for missing transactions by short ID (§2.4, §6.3).
//!
//! Contract: the gateway feeds it block fragments (not of its own streams), key releases and
//! arrived transactions, and calls [`Inbound::handle_timeout`]; each call gets an [`InCtx`]
//! (links to send on, our identity, the tx store, the stage log). After each call it drains
//! [`Inbound::poll_transmit`] (hop-signed control datagrams), [`Inbound::poll_event`] and
//! [`Inbound::poll_block`] (decoded blocks, which the gateway hands to the node).
//!
//! The sender's choices are read from the payload, not from our config: an unsealed payload
//! (§6.9) is decoded at once, with no key wait and no `key_in` stage record; the encoding is
//! the payload's format byte (§6.8). An unknown format or a block that does not check out is a
//! typed error counted in `decompress_failed` and a `BlockFailed` event.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bitcoin::Block;
use photon_protocol::assembler::{Assembler, AssemblerConfig, AssemblerStats, Event};
use photon_protocol::chain::Bitcoin;
use photon_protocol::compress::{decompress, envelope, BlockEncoding, Decompressed, PendingBlock};
use photon_protocol::fifo::FifoMap;
use photon_protocol::identity::{Identity, PublicKey};
use photon_protocol::seal::BlockKey;
use photon_protocol::shortid::{ShortId, TxStore};
use photon_protocol::wire::{
    KeyReleaseRepr, Message, Packet, ReceiptRepr, RepairRequestRepr, TxRequestRepr,
    MAX_TX_REQUEST_IDS,
};

use super::links::Links;
use super::stages::StageLog;
use super::stats::InStats;
use super::{GatewayEvent, InTimings, LinkId, LinkKind, Stage};

/// Most inbound streams tracked (keys and sealed blocks waiting, pending transactions).
const MAX_IN_STREAMS: usize = 256;
/// Streams whose key release came before their origin was known, kept apart (at most), and
/// releases kept per stream.
const EARLY_RELEASE_STREAMS: usize = 1024;
const EARLY_RELEASES_PER_STREAM: usize = 4;

/// What an inbound call may use of the rest of the gateway.
pub(super) struct InCtx<'a> {
    pub(super) links: &'a Links,
    /// Signs our receipts (§2.5).
    pub(super) identity: &'a Identity,
    pub(super) store: &'a TxStore,
    pub(super) stages: &'a mut StageLog,
}

/// A block decoded from the network, for the gateway to hand to the node.
pub(super) struct InboundBlock {
    pub(super) stream: u64,
    pub(super) block: Block,
    pub(super) via: LinkKind,
    /// The sender's encoding and whether it sealed the block (read from the payload).
    pub(super) encoding: BlockEncoding,
    pub(super) sealed: bool,
    pub(super) tx_requests: u32,
    pub(super) compressed_bytes: usize,
    pub(super) timings: InTimings,
    /// When the block was decoded (the caller's `now` or later, see [`Inbound::poll_block`]).
    pub(super) at: Instant,
    /// The origin the stream's manifest was signed by.
    pub(super) origin: Option<PublicKey>,
}

/// The inbound streams and the assembler that verifies and decodes their fragments.
pub(super) struct Inbound {
    asm: Assembler,
    streams: HashMap<u64, InStream>,
    /// Key releases whose stream or origin is not known yet, checked once the origin binds.
    early_releases: FifoMap<u64, Vec<KeyReleaseRepr>>,
    /// Creation order, to forget the oldest stream first.
    order: VecDeque<u64>,
    tx_request_retry: Duration,
    tx_request_rounds: u32,
    transmits: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<GatewayEvent>,
    blocks: VecDeque<InboundBlock>,
    stats: InStats,
}

/// One inbound stream: where it came from, the origin the assembler bound, and its state.
pub(super) struct InStream {
    first_link: LinkId,
    first_at: Instant,
    /// Bound by the assembler when the first manifest fragment verified (§4.1.4).
    origin: Option<PublicKey>,
    state: InState,
}

/// Where an inbound stream is. Each state holds only what it needs, so a stream cannot be,
/// say, waiting for transactions and still hold its sealed bytes.
enum InState {
    /// Fragments go to the assembler. A key may come before the block decodes.
    Assembling { key: EarlyKey },
    /// Decoded and sealed; the origin withholds the key until receipts or a timeout (§2.6).
    WaitingForKey { sealed: Vec<u8>, ready_at: Instant },
    /// Opened; decompression waits for transactions asked for by short ID (§2.4).
    WaitingForTxs {
        pending: PendingBlock,
        opened: Opened,
        tx_requests: u32,
        next_retry: Instant,
    },
    /// Handed to the node (or found a duplicate of a block it has): late input is ignored.
    Delivered,
    /// Given up, reported with `BlockFailed`: late input is ignored.
    Failed,
}

/// A key that came while the stream was still assembling (checked against its origin).
enum EarlyKey {
    None,
    Verified { key: BlockKey, at: Instant },
}

/// What opening the payload found, for the delivery's timings and event.
struct Opened {
    ready_at: Instant,
    /// When the key came; `None` for an unsealed payload (§6.9).
    key_at: Option<Instant>,
    open_time: Duration,
    encoding: BlockEncoding,
    compressed_len: usize,
    decompress_started: Instant,
}

impl InStream {
    fn new(link: LinkId, now: Instant) -> Self {
        InStream {
            first_link: link,
            first_at: now,
            origin: None,
            state: InState::Assembling {
                key: EarlyKey::None,
            },
        }
    }

    /// Decoded but still without its key.
    pub(super) fn waiting_for_key(&self) -> bool {
        matches!(self.state, InState::WaitingForKey { .. })
    }

    /// When the transactions it lacks are asked for again.
    pub(super) fn next_retry(&self) -> Option<Instant> {
        match self.state {
            InState::WaitingForTxs { next_retry, .. } => Some(next_retry),
            _ => None,
        }
    }

    /// Whether a key release can still be used: none verified yet, block not opened.
    fn wants_key(&self) -> bool {
        match &self.state {
            InState::Assembling { key } => !matches!(key, EarlyKey::Verified { .. }),
            InState::WaitingForKey { .. } => true,
            _ => false,
        }
    }
}

impl Inbound {
    pub(super) fn new(
        assembler: AssemblerConfig,
        tx_request_retry: Duration,
        tx_request_rounds: u32,
    ) -> Self {
        Inbound {
            asm: Assembler::new(assembler),
            streams: HashMap::new(),
            early_releases: FifoMap::new(EARLY_RELEASE_STREAMS),
            order: VecDeque::new(),
            tx_request_retry,
            tx_request_rounds,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            blocks: VecDeque::new(),
            stats: InStats::default(),
        }
    }

    /// The origins whose streams bind from now on (a newer roster).
    pub(super) fn set_trusted_origins(&mut self, keys: impl IntoIterator<Item = [u8; 32]>) {
        self.asm.set_trusted_origins(keys);
    }

    pub(super) fn stats(&self) -> &InStats {
        &self.stats
    }

    pub(super) fn assembler_stats(&self) -> &AssemblerStats {
        self.asm.stats()
    }

    /// Streams decoded but still without their key (the key is withheld).
    pub(super) fn waiting_for_key(&self) -> usize {
        self.streams
            .values()
            .filter(|s| s.waiting_for_key())
            .count()
    }

    /// Control datagrams (receipts, repair and tx requests), hop-signed, in order.
    pub(super) fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmits.pop_front()
    }

    pub(super) fn poll_event(&mut self) -> Option<GatewayEvent> {
        self.events.pop_front()
    }

    /// The next decoded block. Not yet checked against the blocks the node has: the gateway
    /// drops duplicates.
    pub(super) fn poll_block(&mut self) -> Option<InboundBlock> {
        self.blocks.pop_front()
    }

    /// When [`Inbound::handle_timeout`] has work: assembler repair requests and expiry, or a
    /// retry of a tx request.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.streams
            .values()
            .filter_map(InStream::next_retry)
            .chain(self.asm.poll_timeout())
            .min()
    }

    pub(super) fn handle_timeout(&mut self, now: Instant, cx: &mut InCtx<'_>) {
        if self.asm.poll_timeout().is_some_and(|t| t <= now) {
            self.asm.handle_timeout(now);
            self.drain_assembler(now, cx);
        }
        let due: Vec<u64> = self
            .streams
            .iter()
            .filter(|(_, s)| s.next_retry().is_some_and(|t| now >= t))
            .map(|(&id, _)| id)
            .collect();
        for stream in due {
            self.request_missing(now, stream, cx);
        }
    }

    /// `message` to `link`, signed with its hop key; `false` when the link has no session.
    fn send(&mut self, links: &Links, link: LinkId, message: Message<'_>) -> bool {
        let signed = links.sign(link, message, 0);
        signed.map(|d| self.transmits.push_back(d)).is_some()
    }

    fn in_stream(&mut self, stream: u64, link: LinkId, now: Instant) -> &mut InStream {
        if !self.streams.contains_key(&stream) {
            while self.order.len() >= MAX_IN_STREAMS {
                if let Some(old) = self.order.pop_front() {
                    self.streams.remove(&old);
                }
            }
            self.order.push_back(stream);
        }
        self.streams
            .entry(stream)
            .or_insert_with(|| InStream::new(link, now))
    }

    pub(super) fn handle_fragment<T: AsRef<[u8]>>(
        &mut self,
        now: Instant,
        link: LinkId,
        packet: &Packet<T>,
        cx: &mut InCtx<'_>,
    ) {
        let stream = packet.stream();
        if self.asm.handle_datagram(now, packet.datagram()).is_ok()
            && !self.streams.contains_key(&stream)
        {
            cx.stages
                .record(now, Stage::FirstFragmentIn, Some(stream), None, None);
            self.in_stream(stream, link, now);
        }
        self.drain_assembler(now, cx);
    }

    fn drain_assembler(&mut self, now: Instant, cx: &mut InCtx<'_>) {
        while let Some(ev) = self.asm.poll_event() {
            match ev {
                Event::OriginBound { stream, origin } => {
                    self.origin_bound(now, stream, PublicKey(origin), cx);
                }
                Event::SendReceipt {
                    stream,
                    manifest_hash,
                } => self.send_receipt(now, stream, manifest_hash, cx),
                Event::SendRepairRequest {
                    stream,
                    kind,
                    missing,
                } => {
                    let Some(link) = self.streams.get(&stream).map(|s| s.first_link) else {
                        continue;
                    };
                    // A request names at most MAX_REPAIR_INDICES indices in list form; the
                    // bitmap form fits more, but be safe and chunk.
                    for chunk in missing.chunks(512) {
                        let r = RepairRequestRepr::new(stream, kind, chunk.to_vec());
                        if self.send(cx.links, link, Message::RepairRequest(r)) {
                            self.stats.repair_requests_sent += 1;
                        }
                    }
                }
                Event::BlockReady { stream, bytes } => {
                    cx.stages
                        .record(now, Stage::LastFragmentIn, Some(stream), None, None);
                    self.block_ready(now, stream, bytes, cx);
                }
                Event::ShardAccepted { .. } | Event::ShardRejected { .. } => {}
            }
        }
    }

    /// The assembler verified the stream's manifest under `origin`: a key that came early can
    /// be checked now.
    fn origin_bound(&mut self, now: Instant, stream: u64, origin: PublicKey, cx: &mut InCtx<'_>) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        if s.origin.is_some() {
            return;
        }
        s.origin = Some(origin);
        // Releases that came before the origin was known: each checked now, the bad ones
        // counted (a bogus release never displaces the origin's, F4).
        if let Some(held) = self.early_releases.remove(&stream) {
            for release in held {
                self.accept_key(now, &release, cx);
            }
        }
    }

    /// The block decoded: open it at once if it is unsealed or its key is here, else wait.
    fn block_ready(&mut self, now: Instant, stream: u64, bytes: Vec<u8>, cx: &mut InCtx<'_>) {
        let s = self.in_stream(stream, 0, now);
        let InState::Assembling { key } = &mut s.state else {
            return;
        };
        let key = std::mem::replace(key, EarlyKey::None);
        if envelope::unwrap_plain(&bytes).is_some() {
            return self.open(now, stream, bytes, now, None, cx);
        }
        match key {
            EarlyKey::Verified { key, at } => {
                self.open(now, stream, bytes, now, Some((key, at)), cx)
            }
            EarlyKey::None => {
                s.state = InState::WaitingForKey {
                    sealed: bytes,
                    ready_at: now,
                }
            }
        }
    }

    /// The receipt goes to the origin directly when it is one of our peers (so it knows which
    /// peer holds the block), else over the link the stream came in on.
    fn send_receipt(
        &mut self,
        now: Instant,
        stream: u64,
        manifest_hash: [u8; 32],
        cx: &mut InCtx<'_>,
    ) {
        let (first_link, origin) = match self.streams.get(&stream) {
            Some(s) => (s.first_link, s.origin),
            None => return,
        };
        let link = origin
            .and_then(|o| cx.links.peer_link_of(&o))
            .unwrap_or(first_link);
        // Signed (§2.5): the origin counts each receiver once, even through relays.
        let r = ReceiptRepr::sign(stream, manifest_hash, cx.identity);
        if self.send(cx.links, link, Message::Receipt(r)) {
            self.stats.receipts_sent += 1;
            cx.stages
                .record(now, Stage::ReceiptSent, Some(stream), None, None);
        }
        let _ = now;
    }

    pub(super) fn handle_key_release(
        &mut self,
        now: Instant,
        link: LinkId,
        k: &KeyReleaseRepr,
        cx: &mut InCtx<'_>,
    ) {
        self.stats.key_releases_received += 1;
        let _ = link;
        let origin_known = match self.streams.get(&k.stream) {
            Some(s) if !s.wants_key() => return,
            Some(s) => s.origin.is_some(),
            None => false,
        };
        if origin_known {
            return self.accept_key(now, k, cx);
        }
        // Unknown stream or origin not bound yet (key before the manifest): held apart from
        // the inbound streams, so releases for made-up streams never evict a stream waiting
        // for its key (F8), a few per stream so a bogus one cannot displace the origin's (F4).
        self.stats.key_releases_held += 1;
        match self.early_releases.get_mut(&k.stream) {
            Some(held) => {
                if held.len() < EARLY_RELEASES_PER_STREAM && !held.contains(k) {
                    held.push(*k);
                } else {
                    self.stats.key_releases_dropped += 1;
                }
            }
            None => {
                if self.early_releases.len() >= self.early_releases.capacity() {
                    self.stats.key_releases_dropped += 1;
                }
                self.early_releases.insert(k.stream, vec![*k]);
            }
        }
    }

    fn accept_key(&mut self, now: Instant, k: &KeyReleaseRepr, cx: &mut InCtx<'_>) {
        let stream = k.stream;
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        let Some(origin) = s.origin else { return };
        let key = match BlockKey::from_release(k, &origin) {
            Ok(key) => key,
            Err(_) => {
                self.stats.key_releases_bad += 1;
                return;
            }
        };
        match std::mem::replace(&mut s.state, InState::Failed) {
            InState::Assembling { .. } => {
                s.state = InState::Assembling {
                    key: EarlyKey::Verified { key, at: now },
                };
                cx.stages
                    .record(now, Stage::KeyIn, Some(stream), None, None);
            }
            InState::WaitingForKey { sealed, ready_at } => {
                cx.stages
                    .record(now, Stage::KeyIn, Some(stream), None, None);
                self.open(now, stream, sealed, ready_at, Some((key, now)), cx);
            }
            other => s.state = other,
        }
    }

    /// Opens (or unwraps, §6.9) a decoded payload and decompresses it: delivered, waiting for
    /// transactions, or failed. `key` is `None` only for an unsealed payload.
    fn open(
        &mut self,
        now: Instant,
        stream: u64,
        payload: Vec<u8>,
        ready_at: Instant,
        key: Option<(BlockKey, Instant)>,
        cx: &mut InCtx<'_>,
    ) {
        let t0 = Instant::now();
        let opened_bytes;
        let (plain, key_at, open_time): (&[u8], _, _) =
            if let Some(p) = envelope::unwrap_plain(&payload) {
                self.stats.blocks_in_unsealed += 1;
                (p, None, Duration::ZERO)
            } else {
                let Some((key, key_at)) = key else {
                    // Sealed and no key: not ours to open yet.
                    if let Some(s) = self.streams.get_mut(&stream) {
                        s.state = InState::WaitingForKey {
                            sealed: payload,
                            ready_at,
                        };
                    }
                    return;
                };
                match key.open(stream, &payload) {
                    Ok(p) => {
                        opened_bytes = p;
                        (&opened_bytes[..], Some(key_at), t0.elapsed())
                    }
                    Err(e) => {
                        self.stats.open_failed += 1;
                        self.fail_stream(stream, format!("open: {e}"));
                        return;
                    }
                }
            };
        let opened = Opened {
            ready_at,
            key_at,
            open_time,
            encoding: plain
                .first()
                .copied()
                .and_then(BlockEncoding::from_format_byte)
                .unwrap_or(BlockEncoding::Compact),
            compressed_len: plain.len(),
            decompress_started: now,
        };
        match decompress::<Bitcoin>(plain, cx.store) {
            Ok(Decompressed::Complete(block)) => self.deliver(now, stream, &opened, 0, block, cx),
            Ok(Decompressed::Missing(pending)) => {
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.state = InState::WaitingForTxs {
                        pending,
                        opened,
                        tx_requests: 0,
                        next_retry: now,
                    };
                    self.request_missing(now, stream, cx);
                }
            }
            Err(e) => {
                self.stats.decompress_failed += 1;
                self.fail_stream(stream, format!("decompress: {e}"));
            }
        }
    }

    /// Gives up on an incoming stream: late fragments and keys are ignored, and the gateway
    /// reports why.
    fn fail_stream(&mut self, stream: u64, reason: String) {
        if let Some(s) = self.streams.get_mut(&stream) {
            s.state = InState::Failed;
        }
        self.events
            .push_back(GatewayEvent::BlockFailed { stream, reason });
    }

    /// Ask for the transactions a block lacks: first over the link the block came in on and
    /// over the direct link to its origin when that is a peer; each retry over every live link.
    /// (The origin answers requests for its own streams whatever link they come over; a peer
    /// answers any request over a direct link; see docs/internals/gateway-core.md.)
    fn request_missing(&mut self, now: Instant, stream: u64, cx: &mut InCtx<'_>) {
        let retry = self.tx_request_retry;
        let rounds = self.tx_request_rounds;
        let live = cx.links.live_all();
        let Some(s) = self.streams.get(&stream) else {
            return;
        };
        let InState::WaitingForTxs {
            pending,
            tx_requests,
            ..
        } = &s.state
        else {
            return;
        };
        if *tx_requests >= rounds {
            self.stats.blocks_given_up += 1;
            self.fail_stream(
                stream,
                format!("transactions still missing after {rounds} requests"),
            );
            return;
        }
        let missing: Vec<u32> = pending.missing().into_iter().map(|id| id.0).collect();
        let mut targets = if *tx_requests == 0 {
            let mut t = vec![s.first_link];
            if let Some(p) = s.origin.and_then(|o| cx.links.peer_link_of(&o)) {
                t.push(p);
            }
            t
        } else {
            live
        };
        targets.sort_unstable();
        targets.dedup();
        if let Some(InStream {
            state:
                InState::WaitingForTxs {
                    tx_requests,
                    next_retry,
                    ..
                },
            ..
        }) = self.streams.get_mut(&stream)
        {
            *tx_requests += 1;
            *next_retry = now + retry;
        }
        for link in targets {
            for chunk in missing.chunks(MAX_TX_REQUEST_IDS) {
                let r = TxRequestRepr {
                    stream,
                    short_ids: chunk.to_vec(),
                };
                if self.send(cx.links, link, Message::TxRequest(r)) {
                    self.stats.tx_requests_sent += 1;
                    self.stats.txs_requested += chunk.len() as u64;
                }
            }
        }
    }

    /// A transaction with `id` arrived: fill the blocks waiting for it.
    pub(super) fn tx_arrived(&mut self, now: Instant, id: ShortId, tx: &[u8], cx: &mut InCtx<'_>) {
        let waiting: Vec<u64> = self
            .streams
            .iter()
            .filter(|(_, s)| matches!(s.state, InState::WaitingForTxs { .. }))
            .map(|(&k, _)| k)
            .collect();
        for stream in waiting {
            let Some(s) = self.streams.get_mut(&stream) else {
                continue;
            };
            let InState::WaitingForTxs { pending, .. } = &mut s.state else {
                continue;
            };
            if pending.supply(id, tx).is_err() || !pending.is_complete() {
                continue;
            }
            let InState::WaitingForTxs {
                pending,
                opened,
                tx_requests,
                ..
            } = std::mem::replace(&mut s.state, InState::Delivered)
            else {
                continue;
            };
            match pending.finish::<Bitcoin>() {
                Ok(block) => self.deliver(now, stream, &opened, tx_requests, block, cx),
                Err(e) => {
                    self.stats.decompress_failed += 1;
                    self.fail_stream(stream, format!("decompress: {e}"));
                }
            }
        }
    }

    fn deliver(
        &mut self,
        now: Instant,
        stream: u64,
        o: &Opened,
        tx_requests: u32,
        block: Block,
        cx: &InCtx<'_>,
    ) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        s.state = InState::Delivered;
        // `now` is when the datagram that completed the block was taken in; opening and
        // decompressing took time since (the stage records read the clock the same way).
        let now = now.max(Instant::now());
        let via = cx.links[s.first_link].kind;
        let origin = s.origin;
        let keyed = o.key_at.map_or(o.ready_at, |k| k.max(o.ready_at));
        let timings = InTimings {
            assemble: o.ready_at - s.first_at,
            key_wait: keyed - o.ready_at,
            open: o.open_time,
            decompress: now.saturating_duration_since(o.decompress_started),
            total: now - s.first_at,
        };
        self.blocks.push_back(InboundBlock {
            stream,
            block,
            via,
            encoding: o.encoding,
            sealed: o.key_at.is_some(),
            tx_requests,
            compressed_bytes: o.compressed_len,
            timings,
            at: now,
            origin,
        });
    }
}
