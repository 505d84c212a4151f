//! Blocks out: compress (§6, in the configured encoding, §6.8) → seal with a fresh key (§5)
//! → FEC + signed manifest (§3, §4.1) → fragments paced to the uplink, one hop-signed copy per
//! destination → key release after receipts or timeout (§2.6) → direct peer fallback.
//!
//! With `encrypt = false` the payload is the unsealed envelope of §6.9 instead: no key, no
//! release, no `seal`, `receipts` or `key_release` stage records (absent, not zero-length).
//!
//! Contract: [`Outbound`] owns our streams. The gateway feeds it blocks to originate, receipts
//! and repair requests for our streams, calls [`Outbound::handle_timeout`] and pulls fragment
//! copies with [`Outbound::poll_transmit`]; each call gets an [`OutCtx`]. After each call it
//! drains [`Outbound::poll_control`] (key releases) and [`Outbound::poll_event`].

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::{Block, BlockHash};
use photon_protocol::chain::Bitcoin;
use photon_protocol::compress::BlockEncoding;
use photon_protocol::compress::{compress_as, envelope};
use photon_protocol::fec::RepairPolicy;
use photon_protocol::identity::{Identity, PublicKey};
use photon_protocol::integrity::own_stream_id;
use photon_protocol::roster::Roster;
use photon_protocol::seal::{BlockKey, SealKey};
use photon_protocol::sender::{EncodedStream, Sender, SenderConfig};
use photon_protocol::shortid::TxStore;
use photon_protocol::wire::{
    self, flags, KeyReleaseRepr, Message, Packet, ReceiptRepr, RepairRequestRepr,
};
use ring::rand::{SecureRandom, SystemRandom};

use super::links::Links;
use super::stages::StageLog;
use super::stats::OutStats;
use super::{
    CoreConfig, GatewayEvent, KeyReleasePolicy, LinkId, LinkKind, OutTimings, ReleaseReason, Stage,
    Transmit,
};

/// Our outbound streams kept once they are out and released, for repairs and late
/// fallbacks (the oldest such is dropped first).
const MAX_OUT_STREAMS: usize = 16;
/// Our outbound streams kept at most: past it, the oldest is dropped even if it is still under
/// way (counted). A burst of blocks from the node (a node catching up, a reorganisation) is
/// sent whole up to this many.
const MAX_ACTIVE_OUT_STREAMS: usize = 256;

pub(super) struct OutStream {
    stream: u64,
    /// `None` when the block went out unsealed: nothing to release.
    key: Option<BlockKey>,
    manifest_hash: [u8; 32],
    /// The relays' sender. Its encoded stream (shards and signed manifest of the sealed block,
    /// §5.1, or of the unsealed envelope, §6.9) is shared by every peer sender.
    sender: Sender,
    started: Instant,
    /// Distinct receivers whose receipt counts toward the release quorum: the key a signed
    /// receipt names (its signature verified), or the peer of a direct link (hop-authenticated).
    /// Filled only until the key is released, so at most `receipts_needed()` keys.
    receivers: HashSet<PublicKey>,
    /// Peers that sent a receipt over their direct link (for the fallback).
    peer_receipts: HashSet<LinkId>,
    released: bool,
    release_at: Option<Instant>,
    fallback_at: Option<Instant>,
    /// Peers given the stream directly (fallback or origination through peers).
    peer_senders: Vec<(LinkId, Sender)>,
    /// Where retransmissions of the main sender go: the links that asked.
    retransmit_to: Vec<LinkId>,
    expires: Instant,
    /// For the stage records: the block, whether its first and last planned fragments went
    /// out, and the bytes of the first pass (all destinations).
    hash: BlockHash,
    first_out: bool,
    last_out: bool,
    wire_bytes: u64,
}

impl OutStream {
    pub(super) fn next_timer(&self) -> Option<Instant> {
        let mut t = self.sender.poll_timeout();
        for x in self
            .peer_senders
            .iter()
            .map(|(_, s)| s.poll_timeout())
            .chain([self.release_at, self.fallback_at, Some(self.expires)])
            .flatten()
        {
            t = Some(t.map_or(x, |t| t.min(x)));
        }
        t
    }

