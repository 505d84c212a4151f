//! The baselines of `[block]` end to end (docs/protocol.md §6.8, §6.9): node A
//! (python-bitcoinlib, tests/py/gateway_e2e.py) → gateway A → a real relay (photon-relay's
//! kernel-socket backend on loopback) → gateway B → node B, with real mainnet blocks that must
//! arrive byte-identical (node B checks hash, merkle root and bytes). The harness is copied
//! from e2e_relay.rs.
//!
//! Needs `/usr/bin/python3` with python-bitcoinlib (scripts/setup.sh).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bitcoin::Network;
use photon_gateway::core::{BlockEncoding, CoreConfig, GatewayEvent, RelayEndpoint};
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

/// Deployment-wide `encoding = "full"`, `encrypt = false`: the block's own serialization,
/// unsealed, no transactions known anywhere, no key release.
#[test]
fn full_unsealed_block_crosses_the_relay_byte_identical() {
    let height = 702861;
    let r = relay(200);
    let mut py = PyNodes::start(height, "none");
    let (ga, gb) = (Gw::new(), Gw::new());
    let mode = |mut c: CoreConfig| {
        c.block_encoding = BlockEncoding::Full;
        c.encrypt = false;
        c
    };
    let a = ga.start(py.a, mode(core(&[&r], &[gb.key()])), free_udp());
    let b = gb.start(py.b, mode(core(&[&r], &[ga.key()])), free_udp());
    py.wait_for("READY ");
    let up = |s: &Snapshot| {
        s.links
            .iter()
            .all(|l| l.2 == photon_gateway::core::LinkState::Up)
    };
    wait_snapshot(&a, "A's relay link up", up);
    wait_snapshot(&b, "B's relay link up", up);
    py.say("SEND_BLOCK");
    py.pass();
    let sb = wait_snapshot(&b, "B delivered", |s| s.stats.blocks_from_network == 1);
    assert_eq!(sb.stats.blocks_in_unsealed, 1);
    assert_eq!(sb.stats.tx_requests_sent, 0, "full needs no transactions");
    assert_eq!(sb.stats.key_releases_received, 0);
    let sa = a.snapshot();
    assert_eq!(sa.stats.blocks_out_unsealed, 1);
    assert_eq!(sa.stats.key_releases_sent, 0);
    // The payload is the block itself plus the 2-byte format and chain prefix.
    assert_eq!(sa.stats.compressed_bytes_out, sa.stats.block_bytes_out + 2);
    let delivered = events(&b).into_iter().find_map(|e| match e {
        GatewayEvent::BlockDelivered {
            encoding,
            sealed,
            timings,
            ..
        } => Some((encoding, sealed, timings)),
        _ => None,
    });
    let (encoding, sealed, timings) = delivered.expect("B's delivery event");
    assert_eq!((encoding, sealed), (BlockEncoding::Full, false));
    assert_eq!(timings.key_wait, Duration::ZERO);
    assert!(
        !events(&a)
            .iter()
            .any(|e| matches!(e, GatewayEvent::KeyReleased { .. })),
        "no key release unsealed"
    );
    r.stop().unwrap();
}

/// Deployment-wide `encoding = "bip152"`, `encrypt = true`: every transaction known, each
/// referenced by a 6-byte ID; sealed, key released on B's receipt.
#[test]
fn bip152_sized_sealed_block_crosses_the_relay_byte_identical() {
    let height = 702861;
    let r = relay(200);
    let mut py = PyNodes::start(height, "all");
    let (ga, gb) = (Gw::new(), Gw::new());
    let mode = |mut c: CoreConfig| {
        c.block_encoding = BlockEncoding::Bip152Sized;
        c.encrypt = true;
        c
    };
    let a = ga.start(py.a, mode(core(&[&r], &[gb.key()])), free_udp());
    let b = gb.start(py.b, mode(core(&[&r], &[ga.key()])), free_udp());
    let n: usize = py.wait_for("READY ")[6..].trim().parse().unwrap();
    wait_snapshot(&a, "A's store", |s| s.store.entries >= n);
    wait_snapshot(&b, "B's store", |s| s.store.entries >= n);
    py.say("SEND_BLOCK");
    py.pass();
    let sb = wait_snapshot(&b, "B delivered", |s| s.stats.blocks_from_network == 1);
    assert_eq!(sb.stats.tx_requests_sent, 0, "no round trip");
    assert_eq!(sb.stats.blocks_in_unsealed, 0);
    let sa = wait_snapshot(&a, "A sent", |s| s.stats.blocks_from_node == 1);
    assert_eq!(sa.stats.blocks_out_unsealed, 0);
    // 6 bytes per known transaction (n of them, all but the coinbase), plus header, coinbase
    // and a few bytes of counts: well under a fiftieth of the block.
    let c = sa.stats.compressed_bytes_out as usize;
    assert!(c >= 6 * n + 80, "{c} bytes for {n} known transactions");
    assert!(
        c * 50 < sa.stats.block_bytes_out as usize,
        "{c} of {}",
        sa.stats.block_bytes_out
    );
    let delivered = events(&b).into_iter().find_map(|e| match e {
        GatewayEvent::BlockDelivered {
            encoding, sealed, ..
        } => Some((encoding, sealed)),
        _ => None,
    });
    assert_eq!(delivered, Some((BlockEncoding::Bip152Sized, true)));
    assert!(
        events(&a)
            .iter()
            .any(|e| matches!(e, GatewayEvent::KeyReleased { receipts: 1, .. })),
        "key released on B's receipt"
    );
    r.stop().unwrap();
}
