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

/// The key goes only once all `receivers` answered, and never for lack of them (the timeout is
/// an hour away).
fn every_receiver(receivers: u32) -> KeyReleasePolicy {
    KeyReleasePolicy::Receipts {
        share: 1.0,
        receivers,
        timeout: Duration::from_secs(3600),
    }
}

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

    /// [`Sim::peers`], run until every link is up (which must take under 2 s).
    fn peers_up(n: usize, tune: impl Fn(usize, &mut CoreConfig)) -> Sim {
        let mut sim = Sim::peers(n, tune);
        assert!(sim.run_until(Duration::from_secs(2), Sim::all_up));
        sim
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
                NodeAction::SendBlock(b)
                | NodeAction::AnnounceBlock(b)
                | NodeAction::SendCmpctBlock(b) => Some(b),
                NodeAction::AnnounceTx(_) => None,
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

/// A burst of blocks from the node at one instant (a node catching up, a reorganisation):
/// every one goes out and arrives, none is dropped for a newer one while still under way.
#[test]
fn a_burst_of_blocks_from_the_node_all_arrive() {
    // Regtest: blocks made here meet its proof-of-work limit after a few nonces.
    let mut sim = Sim::peers_up(2, |_, c| c.network = bitcoin::Network::Regtest);
    let limit = crate::node::pow::pow_limit(bitcoin::Network::Regtest);
    let base = block(227836);
    let blocks: Vec<Block> = (0..40u32)
        .map(|i| {
            // One coinbase-only block each (distinct by lock time), merkle root its txid.
            let mut cb = base.txdata[0].clone();
            cb.lock_time = bitcoin::absolute::LockTime::from_consensus(i);
            let mut header = base.header;
            header.merkle_root = bitcoin::TxMerkleNode::from_raw_hash(cb.compute_txid().into());
            header.bits = bitcoin::CompactTarget::from_consensus(0x207f_ffff);
            while crate::node::pow::check_pow(&header, limit).is_err() {
                header.nonce += 1;
            }
            Block {
                header,
                txdata: vec![cb],
            }
        })
        .collect();
    for b in &blocks {
        sim.block_from_node(0, b);
    }
    assert!(sim.run_until(Duration::from_secs(10), |s| s.delivered(1).len() == 40));
    let mut got: Vec<_> = sim.delivered(1).iter().map(|b| b.block_hash()).collect();
    let mut want: Vec<_> = blocks.iter().map(Block::block_hash).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(sim.gws[0].stats().out_streams_dropped, 0);
}

/// With `Immediate` the key leaves before the first fragment, so the receiver holds it
/// unverified (origin not bound yet), checks it when the assembler binds the origin, and opens
/// the block as soon as it decodes: no key wait.
#[test]
fn a_key_before_the_manifest_waits_for_the_origin_then_opens_at_once() {
    let mut sim = Sim::peers_up(2, |_, c| c.key_release = KeyReleasePolicy::Immediate);
    let b = block(702861);
    sim.block_from_node(0, &b);
    assert!(sim.run_until(Duration::from_secs(5), |s| !s.delivered(1).is_empty()));
    assert_eq!(sim.delivered(1)[0].block_hash(), b.block_hash());
    let st = sim.gws[1].stats();
    assert_eq!(st.key_releases_received, 1);
    assert_eq!(st.key_releases_bad, 0);
    assert_eq!(sim.gws[1].blocks_waiting_for_key(), 0);
    let delivered = sim.events[1].iter().find_map(|e| match e {
        GatewayEvent::BlockDelivered {
            sealed, timings, ..
        } => Some((*sealed, timings.key_wait)),
        _ => None,
    });
    assert_eq!(delivered, Some((true, Duration::ZERO)));
    assert!(sim.events[0].iter().any(|e| matches!(
        e,
        GatewayEvent::KeyReleased {
            reason: ReleaseReason::Immediate,
            ..
        }
    )));
}

#[test]
fn withheld_key_means_no_receiver_has_the_block() {
    // Five receivers expected, all must answer, and a timeout far away: the key never goes.
    let mut sim = Sim::peers_up(3, |_, c| c.key_release = every_receiver(5));
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
    let mut sim = Sim::peers_up(2, |_, _| {});
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
    let mut sim = Sim::peers_up(2, |_, _| {});
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
    let mut sim = Sim::peers_up(2, |_, c| c.stage_records = true);
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
    let mut sim = Sim::peers_up(2, |_, _| {});
    sim.block_from_node(0, &block(574200));
    assert!(sim.run_until(Duration::from_secs(5), |s| !s.delivered(1).is_empty()));
    assert!(sim.gws[0].poll_stage().is_none());
    assert!(sim.gws[1].poll_stage().is_none());
}

/// Gives gateways `gws` the block's transactions (not the coinbase) under short ID
/// 5000 + position, leaving out those `skip` names; the result is what a relay would have
/// assigned.
fn share_txs(sim: &mut Sim, b: &Block, gws: &[usize], skip: impl Fn(usize) -> bool) {
    use photon_protocol::shortid::ShortId;
    let now = sim.now;
    for (i, tx) in b.txdata.iter().enumerate().skip(1) {
        if skip(i) {
            continue;
        }
        for &g in gws {
            sim.gws[g]
                .txs
                .store_mut()
                .insert(
                    ShortId(5000 + i as u32),
                    Bitcoin::tx_ids(tx),
                    &Bitcoin::encode_tx(tx),
                    now,
                )
                .unwrap();
        }
    }
}

/// Every encoding with and without sealing: the block arrives byte-identical, the receiver
/// reads both choices from the payload (its own config says compact + sealed), the stage
/// records say what happened, and `last_fragment_out` carries exactly the bytes of the first
/// pass's datagrams.
#[test]
fn every_encoding_with_and_without_sealing_delivers_the_block() {
    use std::cell::Cell;
    use std::rc::Rc;
    let b = block(227836);
    let raw = Bitcoin::encode_block(&b);
    let mut sizes = Vec::new();
    for encoding in BlockEncoding::ALL {
        for encrypt in [true, false] {
            let what = format!("{encoding:?}, encrypt {encrypt}");
            let mut sim = Sim::peers_up(2, |i, c| {
                c.stage_records = true;
                if i == 0 {
                    c.block_encoding = encoding;
                    c.encrypt = encrypt;
                }
            });
            // The receiver lacks every tenth transaction: compact and BIP152-sized ask the
            // origin for them over the peer link, full needs nothing.
            share_txs(&mut sim, &b, &[0], |_| false);
            share_txs(&mut sim, &b, &[1], |i| i % 10 == 3);
            let first_pass = Rc::new(Cell::new(0u64));
            let counted = first_pass.clone();
            sim.filter = Box::new(move |from, d| {
                let p = Packet::new_checked(d).unwrap();
                if from == 0
                    && p.msg_type().is_ok_and(MessageType::is_block_fragment)
                    && d[wire::field::FLAGS] & wire::flags::RETRANSMIT == 0
                {
                    counted.set(counted.get() + d.len() as u64);
                }
                vec![d.to_vec()]
            });
            sim.block_from_node(0, &b);
            assert!(
                sim.run_until(Duration::from_secs(5), |s| !s.delivered(1).is_empty()),
                "{what}: delivered"
            );
            sim.run_until(Duration::from_millis(300), |_| false);
            let got = sim.delivered(1)[0];
            assert_eq!(Bitcoin::encode_block(got), raw, "{what}: byte-identical");

            let (s0, s1) = (sim.gws[0].stats().clone(), sim.gws[1].stats().clone());
            let requests = s1.tx_requests_sent;
            if encoding == BlockEncoding::Full {
                assert_eq!(requests, 0, "{what}: full needs no transactions");
            } else {
                assert!(requests >= 1, "{what}: missing transactions asked for");
            }
            assert_eq!(s0.blocks_out_unsealed, u64::from(!encrypt), "{what}");
            assert_eq!(s1.blocks_in_unsealed, u64::from(!encrypt), "{what}");
            assert_eq!(s0.key_releases_sent > 0, encrypt, "{what}");
            assert_eq!(s1.decompress_failed + s1.open_failed, 0, "{what}");
            let delivered = sim.events[1]
                .iter()
                .find_map(|e| match e {
                    GatewayEvent::BlockDelivered {
                        encoding: e,
                        sealed,
                        compressed_bytes,
                        timings,
                        ..
                    } => Some((*e, *sealed, *compressed_bytes, *timings)),
                    _ => None,
                })
                .expect("delivered event");
            assert_eq!((delivered.0, delivered.1), (encoding, encrypt), "{what}");
            if !encrypt {
                assert_eq!(delivered.3.key_wait, Duration::ZERO, "{what}");
                assert_eq!(delivered.3.open, Duration::ZERO, "{what}");
            }
            sizes.push((encoding, encrypt, delivered.2));

            let drain = |g: &mut Gateway| std::iter::from_fn(|| g.poll_stage()).collect::<Vec<_>>();
            let (out, inb) = (drain(&mut sim.gws[0]), drain(&mut sim.gws[1]));
            let has = |v: &[StageRecord], s: Stage| v.iter().any(|r| r.stage == s);
            for s in [Stage::Seal, Stage::KeyRelease] {
                assert_eq!(has(&out, s), encrypt, "{what}: origin records {s:?}");
            }
            assert!(!encrypt || !has(&out, Stage::Receipts) || has(&out, Stage::KeyRelease));
            assert!(
                encrypt || !has(&out, Stage::Receipts),
                "{what}: no quorum unsealed"
            );
            assert_eq!(has(&inb, Stage::KeyIn), encrypt, "{what}: receiver key_in");
            for s in [Stage::Compress, Stage::Fec, Stage::FirstFragmentOut] {
                assert!(has(&out, s), "{what}: {s:?}");
            }
            for s in [Stage::LastFragmentIn, Stage::ReceiptSent, Stage::Decode] {
                assert!(has(&inb, s), "{what}: {s:?}");
            }
            let wire = out
                .iter()
                .find(|r| r.stage == Stage::LastFragmentOut)
                .and_then(|r| r.bytes)
                .expect("last_fragment_out with bytes");
            assert_eq!(
                wire,
                first_pass.get(),
                "{what}: wire bytes of the first pass"
            );
            assert!(wire > s0.compressed_bytes_out, "{what}");
        }
    }
    // Sealed or not, the payload is the same size (magic = tag); the three encodings differ.
    let size = |e, s| sizes.iter().find(|x| x.0 == e && x.1 == s).unwrap().2;
    for e in BlockEncoding::ALL {
        assert_eq!(size(e, true), size(e, false));
    }
    let (c, bip, full) = (
        size(BlockEncoding::Compact, true),
        size(BlockEncoding::Bip152Sized, true),
        size(BlockEncoding::Full, true),
    );
    assert!(c < bip && bip < full, "{c} {bip} {full}");
    assert_eq!(full, raw.len() + 2);
}

/// Sends `payload` from gateway 0 to gateway 1 as a stream of its own, bypassing gateway 0's
/// encoder (a sender with another idea of the format, or a buggy one).
fn inject_stream(sim: &mut Sim, stream: u64, payload: &[u8]) {
    use photon_protocol::sender::{Sender, SenderConfig};
    let now = sim.now;
    let cfg = SenderConfig::unpaced();
    let key = sim.gws[0].identity.key_pair();
    let stream = photon_protocol::integrity::own_stream_id(key, stream as u32);
    let mut sender = Sender::new(cfg, stream, payload, key, now).expect("sender");
    let session = sim.gws[0].links[0].session.as_ref().expect("link up");
    let mut buf = vec![0u8; wire::MAX_DATAGRAM];
    let mut datagrams = Vec::new();
    while let Some(len) = sender.poll_transmit(now, &mut buf) {
        let mut p = Packet::new_checked(&mut buf[..len]).unwrap();
        p.set_sender(session.our_id);
        session.keys.send.sign_packet(&mut p).unwrap();
        datagrams.push(buf[..len].to_vec());
    }
    for d in datagrams {
        sim.gws[1].handle_datagram(now, addr(0), &d);
    }
}

/// A payload the receiver cannot decode (a format byte it does not know, a full block whose
/// merkle root is wrong) is a typed, counted failure: no panic, nothing delivered.
#[test]
fn undecodable_payloads_are_counted_failures_never_blocks() {
    use photon_protocol::compress::envelope::wrap_plain;
    let mut sim = Sim::peers_up(2, |_, _| {});
    let raw = Bitcoin::encode_block(&block(227836));
    let mut unknown = vec![9u8, 0];
    unknown.extend_from_slice(&raw);
    inject_stream(&mut sim, 0x1111, &wrap_plain(&unknown));
    let mut bad_root = vec![3u8, 0];
    bad_root.extend_from_slice(&raw);
    bad_root[2 + 36] ^= 1;
    inject_stream(&mut sim, 0x2222, &wrap_plain(&bad_root));
    sim.run_until(Duration::from_millis(500), |_| false);
    let s = sim.gws[1].stats();
    assert_eq!(s.decompress_failed, 2, "{s:?}");
    assert_eq!(s.blocks_from_network, 0);
    assert!(sim.delivered(1).is_empty());
    let reasons: Vec<&String> = sim.events[1]
        .iter()
        .filter_map(|e| match e {
            GatewayEvent::BlockFailed { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("format 9 is unknown")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("merkle")), "{reasons:?}");
}

/// An origin gateway with one relay link (link 0) and one peer link (link 1, the peer `peer`),
/// neither up, that has just sent a real block as a sealed stream; the key waits for receipts
/// from all of `receivers` gateways (no timeout in sight). `members` are its other known
/// gateways (trusted origins: without a roster the only receipt signers besides the peer).
/// Returns it with the stream and its manifest hash.
fn origin_awaiting_receipts(
    receivers: u32,
    peer: &Identity,
    members: &[&Identity],
) -> (Gateway, Instant, u64, [u8; 32]) {
    origin_awaiting_receipts_with(receivers, peer, |c| {
        c.trusted_origins = members.iter().map(|m| m.public_key()).collect();
    })
}

fn origin_awaiting_receipts_with(
    receivers: u32,
    peer: &Identity,
    tune: impl FnOnce(&mut CoreConfig),
) -> (Gateway, Instant, u64, [u8; 32]) {
    let rng = SystemRandom::new();
    let mut c = CoreConfig::new();
    c.relays.push(RelayEndpoint {
        addr: addr(10),
        public_key: Identity::generate(&rng).unwrap().public_key(),
    });
    c.peers.push(PeerEndpoint {
        addr: addr(11),
        public_key: peer.public_key(),
        originate_for: false,
    });
    c.key_release = every_receiver(receivers);
    tune(&mut c);
    let now = Instant::now();
    let mut g = Gateway::new(c, Identity::generate(&rng).unwrap(), now, 1_700_000_000_000);
    let b = block(227836);
    g.handle_node_event(
        now,
        NodeEvent::BlockReceived {
            block: b.clone(),
            hash: b.block_hash(),
            received_at: now,
        },
    );
    assert_eq!(g.outbound.streams.len(), 1, "the block went out");
    let (stream, hash) = (
        g.outbound.streams[0].stream_id(),
        g.outbound.streams[0].manifest_hash(),
    );
    (g, now, stream, hash)
}

fn key_released(g: &mut Gateway) -> Option<(u32, ReleaseReason)> {
    std::iter::from_fn(|| g.poll_event()).find_map(|e| match e {
        GatewayEvent::KeyReleased {
            receipts, reason, ..
        } => Some((receipts, reason)),
        _ => None,
    })
}

const RELAY_LINK: LinkId = 0;
const PEER_LINK: LinkId = 1;

#[test]
fn signed_receipts_through_a_relay_count_once_per_receiver() {
    let rng = SystemRandom::new();
    let ids: Vec<Identity> = (0..4).map(|_| Identity::generate(&rng).unwrap()).collect();
    let (mut g, now, stream, hash) =
        origin_awaiting_receipts(3, &ids[3], &[&ids[0], &ids[1], &ids[2]]);
    let receipt = |i: usize| wire::ReceiptRepr::sign(stream, hash, &ids[i]);

    // Receiver 0 twice (sent twice, or replayed by a relay): one receiver.
    g.handle_receipt(now, RELAY_LINK, &receipt(0));
    g.handle_receipt(now, RELAY_LINK, &receipt(0));
    assert_eq!(g.stats().receipts_duplicate, 1);
    // Unsigned receipts through a relay name nobody: however many, none counts.
    for _ in 0..5 {
        g.handle_receipt(now, RELAY_LINK, &wire::ReceiptRepr::unsigned(stream, hash));
    }
    assert_eq!(g.stats().receipts_unsigned, 5);
    // A forged signature (receiver 1's key, a flipped bit) and a receipt signed for another
    // stream moved onto ours do not count.
    let mut forged = receipt(1);
    if let Some((_, sig)) = &mut forged.signed {
        sig[10] ^= 0x40;
    }
    g.handle_receipt(now, RELAY_LINK, &forged);
    let moved = wire::ReceiptRepr {
        stream,
        ..wire::ReceiptRepr::sign(stream ^ 1, hash, &ids[2])
    };
    g.handle_receipt(now, RELAY_LINK, &moved);
    assert_eq!(g.stats().receipts_bad_signature, 2);
    // A receipt for another block of the same stream id: mismatched.
    g.handle_receipt(
        now,
        RELAY_LINK,
        &wire::ReceiptRepr::sign(stream, [0x55; 32], &ids[1]),
    );
    assert_eq!(g.stats().receipts_mismatched, 1);
    assert!(
        key_released(&mut g).is_none(),
        "one receiver of three so far"
    );
    assert_eq!(g.outbound.streams[0].receipts(), 1);

    // Receiver 1 over the relay, receiver 2 as well: three distinct receivers release it.
    g.handle_receipt(now, RELAY_LINK, &receipt(1));
    assert!(key_released(&mut g).is_none(), "two of three");
    g.handle_receipt(now, RELAY_LINK, &receipt(2));
    assert_eq!(
        key_released(&mut g),
        Some((3, ReleaseReason::Receipts)),
        "three distinct receivers"
    );
    let s = g.stats();
    assert_eq!(s.receipts_received, 12);
    assert_eq!(
        (
            s.receipts_duplicate,
            s.receipts_unsigned,
            s.receipts_bad_signature
        ),
        (1, 5, 2)
    );
}

#[test]
fn a_peer_counts_once_over_its_link_and_through_a_relay() {
    let rng = SystemRandom::new();
    let peer = Identity::generate(&rng).unwrap();
    let other = Identity::generate(&rng).unwrap();
    let (mut g, now, stream, hash) = origin_awaiting_receipts(2, &peer, &[&other]);
    // Over the direct link the hop tag names the peer: an unsigned receipt counts for it.
    g.handle_receipt(now, PEER_LINK, &wire::ReceiptRepr::unsigned(stream, hash));
    assert_eq!(g.outbound.streams[0].receipts(), 1);
    // The same peer's signed receipt through a relay (or replayed by one), and again over the
    // link: the same receiver.
    let signed = wire::ReceiptRepr::sign(stream, hash, &peer);
    g.handle_receipt(now, RELAY_LINK, &signed);
    g.handle_receipt(now, PEER_LINK, &signed);
    assert_eq!(g.stats().receipts_duplicate, 2);
    // A signed receipt over the peer link must verify too.
    let mut bad = signed;
    if let Some((_, sig)) = &mut bad.signed {
        sig[0] ^= 1;
    }
    g.handle_receipt(now, PEER_LINK, &bad);
    assert_eq!(g.stats().receipts_bad_signature, 1);
    // Our own key never counts (a copied key file, or a relay replaying what it cannot forge).
    let own = Identity::from_pkcs8_bytes(g.identity.to_pkcs8_bytes()).unwrap();
    g.handle_receipt(
        now,
        RELAY_LINK,
        &wire::ReceiptRepr::sign(stream, hash, &own),
    );
    assert_eq!(g.stats().receipts_duplicate, 3);
    assert!(key_released(&mut g).is_none(), "one receiver of two");
    // A second, distinct receiver completes the quorum.
    g.handle_receipt(
        now,
        RELAY_LINK,
        &wire::ReceiptRepr::sign(stream, hash, &other),
    );
    assert_eq!(key_released(&mut g), Some((2, ReleaseReason::Receipts)));
    // After the release nothing more is checked or counted toward anything.
    g.handle_receipt(now, RELAY_LINK, &wire::ReceiptRepr::unsigned(stream, hash));
    assert_eq!(g.stats().receipts_unsigned, 0);
    assert_eq!(g.outbound.streams[0].receipts(), 2);
}

#[test]
fn quorum_of_distinct_receivers_over_peer_links_end_to_end() {
    // Four gateways, all peers; the origin waits for all three receivers: each sends one signed
    // receipt over its peer link, and the key goes out on the third.
    let mut sim = Sim::peers_up(4, |_, c| c.key_release = every_receiver(3));
    let b = block(227836);
    sim.block_from_node(0, &b);
    assert!(sim.run_until(Duration::from_secs(5), |s| (1..4)
        .all(|i| !s.delivered(i).is_empty())));
    assert!(sim.events[0].iter().any(|e| matches!(
        e,
        GatewayEvent::KeyReleased {
            reason: ReleaseReason::Receipts,
            receipts: 3,
            ..
        }
    )));
    let s = sim.gws[0].stats();
    assert_eq!(s.receipts_received, 3);
    assert_eq!(
        (
            s.receipts_duplicate,
            s.receipts_unsigned,
            s.receipts_bad_signature
        ),
        (0, 0, 0)
    );
    for i in 1..4 {
        assert_eq!(sim.gws[i].stats().receipts_sent, 1);
    }
}

/// A deployment roster of `gateways` (and one relay per key of `relays`), signed by `operator`.
fn roster_of(operator: &Identity, gateways: &[&Identity], relays: &[PublicKey]) -> Arc<Roster> {
    use photon_protocol::roster::{Member, MemberRole};
    use photon_protocol::shortid::ShortIdRange;
    let mut members: Vec<Member> = gateways
        .iter()
        .map(|g| Member {
            key: g.public_key(),
            role: MemberRole::Gateway,
        })
        .collect();
    for (i, r) in relays.iter().enumerate() {
        members.push(Member {
            key: *r,
            role: MemberRole::Relay {
                short_ids: ShortIdRange::new(i as u32 * 1000, 1000).unwrap(),
            },
        });
    }
    let mut r = Roster::new(1, u64::MAX, members).unwrap();
    r.sign(operator).unwrap();
    Arc::new(r)
}

#[test]
fn attack_relay_forges_receipts_with_made_up_keys() {
    // F1: a hostile relay sees the cleartext manifest, so it can sign a receipt for the stream
    // with any key it makes up. Without a roster the origin counts only its known gateways
    // (trusted origins and peers): fifty forged receivers release nothing.
    let rng = SystemRandom::new();
    let (peer, honest) = (
        Identity::generate(&rng).unwrap(),
        Identity::generate(&rng).unwrap(),
    );
    let (mut g, now, stream, hash) = origin_awaiting_receipts(1, &peer, &[&honest]);
    for _ in 0..50 {
        let sybil = Identity::generate(&rng).unwrap();
        g.handle_receipt(
            now,
            RELAY_LINK,
            &wire::ReceiptRepr::sign(stream, hash, &sybil),
        );
    }
    assert!(
        key_released(&mut g).is_none(),
        "no key for made-up receivers"
    );
    assert_eq!(g.stats().receipts_not_member, 50);
    assert_eq!(g.outbound.streams[0].receipts(), 0);
    // The honest receiver's receipt, through the same relay, still releases it.
    g.handle_receipt(
        now,
        RELAY_LINK,
        &wire::ReceiptRepr::sign(stream, hash, &honest),
    );
    assert_eq!(key_released(&mut g), Some((1, ReleaseReason::Receipts)));
}

#[test]
fn attack_relay_forges_receipts_against_a_roster() {
    // With a roster, only its gateways count: not a trusted origin outside it, not the relay's
    // own key (a roster relay), not made-up keys; the origin itself never.
    let rng = SystemRandom::new();
    let ids: Vec<Identity> = (0..4).map(|_| Identity::generate(&rng).unwrap()).collect();
    let operator = Identity::generate(&rng).unwrap();
    let relay = Identity::generate(&rng).unwrap();
    let outsider = Identity::generate(&rng).unwrap();
    let roster = roster_of(
        &operator,
        &[&ids[0], &ids[1], &ids[2]],
        &[relay.public_key()],
    );
    let (mut g, now, stream, hash) = origin_awaiting_receipts_with(2, &ids[2], |c| {
        c.trusted_origins = vec![outsider.public_key()];
        c.roster = Some(roster);
    });
    for forger in [&relay, &outsider, &ids[3]] {
        g.handle_receipt(
            now,
            RELAY_LINK,
            &wire::ReceiptRepr::sign(stream, hash, forger),
        );
    }
    assert_eq!(g.stats().receipts_not_member, 3);
    assert!(key_released(&mut g).is_none());
    g.handle_receipt(
        now,
        RELAY_LINK,
        &wire::ReceiptRepr::sign(stream, hash, &ids[0]),
    );
    assert!(key_released(&mut g).is_none(), "one roster gateway of two");
    // The peer (a roster gateway) over its direct link completes it.
    g.handle_receipt(now, PEER_LINK, &wire::ReceiptRepr::unsigned(stream, hash));
    assert_eq!(key_released(&mut g), Some((2, ReleaseReason::Receipts)));
}

#[test]
fn attack_peer_not_in_roster_gets_no_receipt_counted() {
    // A configured peer that the roster does not list is no receiver either: its hop tag
    // authenticates the link, not membership.
    let rng = SystemRandom::new();
    let (peer, member) = (
        Identity::generate(&rng).unwrap(),
        Identity::generate(&rng).unwrap(),
    );
    let operator = Identity::generate(&rng).unwrap();
    let roster = roster_of(&operator, &[&member], &[]);
    let (mut g, now, stream, hash) = origin_awaiting_receipts_with(1, &peer, |c| {
        c.roster = Some(roster);
    });
    g.handle_receipt(now, PEER_LINK, &wire::ReceiptRepr::unsigned(stream, hash));
    g.handle_receipt(
        now,
        PEER_LINK,
        &wire::ReceiptRepr::sign(stream, hash, &peer),
    );
    assert_eq!(g.stats().receipts_not_member, 2);
    assert!(key_released(&mut g).is_none());
    g.handle_receipt(
        now,
        RELAY_LINK,
        &wire::ReceiptRepr::sign(stream, hash, &member),
    );
    assert_eq!(key_released(&mut g), Some((1, ReleaseReason::Receipts)));
}

/// A whole transaction message for `tx` under `short_id`.
fn tx_message<'a>(
    tx: &bitcoin::Transaction,
    short_id: u32,
    bytes: &'a mut Vec<u8>,
) -> wire::TransactionRepr<'a> {
    *bytes = Bitcoin::encode_tx(tx);
    wire::TransactionRepr {
        transfer: 77,
        index: 0,
        count: 1,
        short_id: Some(short_id),
        tx_len: bytes.len() as u32,
        offset: 0,
        data: bytes,
    }
}

