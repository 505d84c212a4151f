//! A block crosses two relays: node A (python-bitcoinlib, tests/py/gateway_e2e.py) → gateway
//! A, registered only at relay 1 → relay 1 → relay 2 (peered with relay 1 by static hop keys,
//! as `[[peer]] send_key/recv_key` configure) → gateway B, registered only at relay 2 → node
//! B, which checks the block byte for byte. Everything the block needs crosses both relays:
//! transactions with the short IDs relay 1 assigns, the block's fragments, B's receipt back to
//! A and A's key release to B, and (second test) B's tx requests for what it never saw.
//!
//! Harness in tests/common. Needs `/usr/bin/python3` with python-bitcoinlib
//! (scripts/setup.sh).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use photon_gateway::core::GatewayEvent;
use photon_protocol::hopauth::{HopKey, HopKeys};
use photon_protocol::identity::Identity;
use photon_protocol::shortid::ShortIdRange;
use photon_protocol::wire::{flags, MessageType, Packet};
use photon_relay::control::ControlCounter;
use photon_relay::forward::table::{PeerKind, PeerSpec};
use photon_relay::ops::counters::Counter;
use photon_relay::socket::{RunningRelay, SocketRelay, SocketRelayConfig};
use ring::rand::SystemRandom;

mod common;

use common::*;

/// Two free loopback ports (bound and released: the relays bind them right after).
fn two_free_ports() -> (SocketAddrV4, SocketAddrV4) {
    let a = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let b = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = |s: &UdpSocket| match s.local_addr().unwrap() {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => unreachable!("bound to 127.0.0.1"),
    };
    (addr(&a), addr(&b))
}

/// Relays 1 and 2 on loopback, each the other's `[[peer]]` with static hop keys, each with
/// its own short-ID range (relay i of 16, as configs/relay.toml asks of a mesh).
fn relay_pair() -> (RunningRelay, RunningRelay) {
    let (a1, a2) = two_free_ports();
    relay_pair_at(a1, a2, a2)
}

/// Relay 1 at `a1` sends to relay 2 at `to2` (relay 2's address, or a proxy in front of it),
/// relay 2 at `a2` sends to relay 1 directly.
fn relay_pair_at(
    a1: SocketAddrV4,
    a2: SocketAddrV4,
    to2: SocketAddrV4,
) -> (RunningRelay, RunningRelay) {
    let k12 = HopKey::from_bytes(&[0x12; 16]);
    let k21 = HopKey::from_bytes(&[0x21; 16]);
    let peer = |node_id, addr, send: &HopKey, recv: &HopKey| PeerSpec {
        node_id,
        kind: PeerKind::Relay,
        addr,
        next_hop_mac: [0; 6],
        port: 0,
        keys: Some(HopKeys {
            send: send.clone(),
            recv: recv.clone(),
        }),
        subscribed: true,
    };
    let start = |node_id: u32, bind, p: PeerSpec| {
        let mut cfg = SocketRelayConfig::loopback(node_id);
        // Bursts of a block's transactions overflow the default socket buffer (~208 KiB).
        cfg.recv_buffer = Some(8 << 20);
        cfg.send_buffer = Some(8 << 20);
        cfg.bind = bind;
        cfg.control.keepalive_ms = 200;
        cfg.control.short_ids = ShortIdRange::for_relay(node_id - 1, 16).unwrap();
        cfg.peers = vec![p];
        let id = Identity::generate(&SystemRandom::new()).unwrap();
        SocketRelay::bind(cfg, id)
            .expect("relay binds")
            .spawn()
            .expect("relay runs")
    };
    let r1 = start(1, a1, peer(2, to2, &k12, &k21));
    let r2 = start(2, a2, peer(1, a1, &k21, &k12));
    (r1, r2)
}

fn fragments(r: &RunningRelay) -> u64 {
    r.stats().core.get(Counter::Fragments)
}

fn control(r: &RunningRelay, c: ControlCounter) -> u64 {
    r.stats().control.get(c)
}

/// Every transaction known beforehand, through both relays: B needs no round trip, and A's
/// key is released on B's receipt, which crossed relay 2 and relay 1.
#[test]
fn block_with_all_txs_known_crosses_two_peered_relays() {
    let (r1, r2) = relay_pair();
    let (mut py, a, b) = nodes_and_gateways(702861, "all", &[&r1], &[&r2], |c| c);
    // Both stores hold every transaction under relay 1's short IDs (B's came via relay 2).
    let (n, sb) = send_known_block(&mut py, &a, &b);
    assert_eq!(sb.stats.txs_from_network as usize, n);
    assert_eq!(sb.stats.key_releases_received, 1, "{:?}", sb.stats);
    let sa = wait_snapshot(&a, "A's receipt", |s| s.stats.receipts_received >= 1);
    assert_eq!(sa.stats.blocks_from_node, 1);
    assert_eq!(sa.stats.key_releases_sent, 1);
    let ev = events(&a);
    assert!(
        ev.iter()
            .any(|e| matches!(e, GatewayEvent::KeyReleased { receipts: 1, .. })),
        "key released on B's receipt: {ev:?}"
    );
    // The path really was A → relay 1 → relay 2 → B.
    std::thread::sleep(Duration::from_millis(100)); // one housekeeping period: counters published
    assert!(fragments(&r1) > 0 && fragments(&r2) > 0);
    assert_eq!(
        fragments(&r1),
        fragments(&r2),
        "every fragment crossed both"
    );
    assert!(control(&r1, ControlCounter::ShortIdsAssigned) as usize >= n);
    assert_eq!(
        control(&r2, ControlCounter::ShortIdsAssigned),
        0,
        "relay 2 passes relay 1's IDs on"
    );
    r1.stop().unwrap();
    r2.stop().unwrap();
}

