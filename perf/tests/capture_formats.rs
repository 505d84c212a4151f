//! Captures as operators make them, built frame by frame (etherparse) into pcap and pcapng files
//! (`replay::write`): Linux cooked SLL and SLL2 (`tcpdump -i any`), VLAN tags, IPv6, a port
//! other than 8333, several interfaces of different link types in one pcapng, the pre-2012
//! 20-byte headers; the same messages on several peers' streams replayed once; truncated and
//! corrupt files reported with their byte offset. Captures recorded from real traffic are in
//! capture_netns.rs and capture_round_trip.rs.

mod common;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use bitcoin::consensus::encode::serialize;
use bitcoin::p2p::message::NetworkMessage;
use bitcoin::p2p::message_blockdata::Inventory;
use common::*;
use etherparse::{LinuxSllPacketType, PacketBuilder, VlanId};
use pcap_parser::Linktype;
use photon_perf::capture_feed::{CaptureFeed, FeedConfig, FeedItem};
use photon_perf::replay::p2p::legacy_frame;
use photon_perf::replay::write::{pcap_bytes, pcapng_bytes, Packet};
use photon_perf::replay::{read_capture_bytes, CaptureFault, CapturedMessage, TcpConfig};
use photon_perf::trace::Event;

#[derive(Clone, Copy)]
enum Link {
    Ethernet,
    Vlan,
    DoubleVlan,
    Sll,
    Sll2,
}

/// One TCP segment from `src` to `dst` framed for `link`.
fn segment(
    link: Link,
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    seq: u32,
    syn: bool,
    payload: &[u8],
) -> Vec<u8> {
    let mac = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let ip = |b: PacketBuilderIp| -> Vec<u8> {
        let t = match (src.0, dst.0) {
            (IpAddr::V4(s), IpAddr::V4(d)) => b.v4(s.octets(), d.octets()),
            (IpAddr::V6(s), IpAddr::V6(d)) => b.v6(s.octets(), d.octets()),
            _ => panic!("mixed address families"),
        };
        let t = t.tcp(src.1, dst.1, seq, 65_535);
        let t = if syn { t.syn() } else { t.ack(1) };
        let mut out = Vec::new();
        t.write(&mut out, payload).unwrap();
        out
    };
    match link {
        Link::Ethernet => ip(PacketBuilderIp::Eth(mac)),
        Link::Vlan => ip(PacketBuilderIp::Vlan(mac, 100)),
        Link::DoubleVlan => ip(PacketBuilderIp::DoubleVlan(mac, 200, 100)),
        Link::Sll => ip(PacketBuilderIp::Sll),
        Link::Sll2 => {
            // SLL2 (LINKTYPE_LINUX_SLL2, 276): protocol, reserved, ifindex, ARPHRD, packet
            // type, address length, address (8); then the IP packet. etherparse has no SLL2
            // builder: the header is written here from the spec.
            let packet = ip(PacketBuilderIp::Bare);
            let proto: u16 = if src.0.is_ipv4() { 0x0800 } else { 0x86dd };
            let mut out = proto.to_be_bytes().to_vec();
            out.extend([0, 0]);
            out.extend(3u32.to_be_bytes());
            out.extend(1u16.to_be_bytes()); // ARPHRD_ETHER
            out.extend([4, 6]); // outgoing, 6-byte address
            out.extend([2, 0, 0, 0, 0, 1, 0, 0]);
            out.extend(packet);
            out
        }
    }
}

/// The link layers `segment` builds, down to the IP step.
enum PacketBuilderIp {
    Eth(([u8; 6], [u8; 6])),
    Vlan(([u8; 6], [u8; 6]), u16),
    DoubleVlan(([u8; 6], [u8; 6]), u16, u16),
    Sll,
    Bare,
}

/// An IP step of etherparse's builder whatever link layer is below it.
enum IpStep {
    Eth(etherparse::PacketBuilderStep<etherparse::Ethernet2Header>),
    Vlan(etherparse::PacketBuilderStep<etherparse::VlanHeader>),
    Sll(etherparse::PacketBuilderStep<etherparse::LinuxSllHeader>),
    Bare,
}

