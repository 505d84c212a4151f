//! End to end over real sockets, with python-bitcoinlib nodes at both ends (tests/common):
//! - forged and corrupted fragments injected on the path between a real relay and gateway B
//!   (where an attacker on the network, or a dishonest relay, sits) are rejected, and the block
//!   still arrives byte-identical;
//! - a block originated through a peer gateway: gateway A hands its node's block only to its peer
//!   P over their direct link; P originates it to the relay as its own; B, which trusts P's key
//!   and not A's, delivers it.
//!
//! Needs `/usr/bin/python3` with python-bitcoinlib (scripts/setup.sh).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::{
    core, events, free_udp, links_up, nodes, peer, relay, send_block, wait_snapshot, Gw, PyNodes,
};
use photon_gateway::core::{GatewayEvent, LinkKind, LinkState, RelayEndpoint};
use photon_protocol::wire::HEADER_LEN;
use photon_relay::ops::counters::Counter;

/// What the on-path attacker did.
#[derive(Default)]
struct Injected {
    /// Copies of source shards with a flipped payload byte, sent just before the original.
    payload_forged: AtomicU64,
    /// Copies with a flipped header byte (the hop tag no longer verifies).
    header_forged: AtomicU64,
    /// Copies of manifest fragments with a flipped byte in their chunk.
    manifest_forged: AtomicU64,
}

