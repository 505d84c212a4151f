//! The kernel-socket relay on loopback with real UDP sockets: test gateways register with real
//! signed Register messages, then fragments, transactions and junk go through it; the metrics
//! endpoint serves the counters; `[perf] stage_log` records each forwarded stream once.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use photon_protocol::hopauth::{HopKeys, Role};
use photon_protocol::identity::{self, EphemeralKey, Identity, PublicKey};
use photon_protocol::integrity::own_stream_id;
use photon_protocol::wire::{
    register_status, FragmentKind, FragmentRepr, Message, Packet, Repr, TransactionRepr,
    TxRequestRepr, MAX_DATAGRAM,
};
use photon_relay::control::{unix_ms, ControlCounter};
use photon_relay::ops::counters::{Counter, DropReason};
use photon_relay::ops::metrics::{render, MetricsServer};
use photon_relay::socket::{RunningRelay, SocketRelay, SocketRelayConfig};
use ring::rand::SystemRandom;

const RELAY: u32 = 7;

fn start_relay() -> RunningRelay {
    start_relay_with(SocketRelayConfig::loopback(RELAY))
}

fn start_relay_with(cfg: SocketRelayConfig) -> RunningRelay {
    let id = Identity::generate(&SystemRandom::new()).unwrap();
    SocketRelay::bind(cfg, id).unwrap().spawn().unwrap()
}

/// `n` gateways registered with `relay`.
fn gateways(relay: &RunningRelay, n: usize) -> Vec<Gw> {
    (0..n)
        .map(|_| Gw::register(relay.addr(), &relay.public_key()))
        .collect()
}

struct Gw {
    id: Identity,
    sock: UdpSocket,
    node: u32,
    keys: HopKeys,
}

impl Gw {
    /// A gateway on its own loopback socket, registered with the relay at `relay`.
    fn register(relay: SocketAddrV4, relay_pk: &PublicKey) -> Gw {
        let rng = SystemRandom::new();
        let id = Identity::generate(&rng).unwrap();
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let eph = EphemeralKey::generate(&rng).unwrap();
        let nonce: [u8; 16] = rand::random();
        let req = identity::register(&id, &eph, nonce, unix_ms());
        let mut buf = [0u8; MAX_DATAGRAM];
        let n = Repr::new(0, Message::Register(req)).emit(&mut buf).unwrap();
        sock.send_to(&buf[..n], relay).unwrap();
        let (n, from) = sock.recv_from(&mut buf).unwrap();
        assert_eq!(from, relay.into());
        let p = Packet::new_checked(&buf[..n]).unwrap();
        let Message::RegisterAck(ack) = Repr::parse(&p).unwrap().message else {
            panic!("expected a register ack")
        };
        assert_eq!(ack.status, register_status::ACCEPTED);
        identity::verify_register_ack(&ack, &req, relay_pk).unwrap();
        let ctx = identity::registration_context(&req, &ack, p.sender());
        let keys = eph.agree(&ack.ephemeral, &ctx, Role::Initiator).unwrap();
        Gw {
            id,
            sock,
            node: ack.node_id,
            keys,
        }
    }

    /// Its own stream `low` (under its prefix: a relay forwards a gateway's own streams only).
    fn own(&self, low: u32) -> u64 {
        own_stream_id(self.id.key_pair(), low)
    }

    fn send(&self, relay: SocketAddrV4, repr: Repr<'_>) {
        let mut buf = [0u8; MAX_DATAGRAM];
        let n = repr.emit(&mut buf).unwrap();
        self.keys.send.sign_header(&mut buf[..n]).unwrap();
        self.sock.send_to(&buf[..n], relay).unwrap();
    }

    fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        self.sock.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 2048];
        match self.sock.recv(&mut buf) {
            Ok(n) => Some(buf[..n].to_vec()),
            Err(_) => None,
        }
    }
}

fn fragment(stream: u64, index: u16, payload: &[u8]) -> Repr<'_> {
    Repr::new(
        0,
        Message::Fragment(FragmentRepr {
            kind: FragmentKind::Source,
            stream,
            index,
            count: 10,
            k: 10,
            r: 2,
            payload,
        }),
    )
}