impl PacketBuilderIp {
    fn step(self) -> IpStep {
        match self {
            PacketBuilderIp::Eth((s, d)) => IpStep::Eth(PacketBuilder::ethernet2(s, d)),
            PacketBuilderIp::Vlan((s, d), id) => IpStep::Vlan(
                PacketBuilder::ethernet2(s, d).single_vlan(VlanId::try_new(id).unwrap()),
            ),
            PacketBuilderIp::DoubleVlan((s, d), outer, inner) => {
                IpStep::Vlan(PacketBuilder::ethernet2(s, d).double_vlan(
                    VlanId::try_new(outer).unwrap(),
                    VlanId::try_new(inner).unwrap(),
                ))
            }
            PacketBuilderIp::Sll => IpStep::Sll(PacketBuilder::linux_sll(
                LinuxSllPacketType::HOST,
                6,
                [2, 0, 0, 0, 0, 1, 0, 0],
            )),
            PacketBuilderIp::Bare => IpStep::Bare,
        }
    }

    fn v4(self, s: [u8; 4], d: [u8; 4]) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
        match self.step() {
            IpStep::Eth(b) => b.ipv4(s, d, 64),
            IpStep::Vlan(b) => b.ipv4(s, d, 64),
            IpStep::Sll(b) => b.ipv4(s, d, 64),
            IpStep::Bare => PacketBuilder::ipv4(s, d, 64),
        }
    }

    fn v6(self, s: [u8; 16], d: [u8; 16]) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
        match self.step() {
            IpStep::Eth(b) => b.ipv6(s, d, 64),
            IpStep::Vlan(b) => b.ipv6(s, d, 64),
            IpStep::Sll(b) => b.ipv6(s, d, 64),
            IpStep::Bare => PacketBuilder::ipv6(s, d, 64),
        }
    }
}

fn linktype(link: Link) -> Linktype {
    match link {
        Link::Ethernet | Link::Vlan | Link::DoubleVlan => Linktype::ETHERNET,
        Link::Sll => Linktype::LINUX_SLL,
        Link::Sll2 => Linktype::LINUX_SLL2,
    }
}

/// The one Ethernet/IPv4 connection most tests use: node 10.0.0.1:8333 to 10.0.0.2:40000,
/// 1400-byte segments from t = 1 s.
fn ethernet_connection(stream: &[u8]) -> Vec<Packet> {
    ethernet_connection_to(40_000, stream, 1_400, 1_000_000_000)
}

/// As [`ethernet_connection`], to port `dst_port`, in segments of `mss`, starting at `t0` (ns).
fn ethernet_connection_to(dst_port: u16, stream: &[u8], mss: usize, t0: u64) -> Vec<Packet> {
    connection(
        Link::Ethernet,
        0,
        v4([10, 0, 0, 1], 8333),
        v4([10, 0, 0, 2], dst_port),
        stream,
        mss,
        t0,
    )
}

/// A connection's packets: SYN, then `stream` in segments of `mss`, from `t0` (ns), 1 ms apart.
fn connection(
    link: Link,
    interface: u32,
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    stream: &[u8],
    mss: usize,
    t0: u64,
) -> Vec<Packet> {
    let isn = 7_000u32;
    let mut out = vec![Packet {
        interface,
        ts_ns: t0,
        data: segment(link, src, dst, isn, true, &[]),
    }];
    let mut seq = isn + 1;
    for (i, c) in stream.chunks(mss).enumerate() {
        out.push(Packet {
            interface,
            ts_ns: t0 + (i as u64 + 1) * 1_000_000,
            data: segment(link, src, dst, seq, false, c),
        });
        seq = seq.wrapping_add(c.len() as u32);
    }
    out
}

fn read(bytes: &[u8]) -> (Vec<CapturedMessage>, photon_perf::replay::CaptureStats) {
    let mut msgs = Vec::new();
    let stats = read_capture_bytes(bytes, TcpConfig::default(), |m| msgs.push(m)).unwrap();
    (msgs, stats)
}

fn v4(a: [u8; 4], port: u16) -> (IpAddr, u16) {
    (IpAddr::from(a), port)
}

fn v6(last: u16, port: u16) -> (IpAddr, u16) {
    (IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, last]), port)
}

#[test]
fn every_link_type_and_ip_version_on_any_port() {
    let b = block(227836);
    let convo = conversation(3, &b);
    let stream = wire(&convo);
    for link in [
        Link::Ethernet,
        Link::Vlan,
        Link::DoubleVlan,
        Link::Sll,
        Link::Sll2,
    ] {
        for (src, dst) in [
            (v4([10, 0, 0, 1], 40_000), v4([10, 0, 0, 2], 18_444)),
            (v6(1, 40_000), v6(2, 39_388)),
        ] {
            let packets = connection(link, 0, src, dst, &stream, 1_400, 1_000_000_000);
            let file = pcap_bytes(linktype(link), &packets).unwrap();
            let (msgs, stats) = read(&file);
            let got: Vec<NetworkMessage> = msgs.iter().map(|m| m.message.clone()).collect();
            assert_eq!(got, kept(&convo), "link {:?} {src:?}", linktype(link));
            assert_eq!(msgs[0].flow.dst.port(), dst.1);
            assert_eq!(stats.tcp.frames.skipped_bytes, 0);
            assert_eq!(stats.non_ip + stats.malformed, 0);
        }
    }
}