#[test]
fn attack_member_rebinds_held_short_ids_to_junk() {
    // F2: a hostile relay or peer gateway sends other (valid) transactions under short IDs
    // the receivers already hold, so that blocks rebuild with the wrong transactions. The
    // gateway never rebinds a held ID and binds nothing a peer names; the honest block still
    // decodes from the bindings it had.
    let (origin, receiver) = (0, 1);
    let mut sim = Sim::peers(2, |_, c| {
        c.key_release = KeyReleasePolicy::Immediate;
    });
    assert!(sim.run_until(Duration::from_secs(2), Sim::all_up));
    let b = block(227836);
    share_txs(&mut sim, &b, &[origin, receiver], |_| false);
    let other = block(227835);
    let g = &mut sim.gws[receiver];
    let now = sim.now;
    let peer_link = 0; // Sim::peers: link 0 is the other gateway, the attacker here
    let mut buf = Vec::new();
    // Through the peer link: the ID binds nothing, the held one is not offered other bytes.
    let t = tx_message(&other.txdata[0], 5001, &mut buf);
    g.txs.handle_transaction(now, &g.links, peer_link, &t);
    // A junk binding for an ID not held: still not bound (only relays assign).
    let t = tx_message(&other.txdata[0], 9_999_999, &mut buf);
    g.txs.handle_transaction(now, &g.links, peer_link, &t);
    let s = g.stats();
    assert_eq!(s.short_id_not_from_relay, 2);
    assert_eq!(s.short_id_conflicts, 1);
    assert!(g
        .txs
        .store()
        .get(photon_protocol::shortid::ShortId(9_999_999))
        .is_none());
    let held = g
        .txs
        .store()
        .ids(photon_protocol::shortid::ShortId(5001))
        .unwrap();
    assert_eq!(held.wtxid, Bitcoin::tx_ids(&b.txdata[1]).wtxid);
    // A peer's ShortIdAssign is refused too.
    g.txs.handle_short_id_assign(
        now,
        &g.links,
        peer_link,
        &wire::ShortIdAssignRepr {
            entries: vec![([7; 32], 5002)],
        },
    );
    assert_eq!(g.stats().short_id_not_from_relay, 3);
    // The honest block still arrives, byte-identical.
    sim.block_from_node(origin, &b);
    assert!(sim.run_until(Duration::from_secs(5), |s| !s
        .delivered(receiver)
        .is_empty()));
    assert_eq!(sim.delivered(receiver)[0], &b);
}