fn from(node: u32, mut r: Repr<'_>) -> Repr<'_> {
    r.sender = node;
    r
}

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

#[test]
fn fragments_fan_out_to_the_other_gateways_once_and_junk_is_dropped() {
    let relay = start_relay();
    let addr = relay.addr();
    let gws = gateways(&relay, 3);
    let payload: Vec<u8> = (0..1196u32).map(|i| (i * 13) as u8).collect();

    // A fragment from gateway 0 reaches 1 and 2, re-signed for each, payload untouched.
    let s0 = gws[0].own(0xabc);
    gws[0].send(addr, from(gws[0].node, fragment(s0, 3, &payload)));
    for g in &gws[1..] {
        let d = g.recv(WAIT).expect("the fragment arrives");
        assert!(
            g.keys.recv.verify(&d),
            "tag under relay → this gateway's key"
        );
        let p = Packet::new_checked(&d[..]).unwrap();
        assert_eq!(
            (p.sender(), p.hops(), p.stream(), p.index()),
            (RELAY, 1, s0, 3)
        );
        assert_eq!(p.payload(), &payload[..]);
    }
    assert!(gws[0].recv(QUIET).is_none(), "not back to the sender");

    // The same fragment again from the sender: dedup; from another gateway: not its stream.
    gws[0].send(addr, from(gws[0].node, fragment(s0, 3, &payload)));
    gws[1].send(addr, from(gws[1].node, fragment(s0, 3, &payload)));
    // Junk: an unknown sender, a bad tag, not Photon at all.
    let stranger = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let mut buf = [0u8; MAX_DATAGRAM];
    let n = from(4242, fragment(s0, 4, &payload))
        .emit(&mut buf)
        .unwrap();
    stranger.send_to(&buf[..n], addr).unwrap();
    let n = from(gws[0].node, fragment(s0, 5, &payload))
        .emit(&mut buf)
        .unwrap();
    gws[1].keys.send.sign_header(&mut buf[..n]).unwrap(); // another gateway's key
    gws[0].sock.send_to(&buf[..n], addr).unwrap();
    stranger.send_to(&[0u8; 64], addr).unwrap(); // no magic
    for g in &gws {
        assert!(g.recv(QUIET).is_none(), "nothing else is forwarded");
    }

    // A transaction without a short ID comes back to everyone, its origin included.
    let data = [0x42u8; 200];
    gws[2].send(
        addr,
        Repr::new(
            gws[2].node,
            Message::Transaction(TransactionRepr {
                transfer: 1,
                index: 0,
                count: 1,
                short_id: None,
                tx_len: 200,
                offset: 0,
                data: &data,
            }),
        ),
    );
    let mut ids = Vec::new();
    for g in &gws {
        let d = g.recv(WAIT).expect("the transaction arrives");
        assert!(g.keys.recv.verify(&d));
        let p = Packet::new_checked(&d[..]).unwrap();
        let Message::Transaction(t) = Repr::parse(&p).unwrap().message else {
            panic!("expected a transaction")
        };
        assert_eq!(t.data, &data[..]);
        ids.push(t.short_id.expect("with its short ID"));
    }
    assert!(ids.iter().all(|&i| i == ids[0]));

    // Gateway 0 lacks that transaction and one the relay never saw: the relay answers the
    // first from its transaction cache (unicast) and passes the second on to 1 and 2.
    gws[0].send(
        addr,
        Repr::new(
            gws[0].node,
            Message::TxRequest(TxRequestRepr {
                stream: 0xabc,
                short_ids: vec![ids[0], 0x0fff_ffff],
            }),
        ),
    );
    let d = gws[0]
        .recv(WAIT)
        .expect("the cached transaction comes back");
    assert!(gws[0].keys.recv.verify(&d));
    let p = Packet::new_checked(&d[..]).unwrap();
    let Message::Transaction(t) = Repr::parse(&p).unwrap().message else {
        panic!("expected a transaction")
    };
    assert_eq!((t.short_id, t.data), (Some(ids[0]), &data[..]));
    assert!(gws[0].recv(QUIET).is_none(), "one answer, no pass-on back");
    for g in &gws[1..] {
        let d = g.recv(WAIT).expect("the rest of the request is passed on");
        assert!(g.keys.recv.verify(&d));
        let p = Packet::new_checked(&d[..]).unwrap();
        let Message::TxRequest(r) = Repr::parse(&p).unwrap().message else {
            panic!("expected a tx request")
        };
        assert_eq!((r.stream, r.short_ids), (0xabc, vec![0x0fff_ffff]));
    }

    let stats = relay.stats();
    relay.stop().unwrap();
    let c = stats.core.snapshot();
    assert_eq!(c.get(Counter::Fragments), 1);
    assert_eq!(c.get(Counter::FanoutCopies), 2);
    assert_eq!(c.get(Counter::DedupHits), 1);
    assert_eq!(c.get(Counter::Drop(DropReason::ForeignStream)), 1);
    assert_eq!(c.get(Counter::Drop(DropReason::UnknownSender)), 1);
    assert_eq!(c.get(Counter::Drop(DropReason::BadHopTag)), 1);
    assert_eq!(c.get(Counter::Drop(DropReason::NotPhoton)), 1);
    assert_eq!(stats.control.get(ControlCounter::RegisterAccepted), 3);
    assert_eq!(stats.control.get(ControlCounter::ShortIdsAssigned), 1);
    assert_eq!(stats.control.get(ControlCounter::TxRequestServed), 1);
    assert_eq!(stats.control.get(ControlCounter::TxRequestPassedOn), 1);
    assert_eq!(stats.control.gateways(), 3);
}

#[test]
fn metrics_endpoint_serves_the_counters() {
    let relay = start_relay();
    let addr = relay.addr();
    let a = Gw::register(addr, &relay.public_key());
    let b = Gw::register(addr, &relay.public_key());
    a.send(addr, from(a.node, fragment(a.own(1), 0, &[1, 2, 3])));
    assert!(b.recv(WAIT).is_some());
    let stats = relay.stats();
    let server = MetricsServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(move || render(std::slice::from_ref(&stats.core), Some(&stats.control))),
    )
    .unwrap();
    // Counters are published every housekeeping tick (20 ms here): poll until they show.
    let mut body = String::new();
    for _ in 0..100 {
        body = get(server.local_addr(), "/metrics");
        if body.contains("photon_relay_fragments_total{core=\"0\"} 1") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    for want in [
        "photon_relay_fragments_total{core=\"0\"} 1",
        "photon_relay_fanout_copies_total{core=\"0\"} 1",
        "photon_relay_drops_total{core=\"0\",reason=\"bad_hop_tag\"} 0",
        "photon_relay_control_register_accepted_total 2",
        "photon_relay_gateways 2",
        "photon_relay_peer_idle_ms{node_id=",
        "# EOF",
    ] {
        assert!(body.contains(want), "missing {want:?} in:\n{body}");
    }
    assert!(get(server.local_addr(), "/other").starts_with("HTTP/1.1 404"));
    server.stop();
    relay.stop().unwrap();
}

fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn shard(kind: FragmentKind, stream: u64, index: u16, payload: &[u8]) -> Repr<'_> {
    // K = 3, R = 2, a manifest of 2 fragments.
    let count = match kind {
        FragmentKind::Source => 3,
        FragmentKind::Repair => 2,
        FragmentKind::Manifest => 2,
    };
    Repr::new(
        0,
        Message::Fragment(FragmentRepr {
            kind,
            stream,
            index,
            count,
            k: 3,
            r: 2,
            payload,
        }),
    )
}