#[test]
fn pcapng_with_interfaces_of_different_link_types() {
    let b = block(227835);
    let convo = conversation(4, &b);
    let stream = wire(&convo);
    // Interface 0: Ethernet with a VLAN tag, IPv4; interface 1: SLL2, IPv6; interface 2:
    // Ethernet again, another connection: (link, source, destination, MSS, first packet's time
    // in ns). Packets interleaved in time.
    #[rustfmt::skip]
    let connections = [
        (Link::Vlan, v4([10, 1, 0, 1], 50_000), v4([10, 1, 0, 2], 8333), 1_200, 1_000_000_000),
        (Link::Sll2, v6(7, 50_001), v6(8, 8333), 900, 1_000_500_000),
        (Link::Ethernet, v4([10, 2, 0, 1], 50_002), v4([10, 2, 0, 2], 8333), 1_460, 1_000_700_000),
    ];
    let mut packets = Vec::new();
    for (interface, (link, src, dst, mss, t0)) in (0..).zip(connections) {
        packets.extend(connection(link, interface, src, dst, &stream, mss, t0));
    }
    packets.sort_by_key(|p| p.ts_ns);
    let file = pcapng_bytes(
        &[Linktype::ETHERNET, Linktype::LINUX_SLL2, Linktype::ETHERNET],
        &packets,
    )
    .unwrap();
    let (msgs, stats) = read(&file);
    assert_eq!(stats.format, "pcapng");
    let mut ports: Vec<u16> = msgs.iter().map(|m| m.flow.src.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports, [50_000, 50_001, 50_002]);
    for p in ports {
        let got: Vec<NetworkMessage> = msgs
            .iter()
            .filter(|m| m.flow.src.port() == p)
            .map(|m| m.message.clone())
            .collect();
        assert_eq!(got, kept(&convo), "port {p}");
    }
    assert_eq!(stats.tcp.frames.skipped_bytes, 0);
}

