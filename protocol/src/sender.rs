//! The sending side of one block stream, sans-IO (`docs/protocol.md` §7.1).
//!
//! [`EncodedStream::new`] FEC-encodes a sealed block (§3) and builds and signs its manifest
//! (§4.1), once. A [`Sender`] paces one destination's copy of an encoded stream: several senders
//! share one `Arc<EncodedStream>`, so sending a block to more destinations costs no further
//! encoding, hashing or signing. [`Sender::new`] does both steps for a single destination.
//!
//! A sender plans the datagrams: manifest source fragments, source shards, repair shards,
//! manifest repair fragments. The caller drives it, quinn style:
//!
//! 1. [`Sender::poll_transmit`] with the current time and a buffer, until it returns `None`;
//! 2. [`Sender::poll_timeout`] says when pacing allows the next datagram: wait until then, or
//!    until a repair request arrives ([`Sender::handle_repair_request`]), and go to 1.
//!
//! Pacing: a datagram of `n` bytes spends `n / rate` of time; up to `burst` datagrams may go
//! back to back after an idle spell, so a caller on a coarse timer still reaches the rate.
//! The library never reads a clock: every `now` comes from the caller.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::signature::Ed25519KeyPair;

use crate::fec::{self, Encoded, FecError, RepairPolicy};
use crate::integrity::{IntegrityError, SignedManifest};
use crate::wire::{self, FragmentKind, FragmentRepr};

/// Sender settings (§7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderConfig {
    /// Node id written in the header's sender field.
    pub node_id: u32,
    /// Pacing rate in bytes of datagram per second (0 = unpaced).
    pub rate_bytes_per_sec: u64,
    /// Datagrams that may leave back to back after an idle spell.
    pub burst: u32,
    /// How many repair shards the block gets (§3.3). Used by [`Sender::new`], which encodes;
    /// a sender over an [`EncodedStream`] sends the shards that stream was encoded with.
    pub repair: RepairPolicy,
    /// Most queued retransmissions; further requested indices are dropped (and counted).
    pub max_retransmit_queue: usize,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            node_id: 0,
            // 100 Mbit/s.
            rate_bytes_per_sec: 12_500_000,
            burst: 16,
            repair: RepairPolicy::DEFAULT,
            max_retransmit_queue: 4096,
        }
    }
}

impl SenderConfig {
    /// The defaults, unpaced: every datagram goes as soon as it is polled (simulations, tests,
    /// and tools that pace elsewhere).
    pub fn unpaced() -> SenderConfig {
        SenderConfig {
            rate_bytes_per_sec: 0,
            ..SenderConfig::default()
        }
    }
}

/// Why a sender could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SenderError {
    /// The block cannot be FEC-encoded (empty, too long).
    #[error("FEC: {0}")]
    Fec(#[from] FecError),
    /// The manifest cannot be built.
    #[error("manifest: {0}")]
    Integrity(#[from] IntegrityError),
}

/// Counters of one sender.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Datagrams emitted (first sends and retransmissions).
    pub datagrams: u64,
    /// Bytes emitted.
    pub bytes: u64,
    /// Retransmitted datagrams.
    pub retransmitted: u64,
    /// Requested indices that were out of range or did not fit the queue.
    pub requests_dropped: u64,
    /// `poll_transmit` calls given a buffer smaller than the datagram.
    pub buffer_too_small: u64,
}

/// A block encoded for sending: its FEC shards and signed manifest, made once and shared by
/// the [`Sender`] of every destination.
#[derive(Debug)]
pub struct EncodedStream {
    stream: u64,
    encoded: Encoded,
    manifest: SignedManifest,
}

impl EncodedStream {
    /// FEC-encodes `block` (sealed bytes) with `repair` and signs its manifest with `key`.
    pub fn new(
        stream: u64,
        block: &[u8],
        repair: &RepairPolicy,
        key: &Ed25519KeyPair,
    ) -> Result<Self, SenderError> {
        let shard_size = fec::shard_size_for(wire::max_fragment_payload(), 0)?;
        let encoded = Encoded::encode(block, shard_size, repair)?;
        let manifest = SignedManifest::build(stream, &encoded, key, wire::max_fragment_payload())?;
        Ok(EncodedStream {
            stream,
            encoded,
            manifest,
        })
    }