#[test]
fn attack_relay_rebinds_a_held_short_id() {
    // The same through a relay link: a binding from a relay for an ID already held for other
    // bytes is a counted conflict, the store keeps the first binding.
    let rng = SystemRandom::new();
    let peer = Identity::generate(&rng).unwrap();
    let (mut g, now, _, _) = origin_awaiting_receipts(1, &peer, &[]);
    let b = block(227836);
    let id = photon_protocol::shortid::ShortId(42);
    g.txs
        .store_mut()
        .insert(
            id,
            Bitcoin::tx_ids(&b.txdata[1]),
            &Bitcoin::encode_tx(&b.txdata[1]),
            now,
        )
        .unwrap();
    let mut buf = Vec::new();
    let t = tx_message(&b.txdata[2], 42, &mut buf);
    g.txs.handle_transaction(now, &g.links, RELAY_LINK, &t);
    assert_eq!(g.stats().short_id_conflicts, 1);
    assert_eq!(
        g.txs.store().ids(id).unwrap().wtxid,
        Bitcoin::tx_ids(&b.txdata[1]).wtxid
    );
    // The same binding again is a duplicate, not a conflict.
    let t = tx_message(&b.txdata[1], 42, &mut buf);
    g.txs.handle_transaction(now, &g.links, RELAY_LINK, &t);
    assert_eq!(g.stats().short_id_conflicts, 1);
}

