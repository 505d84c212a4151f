//! The receiving side: block fragments in, blocks and control events out, sans-IO
//! (`docs/protocol.md` §7.2).
//!
//! Call order (quinn style): feed every received datagram to [`Assembler::handle_datagram`],
//! drain [`Assembler::poll_event`] until `None`, and call [`Assembler::handle_timeout`] when
//! [`Assembler::poll_timeout`] says (repair requests and expiry are driven from there). The
//! library never reads a clock.
//!
//! Per stream: the first manifest fragment whose Ed25519 signature verifies under a trusted
//! origin key binds the stream (§4.1.4); every shard is checked against its manifest hash before
//! it reaches the FEC decoder, so a forged or corrupted shard is dropped alone. Shards that
//! arrive before the hash that covers them wait in a bounded unverified buffer.
//!
//! Memory is bounded by [`AssemblerConfig`]: concurrent streams, bytes buffered in all, bytes of
//! one stream, unverified shards per stream, remembered finished streams, queued events.
//! Every drop is a typed [`Reject`] and a counter in [`AssemblerStats`]; nothing panics on input.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::fec::{self, FecError};
use crate::integrity::{
    Inserted, IntegrityError, ManifestCollector, ManifestFragmentRepr, PUBLIC_KEY_LEN,
};
use crate::wire::{self, FragmentKind, FragmentRepr, Packet};

/// Assembler settings (§7.2). Every limit is a bound on memory or work an attacker can cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssemblerConfig {
    /// Ed25519 public keys of the origin gateways whose blocks are accepted.
    pub trusted_origins: Vec<[u8; PUBLIC_KEY_LEN]>,
    /// Most streams assembled at once.
    pub max_streams: usize,
    /// Most bytes held by all streams (decoder buffers, unverified shards, manifests).
    pub max_buffered_bytes: usize,
    /// Most bytes one stream may hold (bounds the decoder a manifest may ask for).
    pub max_stream_bytes: usize,
    /// Most shards one stream holds before their hash is known.
    pub max_unverified_per_stream: usize,
    /// A stream with no progress for this long is dropped.
    pub stream_timeout: Duration,
    /// Quiet time after the last progress before asking for missing fragments.
    pub repair_delay: Duration,
    /// Most repair requests per stream.
    pub max_repair_rounds: u32,
    /// Finished (delivered or expired) stream ids remembered, to count late fragments.
    pub finished_history: usize,
    /// Most queued events; beyond it per-shard events are dropped (and counted), block, receipt
    /// and repair events never are.
    pub max_events: usize,
}

impl Default for AssemblerConfig {
    fn default() -> Self {
        AssemblerConfig {
            trusted_origins: Vec::new(),
            max_streams: 64,
            max_buffered_bytes: 64 * 1024 * 1024,
            max_stream_bytes: 8 * 1024 * 1024,
            max_unverified_per_stream: 2048,
            stream_timeout: Duration::from_secs(10),
            repair_delay: Duration::from_millis(50),
            max_repair_rounds: 8,
            finished_history: 1024,
            max_events: 65536,
        }
    }
}