    /// The stream id.
    pub fn stream(&self) -> u64 {
        self.stream
    }

    /// The signed manifest (its hash is what receipts name).
    pub fn manifest(&self) -> &SignedManifest {
        &self.manifest
    }

    /// The encoded block.
    pub fn encoded(&self) -> &Encoded {
        &self.encoded
    }

    /// Datagrams of one first pass: every shard and every manifest fragment.
    pub fn datagrams(&self) -> usize {
        self.encoded.params().total() + self.manifest.fragment_count()
    }
}

/// One destination's sender of a block stream.
#[derive(Debug)]
pub struct Sender {
    config: SenderConfig,
    source: Arc<EncodedStream>,
    /// Position in the first-send plan.
    cursor: usize,
    retransmit: VecDeque<(FragmentKind, u16)>,
    /// Earliest time the next datagram may leave.
    next_send: Instant,
    stats: SenderStats,
}

impl Sender {
    /// FEC-encodes `block` (sealed bytes) with `config.repair`, signs its manifest with `key`
    /// and plans the stream for one destination.
    pub fn new(
        config: SenderConfig,
        stream: u64,
        block: &[u8],
        key: &Ed25519KeyPair,
        now: Instant,
    ) -> Result<Self, SenderError> {
        let source = EncodedStream::new(stream, block, &config.repair, key)?;
        Ok(Sender::for_stream(config, Arc::new(source), now))
    }

    /// A sender of an already encoded stream (shared with other destinations' senders).
    /// `config.repair` is not used: the stream's shards are already made.
    pub fn for_stream(config: SenderConfig, source: Arc<EncodedStream>, now: Instant) -> Self {
        Sender {
            config,
            source,
            cursor: 0,
            retransmit: VecDeque::new(),
            next_send: now,
            stats: SenderStats::default(),
        }
    }

    /// The encoded stream this sender sends.
    pub fn source(&self) -> &Arc<EncodedStream> {
        &self.source
    }

    /// The stream id.
    pub fn stream(&self) -> u64 {
        self.source.stream
    }

    /// The signed manifest (its hash is what receipts name).
    pub fn manifest(&self) -> &SignedManifest {
        &self.source.manifest
    }

    /// The encoded block.
    pub fn encoded(&self) -> &Encoded {
        &self.source.encoded
    }

    /// Counters.
    pub fn stats(&self) -> &SenderStats {
        &self.stats
    }

    fn plan_len(&self) -> usize {
        self.source.datagrams()
    }

    /// The fragment at plan position `pos`: manifest `0..Km`, source, repair, manifest `Km..`.
    fn planned(&self, pos: usize) -> Option<(FragmentKind, u16)> {
        let km = usize::from(self.source.manifest.meta().chunk_count);
        let (k, r) = (
            self.source.encoded.params().k(),
            self.source.encoded.params().r(),
        );
        let id = if pos < km {
            (FragmentKind::Manifest, pos)
        } else if pos < km + k {
            (FragmentKind::Source, pos - km)
        } else if pos < km + k + r {
            (FragmentKind::Repair, pos - km - k)
        } else if pos < self.plan_len() {
            (FragmentKind::Manifest, pos - k - r)
        } else {
            return None;
        };
        // Every index is below 32768 (FecParams) or 1024 (manifest): fits u16.
        Some((id.0, id.1 as u16))
    }

    /// Whether every planned datagram went out and no retransmission is queued.
    pub fn is_idle(&self) -> bool {
        self.cursor >= self.plan_len() && self.retransmit.is_empty()
    }

    /// Queues retransmission of fragments a receiver reported missing (§2.7). Retransmissions go
    /// before what remains of the plan. Indices out of range are dropped and counted.
    pub fn handle_repair_request(&mut self, kind: FragmentKind, missing: &[u16]) {
        let limit = match kind {
            FragmentKind::Source => self.source.encoded.params().k(),
            FragmentKind::Repair => self.source.encoded.params().r(),
            FragmentKind::Manifest => self.source.manifest.fragment_count(),
        };
        for &i in missing {
            if usize::from(i) >= limit || self.retransmit.len() >= self.config.max_retransmit_queue
            {
                self.stats.requests_dropped += 1;
            } else if !self.retransmit.contains(&(kind, i)) {
                self.retransmit.push_back((kind, i));
            }
        }
    }