#[test]
fn attack_key_releases_for_made_up_streams_evict_nothing() {
    // F8: a hostile member sends key releases for thousands of random streams. They are held
    // apart (bounded) and never evict the inbound stream waiting for its key; a bogus release
    // for the real stream is refused against its origin (F4) and the origin's own still opens
    // the block, not earlier than the origin released it.
    let mut sim = Sim::peers(2, |_, c| {
        c.key_release = KeyReleasePolicy::Receipts {
            share: 1.0,
            receivers: 5,
            timeout: Duration::from_secs(10),
        };
    });
    assert!(sim.run_until(Duration::from_secs(2), Sim::all_up));
    let b = block(227836);
    sim.block_from_node(0, &b);
    assert!(sim.run_until(Duration::from_secs(3), |s| s.gws[1]
        .blocks_waiting_for_key()
        == 1));
    let stream = sim.gws[0].outbound_stream_ids()[0];
    let attacker = Identity::generate(&SystemRandom::new()).unwrap();
    let now = sim.now;
    let g = &mut sim.gws[1];
    for n in 0..3000u64 {
        let k = photon_protocol::seal::BlockKey::from_bytes([n as u8; 32]);
        let release = k.release(n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1, &attacker);
        g.inbound
            .handle_key_release(now, 0, &release, &mut in_cx!(g));
    }
    let bogus = photon_protocol::seal::BlockKey::from_bytes([0xee; 32]).release(stream, &attacker);
    g.inbound.handle_key_release(now, 0, &bogus, &mut in_cx!(g));
    let s = g.stats();
    assert_eq!(s.key_releases_held, 3000);
    assert!(
        s.key_releases_dropped >= 3000 - 1024,
        "the early store is bounded"
    );
    assert_eq!(
        s.key_releases_bad, 1,
        "the bogus release for the real stream"
    );
    assert_eq!(g.blocks_waiting_for_key(), 1, "the real stream still waits");
    assert!(
        sim.delivered(1).is_empty(),
        "no key before the origin releases it"
    );
    // The origin's timeout releases the real key: the block arrives.
    assert!(sim.run_until(Duration::from_secs(15), |s| !s.delivered(1).is_empty()));
    assert_eq!(sim.delivered(1)[0], &b);
    assert_eq!(sim.gws[0].stats().key_releases_sent, 1);
}

