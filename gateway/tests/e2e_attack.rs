//! End to end with an insider attacker (docs/protocol/8-threat-model.md): node A → gateway A →
//! a real relay (kernel-socket backend on loopback) → gateway B → node B, and a rogue gateway
//! registered at the same relay like any other (it holds a valid identity and session). The
//! rogue sees the fan-out of A's block and, as soon as the manifest arrives, sends receipts
//! for it signed with keys it made up (F1) and a key release for A's stream signed by itself
//! (F4). A's key must not go out on the forged receipts, the relay must drop the bogus release,
//! and node B must still get the block byte-identical.
//!
//! Needs `/usr/bin/python3` with python-bitcoinlib (scripts/setup.sh).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use photon_gateway::core::{GatewayEvent, KeyReleasePolicy, ReleaseReason};
use photon_protocol::hopauth::{HopKeys, Role};
use photon_protocol::identity::{self, EphemeralKey, Identity};
use photon_protocol::integrity::ManifestFragmentRepr;
use photon_protocol::seal::BlockKey;
use photon_protocol::wire::{
    FragmentKind, FragmentRepr, KeepaliveRepr, Message, Packet, ReceiptRepr, Repr, MAX_DATAGRAM,
};
use photon_relay::control::ControlCounter;
use photon_relay::ops::counters::{Counter, DropReason};
use ring::rand::SystemRandom;

mod common;

use common::*;