/// `[relay] forwarding = "store-and-forward"`: nothing of a stream leaves the relay before it
/// holds K shards and the whole manifest; then everything held leaves in arrival order, later
/// fragments go straight through, and an incomplete stream is released by the timeout.
#[test]
fn store_and_forward_holds_each_stream_until_it_could_be_rebuilt() {
    let mut cfg = SocketRelayConfig::loopback(RELAY);
    cfg.forwarding = photon_relay::forward::hold::Forwarding::StoreAndForward;
    cfg.hold.timeout = 400;
    let relay = start_relay_with(cfg);
    let addr = relay.addr();
    let gws = gateways(&relay, 2);
    let (src, dst) = (&gws[0], &gws[1]);
    let (s5f, s60) = (src.own(0x5f), src.own(0x60));
    let order = [
        (FragmentKind::Manifest, 0u16),
        (FragmentKind::Source, 0),
        (FragmentKind::Repair, 1),
        (FragmentKind::Source, 2),
    ];
    let payload = |kind: FragmentKind, i: u16| vec![kind as u8 * 16 + i as u8; 300 + i as usize];
    for &(kind, i) in &order {
        let p = payload(kind, i);
        src.send(addr, from(src.node, shard(kind, s5f, i, &p)));
    }
    // A second stream that never completes.
    src.send(
        addr,
        from(
            src.node,
            shard(
                FragmentKind::Source,
                s60,
                0,
                &payload(FragmentKind::Source, 9),
            ),
        ),
    );
    assert!(
        dst.recv(Duration::from_millis(150)).is_none(),
        "3 shards but not the whole manifest: nothing forwarded"
    );
    // The last manifest fragment releases the stream, in arrival order.
    let last = payload(FragmentKind::Manifest, 1);
    src.send(
        addr,
        from(src.node, shard(FragmentKind::Manifest, s5f, 1, &last)),
    );
    let mut got = Vec::new();
    for _ in 0..5 {
        let d = dst.recv(WAIT).expect("the released stream arrives");
        assert!(dst.keys.recv.verify(&d), "tag under relay → gateway key");
        let p = Packet::new_checked(&d[..]).unwrap();
        let f = FragmentRepr::parse(&p).unwrap();
        assert_eq!((p.sender(), p.hops(), f.stream), (RELAY, 1, s5f));
        assert_eq!(f.payload, &payload(f.kind, f.index)[..]);
        got.push((f.kind, f.index));
    }
    let mut want = order.to_vec();
    want.push((FragmentKind::Manifest, 1));
    assert_eq!(got, want, "arrival order");
    // A later repair shard of the released stream goes straight through.
    let r0 = payload(FragmentKind::Repair, 0);
    src.send(
        addr,
        from(src.node, shard(FragmentKind::Repair, s5f, 0, &r0)),
    );
    let d = dst.recv(WAIT).expect("a later fragment passes straight");
    let p = Packet::new_checked(&d[..]).unwrap();
    assert_eq!((p.stream(), p.index()), (s5f, 0));
    // The incomplete stream comes out after the hold timeout (400 ms).
    let d = dst
        .recv(Duration::from_secs(3))
        .expect("released by the timeout");
    assert_eq!(Packet::new_checked(&d[..]).unwrap().stream(), s60);
    assert!(src.recv(QUIET).is_none(), "nothing back to the sender");

    let stats = relay.stats();
    relay.stop().unwrap();
    let c = stats.core.snapshot();
    assert_eq!(c.get(Counter::Fragments), 7);
    assert_eq!(c.get(Counter::HoldHeld), 6, "all but the straight one");
    assert_eq!(c.get(Counter::HoldReleased), 6);
    assert_eq!(c.get(Counter::HoldStreamsComplete), 1);
    assert_eq!(c.get(Counter::HoldStreamsTimeout), 1);
    assert_eq!(c.get(Counter::HoldStreamsOverflow), 0);
    assert_eq!(c.get(Counter::FanoutCopies), 7);
}

