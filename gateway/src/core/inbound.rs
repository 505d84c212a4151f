//! Blocks in: fragments verified before FEC (assembler, §4.1.4, §7.2) → decoded → receipt
//! (§2.5) → key release (§2.6) → open (§5) → decompress from the tx store, asking for missing
//! transactions by short ID (§2.4, §6.3) → the node.
//!
//! The sender's choices are read from the payload, not from our config: an unsealed payload
//! (§6.9) is decoded at once, with no key wait and no `key_in` stage record; the encoding is
//! the payload's format byte (§6.8). An unknown format or a block that does not check out is a
//! typed error counted in `decompress_failed` and a `BlockFailed` event.

use std::time::{Duration, Instant};

use bitcoin::Block;
use photon_protocol::assembler::Event;
use photon_protocol::chain::Bitcoin;
use photon_protocol::compress::{decompress, envelope, BlockEncoding, Decompressed, PendingBlock};
use photon_protocol::identity::PublicKey;
use photon_protocol::integrity::ManifestFragment;
use photon_protocol::seal::BlockKey;
use photon_protocol::shortid::ShortId;
use photon_protocol::wire::{
    KeyReleaseRepr, Message, MessageType, Packet, ReceiptRepr, RepairRequestRepr, TxRequestRepr,
    MAX_TX_REQUEST_IDS,
};

use super::{
    Delivery, Gateway, GatewayEvent, InTimings, LinkId, LinkKind, NodeAction, Stage, MAX_IN_STREAMS,
};

pub(super) struct InStream {
    first_link: LinkId,
    first_at: Instant,
    origin: Option<PublicKey>,
    pub(super) sealed: Option<Vec<u8>>,
    ready_at: Option<Instant>,
    pub(super) key: Option<BlockKey>,
    key_at: Option<Instant>,
    /// A key release that came before we knew the stream's origin: checked once we do.
    release: Option<KeyReleaseRepr>,
    pending: Option<PendingBlock>,
    /// Unsealed by its sender (§6.9): no key needed.
    unsealed: bool,
    encoding: BlockEncoding,
    compressed_len: usize,
    open_time: Duration,
    decompress_started: Option<Instant>,
    tx_requests: u32,
    pub(super) next_retry: Option<Instant>,
    done: bool,
}

impl InStream {
    fn new(link: LinkId, now: Instant) -> Self {
        InStream {
            first_link: link,
            first_at: now,
            origin: None,
            sealed: None,
            ready_at: None,
            key: None,
            key_at: None,
            release: None,
            pending: None,
            unsealed: false,
            encoding: BlockEncoding::Compact,
            compressed_len: 0,
            open_time: Duration::ZERO,
            decompress_started: None,
            tx_requests: 0,
            next_retry: None,
            done: false,
        }
    }
}

impl Gateway {
    fn in_stream(&mut self, stream: u64, link: LinkId, now: Instant) -> &mut InStream {
        if !self.in_streams.contains_key(&stream) {
            while self.in_order.len() >= MAX_IN_STREAMS {
                if let Some(old) = self.in_order.pop_front() {
                    self.in_streams.remove(&old);
                }
            }
            self.in_order.push_back(stream);
        }
        self.in_streams
            .entry(stream)
            .or_insert_with(|| InStream::new(link, now))
    }

    pub(super) fn handle_fragment<T: AsRef<[u8]>>(
        &mut self,
        now: Instant,
        link: LinkId,
        packet: &Packet<T>,
    ) {
        let stream = packet.stream();
        if self.out_streams.iter().any(|s| s.stream_id() == stream) {
            // Our own block reflected back to us.
            self.stats.dropped_unexpected += 1;
            return;
        }
        if self.asm.handle_datagram(now, packet.datagram()).is_ok() {
            if !self.in_streams.contains_key(&stream) {
                self.stage(now, Stage::FirstFragmentIn, Some(stream), None, None);
            }
            let origin = (packet.msg_type() == Ok(MessageType::Manifest))
                .then(|| ManifestFragment::new_checked(packet.payload()).ok())
                .flatten()
                .map(|f| {
                    let mut k = [0u8; 32];
                    k.copy_from_slice(f.origin());
                    PublicKey(k)
                });
            let s = self.in_stream(stream, link, now);
            if s.origin.is_none() && origin.is_some() {
                // The assembler accepted it: the manifest verified under this trusted origin
                // (later fragments must match the bound one).
                s.origin = origin;
                if let Some(release) = s.release.take() {
                    self.accept_key(now, &release);
                }
            }
        }
        self.drain_assembler(now);
    }