/// A registered gateway that plays the attacker, from a plain UDP socket.
struct Rogue {
    id: Identity,
    sock: UdpSocket,
    relay: SocketAddr,
    keys: HopKeys,
    node: u32,
    seq: u32,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn emit(repr: &Repr<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let n = repr.emit(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

impl Rogue {
    /// Registers at `relay` (§2.8) and returns once the session is up.
    fn register(relay: SocketAddr) -> Rogue {
        let rng = SystemRandom::new();
        let id = Identity::generate(&rng).unwrap();
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        for attempt in 0u8.. {
            assert!(Instant::now() < deadline, "the rogue could not register");
            let eph = EphemeralKey::generate(&rng).unwrap();
            let req = identity::register(&id, &eph, [attempt; 16], unix_ms());
            sock.send_to(&emit(&Repr::new(0, Message::Register(req))), relay)
                .unwrap();
            let Ok((n, _)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let Ok(p) = Packet::new_checked(&buf[..n]) else {
                continue;
            };
            let Ok(Repr {
                message: Message::RegisterAck(ack),
                ..
            }) = Repr::parse(&p)
            else {
                continue;
            };
            let ctx = identity::registration_context(&req, &ack, p.sender());
            let keys = eph.agree(&ack.ephemeral, &ctx, Role::Initiator).unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            return Rogue {
                id,
                sock,
                relay,
                keys,
                node: ack.node_id,
                seq: 0,
            };
        }
        unreachable!()
    }

    fn send(&self, message: Message<'_>) {
        let mut d = emit(&Repr::new(self.node, message));
        self.keys.send.sign_header(&mut d).unwrap();
        let _ = self.sock.send_to(&d, self.relay);
    }

    fn keepalive(&mut self) {
        self.seq += 1;
        self.send(Message::Keepalive(KeepaliveRepr {
            seq: self.seq,
            echo: 0,
        }));
    }

    /// Until `stop`: keeps its session alive (a keepalive every 50 ms) and hands each block
    /// fragment it receives to `on_fragment`.
    fn until_stop(
        &mut self,
        stop: &AtomicBool,
        mut on_fragment: impl FnMut(&Rogue, &FragmentRepr<'_>),
    ) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut next_keepalive = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if Instant::now() >= next_keepalive {
                self.keepalive();
                next_keepalive = Instant::now() + Duration::from_millis(50);
            }
            let Ok((n, _)) = self.sock.recv_from(&mut buf) else {
                continue;
            };
            let Ok(p) = Packet::new_checked(&buf[..n]) else {
                continue;
            };
            if let Ok(Repr {
                message: Message::Fragment(f),
                ..
            }) = Repr::parse(&p)
            {
                on_fragment(self, &f);
            }
        }
    }

    /// Until `stop`: on the first fragment of each new stream it sees, sends a junk fragment
    /// under every index of every kind of that stream (what F3 did: each would take the
    /// genuine fragment's dedup slot and repair-cache entry). Returns the junk fragments sent.
    fn inject(mut self, stop: &AtomicBool) -> usize {
        let mut seen = Vec::new();
        let mut sent = 0;
        let junk = [0xee; 100];
        self.until_stop(stop, |rogue, f| {
            if seen.contains(&f.stream) {
                return;
            }
            seen.push(f.stream);
            let manifest_count = match f.kind {
                FragmentKind::Manifest => f.count,
                _ => 64,
            };
            for (kind, count) in [
                (FragmentKind::Manifest, manifest_count),
                (FragmentKind::Source, f.k),
                (FragmentKind::Repair, f.r),
            ] {
                for index in 0..count {
                    rogue.send(Message::Fragment(FragmentRepr {
                        kind,
                        index,
                        count,
                        payload: &junk,
                        ..*f
                    }));
                    sent += 1;
                }
            }
        });
        sent
    }

    /// Until `stop`: attacks each new stream it sees with `forged` receipts under made-up keys
    /// and one bogus key release. Returns the streams attacked.
    fn run(mut self, stop: &AtomicBool, forged: usize) -> Vec<u64> {
        let rng = SystemRandom::new();
        let mut attacked = Vec::new();
        self.until_stop(stop, |rogue, f| {
            if f.kind != FragmentKind::Manifest || attacked.contains(&f.stream) {
                return;
            }
            let Ok(m) = ManifestFragmentRepr::parse(f.payload) else {
                return;
            };
            // What a relay (or any member) learns from the cleartext manifest: enough to sign
            // a receipt for the stream under any key.
            let hash = m.meta.manifest_hash(&m.root());
            for _ in 0..forged {
                let sybil = Identity::generate(&rng).unwrap();
                rogue.send(Message::Receipt(ReceiptRepr::sign(f.stream, hash, &sybil)));
            }
            let bogus = BlockKey::from_bytes([0x66; 32]).release(f.stream, &rogue.id);
            rogue.send(Message::KeyRelease(bogus));
            attacked.push(f.stream);
        });
        attacked
    }
}

#[test]
fn attack_rogue_gateway_forges_receipts_and_a_key_release_through_a_real_relay() {
    let height = 702861;
    let r = relay(200);
    let mut py = PyNodes::start(height, "all");
    let (ga, gb) = (Gw::new(), Gw::new());
    // A waits for two member receivers (B and one that never answers) or 3 s: B's receipt
    // alone is one of two, so only the forged receipts could release the key early.
    let mut ca = core(&[&r], &[gb.key()]);
    let absent = Identity::generate(&SystemRandom::new()).unwrap();
    ca.trusted_origins.push(absent.public_key());
    ca.key_release = KeyReleasePolicy::Receipts {
        share: 1.0,
        receivers: 2,
        timeout: Duration::from_secs(3),
    };
    let a = ga.start(py.a, ca, free_udp());
    let b = gb.start(py.b, core(&[&r], &[ga.key()]), free_udp());
    let rogue = Rogue::register(SocketAddr::V4(r.addr()));
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let attacker = std::thread::spawn(move || rogue.run(&s, 20));
    let n = py.wait_count("READY ");
    wait_stores(&a, &b, n);
    let started = Instant::now();
    let sb = send_block(&mut py, &b);
    assert_eq!(sb.stats.blocks_from_network, 1, "the honest block arrived");
    stop.store(true, Ordering::Relaxed);
    let attacked = attacker.join().unwrap();
    assert_eq!(attacked.len(), 1, "the rogue attacked A's stream");
    let sa = wait_snapshot(&a, "A counted the forged receipts", |s| {
        s.stats.receipts_not_member >= 20
    });
    assert_eq!(sa.stats.receipts_not_member, 20);
    let released = events(&a)
        .into_iter()
        .find_map(|e| match e {
            GatewayEvent::KeyReleased {
                receipts,
                reason,
                after,
                ..
            } => Some((receipts, reason, after)),
            _ => None,
        })
        .expect("A released its key");
    assert_eq!(
        (released.0, released.1),
        (1, ReleaseReason::Timeout),
        "only B's receipt counted: the key waited for the timeout"
    );
    assert!(released.2 >= Duration::from_secs(3));
    assert!(started.elapsed() >= Duration::from_secs(3));
    // The relay bound A's stream to A from the manifest it forwarded: the rogue's release was
    // dropped there, so B never even saw it.
    let control = &r.stats().control;
    assert_eq!(control.get(ControlCounter::KeyReleaseBadSignature), 1);
    assert_eq!(sb.stats.key_releases_bad, 0);
    r.stop().unwrap();
}

#[test]
fn attack_member_injects_into_another_origins_stream() {
    // F3 end to end: a registered gateway sends junk under every index of A's stream as soon
    // as it sees the stream's first fragment. The relay drops each one (not A's prefix,
    // docs/protocol/4.1-integrity.md §4.1.6) before dedup, so A's fragments are forwarded and
    // cached as usual, and node B gets the block.
    let height = 702861;
    let r = relay(200);
    let mut py = PyNodes::start(height, "all");
    let (ga, gb) = (Gw::new(), Gw::new());
    let a = ga.start(py.a, core(&[&r], &[gb.key()]), free_udp());
    let b = gb.start(py.b, core(&[&r], &[ga.key()]), free_udp());
    let rogue = Rogue::register(SocketAddr::V4(r.addr()));
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let attacker = std::thread::spawn(move || rogue.inject(&s));
    let n = py.wait_count("READY ");
    wait_stores(&a, &b, n);
    let sb = send_block(&mut py, &b);
    assert_eq!(sb.stats.blocks_from_network, 1, "the honest block arrived");
    stop.store(true, Ordering::Relaxed);
    let sent = attacker.join().unwrap();
    assert!(
        sent >= 3,
        "the rogue saw A's stream and injected under every index ({sent})"
    );
    let stats = r.stats();
    r.stop().unwrap();
    assert_eq!(
        stats.core.get(Counter::Drop(DropReason::ForeignStream)),
        sent as u64,
        "every junk fragment dropped at the relay"
    );
}