#[test]
fn attack_tx_request_amplification_is_bounded() {
    // F7: a member's 1.2 KB tx request names the same big transactions over and over, and
    // asks again at once. Each ID is answered once per link (and again only after
    // tx_answer_repeat), and the paced queue to that link is bounded in bytes.
    let mut sim = Sim::peers(2, |_, c| {
        c.paced_queue_bytes = 16 << 10;
    });
    assert!(sim.run_until(Duration::from_secs(2), Sim::all_up));
    let b = block(227836);
    share_txs(&mut sim, &b, &[1], |_| false);
    let now = sim.now;
    let g = &mut sim.gws[1];
    let peer_link = 0;
    let ids: Vec<u32> = (0..298).map(|i| 5001 + (i % 3)).collect();
    let r = wire::TxRequestRepr {
        stream: 0,
        short_ids: ids,
    };
    g.txs.handle_tx_request(now, &g.links, peer_link, &r, false);
    g.drain_txs(now);
    assert_eq!(
        g.stats().tx_requests_served,
        3,
        "three distinct IDs, once each"
    );
    assert_eq!(g.stats().tx_request_ids_refused, 295);
    g.txs.handle_tx_request(now, &g.links, peer_link, &r, false);
    assert_eq!(
        g.stats().tx_requests_served,
        3,
        "asked again at once: not answered"
    );
    // Every transaction of the block, asked for: only 16 KiB are queued for that link.
    let all = wire::TxRequestRepr {
        stream: 0,
        short_ids: (5004..5004 + 298).collect(),
    };
    g.txs
        .handle_tx_request(now, &g.links, peer_link, &all, false);
    g.drain_txs(now);
    let s = g.stats();
    assert!(s.dropped_paced_full > 0, "{s:?}");
    assert!(g.paced.bytes.values().all(|&b| b <= 16 << 10));
    // After the repeat interval an ID is answered again (a lost answer can be asked for).
    let later = now + Duration::from_secs(1);
    let one = wire::TxRequestRepr {
        stream: 0,
        short_ids: vec![5001],
    };
    g.txs
        .handle_tx_request(later, &g.links, peer_link, &one, false);
    assert_eq!(g.stats().tx_requests_served, s.tx_requests_served + 1);
}

