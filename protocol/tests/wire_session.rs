//! One gateway → relay → gateway path through the wire layer, hop auth and sealing (§1, §2,
//! §4.2, §5), with real handshakes: registration, hop keys, a sealed block cut into signed
//! fragments, relay verification and per-destination re-signing, receipt and key release.

use photon_protocol::hopauth::{HopKeys, Role};
use photon_protocol::identity::{self, EphemeralKey, Identity};
use photon_protocol::seal::{BlockKey, SealKey};
use photon_protocol::wire::{
    self, register_status, FragmentKind, FragmentRepr, Message, Packet, ReceiptRepr, Repr,
    MAX_DATAGRAM,
};
use ring::rand::SystemRandom;

/// Registers `gw` with `relay` through encoded datagrams; returns (gateway keys, relay keys).
fn handshake(
    gw: &Identity,
    relay: &Identity,
    relay_node: u32,
    gw_node: u32,
    now: u64,
) -> (HopKeys, HopKeys) {
    let rng = SystemRandom::new();
    let gw_eph = EphemeralKey::generate(&rng).unwrap();
    let req = identity::register(gw, &gw_eph, [gw_node as u8; 16], now);
    let mut buf = [0u8; MAX_DATAGRAM];
    let n = Repr::new(0, Message::Register(req)).emit(&mut buf).unwrap();

    // Relay side: parse, verify, answer.
    let p = Packet::new_checked(&buf[..n]).unwrap();
    let Message::Register(got) = Repr::parse(&p).unwrap().message else {
        panic!("not a register")
    };
    identity::verify_register(&got, now + 5, 30_000).unwrap();
    let relay_eph = EphemeralKey::generate(&rng).unwrap();
    let ack = identity::register_ack(
        relay,
        &relay_eph,
        &got,
        register_status::ACCEPTED,
        gw_node,
        now + 5,
        1000,
    );
    let ctx_relay = identity::registration_context(&got, &ack, relay_node);
    let mut abuf = [0u8; MAX_DATAGRAM];
    let an = Repr::new(relay_node, Message::RegisterAck(ack))
        .emit(&mut abuf)
        .unwrap();
    let relay_keys = relay_eph
        .agree(&got.ephemeral, &ctx_relay, Role::Responder)
        .unwrap();

    // Gateway side: parse the ack, verify, derive.
    let ap = Packet::new_checked(&abuf[..an]).unwrap();
    let Message::RegisterAck(ack) = Repr::parse(&ap).unwrap().message else {
        panic!("not an ack")
    };
    identity::verify_register_ack(&ack, &req, &relay.public_key()).unwrap();
    let ctx_gw = identity::registration_context(&req, &ack, ap.sender());
    let gw_keys = gw_eph
        .agree(&ack.ephemeral, &ctx_gw, Role::Initiator)
        .unwrap();
    (gw_keys, relay_keys)
}

