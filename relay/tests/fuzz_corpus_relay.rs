//! Replays every file of `fuzz/corpus/relay_frame/` through the fuzz entry
//! `photon_relay::fuzzing::fuzz_frame`, so `cargo test` re-checks what the fuzzer found.
//!
//! The seeds are made here: `PHOTON_WRITE_SEEDS=1 cargo test -p photon-relay --test
//! fuzz_corpus_relay` (re)writes the `seed_*` files (a fragment frame, control frames, ARP,
//! ICMP, bare control datagrams), then the replay runs over them and whatever else is there.

#[path = "../../fuzz/corpus_replay.rs"]
mod corpus_replay;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

use photon_protocol::wire::{
    FragmentKind, FragmentRepr, KeepaliveRepr, Message, ReceiptRepr, RepairRequestRepr, Repr,
    TransactionRepr, TxRequestRepr, MAX_DATAGRAM,
};
use photon_relay::fuzzing::{fuzz_frame, keys_of};
use photon_relay::testkit;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
};

fn corpus() -> PathBuf {
    corpus_replay::corpus_dir(env!("CARGO_MANIFEST_DIR"), "relay_frame")
}

/// The signed datagram of `message` from node `sender`, first hop.
fn datagram(sender: u32, message: Message<'_>) -> Vec<u8> {
    let repr = Repr {
        sender,
        hops: 0,
        flags: 0,
        message,
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let n = repr.emit(&mut buf).unwrap();
    buf.truncate(n);
    keys_of(sender).recv.sign_header(&mut buf).unwrap();
    buf
}

/// Ethernet/IPv4/UDP from peer `from` to the relay, checksums filled.
fn frame(from: u32, dgram: &[u8]) -> Vec<u8> {
    let peer = SocketAddrV4::new(
        Ipv4Addr::new(10, 0, 0, 100 + from as u8),
        5000 + from as u16,
    );
    testkit::to_relay([2, 0, 0, 0, 1, from as u8], peer, dgram, true)
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let payload: Vec<u8> = (0..200u32).map(|i| (i * 7) as u8).collect();
    let fragment = datagram(
        2,
        Message::Fragment(FragmentRepr {
            kind: FragmentKind::Source,
            stream: 0x77,
            index: 1,
            count: 4,
            k: 4,
            r: 2,
            payload: &payload,
        }),
    );
    let tx = datagram(
        2,
        Message::Transaction(TransactionRepr {
            transfer: 5,
            index: 0,
            count: 1,
            short_id: None,
            tx_len: 200,
            offset: 0,
            data: &payload,
        }),
    );
    let tx_request = datagram(
        3,
        Message::TxRequest(TxRequestRepr {
            stream: 0x77,
            short_ids: vec![0, 1, 2],
        }),
    );
    let repair = datagram(
        3,
        Message::RepairRequest(RepairRequestRepr::new(
            0x77,
            FragmentKind::Source,
            vec![1, 2],
        )),
    );
    let keepalive = datagram(4, Message::Keepalive(KeepaliveRepr { seq: 1, echo: 0 }));
    let receipt = datagram(
        2,
        Message::Receipt(ReceiptRepr {
            stream: 0x77,
            manifest_hash: [3; 32],
            signed: Some(([4; 32], [5; 64])),
        }),
    );
    let mut arp = vec![0u8; 42];
    {
        let mut eth = EthernetFrame::new_unchecked(&mut arp[..]);
        eth.set_dst_addr(EthernetAddress::BROADCAST);
        eth.set_src_addr(EthernetAddress([2, 0, 0, 0, 1, 2]));
        eth.set_ethertype(EthernetProtocol::Arp);
        let mut p = ArpPacket::new_unchecked(eth.payload_mut());
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: EthernetAddress([2, 0, 0, 0, 1, 2]),
            source_protocol_addr: Ipv4Addr::new(10, 0, 0, 102),
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: testkit::RELAY_IP,
        }
        .emit(&mut p);
    }
    vec![
        ("seed_fragment_frame", frame(2, &fragment)),
        ("seed_tx_frame", frame(2, &tx)),
        ("seed_tx_request_frame", frame(3, &tx_request)),
        ("seed_repair_request_frame", frame(3, &repair)),
        ("seed_keepalive_frame", frame(4, &keepalive)),
        ("seed_arp_request", arp),
        ("seed_tx_datagram", tx),
        ("seed_tx_request_datagram", tx_request),
        ("seed_receipt_datagram", receipt),
        ("seed_fragment_datagram", fragment),
    ]
}

#[test]
fn replay_relay_frame_corpus() {
    corpus_replay::replay_with_seeds(&corpus(), &seeds(), fuzz_frame);
}
