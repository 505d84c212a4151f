//! Next-hop resolution by ARP on the DPDK backend, end to end on rte_rings: a peer relay
//! configured without a `[[neighbour]]` entry is asked for by the control core (an ARP request
//! out of the pipeline core's TX), the reply fed to the pipeline reaches the control core, which
//! publishes a table with the learned MAC; a fragment from a gateway is then forwarded to the
//! peer relay with that MAC. Before that, the peer's own fragments are already forwarded (it is
//! in the table receive-only). A gratuitous ARP with a new MAC is followed; a peer whose next hop
//! has a static entry is in the table at once and never asked about.

mod common;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use photon_relay::control::{unix_ms, ArpResolver, ControlCounter, ControlShared};
use photon_relay::dpdk::control_core;
use photon_relay::dpdk::dataplane::ControlLink;
use photon_relay::forward::table::{PeerKind, PeerSpec, Table};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
};

const GW_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 254);
const GW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];

fn relay_peer(id: u32) -> PeerSpec {
    PeerSpec {
        kind: PeerKind::Relay,
        next_hop_mac: [0; 6],
        ..peer(id)
    }
}

/// An ARP frame from `(mac, ip)` about `target_ip`, to the relay's MAC or broadcast.
fn arp_frame(op: ArpOperation, mac: [u8; 6], ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
    let (dst, target_mac) = match op {
        ArpOperation::Reply if target_ip == RELAY_IP => (RELAY_MAC, RELAY_MAC),
        _ => ([0xff; 6], [0; 6]),
    };
    eth.set_dst_addr(EthernetAddress(dst));
    eth.set_src_addr(EthernetAddress(mac));
    eth.set_ethertype(EthernetProtocol::Arp);
    let mut arp = ArpPacket::new_unchecked(eth.payload_mut());
    ArpRepr::EthernetIpv4 {
        operation: op,
        source_hardware_addr: EthernetAddress(mac),
        source_protocol_addr: ip,
        target_hardware_addr: EthernetAddress(target_mac),
        target_protocol_addr: target_ip,
    }
    .emit(&mut arp);
    f
}

/// Sets the quit flag when dropped (also when unwinding from a failed assertion).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The control core's housekeeping period in these tests.
const TICK: Duration = Duration::from_millis(10);