#[test]
fn sealed_block_crosses_a_relay_with_hop_auth() {
    let rng = SystemRandom::new();
    let relay = Identity::generate(&rng).unwrap();
    let origin = Identity::generate(&rng).unwrap();
    let receiver = Identity::generate(&rng).unwrap();
    let now = 1_700_000_000_000;
    let (origin_keys, relay_from_origin) = handshake(&origin, &relay, 1, 10, now);
    let (receiver_keys, relay_to_receiver) = handshake(&receiver, &relay, 1, 20, now);

    // Origin seals 50 kB, cuts it into source-shard fragments (FEC itself is §3's business; here
    // K source shards and no repair are enough to exercise the wire path).
    let stream = 0xfeed;
    let block: Vec<u8> = (0..50_000u32).map(|i| (i * 7) as u8).collect();
    let mut sealed = block.clone();
    let key = SealKey::generate(&rng)
        .unwrap()
        .seal_in_place(stream, &mut sealed)
        .unwrap();
    let shard = wire::max_fragment_payload();
    let k = sealed.len().div_ceil(shard) as u16;
    let mut datagrams = Vec::new();
    for (i, chunk) in sealed.chunks(shard).enumerate() {
        let f = FragmentRepr {
            kind: FragmentKind::Source,
            stream,
            index: i as u16,
            count: k,
            k,
            r: 0,
            payload: chunk,
        };
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let n = f.emit(10, 0, 0, &mut buf).unwrap();
        buf.truncate(n);
        origin_keys.send.sign_header(&mut buf).unwrap();
        datagrams.push(buf);
    }

    // Relay: check, verify the origin's tag, rewrite sender and hops, re-sign for the receiver.
    let mut forwarded = Vec::new();
    for d in &datagrams {
        let p = Packet::new_checked(&d[..]).unwrap();
        assert!(relay_from_origin.recv.verify_packet(&p));
        assert!(
            !relay_to_receiver.recv.verify_packet(&p),
            "not under another peer's key"
        );
        let mut out = d.clone();
        let mut q = Packet::new_checked(&mut out[..]).unwrap();
        q.set_sender(1);
        q.set_hops(q.hops() + 1);
        relay_to_receiver.send.sign_packet(&mut q).unwrap();
        forwarded.push(out);
    }
    // A forged datagram (right sender id, no key) is refused.
    let mut forged = datagrams[0].clone();
    forged[wire::field::STREAM][7] ^= 1;
    assert!(!relay_from_origin.recv.verify(&forged));

    // Receiver: verify the relay's tag, reassemble, wait for the key release, open.
    let mut got = vec![0u8; sealed.len()];
    for d in &forwarded {
        let p = Packet::new_checked(&d[..]).unwrap();
        assert!(receiver_keys.recv.verify_packet(&p));
        let f = FragmentRepr::parse(&p).unwrap();
        let at = usize::from(f.index) * shard;
        got[at..at + f.payload.len()].copy_from_slice(f.payload);
    }
    assert_eq!(got, sealed);
    // Receipt, signed by the receiver (§2.5); the relay passes it on to the origin with its own
    // sender id and hop tag, and the origin still learns who holds the block.
    let receipt = ReceiptRepr::sign(stream, [0; 32], &receiver);
    let mut rbuf = [0u8; MAX_DATAGRAM];
    let rn = receipt.emit(20, 0, 0, &mut rbuf).unwrap();
    receiver_keys.send.sign_header(&mut rbuf[..rn]).unwrap();
    assert!(relay_to_receiver.recv.verify(&rbuf[..rn]));
    let rp = Packet::new_checked(&rbuf[..rn]).unwrap();
    let relayed = Repr {
        sender: 1,
        ..Repr::parse(&rp).unwrap()
    };
    let mut fbuf = [0u8; MAX_DATAGRAM];
    let fn_ = relayed.emit(&mut fbuf).unwrap();
    relay_from_origin
        .send
        .sign_header(&mut fbuf[..fn_])
        .unwrap();
    assert!(origin_keys.recv.verify(&fbuf[..fn_]));
    let fp = Packet::new_checked(&fbuf[..fn_]).unwrap();
    let at_origin = ReceiptRepr::parse(&fp).unwrap();
    assert_eq!(fp.sender(), 1, "the hop sender is the relay");
    assert_eq!(at_origin.verify(), Ok(Some(receiver.public_key())));

    let release = key.release(stream, &origin);
    let mut kbuf = [0u8; MAX_DATAGRAM];
    let kn = release.emit(10, 0, 0, &mut kbuf).unwrap();
    let kp = Packet::new_checked(&kbuf[..kn]).unwrap();
    let Message::KeyRelease(rel) = Repr::parse(&kp).unwrap().message else {
        panic!("not a key release")
    };
    let opener = BlockKey::from_release(&rel, &origin.public_key()).unwrap();
    assert_eq!(opener.open(stream, &got).unwrap(), block);
}
