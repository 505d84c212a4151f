//! Shared by the relay's integration tests: EAL start-up (once per test binary), frame builders
//! and a harness that drives one pipeline through rte_rings.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use photon_dpdk::{
    Mbuf, MbufBatch, Mempool, Port, PortConfig, Ring, RingConsumer, RingProducer, RxQueue, TxQueue,
};
use photon_protocol::identity::{Identity, PublicKey};
use photon_protocol::wire::{FragmentKind, FragmentRepr, HeaderRepr, MessageType, Packet};
use photon_relay::control::{Control, ControlSettings};
use photon_relay::dpdk::pipeline::{Pipeline, PipelineParts, PortIo};
use photon_relay::forward::dedup::Dedup;
use photon_relay::forward::publish::{self, Publisher};
use photon_relay::forward::table::{LocalSpec, PeerSpec, Table};
use photon_relay::ops::counters::{CoreCounters, Counter, DropReason};
use photon_relay::testkit;
use ring::rand::SystemRandom;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    Icmpv4Message, Icmpv4Packet, IpAddress, IpProtocol, Ipv4Packet, UdpPacket,
};

// EAL start-up as photon-dpdk's own tests do it (no NIC, no hugepages, once per binary): one
// copy of those arguments for both crates.
#[path = "../../../dpdk/tests/common/mod.rs"]
mod dpdk_common;
pub use dpdk_common::eal;

pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}{}", N.fetch_add(1, Ordering::Relaxed))
}

pub fn pool(n: u32, data_room: u16) -> Mempool {
    Mempool::new(eal(), &unique("rpool"), n, 0, data_room).expect("mempool")
}

/// A started net_ring virtual port named `name` with one RX queue (filling from `pool`) and
/// one TX queue.
pub fn ring_port(name: &str, pool: &Mempool) -> (Port, RxQueue, TxQueue) {
    let eal = eal();
    eal.create_vdev(name, "").expect("net_ring vdev");
    let id = Port::id_by_name(eal, name).expect("port");
    let (port, mut rx, mut tx) = Port::start(eal, id, &PortConfig::default(), pool).expect("start");
    (port, rx.remove(0), tx.remove(0))
}

pub const RELAY_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub const RELAY_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const PORT: u16 = 4433;
pub const RELAY_ID: u32 = 1;

pub use photon_relay::testkit::keys_of;

pub fn peer_addr(id: u32) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 100 + id as u8), 5000 + id as u16)
}

pub fn peer_mac(id: u32) -> [u8; 6] {
    [2, 0, 0, 0, 1, id as u8]
}

pub fn local_spec() -> LocalSpec {
    LocalSpec {
        node_id: RELAY_ID,
        ip: RELAY_IP,
        udp_port: PORT,
        port_macs: vec![RELAY_MAC],
        max_hops: 8,
    }
}

pub fn peer(id: u32) -> PeerSpec {
    testkit::gateway(id, peer_addr(id), peer_mac(id))
}

pub fn table(ids: &[u32]) -> Table {
    Table::new(local_spec(), ids.iter().map(|&i| peer(i)).collect()).expect("table")
}

/// The relay's control path (fresh identity, default settings, static `peers`) and its public
/// key.
pub fn control_path(peers: Vec<PeerSpec>) -> (Control, PublicKey) {
    let id = Identity::generate(&SystemRandom::new()).expect("identity");
    let pk = id.public_key();
    let settings = ControlSettings::default();
    let control = Control::new(
        id,
        local_spec(),
        peers,
        settings,
        Arc::new(SystemRandom::new()),
    )
    .expect("control path");
    (control, pk)
}

/// Ethernet/IPv4/UDP from peer `from` to the relay around `dgram`, with valid checksums.
pub fn udp_frame(from: u32, dgram: &[u8]) -> Vec<u8> {
    testkit::to_relay(peer_mac(from), peer_addr(from), dgram, true)
}

/// A source-shard fragment from `from`, signed with its key.
pub fn fragment(from: u32, stream: u64, index: u16, payload: &[u8]) -> Vec<u8> {
    block_fragment(
        from,
        FragmentKind::Source,
        stream,
        index,
        1000,
        1000,
        10,
        payload,
    )
}