    pub(super) fn drain_assembler(&mut self, now: Instant) {
        while let Some(ev) = self.asm.poll_event() {
            match ev {
                Event::SendReceipt {
                    stream,
                    manifest_hash,
                } => self.send_receipt(now, stream, manifest_hash),
                Event::SendRepairRequest {
                    stream,
                    kind,
                    missing,
                } => {
                    let Some(link) = self.in_streams.get(&stream).map(|s| s.first_link) else {
                        continue;
                    };
                    // A request names at most MAX_REPAIR_INDICES indices in list form; the
                    // bitmap form fits more, but be safe and chunk.
                    for chunk in missing.chunks(512) {
                        let r = RepairRequestRepr::new(stream, kind, chunk.to_vec());
                        if self.send_message(link, Message::RepairRequest(r), 0) {
                            self.stats.repair_requests_sent += 1;
                        }
                    }
                }
                Event::BlockReady { stream, bytes } => {
                    self.stage(now, Stage::LastFragmentIn, Some(stream), None, None);
                    let s = self.in_stream(stream, 0, now);
                    s.sealed = Some(bytes);
                    s.ready_at = Some(now);
                    self.try_open(now, stream);
                }
                Event::ShardAccepted { .. } | Event::ShardRejected { .. } => {}
            }
        }
    }

    /// The receipt goes to the origin directly when it is one of our peers (so it knows which
    /// peer holds the block), else over the link the stream came in on.
    fn send_receipt(&mut self, now: Instant, stream: u64, manifest_hash: [u8; 32]) {
        let (first_link, origin) = match self.in_streams.get(&stream) {
            Some(s) => (s.first_link, s.origin),
            None => return,
        };
        let link = origin
            .and_then(|o| self.peer_link_of(&o))
            .unwrap_or(first_link);
        // Signed (§2.5): the origin counts each receiver once, even through relays.
        let r = ReceiptRepr::sign(stream, manifest_hash, &self.identity);
        if self.send_message(link, Message::Receipt(r), 0) {
            self.stats.receipts_sent += 1;
            self.stage(now, Stage::ReceiptSent, Some(stream), None, None);
        }
        let _ = now;
    }

    pub(super) fn handle_key_release(&mut self, now: Instant, link: LinkId, k: &KeyReleaseRepr) {
        self.stats.key_releases_received += 1;
        let s = self.in_stream(k.stream, link, now);
        if s.key.is_some() || s.done {
            return;
        }
        if s.origin.is_none() {
            // Origin not known yet (key before the manifest): keep it until we know.
            s.release = Some(*k);
            return;
        }
        self.accept_key(now, k);
    }

    fn accept_key(&mut self, now: Instant, k: &KeyReleaseRepr) {
        let Some(s) = self.in_streams.get_mut(&k.stream) else {
            return;
        };
        let Some(origin) = s.origin else { return };
        match BlockKey::from_release(k, &origin) {
            Ok(key) => {
                s.key = Some(key);
                s.key_at = Some(now);
                self.stage(now, Stage::KeyIn, Some(k.stream), None, None);
                self.try_open(now, k.stream);
            }
            Err(_) => self.stats.key_releases_bad += 1,
        }
    }

    fn try_open(&mut self, now: Instant, stream: u64) {
        let Some(s) = self.in_streams.get_mut(&stream) else {
            return;
        };
        if s.done || s.pending.is_some() {
            return;
        }
        let Some(payload) = &s.sealed else { return };
        if envelope::unwrap_plain(payload).is_none() && s.key.is_none() {
            return; // sealed: wait for the key
        }
        let t0 = Instant::now();
        let Some(payload) = s.sealed.take() else {
            return;
        };
        let opened;
        let plain: &[u8] = if let Some(p) = envelope::unwrap_plain(&payload) {
            s.unsealed = true;
            self.stats.blocks_in_unsealed += 1;
            p
        } else {
            let Some(key) = &s.key else { return };
            match key.open(stream, &payload) {
                Ok(p) => {
                    opened = p;
                    s.open_time = t0.elapsed();
                    &opened
                }
                Err(e) => {
                    self.stats.open_failed += 1;
                    self.fail_stream(stream, format!("open: {e}"));
                    return;
                }
            }
        };
        s.compressed_len = plain.len();
        s.decompress_started = Some(now);
        if let Some(e) = plain
            .first()
            .copied()
            .and_then(BlockEncoding::from_format_byte)
        {
            s.encoding = e;
        }
        match decompress::<Bitcoin>(plain, &self.store) {
            Ok(Decompressed::Complete(block)) => self.deliver(now, stream, block),
            Ok(Decompressed::Missing(pending)) => {
                s.pending = Some(pending);
                self.request_missing(now, stream);
            }
            Err(e) => {
                self.stats.decompress_failed += 1;
                self.fail_stream(stream, format!("decompress: {e}"));
            }
        }
    }

    /// Gives up on an incoming stream: it is done (late fragments are ignored), holds no
    /// pending block or retry, and the gateway reports why.
    fn fail_stream(&mut self, stream: u64, reason: String) {
        if let Some(s) = self.in_streams.get_mut(&stream) {
            s.done = true;
            s.pending = None;
            s.next_retry = None;
        }
        self.event(GatewayEvent::BlockFailed { stream, reason });
    }