    /// When pacing allows the next datagram; `None` when there is nothing to send.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.is_idle()).then_some(self.next_send)
    }

    /// Writes the next datagram into `buf` (at least [`wire::MAX_DATAGRAM`] bytes) and returns
    /// its length; `None` if pacing does not allow one yet or nothing is left. The header's hop
    /// tag is left zero for the caller's per-hop authentication (§4.2).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if self.is_idle() || now < self.next_send {
            return None;
        }
        let (id, retransmit) = match self.retransmit.front() {
            Some(&id) => (id, true),
            None => (self.planned(self.cursor)?, false),
        };
        let len = match self.emit(id, retransmit, buf) {
            Some(len) => len,
            None => {
                self.stats.buffer_too_small += 1;
                return None;
            }
        };
        if retransmit {
            self.retransmit.pop_front();
            self.stats.retransmitted += 1;
        } else {
            self.cursor += 1;
        }
        self.stats.datagrams += 1;
        self.stats.bytes += len as u64;
        self.pace(now, len);
        Some(len)
    }

    fn pace(&mut self, now: Instant, len: usize) {
        let rate = self.config.rate_bytes_per_sec;
        if rate == 0 {
            return;
        }
        let cost = Duration::from_nanos((len as u64).saturating_mul(1_000_000_000) / rate);
        // After an idle spell, credit at most `burst` datagrams' worth of time.
        let credit = cost
            .checked_mul(self.config.burst.saturating_sub(1))
            .unwrap_or(Duration::MAX);
        let floor = now.checked_sub(credit).unwrap_or(now);
        let start = self.next_send.max(floor);
        self.next_send = start.checked_add(cost).unwrap_or(start);
    }

    fn emit(
        &self,
        (kind, index): (FragmentKind, u16),
        retransmit: bool,
        buf: &mut [u8],
    ) -> Option<usize> {
        let params = self.source.encoded.params();
        let mut manifest_buf = [0u8; wire::MAX_DATAGRAM];
        let (payload, count): (&[u8], usize) = match kind {
            FragmentKind::Source => (self.source.encoded.shard(usize::from(index))?, params.k()),
            FragmentKind::Repair => (
                self.source.encoded.shard(params.k() + usize::from(index))?,
                params.r(),
            ),
            FragmentKind::Manifest => {
                let n = self
                    .source
                    .manifest
                    .emit_fragment(usize::from(index), &mut manifest_buf)
                    .ok()?;
                (&manifest_buf[..n], self.source.manifest.fragment_count())
            }
        };
        let repr = FragmentRepr {
            kind,
            stream: self.source.stream,
            index,
            count: count as u16,
            k: params.source_count,
            r: params.repair_count,
            payload,
        };
        let flags = if retransmit {
            wire::flags::RETRANSMIT
        } else {
            0
        };
        repr.emit(self.config.node_id, flags, 0, buf).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::own_stream_id;
    use crate::wire::Packet;

    fn key() -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[3; 32]).unwrap()
    }

    #[test]
    fn plan_order_and_pacing() {
        let t0 = Instant::now();
        let cfg = SenderConfig {
            rate_bytes_per_sec: 1_232_000,
            burst: 1,
            ..SenderConfig::default()
        };
        let block = vec![9u8; 10_000];
        let mut s = Sender::new(cfg, own_stream_id(&key(), 5), &block, &key(), t0).unwrap();
        let (k, r) = (s.encoded().params().k(), s.encoded().params().r());
        let m = s.manifest().fragment_count();
        let km = usize::from(s.manifest().meta().chunk_count);
        let mut buf = [0u8; wire::MAX_DATAGRAM];
        let mut kinds = Vec::new();
        let mut now = t0;
        while let Some(deadline) = s.poll_timeout() {
            assert!(
                s.poll_transmit(deadline - Duration::from_nanos(1), &mut buf)
                    .is_none()
                    || deadline == now
            );
            now = deadline;
            let n = s.poll_transmit(now, &mut buf).unwrap();
            let p = Packet::new_checked(&buf[..n]).unwrap();
            let f = FragmentRepr::parse(&p).unwrap();
            kinds.push((f.kind, f.index));
        }
        assert_eq!(kinds.len(), k + r + m);
        assert!(kinds[..km].iter().all(|x| x.0 == FragmentKind::Manifest));
        assert_eq!(kinds[km], (FragmentKind::Source, 0));
        assert_eq!(kinds[km + k], (FragmentKind::Repair, 0));
        assert_eq!(
            *kinds.last().unwrap(),
            (FragmentKind::Manifest, (m - 1) as u16)
        );
        // 1232-byte datagrams at 1,232,000 B/s: 1 ms each, no burst credit.
        assert!(now - t0 >= Duration::from_millis((k + r + m - 1) as u64 - 1));
        assert_eq!(s.stats().datagrams as usize, k + r + m);
    }

    #[test]
    fn repair_requests_are_bounded() {
        let t0 = Instant::now();
        let cfg = SenderConfig {
            max_retransmit_queue: 2,
            ..SenderConfig::unpaced()
        };
        let mut s = Sender::new(cfg, own_stream_id(&key(), 5), &[1u8; 5000], &key(), t0).unwrap();
        let mut buf = [0u8; wire::MAX_DATAGRAM];
        while s.poll_transmit(t0, &mut buf).is_some() {}
        assert!(s.is_idle());
        s.handle_repair_request(FragmentKind::Source, &[0, 0, 1, 2, 999]);
        assert_eq!(s.stats().requests_dropped, 2);
        let n = s.poll_transmit(t0, &mut buf).unwrap();
        let p = Packet::new_checked(&buf[..n]).unwrap();
        assert_eq!(p.flags() & wire::flags::RETRANSMIT, wire::flags::RETRANSMIT);
        assert_eq!(p.index(), 0);
        assert!(s.poll_transmit(t0, &mut buf).is_some());
        assert!(s.poll_transmit(t0, &mut buf).is_none());
        assert!(matches!(
            Sender::new(cfg, own_stream_id(&key(), 5), &[], &key(), t0),
            Err(SenderError::Fec(FecError::EmptyBlock))
        ));
    }

    #[test]
    fn senders_of_one_encoded_stream_send_what_new_sends() {
        let t0 = Instant::now();
        let cfg = SenderConfig::unpaced();
        let block = vec![7u8; 30_000];
        let shared = Arc::new(
            EncodedStream::new(own_stream_id(&key(), 9), &block, &cfg.repair, &key()).unwrap(),
        );
        let mut a = Sender::for_stream(cfg, Arc::clone(&shared), t0);
        let mut b = Sender::for_stream(cfg, Arc::clone(&shared), t0);
        let mut alone = Sender::new(cfg, own_stream_id(&key(), 9), &block, &key(), t0).unwrap();
        assert!(Arc::ptr_eq(a.source(), b.source()));
        assert_eq!(
            a.manifest().manifest_hash(),
            alone.manifest().manifest_hash()
        );
        let (mut x, mut y, mut z) = (
            [0u8; wire::MAX_DATAGRAM],
            [0u8; wire::MAX_DATAGRAM],
            [0u8; wire::MAX_DATAGRAM],
        );
        let mut n = 0;
        while let Some(len) = alone.poll_transmit(t0, &mut z) {
            assert_eq!(a.poll_transmit(t0, &mut x), Some(len));
            assert_eq!(b.poll_transmit(t0, &mut y), Some(len));
            assert_eq!(x[..len], z[..len]);
            assert_eq!(y[..len], z[..len]);
            n += 1;
        }
        assert_eq!(n, shared.datagrams());
        assert!(a.is_idle() && b.is_idle());
        // Each destination keeps its own plan and retransmissions.
        a.handle_repair_request(FragmentKind::Source, &[1]);
        assert!(!a.is_idle() && b.is_idle());
    }
}