/// Why a datagram was dropped. Each is also a counter in [`AssemblerStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// Not a well-formed block fragment.
    #[error("wire: {0}")]
    Wire(#[from] wire::Error),
    /// A manifest fragment that does not parse, verify or match its stream.
    #[error("manifest: {0}")]
    Manifest(#[from] IntegrityError),
    /// The header's K, R, count or index contradict the verified manifest, or the shard has the
    /// wrong length (out of the stream's window).
    #[error("fragment does not match its stream's manifest")]
    Mismatch,
    /// A shard whose hash differs from the manifest's: forged or corrupted.
    #[error("shard fails its manifest hash")]
    BadShard,
    /// A fragment already held.
    #[error("duplicate fragment")]
    Duplicate,
    /// A fragment of a stream already delivered.
    #[error("fragment of a delivered stream")]
    Late,
    /// A fragment of a stream that timed out or was evicted.
    #[error("fragment of an expired stream")]
    Expired,
    /// No room: too many streams, buffered bytes or unverified shards.
    #[error("assembler full")]
    Full,
}

/// What the assembler tells its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A shard passed its hash check and went to the decoder.
    ShardAccepted {
        stream: u64,
        kind: FragmentKind,
        index: u16,
    },
    /// A shard failed its hash check (possibly one buffered before its hash was known).
    ShardRejected {
        stream: u64,
        kind: FragmentKind,
        index: u16,
        reason: Reject,
    },
    /// The block of `stream`, byte-identical to what the origin sent (still sealed, §5).
    BlockReady { stream: u64, bytes: Vec<u8> },
    /// Ask the sender (or a relay) for these fragments (§2.7).
    SendRepairRequest {
        stream: u64,
        kind: FragmentKind,
        missing: Vec<u16>,
    },
    /// Tell the network this stream is held (§2.5): the manifest hash names the block.
    SendReceipt {
        stream: u64,
        manifest_hash: [u8; 32],
    },
    /// The stream's first manifest fragment verified under the trusted `origin` key, which is
    /// now bound to the stream (§4.1.4): every later fragment must match it. Reported once per
    /// stream, before any receipt or block of that stream, so the caller needs to parse nothing.
    OriginBound {
        stream: u64,
        origin: [u8; PUBLIC_KEY_LEN],
    },
}

/// Counters (§7.2.3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssemblerStats {
    pub datagrams: u64,
    pub shards_accepted: u64,
    pub shards_buffered: u64,
    pub manifest_fragments_accepted: u64,
    pub rejected_wire: u64,
    pub rejected_manifest: u64,
    pub rejected_mismatch: u64,
    pub rejected_bad_shard: u64,
    pub duplicates: u64,
    pub late: u64,
    pub expired: u64,
    pub full: u64,
    pub blocks_delivered: u64,
    pub streams_timed_out: u64,
    pub streams_evicted: u64,
    pub repair_requests: u64,
    pub events_dropped: u64,
    pub decode_errors: u64,
}

/// `t + d`, saturating far in the future instead of panicking on a huge configured duration.
fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(Duration::from_secs(1 << 30)))
        .unwrap_or(t)
}

#[derive(Debug)]
struct Pending {
    kind: FragmentKind,
    index: u16,
    bytes: Vec<u8>,
}

#[derive(Debug)]
struct Stream {
    last_progress: Instant,
    next_repair: Instant,
    repair_rounds: u32,
    manifest: Option<ManifestCollector>,
    decoder: Option<fec::Decoder>,
    pending: Vec<Pending>,
    /// Bytes charged to this stream against the limits.
    bytes: usize,
}