#[test]
fn attack_relay_assigns_outside_every_roster_range() {
    // With a roster, a relay's IDs come from its range: a binding from a relay for an ID in
    // no roster relay's range is refused (a hostile relay squatting other IDs), one inside a
    // range is bound.
    let rng = SystemRandom::new();
    let peer = Identity::generate(&rng).unwrap();
    let operator = Identity::generate(&rng).unwrap();
    let relays = [PublicKey([0x71; 32]), PublicKey([0x72; 32])];
    let roster = roster_of(&operator, &[&peer], &relays); // ranges 0..1000, 1000..2000
    let (mut g, now, _, _) = origin_awaiting_receipts_with(1, &peer, |c| {
        c.roster = Some(roster);
    });
    let b = block(227836);
    let mut buf = Vec::new();
    let t = tx_message(&b.txdata[1], 5000, &mut buf);
    g.txs.handle_transaction(now, &g.links, RELAY_LINK, &t);
    assert_eq!(g.stats().short_id_out_of_range, 1);
    assert!(g.txs.store().is_empty());
    let t = tx_message(&b.txdata[1], 1500, &mut buf);
    g.txs.handle_transaction(now, &g.links, RELAY_LINK, &t);
    assert_eq!(
        g.txs.store().len(),
        1,
        "in relay 2's range, passed on by relay 1"
    );
}