    #[cfg(test)]
    pub(super) fn stream_id(&self) -> u64 {
        self.stream
    }

    pub(super) fn receipts(&self) -> u32 {
        self.receivers.len() as u32
    }

    /// Out (the first pass's last fragment sent) and nothing left to release.
    fn is_done(&self) -> bool {
        self.last_out && (self.key.is_none() || self.released)
    }

    #[cfg(test)]
    pub(super) fn manifest_hash(&self) -> [u8; 32] {
        self.manifest_hash
    }
}

/// What an outbound call may use of the rest of the gateway.
pub(super) struct OutCtx<'a> {
    pub(super) links: &'a Links,
    /// Signs manifests (§4.1) and key releases (§2.6).
    pub(super) identity: &'a Identity,
    pub(super) rng: &'a SystemRandom,
    /// What blocks are compressed against (§6).
    pub(super) store: &'a TxStore,
    pub(super) stages: &'a mut StageLog,
}

/// The settings of [`CoreConfig`] the outbound side uses.
struct OutConfig {
    uplink_bytes_per_sec: u64,
    burst: u32,
    repair: RepairPolicy,
    key_release: KeyReleasePolicy,
    peer_fallback: Duration,
    originate_via_peers: bool,
    has_peers: bool,
    block_encoding: BlockEncoding,
    encrypt: bool,
    outbound_linger: Duration,
    stage_records: bool,
    /// The gateways whose receipts may count toward a key release (F1,
    /// docs/protocol/8-threat-model.md): the roster's gateways, or without a roster the
    /// configured trusted origins and peers. Any other key, however well signed, is a key a
    /// relay or gateway made up.
    receipt_signers: HashSet<PublicKey>,
}

/// Our outbound streams and the fan-out of their fragments.
pub(super) struct Outbound {
    config: OutConfig,
    /// Oldest first; at most `MAX_OUT_STREAMS` finished ones, `MAX_ACTIVE_OUT_STREAMS` in all.
    pub(super) streams: Vec<OutStream>,
    fanout: Option<Fanout>,
    frag_buf: Vec<u8>,
    next_stream_rr: usize,
    control: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<GatewayEvent>,
    stats: OutStats,
}

/// A fragment being copied to its destinations, one hop-signed copy per poll.
struct Fanout {
    len: usize,
    dests: Vec<LinkId>,
    next: usize,
}

impl Outbound {
    pub(super) fn new(config: &CoreConfig) -> Self {
        Outbound {
            config: OutConfig {
                uplink_bytes_per_sec: config.uplink_bytes_per_sec,
                burst: config.burst,
                repair: config.repair,
                key_release: config.key_release,
                peer_fallback: config.peer_fallback,
                originate_via_peers: config.originate_via_peers,
                has_peers: !config.peers.is_empty(),
                block_encoding: config.block_encoding,
                encrypt: config.encrypt,
                outbound_linger: config.outbound_linger,
                stage_records: config.stage_records,
                receipt_signers: match &config.roster {
                    Some(r) => r.gateways().collect(),
                    None => config
                        .trusted_origins
                        .iter()
                        .copied()
                        .chain(config.peers.iter().map(|p| p.public_key))
                        .collect(),
                },
            },
            streams: Vec::new(),
            fanout: None,
            frag_buf: vec![0u8; wire::MAX_DATAGRAM],
            next_stream_rr: 0,
            control: VecDeque::new(),
            events: VecDeque::new(),
            stats: OutStats::default(),
        }
    }

    pub(super) fn stats(&self) -> &OutStats {
        &self.stats
    }

    /// A newer roster: its gateways are the receipt signers from now on.
    pub(super) fn set_receipt_signers(&mut self, roster: &Roster) {
        self.config.receipt_signers = roster.gateways().collect();
    }

    /// Whether `stream` is one of ours.
    pub(super) fn is_ours(&self, stream: u64) -> bool {
        self.streams.iter().any(|s| s.stream == stream)
    }

    /// Key releases, hop-signed, in order.
    pub(super) fn poll_control(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.control.pop_front()
    }

    pub(super) fn poll_event(&mut self) -> Option<GatewayEvent> {
        self.events.pop_front()
    }

