//! The DPDK control core (`photon_relay::dpdk::control_core::run`) on rte_rings: a registration frame from a data
//! core's control ring is answered with a whole, checksummed Ethernet frame on the port ring,
//! and the gateway appears in the table published to the data cores.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{
    control_path, eal, local_spec, peer_addr, peer_mac, pool, udp_frame, unique, RELAY_IP,
    RELAY_MAC,
};
use photon_dpdk::{MbufBatch, Ring};
use photon_protocol::identity::{self, EphemeralKey, Identity};
use photon_protocol::wire::{register_status, Message, Packet, Repr, MAX_DATAGRAM};
use photon_relay::control::{unix_ms, ControlShared};
use photon_relay::dpdk::control_core;
use photon_relay::dpdk::dataplane::ControlLink;
use photon_relay::forward::publish;
use photon_relay::forward::table::Table;
use ring::rand::SystemRandom;
use smoltcp::wire::{EthernetFrame, IpAddress, Ipv4Packet, UdpPacket};

/// The control core's housekeeping period in these tests.
const TICK: Duration = Duration::from_millis(10);

#[test]
fn registration_through_the_control_rings() {
    let e = eal();
    let (mut core_tx, core_rx) = Ring::create(e, &unique("ctlin"), 64).unwrap();
    let (port_tx, mut port_rx) = Ring::create(e, &unique("ctlout"), 64).unwrap();
    let tables = publish::channel(Table::empty(local_spec()));
    let mut reader = tables.reader();
    let mut link = ControlLink {
        from_cores: vec![core_rx],
        repair_notes: Vec::new(),
        tsc_hz: photon_dpdk::tsc_hz(e),
        to_ports: vec![port_tx],
        tables,
        pool: pool(64, 2048 + 128),
        local: local_spec(),
        unresolved_peers: Vec::new(),
    };
    let rng = SystemRandom::new();
    let (mut control, relay_pk) = control_path(Vec::new());

    // Gateway 5 registers: its frame arrives on a data core's control ring.
    let gw = Identity::generate(&rng).unwrap();
    let eph = EphemeralKey::generate(&rng).unwrap();
    let req = identity::register(&gw, &eph, [9; 16], unix_ms());
    let mut buf = [0u8; MAX_DATAGRAM];
    let n = Repr::new(0, Message::Register(req)).emit(&mut buf).unwrap();
    let frame = udp_frame(5, &buf[..n]);
    let mut m = link.pool.alloc().unwrap();
    m.extend_from_slice(&frame).unwrap();
    core_tx.enqueue_one(m).map_err(|_| "ring full").unwrap();

    let quit = AtomicBool::new(false);
    let shared = ControlShared::new();
    let mut out = MbufBatch::new();
    std::thread::scope(|s| {
        let driver = s.spawn(|| control_core::run(&mut link, &mut control, &shared, &quit, TICK));
        let start = Instant::now();
        while out.is_empty() && start.elapsed() < Duration::from_secs(5) {
            port_rx.dequeue(&mut out);
            std::thread::sleep(Duration::from_millis(1));
        }
        quit.store(true, Ordering::Relaxed);
        let drops = driver.join().unwrap();
        assert_eq!(drops, control_core::DriverDrops::default());
    });

    assert_eq!(out.len(), 1, "one ack frame");
    let ack_frame = out.drain().next().unwrap();
    let eth = EthernetFrame::new_checked(ack_frame.data()).unwrap();
    assert_eq!(
        (eth.src_addr().0, eth.dst_addr().0),
        (RELAY_MAC, peer_mac(5))
    );
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(
        (ip.src_addr(), ip.dst_addr()),
        (RELAY_IP, *peer_addr(5).ip())
    );
    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!(
        udp.dst_port(),
        peer_addr(5).port(),
        "back to the source port (NAT)"
    );
    assert!(udp.verify_checksum(
        &IpAddress::Ipv4(RELAY_IP),
        &IpAddress::Ipv4(*peer_addr(5).ip())
    ));
    let p = Packet::new_checked(udp.payload()).unwrap();
    let Message::RegisterAck(ack) = Repr::parse(&p).unwrap().message else {
        panic!("expected an ack")
    };
    assert_eq!(ack.status, register_status::ACCEPTED);
    identity::verify_register_ack(&ack, &req, &relay_pk).unwrap();

    assert!(
        reader.refresh(),
        "a new table was published to the data cores"
    );
    let t = reader.get();
    let slot = t.slot_of(ack.node_id).expect("the gateway is in the table");
    let spec = &t.peer(slot).unwrap().spec;
    assert_eq!((spec.addr, spec.next_hop_mac), (peer_addr(5), peer_mac(5)));
    assert_eq!(shared.gateways(), 1);
}