#[test]
fn attack_trusted_origin_sends_invalid_blocks() {
    // F6: a trusted origin (a member, or a hostile one) sends merkle-consistent blocks its
    // receivers' nodes would reject: a header whose hash misses its target, and the
    // CVE-2012-2459 duplicate-transaction mutation. Neither reaches the node (counted); the
    // honest block after them does.
    let mut sim = Sim::peers(2, |_, c| {
        c.key_release = KeyReleasePolicy::Immediate;
    });
    assert!(sim.run_until(Duration::from_secs(2), Sim::all_up));
    let b = block(227836);
    let mut bad_pow = b.clone();
    bad_pow.header.nonce ^= 1;
    sim.block_from_node(0, &bad_pow);
    assert!(sim.run_until(Duration::from_secs(5), |s| s.gws[1]
        .stats()
        .blocks_invalid_pow
        == 1));
    // The honest block (same transactions, valid header) still arrives.
    sim.block_from_node(0, &b);
    assert!(sim.run_until(Duration::from_secs(5), |s| !s.delivered(1).is_empty()));
    assert_eq!(sim.delivered(1), vec![&b]);
    // A mutation of another block (same header hash as the real one, so it is sent before
    // the real one here).
    let other = block(227835);
    let mutated = (0..12)
        .map(|k| {
            let mut m = other.clone();
            let n = m.txdata.len();
            m.txdata
                .extend_from_slice(&other.txdata[n.saturating_sub(1 << k)..]);
            m
        })
        .find(|m| m.check_merkle_root())
        .unwrap();
    sim.block_from_node(0, &mutated);
    assert!(sim.run_until(Duration::from_secs(5), |s| s.gws[1]
        .stats()
        .blocks_invalid_mutated
        == 1));
    assert_eq!(
        sim.delivered(1).len(),
        1,
        "nothing invalid reached the node"
    );
    let by_origin = &sim.gws[1].stats().invalid_blocks_by_origin;
    assert_eq!(
        by_origin.get(&sim.gws[0].public_key().to_string()),
        Some(&2)
    );
}