/// The messages of three peers' streams: the same tx and block reach the capturing node from
/// each, at different times; each is replayed once, at its first capture time.
#[test]
fn messages_on_several_peers_streams_are_replayed_once_at_first_sight() {
    let b = block(227836);
    let convo = conversation(5, &b);
    let stream = wire(&convo);
    let mut packets = Vec::new();
    // Peer 2 first (t0 = 1.3 s), then peers 1 and 3.
    for (peer, t0) in [
        (1u8, 1_500_000_000u64),
        (2, 1_300_000_000),
        (3, 1_900_000_000),
    ] {
        packets.extend(connection(
            Link::Ethernet,
            0,
            v4([10, 9, 0, peer], 8333),
            v4([10, 9, 0, 100], 41_000 + u16::from(peer)),
            &stream,
            1_400,
            t0,
        ));
    }
    packets.sort_by_key(|p| p.ts_ns);
    let dir = tmp_dir("dedup");
    let path = dir.join("peers.pcap");
    std::fs::write(&path, pcap_bytes(Linktype::ETHERNET, &packets).unwrap()).unwrap();
    let (events, summary) = CaptureFeed::collect(&path, FeedConfig::default()).unwrap();
    let c = &summary.counts;
    assert_eq!((c.tx_found, c.tx_replayed, c.tx_duplicates), (3, 1, 2));
    assert_eq!(
        (c.blocks_found, c.blocks_replayed, c.block_duplicates),
        (3, 1, 2)
    );
    assert_eq!(c.connections, 3);
    assert_eq!(events.len(), 2);
    // Offsets from the first replayed message (peer 2's tx); the block is peer 2's too.
    let (Event::Tx { tx, .. }, Event::Block { block, missing, .. }) = (&events[0].1, &events[1].1)
    else {
        panic!("a tx then a block");
    };
    assert_eq!(tx.compute_txid(), b.txdata[1].compute_txid());
    assert_eq!(block.block_hash(), b.block_hash());
    assert_eq!(events[0].0, Duration::ZERO);
    assert!(
        events[1].0 < Duration::from_millis(200),
        "{:?}",
        events[1].0
    );
    // All but the coinbase and the one replayed tx travel inside the block.
    assert_eq!(missing.len(), b.txdata.len() - 2);
    assert_eq!(c.block_txs_missing as usize, b.txdata.len() - 2);
    // The headers announcement of the block came from each of the three peers, peer 2 first.
    let a = summary
        .announcements
        .iter()
        .find(|a| a.hash == b.block_hash().to_string())
        .expect("block announced");
    assert_eq!(a.announcers, 3);
    assert_eq!(a.by_command.get("headers"), Some(&3));
    assert!((a.median_ms().unwrap() - 200.0).abs() < 1.0, "{a:?}");
    assert!((a.spread_ms().unwrap() - 600.0).abs() < 1.0, "{a:?}");
    assert!(a.block_seen_ns.is_some());
    let d = summary.description(1.0);
    assert!(d.starts_with("capture peers.pcap (pcap, "), "{d}");
    assert!(
        d.contains("1 of the 3 tx messages found (2 duplicates"),
        "{d}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The first event comes out while the reader is still inside the file: it waits on the
/// bounded channel, so the file is not read ahead of the replay (nor into memory).
#[test]
fn the_first_event_comes_before_the_file_is_read() {
    let b = block(227836);
    let mut msgs = Vec::new();
    for tx in b.txdata.iter().skip(1).take(60) {
        msgs.push(NetworkMessage::Tx(tx.clone()));
    }
    let stream = wire(&msgs);
    let packets = ethernet_connection_to(40_000, &stream, 600, 1_000_000_000);
    let dir = tmp_dir("stream");
    let path = dir.join("txs.pcap");
    let file = pcap_bytes(Linktype::ETHERNET, &packets).unwrap();
    std::fs::write(&path, &file).unwrap();
    let config = FeedConfig {
        channel: 1,
        ..FeedConfig::default()
    };
    let feed = CaptureFeed::start(&path, config).unwrap();
    let Some(FeedItem::Event { file_offset, .. }) = feed.recv() else {
        panic!("an event first");
    };
    // Give the reader time to run ahead if it could: it cannot, the channel holds one item.
    std::thread::sleep(Duration::from_millis(200));
    let Some(FeedItem::Event {
        file_offset: second,
        ..
    }) = feed.recv()
    else {
        panic!("a second event");
    };
    assert!(
        file_offset < file.len() as u64 / 10,
        "first at {file_offset} of {}",
        file.len()
    );
    assert!(second < file.len() as u64 / 5, "second at {second}");
    let mut n = 2;
    let mut end = None;
    while let Some(item) = feed.recv() {
        match item {
            FeedItem::Event { .. } => n += 1,
            FeedItem::End(s) => end = Some(s),
        }
    }
    feed.join().unwrap();
    assert_eq!(n, 60);
    assert_eq!(end.unwrap().stats.bytes_read, file.len() as u64);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A 2011 node's handshake: `version` and `verack` with the 20-byte header, `version` without
/// the relay byte; then checksummed messages.
#[test]
fn pre_2012_handshake_in_a_capture() {
    use bitcoin::p2p::address::Address;
    use bitcoin::p2p::message_network::VersionMessage;
    use bitcoin::p2p::ServiceFlags;
    let a = Address::new(&"10.0.0.1:8333".parse().unwrap(), ServiceFlags::NETWORK);
    let v = VersionMessage {
        version: 31_800,
        services: ServiceFlags::NETWORK,
        timestamp: 1_301_328_472,
        receiver: a.clone(),
        sender: a,
        nonce: 42,
        user_agent: String::new(),
        start_height: 116_000,
        relay: true,
    };
    let mut payload = serialize(&v);
    payload.pop();
    let b = block(227835);
    let mut stream = legacy_frame("version", &payload);
    stream.extend(legacy_frame("verack", &[]));
    stream.extend(wire(&[
        NetworkMessage::Inv(vec![Inventory::Block(b.block_hash())]),
        NetworkMessage::Block(b.clone()),
    ]));
    let packets = ethernet_connection_to(50_123, &stream, 1_448, 1_301_328_472_000_000_000);
    let (msgs, stats) = read(&pcap_bytes(Linktype::ETHERNET, &packets).unwrap());
    let cmds: Vec<&str> = msgs.iter().map(|m| m.message.cmd()).collect();
    assert_eq!(cmds, ["version", "inv", "block"]);
    assert_eq!(msgs[0].message, NetworkMessage::Version(v));
    assert_eq!(msgs[0].wire_len, 20 + payload.len());
    assert_eq!(stats.skipped.get("verack"), Some(&1));
    let f = &stats.tcp.frames;
    assert_eq!((f.legacy_headers, f.version_without_relay), (2, 1));
    assert_eq!((f.resyncs, f.skipped_bytes), (0, 0), "{f:?}");
}

#[test]
fn truncated_and_corrupt_files_name_the_byte_offset() {
    let b = block(227836);
    let stream = wire(&conversation(6, &b));
    let packets = ethernet_connection(&stream);
    let file = pcap_bytes(Linktype::ETHERNET, &packets).unwrap();
    // Offsets of each record: 24-byte file header, then 16-byte record headers.
    let mut starts = vec![24usize];
    for p in &packets {
        starts.push(starts.last().unwrap() + 16 + p.data.len());
    }
    assert_eq!(*starts.last().unwrap(), file.len());

    // Cut in the middle of record 10.
    let cut = starts[10] + 30;
    let stats = read_capture_bytes(&file[..cut], TcpConfig::default(), |_| {}).unwrap();
    assert_eq!(
        stats.stopped_early,
        Some(CaptureFault::Truncated {
            offset: starts[10] as u64,
            left: 30
        })
    );
    assert_eq!(stats.bytes_read, starts[10] as u64);
    assert_eq!(stats.packets, 10);
    let err = stats.check().unwrap_err();
    assert!(
        err.to_string().contains(&format!("byte {}", starts[10])),
        "{err}"
    );

    // Record 5 claims a capture length beyond any limit: corrupt there.
    let mut bad = file.clone();
    bad[starts[5] + 8..starts[5] + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    let stats = read_capture_bytes(&bad, TcpConfig::default(), |_| {}).unwrap();
    let fault = stats.stopped_early.clone().expect("a fault");
    assert_eq!(fault.offset(), starts[5] as u64, "{fault}");
    assert_eq!(stats.packets, 5);

    // pcapng: a block whose two lengths disagree.
    let ng = pcapng_bytes(&[Linktype::ETHERNET], &packets).unwrap();
    let shb_idb = pcapng_bytes(&[Linktype::ETHERNET], &[]).unwrap().len();
    let first_len = u32::from_le_bytes(ng[shb_idb + 4..shb_idb + 8].try_into().unwrap()) as usize;
    let second = shb_idb + first_len;
    let mut bad = ng.clone();
    let l2 =
        second + u32::from_le_bytes(ng[second + 4..second + 8].try_into().unwrap()) as usize - 4;
    bad[l2..l2 + 4].copy_from_slice(&7u32.to_le_bytes());
    let stats = read_capture_bytes(&bad, TcpConfig::default(), |_| {}).unwrap();
    let fault = stats.stopped_early.clone().expect("a fault");
    assert!(matches!(fault, CaptureFault::Corrupt { .. }), "{fault:?}");
    assert_eq!(fault.offset(), second as u64, "{fault}");
    assert_eq!(stats.packets, 1);

    // Not a capture at all: refused, naming byte 0.
    let err =
        read_capture_bytes(b"GET / HTTP/1.1\r\n\r\n", TcpConfig::default(), |_| {}).unwrap_err();
    assert!(err.to_string().contains("at byte 0"), "{err}");
}

/// A pcapng section header with options (mergecap and Wireshark write hardware, OS and
/// application strings: a section header of any length) and an interface with a name.
#[test]
fn pcapng_with_a_long_section_header_through_the_feed() {
    use pcap_parser::pcapng::{OptionCode, PcapNGOption};
    use std::borrow::Cow;
    let comment = vec![b'x'; 300];
    let mut file = photon_perf::replay::write::pcapng_section_with(vec![PcapNGOption {
        code: OptionCode::Comment,
        len: comment.len() as u16,
        value: Cow::Borrowed(&comment),
    }])
    .unwrap();
    assert!(file.len() > 300);
    let b = block(227836);
    let stream = wire(&conversation(8, &b));
    let packets = ethernet_connection(&stream);
    let body = pcapng_bytes(&[Linktype::ETHERNET], &packets).unwrap();
    let section = photon_perf::replay::write::pcapng_section().unwrap().len();
    file.extend(&body[section..]);
    let dir = tmp_dir("shb");
    let path = dir.join("long-shb.pcapng");
    std::fs::write(&path, &file).unwrap();
    let (events, summary) = CaptureFeed::collect(&path, FeedConfig::default()).unwrap();
    assert_eq!(summary.stats.format, "pcapng");
    assert_eq!(
        (summary.counts.tx_replayed, summary.counts.blocks_replayed),
        (1, 1)
    );
    assert_eq!(events.len(), 2);
    // Not a capture: refused by `start`, before any thread.
    std::fs::write(&path, b"hello, not a capture").unwrap();
    assert!(CaptureFeed::start(&path, FeedConfig::default()).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

fn tmp_dir(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("photon-capfmt-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