impl Stream {
    fn new(now: Instant, repair_delay: Duration) -> Self {
        Stream {
            last_progress: now,
            next_repair: later(now, repair_delay),
            repair_rounds: 0,
            manifest: None,
            decoder: None,
            pending: Vec::new(),
            bytes: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finished {
    Delivered,
    Expired,
}

/// Reassembles blocks from fragments of many streams.
#[derive(Debug)]
pub struct Assembler {
    config: AssemblerConfig,
    trusted: HashSet<[u8; PUBLIC_KEY_LEN]>,
    streams: HashMap<u64, Stream>,
    finished: HashMap<u64, Finished>,
    finished_order: VecDeque<u64>,
    buffered: usize,
    events: VecDeque<Event>,
    stats: AssemblerStats,
}

impl Assembler {
    /// An empty assembler.
    pub fn new(config: AssemblerConfig) -> Self {
        Assembler {
            trusted: config.trusted_origins.iter().copied().collect(),
            config,
            streams: HashMap::new(),
            finished: HashMap::new(),
            finished_order: VecDeque::new(),
            buffered: 0,
            events: VecDeque::new(),
            stats: AssemblerStats::default(),
        }
    }

    /// Replaces the trusted origin keys (a newer roster): streams already bound keep their
    /// origin; new streams bind only to the new set.
    pub fn set_trusted_origins(&mut self, keys: impl IntoIterator<Item = [u8; PUBLIC_KEY_LEN]>) {
        self.trusted = keys.into_iter().collect();
    }

    /// Counters.
    pub fn stats(&self) -> &AssemblerStats {
        &self.stats
    }

    /// Streams being assembled.
    pub fn active_streams(&self) -> usize {
        self.streams.len()
    }

    /// Bytes held by all streams.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Feeds one received datagram. `Err` says why it was dropped (also counted).
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) -> Result<(), Reject> {
        self.stats.datagrams += 1;
        let result = self.handle_inner(now, datagram);
        if let Err(reason) = result {
            self.count(reason);
        }
        result
    }

    fn count(&mut self, reason: Reject) {
        let s = &mut self.stats;
        match reason {
            Reject::Wire(_) => s.rejected_wire += 1,
            Reject::Manifest(_) => s.rejected_manifest += 1,
            Reject::Mismatch => s.rejected_mismatch += 1,
            Reject::BadShard => s.rejected_bad_shard += 1,
            Reject::Duplicate => s.duplicates += 1,
            Reject::Late => s.late += 1,
            Reject::Expired => s.expired += 1,
            Reject::Full => s.full += 1,
        }
    }

    fn push_shard_event(&mut self, event: Event) {
        if self.events.len() >= self.config.max_events {
            self.stats.events_dropped += 1;
        } else {
            self.events.push_back(event);
        }
    }

    fn handle_inner(&mut self, now: Instant, datagram: &[u8]) -> Result<(), Reject> {
        let packet = Packet::new_checked(datagram)?;
        let frag = FragmentRepr::parse(&packet)?;
        match self.finished.get(&frag.stream) {
            Some(Finished::Delivered) => return Err(Reject::Late),
            Some(Finished::Expired) => return Err(Reject::Expired),
            None => {}
        }
        if !self.streams.contains_key(&frag.stream) {
            self.make_room()?;
            self.streams
                .insert(frag.stream, Stream::new(now, self.config.repair_delay));
        }
        match frag.kind {
            FragmentKind::Manifest => self.handle_manifest(now, &frag),
            FragmentKind::Source | FragmentKind::Repair => self.handle_shard(now, &frag),
        }
    }

    /// Makes room for one more stream: evicts the oldest stream that has no verified manifest
    /// (cheap for an attacker to create, so first to go); a verified stream is never evicted for
    /// a new one.
    fn make_room(&mut self) -> Result<(), Reject> {
        if self.streams.len() < self.config.max_streams {
            return Ok(());
        }
        let victim = self
            .streams
            .iter()
            .filter(|(_, s)| s.manifest.is_none())
            .min_by_key(|(_, s)| s.last_progress)
            .map(|(&id, _)| id);
        match victim {
            Some(id) => {
                // Not remembered as finished: if it was genuine, its fragments may start it
                // again (and repair requests recover what was dropped).
                if let Some(st) = self.streams.remove(&id) {
                    self.buffered = self.buffered.saturating_sub(st.bytes);
                }
                self.stats.streams_evicted += 1;
                Ok(())
            }
            None => Err(Reject::Full),
        }
    }

    fn finish(&mut self, id: u64, how: Finished) {
        if let Some(s) = self.streams.remove(&id) {
            self.buffered = self.buffered.saturating_sub(s.bytes);
        }
        if self.config.finished_history == 0 {
            return;
        }
        while self.finished_order.len() >= self.config.finished_history {
            if let Some(old) = self.finished_order.pop_front() {
                self.finished.remove(&old);
            }
        }
        self.finished.insert(id, how);
        self.finished_order.push_back(id);
    }

    fn charge(&mut self, id: u64, bytes: usize) -> Result<(), Reject> {
        let limit_total = self.config.max_buffered_bytes;
        let limit_stream = self.config.max_stream_bytes;
        let s = self.streams.get_mut(&id).ok_or(Reject::Expired)?;
        if self.buffered + bytes > limit_total || s.bytes + bytes > limit_stream {
            return Err(Reject::Full);
        }
        s.bytes += bytes;
        self.buffered += bytes;
        Ok(())
    }

    fn handle_manifest(&mut self, now: Instant, frag: &FragmentRepr<'_>) -> Result<(), Reject> {
        let repr = ManifestFragmentRepr::parse(frag.payload)?;
        let m = &repr.meta;
        if m.stream != frag.stream
            || usize::from(frag.count) != m.chunks_total()
            || frag.index != repr.chunk_index
            || frag.k != m.fec.source_count
            || frag.r != m.fec.repair_count
        {
            return Err(Reject::Mismatch);
        }
        let id = frag.stream;
        let has_manifest = self.streams.get(&id).is_some_and(|s| s.manifest.is_some());
        let inserted = if has_manifest {
            let s = self.streams.get_mut(&id).ok_or(Reject::Expired)?;
            let c = s.manifest.as_mut().ok_or(Reject::Expired)?;
            c.insert(&repr)?
        } else {
            let trusted = &self.trusted;
            let (collector, inserted) = ManifestCollector::new(&repr, |k| trusted.contains(k))?;
            // Charge the decoder and the manifest's chunk buffer before allocating them.
            let fec = collector.meta().fec;
            let table = collector.meta().chunks_total() * usize::from(collector.meta().chunk_size);
            self.charge(id, fec.total() * fec.shard_len() + table)?;
            let origin = collector.meta().origin;
            let s = self.streams.get_mut(&id).ok_or(Reject::Expired)?;
            s.decoder = Some(fec::Decoder::new(fec));
            s.manifest = Some(collector);
            // Never dropped (like receipts): the caller needs it to act on the stream.
            self.events
                .push_back(Event::OriginBound { stream: id, origin });
            inserted
        };
        match inserted {
            Inserted::Duplicate => Err(Reject::Duplicate),
            Inserted::New { newly_known } => {
                self.stats.manifest_fragments_accepted += 1;
                self.progress(id, now);
                self.verify_pending(id, newly_known);
                self.try_complete(id);
                Ok(())
            }
        }
    }

    fn progress(&mut self, id: u64, now: Instant) {
        let delay = self.config.repair_delay;
        if let Some(s) = self.streams.get_mut(&id) {
            s.last_progress = now;
            s.next_repair = later(now, delay);
        }
    }

    fn handle_shard(&mut self, now: Instant, frag: &FragmentRepr<'_>) -> Result<(), Reject> {
        let id = frag.stream;
        let global = match frag.kind {
            FragmentKind::Source => usize::from(frag.index),
            _ => usize::from(frag.k) + usize::from(frag.index),
        };
        let s = self.streams.get(&id).ok_or(Reject::Expired)?;
        let (Some(collector), Some(decoder)) = (&s.manifest, &s.decoder) else {
            return self.buffer_unverified(frag);
        };
        let fec = collector.meta().fec;
        if frag.k != fec.source_count
            || frag.r != fec.repair_count
            || frag.payload.len() != fec.shard_len()
        {
            return Err(Reject::Mismatch);
        }
        if decoder.has(global) {
            return Err(Reject::Duplicate);
        }
        // global < K + R <= 32768: fits u16.
        match collector.check_shard(global as u16, frag.payload) {
            Ok(true) => {
                self.accept(id, frag.kind, frag.index, global, frag.payload);
                self.progress(id, now);
                self.try_complete(id);
                Ok(())
            }
            Ok(false) => self.buffer_unverified(frag),
            Err(_) => {
                self.push_shard_event(Event::ShardRejected {
                    stream: id,
                    kind: frag.kind,
                    index: frag.index,
                    reason: Reject::BadShard,
                });
                Err(Reject::BadShard)
            }
        }
    }

    /// Holds a shard whose hash is not known yet. Unverified shards never count as progress, so
    /// a flood of them cannot keep a stream alive.
    fn buffer_unverified(&mut self, frag: &FragmentRepr<'_>) -> Result<(), Reject> {
        let id = frag.stream;
        let cap = self.config.max_unverified_per_stream;
        let s = self.streams.get_mut(&id).ok_or(Reject::Expired)?;
        // Same bytes twice is a duplicate; different bytes under one index are kept side by
        // side, so a forged copy that arrived first cannot shut out the genuine one.
        if s.pending
            .iter()
            .any(|p| p.kind == frag.kind && p.index == frag.index && p.bytes == frag.payload)
        {
            return Err(Reject::Duplicate);
        }
        if s.pending.len() >= cap {
            return Err(Reject::Full);
        }
        self.charge(id, frag.payload.len())?;
        let s = self.streams.get_mut(&id).ok_or(Reject::Expired)?;
        s.pending.push(Pending {
            kind: frag.kind,
            index: frag.index,
            bytes: frag.payload.to_vec(),
        });
        self.stats.shards_buffered += 1;
        Ok(())
    }

    fn accept(&mut self, id: u64, kind: FragmentKind, index: u16, global: usize, shard: &[u8]) {
        if let Some(d) = self.streams.get_mut(&id).and_then(|s| s.decoder.as_mut()) {
            if d.insert(global, shard).unwrap_or(false) {
                self.stats.shards_accepted += 1;
                self.push_shard_event(Event::ShardAccepted {
                    stream: id,
                    kind,
                    index,
                });
            }
        }
    }

    /// Checks buffered shards whose hash just became known (`newly_known`, global indices).
    fn verify_pending(&mut self, id: u64, newly_known: core::ops::Range<usize>) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let (Some(c), Some(_)) = (&s.manifest, &s.decoder) else {
            return;
        };
        let fec = c.meta().fec;
        let (k, total) = (fec.k(), fec.total());
        let global_of = |p: &Pending| match p.kind {
            FragmentKind::Source => usize::from(p.index),
            _ => k + usize::from(p.index),
        };
        let mut ready = Vec::new();
        let mut keep = Vec::new();
        for p in s.pending.drain(..) {
            let g = global_of(&p);
            if newly_known.contains(&g) || g >= total || p.bytes.len() != fec.shard_len() {
                ready.push(p);
            } else {
                keep.push(p);
            }
        }
        s.pending = keep;
        let mut freed = 0;
        let mut outcomes = Vec::new();
        for p in ready {
            freed += p.bytes.len();
            let g = global_of(&p);
            let ok = g < total
                && p.bytes.len() == fec.shard_len()
                && matches!(c.check_shard(g as u16, &p.bytes), Ok(true));
            outcomes.push((p, g, ok));
        }
        s.bytes = s.bytes.saturating_sub(freed);
        self.buffered = self.buffered.saturating_sub(freed);
        for (p, g, ok) in outcomes {
            if ok {
                let dup = self
                    .streams
                    .get(&id)
                    .and_then(|s| s.decoder.as_ref())
                    .is_some_and(|d| d.has(g));
                if dup {
                    self.stats.duplicates += 1;
                } else {
                    self.accept(id, p.kind, p.index, g, &p.bytes);
                }
            } else {
                let reason = if g < total && p.bytes.len() == fec.shard_len() {
                    Reject::BadShard
                } else {
                    Reject::Mismatch
                };
                self.count(reason);
                self.push_shard_event(Event::ShardRejected {
                    stream: id,
                    kind: p.kind,
                    index: p.index,
                    reason,
                });
            }
        }
    }

    fn try_complete(&mut self, id: u64) {
        let Some(s) = self.streams.get(&id) else {
            return;
        };
        let (Some(c), Some(d)) = (&s.manifest, &s.decoder) else {
            return;
        };
        if !d.can_decode() {
            return;
        }
        let hash = c.manifest_hash();
        match d.decode() {
            Ok(bytes) => {
                self.events
                    .push_back(Event::BlockReady { stream: id, bytes });
                self.events.push_back(Event::SendReceipt {
                    stream: id,
                    manifest_hash: hash,
                });
                self.stats.blocks_delivered += 1;
                self.finish(id, Finished::Delivered);
            }
            Err(FecError::NotEnoughShards { .. }) => {}
            Err(_) => {
                self.stats.decode_errors += 1;
                self.finish(id, Finished::Expired);
            }
        }
    }

    /// When [`Assembler::handle_timeout`] should next be called; `None` with no stream.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.streams
            .values()
            .map(|s| {
                let expiry = later(s.last_progress, self.config.stream_timeout);
                if s.repair_rounds < self.config.max_repair_rounds {
                    expiry.min(s.next_repair)
                } else {
                    expiry
                }
            })
            .min()
    }