/// The JSON lines of a stage-record file as (stage, stream, t_ns, bytes).
fn stage_lines(text: &str) -> Vec<(String, u64, u64, Option<u64>)> {
    let field = |line: &str, key: &str| -> Option<String> {
        let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
        let rest = &line[at..];
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        Some(rest[..end].trim_matches('"').to_string())
    };
    text.lines()
        .map(|l| {
            assert!(l.starts_with('{') && l.ends_with('}'), "{l}");
            assert_eq!(field(l, "node").as_deref(), Some("relay7"), "{l}");
            (
                field(l, "stage").unwrap(),
                field(l, "stream").unwrap().parse().unwrap(),
                field(l, "t_ns").unwrap().parse().unwrap(),
                field(l, "bytes").map(|b| b.parse().unwrap()),
            )
        })
        .collect()
}

#[test]
fn stage_log_has_one_relay_line_per_forwarded_stream() {
    let path = photon_relay::testkit::stage_log_path("socket");
    let mut cfg = SocketRelayConfig::loopback(RELAY);
    cfg.stage_log = Some((path.clone(), "relay7".into()));
    let relay = start_relay_with(cfg);
    let addr = relay.addr();
    let gws = gateways(&relay, 2);
    let payload = vec![0x5au8; 600];
    let before = photon_relay::ops::stages::unix_ns();
    // Three fragments of stream 0x51, two of 0x52, interleaved; and a duplicate (not forwarded).
    for (stream, index) in [
        (0x51, 0),
        (0x52, 0),
        (0x51, 1),
        (0x52, 1),
        (0x51, 2),
        (0x51, 2),
    ] {
        let stream = gws[0].own(stream);
        gws[0].send(addr, from(gws[0].node, fragment(stream, index, &payload)));
    }
    for _ in 0..5 {
        gws[1].recv(WAIT).expect("forwarded");
    }
    assert!(
        gws[1].recv(QUIET).is_none(),
        "the duplicate was not forwarded"
    );
    relay.stop().unwrap();
    let after = photon_relay::ops::stages::unix_ns();

    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let lines = stage_lines(&text);
    let mut relay_streams: Vec<u64> = lines
        .iter()
        .filter(|l| l.0 == "relay")
        .map(|l| l.1)
        .collect();
    relay_streams.sort_unstable();
    let (s51, s52) = (gws[0].own(0x51), gws[0].own(0x52));
    let mut want = [s51, s52];
    want.sort_unstable();
    assert_eq!(relay_streams, want, "{text}");
    let datagram = (photon_protocol::wire::HEADER_LEN + payload.len()) as u64;
    let mut last: Vec<(u64, Option<u64>)> = lines
        .iter()
        .filter(|l| l.0 == "relay_last")
        .map(|l| (l.1, l.3))
        .collect();
    last.sort_unstable();
    assert_eq!(
        last,
        {
            let mut w = [(s51, Some(3 * datagram)), (s52, Some(2 * datagram))];
            w.sort_unstable();
            w
        },
        "closed at shutdown with the bytes forwarded: {text}"
    );
    for l in &lines {
        assert!(
            before <= l.2 && l.2 <= after,
            "stamped while running: {l:?}"
        );
    }
}
