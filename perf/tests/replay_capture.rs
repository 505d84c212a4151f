//! Replay input A: a committed capture written by tcpdump on loopback, synthetic frames
//! (mid-stream start, dropped segment, reordering and retransmission, UDP and non-Bitcoin TCP),
//! and random input that must never panic. The live tcpdump capture is in replay_tcpdump.rs.

mod common;

use bitcoin::p2p::message::NetworkMessage;
use common::*;
use etherparse::PacketBuilder;
use pcap_parser::Linktype;
use photon_perf::replay::{
    read_capture, read_capture_all, CapturedMessage, PacketExtractor, TcpConfig,
};
use proptest::prelude::*;

/// A capture recorded once with `record_loopback` (tcpdump 4.99 on loopback) and committed, so
/// the real-capture path is tested where tcpdump cannot run.
#[test]
fn committed_capture() {
    let path = data("tests/data/bitcoin-lo.pcap");
    let (msgs, stats) = read_capture_all(&path, TcpConfig::default()).unwrap();
    check_loopback_capture(&msgs, &block(227836));
    assert!(stats.non_tcp >= 5);
    assert!(stats.stopped_early.is_none());
    // The same capture as a replay trace: the tx and block at first sight; the block's other
    // transactions were never seen as `tx`.
    let trace = photon_perf::trace::Trace::from_capture(&msgs);
    let c = trace.counts();
    let b = block(227836);
    assert_eq!((c.txs, c.blocks, c.missing), (1, 1, b.txdata.len() - 2));
}

// ---- synthetic frames ----

const CLIENT: [u8; 4] = [10, 0, 0, 1];
const SERVER: [u8; 4] = [10, 0, 0, 2];

fn tcp_frame(sport: u16, seq: u32, syn: bool, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(CLIENT, SERVER, 64)
        .tcp(sport, 8333, seq, 65_535);
    let b = if syn { b.syn() } else { b.ack(1) };
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

fn udp_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4(CLIENT, SERVER, 64)
        .udp(9999, 8333)
        .write(&mut out, payload)
        .unwrap();
    out
}

fn extract(frames: &[(u64, Vec<u8>)]) -> (Vec<CapturedMessage>, photon_perf::replay::CaptureStats) {
    let mut ex = PacketExtractor::new(TcpConfig::default());
    let mut msgs = Vec::new();
    for (ts, f) in frames {
        ex.handle_frame(*ts, Linktype::ETHERNET, f, f.len(), &mut |m| msgs.push(m));
    }
    let stats = ex.finish(&mut |m| msgs.push(m));
    (msgs, stats)
}

/// Splits a stream into TCP frames of at most `mss` bytes from sequence number `seq`.
fn segments(sport: u16, mut seq: u32, stream: &[u8], mss: usize, t0: u64) -> Vec<(u64, Vec<u8>)> {
    stream
        .chunks(mss)
        .enumerate()
        .map(|(i, c)| {
            let f = (t0 + i as u64 * 1000, tcp_frame(sport, seq, false, c));
            seq = seq.wrapping_add(c.len() as u32);
            f
        })
        .collect()
}

