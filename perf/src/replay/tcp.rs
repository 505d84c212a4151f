//! TCP stream reassembly of captured segments, feeding one [`StreamDecoder`] per direction.
//!
//! Sans-IO: the caller passes each segment with its capture time ([`Reassembler::handle_segment`])
//! and finally calls [`Reassembler::finish`]; decoded frames come out through a callback.
//!
//! Per direction (keyed by the 4-tuple) the reassembler keeps the next expected stream offset
//! and the out-of-order segments beyond it. Retransmissions and overlaps are trimmed against
//! what was already delivered. A hole that stays open is a segment the capture lost (the
//! sender's retransmission would otherwise have filled it): after `hole_timeout` of capture time,
//! when the held bytes pass `max_pending_bytes`, at FIN/RST or at the end of the capture, the
//! reassembler skips it and the decoder resynchronises on the next Bitcoin magic.
//!
//! A frame's timestamp is the capture time at which its last byte became available in order:
//! the arrival of the segment that completed it, or of the retransmission that filled the hole
//! in front of it. Bytes released by skipping a lost segment keep their own capture time.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use super::p2p::{Frame, FrameStats, StreamDecoder};

/// One direction of a TCP connection, as seen on one capture interface: captures of several
/// hosts merged into one pcapng may hold the same addresses (private ranges, loopback) for
/// different connections, so the interface is part of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct FlowKey {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// The pcapng interface id (0 in a pcap file).
    pub interface: u32,
}

impl std::fmt::Display for FlowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.interface != 0 {
            write!(f, "if{} ", self.interface)?;
        }
        write!(f, "{} -> {}", self.src, self.dst)
    }
}

/// Limits of the reassembler.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// Directions tracked at once; segments of further new directions are counted and dropped.
    pub max_flows: usize,
    /// Out-of-order bytes held per direction before the hole in front of them is skipped.
    pub max_pending_bytes: usize,
    /// A hole open for this long (capture time, nanoseconds) is a lost segment and is skipped.
    pub hole_timeout_ns: u64,
}

impl Default for TcpConfig {
    /// 65,536 directions, 8 MiB held per direction, 1 s hole timeout (Linux's minimum RTO is
    /// 200 ms: a real retransmission comes well before).
    fn default() -> Self {
        TcpConfig {
            max_flows: 65_536,
            max_pending_bytes: 8 << 20,
            hole_timeout_ns: 1_000_000_000,
        }
    }
}

/// Counters of the reassembler (its decoders' counters are summed into `frames`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TcpStats {
    pub segments: u64,
    pub payload_bytes: u64,
    /// Directions seen (including closed ones).
    pub flows: u64,
    /// Directions whose first segment was not a SYN: the capture started mid-stream.
    pub mid_stream_flows: u64,
    /// Segments dropped because `max_flows` directions were already tracked.
    pub flows_refused: u64,
    /// Bytes received again (retransmissions, overlaps), trimmed.
    pub duplicate_bytes: u64,
    /// Segments that arrived ahead of a hole.
    pub out_of_order_segments: u64,
    /// Holes skipped (segments the capture lost).
    pub holes_skipped: u64,
    /// Bytes in those holes.
    pub hole_bytes: u64,
    /// Framing counters of all directions.
    pub frames: FrameStats,
}

#[derive(Debug)]
struct Pending {
    bytes: Vec<u8>,
    ts_ns: u64,
}

#[derive(Debug)]
struct Flow {
    /// Sequence number of stream offset 0.
    isn: u32,
    /// Next stream offset expected in order.
    next: u64,
    pending: BTreeMap<u64, Pending>,
    pending_bytes: usize,
    hole_since_ns: Option<u64>,
    decoder: StreamDecoder,
}

impl Flow {
    /// Stream offset of `seq`: the 64-bit offset closest to `next` (sequence numbers wrap).
    fn offset(&self, seq: u32) -> u64 {
        const WRAP: u64 = 1 << 32;
        let rel = u64::from(seq.wrapping_sub(self.isn));
        let mut cand = (self.next & !(WRAP - 1)) | rel;
        if cand + WRAP / 2 < self.next {
            cand += WRAP;
        } else if cand > self.next + WRAP / 2 && cand >= WRAP {
            cand -= WRAP;
        }
        cand
    }
}