    /// The next instant a stream has work (pacing, key release, fallback, expiry); `due` (a
    /// past instant: at once) while a fragment still has copies to go.
    pub(super) fn poll_timeout(&self, due: Instant) -> Option<Instant> {
        let t = self.streams.iter().filter_map(OutStream::next_timer).min();
        if self.fanout.is_some() {
            return Some(t.map_or(due, |t| t.min(due)));
        }
        t
    }

    fn send(&mut self, links: &Links, link: LinkId, message: Message<'_>) -> bool {
        let signed = links.sign(link, message, 0);
        signed.map(|d| self.control.push_back(d)).is_some()
    }

    /// Sends `block` to the network as a new stream.
    pub(super) fn originate(&mut self, now: Instant, block: &Block, cx: &mut OutCtx<'_>) {
        let clock = Instant::now;
        let t0 = clock();
        let hash = block.block_hash();
        cx.stages
            .record(now, Stage::BlockIn, None, Some(hash), None);
        let block_bytes = block.total_size();
        let encoding = self.config.block_encoding;
        let compressed = match compress_as::<Bitcoin>(encoding, block, cx.store) {
            Ok(c) => c,
            Err(e) => {
                self.events.push_back(GatewayEvent::BlockFailed {
                    stream: 0,
                    reason: format!("compress: {e}"),
                });
                return;
            }
        };
        let t1 = clock();
        // Our prefix and 32 random bits (§4.1.6): relays take our fragments of our own
        // streams only.
        let mut low = [0u8; 4];
        if cx.rng.fill(&mut low).is_err() {
            return;
        }
        let stream = own_stream_id(cx.identity.key_pair(), u32::from_be_bytes(low).max(1));
        cx.stages
            .record(now, Stage::Compress, Some(stream), Some(hash), None);
        let encrypt = self.config.encrypt;
        let (sealed, key) = if encrypt {
            let mut sealed = compressed.bytes.clone();
            match SealKey::generate(cx.rng).and_then(|k| k.seal_in_place(stream, &mut sealed)) {
                Ok(k) => (sealed, Some(k)),
                Err(e) => {
                    self.events.push_back(GatewayEvent::BlockFailed {
                        stream,
                        reason: format!("seal: {e}"),
                    });
                    return;
                }
            }
        } else {
            (envelope::wrap_plain(&compressed.bytes), None)
        };
        let t2 = clock();
        if encrypt {
            cx.stages
                .record(now, Stage::Seal, Some(stream), Some(hash), None);
        } else {
            self.stats.blocks_out_unsealed += 1;
        }
        let via_peers = self.config.originate_via_peers || cx.links.live(true).is_empty();
        let dests = if via_peers {
            cx.links.live(false).len()
        } else {
            cx.links.live(true).len()
        };
        // Encoded once: every destination's sender shares these shards and this manifest.
        let encoded = match EncodedStream::new(
            stream,
            &sealed,
            &self.config.repair,
            cx.identity.key_pair(),
        ) {
            Ok(e) => Arc::new(e),
            Err(e) => {
                self.events.push_back(GatewayEvent::BlockFailed {
                    stream,
                    reason: format!("FEC/manifest: {e}"),
                });
                return;
            }
        };
        let sender =
            Sender::for_stream(self.sender_config(dests.max(1)), Arc::clone(&encoded), now);
        let t3 = clock();
        cx.stages
            .record(now, Stage::Fec, Some(stream), Some(hash), None);
        let datagrams_planned = encoded.datagrams();
        let (release_at, released_now) = match self.config.key_release {
            // Unsealed: nothing to release, ever.
            _ if !encrypt => (None, false),
            KeyReleasePolicy::Immediate => (None, true),
            p @ KeyReleasePolicy::Receipts { timeout, .. } => {
                if p.receipts_needed() == 0 {
                    (None, true)
                } else {
                    (Some(now + timeout), false)
                }
            }
        };
        let has_peers = self.config.has_peers;
        let mut out = OutStream {
            stream,
            manifest_hash: encoded.manifest().manifest_hash(),
            key,
            sender,
            started: now,
            receivers: HashSet::new(),
            peer_receipts: HashSet::new(),
            released: !encrypt,
            release_at,
            fallback_at: (has_peers && !via_peers).then_some(now + self.config.peer_fallback),
            peer_senders: Vec::new(),
            retransmit_to: Vec::new(),
            expires: now + self.config.outbound_linger,
            hash,
            first_out: false,
            last_out: false,
            wire_bytes: 0,
        };
        if via_peers {
            // No relay (or we hide behind peers): every live peer gets the stream directly.
            for link in cx.links.live(false) {
                let s = Sender::for_stream(self.sender_config(1), Arc::clone(&encoded), now);
                out.peer_senders.push((link, s));
            }
        }
        self.stats.block_bytes_out += block_bytes as u64;
        self.stats.compressed_bytes_out += compressed.bytes.len() as u64;
        if self.streams.len() >= MAX_OUT_STREAMS {
            // A stream still going out (or waiting for receipts) is never dropped for a newer
            // one while a finished one can go.
            match self.streams.iter().position(OutStream::is_done) {
                Some(i) => {
                    self.streams.remove(i);
                }
                None if self.streams.len() >= MAX_ACTIVE_OUT_STREAMS => {
                    self.streams.remove(0);
                    self.stats.out_streams_dropped += 1;
                }
                None => {}
            }
        }
        self.streams.push(out);
        self.events.push_back(GatewayEvent::BlockOriginated {
            hash,
            stream,
            encoding,
            sealed: encrypt,
            block_bytes,
            compressed_bytes: compressed.bytes.len(),
            datagrams_planned,
            timings: OutTimings {
                compress: t1 - t0,
                seal: t2 - t1,
                fec_manifest: t3 - t2,
            },
        });
        if released_now {
            let i = self.streams.len() - 1;
            self.release_key(now, i, ReleaseReason::Immediate, cx);
        }
    }

