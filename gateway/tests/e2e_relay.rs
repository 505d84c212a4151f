//! End to end with code nobody here wrote at both ends: node A (python-bitcoinlib, played by
//! tests/py/gateway_e2e.py) → gateway A → a real relay (photon-relay's kernel-socket backend on
//! loopback) → gateway B → node B, with real mainnet blocks that must arrive byte-identical
//! (node B checks hash, merkle root and bytes).
//!
//! Needs `/usr/bin/python3` with python-bitcoinlib (scripts/setup.sh).

use std::time::{Duration, Instant};

use photon_gateway::core::{GatewayEvent, KeyReleasePolicy};
use photon_gateway::driver::Snapshot;

mod common;

use common::*;

/// Every transaction of the block known beforehand: the block crosses with no round trip.
#[test]
fn block_with_all_txs_known_crosses_the_relay_without_tx_requests() {
    let r = relay(200);
    let (mut py, a, b) = nodes_and_gateways(702861, "all", &[&r], &[&r], |c| c);
    // Both stores hold every transaction under the relay's short IDs.
    let (n, sb) = send_known_block(&mut py, &a, &b);
    assert_eq!(sb.stats.txs_from_network as usize, n);
    let sa = wait_snapshot(&a, "A sent", |s| s.stats.blocks_from_node == 1);
    assert_eq!(sa.stats.txs_from_node as usize, n);
    assert!(
        sa.stats.compressed_bytes_out * 50 < sa.stats.block_bytes_out,
        "compressed {} of {} bytes",
        sa.stats.compressed_bytes_out,
        sa.stats.block_bytes_out
    );
    let ev = events(&a);
    assert!(
        ev.iter()
            .any(|e| matches!(e, GatewayEvent::KeyReleased { receipts: 1, .. })),
        "key released on B's receipt: {ev:?}"
    );
    r.stop().unwrap();
}

/// B never saw a tenth of the block's transactions: it asks for them and still delivers.
#[test]
fn block_with_a_tenth_unknown_is_completed_by_tx_requests() {
    let r = relay(200);
    let (mut py, ga, gb) = nodes(556977, "split");
    // A and B are also direct peers: the relay does not answer tx requests, the origin does.
    let ((ca, ua), (cb, ub)) = peered(&[&r], &ga, &gb);
    let a = ga.start(py.a, ca, ua);
    let (_b, phase1, _) = send_split_block(&mut py, &a, |node| gb.start(node, cb, ub));
    let sa = a.snapshot();
    assert!(sa.stats.tx_requests_served as usize >= phase1);
    r.stop().unwrap();
}

/// The relay dies in the middle of a block: A sends it to its peer B directly.
#[test]
fn relay_killed_mid_block_falls_back_to_the_direct_peer_link() {
    let r = relay(200);
    let (mut py, ga, gb) = nodes(227836, "none"); // 39 kB
    let ((mut ca, ua), (cb, ub)) = peered(&[&r], &ga, &gb);
    // 1 Mbit/s: the block's ~37 datagrams take ~0.35 s, long enough to kill the relay inside.
    ca.uplink_bytes_per_sec = 125_000;
    ca.burst = 1;
    ca.peer_fallback = Duration::from_millis(400);
    let a = ga.start(py.a, ca, ua);
    let b = gb.start(py.b, cb, ub);
    py.wait_for("READY ");
    wait_snapshot(&a, "A's links up", |s| s.links.len() == 2 && links_up(s));
    wait_snapshot(&b, "B's links up", links_up);
    py.say("SEND_BLOCK");
    // Kill the relay once a few fragments went through it.
    let relay_stats = r.stats();
    let deadline = Instant::now() + WAIT;
    while b.snapshot().assembler.datagrams < 5 {
        assert!(
            Instant::now() < deadline,
            "no fragment reached B through the relay"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    r.stop().unwrap();
    drop(relay_stats);
    let at_kill = b.snapshot().assembler.datagrams;
    py.pass();
    let sb = wait_snapshot(&b, "B delivered", |s| s.stats.blocks_from_network == 1);
    assert!(
        sb.assembler.datagrams > at_kill,
        "the rest came over the peer link"
    );
    let sa = a.snapshot();
    assert_eq!(sa.stats.peer_fallbacks, 1);
    assert!(events(&a)
        .iter()
        .any(|e| matches!(e, GatewayEvent::PeerFallback { peers: 1, .. })));
}

/// The origin withholds the key: B decodes the sealed block but cannot produce it.
#[test]
fn withheld_key_no_receiver_produces_the_block_and_junk_is_dropped() {
    let r = relay(200);
    let (mut py, ga, gb) = nodes(367891, "none");
    let mut ca = core(&[&r], &[gb.key()]);
    ca.key_release = KeyReleasePolicy::Receipts {
        share: 1.0,
        receivers: 3,
        timeout: Duration::from_secs(3600),
    };
    let a = ga.start(py.a, ca, free_udp());
    let b = gb.start(py.b, core(&[&r], &[ga.key()]), free_udp());
    py.wait_for("READY ");
    wait_snapshot(&b, "B's relay link up", links_up);
    // Junk at B's port from a stranger: counted drops, nothing else.
    let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..100u32 {
        let mut d = vec![0x50, 0x68, 1, 0x01, 0, 0, 0, 4];
        d.extend_from_slice(&[0; 28]);
        d.extend_from_slice(&i.to_be_bytes());
        junk.send_to(&d, b.local_addr()).unwrap();
        junk.send_to(b"garbage", b.local_addr()).unwrap();
        if i % 10 == 9 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    py.say("SEND_BLOCK");
    let sb = wait_snapshot(&b, "B holds the sealed block", |s| {
        s.blocks_waiting_for_key == 1
    });
    std::thread::sleep(Duration::from_millis(500));
    let sb2 = b.snapshot();
    assert_eq!(sb2.stats.blocks_from_network, 0, "no block without the key");
    assert_eq!(sb2.stats.key_releases_received, 0);
    assert_eq!(sb2.blocks_waiting_for_key, 1);
    assert_eq!(sb.node.blocks_sent, 0);
    assert!(
        sb2.stats.dropped_unknown_peer >= 90 && sb2.stats.dropped_malformed >= 90,
        "{:?}",
        sb2.stats
    );
    let sa = a.snapshot();
    assert_eq!(sa.stats.key_releases_sent, 0);
    assert_eq!(sa.stats.receipts_received, 1);
    r.stop().unwrap();
}

/// Two relays; the first dies before the block: both gateways fail over to the second.
#[test]
fn first_relay_quiet_gateways_fail_over_to_the_second() {
    let height = 363703;
    let (r1, r2) = (relay(100), relay(100));
    let (mut py, a, b) = nodes_and_gateways(height, "none", &[&r1, &r2], &[&r1, &r2], |c| c);
    py.wait_for("READY ");
    wait_snapshot(&a, "A on both relays", links_up);
    wait_snapshot(&b, "B on both relays", links_up);
    r1.stop().unwrap();
    let quiet = |s: &Snapshot| s.links[0].2 == photon_gateway::core::LinkState::Quiet;
    wait_snapshot(&a, "A sees relay 1 quiet", quiet);
    wait_snapshot(&b, "B sees relay 1 quiet", quiet);
    let sb = send_block(&mut py, &b);
    assert_eq!(sb.stats.failovers, 1);
    assert_eq!(a.snapshot().stats.failovers, 1);
    assert_eq!(a.snapshot().stats.peer_fallbacks, 0, "no peers configured");
    r2.stop().unwrap();
}