#[test]
fn a_peer_relay_without_a_neighbour_entry_is_resolved_by_arp_and_forwarded_to() {
    let Harness {
        mut pipeline,
        mut input,
        mut output,
        control: from_core,
        to_wire,
        tables,
        rx_pool,
        ..
    } = Harness::new(Table::empty(local_spec()));
    let mut reader = tables.reader();

    // Gateway 5 (registered, keys), peer relay 7 on-link without a neighbour entry, peer
    // relay 8 behind the default gateway, whose MAC is a static neighbour.
    let (mut control, _) = control_path(vec![peer(5)]);
    control
        .resolve_by_arp(
            ArpResolver::new([(GW_IP, GW_MAC)]),
            vec![(relay_peer(7), *peer_addr(7).ip()), (relay_peer(8), GW_IP)],
            unix_ms(),
        )
        .unwrap();
    assert_eq!(control.pending_peers().collect::<Vec<_>>(), vec![7]);
    let mut link = ControlLink {
        from_cores: vec![from_core],
        repair_notes: Vec::new(),
        tsc_hz: photon_dpdk::tsc_hz(eal()),
        to_ports: vec![to_wire],
        tables,
        pool: pool(64, 2048 + 128),
        local: local_spec(),
        unresolved_peers: vec![7],
    };

    let feed = |input: &mut photon_dpdk::RingProducer, frame: &[u8]| {
        let mut m = rx_pool.alloc().unwrap();
        m.extend_from_slice(frame).unwrap();
        input.enqueue_one(m).map_err(|_| "input full").unwrap();
    };

    let quit = AtomicBool::new(false);
    let shared = ControlShared::new();
    let payload: Vec<u8> = (0..700u32).map(|i| (i * 13 + 3) as u8).collect();
    let drops = std::thread::scope(|s| {
        let driver = s.spawn(|| control_core::run(&mut link, &mut control, &shared, &quit, TICK));
        // A failed assertion below must still stop the driver, or the scope never ends.
        let _stop = StopOnDrop(&quit);
        let deadline = Instant::now() + Duration::from_secs(10);
        // Polls the pipeline (it moves the control core's frames to TX) until `done`.
        let mut poll_until = |what: &str, done: &mut dyn FnMut(&[Vec<u8>]) -> bool| {
            let mut got = Vec::new();
            loop {
                pipeline.poll();
                pipeline.housekeeping();
                got.extend(drain_frames(&mut output));
                if done(&got) {
                    return got;
                }
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                std::thread::sleep(Duration::from_millis(1));
            }
        };

        // 1. The control core asks who has peer 7's address, out of port 0.
        let out = poll_until("the ARP request", &mut |g| !g.is_empty());
        let req = &out[0];
        let eth = EthernetFrame::new_checked(&req[..]).unwrap();
        assert_eq!(eth.dst_addr(), EthernetAddress::BROADCAST);
        assert_eq!(eth.src_addr().0, RELAY_MAC);
        assert_eq!(eth.ethertype(), EthernetProtocol::Arp);
        let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
        assert_eq!(
            arp,
            ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Request,
                source_hardware_addr: EthernetAddress(RELAY_MAC),
                source_protocol_addr: RELAY_IP,
                target_hardware_addr: EthernetAddress([0; 6]),
                target_protocol_addr: *peer_addr(7).ip(),
            }
        );
        assert!(
            out.iter().all(|f| f == req),
            "nothing asked about the static next hop"
        );
        reader.refresh();
        let slot7 = reader.get().slot_of(7).expect("7 is received from");
        assert!(
            !reader.get().peer(slot7).unwrap().fans_out,
            "7 waits for its MAC"
        );
        let slot8 = reader.get().slot_of(8).expect("8 resolved statically");
        assert_eq!(reader.get().peer(slot8).unwrap().spec.next_hop_mac, GW_MAC);

        // 1b. Meanwhile 7's fragments are forwarded (to 5 and 8), not dropped as unknown.
        feed(&mut input, &fragment(7, 41, 0, &payload));
        let copies = poll_until("the fan-out from 7", &mut |g| g.len() >= 2);
        assert_eq!(copies.len(), 2, "to 5 and 8, nothing to 7");
        assert!(copies.iter().any(|c| c[..6] == peer_mac(5)), "to gateway 5");
        assert!(
            copies.iter().any(|c| c[..6] == GW_MAC),
            "to 8 via the gateway"
        );

        // 2. Peer 7 answers; the pipeline hands the reply to the control core, which
        // publishes a table with 7 and its MAC.
        feed(
            &mut input,
            &arp_frame(
                ArpOperation::Reply,
                peer_mac(7),
                *peer_addr(7).ip(),
                RELAY_IP,
            ),
        );
        let has_mac = |reader: &mut photon_relay::forward::publish::Reader<Table>, mac: [u8; 6]| {
            reader.refresh();
            let t = reader.get();
            t.slot_of(7)
                .and_then(|s| t.peer(s))
                .is_some_and(|p| p.spec.next_hop_mac == mac)
        };
        poll_until("the table with 7", &mut |_| {
            has_mac(&mut reader, peer_mac(7))
        });

        // 3. A fragment from gateway 5 goes to 7 with the learned MAC (and to 8 via the
        // default gateway).
        feed(&mut input, &fragment(5, 42, 0, &payload));
        let copies = poll_until("the fan-out", &mut |g| g.len() >= 2);
        assert_eq!(copies.len(), 2, "to 7 and 8, not back to 5");
        let to7 = copies
            .iter()
            .find(|c| c[..6] == peer_mac(7))
            .expect("a copy to 7's learned MAC");
        check_copy(7, to7, &payload);
        assert!(copies.iter().any(|c| c[..6] == GW_MAC), "8 via the gateway");

        // 4. A gratuitous ARP: 7 moved to a new NIC. The next fragment follows it.
        let moved = [2, 0, 0, 0, 2, 7];
        feed(
            &mut input,
            &arp_frame(
                ArpOperation::Request,
                moved,
                *peer_addr(7).ip(),
                *peer_addr(7).ip(),
            ),
        );
        poll_until("the table with 7's new MAC", &mut |_| {
            has_mac(&mut reader, moved)
        });
        feed(&mut input, &fragment(5, 43, 0, &payload));
        let copies = poll_until("the second fan-out", &mut |g| g.len() >= 2);
        assert!(copies.iter().any(|c| c[..6] == moved), "to 7's new MAC");

        quit.store(true, Ordering::Relaxed);
        driver.join().unwrap()
    });
    assert_eq!(drops, control_core::DriverDrops::default());
    assert!(control.counters().get(ControlCounter::ArpRequestsSent) >= 1);
    assert_eq!(control.counters().get(ControlCounter::ArpRepliesLearned), 2);
    assert_eq!(control.arp().unresolved().count(), 0);
    assert_eq!(
        shared.get(ControlCounter::ArpRepliesLearned),
        2,
        "published for /metrics"
    );
    pipeline.shutdown();
}
