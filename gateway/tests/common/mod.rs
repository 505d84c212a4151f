//! The end-to-end harness shared by the gateway's tests against real processes: python-bitcoinlib
//! nodes (tests/py/gateway_e2e.py, played by `/usr/bin/python3`), a real socket-backend relay on
//! loopback, and gateways started through the driver.
#![allow(dead_code)] // each test file uses part of it

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bitcoin::Network;
use photon_gateway::core::{CoreConfig, GatewayEvent, PeerEndpoint, RelayEndpoint};
use photon_gateway::driver::{self, DriverConfig, GatewayHandle, Snapshot};
use photon_gateway::node::NodeConfig;
use photon_protocol::identity::{Identity, PublicKey};
use photon_relay::socket::{RunningRelay, SocketRelay, SocketRelayConfig};
use ring::rand::SystemRandom;

pub const PYTHON: &str = "/usr/bin/python3";
pub const WAIT: Duration = Duration::from_secs(60);

pub fn data_dir() -> String {
    format!("{}/../data/bitcoin/mainnet", env!("CARGO_MANIFEST_DIR"))
}

/// The child's stdout, line by line, from a thread of its own (so a test can wait with a
/// timeout).
pub fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = BufReader::new(child.stdout.take().expect("stdout piped"));
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    lines
}

