//! The control path without I/O: datagrams in, datagrams out, fake time.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use photon_protocol::hopauth::{HopKeys, Role};
use photon_protocol::identity::{self, EphemeralKey, Identity, PublicKey};
use photon_protocol::integrity::own_stream_id;
use photon_protocol::shortid::ShortIdRange;
use photon_protocol::wire::{
    flags, register_status, FragmentKind, FragmentRepr, KeepaliveRepr, KeyReleaseRepr, Message,
    Packet, ReceiptRepr, RegisterAckRepr, RegisterRepr, RepairRequestRepr, Repr, TransactionRepr,
    TxRequestRepr, MAX_DATAGRAM,
};
use photon_relay::control::{Control, ControlCounter, ControlSettings, Outgoing, Source};
use photon_relay::forward::table::LocalSpec;
use ring::rand::SystemRandom;

const RELAY: u32 = 1;
const NOW: u64 = 1_700_000_000_000;

fn local() -> LocalSpec {
    LocalSpec {
        node_id: RELAY,
        ip: Ipv4Addr::LOCALHOST,
        udp_port: 4433,
        port_macs: vec![[0; 6]],
        max_hops: 8,
    }
}

/// A control path with a fresh identity and the default settings; with its public key.
fn control() -> (Control, PublicKey) {
    control_tuned(|_| {})
}

/// [`control`], with `tune` applied to the settings.
fn control_tuned(tune: impl FnOnce(&mut ControlSettings)) -> (Control, PublicKey) {
    let mut settings = ControlSettings::default();
    tune(&mut settings);
    let rng = SystemRandom::new();
    let id = Identity::generate(&rng).unwrap();
    let pk = id.public_key();
    let c = Control::new(id, local(), Vec::new(), settings, Arc::new(rng)).unwrap();
    (c, pk)
}