#[test]
fn attack_replayed_older_roster_is_refused_and_a_newer_one_takes_effect() {
    // The operator adds gateway `late` in roster 2. Before it, `late`'s receipts do not count;
    // after, they do. An older roster (a replay of roster 1, or a hostile party's stale copy)
    // is refused and changes nothing.
    let rng = SystemRandom::new();
    let (peer, late) = (
        Identity::generate(&rng).unwrap(),
        Identity::generate(&rng).unwrap(),
    );
    let operator = Identity::generate(&rng).unwrap();
    let first = roster_of(&operator, &[&peer], &[]);
    let (mut g, now, stream, hash) = origin_awaiting_receipts_with(1, &peer, |c| {
        c.roster = Some(first.clone());
    });
    g.handle_receipt(
        now,
        RELAY_LINK,
        &wire::ReceiptRepr::sign(stream, hash, &late),
    );
    assert_eq!(g.stats().receipts_not_member, 1);
    let mut second = (*roster_of(&operator, &[&peer, &late], &[])).clone();
    second.serial = 2;
    second.signatures.clear();
    second.sign(&operator).unwrap();
    g.replace_roster(Arc::new(second)).unwrap();
    assert_eq!(g.stats().roster_updates, 1);
    assert_eq!(
        g.replace_roster(first),
        Err(photon_protocol::roster::RosterError::NotNewer {
            serial: 1,
            current: 2
        })
    );
    assert_eq!(g.roster().unwrap().serial, 2);
    g.handle_receipt(
        now,
        RELAY_LINK,
        &wire::ReceiptRepr::sign(stream, hash, &late),
    );
    assert_eq!(key_released(&mut g), Some((1, ReleaseReason::Receipts)));
}

#[test]
fn attack_junk_first_fragments_do_not_block_honest_transactions() {
    // F9: a member sends first fragments of 4 MB "transactions" that never complete, 200 of
    // them, to fill the partial-transaction slots and budget. They hold only the bytes that
    // came, the oldest are evicted, and an honest two-fragment transaction still completes.
    let rng = SystemRandom::new();
    let peer = Identity::generate(&rng).unwrap();
    let (mut g, now, _, _) = origin_awaiting_receipts(1, &peer, &[]);
    let junk = [0x5au8; 1000];
    for n in 0..200u64 {
        let t = wire::TransactionRepr {
            transfer: 1_000 + n,
            index: 0,
            count: 4000,
            short_id: Some(7),
            tx_len: 4_000_000,
            offset: 0,
            data: &junk,
        };
        g.txs.handle_transaction(now, &g.links, RELAY_LINK, &t);
    }
    assert!(g.stats().partials_evicted >= 200 - 64);
    assert!(g.txs.partial_bytes() <= 64 * 1000);
    // An honest transaction in two fragments, bound by the relay.
    let b = block(227836);
    let bytes = Bitcoin::encode_tx(&b.txdata[1]);
    let half = bytes.len() / 2;
    for (i, (offset, data)) in [(0, &bytes[..half]), (half, &bytes[half..])]
        .into_iter()
        .enumerate()
    {
        let t = wire::TransactionRepr {
            transfer: 5,
            index: i as u16,
            count: 2,
            short_id: Some(900),
            tx_len: bytes.len() as u32,
            offset: offset as u32,
            data,
        };
        g.txs.handle_transaction(now, &g.links, RELAY_LINK, &t);
    }
    let held = g.txs.store().ids(photon_protocol::shortid::ShortId(900));
    assert_eq!(
        held.map(|i| i.wtxid),
        Some(Bitcoin::tx_ids(&b.txdata[1]).wtxid)
    );
}