/// B never saw a tenth of the block's transactions and has no direct link to A: its tx
/// requests are answered through the relays, and it still delivers.
#[test]
fn block_with_a_tenth_unknown_is_completed_through_two_relays() {
    let (r1, r2) = relay_pair();
    let (mut py, ga, gb) = nodes(556977, "split");
    let a = ga.start(py.a, core(&[&r1], &[gb.key()]), free_udp());
    let start_b = |node| gb.start(node, core(&[&r2], &[ga.key()]), free_udp());
    let (_b, _, sb) = send_split_block(&mut py, &a, start_b);
    assert_eq!(sb.stats.key_releases_received, 1, "{:?}", sb.stats);
    std::thread::sleep(Duration::from_millis(100)); // counters published
    assert!(
        control(&r2, ControlCounter::TxRequests) >= 1,
        "B asked relay 2"
    );
    // Relay 2 answers from its transaction cache (relay 1 passed every transaction on to it
    // with its short ID) or passes the request on to relay 1.
    assert!(
        control(&r2, ControlCounter::TxRequestServed)
            + control(&r2, ControlCounter::TxRequestPassedOn)
            >= 1
    );
    eprintln!(
        "relay 2: tx requests {}, served {}, passed on {}; relay 1: tx requests {}, served {}",
        control(&r2, ControlCounter::TxRequests),
        control(&r2, ControlCounter::TxRequestServed),
        control(&r2, ControlCounter::TxRequestPassedOn),
        control(&r1, ControlCounter::TxRequests),
        control(&r1, ControlCounter::TxRequestServed),
    );
    r1.stop().unwrap();
    r2.stop().unwrap();
}

/// A one-way lossy link from relay 1 to relay 2: the first copy of every repair shard and of
/// every fourth source shard is lost (more than FEC recovers), everything else, retransmissions
/// included, passes. Returns its address and the count of datagrams it dropped.
fn lossy_link(to: SocketAddrV4, quit: Arc<AtomicBool>) -> (SocketAddrV4, Arc<AtomicU64>) {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let SocketAddr::V4(addr) = sock.local_addr().unwrap() else {
        unreachable!("bound to 127.0.0.1")
    };
    let dropped = Arc::new(AtomicU64::new(0));
    let d = dropped.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !quit.load(Ordering::Relaxed) {
            let Ok(n) = sock.recv(&mut buf) else {
                continue;
            };
            let lose = match Packet::new_checked(&buf[..n]) {
                Ok(p) if p.flags() & flags::RETRANSMIT == 0 => match p.msg_type() {
                    Ok(MessageType::RepairShard) => true,
                    Ok(MessageType::SourceShard) => p.index() % 4 == 1,
                    _ => false,
                },
                _ => false,
            };
            if lose {
                d.fetch_add(1, Ordering::Relaxed);
            } else {
                let _ = sock.send_to(&buf[..n], to);
            }
        }
    });
    (addr, dropped)
}

/// Fragments lost between the relays are beyond FEC: B asks relay 2, which lacks them and
/// asks relay 1; relay 1's retransmissions come back through relay 2 to B, which delivers.
#[test]
fn fragments_lost_between_the_relays_are_repaired_through_both() {
    let height = 227836; // 39 kB
    let (a1, a2) = two_free_ports();
    let quit = Arc::new(AtomicBool::new(false));
    let (via, lost) = lossy_link(a2, quit.clone());
    let (r1, r2) = relay_pair_at(a1, a2, via);
    let (mut py, a, b) = nodes_and_gateways(height, "none", &[&r1], &[&r2], |c| c);
    py.wait_for("READY ");
    wait_snapshot(&a, "A's relay link up", links_up);
    wait_snapshot(&b, "B's relay link up", links_up);
    let sb = send_block(&mut py, &b);
    assert!(lost.load(Ordering::Relaxed) > 0, "the link lost fragments");
    assert!(sb.stats.repair_requests_sent >= 1, "{:?}", sb.stats);
    std::thread::sleep(Duration::from_millis(100)); // counters published
    assert!(control(&r2, ControlCounter::RepairPassedOn) >= 1);
    assert!(control(&r1, ControlCounter::RepairServed) >= 1);
    assert!(control(&r2, ControlCounter::RetransmitRelayed) >= 1);
    assert_eq!(control(&r2, ControlCounter::UnsolicitedRetransmit), 0);
    drop(a);
    quit.store(true, Ordering::Relaxed);
    r1.stop().unwrap();
    r2.stop().unwrap();
}