/// A decoded frame with the direction it travelled and its capture time.
pub type TcpFrame = (FlowKey, Frame<u64>);

/// The reassembler. See the module docs.
#[derive(Debug, Default)]
pub struct Reassembler {
    config: TcpConfig,
    flows: HashMap<FlowKey, Flow>,
    stats: TcpStats,
    /// Framing counters of directions already closed.
    closed_frames: FrameStats,
}

impl Reassembler {
    pub fn new(config: TcpConfig) -> Self {
        Reassembler {
            config,
            ..Reassembler::default()
        }
    }

    /// Counters so far, including those of the decoders of open directions.
    pub fn stats(&self) -> TcpStats {
        let mut s = self.stats.clone();
        s.frames = self.closed_frames.clone();
        for f in self.flows.values() {
            add_frame_stats(&mut s.frames, f.decoder.stats());
        }
        s
    }

    /// Directions currently tracked.
    pub fn open_flows(&self) -> usize {
        self.flows.len()
    }

    /// One captured TCP segment. `ts_ns` is its capture time (unix nanoseconds).
    #[allow(clippy::too_many_arguments)]
    pub fn handle_segment(
        &mut self,
        ts_ns: u64,
        key: FlowKey,
        seq: u32,
        syn: bool,
        fin: bool,
        rst: bool,
        payload: &[u8],
        out: &mut impl FnMut(TcpFrame),
    ) {
        self.stats.segments += 1;
        self.stats.payload_bytes += payload.len() as u64;
        if syn {
            // A new connection on this 4-tuple: whatever was open is over.
            self.close(key, out);
        }
        if !self.flows.contains_key(&key) {
            if payload.is_empty() && !syn {
                return; // a pure ACK of a connection we did not see start
            }
            if self.flows.len() >= self.config.max_flows {
                self.stats.flows_refused += 1;
                return;
            }
            self.stats.flows += 1;
            if !syn {
                self.stats.mid_stream_flows += 1;
            }
            self.flows.insert(
                key,
                Flow {
                    isn: seq,
                    // SYN occupies one sequence number; data starts after it.
                    next: u64::from(syn),
                    pending: BTreeMap::new(),
                    pending_bytes: 0,
                    hole_since_ns: None,
                    decoder: StreamDecoder::new(syn),
                },
            );
        }
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        if !payload.is_empty() {
            let start = flow.offset(seq.wrapping_add(u32::from(syn)));
            insert_segment(flow, &mut self.stats, start, payload, ts_ns, key, out);
            while let Some(since) = flow.hole_since_ns {
                let expired = ts_ns.saturating_sub(since) > self.config.hole_timeout_ns;
                if !expired && flow.pending_bytes <= self.config.max_pending_bytes {
                    break;
                }
                skip_hole(flow, &mut self.stats, key, out);
            }
        }
        if fin || rst {
            self.close(key, out);
        }
    }

    /// End of the capture: every hole left is skipped, every direction closed.
    pub fn finish(&mut self, out: &mut impl FnMut(TcpFrame)) {
        let keys: Vec<FlowKey> = self.flows.keys().copied().collect();
        for key in keys {
            self.close(key, out);
        }
    }

    fn close(&mut self, key: FlowKey, out: &mut impl FnMut(TcpFrame)) {
        let Some(mut flow) = self.flows.remove(&key) else {
            return;
        };
        while !flow.pending.is_empty() {
            skip_hole(&mut flow, &mut self.stats, key, out);
        }
        add_frame_stats(&mut self.closed_frames, flow.decoder.stats());
        self.closed_frames.skipped_bytes += flow.decoder.buffered() as u64;
    }
}

fn add_frame_stats(sum: &mut FrameStats, s: &FrameStats) {
    sum.frames += s.frames;
    sum.undecodable += s.undecodable;
    sum.skipped_bytes += s.skipped_bytes;
    sum.resyncs += s.resyncs;
    sum.false_magics += s.false_magics;
    sum.legacy_headers += s.legacy_headers;
    sum.version_without_relay += s.version_without_relay;
}