    /// Ask for the transactions a block lacks: first over the link the block came in on and
    /// over the direct link to its origin when that is a peer; each retry over every live link.
    /// (The origin answers requests for its own streams whatever link they come over; a peer
    /// answers any request over a direct link; see the module docs of `core`.)
    fn request_missing(&mut self, now: Instant, stream: u64) {
        let retry = self.config.tx_request_retry;
        let rounds = self.config.tx_request_rounds;
        let live: Vec<LinkId> = (0..self.links.len())
            .filter(|&l| self.links[l].is_up())
            .collect();
        let Some(s) = self.in_streams.get(&stream) else {
            return;
        };
        let Some(pending) = &s.pending else { return };
        if s.tx_requests >= rounds {
            self.stats.blocks_given_up += 1;
            self.fail_stream(
                stream,
                format!("transactions still missing after {rounds} requests"),
            );
            return;
        }
        let missing: Vec<u32> = pending.missing().into_iter().map(|id| id.0).collect();
        let mut targets = if s.tx_requests == 0 {
            let mut t = vec![s.first_link];
            if let Some(p) = s.origin.and_then(|o| self.peer_link_of(&o)) {
                t.push(p);
            }
            t
        } else {
            live
        };
        targets.sort_unstable();
        targets.dedup();
        let s = self.in_streams.get_mut(&stream).expect("just looked up");
        s.tx_requests += 1;
        s.next_retry = Some(now + retry);
        for link in targets {
            for chunk in missing.chunks(MAX_TX_REQUEST_IDS) {
                let r = TxRequestRepr {
                    stream,
                    short_ids: chunk.to_vec(),
                };
                if self.send_message(link, Message::TxRequest(r), 0) {
                    self.stats.tx_requests_sent += 1;
                    self.stats.txs_requested += chunk.len() as u64;
                }
            }
        }
    }

    pub(super) fn inbound_timers(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .in_streams
            .iter()
            .filter(|(_, s)| s.next_retry.is_some_and(|t| now >= t))
            .map(|(&id, _)| id)
            .collect();
        for stream in due {
            self.request_missing(now, stream);
        }
    }

    /// A transaction with `id` arrived: fill the blocks waiting for it.
    pub(super) fn tx_arrived(&mut self, now: Instant, id: ShortId, tx: &[u8]) {
        let waiting: Vec<u64> = self
            .in_streams
            .iter()
            .filter(|(_, s)| s.pending.is_some())
            .map(|(&k, _)| k)
            .collect();
        for stream in waiting {
            let Some(s) = self.in_streams.get_mut(&stream) else {
                continue;
            };
            let Some(pending) = s.pending.as_mut() else {
                continue;
            };
            if pending.supply(id, tx).is_err() || !pending.is_complete() {
                continue;
            }
            let Some(pending) = s.pending.take() else {
                continue;
            };
            s.next_retry = None;
            match pending.finish::<Bitcoin>() {
                Ok(block) => self.deliver(now, stream, block),
                Err(e) => {
                    self.stats.decompress_failed += 1;
                    self.fail_stream(stream, format!("decompress: {e}"));
                }
            }
        }
    }

    fn deliver(&mut self, now: Instant, stream: u64, block: Block) {
        let Some(s) = self.in_streams.get_mut(&stream) else {
            return;
        };
        s.done = true;
        s.pending = None;
        s.next_retry = None;
        // `now` is when the datagram that completed the block was taken in; opening and
        // decompressing took time since (the stage records read the clock the same way).
        let now = now.max(Instant::now());
        let hash = block.block_hash();
        let via = self.links[s.first_link].kind;
        let ready = s.ready_at.unwrap_or(now);
        let keyed = if s.unsealed {
            ready
        } else {
            s.key_at.unwrap_or(now).max(ready)
        };
        let timings = InTimings {
            assemble: ready - s.first_at,
            key_wait: keyed - ready,
            open: s.open_time,
            decompress: now.saturating_duration_since(s.decompress_started.unwrap_or(now)),
            total: now - s.first_at,
        };
        let (tx_requests, compressed_bytes) = (s.tx_requests, s.compressed_len);
        let (encoding, sealed) = (s.encoding, !s.unsealed);
        if !self.known_blocks.insert(hash) {
            self.stats.blocks_duplicate += 1;
            return;
        }
        self.stage(now, Stage::Decode, Some(stream), Some(hash), None);
        let block_bytes = block.total_size();
        self.stats.blocks_from_network += 1;
        self.stats.block_bytes_in += block_bytes as u64;
        self.stats.compressed_bytes_in += compressed_bytes as u64;
        let originate_for = match via {
            LinkKind::Peer(p) => self.config.peers[p].originate_for,
            LinkKind::Relay(_) => false,
        };
        if originate_for {
            // A peer hides behind us: its block goes to the relays as ours.
            self.originate(now, &block);
        }
        let action = match self.config.delivery {
            Delivery::Push => NodeAction::SendBlock(block),
            Delivery::Announce => NodeAction::AnnounceBlock(block),
            Delivery::Compact => NodeAction::SendCmpctBlock(block),
        };
        self.node_actions.push_back(action);
        // Handed to the node connection (the driver passes node actions on in the same turn).
        self.stage(now, Stage::Deliver, Some(stream), Some(hash), None);
        self.event(GatewayEvent::BlockDelivered {
            hash,
            stream,
            encoding,
            sealed,
            via,
            tx_requests,
            compressed_bytes,
            block_bytes,
            timings,
        });
    }
}
