//! End to end with code nobody here wrote at both ends: node A (python-bitcoinlib, played by
//! tests/py/gateway_e2e.py) → gateway A → a real relay (photon-relay's kernel-socket backend on
//! loopback) → gateway B → node B, with real mainnet blocks that must arrive byte-identical
//! (node B checks hash, merkle root and bytes).
//!
//! Needs `/usr/bin/python3` with python-bitcoinlib (scripts/setup.sh).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bitcoin::Network;
use photon_gateway::core::{
    CoreConfig, GatewayEvent, KeyReleasePolicy, PeerEndpoint, RelayEndpoint,
};
use photon_gateway::driver::{self, DriverConfig, GatewayHandle, Snapshot};
use photon_gateway::node::{Backoff, NodeConfig};
use photon_protocol::identity::{Identity, PublicKey};
use photon_relay::socket::{RunningRelay, SocketRelay, SocketRelayConfig};
use ring::rand::SystemRandom;

const PYTHON: &str = "/usr/bin/python3";
const WAIT: Duration = Duration::from_secs(60);

fn data_dir() -> String {
    format!("{}/../data/bitcoin/mainnet", env!("CARGO_MANIFEST_DIR"))
}

/// The two python nodes; killed on drop.
struct PyNodes {
    child: Child,
    stdin: ChildStdin,
    a: SocketAddr,
    b: SocketAddr,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl PyNodes {
    fn start(height: u32, txs: &str) -> PyNodes {
        let script = format!("{}/tests/py/gateway_e2e.py", env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new(PYTHON)
            .args([
                &script,
                "--height",
                &height.to_string(),
                "--txs",
                txs,
                "--data",
                &data_dir(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn /usr/bin/python3 (python3-bitcoinlib: scripts/setup.sh)");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut me = PyNodes {
            child,
            stdin,
            a: SocketAddr::from(([127, 0, 0, 1], 0)),
            b: SocketAddr::from(([127, 0, 0, 1], 0)),
            lines,
            seen: Vec::new(),
        };
        let first = me.wait_for("LISTENING ");
        let ports: Vec<u16> = first
            .split_whitespace()
            .skip(1)
            .map(|p| p.parse().unwrap())
            .collect();
        me.a.set_port(ports[0]);
        me.b.set_port(ports[1]);
        me
    }

    /// The next line starting with `prefix` (earlier lines are kept for the failure message).
    fn wait_for(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => {
                    self.seen.push(l.clone());
                    return l;
                }
                Ok(l) => self.seen.push(l),
                Err(_) => self.fail(&format!("no line {prefix:?}")),
            }
        }
    }

    fn say(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn fail(&mut self, what: &str) -> ! {
        let _ = self.child.kill();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        panic!(
            "{what}\npython stdout:\n{}\nstderr:\n{err}",
            self.seen.join("\n")
        );
    }

    fn pass(&mut self) {
        self.wait_for("PASS");
        assert!(self.seen.iter().filter(|l| l.starts_with("ok: ")).count() >= 3);
    }
}

impl Drop for PyNodes {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn relay(keepalive_ms: u32) -> RunningRelay {
    let mut cfg = SocketRelayConfig::loopback(1);
    cfg.control.keepalive_ms = keepalive_ms;
    let id = Identity::generate(&SystemRandom::new()).unwrap();
    SocketRelay::bind(cfg, id)
        .expect("relay binds")
        .spawn()
        .expect("relay runs")
}

struct Gw {
    id: Identity,
}

impl Gw {
    fn new() -> Gw {
        Gw {
            id: Identity::generate(&SystemRandom::new()).unwrap(),
        }
    }

    fn key(&self) -> PublicKey {
        self.id.public_key()
    }

    fn start(&self, node: SocketAddr, core: CoreConfig, listen: SocketAddr) -> GatewayHandle {
        driver::spawn(
            DriverConfig {
                core,
                listen,
                node_addr: node,
                node: NodeConfig::new(Network::Bitcoin),
                node_backoff: Backoff::new(Duration::from_millis(50), Duration::from_millis(500)),
                recv_batch: 32,
                event_queue: 4096,
                hugepages: false,
                recv_buffer: 8 << 20,
                stage_log: None,
            },
            Identity::from_pkcs8_bytes(self.id.to_pkcs8_bytes()).unwrap(),
            None,
        )
        .expect("gateway starts")
    }
}

fn core(relays: &[&RunningRelay], trusted: &[PublicKey]) -> CoreConfig {
    let mut c = CoreConfig::new();
    for r in relays {
        c.relays.push(RelayEndpoint {
            addr: SocketAddr::V4(r.addr()),
            public_key: r.public_key(),
        });
    }
    c.trusted_origins = trusted.to_vec();
    c.uplink_bytes_per_sec = 12_500_000;
    c.keepalive = Duration::from_millis(100);
    c.link_quiet = Duration::from_millis(600);
    c.register_retry = Duration::from_millis(100);
    c
}

fn peer(key: PublicKey, addr: SocketAddr) -> PeerEndpoint {
    PeerEndpoint {
        addr,
        public_key: key,
        originate_for: false,
    }
}

fn wait_snapshot(gw: &GatewayHandle, what: &str, ok: impl Fn(&Snapshot) -> bool) -> Snapshot {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = gw.snapshot();
        if ok(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached; last snapshot {s:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn events(gw: &GatewayHandle) -> Vec<GatewayEvent> {
    gw.events().try_iter().collect()
}

fn free_udp() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}

/// Every transaction of the block known beforehand: the block crosses with no round trip.
#[test]
fn block_with_all_txs_known_crosses_the_relay_without_tx_requests() {
    let height = 702861;
    let r = relay(200);
    let mut py = PyNodes::start(height, "all");
    let (ga, gb) = (Gw::new(), Gw::new());
    let a = ga.start(py.a, core(&[&r], &[gb.key()]), free_udp());
    let b = gb.start(py.b, core(&[&r], &[ga.key()]), free_udp());
    let ready = py.wait_for("READY ");
    let n: usize = ready[6..].trim().parse().unwrap();
    // Both stores hold every transaction under the relay's short IDs.
    wait_snapshot(&a, "A's store", |s| s.store.entries >= n);
    wait_snapshot(&b, "B's store", |s| s.store.entries >= n);
    py.say("SEND_BLOCK");
    py.pass();
    let sb = wait_snapshot(&b, "B delivered", |s| s.stats.blocks_from_network == 1);
    assert_eq!(sb.stats.tx_requests_sent, 0, "no round trip");
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
    let height = 556977;
    let r = relay(200);
    let mut py = PyNodes::start(height, "split");
    let (ga, gb) = (Gw::new(), Gw::new());
    let (ua, ub) = (free_udp(), free_udp());
    // A and B are also direct peers: the relay does not answer tx requests, the origin does.
    let mut ca = core(&[&r], &[gb.key()]);
    ca.peers.push(peer(gb.key(), ub));
    let mut cb = core(&[&r], &[ga.key()]);
    cb.peers.push(peer(ga.key(), ua));
    let a = ga.start(py.a, ca, ua);
    let phase1: usize = py.wait_for("PHASE1 ")[7..].trim().parse().unwrap();
    wait_snapshot(&a, "A's store after phase 1", |s| s.store.entries >= phase1);
    let b = gb.start(py.b, cb, ub);
    py.say("CONTINUE");
    let rest: usize = py.wait_for("READY ")[6..].trim().parse().unwrap();
    wait_snapshot(&a, "A's store", |s| s.store.entries >= phase1 + rest);
    wait_snapshot(&b, "B's store", |s| s.store.entries >= rest);
    py.say("SEND_BLOCK");
    py.pass();
    let sb = wait_snapshot(&b, "B delivered", |s| s.stats.blocks_from_network == 1);
    assert!(sb.stats.tx_requests_sent >= 1);
    assert!(sb.stats.txs_requested as usize >= phase1, "{:?}", sb.stats);
    let sa = a.snapshot();
    assert!(sa.stats.tx_requests_served as usize >= phase1);
    r.stop().unwrap();
}

/// The relay dies in the middle of a block: A sends it to its peer B directly.
#[test]
fn relay_killed_mid_block_falls_back_to_the_direct_peer_link() {
    let height = 227836; // 39 kB
    let r = relay(200);
    let mut py = PyNodes::start(height, "none");
    let (ga, gb) = (Gw::new(), Gw::new());
    let (ua, ub) = (free_udp(), free_udp());
    let mut ca = core(&[&r], &[gb.key()]);
    ca.peers.push(peer(gb.key(), ub));
    // 1 Mbit/s: the block's ~37 datagrams take ~0.35 s, long enough to kill the relay inside.
    ca.uplink_bytes_per_sec = 125_000;
    ca.burst = 1;
    ca.peer_fallback = Duration::from_millis(400);
    let mut cb = core(&[&r], &[ga.key()]);
    cb.peers.push(peer(ga.key(), ua));
    let a = ga.start(py.a, ca, ua);
    let b = gb.start(py.b, cb, ub);
    py.wait_for("READY ");
    wait_snapshot(&a, "A's links up", |s| {
        s.links.len() == 2
            && s.links
                .iter()
                .all(|l| l.2 == photon_gateway::core::LinkState::Up)
    });
    wait_snapshot(&b, "B's links up", |s| {
        s.links
            .iter()
            .all(|l| l.2 == photon_gateway::core::LinkState::Up)
    });
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
    let height = 367891;
    let r = relay(200);
    let mut py = PyNodes::start(height, "none");
    let (ga, gb) = (Gw::new(), Gw::new());
    let mut ca = core(&[&r], &[gb.key()]);
    ca.key_release = KeyReleasePolicy::Receipts {
        share: 1.0,
        receivers: 3,
        timeout: Duration::from_secs(3600),
    };
    let a = ga.start(py.a, ca, free_udp());
    let b = gb.start(py.b, core(&[&r], &[ga.key()]), free_udp());
    py.wait_for("READY ");
    wait_snapshot(&b, "B's relay link up", |s| {
        s.links
            .iter()
            .all(|l| l.2 == photon_gateway::core::LinkState::Up)
    });
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
    let mut py = PyNodes::start(height, "none");
    let (ga, gb) = (Gw::new(), Gw::new());
    let a = ga.start(py.a, core(&[&r1, &r2], &[gb.key()]), free_udp());
    let b = gb.start(py.b, core(&[&r1, &r2], &[ga.key()]), free_udp());
    py.wait_for("READY ");
    let up = |s: &Snapshot| {
        s.links
            .iter()
            .all(|l| l.2 == photon_gateway::core::LinkState::Up)
    };
    wait_snapshot(&a, "A on both relays", up);
    wait_snapshot(&b, "B on both relays", up);
    r1.stop().unwrap();
    let quiet = |s: &Snapshot| s.links[0].2 == photon_gateway::core::LinkState::Quiet;
    wait_snapshot(&a, "A sees relay 1 quiet", quiet);
    wait_snapshot(&b, "B sees relay 1 quiet", quiet);
    py.say("SEND_BLOCK");
    py.pass();
    let sb = wait_snapshot(&b, "B delivered", |s| s.stats.blocks_from_network == 1);
    assert_eq!(sb.stats.failovers, 1);
    assert_eq!(a.snapshot().stats.failovers, 1);
    assert_eq!(a.snapshot().stats.peer_fallbacks, 0, "no peers configured");
    r2.stop().unwrap();
}