/// A block fragment of any kind from `from`, signed with its key.
#[allow(clippy::too_many_arguments)]
pub fn block_fragment(
    from: u32,
    kind: FragmentKind,
    stream: u64,
    index: u16,
    count: u16,
    k: u16,
    r: u16,
    payload: &[u8],
) -> Vec<u8> {
    let f = FragmentRepr {
        kind,
        stream,
        index,
        count,
        k,
        r,
        payload,
    };
    let dgram = testkit::signed_fragment(&f, from, 0, &keys_of(from).recv);
    udp_frame(from, &dgram)
}

pub fn keepalive(from: u32) -> Vec<u8> {
    let h = HeaderRepr {
        msg_type: MessageType::Keepalive,
        flags: 0,
        hops: 0,
        payload_len: 0,
        stream: 0,
        sender: from,
        index: 0,
        count: 0,
        k: 0,
        r: 0,
    };
    let mut dgram = vec![0u8; 36];
    h.emit(&mut dgram).expect("emit");
    udp_frame(from, &dgram)
}

pub fn arp_request(from: u32, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
    eth.set_dst_addr(EthernetAddress::BROADCAST);
    eth.set_src_addr(EthernetAddress(peer_mac(from)));
    eth.set_ethertype(EthernetProtocol::Arp);
    let mut arp = ArpPacket::new_unchecked(eth.payload_mut());
    ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(peer_mac(from)),
        source_protocol_addr: *peer_addr(from).ip(),
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    }
    .emit(&mut arp);
    f
}

pub fn icmp_echo(from: u32, data: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8 + data.len()];
    {
        let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
        eth.set_dst_addr(EthernetAddress(RELAY_MAC));
        eth.set_src_addr(EthernetAddress(peer_mac(from)));
        eth.set_ethertype(EthernetProtocol::Ipv4);
    }
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
        ip.set_version(4);
        ip.set_header_len(20);
        ip.set_total_len((20 + 8 + data.len()) as u16);
        ip.set_hop_limit(64);
        ip.set_next_header(IpProtocol::Icmp);
        ip.set_src_addr(*peer_addr(from).ip());
        ip.set_dst_addr(RELAY_IP);
        ip.fill_checksum();
    }
    let mut icmp = Icmpv4Packet::new_unchecked(&mut f[34..]);
    icmp.set_msg_type(Icmpv4Message::EchoRequest);
    icmp.set_msg_code(0);
    icmp.set_echo_ident(0x1234);
    icmp.set_echo_seq_no(7);
    icmp.data_mut().copy_from_slice(data);
    icmp.fill_checksum();
    f
}

/// Checks one forwarded copy: addressed to `to`, valid IPv4 and UDP checksums, sender = relay,
/// hops + 1, hop tag under the relay→`to` key, and the payload. Returns the Photon header.
pub fn check_copy(to: u32, copy: &[u8], payload: &[u8]) -> HeaderRepr {
    let eth = EthernetFrame::new_checked(copy).expect("ethernet");
    assert_eq!(eth.dst_addr().0, peer_mac(to), "next-hop MAC of {to}");
    assert_eq!(eth.src_addr().0, RELAY_MAC);
    let ip = Ipv4Packet::new_checked(eth.payload()).expect("ipv4");
    assert!(ip.verify_checksum());
    assert_eq!(ip.dst_addr(), *peer_addr(to).ip());
    let udp = UdpPacket::new_checked(ip.payload()).expect("udp");
    assert_eq!(
        udp.dst_port(),
        peer_addr(to).port(),
        "observed port of {to}"
    );
    assert!(
        udp.verify_checksum(
            &IpAddress::Ipv4(RELAY_IP),
            &IpAddress::Ipv4(*peer_addr(to).ip())
        ),
        "UDP checksum to {to}"
    );
    let p = Packet::new_checked(udp.payload()).expect("photon");
    assert!(keys_of(to).send.verify(p.header()), "hop tag for {to}");
    assert_eq!(p.payload(), payload);
    let h = HeaderRepr::parse(&p).expect("header");
    assert_eq!(h.sender, RELAY_ID);
    h
}

/// Node id a forwarded copy is addressed to (by destination MAC).
pub fn dest_of(copy: &[u8]) -> u32 {
    u32::from(copy[5])
}

/// One pipeline driven through rings: the test enqueues frames, calls `poll`, and dequeues
/// what the pipeline transmitted.
pub struct Harness {
    pub pipeline: Pipeline<RingConsumer, RingProducer>,
    pub input: RingProducer,
    pub output: RingConsumer,
    pub control: RingConsumer,
    pub to_wire: RingProducer,
    pub tables: Publisher<Table>,
    pub counters: Arc<CoreCounters>,
    pub rx_pool: Mempool,
    pub header_pool: Mempool,
}