/// Deliver in-order bytes to the decoder.
fn deliver(
    flow: &mut Flow,
    bytes: &[u8],
    ts_ns: u64,
    key: FlowKey,
    out: &mut impl FnMut(TcpFrame),
) {
    flow.next += bytes.len() as u64;
    flow.decoder
        .push(bytes, ts_ns, &mut |frame: Frame<u64>| out((key, frame)));
}

fn insert_segment(
    flow: &mut Flow,
    stats: &mut TcpStats,
    start: u64,
    payload: &[u8],
    ts_ns: u64,
    key: FlowKey,
    out: &mut impl FnMut(TcpFrame),
) {
    let end = start + payload.len() as u64;
    if end <= flow.next {
        stats.duplicate_bytes += payload.len() as u64;
        return;
    }
    if start > flow.next {
        stats.out_of_order_segments += 1;
        let len = payload.len();
        match flow.pending.get_mut(&start) {
            Some(p) if p.bytes.len() >= len => stats.duplicate_bytes += len as u64,
            Some(p) => {
                stats.duplicate_bytes += p.bytes.len() as u64;
                flow.pending_bytes += len - p.bytes.len();
                p.bytes = payload.to_vec();
            }
            None => {
                flow.pending_bytes += len;
                flow.pending.insert(
                    start,
                    Pending {
                        bytes: payload.to_vec(),
                        ts_ns,
                    },
                );
            }
        }
        flow.hole_since_ns.get_or_insert(ts_ns);
        return;
    }
    let trim = (flow.next - start) as usize;
    stats.duplicate_bytes += trim as u64;
    deliver(flow, &payload[trim..], ts_ns, key, out);
    // The hole (if any) may be filled now: bytes held behind it became available at `ts_ns`.
    drain_pending(flow, stats, Some(ts_ns), key, out);
}

/// Deliver held segments that are now in order. `filled_at`: the time the hole in front of them
/// was filled (their bytes become available then), or `None` when a lost segment was skipped
/// (they keep their own capture time).
fn drain_pending(
    flow: &mut Flow,
    stats: &mut TcpStats,
    filled_at: Option<u64>,
    key: FlowKey,
    out: &mut impl FnMut(TcpFrame),
) {
    while let Some(entry) = flow.pending.first_entry() {
        let start = *entry.key();
        if start > flow.next {
            break;
        }
        let p = entry.remove();
        flow.pending_bytes -= p.bytes.len();
        let end = start + p.bytes.len() as u64;
        if end <= flow.next {
            stats.duplicate_bytes += p.bytes.len() as u64;
            continue;
        }
        let trim = (flow.next - start) as usize;
        stats.duplicate_bytes += trim as u64;
        let ts = filled_at.map_or(p.ts_ns, |t| t.max(p.ts_ns));
        deliver(flow, &p.bytes[trim..], ts, key, out);
    }
    flow.hole_since_ns = if flow.pending.is_empty() {
        None
    } else {
        flow.hole_since_ns.or(filled_at)
    };
}