    fn sender_config(&self, dests: usize) -> SenderConfig {
        SenderConfig {
            node_id: 0,
            rate_bytes_per_sec: self.config.uplink_bytes_per_sec / dests.max(1) as u64,
            burst: self.config.burst,
            repair: self.config.repair,
            ..SenderConfig::default()
        }
    }

    /// Next fragment copy: finish the current fan-out, else pull the next fragment from the
    /// streams in turn (pacing is each sender's).
    pub(super) fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        cx: &mut OutCtx<'_>,
    ) -> Option<Transmit> {
        loop {
            if let Some(f) = &mut self.fanout {
                while f.next < f.dests.len() {
                    let link = f.dests[f.next];
                    f.next += 1;
                    let l = &cx.links[link];
                    let Some(session) = &l.session else { continue };
                    let len = f.len;
                    buf[..len].copy_from_slice(&self.frag_buf[..len]);
                    let Ok(mut p) = Packet::new_checked(&mut buf[..len]) else {
                        continue;
                    };
                    p.set_sender(session.our_id);
                    if session.keys.send.sign_packet(&mut p).is_err() {
                        continue;
                    }
                    return Some(Transmit { dst: l.addr, len });
                }
                self.fanout = None;
            }
            let n = self.streams.len();
            let mut found = None;
            'streams: for k in 0..n {
                let i = (self.next_stream_rr + k) % n;
                let s = &mut self.streams[i];
                for (link, ps) in &mut s.peer_senders {
                    if let Some(len) = ps.poll_transmit(now, &mut self.frag_buf) {
                        found = Some((i, len, vec![*link]));
                        self.next_stream_rr = i + 1;
                        break 'streams;
                    }
                }
                if let Some(len) = s.sender.poll_transmit(now, &mut self.frag_buf) {
                    let retransmit = self.frag_buf[wire::field::FLAGS] & flags::RETRANSMIT != 0;
                    let dests = if retransmit {
                        s.retransmit_to.clone()
                    } else if self.config.originate_via_peers {
                        Vec::new()
                    } else {
                        // Re-evaluated per fragment: a relay that went quiet mid-block is
                        // skipped, one that took over gets the rest.
                        cx.links
                            .iter()
                            .enumerate()
                            .filter(|(_, l)| l.is_up() && matches!(l.kind, LinkKind::Relay(_)))
                            .map(|(i, _)| i)
                            .collect()
                    };
                    found = Some((i, len, dests));
                    self.next_stream_rr = i + 1;
                    break;
                }
            }
            let (i, len, dests) = found?;
            if self.config.stage_records {
                self.fragment_out_stages(now, i, len, dests.len(), cx);
            }
            self.fanout = Some(Fanout {
                len,
                dests,
                next: 0,
            });
        }
    }

    /// Stage records of out stream `i` for a fragment of `len` bytes going to `copies`
    /// destinations: `first_fragment_out`, and `last_fragment_out` with the bytes of the whole
    /// first pass once every sender of the stream has sent its plan. Recorded when the fragment
    /// is handed over; the driver sends it in the same turn.
    fn fragment_out_stages(
        &mut self,
        now: Instant,
        i: usize,
        len: usize,
        copies: usize,
        cx: &mut OutCtx<'_>,
    ) {
        let s = &mut self.streams[i];
        if s.last_out || self.frag_buf[wire::field::FLAGS] & flags::RETRANSMIT != 0 {
            return;
        }
        s.wire_bytes += (len * copies) as u64;
        let first = !s.first_out;
        s.first_out = true;
        let last = s.sender.is_idle() && s.peer_senders.iter().all(|(_, p)| p.is_idle());
        s.last_out = last;
        let (stream, hash, bytes) = (Some(s.stream), Some(s.hash), s.wire_bytes);
        if first {
            cx.stages
                .record(now, Stage::FirstFragmentOut, stream, hash, None);
        }
        if last {
            cx.stages
                .record(now, Stage::LastFragmentOut, stream, hash, Some(bytes));
        }
    }

    /// A receipt for one of our streams (§2.5; docs/internals/gateway-core.md, "Key release").
    /// It counts toward the release quorum once per distinct receiver:
    ///
    /// - over a direct peer link, the peer (the hop tag authenticates it), or the key of its
    ///   signature if the receipt is signed (the signature must then verify);
    /// - through a relay, only a signed receipt whose signature verifies, for the key it names.
    ///   The relay rewrites the hop sender, so an unsigned receipt there names nobody: counted in
    ///   `receipts_unsigned`, not toward the quorum (a relay could forge or replay it).
    ///
    /// A receiver already counted for the stream, or our own key, is `receipts_duplicate`; a
    /// signature that does not verify `receipts_bad_signature`; a receiver that is not a member
    /// gateway (the roster's, else the trusted origins and peers) `receipts_not_member`: a
    /// relay that signs receipts with keys it made up gets nothing released (F1). Once the key is out, receipts
    /// only mark peers for the fallback (no signature is checked).
    pub(super) fn handle_receipt(
        &mut self,
        now: Instant,
        link: LinkId,
        r: &ReceiptRepr,
        cx: &mut OutCtx<'_>,
    ) {
        self.stats.receipts_received += 1;
        let Some(i) = self.streams.iter().position(|s| s.stream == r.stream) else {
            self.stats.dropped_unexpected += 1;
            return;
        };
        let our_key = cx.identity.public_key();
        let s = &mut self.streams[i];
        if s.manifest_hash != r.manifest_hash {
            self.stats.receipts_mismatched += 1;
            return;
        }
        let peer = match cx.links[link].kind {
            LinkKind::Peer(_) => {
                s.peer_receipts.insert(link);
                Some(cx.links[link].remote_key)
            }
            LinkKind::Relay(_) => None,
        };
        if s.released {
            return;
        }
        let signer = match r.verify() {
            Ok(signer) => signer,
            Err(_) => {
                self.stats.receipts_bad_signature += 1;
                return;
            }
        };
        let Some(receiver) = signer.or(peer) else {
            self.stats.receipts_unsigned += 1;
            return;
        };
        if receiver == our_key {
            self.stats.receipts_duplicate += 1;
            return;
        }
        if !self.config.receipt_signers.contains(&receiver) {
            self.stats.receipts_not_member += 1;
            return;
        }
        if !s.receivers.insert(receiver) {
            self.stats.receipts_duplicate += 1;
            return;
        }
        if s.receipts() >= self.config.key_release.receipts_needed() {
            let (stream, hash) = (s.stream, s.hash);
            cx.stages
                .record(now, Stage::Receipts, Some(stream), Some(hash), None);
            self.release_key(now, i, ReleaseReason::Receipts, cx);
        }
    }

    /// Sends the key of out stream `i` to every live link (nothing for an unsealed stream).
    fn release_key(&mut self, now: Instant, i: usize, reason: ReleaseReason, cx: &mut OutCtx<'_>) {
        let s = &mut self.streams[i];
        s.released = true;
        s.release_at = None;
        let Some(key) = &s.key else { return };
        let release: KeyReleaseRepr = key.release(s.stream, cx.identity);
        let (stream, receipts, after) = (s.stream, s.receipts(), now - s.started);
        let hash = s.hash;
        self.broadcast_key(&release, cx.links);
        cx.stages
            .record(now, Stage::KeyRelease, Some(stream), Some(hash), None);
        self.events.push_back(GatewayEvent::KeyReleased {
            stream,
            receipts,
            reason,
            after,
        });
    }

    fn broadcast_key(&mut self, release: &KeyReleaseRepr, links: &Links) {
        for link in links.live_all() {
            if self.send(links, link, Message::KeyRelease(*release)) {
                self.stats.key_releases_sent += 1;
            }
        }
    }

    pub(super) fn handle_repair_request(&mut self, link: LinkId, r: &RepairRequestRepr) {
        self.stats.repair_requests_received += 1;
        let Some(s) = self.streams.iter_mut().find(|s| s.stream == r.stream) else {
            self.stats.dropped_unexpected += 1;
            return;
        };
        if let Some((_, ps)) = s.peer_senders.iter_mut().find(|(l, _)| *l == link) {
            ps.handle_repair_request(r.kind, &r.missing);
            return;
        }
        if !s.retransmit_to.contains(&link) {
            s.retransmit_to.push(link);
        }
        s.sender.handle_repair_request(r.kind, &r.missing);
    }

    /// Expiry, key release timeouts and peer fallbacks.
    pub(super) fn handle_timeout(&mut self, now: Instant, cx: &mut OutCtx<'_>) {
        let mut i = 0;
        while i < self.streams.len() {
            if now >= self.streams[i].expires {
                self.streams.remove(i);
                continue;
            }
            let s = &self.streams[i];
            if !s.released && s.release_at.is_some_and(|t| now >= t) {
                self.release_key(now, i, ReleaseReason::Timeout, cx);
            }
            let s = &self.streams[i];
            if s.fallback_at.is_some_and(|t| now >= t) {
                self.peer_fallback(now, i, cx);
            }
            i += 1;
        }
    }

    /// The stream to every live peer that has not acknowledged it, over the direct link.
    fn peer_fallback(&mut self, now: Instant, i: usize, cx: &mut OutCtx<'_>) {
        self.streams[i].fallback_at = None;
        let peers: Vec<LinkId> = cx
            .links
            .live(false)
            .into_iter()
            .filter(|l| {
                let s = &self.streams[i];
                !s.peer_receipts.contains(l) && !s.peer_senders.iter().any(|(p, _)| p == l)
            })
            .collect();
        if peers.is_empty() {
            return;
        }
        let config = self.sender_config(peers.len());
        let s = &mut self.streams[i];
        for &link in &peers {
            let ps = Sender::for_stream(config, Arc::clone(s.sender.source()), now);
            s.peer_senders.push((link, ps));
        }
        let stream = s.stream;
        let release = match &s.key {
            Some(key) if s.released => Some(key.release(s.stream, cx.identity)),
            _ => None,
        };
        if let Some(release) = release {
            for &link in &peers {
                if self.send(cx.links, link, Message::KeyRelease(release)) {
                    self.stats.key_releases_sent += 1;
                }
            }
        }
        self.stats.peer_fallbacks += 1;
        self.events.push_back(GatewayEvent::PeerFallback {
            stream,
            peers: peers.len(),
        });
    }

    /// Stream ids of our outbound blocks still kept, oldest first.
    pub(super) fn stream_ids(&self) -> Vec<u64> {
        self.streams.iter().map(|s| s.stream).collect()
    }
}