#[test]
fn synthetic_mid_stream_dropped_segment_and_other_traffic() {
    let b = block(227835);
    let convo = conversation(5, &b);
    let stream = wire(&convo);

    // Connection 1: the capture starts 10 bytes into the version message.
    let mut frames = segments(40_001, 1_000, &stream[10..], 1_400, 1_000);
    // Connection 2: complete, but the capture lost one segment in the middle of the block.
    let mut c2 = vec![(500, tcp_frame(40_002, 0xffff_ff00, true, &[]))];
    let mut seg2 = segments(40_002, 0xffff_ff01, &stream, 1_400, 2_000);
    let lost_at = seg2.len() / 2;
    seg2.remove(lost_at);
    c2.extend(seg2);
    // Connection 3: not Bitcoin at all.
    let junk: Vec<u8> = (0..20_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
    let mut c3 = vec![(600, tcp_frame(40_003, 5, true, &[]))];
    c3.extend(segments(40_003, 6, &junk, 1_400, 3_000));
    // Interleave everything, plus UDP and a frame that is not IP.
    frames.extend(c2);
    frames.extend(c3);
    frames.push((700, udp_frame(b"hello")));
    frames.push((800, vec![0u8; 20]));
    frames.sort_by_key(|(t, _)| *t);
    let (msgs, stats) = extract(&frames);

    let by_port = |p: u16| -> Vec<NetworkMessage> {
        msgs.iter()
            .filter(|m| m.flow.src.port() == p)
            .map(|m| m.message.clone())
            .collect()
    };
    // Mid-stream: everything after the cut version.
    assert_eq!(by_port(40_001), kept(&convo)[1..].to_vec());
    // Dropped segment inside the block: the block is lost, the stream resynchronises on the
    // next magic and the headers after it come through.
    let cmds: Vec<&str> = msgs
        .iter()
        .filter(|m| m.flow.src.port() == 40_002)
        .map(|m| m.message.cmd())
        .collect();
    assert_eq!(cmds, ["version", "inv", "tx", "headers"]);
    assert!(by_port(40_003).is_empty());
    assert_eq!(stats.tcp.holes_skipped, 1);
    assert_eq!(stats.tcp.mid_stream_flows, 1);
    assert_eq!(stats.non_tcp, 1);
    assert!(stats.non_ip + stats.malformed >= 1);
}

#[test]
fn reordered_and_retransmitted_segments() {
    let b = block(227836);
    let stream = wire(&conversation(9, &b));
    let mut frames = vec![(0, tcp_frame(50_000, 0, true, &[]))];
    let mut segs = segments(50_000, 1, &stream, 1_000, 10);
    // Swap neighbours, and retransmit every 5th segment late.
    for i in (0..segs.len() - 1).step_by(2) {
        segs.swap(i, i + 1);
    }
    let retrans: Vec<(u64, Vec<u8>)> = segs.iter().step_by(5).cloned().collect();
    frames.extend(segs);
    frames.extend(retrans);
    let ts: Vec<u64> = (0..frames.len() as u64).collect();
    let frames: Vec<(u64, Vec<u8>)> = ts
        .into_iter()
        .zip(frames.into_iter().map(|f| f.1))
        .collect();
    let (msgs, stats) = extract(&frames);
    let got: Vec<NetworkMessage> = msgs.into_iter().map(|m| m.message).collect();
    assert_eq!(got, kept(&conversation(9, &b)));
    assert_eq!(stats.tcp.holes_skipped, 0);
    assert!(stats.tcp.duplicate_bytes > 0);
}

#[test]
fn not_a_capture_is_a_typed_error() {
    let dir = std::env::temp_dir().join(format!("photon-notcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("x.pcap");
    std::fs::write(&p, b"definitely not a capture file, just text").unwrap();
    assert!(read_capture(&p, TcpConfig::default(), |_| {}).is_err());
    assert!(read_capture(&dir.join("missing.pcap"), TcpConfig::default(), |_| {}).is_err());
    // A real capture cut short is read up to the cut, and says so.
    let full = std::fs::read(data("tests/data/bitcoin-lo.pcap")).unwrap();
    std::fs::write(&p, &full[..full.len() * 2 / 3]).unwrap();
    let stats = read_capture(&p, TcpConfig::default(), |_| {}).unwrap();
    assert!(stats.stopped_early.is_some());
    let _ = std::fs::remove_dir_all(&dir);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random frames (Ethernet and raw IP) never panic.
    #[test]
    fn random_frames_never_panic(frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..40)) {
        let mut ex = PacketExtractor::new(TcpConfig::default());
        for (i, f) in frames.iter().enumerate() {
            let lt = if i % 2 == 0 { Linktype::ETHERNET } else { Linktype::RAW };
            ex.handle_frame(i as u64, lt, f, f.len(), &mut |_| {});
        }
        let _ = ex.finish(&mut |_| {});
    }

    /// TCP segments with random payloads, sequence numbers and flags never panic.
    #[test]
    fn random_segments_never_panic(segs in prop::collection::vec((any::<u32>(), any::<bool>(), prop::collection::vec(any::<u8>(), 0..200)), 0..60)) {
        let mut frames = Vec::new();
        for (i, (seq, syn, p)) in segs.iter().enumerate() {
            frames.push((i as u64 * 400_000_000, tcp_frame(1000 + (i % 3) as u16, *seq, *syn, p)));
        }
        let _ = extract(&frames);
    }

    /// Random files (with a valid pcap or pcapng start, or none) never panic.
    #[test]
    fn random_files_never_panic(body in prop::collection::vec(any::<u8>(), 0..2000), kind in 0u8..3) {
        let mut bytes = match kind {
            0 => vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0],
            1 => std::fs::read(data("tests/data/bitcoin-lo.pcap")).unwrap()[..24].to_vec(),
            _ => Vec::new(),
        };
        bytes.extend(body);
        let p = std::env::temp_dir().join(format!("photon-fuzz-{}-{kind}", std::process::id()));
        std::fs::write(&p, &bytes).unwrap();
        let _ = read_capture(&p, TcpConfig::default(), |_| {});
        let _ = std::fs::remove_file(&p);
    }
}