fn src(port: u16) -> Source {
    Source::socket(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

fn emit(repr: &Repr<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let n = repr.emit(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// A gateway on the other side of the control path.
struct Gw {
    identity: Identity,
    port: u16,
    node: u32,
    keys: Option<HopKeys>,
}

impl Gw {
    fn new(port: u16) -> Gw {
        Gw {
            identity: Identity::generate(&SystemRandom::new()).unwrap(),
            port,
            node: 0,
            keys: None,
        }
    }

    /// A signed Register datagram and the ephemeral key to finish the handshake with.
    fn register_msg(&self, nonce: [u8; 16], ts: u64) -> (Vec<u8>, EphemeralKey, RegisterRepr) {
        let eph = EphemeralKey::generate(&SystemRandom::new()).unwrap();
        let req = identity::register(&self.identity, &eph, nonce, ts);
        let d = emit(&Repr::new(0, Message::Register(req)));
        (d, eph, req)
    }

    /// Registers through `c`; returns the ack.
    fn register(&mut self, c: &mut Control, relay_pk: &PublicKey, nonce: u8) -> RegisterAckRepr {
        let (d, eph, req) = self.register_msg([nonce; 16], NOW);
        let mut out = Vec::new();
        c.handle(NOW + 3, src(self.port), &d, &mut out);
        assert_eq!(out.len(), 1, "one ack");
        assert_eq!(
            out[0].to,
            src(self.port).addr,
            "answered to the source address"
        );
        let ack = parse_ack(&out[0].datagram);
        assert_eq!(ack.status, register_status::ACCEPTED);
        identity::verify_register_ack(&ack, &req, relay_pk).unwrap();
        let ctx = identity::registration_context(
            &req,
            &ack,
            Packet::new_checked(&out[0].datagram[..]).unwrap().sender(),
        );
        let keys = eph.agree(&ack.ephemeral, &ctx, Role::Initiator).unwrap();
        assert!(
            keys.recv.verify(&out[0].datagram),
            "the ack is hop-tagged with the new relay→gateway key"
        );
        self.node = ack.node_id;
        self.keys = Some(keys);
        ack
    }

    fn signed(&self, repr: Repr<'_>) -> Vec<u8> {
        let mut d = emit(&repr);
        self.keys
            .as_ref()
            .unwrap()
            .send
            .sign_header(&mut d)
            .unwrap();
        d
    }

    /// Whether `d` verifies under relay → this gateway's key.
    fn accepts(&self, d: &[u8]) -> bool {
        self.keys.as_ref().unwrap().recv.verify(d)
    }
}

fn parse_ack(d: &[u8]) -> RegisterAckRepr {
    let p = Packet::new_checked(d).unwrap();
    match Repr::parse(&p).unwrap().message {
        Message::RegisterAck(a) => a,
        m => panic!("not an ack: {m:?}"),
    }
}

fn to_port(o: &Outgoing) -> u16 {
    o.to.port()
}

#[test]
fn registration_is_accepted_and_keepalives_answered() {
    let (mut c, pk) = control();
    let mut g = Gw::new(5001);
    let ack = g.register(&mut c, &pk, 1);
    assert!(ack.node_id >= 1000);
    assert_eq!(ack.keepalive_ms, 5_000);
    assert_eq!(c.gateway_count(), 1);
    assert_eq!(c.counters().get(ControlCounter::RegisterAccepted), 1);
    let t = c.take_table_update().expect("a new table to publish");
    let slot = t.slot_of(g.node).unwrap();
    assert_eq!(t.peer(slot).unwrap().spec.addr, src(5001).addr);
    assert_eq!(t.fanout().len(), 1, "the gateway gets the fan-out");

    let ka = g.signed(Repr::new(
        g.node,
        Message::Keepalive(KeepaliveRepr { seq: 7, echo: 0 }),
    ));
    let mut out = Vec::new();
    c.handle(NOW + 10, src(5001), &ka, &mut out);
    assert_eq!(out.len(), 1);
    assert!(g.accepts(&out[0].datagram));
    let p = Packet::new_checked(&out[0].datagram[..]).unwrap();
    let Message::Keepalive(k) = Repr::parse(&p).unwrap().message else {
        panic!("keepalive expected")
    };
    assert_eq!(k.echo, 7);
    assert!(
        c.take_table_update().is_none(),
        "same address: no new table"
    );

    // NAT rebinding: the same gateway, authenticated and fresh, from another port.
    out.clear();
    let ka = g.signed(Repr::new(
        g.node,
        Message::Keepalive(KeepaliveRepr { seq: 8, echo: 0 }),
    ));
    c.handle(NOW + 20, src(6001), &ka, &mut out);
    assert_eq!(to_port(&out[0]), 6001);
    assert_eq!(c.counters().get(ControlCounter::NatRebinds), 1);
    let t = c.take_table_update().expect("rebinding republishes");
    assert_eq!(
        t.peer(t.slot_of(g.node).unwrap()).unwrap().spec.addr.port(),
        6001
    );
}

#[test]
fn bad_signature_stale_replayed_and_unknown_registrations_are_refused() {
    let (mut c, pk) = control();
    let g = Gw::new(5002);
    let mut out = Vec::new();

    // Bad signature: no answer, counted.
    let (mut d, _, _) = g.register_msg([1; 16], NOW);
    let sig_at = d.len() - 1;
    d[sig_at] ^= 1;
    c.handle(NOW, src(5002), &d, &mut out);
    assert!(out.is_empty());
    assert_eq!(c.counters().get(ControlCounter::RegisterBadSignature), 1);

    // Stale: answered STALE, signed by the relay.
    let (d, _, req) = g.register_msg([2; 16], NOW - 31_000);
    c.handle(NOW, src(5002), &d, &mut out);
    let ack = parse_ack(&out.pop().unwrap().datagram);
    assert_eq!(ack.status, register_status::STALE);
    identity::verify_register_ack(&ack, &req, &pk).unwrap();
    assert_eq!(c.counters().get(ControlCounter::RegisterStale), 1);

    // Replay: the first copy registers, the second is dropped unanswered (F11: it may come
    // from a spoofed source).
    let (d, _, _) = g.register_msg([3; 16], NOW);
    c.handle(NOW, src(5002), &d, &mut out);
    assert_eq!(
        parse_ack(&out.pop().unwrap().datagram).status,
        register_status::ACCEPTED
    );
    c.handle(NOW + 1000, src(5002), &d, &mut out);
    assert!(out.is_empty(), "no answer to a replay");
    assert_eq!(c.counters().get(ControlCounter::RegisterReplay), 1);
    assert_eq!(c.gateway_count(), 1);

    // Not on the allow list.
    let allowed = Gw::new(1);
    let (mut c2, _) = control_tuned(|s| {
        s.allowed_gateways = Some([allowed.identity.public_key().0].into_iter().collect())
    });
    let (d, _, _) = g.register_msg([4; 16], NOW);
    c2.handle(NOW, src(5002), &d, &mut out);
    assert_eq!(
        parse_ack(&out.pop().unwrap().datagram).status,
        register_status::UNKNOWN_IDENTITY
    );
    assert_eq!(c2.gateway_count(), 0);
    let (d, _, _) = allowed.register_msg([5; 16], NOW);
    c2.handle(NOW, src(1), &d, &mut out);
    assert_eq!(
        parse_ack(&out.pop().unwrap().datagram).status,
        register_status::ACCEPTED
    );
}

#[test]
fn silent_gateways_expire_and_re_registration_keeps_the_node_id() {
    let (mut c, pk) = control();
    let mut a = Gw::new(5003);
    let mut b = Gw::new(5004);
    a.register(&mut c, &pk, 1);
    b.register(&mut c, &pk, 2);
    let node_a = a.node;
    a.register(&mut c, &pk, 3);
    assert_eq!(a.node, node_a, "same identity, same node id");
    assert_eq!(c.gateway_count(), 2);
    // b keeps talking, a goes silent: 3 keepalive intervals of 5 s.
    let ka = b.signed(Repr::new(
        b.node,
        Message::Keepalive(KeepaliveRepr { seq: 1, echo: 0 }),
    ));
    let mut out = Vec::new();
    c.handle(NOW + 14_000, src(5004), &ka, &mut out);
    c.take_table_update();
    c.tick(NOW + 14_000);
    assert_eq!(c.gateway_count(), 2);
    c.tick(NOW + 15_004);
    assert_eq!(c.gateway_count(), 1);
    assert_eq!(c.counters().get(ControlCounter::Expired), 1);
    let t = c.take_table_update().expect("expiry republishes");
    assert!(t.slot_of(node_a).is_none() && t.slot_of(b.node).is_some());
}

fn tx_msg(g: &Gw, transfer: u64, index: u16, count: u16, short_id: Option<u32>) -> Vec<u8> {
    let data = [0xabu8; 300];
    g.signed(Repr::new(
        g.node,
        Message::Transaction(TransactionRepr {
            transfer,
            index,
            count,
            short_id,
            tx_len: 300 * u32::from(count),
            offset: 300 * u32::from(index),
            data: &data,
        }),
    ))
}

fn parse_tx(d: &[u8]) -> (u32, u64, Option<u32>) {
    let p = Packet::new_checked(d).unwrap();
    let r = Repr::parse(&p).unwrap();
    let Message::Transaction(t) = r.message else {
        panic!("transaction expected")
    };
    (r.sender, t.transfer, t.short_id)
}

fn three(c: &mut Control, pk: &PublicKey) -> Vec<Gw> {
    (0..3)
        .map(|i| {
            let mut g = Gw::new(5100 + i);
            g.register(c, pk, i as u8 + 10);
            g
        })
        .collect()
}

/// A control path handing out the 1000 short IDs from `first`, with [`three`] gateways.
fn three_with_ids(first: u32) -> (Control, Vec<Gw>) {
    let (mut c, pk) = control_tuned(|s| s.short_ids = ShortIdRange::new(first, 1000).unwrap());
    let gws = three(&mut c, &pk);
    (c, gws)
}

fn by_port(gws: &[Gw], port: u16) -> &Gw {
    gws.iter().find(|g| g.port == port).unwrap()
}

#[test]
fn transactions_get_short_ids_from_the_range_and_reach_the_origin_too() {
    let (mut c, gws) = three_with_ids(0x0100_0000);
    let mut out = Vec::new();

    c.handle(NOW, src(5100), &tx_msg(&gws[0], 77, 0, 2, None), &mut out);
    let mut ports: Vec<u16> = out.iter().map(to_port).collect();
    ports.sort();
    assert_eq!(
        ports,
        [5100, 5101, 5102],
        "every gateway, the origin included"
    );
    let mut first = None;
    for o in &out {
        assert!(
            by_port(&gws, o.to.port()).accepts(&o.datagram),
            "tag under each gateway's key"
        );
        let (sender, transfer, id) = parse_tx(&o.datagram);
        assert_eq!(sender, RELAY);
        assert_eq!(id, Some(0x0100_0000), "the first ID of the range");
        assert_ne!(transfer, 77, "the relay's own transfer id");
        first = Some(transfer);
    }
    // The second fragment of the same transaction: the same ID and transfer.
    out.clear();
    c.handle(NOW, src(5100), &tx_msg(&gws[0], 77, 1, 2, None), &mut out);
    assert_eq!(out.len(), 3);
    assert!(out
        .iter()
        .all(|o| parse_tx(&o.datagram) == (RELAY, first.unwrap(), Some(0x0100_0000))));
    // The next transaction: the next ID.
    out.clear();
    c.handle(NOW, src(5101), &tx_msg(&gws[1], 77, 0, 1, None), &mut out);
    assert!(out
        .iter()
        .all(|o| parse_tx(&o.datagram).2 == Some(0x0100_0001)));
    assert_eq!(c.counters().get(ControlCounter::ShortIdsAssigned), 2);
}

#[test]
fn attack_gateway_supplies_its_own_short_id() {
    // F2: a registered gateway writes a short ID of its choice (one the others already hold,
    // for other bytes) into its transaction. The relay never passes a gateway's ID on: the
    // transaction gets the relay's next ID, to everyone and the sender too.
    let (mut c, gws) = three_with_ids(0x0100_0000);
    let mut out = Vec::new();
    c.handle(NOW, src(5100), &tx_msg(&gws[0], 77, 0, 1, None), &mut out);
    assert!(out
        .iter()
        .all(|o| parse_tx(&o.datagram).2 == Some(0x0100_0000)));
    out.clear();
    c.handle(
        NOW,
        src(5102),
        &tx_msg(&gws[2], 5, 0, 1, Some(0x0100_0000)),
        &mut out,
    );
    let mut ports: Vec<u16> = out.iter().map(to_port).collect();
    ports.sort();
    assert_eq!(ports, [5100, 5101, 5102], "fanned out as a new transaction");
    assert!(
        out.iter()
            .all(|o| parse_tx(&o.datagram).2 == Some(0x0100_0001)),
        "the relay's own next ID, not the gateway's"
    );
    assert_eq!(c.counters().get(ControlCounter::ShortIdFromGateway), 1);
    assert_eq!(c.counters().get(ControlCounter::ShortIdsAssigned), 2);
    // Its later fragments follow the same (origin, transfer): same relay ID.
    out.clear();
    c.handle(NOW, src(5102), &tx_msg(&gws[2], 5, 0, 1, Some(7)), &mut out);
    assert!(out
        .iter()
        .all(|o| parse_tx(&o.datagram).2 == Some(0x0100_0001)));
    // The cache holds the relay's binding only.
    assert!(c.tx_cache().get_complete(0x0100_0000).is_some());
}

fn fragment(stream: u64, index: u16, sender: u32) -> Vec<u8> {
    let payload = vec![index as u8; 500];
    let f = FragmentRepr {
        kind: FragmentKind::Repair,
        stream,
        index,
        count: 100,
        k: 10,
        r: 100,
        payload: &payload,
    };
    let mut d = vec![0u8; f.buffer_len()];
    f.emit(sender, 0, 0, &mut d).unwrap();
    d
}

#[test]
fn repair_requests_are_served_from_the_cache_with_retransmit() {
    let (mut c, pk) = control();
    let gws = three(&mut c, &pk);
    for i in 0..10 {
        c.record_fragment(&fragment(9, i, gws[0].node));
    }
    let req = gws[1].signed(Repr::new(
        gws[1].node,
        Message::RepairRequest(RepairRequestRepr::new(
            9,
            FragmentKind::Repair,
            vec![2, 5, 50],
        )),
    ));
    let mut out = Vec::new();
    c.handle(NOW, src(5101), &req, &mut out);
    assert_eq!(out.len(), 2, "the two cached fragments");
    for (o, want) in out.iter().zip([2u16, 5]) {
        assert_eq!(to_port(o), 5101, "unicast to the requester");
        assert!(gws[1].accepts(&o.datagram));
        let p = Packet::new_checked(&o.datagram[..]).unwrap();
        assert_eq!(p.flags() & flags::RETRANSMIT, flags::RETRANSMIT);
        assert_eq!((p.sender(), p.index(), p.stream()), (RELAY, want, 9));
        assert_eq!(p.payload(), &vec![want as u8; 500][..]);
    }
    assert_eq!(c.counters().get(ControlCounter::RepairServed), 2);
    assert_eq!(c.counters().get(ControlCounter::RepairMissed), 1);
}

#[test]
fn repair_cache_is_bounded() {
    let (mut c, _) = control_tuned(|s| s.repair_cache_fragments = 4);
    for i in 0..10 {
        c.record_fragment(&fragment(1, i, 1000));
    }
    assert_eq!(c.cache().len(), 4);
    assert_eq!(c.cache().evicted(), 6);
    let (mut c, _) = control_tuned(|s| s.repair_cache_bytes = 3 * fragment(1, 0, 1000).len());
    for i in 0..10 {
        c.record_fragment(&fragment(1, i, 1000));
    }
    assert_eq!(c.cache().len(), 3);
}

#[test]
fn receipts_fan_out_and_key_releases_pass_once() {
    let (mut c, pk) = control();
    let gws = three(&mut c, &pk);
    let mut out = Vec::new();
    // A signed receipt (§2.5): the relay passes the receiver's key and signature on intact.
    let signed = ReceiptRepr::sign(9, [3; 32], &gws[1].identity);
    let receipt = gws[1].signed(Repr::new(gws[1].node, Message::Receipt(signed)));
    c.handle(NOW, src(5101), &receipt, &mut out);
    let mut ports: Vec<u16> = out.iter().map(to_port).collect();
    ports.sort();
    assert_eq!(ports, [5100, 5102]);
    assert!(out
        .iter()
        .all(|o| by_port(&gws, o.to.port()).accepts(&o.datagram)));
    for o in &out {
        let p = Packet::new_checked(&o.datagram[..]).unwrap();
        let got = ReceiptRepr::parse(&p).unwrap();
        assert_eq!(got, signed);
        assert_eq!(got.verify(), Ok(Some(gws[1].identity.public_key())));
    }

    out.clear();
    let kr = gws[0].signed(Repr::new(
        gws[0].node,
        Message::KeyRelease(KeyReleaseRepr {
            stream: 9,
            key: [1; 32],
            signature: [2; 64],
        }),
    ));
    c.handle(NOW, src(5100), &kr, &mut out);
    assert_eq!(out.len(), 2);
    c.handle(NOW, src(5100), &kr, &mut out);
    assert_eq!(out.len(), 2, "the second copy is dropped");
    assert_eq!(c.counters().get(ControlCounter::KeyReleaseDuplicates), 1);
}

#[test]
fn unknown_senders_and_bad_tags_are_counted_drops() {
    let (mut c, pk) = control();
    let gws = three(&mut c, &pk);
    let mut out = Vec::new();
    let mut ka = gws[0].signed(Repr::new(
        gws[0].node,
        Message::Keepalive(KeepaliveRepr { seq: 1, echo: 0 }),
    ));
    ka[30] ^= 1; // the tag
    c.handle(NOW, src(5100), &ka, &mut out);
    let stranger = emit(&Repr::new(
        4242,
        Message::Keepalive(KeepaliveRepr { seq: 1, echo: 0 }),
    ));
    c.handle(NOW, src(5100), &stranger, &mut out);
    c.handle(NOW, src(5100), b"garbage", &mut out);
    assert!(out.is_empty());
    assert_eq!(c.counters().get(ControlCounter::BadHopTag), 1);
    assert_eq!(c.counters().get(ControlCounter::UnknownSender), 1);
    assert_eq!(c.counters().get(ControlCounter::Malformed), 1);
}

fn tx_request(g: &Gw, stream: u64, ids: Vec<u32>) -> Vec<u8> {
    g.signed(Repr::new(
        g.node,
        Message::TxRequest(TxRequestRepr {
            stream,
            short_ids: ids,
        }),
    ))
}

fn parse_tx_full(d: &[u8]) -> (u32, TransactionRepr<'_>) {
    let p = Packet::new_checked(d).unwrap();
    let r = Repr::parse(&p).unwrap();
    let Message::Transaction(t) = r.message else {
        panic!("transaction expected")
    };
    // Re-borrow the data from the datagram (the parsed repr borrows the packet view).
    let off = d.len() - t.data.len();
    (
        r.sender,
        TransactionRepr {
            data: &d[off..],
            ..t
        },
    )
}

#[test]
fn tx_requests_are_answered_from_the_cache_and_the_rest_passed_on() {
    let (mut c, gws) = three_with_ids(0x0200_0000);
    let mut out = Vec::new();
    // A two-fragment transaction from gateway 0 gets ID 0x0200_0000 and is cached.
    c.handle(NOW, src(5100), &tx_msg(&gws[0], 7, 0, 2, None), &mut out);
    c.handle(NOW, src(5100), &tx_msg(&gws[0], 7, 1, 2, None), &mut out);
    let relay_transfer = parse_tx(&out[0].datagram).1;
    // Only the first fragment of the next one arrives: ID 0x0200_0001, not complete.
    c.handle(NOW, src(5101), &tx_msg(&gws[1], 8, 0, 2, None), &mut out);
    assert_eq!(c.counters().get(ControlCounter::TxCached), 3);
    assert_eq!(c.tx_cache().len(), 2);

    // Gateway 2 asks for the complete one, the incomplete one and one the relay never saw.
    out.clear();
    let req = tx_request(&gws[2], 99, vec![0x0200_0000, 0x0200_0001, 5]);
    c.handle(NOW, src(5102), &req, &mut out);
    let (answers, passed): (Vec<&Outgoing>, Vec<&Outgoing>) = out.iter().partition(|o| {
        let p = Packet::new_checked(&o.datagram[..]).unwrap();
        matches!(Repr::parse(&p).unwrap().message, Message::Transaction(_))
    });
    assert_eq!(answers.len(), 2, "both fragments of the cached transaction");
    let mut got = Vec::new();
    for o in &answers {
        assert_eq!(to_port(o), 5102, "unicast to the requester");
        assert!(gws[2].accepts(&o.datagram), "under the requester's hop key");
        let (sender, t) = parse_tx_full(&o.datagram);
        assert_eq!(sender, RELAY);
        assert_eq!(t.short_id, Some(0x0200_0000));
        assert_eq!(
            t.transfer, relay_transfer,
            "as the relay first passed it on"
        );
        assert_eq!((t.count, t.tx_len), (2, 600));
        assert_eq!(t.offset, 300 * u32::from(t.index));
        assert_eq!(t.data, &[0xab; 300][..]);
        got.push(t.index);
    }
    got.sort();
    assert_eq!(got, [0, 1]);
    // The two IDs it lacks go on in one request to every other gateway.
    let mut ports: Vec<u16> = passed.iter().map(|o| to_port(o)).collect();
    ports.sort();
    assert_eq!(ports, [5100, 5101], "not back to the requester");
    for o in &passed {
        assert!(by_port(&gws, to_port(o)).accepts(&o.datagram));
        let p = Packet::new_checked(&o.datagram[..]).unwrap();
        let r = Repr::parse(&p).unwrap();
        assert_eq!((r.sender, r.hops), (RELAY, 1));
        let Message::TxRequest(fwd) = r.message else {
            panic!("tx request expected")
        };
        assert_eq!(fwd.stream, 99);
        assert_eq!(fwd.short_ids, [0x0200_0001, 5]);
    }
    assert_eq!(c.counters().get(ControlCounter::TxRequests), 1);
    assert_eq!(c.counters().get(ControlCounter::TxRequestServed), 1);
    assert_eq!(c.counters().get(ControlCounter::TxRequestPassedOn), 2);
    assert_eq!(c.counters().get(ControlCounter::Unsupported), 0);

    // The origin answers the passed-on request through the relay: with its ID, but only to
    // the requester (F2: a gateway's ID goes to nobody who did not ask for it) and not cached
    // (the relay cannot check the binding), so the next request is passed on again.
    out.clear();
    c.handle(
        NOW,
        src(5100),
        &tx_msg(&gws[0], 50, 0, 1, Some(5)),
        &mut out,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(to_port(&out[0]), 5102);
    assert_eq!(parse_tx_full(&out[0].datagram).1.short_id, Some(5));
    assert_eq!(c.counters().get(ControlCounter::TxAnswerRelayed), 1);
    assert_eq!(c.counters().get(ControlCounter::ShortIdFromGateway), 0);
    out.clear();
    c.handle(NOW, src(5101), &tx_request(&gws[1], 99, vec![5]), &mut out);
    let mut ports: Vec<u16> = out.iter().map(to_port).collect();
    ports.sort();
    assert_eq!(ports, [5100, 5102], "not served from the cache: passed on");
}

#[test]
fn tx_cache_is_bounded_in_bytes_and_can_be_disabled() {
    let (mut c, pk) = control_tuned(|s| {
        s.tx_cache_bytes = 4 * (300 + photon_relay::control::TX_FRAGMENT_OVERHEAD)
    });
    let gws = three(&mut c, &pk);
    let mut out = Vec::new();
    for transfer in 0..10 {
        c.handle(
            NOW,
            src(5100),
            &tx_msg(&gws[0], transfer, 0, 1, None),
            &mut out,
        );
        assert!(c.tx_cache().bytes() <= 4 * (300 + photon_relay::control::TX_FRAGMENT_OVERHEAD));
    }
    assert_eq!(c.tx_cache().len(), 4);
    assert_eq!(c.tx_cache().evicted(), 6);

    let (mut c, pk) = control_tuned(|s| s.tx_cache_bytes = 0);
    let gws = three(&mut c, &pk);
    c.handle(NOW, src(5100), &tx_msg(&gws[0], 1, 0, 1, None), &mut out);
    assert!(c.tx_cache().is_empty());
    out.clear();
    let id = c.counters().get(ControlCounter::ShortIdsAssigned);
    assert_eq!(id, 1);
    c.handle(NOW, src(5101), &tx_request(&gws[1], 1, vec![0]), &mut out);
    assert_eq!(out.len(), 2, "passed on to the two other gateways");
    assert_eq!(c.counters().get(ControlCounter::TxRequestPassedOn), 1);
}

/// Two relays in a mesh: what a gateway asks for and this relay's cache lacks (lost between
/// the relays) is asked of the peer relay, whose RETRANSMIT answer is cached and passed on to
/// the gateway that asked; a relay's own request is never passed on, and retransmissions
/// nobody asked for are counted drops.
#[test]
fn repair_misses_are_asked_of_peer_relays_and_their_answers_reach_the_gateway() {
    use photon_protocol::hopauth::HopKey;
    use photon_relay::forward::table::{PeerKind, PeerSpec};
    const PEER: u32 = 2;
    let to_peer = HopKey::from_bytes(&[0x12; 16]);
    let from_peer = HopKey::from_bytes(&[0x21; 16]);
    let peer_addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 6000);
    let rng = SystemRandom::new();
    let id = Identity::generate(&rng).unwrap();
    let pk = id.public_key();
    let mut c = Control::new(
        id,
        local(),
        vec![PeerSpec {
            node_id: PEER,
            kind: PeerKind::Relay,
            addr: peer_addr,
            next_hop_mac: [0; 6],
            port: 0,
            keys: Some(HopKeys {
                send: to_peer.clone(),
                recv: from_peer.clone(),
            }),
            subscribed: true,
        }],
        ControlSettings::default(),
        Arc::new(rng),
    )
    .unwrap();
    let mut g = Gw::new(5200);
    g.register(&mut c, &pk, 1);
    c.record_fragment(&fragment(9, 2, PEER));
    let req = g.signed(Repr::new(
        g.node,
        Message::RepairRequest(RepairRequestRepr::new(9, FragmentKind::Repair, vec![2, 5])),
    ));
    let mut out = Vec::new();
    c.handle(NOW, src(5200), &req, &mut out);
    assert_eq!(
        out.len(),
        2,
        "index 2 from the cache, index 5 asked of the peer"
    );
    assert_eq!(to_port(&out[0]), 5200);
    assert_eq!(out[1].to, peer_addr);
    assert!(to_peer.verify(&out[1].datagram), "under relay → peer key");
    let p = Packet::new_checked(&out[1].datagram[..]).unwrap();
    let Message::RepairRequest(asked) = Repr::parse(&p).unwrap().message else {
        panic!("a repair request to the peer")
    };
    assert_eq!((p.sender(), asked.stream), (RELAY, 9));
    assert_eq!(asked.missing, vec![5]);
    assert_eq!(c.counters().get(ControlCounter::RepairPassedOn), 1);

    // The peer answers with the fragment, flagged RETRANSMIT: it reaches the gateway.
    let retransmit = |stream, index| {
        let mut d = fragment(stream, index, PEER);
        let mut q = Packet::new_checked(&mut d[..]).unwrap();
        q.set_flags(flags::RETRANSMIT);
        from_peer.sign_header(&mut d).unwrap();
        d
    };
    out.clear();
    c.handle(NOW, Source::socket(peer_addr), &retransmit(9, 5), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(to_port(&out[0]), 5200);
    assert!(g.accepts(&out[0].datagram));
    let p = Packet::new_checked(&out[0].datagram[..]).unwrap();
    assert_eq!(p.flags() & flags::RETRANSMIT, flags::RETRANSMIT);
    assert_eq!(
        (p.sender(), p.stream(), p.index(), p.hops()),
        (RELAY, 9, 5, 1)
    );
    assert_eq!(p.payload(), &vec![5u8; 500][..]);
    assert_eq!(c.counters().get(ControlCounter::RetransmitRelayed), 1);

    // Now cached: a second gateway request is served here.
    out.clear();
    c.handle(NOW, src(5200), &req, &mut out);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|o| to_port(o) == 5200));

    // Nobody asked for stream 10; the peer's own request is served, never passed on.
    out.clear();
    c.handle(NOW, Source::socket(peer_addr), &retransmit(10, 1), &mut out);
    assert!(out.is_empty());
    assert_eq!(c.counters().get(ControlCounter::UnsolicitedRetransmit), 1);
    let mut peer_req = emit(&Repr::new(
        PEER,
        Message::RepairRequest(RepairRequestRepr::new(9, FragmentKind::Repair, vec![7])),
    ));
    from_peer.sign_header(&mut peer_req).unwrap();
    c.handle(NOW, Source::socket(peer_addr), &peer_req, &mut out);
    assert!(out.is_empty(), "split horizon");
    assert_eq!(c.counters().get(ControlCounter::RepairPassedOn), 1);
}

/// Peer relays resolved by ARP (`Control::resolve_by_arp`): receive-only in the table (their
/// fragments are admitted, they are no destination and the control path sends them nothing),
/// their node ids reserved, until their next hop's MAC is learned; then full peers with that
/// MAC, and a changed MAC gives a new table. Requests are counted as asked for.
#[test]
fn peer_relays_join_the_table_when_their_next_hop_resolves() {
    use photon_relay::control::{ArpQuery, ArpResolver};
    use photon_relay::forward::table::{PeerKind, PeerSpec};
    let (mut c, pk) = control_tuned(|s| s.first_gateway_node_id = 7);
    let hop = Ipv4Addr::new(10, 0, 0, 7);
    let spec = PeerSpec {
        node_id: 7,
        kind: PeerKind::Relay,
        addr: SocketAddrV4::new(hop, 4433),
        next_hop_mac: [0; 6],
        port: 0,
        keys: Some(photon_protocol::hopauth::HopKeys {
            send: photon_protocol::hopauth::HopKey::from_bytes(&[7; 16]),
            recv: photon_protocol::hopauth::HopKey::from_bytes(&[0x77; 16]),
        }),
        subscribed: true,
    };
    c.resolve_by_arp(ArpResolver::new([]), vec![(spec, hop)], NOW)
        .unwrap();
    let t = c
        .take_table_update()
        .expect("a table with the pending peer");
    let slot = t.slot_of(7).expect("7 is there to be received from");
    assert!(!t.peer(slot).unwrap().fans_out, "and gets nothing");
    assert_eq!(t.fanout().len(), 0);
    let mut q = Vec::new();
    c.arp_due(NOW, &mut q);
    assert_eq!(q, vec![ArpQuery { ip: hop, port: 0 }]);
    c.arp_due(NOW + 10, &mut q);
    assert_eq!(q.len(), 1, "not again before the retry");
    assert_eq!(c.counters().get(ControlCounter::ArpRequestsSent), 1);

    // A gateway registering now does not get the pending peer's node id.
    let mut gw = Gw::new(6000);
    let ack = gw.register(&mut c, &pk, 1);
    assert_ne!(ack.node_id, 7);
    let _ = c.take_table_update();

    // A repair the cache cannot serve would be asked of the peer relays: not of 7 yet (no MAC
    // to send it to), counted.
    let req = gw.signed(Repr::new(
        gw.node,
        Message::RepairRequest(RepairRequestRepr::new(9, FragmentKind::Repair, vec![1])),
    ));
    let mut out = Vec::new();
    c.handle(NOW, src(6000), &req, &mut out);
    assert!(out.is_empty(), "nothing to the unresolved peer");
    assert_eq!(c.counters().get(ControlCounter::UnresolvedNextHop), 1);

    assert!(
        !c.learn_neighbour(Ipv4Addr::new(10, 0, 0, 9), [2, 0, 0, 0, 0, 9]),
        "nobody's next hop"
    );
    assert!(c.take_table_update().is_none());
    assert!(c.learn_neighbour(hop, [2, 0, 0, 0, 0, 7]));
    let t = c.take_table_update().expect("a table with the peer");
    let slot = t.slot_of(7).expect("7 joined");
    assert_eq!(t.peer(slot).unwrap().spec.next_hop_mac, [2, 0, 0, 0, 0, 7]);
    assert!(t.peer(slot).unwrap().fans_out, "now a destination");
    assert!(t.slot_of(ack.node_id).is_some(), "the gateway stays");
    assert!(!c.learn_neighbour(hop, [2, 0, 0, 0, 0, 7]), "unchanged");
    assert!(c.take_table_update().is_none());
    assert!(c.learn_neighbour(hop, [2, 0, 0, 0, 1, 7]), "moved");
    let t = c.take_table_update().expect("a new table");
    let slot = t.slot_of(7).unwrap();
    assert_eq!(t.peer(slot).unwrap().spec.next_hop_mac, [2, 0, 0, 0, 1, 7]);
    assert_eq!(c.counters().get(ControlCounter::ArpRepliesLearned), 2);
    assert_eq!(c.pending_peers().count(), 0);
}

/// A relay whose `[control]` names no gateways, with a signed roster listing `members` as
/// gateways and the relay itself with short IDs `0x0300_0000 .. + 10`.
fn control_with_roster(members: &[&Gw]) -> (Control, PublicKey) {
    use photon_protocol::roster::{Member, MemberRole, Roster};
    let rng = SystemRandom::new();
    let id = Identity::generate(&rng).unwrap();
    let pk = id.public_key();
    let operator = Identity::generate(&rng).unwrap();
    let mut list: Vec<Member> = members
        .iter()
        .map(|g| Member {
            key: g.identity.public_key(),
            role: MemberRole::Gateway,
        })
        .collect();
    list.push(Member {
        key: pk,
        role: MemberRole::Relay {
            short_ids: ShortIdRange::new(0x0300_0000, 10).unwrap(),
        },
    });
    let mut roster = Roster::new(1, u64::MAX, list).unwrap();
    roster.sign(&operator).unwrap();
    let settings = photon_relay::control::ControlConfig::default()
        .settings_with_roster(Some(Arc::new(roster)))
        .unwrap();
    let c = Control::new(id, local(), Vec::new(), settings, Arc::new(rng)).unwrap();
    (c, pk)
}

#[test]
fn attack_gateway_outside_the_roster_cannot_register() {
    // The allow list defaults from the roster: a gateway it does not list is refused (and
    // counted), a listed one registers and gets IDs from the relay's roster range.
    let mut member = Gw::new(5300);
    let outsider = Gw::new(5301);
    let (mut c, pk) = control_with_roster(&[&member]);
    let (d, _, _) = outsider.register_msg([9; 16], NOW);
    let mut out = Vec::new();
    c.handle(NOW, src(5301), &d, &mut out);
    assert_eq!(c.counters().get(ControlCounter::RegisterUnknownIdentity), 1);
    assert_eq!(c.gateway_count(), 0);
    member.register(&mut c, &pk, 1);
    assert_eq!(c.gateway_count(), 1);
    out.clear();
    c.handle(NOW, src(5300), &tx_msg(&member, 1, 0, 1, None), &mut out);
    assert_eq!(out.len(), 1, "back to the origin");
    assert_eq!(
        parse_tx(&out[0].datagram).2,
        Some(0x0300_0000),
        "the roster range"
    );
}

/// A stream id of `g`'s own (its prefix, §4.1.6).
fn own(g: &Gw, low: u32) -> u64 {
    own_stream_id(g.identity.key_pair(), low)
}

/// The first datagram (manifest fragment 0) of a real stream signed by `origin`, sent with
/// `stream` in its header: `origin`'s own stream `stream as u32` when `stream` carries another
/// prefix (a member forging a manifest fragment for someone else's stream).
fn manifest_fragment(stream: u64, origin: &Identity) -> Vec<u8> {
    use photon_protocol::sender::{Sender, SenderConfig};
    let block: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    let now = std::time::Instant::now();
    let config = SenderConfig {
        rate_bytes_per_sec: 0,
        ..SenderConfig::default()
    };
    let own = own_stream_id(origin.key_pair(), stream as u32);
    let mut s = Sender::new(config, own, &block, origin.key_pair(), now).unwrap();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let n = s.poll_transmit(now, &mut buf).unwrap();
    buf.truncate(n);
    buf[photon_protocol::wire::field::STREAM].copy_from_slice(&stream.to_be_bytes());
    let p = Packet::new_checked(&buf[..]).unwrap();
    assert!(matches!(
        Repr::parse(&p).unwrap().message,
        Message::Fragment(FragmentRepr {
            kind: FragmentKind::Manifest,
            ..
        })
    ));
    buf
}

#[test]
fn attack_bogus_key_release_cannot_suppress_the_origins() {
    // F4: a registered gateway sends a key release for another gateway's stream. The relay
    // learnt the stream's origin from the manifest it forwarded: the bogus release is dropped
    // (counted) and marks nothing, the origin's own goes through once.
    let (mut c, pk) = control();
    let gws = three(&mut c, &pk);
    let stream = own(&gws[0], 0x5151);
    c.record_fragment(&manifest_fragment(stream, &gws[0].identity));
    assert_eq!(c.counters().get(ControlCounter::OriginsLearned), 1);
    assert_eq!(c.stream_origin(stream), Some(gws[0].identity.public_key()));
    let release = |g: &Gw, key: [u8; 32]| {
        let kr = photon_protocol::seal::BlockKey::from_bytes(key).release(stream, &g.identity);
        g.signed(Repr::new(g.node, Message::KeyRelease(kr)))
    };
    let mut out = Vec::new();
    c.handle(NOW, src(5101), &release(&gws[1], [0xbb; 32]), &mut out);
    assert!(out.is_empty(), "the bogus release goes nowhere");
    assert_eq!(c.counters().get(ControlCounter::KeyReleaseBadSignature), 1);
    c.handle(NOW, src(5100), &release(&gws[0], [0xaa; 32]), &mut out);
    let mut ports: Vec<u16> = out.iter().map(to_port).collect();
    ports.sort();
    assert_eq!(ports, [5101, 5102], "the origin's release reaches everyone");
    c.handle(NOW, src(5100), &release(&gws[0], [0xaa; 32]), &mut out);
    assert_eq!(out.len(), 2, "and only once");
    assert_eq!(c.counters().get(ControlCounter::KeyReleaseDuplicates), 1);
    // A manifest fragment forged by a member for the bound stream changes nothing.
    c.record_fragment(&manifest_fragment(stream, &gws[1].identity));
    assert_eq!(c.stream_origin(stream), Some(gws[0].identity.public_key()));
}

#[test]
fn attack_release_first_for_an_unknown_stream_does_not_suppress_the_real_one() {
    // Without the manifest (not forwarded here), the relay cannot check: each distinct
    // (stream, key) goes on once and the gateways check it against the origin.
    let (mut c, pk) = control();
    let gws = three(&mut c, &pk);
    let stream = own(&gws[0], 0x6262);
    let release = |g: &Gw, key: [u8; 32]| {
        let kr = photon_protocol::seal::BlockKey::from_bytes(key).release(stream, &g.identity);
        g.signed(Repr::new(g.node, Message::KeyRelease(kr)))
    };
    let mut out = Vec::new();
    c.handle(NOW, src(5101), &release(&gws[1], [0xbb; 32]), &mut out);
    c.handle(NOW, src(5100), &release(&gws[0], [0xaa; 32]), &mut out);
    assert_eq!(out.len(), 4, "both passed on, the real one not suppressed");
    assert_eq!(c.counters().get(ControlCounter::KeyReleaseUnverified), 2);
    // A forged manifest from a gateway not on the allow list binds nothing.
    let settings = ControlSettings {
        allowed_gateways: Some(gws.iter().map(|g| g.identity.public_key().0).collect()),
        ..ControlSettings::default()
    };
    let (mut c2, _) = control_tuned(|s| *s = settings);
    let outsider = Identity::generate(&SystemRandom::new()).unwrap();
    c2.record_fragment(&manifest_fragment(stream, &outsider));
    assert_eq!(c2.counters().get(ControlCounter::ManifestUnverified), 1);
    assert_eq!(c2.stream_origin(stream), None);
}

#[test]
fn attack_tx_request_amplification_at_the_relay() {
    // F7: a registered gateway asks for one cached transaction 298 times in one request, then
    // again at once, and asks for unknown IDs of a stream whose origin the relay knows.
    let (mut c, pk) = control();
    let gws = three(&mut c, &pk);
    let mut out = Vec::new();
    c.handle(NOW, src(5100), &tx_msg(&gws[0], 1, 0, 1, None), &mut out);
    let id = parse_tx(&out[0].datagram).2.unwrap();
    out.clear();
    c.handle(
        NOW,
        src(5102),
        &tx_request(&gws[2], 0, vec![id; 298]),
        &mut out,
    );
    assert_eq!(out.len(), 1, "answered once, not 298 times");
    assert_eq!(c.counters().get(ControlCounter::TxRequestRefused), 297);
    out.clear();
    c.handle(
        NOW + 10,
        src(5102),
        &tx_request(&gws[2], 0, vec![id]),
        &mut out,
    );
    assert!(out.is_empty(), "asked again at once: refused");
    // After the repeat interval, a lost answer can be asked for again.
    c.handle(
        NOW + 1000,
        src(5102),
        &tx_request(&gws[2], 0, vec![id]),
        &mut out,
    );
    assert_eq!(out.len(), 1);
    // IDs the cache lacks, for a stream whose origin (gateway 0) the relay bound: the request
    // goes to the origin alone, not to every gateway.
    let stream = own(&gws[0], 0x7373);
    c.record_fragment(&manifest_fragment(stream, &gws[0].identity));
    out.clear();
    c.handle(
        NOW + 2000,
        src(5102),
        &tx_request(&gws[2], stream, vec![0x0abc_0000]),
        &mut out,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(to_port(&out[0]), 5100, "only the origin");
    assert_eq!(c.counters().get(ControlCounter::ToOrigin), 1);
    // The origin's answer goes back to the asker only.
    out.clear();
    c.handle(
        NOW + 2001,
        src(5100),
        &tx_msg(&gws[0], 9, 0, 1, Some(0x0abc_0000)),
        &mut out,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(to_port(&out[0]), 5102);
}

#[test]
fn attack_replayed_keepalive_cannot_move_a_gateway() {
    // F5: an attacker captured a gateway's keepalive (hop tag and all) and replays it from its
    // own address, to point the relay's fan-out for that gateway at a victim. The seq is not
    // fresh: dropped, counted, the address stays; the gateway's next keepalive still works.
    let (mut c, pk) = control();
    let mut g = Gw::new(5001);
    g.register(&mut c, &pk, 1);
    c.take_table_update();
    let ka = |seq| {
        g.signed(Repr::new(
            g.node,
            Message::Keepalive(KeepaliveRepr { seq, echo: 0 }),
        ))
    };
    let captured = ka(3);
    let mut out = Vec::new();
    c.handle(NOW + 10, src(5001), &captured, &mut out);
    assert_eq!(out.len(), 1);
    out.clear();
    c.handle(NOW + 20, src(6666), &captured, &mut out);
    assert!(out.is_empty(), "no answer to a replay");
    assert_eq!(c.counters().get(ControlCounter::KeepaliveStale), 1);
    assert_eq!(c.counters().get(ControlCounter::NatRebinds), 0);
    assert!(c.take_table_update().is_none(), "the address did not move");
    c.handle(NOW + 30, src(5001), &ka(4), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(to_port(&out[0]), 5001);
}

#[test]
fn attack_spoofed_and_flooding_registrations_are_not_answered() {
    // F11: (1) a registration for a listed identity with a bad signature (spoofed source) gets
    // no answer, even for an identity not on the allow list; (2) an allowlisted gateway that
    // sends fresh registrations without end cannot fill the replay cache for the others;
    // (3) refusals are rate-limited. The honest gateway still registers.
    let mut honest = Gw::new(5400);
    let flooder = Gw::new(5401);
    let stranger = Gw::new(5402);
    let settings = ControlSettings {
        allowed_gateways: Some(
            [
                honest.identity.public_key().0,
                flooder.identity.public_key().0,
            ]
            .into_iter()
            .collect(),
        ),
        ..ControlSettings::default()
    };
    let (mut c, pk) = control_tuned(|s| *s = settings);
    let mut out = Vec::new();
    let (mut d, _, _) = stranger.register_msg([1; 16], NOW);
    let at = d.len() - 1;
    d[at] ^= 1;
    c.handle(NOW, src(5402), &d, &mut out);
    assert!(out.is_empty(), "not on the list and not proven: no answer");
    assert_eq!(c.counters().get(ControlCounter::RegisterBadSignature), 1);
    assert_eq!(c.counters().get(ControlCounter::RegisterUnknownIdentity), 0);
    for n in 0..200u16 {
        let mut nonce = [0u8; 16];
        nonce[..2].copy_from_slice(&n.to_be_bytes());
        let (d, _, _) = flooder.register_msg(nonce, NOW);
        c.handle(NOW, src(5401), &d, &mut out);
    }
    assert_eq!(c.counters().get(ControlCounter::RegisterAccepted), 64);
    assert!(c.counters().get(ControlCounter::RegisterBusy) > 0);
    assert!(
        c.counters().get(ControlCounter::RegisterRefusalSuppressed) > 0,
        "refusals are rate-limited"
    );
    honest.register(&mut c, &pk, 9);
    assert_eq!(c.gateway_count(), 2);
}

#[test]
fn attack_older_roster_is_refused_and_a_removed_gateway_is_cut_off() {
    // The operator removes a compromised gateway in roster 2: the relay drops its session at
    // once and refuses its registrations; an older roster (a replay of roster 1) is refused
    // and changes nothing.
    use photon_protocol::roster::{Member, MemberRole, Roster, RosterError};
    let mut keep = Gw::new(5500);
    let mut cut = Gw::new(5501);
    let (mut c, pk) = control_with_roster(&[&keep, &cut]);
    keep.register(&mut c, &pk, 1);
    cut.register(&mut c, &pk, 2);
    assert_eq!(c.gateway_count(), 2);
    let first = c.roster().unwrap().clone();
    let operator = Identity::generate(&SystemRandom::new()).unwrap();
    let mut second = Roster::new(
        2,
        u64::MAX,
        vec![Member {
            key: keep.identity.public_key(),
            role: MemberRole::Gateway,
        }],
    )
    .unwrap();
    second.sign(&operator).unwrap();
    c.replace_roster(Arc::new(second)).unwrap();
    assert_eq!(c.gateway_count(), 1);
    assert_eq!(c.counters().get(ControlCounter::RosterRemoved), 1);
    assert!(
        c.take_table_update().is_some(),
        "the fan-out no longer has it"
    );
    let (d, _, _) = cut.register_msg([7; 16], NOW);
    let mut out = Vec::new();
    c.handle(NOW, src(5501), &d, &mut out);
    assert_eq!(c.counters().get(ControlCounter::RegisterUnknownIdentity), 1);
    assert!(matches!(
        c.replace_roster(first),
        Err(RosterError::NotNewer {
            serial: 1,
            current: 2
        })
    ));
    assert_eq!(c.counters().get(ControlCounter::RosterRefused), 1);
    assert_eq!(c.roster().unwrap().serial, 2);
    // The kept gateway goes on working.
    out.clear();
    c.handle(NOW, src(5500), &tx_msg(&keep, 1, 0, 1, None), &mut out);
    assert_eq!(out.len(), 1);
}

#[test]
fn attack_junk_manifests_cannot_eat_the_control_path() {
    // A member floods manifest fragments for made-up streams (validly signed by keys it made
    // up, or junk): each unbound stream costs a signature check, so the checks are budgeted
    // per tick; the rest are skipped (counted), and after the tick an honest origin's stream
    // binds as usual.
    let (mut c, pk) = control();
    let gws = three(&mut c, &pk);
    let junk = manifest_fragment(1, &Identity::generate(&SystemRandom::new()).unwrap());
    for stream in 0..300u64 {
        let mut d = junk.clone();
        // Another stream id in the header: the payload's signed stream no longer matches.
        d[photon_protocol::wire::field::STREAM].copy_from_slice(&(stream + 10).to_be_bytes());
        c.record_fragment(&d);
    }
    assert_eq!(c.counters().get(ControlCounter::ManifestUnverified), 256);
    assert_eq!(c.counters().get(ControlCounter::OriginCheckSkipped), 44);
    c.tick(NOW);
    c.record_fragment(&manifest_fragment(own(&gws[0], 0x8888), &gws[0].identity));
    assert_eq!(
        c.stream_origin(own(&gws[0], 0x8888)),
        Some(gws[0].identity.public_key())
    );
}

#[test]
fn attack_forged_receipts_are_not_fanned_out_to_every_gateway() {
    // A member floods receipts for another gateway's stream: once the relay knows the
    // stream's origin, each receipt goes to the origin alone (which refuses the forged ones),
    // not to every gateway.
    let (mut c, pk) = control();
    let gws = three(&mut c, &pk);
    let stream = own(&gws[0], 0x9191);
    c.record_fragment(&manifest_fragment(stream, &gws[0].identity));
    let mut out = Vec::new();
    for _ in 0..10 {
        let sybil = Identity::generate(&SystemRandom::new()).unwrap();
        let r = ReceiptRepr::sign(stream, [1; 32], &sybil);
        c.handle(
            NOW,
            src(5102),
            &gws[2].signed(Repr::new(gws[2].node, Message::Receipt(r))),
            &mut out,
        );
    }
    assert_eq!(out.len(), 10, "one copy each, not two");
    assert!(out.iter().all(|o| to_port(o) == 5100), "only to the origin");
    assert_eq!(c.counters().get(ControlCounter::ToOrigin), 10);
}

#[test]
fn attack_repair_misses_go_to_the_origin_and_only_its_answers_pass() {
    // F3: a repair the cache cannot serve goes toward the stream's origin: here the origin
    // is registered, so to it alone (there is no peer relay). Its RETRANSMIT answer reaches
    // the gateway that asked; the same answer forged by another member is an unsolicited drop
    // and reaches nobody.
    let (mut c, pk) = control();
    let gws = three(&mut c, &pk);
    let stream = own(&gws[0], 0x4242);
    let req = gws[1].signed(Repr::new(
        gws[1].node,
        Message::RepairRequest(RepairRequestRepr::new(
            stream,
            FragmentKind::Repair,
            vec![3],
        )),
    ));
    let mut out = Vec::new();
    c.handle(NOW, src(5101), &req, &mut out);
    assert_eq!(out.len(), 1, "asked of the origin alone");
    assert_eq!(to_port(&out[0]), 5100);
    assert!(gws[0].accepts(&out[0].datagram));
    let p = Packet::new_checked(&out[0].datagram[..]).unwrap();
    let Message::RepairRequest(asked) = Repr::parse(&p).unwrap().message else {
        panic!("a repair request to the origin")
    };
    assert_eq!((asked.stream, asked.missing), (stream, vec![3]));
    assert_eq!(c.counters().get(ControlCounter::ToOrigin), 1);
    let retransmit = |g: &Gw, payload: u8| {
        let mut d = fragment(stream, 3, g.node);
        let mut q = Packet::new_checked(&mut d[..]).unwrap();
        q.set_flags(flags::RETRANSMIT);
        q.payload_mut().fill(payload);
        g.keys.as_ref().unwrap().send.sign_header(&mut d).unwrap();
        d
    };
    out.clear();
    c.handle(NOW, src(5102), &retransmit(&gws[2], 0xee), &mut out);
    assert!(out.is_empty(), "the forged answer reaches nobody");
    assert_eq!(c.counters().get(ControlCounter::UnsolicitedRetransmit), 1);
    c.handle(NOW, src(5100), &retransmit(&gws[0], 3), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(to_port(&out[0]), 5101);
    let p = Packet::new_checked(&out[0].datagram[..]).unwrap();
    assert_eq!((p.stream(), p.index()), (stream, 3));
    assert_eq!(p.payload(), &[3u8; 500][..], "the origin's bytes");
    assert_eq!(c.counters().get(ControlCounter::RetransmitRelayed), 1);
}