impl Harness {
    pub fn new(table: Table) -> Harness {
        Harness::with_sizes(table, 1024, 1024, 1024)
    }

    pub fn with_sizes(table: Table, rx_mbufs: u32, header_mbufs: u32, out_ring: u32) -> Harness {
        Harness::build(table, rx_mbufs, header_mbufs, out_ring, None)
    }

    /// A store-and-forward pipeline ([`Pipeline::with_hold`]; timeout in TSC ticks).
    pub fn store_and_forward(
        table: Table,
        limits: photon_relay::forward::hold::HoldLimits,
    ) -> Harness {
        Harness::build(table, 1024, 1024, 1024, Some(limits))
    }

    fn build(
        table: Table,
        rx_mbufs: u32,
        header_mbufs: u32,
        out_ring: u32,
        hold: Option<photon_relay::forward::hold::HoldLimits>,
    ) -> Harness {
        let eal = eal();
        let rx_pool = pool(rx_mbufs, Mempool::DEFAULT_DATA_ROOM);
        let header_pool = pool(header_mbufs, 256);
        let (input, rx) = Ring::create(eal, &unique("in"), 1024).expect("ring");
        let (tx, output) = Ring::create(eal, &unique("out"), out_ring).expect("ring");
        let (to_control, control) = Ring::create(eal, &unique("ctl"), 256).expect("ring");
        let (to_wire, from_control) = Ring::create(eal, &unique("wire"), 256).expect("ring");
        let tables = publish::channel(table);
        let counters = Arc::new(CoreCounters::default());
        let parts = PipelineParts {
            ports: vec![PortIo {
                rx,
                tx,
                from_control: Some(from_control),
            }],
            header_pool,
            table: tables.reader(),
            dedup: Arc::new(Dedup::new(1 << 16, [11, 22])),
            to_control,
            counters: counters.clone(),
            drain_tsc: 1,
        };
        let mut pipeline = Pipeline::new(parts);
        if let Some(limits) = hold {
            pipeline = pipeline.with_hold(limits);
        }
        Harness {
            pipeline,
            input,
            output,
            control,
            to_wire,
            tables,
            counters,
            rx_pool,
            header_pool,
        }
    }

    pub fn mbuf(&self, bytes: &[u8]) -> Mbuf {
        let mut m = self.rx_pool.alloc().expect("alloc");
        m.extend_from_slice(bytes).expect("fits");
        m
    }

    /// Sends frames through the pipeline (as many polls as needed) and returns what came out.
    pub fn run(&mut self, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
        for f in frames {
            let m = self.mbuf(f);
            self.input.enqueue_one(m).expect("input ring has room");
        }
        while self.pipeline.poll() > 0 {}
        self.pipeline.housekeeping();
        self.take_output()
    }

    pub fn take_output(&mut self) -> Vec<Vec<u8>> {
        drain_frames(&mut self.output)
    }

    pub fn counter(&self, c: Counter) -> u64 {
        self.pipeline.counters().get(c)
    }

    pub fn dropped(&self, r: DropReason) -> u64 {
        self.counter(Counter::Drop(r))
    }

    /// Mbufs of both pools still in use.
    pub fn in_use(&self) -> (u32, u32) {
        (self.rx_pool.in_use(), self.header_pool.in_use())
    }
}

/// Puts `frame` into an mbuf of `pool` and sends it on `tx` (a burst of one, which must be
/// taken).
/// Everything queued on `ring`, as bytes (the mbufs are freed).
pub fn drain_frames(ring: &mut RingConsumer) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut b = MbufBatch::new();
    while ring.dequeue(&mut b) > 0 {
        out.extend(b.drain().map(|m| m.to_vec()));
    }
    out
}

pub fn send_frame(pool: &Mempool, tx: &mut TxQueue, frame: &[u8]) {
    let mut m = pool.alloc().unwrap();
    m.extend_from_slice(frame).unwrap();
    let mut b = MbufBatch::new();
    b.push(m).unwrap();
    assert_eq!(tx.tx_burst(&mut b), 1);
}

/// Frames from `rx` until `want` arrived or 10 s passed, as bytes.
pub fn receive_frames(rx: &mut RxQueue, want: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut b = MbufBatch::new();
    while got.len() < want && std::time::Instant::now() < deadline {
        rx.rx_burst(&mut b);
        got.extend(b.drain().map(|m| m.to_vec()));
    }
    got
}