/// The segment in front of the held ones is lost: jump over the hole and resynchronise.
fn skip_hole(flow: &mut Flow, stats: &mut TcpStats, key: FlowKey, out: &mut impl FnMut(TcpFrame)) {
    let Some((&start, p)) = flow.pending.first_key_value() else {
        return;
    };
    let since = p.ts_ns;
    if start > flow.next {
        stats.holes_skipped += 1;
        stats.hole_bytes += start - flow.next;
        flow.next = start;
        flow.decoder.gap();
    }
    drain_pending(flow, stats, None, key, out);
    if !flow.pending.is_empty() {
        // The next hole counts from the first segment held behind it.
        flow.hole_since_ns = flow
            .pending
            .first_key_value()
            .map(|(_, p)| p.ts_ns.max(since));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::consensus::encode::serialize;
    use bitcoin::p2p::message::{NetworkMessage, RawNetworkMessage};
    use bitcoin::p2p::Magic;

    fn key() -> FlowKey {
        FlowKey {
            src: "10.0.0.1:5000".parse().unwrap(),
            dst: "10.0.0.2:8333".parse().unwrap(),
            interface: 0,
        }
    }

    fn frame(n: u64) -> Vec<u8> {
        serialize(&RawNetworkMessage::new(
            Magic::BITCOIN,
            NetworkMessage::Ping(n),
        ))
    }

    /// Runs segments `(ts, seq, syn, payload)` and returns (nonce, ts) of each ping.
    fn run(cfg: TcpConfig, segs: &[(u64, u32, bool, Vec<u8>)]) -> (Vec<(u64, u64)>, TcpStats) {
        let mut r = Reassembler::new(cfg);
        let mut got = Vec::new();
        let mut out = |(_, f): TcpFrame| {
            if let NetworkMessage::Ping(n) = f.message {
                got.push((n, f.tag));
            }
        };
        for (ts, seq, syn, p) in segs {
            r.handle_segment(*ts, key(), *seq, *syn, false, false, p, &mut out);
        }
        r.finish(&mut out);
        let stats = r.stats();
        (got, stats)
    }

    #[test]
    fn out_of_order_and_retransmission() {
        let (a, b) = (frame(1), frame(2));
        let isn = u32::MAX - 10; // wraps inside the stream
        let s1 = isn.wrapping_add(1);
        let s2 = s1.wrapping_add(a.len() as u32);
        let segs = vec![
            (0, isn, true, vec![]),
            (10, s2, false, b.clone()), // ahead of the hole
            (20, s1, false, a.clone()), // fills it
            (30, s1, false, a.clone()), // retransmission
        ];
        let (got, stats) = run(TcpConfig::default(), &segs);
        assert_eq!(got, vec![(1, 20), (2, 20)]);
        assert_eq!(stats.duplicate_bytes, a.len() as u64);
        assert_eq!(stats.out_of_order_segments, 1);
        assert_eq!(stats.holes_skipped, 0);
    }

    #[test]
    fn overlapping_segments_are_trimmed() {
        let mut stream = frame(1);
        stream.extend(frame(2));
        let segs = vec![
            (0, 99, true, vec![]),
            (1, 100, false, stream[..30].to_vec()),
            (2, 110, false, stream[10..50].to_vec()),
            (3, 140, false, stream[40..].to_vec()),
        ];
        let (got, stats) = run(TcpConfig::default(), &segs);
        assert_eq!(got, vec![(1, 2), (2, 3)]);
        assert_eq!(stats.duplicate_bytes, 20 + 10);
    }

    #[test]
    fn lost_segment_is_skipped_after_timeout() {
        let (a, b, c) = (frame(1), frame(2), frame(3));
        let base = 1000u32;
        let sb = base + a.len() as u32;
        let sc = sb + b.len() as u32;
        let segs = vec![
            (0, base - 1, true, vec![]),
            (1, base, false, a.clone()),
            // b lost by the capture
            (2, sc, false, c.clone()),
            (3_000_000_000, sc + c.len() as u32, false, frame(4)),
        ];
        let (got, stats) = run(TcpConfig::default(), &segs);
        assert_eq!(got, vec![(1, 1), (3, 2), (4, 3_000_000_000)]);
        assert_eq!(stats.holes_skipped, 1);
        assert_eq!(stats.hole_bytes, b.len() as u64);
        assert_eq!(stats.frames.resyncs, 1);
    }

    #[test]
    fn mid_stream_start() {
        let (a, b) = (frame(1), frame(2));
        let mut stream = a[7..].to_vec();
        stream.extend(&b);
        let segs = vec![(5, 777, false, stream)];
        let (got, stats) = run(TcpConfig::default(), &segs);
        assert_eq!(got, vec![(2, 5)]);
        assert_eq!(stats.mid_stream_flows, 1);
    }

    #[test]
    fn pending_bound_forces_skip() {
        let cfg = TcpConfig {
            max_pending_bytes: 64,
            ..TcpConfig::default()
        };
        let frames: Vec<Vec<u8>> = (0..6).map(frame).collect();
        let mut segs = vec![(0, 0, true, vec![])];
        let mut seq = 1u32;
        for (i, f) in frames.iter().enumerate() {
            if i != 1 {
                segs.push((i as u64, seq, false, f.clone()));
            }
            seq += f.len() as u32;
        }
        let (got, stats) = run(cfg, &segs);
        let nonces: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(nonces, vec![0, 2, 3, 4, 5]);
        assert_eq!(stats.holes_skipped, 1);
    }
}