    /// Expires stalled streams and emits repair requests for quiet, incomplete ones.
    pub fn handle_timeout(&mut self, now: Instant) {
        let timeout = self.config.stream_timeout;
        let expired: Vec<u64> = self
            .streams
            .iter()
            .filter(|(_, s)| now >= later(s.last_progress, timeout))
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            self.stats.streams_timed_out += 1;
            self.finish(id, Finished::Expired);
        }
        let (delay, max_rounds) = (self.config.repair_delay, self.config.max_repair_rounds);
        let mut requests = Vec::new();
        for (&id, s) in self.streams.iter_mut() {
            if now < s.next_repair || s.repair_rounds >= max_rounds {
                continue;
            }
            s.repair_rounds += 1;
            s.next_repair = later(now, delay);
            match (&s.manifest, &s.decoder) {
                (Some(c), Some(d)) => {
                    let chunks = c.missing_chunks();
                    if !chunks.is_empty() {
                        requests.push((id, FragmentKind::Manifest, chunks));
                    }
                    let (k, total) = (d.params().k(), d.params().total());
                    let need = k.saturating_sub(d.received());
                    // Ask for a little more than needed, sources first (no decoding work),
                    // since retransmissions can be lost too.
                    let want = need + need / 8 + 1;
                    let missing: Vec<usize> = d.missing().take(want).collect();
                    let src: Vec<u16> = missing
                        .iter()
                        .filter(|&&i| i < k)
                        .map(|&i| i as u16)
                        .collect();
                    let rep: Vec<u16> = missing
                        .iter()
                        .filter(|&&i| i >= k && i < total)
                        .map(|&i| (i - k) as u16)
                        .collect();
                    if need > 0 && !src.is_empty() {
                        requests.push((id, FragmentKind::Source, src));
                    }
                    if need > 0 && !rep.is_empty() {
                        requests.push((id, FragmentKind::Repair, rep));
                    }
                }
                // No verified manifest yet: fragment 0 carries everything needed to ask for
                // the rest.
                _ => requests.push((id, FragmentKind::Manifest, vec![0])),
            }
        }
        for (stream, kind, mut missing) in requests {
            missing.truncate(wire::MAX_REPAIR_INDICES);
            self.stats.repair_requests += 1;
            self.events.push_back(Event::SendRepairRequest {
                stream,
                kind,
                missing,
            });
        }
    }
}