/// The two python nodes; killed on drop.
pub struct PyNodes {
    child: Child,
    stdin: ChildStdin,
    pub a: SocketAddr,
    pub b: SocketAddr,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl PyNodes {
    pub fn start(height: u32, txs: &str) -> PyNodes {
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
        let lines = stdout_lines(&mut child);
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
    pub fn wait_for(&mut self, prefix: &str) -> String {
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

    /// The number after `prefix` on the next line starting with it (`READY n`, `PHASE1 n`:
    /// how many transactions the node announced).
    pub fn wait_count(&mut self, prefix: &str) -> usize {
        let line = self.wait_for(prefix);
        match line[prefix.len()..].trim().parse() {
            Ok(n) => n,
            Err(_) => self.fail(&format!("no count in {line:?}")),
        }
    }

    pub fn say(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    pub fn fail(&mut self, what: &str) -> ! {
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

    pub fn pass(&mut self) {
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

pub fn relay(keepalive_ms: u32) -> RunningRelay {
    let mut cfg = SocketRelayConfig::loopback(1);
    // Bursts of a block's transactions overflow the default socket buffer (~208 KiB).
    cfg.recv_buffer = Some(8 << 20);
    cfg.send_buffer = Some(8 << 20);
    cfg.control.keepalive_ms = keepalive_ms;
    let id = Identity::generate(&SystemRandom::new()).unwrap();
    SocketRelay::bind(cfg, id)
        .expect("relay binds")
        .spawn()
        .expect("relay runs")
}

pub struct Gw {
    pub id: Identity,
}

impl Gw {
    pub fn new() -> Gw {
        Gw {
            id: Identity::generate(&SystemRandom::new()).unwrap(),
        }
    }

    pub fn key(&self) -> PublicKey {
        self.id.public_key()
    }

    pub fn start(&self, node: SocketAddr, core: CoreConfig, listen: SocketAddr) -> GatewayHandle {
        driver::spawn(
            DriverConfig::local(core, listen, node, NodeConfig::new(Network::Bitcoin)),
            Identity::from_pkcs8_bytes(self.id.to_pkcs8_bytes()).unwrap(),
            None,
        )
        .expect("gateway starts")
    }
}

pub fn core(relays: &[&RunningRelay], trusted: &[PublicKey]) -> CoreConfig {
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

/// Nodes A and B for the block at `height` (`txs`: which transactions they announce first, as
/// tests/py/gateway_e2e.py takes them) and fresh identities for gateways A and B.
pub fn nodes(height: u32, txs: &str) -> (PyNodes, Gw, Gw) {
    (PyNodes::start(height, txs), Gw::new(), Gw::new())
}

/// Nodes A and B for the block at `height` (`txs`: which transactions they announce first, as
/// tests/py/gateway_e2e.py takes them) and their gateways on free ports, A on `relays_a` and B
/// on `relays_b`, each trusting the other's blocks; `mode` adjusts both configs.
pub fn nodes_and_gateways(
    height: u32,
    txs: &str,
    relays_a: &[&RunningRelay],
    relays_b: &[&RunningRelay],
    mode: impl Fn(CoreConfig) -> CoreConfig,
) -> (PyNodes, GatewayHandle, GatewayHandle) {
    let (py, ga, gb) = nodes(height, txs);
    let a = ga.start(py.a, mode(core(relays_a, &[gb.key()])), free_udp());
    let b = gb.start(py.b, mode(core(relays_b, &[ga.key()])), free_udp());
    (py, a, b)
}

/// Configs of gateways A and B on `relays` that are also each other's direct peer, each with
/// the free port the other's peer link expects it on.
pub fn peered(
    relays: &[&RunningRelay],
    ga: &Gw,
    gb: &Gw,
) -> ((CoreConfig, SocketAddr), (CoreConfig, SocketAddr)) {
    let (ua, ub) = (free_udp(), free_udp());
    let mut ca = core(relays, &[gb.key()]);
    ca.peers.push(peer(gb.key(), ub));
    let mut cb = core(relays, &[ga.key()]);
    cb.peers.push(peer(ga.key(), ua));
    ((ca, ua), (cb, ub))
}

pub fn peer(key: PublicKey, addr: SocketAddr) -> PeerEndpoint {
    PeerEndpoint {
        addr,
        public_key: key,
        originate_for: false,
    }
}

pub fn wait_snapshot(gw: &GatewayHandle, what: &str, ok: impl Fn(&Snapshot) -> bool) -> Snapshot {
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

/// Both gateways' stores hold at least `n` transactions (what the nodes announced).
pub fn wait_stores(a: &GatewayHandle, b: &GatewayHandle, n: usize) {
    wait_snapshot(a, "A's store", |s| s.store.entries >= n);
    wait_snapshot(b, "B's store", |s| s.store.entries >= n);
}

/// Node A announces its block and node B must receive it byte-identical (the script checks
/// hash, merkle root and bytes); returns gateway B's snapshot once it delivered the block.
pub fn send_block(py: &mut PyNodes, b: &GatewayHandle) -> Snapshot {
    py.say("SEND_BLOCK");
    py.pass();
    wait_snapshot(b, "B delivered", |s| s.stats.blocks_from_network == 1)
}

/// Every transaction announced beforehand: waits for the nodes' `READY n` and both stores
/// holding the n transactions, then [`send_block`], which must need no round trip. Returns n and
/// B's snapshot.
pub fn send_known_block(
    py: &mut PyNodes,
    a: &GatewayHandle,
    b: &GatewayHandle,
) -> (usize, Snapshot) {
    let n = py.wait_count("READY ");
    wait_stores(a, b, n);
    let sb = send_block(py, b);
    assert_eq!(sb.stats.tx_requests_sent, 0, "no round trip");
    (n, sb)
}

/// The "split" script: node A announces a first part of the block's transactions (`PHASE1 n`)
/// before gateway B runs, so B never sees them; `start_b` starts B for node B's address, then
/// both nodes announce the rest (`READY m`). Sends the block, which B completes by tx requests
/// for the first part. Returns B, n and B's snapshot.
pub fn send_split_block(
    py: &mut PyNodes,
    a: &GatewayHandle,
    start_b: impl FnOnce(SocketAddr) -> GatewayHandle,
) -> (GatewayHandle, usize, Snapshot) {
    let phase1: usize = py.wait_count("PHASE1 ");
    wait_snapshot(a, "A's store after phase 1", |s| s.store.entries >= phase1);
    let b = start_b(py.b);
    py.say("CONTINUE");
    let rest: usize = py.wait_count("READY ");
    wait_snapshot(a, "A's store", |s| s.store.entries >= phase1 + rest);
    wait_snapshot(&b, "B's store", |s| s.store.entries >= rest);
    let sb = send_block(py, &b);
    assert!(sb.stats.tx_requests_sent >= 1);
    assert!(sb.stats.txs_requested as usize >= phase1, "{:?}", sb.stats);
    (b, phase1, sb)
}

/// Every link of the gateway is up (a [`wait_snapshot`] condition).
pub fn links_up(s: &Snapshot) -> bool {
    s.links
        .iter()
        .all(|l| l.2 == photon_gateway::core::LinkState::Up)
}

pub fn events(gw: &GatewayHandle) -> Vec<GatewayEvent> {
    gw.events().try_iter().collect()
}

pub fn free_udp() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}
