//! Replays every file of `fuzz/corpus/capture/` through the fuzz entry
//! `photon_perf::replay::fuzz_capture`, so `cargo test` re-checks what the fuzzer found.
//!
//! `PHOTON_WRITE_SEEDS=1 cargo test -p photon-perf --test fuzz_corpus_capture` (re)writes the
//! `seed_*` files: small pcap and pcapng captures of a Bitcoin conversation (Ethernet, SLL2 with
//! IPv6, two interfaces), one with the pre-2012 20-byte headers, one cut short, one whose record
//! length is corrupt, the first 4 KB of the committed 2011 mainnet capture.

mod common;
#[path = "../../fuzz/corpus_replay.rs"]
mod corpus_replay;

use bitcoin::consensus::encode::serialize;
use bitcoin::p2p::message::{NetworkMessage, RawNetworkMessage};
use bitcoin::p2p::Magic;
use common::*;
use etherparse::PacketBuilder;
use pcap_parser::Linktype;
use photon_perf::replay::fuzz_capture;
use photon_perf::replay::write::{pcap_bytes, pcapng_bytes, Packet};

fn frames(v6: bool, stream: &[u8], mss: usize, interface: u32) -> Vec<Packet> {
    let mut out = Vec::new();
    let mut seq = 100u32;
    for (i, c) in std::iter::once(&[][..])
        .chain(stream.chunks(mss))
        .enumerate()
    {
        let mut data = Vec::new();
        let b = PacketBuilder::ethernet2([2; 6], [4; 6]);
        let b = if v6 {
            b.ipv6([0xfd; 16], [0xfe; 16], 64)
        } else {
            b.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        };
        let t = b.tcp(8333, 40_000, seq, 1000);
        let t = if i == 0 { t.syn() } else { t.ack(1) };
        t.write(&mut data, c).unwrap();
        seq = seq.wrapping_add(c.len() as u32 + u32::from(i == 0));
        out.push(Packet {
            interface,
            ts_ns: 1_000_000_000 + i as u64 * 1_000,
            data,
        });
    }
    out
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let msgs = [
        version(1),
        NetworkMessage::Verack,
        NetworkMessage::Ping(3),
        NetworkMessage::Tx(block(227836).txdata[1].clone()),
        NetworkMessage::Headers(vec![block(227836).header]),
    ];
    let stream = wire(&msgs);
    let pcap = pcap_bytes(Linktype::ETHERNET, &frames(false, &stream, 200, 0)).unwrap();
    let mut two = frames(false, &stream, 300, 0);
    two.extend(frames(true, &stream, 150, 1));
    let ng = pcapng_bytes(&[Linktype::ETHERNET, Linktype::ETHERNET], &two).unwrap();
    // The 20-byte header of a 2011 verack, then a checksummed ping.
    let mut legacy = Magic::BITCOIN.to_bytes().to_vec();
    legacy.extend(b"verack\0\0\0\0\0\0");
    legacy.extend(0u32.to_le_bytes());
    legacy.extend(serialize(&RawNetworkMessage::new(
        Magic::BITCOIN,
        NetworkMessage::Ping(9),
    )));
    let legacy = pcap_bytes(Linktype::ETHERNET, &frames(false, &legacy, 13, 0)).unwrap();
    let mut corrupt = pcap.clone();
    corrupt[24 + 8..24 + 12].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    let real = std::fs::read(data("../data/bitcoin/captures/mainnet-2011-03-28.pcap")).unwrap();
    vec![
        ("seed_pcap_conversation", pcap.clone()),
        ("seed_pcapng_two_interfaces", ng),
        ("seed_legacy_verack", legacy),
        ("seed_truncated", pcap[..pcap.len() - 100].to_vec()),
        ("seed_corrupt_caplen", corrupt),
        ("seed_mainnet_2011_first_4k", real[..4096].to_vec()),
    ]
}

#[test]
fn corpus_replays_through_fuzz_capture() {
    let dir = corpus_replay::corpus_dir(env!("CARGO_MANIFEST_DIR"), "capture");
    corpus_replay::replay_with_seeds(&dir, &seeds(), fuzz_capture);
}