#[cfg(feature = "fuzzing")]
/// Fuzz entry (`fuzz/fuzz_targets/assembler.rs`, replayed by
/// `protocol/tests/fuzz_corpus_transport.rs`): splits `data` into datagrams (2-byte big-endian
/// length prefixes) and feeds them, with advancing fake time, to an assembler that trusts one
/// fixed test key, whose limits are small. Checks that memory stays within the configured bounds
/// and that nothing panics.
pub fn fuzz_assembler(data: &[u8]) {
    let config = AssemblerConfig {
        trusted_origins: vec![fuzz_origin()],
        max_streams: 4,
        max_buffered_bytes: 4 * 1024 * 1024,
        max_stream_bytes: 2 * 1024 * 1024,
        max_unverified_per_stream: 64,
        finished_history: 8,
        max_events: 256,
        ..AssemblerConfig::default()
    };
    let limits = (
        config.max_streams,
        config.max_buffered_bytes,
        config.max_events,
    );
    let mut a = Assembler::new(config);
    let t0 = Instant::now();
    let mut now = t0;
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
        let take = len.min(rest.len());
        let (dgram, tail) = rest.split_at(take);
        rest = tail;
        let _ = a.handle_datagram(now, dgram);
        now += Duration::from_millis(7);
        if let Some(t) = a.poll_timeout() {
            if t <= now {
                a.handle_timeout(now);
            }
        }
        while let Some(ev) = a.poll_event() {
            if let Event::SendRepairRequest { missing, .. } = ev {
                assert!(!missing.is_empty());
            }
        }
        assert!(a.active_streams() <= limits.0);
        assert!(a.buffered_bytes() <= limits.1);
        assert!(a.events.len() <= limits.2 + 2 * limits.0 + 4);
    }
}

#[cfg(feature = "fuzzing")]
/// The public key [`fuzz_assembler`] trusts: the Ed25519 key of seed `[0x5a; 32]`, so corpus
/// seeds can carry validly signed manifests.
pub fn fuzz_origin() -> [u8; PUBLIC_KEY_LEN] {
    ring::signature::Ed25519KeyPair::from_seed_unchecked(&[0x5a; 32])
        .map(|k| crate::integrity::public_key(&k))
        .unwrap_or([0; PUBLIC_KEY_LEN])
}
