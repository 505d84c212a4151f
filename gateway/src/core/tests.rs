//! The core without sockets: gateways joined by a simulated network with fake time.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bitcoin::Block;
use photon_protocol::chain::{Bitcoin, ChainAdapter};
use photon_protocol::identity::Identity;
use photon_protocol::wire::{self, MessageType, Packet};
use ring::rand::SystemRandom;

use super::*;
use crate::node::NodeEvent;

fn block(height: u32) -> Block {
    let path = format!(
        "{}/../data/bitcoin/mainnet/{height}.raw",
        env!("CARGO_MANIFEST_DIR")
    );
    Bitcoin::decode_block(&std::fs::read(&path).expect("block file")).expect("real block")
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 9500))
}

/// What the network does to one datagram: deliver these (possibly altered or extra) copies.
type Filter = Box<dyn FnMut(usize, &[u8]) -> Vec<Vec<u8>>>;

struct Sim {
    gws: Vec<Gateway>,
    now: Instant,
    queue: VecDeque<(usize, SocketAddr, Vec<u8>)>,
    filter: Filter,
    actions: Vec<Vec<NodeAction>>,
    events: Vec<Vec<GatewayEvent>>,
}

impl Sim {
    /// `n` gateways, all peers of each other, with `tune` applied to each config.
    fn peers(n: usize, tune: impl Fn(usize, &mut CoreConfig)) -> Sim {
        let rng = SystemRandom::new();
        let ids: Vec<Identity> = (0..n).map(|_| Identity::generate(&rng).unwrap()).collect();
        let now = Instant::now();
        let mut gws = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let mut c = CoreConfig::new();
            for (j, other) in ids.iter().enumerate() {
                if j != i {
                    c.peers.push(PeerEndpoint {
                        addr: addr(j),
                        public_key: other.public_key(),
                        originate_for: false,
                    });
                }
            }
            c.uplink_bytes_per_sec = 1_000_000_000;
            tune(i, &mut c);
            let me = Identity::from_pkcs8_bytes(id.to_pkcs8_bytes()).unwrap();
            gws.push(Gateway::new(c, me, now, 1_700_000_000_000));
        }
        Sim {
            actions: vec![Vec::new(); n],
            events: vec![Vec::new(); n],
            gws,
            now,
            queue: VecDeque::new(),
            filter: Box::new(|_, d| vec![d.to_vec()]),
        }
    }

    fn step(&mut self) {
        let mut buf = vec![0u8; wire::MAX_DATAGRAM];
        for i in 0..self.gws.len() {
            let g = &mut self.gws[i];
            if g.poll_timeout().is_some_and(|t| t <= self.now) {
                g.handle_timeout(self.now);
            }
            while let Some(t) = g.poll_transmit(self.now, &mut buf) {
                for copy in (self.filter)(i, &buf[..t.len]) {
                    self.queue.push_back((i, t.dst, copy));
                }
            }
            while let Some(a) = g.poll_node_action() {
                self.actions[i].push(a);
            }
            while let Some(e) = g.poll_event() {
                self.events[i].push(e);
            }
        }
        while let Some((from, dst, d)) = self.queue.pop_front() {
            if let Some(j) = (0..self.gws.len()).find(|&j| addr(j) == dst) {
                self.gws[j].handle_datagram(self.now, addr(from), &d);
            }
        }
        let next = self
            .gws
            .iter()
            .filter_map(Gateway::poll_timeout)
            .min()
            .unwrap_or(self.now + Duration::from_millis(1));
        self.now = next.max(self.now + Duration::from_micros(100));
    }

    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            self.step();
            if done(self) {
                return true;
            }
        }
        false
    }

    fn all_up(&self) -> bool {
        self.gws
            .iter()
            .all(|g| g.links().iter().all(|l| l.2 == LinkState::Up))
    }

    fn block_from_node(&mut self, i: usize, b: &Block) {
        self.gws[i].handle_node_event(
            self.now,
            NodeEvent::BlockReceived {
                block: b.clone(),
                hash: b.block_hash(),
                received_at: self.now,
            },
        );
    }

    fn delivered(&self, i: usize) -> Vec<&Block> {
        self.actions[i]
            .iter()
            .filter_map(|a| match a {
                NodeAction::SendBlock(b) => Some(b),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn peers_register_and_deliver_a_real_block_byte_identical() {
    let mut sim = Sim::peers(2, |_, _| {});
    assert!(
        sim.run_until(Duration::from_secs(2), Sim::all_up),
        "links up"
    );
    let b = block(702861);
    sim.block_from_node(0, &b);
    assert!(sim.run_until(Duration::from_secs(5), |s| !s.delivered(1).is_empty()));
    let got = sim.delivered(1)[0];
    assert_eq!(got.block_hash(), b.block_hash());
    assert_eq!(Bitcoin::encode_block(got), Bitcoin::encode_block(&b));
    assert!(got.check_merkle_root());
    // The key went out on B's receipt (1 receiver, share 0.5), not on the timeout.
    assert!(sim.events[0].iter().any(|e| matches!(
        e,
        GatewayEvent::KeyReleased {
            reason: ReleaseReason::Receipts,
            receipts: 1,
            ..
        }
    )));
    // The node echoing the block back is not sent again.
    sim.block_from_node(1, &b);
    assert_eq!(sim.gws[1].stats().blocks_duplicate, 1);
    assert_eq!(sim.gws[1].stats().blocks_from_network, 1);
    assert_eq!(sim.gws[0].stats().blocks_from_node, 1);
    assert!(sim.delivered(0).is_empty());
}

#[test]
fn withheld_key_means_no_receiver_has_the_block() {
    // Five receivers expected, all must answer, and a timeout far away: the key never goes.
    let mut sim = Sim::peers(3, |_, c| {
        c.key_release = KeyReleasePolicy::Receipts {
            share: 1.0,
            receivers: 5,
            timeout: Duration::from_secs(3600),
        };
    });
    assert!(sim.run_until(Duration::from_secs(2), Sim::all_up));
    let b = block(574200);
    sim.block_from_node(0, &b);
    assert!(sim.run_until(Duration::from_secs(3), |s| {
        s.gws[1].blocks_waiting_for_key() == 1 && s.gws[2].blocks_waiting_for_key() == 1
    }));
    sim.run_until(Duration::from_secs(2), |_| false);
    for i in 1..3 {
        assert!(sim.delivered(i).is_empty(), "gateway {i} has no block");
        assert_eq!(sim.gws[i].stats().key_releases_received, 0);
        assert_eq!(sim.gws[i].blocks_waiting_for_key(), 1);
    }
    assert_eq!(sim.gws[0].stats().key_releases_sent, 0);
    assert_eq!(sim.gws[0].stats().receipts_received, 2);
}

#[test]
fn spliced_and_tampered_fragments_are_rejected_and_the_block_still_arrives() {
    let mut sim = Sim::peers(2, |_, _| {});
    assert!(sim.run_until(Duration::from_secs(2), Sim::all_up));
    let mut n = 0u32;
    // On-path attacker between A and B: for every 5th block fragment, a copy with a garbled
    // payload goes first (the hop tag does not cover the payload, §4.2.4); for every 7th, a
    // copy with a header bit flipped (the tag must fail).
    sim.filter = Box::new(move |from, d| {
        let p = Packet::new_checked(d).unwrap();
        if from != 0 || !p.msg_type().is_ok_and(MessageType::is_block_fragment) {
            return vec![d.to_vec()];
        }
        n += 1;
        let mut out = Vec::new();
        if n.is_multiple_of(5) {
            let mut bad = d.to_vec();
            for b in &mut bad[wire::HEADER_LEN..] {
                *b ^= 0x5a;
            }
            out.push(bad);
        }
        if n.is_multiple_of(7) {
            let mut bad = d.to_vec();
            bad[wire::field::INDEX.start + 1] ^= 1;
            out.push(bad);
        }
        out.push(d.to_vec());
        out
    });
    let b = block(556977);
    sim.block_from_node(0, &b);
    assert!(sim.run_until(Duration::from_secs(5), |s| !s.delivered(1).is_empty()));
    assert_eq!(sim.delivered(1)[0].block_hash(), b.block_hash());
    let asm = sim.gws[1].assembler_stats();
    assert!(
        asm.rejected_bad_shard + asm.rejected_manifest > 0,
        "spliced payloads rejected by the assembler: {asm:?}"
    );
    assert!(
        sim.gws[1].stats().dropped_bad_tag > 0,
        "tampered headers fail the hop tag"
    );
}

#[test]
fn key_release_policy_counts() {
    let p = KeyReleasePolicy::Receipts {
        share: 0.5,
        receivers: 5,
        timeout: Duration::from_secs(3),
    };
    assert_eq!(p.receipts_needed(), 3);
    let p = KeyReleasePolicy::Receipts {
        share: 0.0,
        receivers: 5,
        timeout: Duration::from_secs(3),
    };
    assert_eq!(p.receipts_needed(), 1);
    assert_eq!(KeyReleasePolicy::Immediate.receipts_needed(), 0);
}

#[test]
fn garbage_and_strangers_are_counted_drops() {
    let mut sim = Sim::peers(2, |_, _| {});
    assert!(sim.run_until(Duration::from_secs(2), Sim::all_up));
    let now = sim.now;
    let g = &mut sim.gws[0];
    g.handle_datagram(now, addr(1), b"not photon at all");
    g.handle_datagram(now, addr(1), &[]);
    let mut keepalive = vec![0u8; 44];
    keepalive[..8].copy_from_slice(&[0x50, 0x68, 1, 0x32, 0, 0, 0, 8]);
    g.handle_datagram(now, addr(9), &keepalive);
    g.handle_datagram(now, addr(1), &keepalive);
    let s = g.stats();
    assert_eq!(s.dropped_malformed, 2);
    assert_eq!(s.dropped_unknown_peer, 1);
    assert_eq!(s.dropped_bad_tag, 1);
}

#[test]
fn stage_records_follow_a_block_from_origin_to_receiver() {
    let mut sim = Sim::peers(2, |_, c| c.stage_records = true);
    assert!(sim.run_until(Duration::from_secs(2), Sim::all_up));
    let b = block(702861);
    sim.block_from_node(0, &b);
    assert!(sim.run_until(Duration::from_secs(5), |s| !s.delivered(1).is_empty()));
    // The receiver decodes before the repair fragments are all out.
    sim.run_until(Duration::from_millis(300), |_| false);
    let drain = |g: &mut Gateway| std::iter::from_fn(|| g.poll_stage()).collect::<Vec<_>>();
    let (out, inb) = (drain(&mut sim.gws[0]), drain(&mut sim.gws[1]));
    let names = |v: &[StageRecord]| v.iter().map(|r| r.stage.as_str()).collect::<Vec<_>>();
    assert_eq!(
        names(&out),
        [
            "block_in",
            "compress",
            "seal",
            "fec",
            "first_fragment_out",
            "receipts",
            "key_release",
            "last_fragment_out"
        ]
        .iter()
        .filter(|s| names(&out).contains(s))
        .copied()
        .collect::<Vec<_>>()
    );
    for s in [
        "block_in",
        "fec",
        "first_fragment_out",
        "last_fragment_out",
        "key_release",
    ] {
        assert!(
            names(&out).contains(&s),
            "origin records {s}: {:?}",
            names(&out)
        );
    }
    let stream = out[1].stream.expect("compress has the stream");
    assert!(out.iter().all(|r| r.block == Some(b.block_hash())));
    assert!(out[0].stream.is_none());
    // Bytes on the wire: every datagram of the first pass, at least the compressed block.
    let last = out
        .iter()
        .find(|r| r.stage == Stage::LastFragmentOut)
        .unwrap();
    let wire = last.bytes.unwrap();
    assert!(wire >= sim.gws[0].stats().compressed_bytes_out, "{wire}");
    assert!(wire <= sim.gws[0].stats().bytes_out, "{wire}");
    assert_eq!(
        names(&inb),
        [
            "first_fragment_in",
            "last_fragment_in",
            "receipt_sent",
            "key_in",
            "decode",
            "deliver"
        ]
    );
    assert!(inb.iter().all(|r| r.stream == Some(stream)));
    assert_eq!(inb[5].block, Some(b.block_hash()));
    assert!(inb.windows(2).all(|w| w[0].at <= w[1].at));
}

#[test]
fn no_stage_records_unless_asked() {
    let mut sim = Sim::peers(2, |_, _| {});
    assert!(sim.run_until(Duration::from_secs(2), Sim::all_up));
    sim.block_from_node(0, &block(574200));
    assert!(sim.run_until(Duration::from_secs(5), |s| !s.delivered(1).is_empty()));
    assert!(sim.gws[0].poll_stage().is_none());
    assert!(sim.gws[1].poll_stage().is_none());
}