/// A UDP hop between gateway B and the relay: B's relay address is this proxy (the relay sees
/// the proxy's address as B's, as behind a NAT). From the relay towards B it forwards every
/// datagram and, for some block fragments, first sends a forged copy.
struct Proxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    injected: Arc<Injected>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    fn start(relay: SocketAddr, gateway: SocketAddr) -> Proxy {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let injected = Arc::new(Injected::default());
        let (s, inj) = (stop.clone(), injected.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut fragment = 0u64;
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let d = &buf[..n];
                if from == gateway {
                    let _ = sock.send_to(d, relay);
                    continue;
                }
                if from != relay {
                    continue;
                }
                let msg_type = d.get(3).copied().unwrap_or(0);
                let retransmit = d.get(4).is_some_and(|f| f & 1 != 0);
                if n > HEADER_LEN + 8 && !retransmit && matches!(msg_type, 0x01..=0x03) {
                    fragment += 1;
                    let mut forged = d.to_vec();
                    if msg_type == 0x03 {
                        // Manifest fragment: a byte near the end (the chunk).
                        forged[n - 3] ^= 0x40;
                        let _ = sock.send_to(&forged, gateway);
                        inj.manifest_forged.fetch_add(1, Ordering::Relaxed);
                    } else if fragment % 3 == 1 {
                        // Payload forged, header (and so its hop tag) intact.
                        forged[HEADER_LEN + 5] ^= 0xff;
                        let _ = sock.send_to(&forged, gateway);
                        inj.payload_forged.fetch_add(1, Ordering::Relaxed);
                    } else if fragment % 7 == 2 {
                        // Header forged: the stream id changed under the old tag.
                        forged[9] ^= 0x01;
                        let _ = sock.send_to(&forged, gateway);
                        inj.header_forged.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let _ = sock.send_to(d, gateway);
            }
        });
        Proxy {
            addr,
            stop,
            injected,
            thread: Some(thread),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn forged_fragments_injected_between_relay_and_receiver_are_rejected_and_the_block_arrives() {
    // 1.2 MB, ~2,500 transactions; none announced beforehand, so the block travels whole
    // (~1,000 fragments) and the attacker has plenty to forge.
    let r = relay(200);
    let (mut py, ga, gb) = nodes(574200, "none");
    let ub = free_udp();
    let proxy = Proxy::start(SocketAddr::V4(r.addr()), ub);
    let _a = ga.start(py.a, core(&[&r], &[gb.key()]), free_udp());
    let mut cb = core(&[], &[ga.key()]);
    cb.relays.push(RelayEndpoint {
        addr: proxy.addr,
        public_key: r.public_key(),
    });
    let b = gb.start(py.b, cb, ub);
    py.wait_for("READY ");
    wait_snapshot(&b, "B's relay link up (through the proxy)", links_up);
    let sb = send_block(&mut py, &b);
    let inj = &proxy.injected;
    let (payload, header, manifest) = (
        inj.payload_forged.load(Ordering::Relaxed),
        inj.header_forged.load(Ordering::Relaxed),
        inj.manifest_forged.load(Ordering::Relaxed),
    );
    let asm = &sb.assembler;
    eprintln!(
        "forged: {payload} payloads, {header} headers, {manifest} manifest fragments; B: \
         bad tag {}, bad shard {}, bad manifest {}, late {}",
        sb.stats.dropped_bad_tag, asm.rejected_bad_shard, asm.rejected_manifest, asm.late
    );
    assert!(
        payload > 20 && header > 5 && manifest > 0,
        "{payload} {header} {manifest}"
    );
    // Every forged header failed its hop tag; forged payloads that arrived while the stream was
    // open failed their shard hash (the others came after the block was decoded: late).
    assert!(sb.stats.dropped_bad_tag >= header, "{:?}", sb.stats);
    assert!(asm.rejected_bad_shard > 0, "{asm:?}");
    assert!(
        asm.rejected_bad_shard + asm.rejected_manifest + asm.late >= payload,
        "{asm:?} (forged payloads {payload}, manifests {manifest})"
    );
    assert_eq!(sb.stats.blocks_from_network, 1);
    assert_eq!(asm.decode_errors, 0, "{asm:?}");
    r.stop().unwrap();
}

#[test]
fn a_block_originated_through_a_peer_gateway_arrives_under_the_peer_s_identity() {
    let height = 367891;
    let r = relay(200);
    let mut py = PyNodes::start(height, "all");
    let (ga, gp, gb) = (Gw::new(), Gw::new(), Gw::new());
    let (ua, up) = (free_udp(), free_udp());
    // A: its blocks go only to P (its relay link still carries its transactions).
    let mut ca = core(&[&r], &[]);
    ca.peers.push(peer(gp.key(), up));
    ca.originate_via_peers = true;
    // P: originates what A sends it; its node is unreachable (a gateway without a node of its
    // own works on: it reconnects in the background).
    // P knows B (a trusted origin), so B's receipt counts toward P's key release.
    let mut cp = core(&[&r], &[gb.key()]);
    let mut pa = peer(ga.key(), ua);
    pa.originate_for = true;
    cp.peers.push(pa);
    // B trusts P's key only: a block with A as its origin would be dropped unread.
    let cb = core(&[&r], &[gp.key()]);
    let a = ga.start(py.a, ca, ua);
    let dead_node = free_udp(); // nothing listens on this TCP port
    let p = gp.start(dead_node, cp, up);
    let b = gb.start(py.b, cb, free_udp());
    let n = py.wait_count("READY ");
    wait_snapshot(&a, "A's peer link up", |s| {
        s.links
            .iter()
            .any(|l| matches!(l.0, LinkKind::Peer(_)) && l.2 == LinkState::Up)
    });
    wait_snapshot(&p, "P's store", |s| s.store.entries >= n);
    wait_snapshot(&b, "B's store", |s| s.store.entries >= n);
    let sb = send_block(&mut py, &b);
    assert_eq!(sb.stats.tx_requests_sent, 0);
    let sp = wait_snapshot(&p, "P took A's block", |s| s.stats.blocks_from_network == 1);
    assert_eq!(sp.stats.blocks_from_node, 0);
    let pe = events(&p);
    let planned_by_p = pe
        .iter()
        .find_map(|e| match e {
            GatewayEvent::BlockOriginated {
                datagrams_planned, ..
            } => Some(*datagrams_planned as u64),
            _ => None,
        })
        .unwrap_or_else(|| panic!("P originated the block: {pe:?}"));
    let be = events(&b);
    assert!(
        be.iter().any(|e| matches!(
            e,
            GatewayEvent::BlockDelivered {
                via: LinkKind::Relay(_),
                ..
            }
        )),
        "B got it through the relay: {be:?}"
    );
    // A's block went only to P: the relay forwarded P's stream and nothing of A's (had A also
    // sent its own stream of the same block, the relay would have forwarded about twice as
    // many fragments as P planned).
    let sa = a.snapshot();
    assert_eq!(sa.stats.blocks_from_node, 1);
    let forwarded = r.stats().core.get(Counter::Fragments);
    assert!(
        forwarded > 0 && forwarded <= planned_by_p,
        "the relay forwarded {forwarded} fragments, P planned {planned_by_p}"
    );
    r.stop().unwrap();
}
