//! The gateway's node side against a node played by python-bitcoinlib (code nobody here wrote):
//! gateway/tests/py/node_peer.py listens, the gateway connects with `NodeConnection`, and both
//! sides check what they receive. Needs `/usr/bin/python3` with the `bitcoin` module (Debian
//! python3-bitcoinlib, installed by scripts/setup.sh).

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bitcoin::{Block, Network};
use photon_gateway::node::{Backoff, ConnectionEvent, NodeConfig, NodeConnection, NodeEvent};
use photon_protocol::chain::{Bitcoin, ChainAdapter};

mod common;

use common::{data_dir, stdout_lines, PYTHON, WAIT};

fn block(height: u32) -> Block {
    let bytes = std::fs::read(format!("{}/{height}.raw", data_dir())).unwrap();
    Bitcoin::decode_block(&bytes).unwrap()
}

/// The Python node; killed on drop so a failed test leaves nothing behind.
struct PyNode {
    child: Child,
    addr: SocketAddr,
    /// Lines of its stdout after "LISTENING".
    lines: mpsc::Receiver<String>,
}

impl PyNode {
    fn start(scenario: &str) -> PyNode {
        let probe = Command::new(PYTHON)
            .args(["-c", "import bitcoin.messages"])
            .output();
        match probe {
            Ok(o) if o.status.success() => {}
            other => panic!(
                "{PYTHON} cannot import python-bitcoinlib ({other:?}): run scripts/setup.sh \
                 (Debian package python3-bitcoinlib)"
            ),
        }
        let script = format!("{}/tests/py/node_peer.py", env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new(PYTHON)
            .args([&script, "--scenario", scenario, "--data", &data_dir()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn /usr/bin/python3");
        let lines = stdout_lines(&mut child);
        let first = lines.recv_timeout(Duration::from_secs(20));
        let port: u16 = match first
            .as_deref()
            .ok()
            .and_then(|l| l.strip_prefix("LISTENING "))
        {
            Some(p) => p.trim().parse().unwrap(),
            None => {
                let _ = child.kill();
                let mut err = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                panic!("python node did not start: {first:?}\n{err}");
            }
        };
        PyNode {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            lines,
        }
    }

    /// Wait for the script to end; panics with its output unless it passed.
    fn finish(mut self) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break Some(s);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out: Vec<String> = self.lines.try_iter().collect();
        let mut err = String::new();
        let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
        match status {
            Some(s) if s.success() && out.last().map(String::as_str) == Some("PASS") => out,
            _ => panic!(
                "python node failed ({status:?})\nstdout:\n{}\nstderr:\n{err}",
                out.join("\n")
            ),
        }
    }
}

impl Drop for PyNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A connection to a Bitcoin mainnet node at `addr`.
fn connect_mainnet(addr: SocketAddr, backoff: Backoff) -> NodeConnection {
    NodeConnection::connect(addr, NodeConfig::new(Network::Bitcoin), backoff)
}

/// Next node event, skipping connection-life events; panics after [`WAIT`].
fn next_node_event(conn: &NodeConnection) -> NodeEvent {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.recv_event(left) {
            Some(ConnectionEvent::Node(ev)) => return ev,
            Some(ConnectionEvent::Connected(_)) => {}
            Some(other) => panic!("unexpected {other:?}"),
            None => panic!("no event within {WAIT:?}"),
        }
    }
}

#[test]
fn relay_with_a_bitcoinlib_node() {
    let py = PyNode::start("relay");
    let conn = connect_mainnet(py.addr, Backoff::default());

    let NodeEvent::Handshaken(info) = next_node_event(&conn) else {
        panic!("first event is not Handshaken")
    };
    assert_eq!(info.version, 70016);
    assert_eq!(info.user_agent, "/Satoshi:27.0.0(bitcoinlib-test-node)/");
    assert_eq!(info.start_height, 403617);
    assert!(info.wtxid_relay && info.addrv2);

    // From the node: a tx, then a block, then junk.
    let b403617 = block(403617);
    let ev = next_node_event(&conn);
    let NodeEvent::TxReceived { tx, .. } = ev else {
        panic!("{ev:?}")
    };
    assert_eq!(tx, b403617.txdata[5]);
    assert!(
        matches!(next_node_event(&conn), NodeEvent::BlockAnnounced { hash, .. } if hash == b403617.block_hash())
    );
    let ev = next_node_event(&conn);
    let NodeEvent::BlockReceived {
        block: got, hash, ..
    } = ev
    else {
        panic!("{ev:?}")
    };
    assert_eq!(got, b403617);
    assert_eq!(
        hash.to_string(),
        "00000000000000000245be9dd046492886b4527c7fa3494f26a9a9d876ecea22"
    );
    let ev = next_node_event(&conn);
    assert!(matches!(ev, NodeEvent::BlockRejected { .. }), "{ev:?}");

    // To the node: a segwit tx (announced, served on getdata), two blocks pushed, one
    // announced by headers.
    let b702861 = block(702861);
    let seg_tx = b702861.txdata[1..]
        .iter()
        .find(|t| t.input.iter().any(|i| !i.witness.is_empty()))
        .unwrap()
        .clone();
    conn.announce_tx(seg_tx);
    conn.send_block(block(367891));
    conn.send_block(b702861);
    conn.announce_block(block(363703));

    let out = py.finish();
    assert!(
        out.iter().filter(|l| l.starts_with("ok: ")).count() >= 20,
        "{out:#?}"
    );
    // Counters are published every 500 ms: wait for a snapshot that has the last delivery.
    let deadline = Instant::now() + WAIT;
    let stats = loop {
        let s = conn.stats();
        if s.getdata_served >= 2 || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(stats.pow_rejected, 1);
    assert_eq!(stats.blocks_received, 1);
    assert_eq!(stats.txs_received, 1);
    assert_eq!(stats.blocks_sent, 2);
    assert_eq!(stats.blocks_announced, 1);
    assert_eq!((stats.getdata_served, stats.getdata_not_found), (2, 1));
    conn.shutdown();
}

#[test]
fn reconnects_after_the_node_drops_it() {
    let py = PyNode::start("reconnect");
    let conn = connect_mainnet(
        py.addr,
        Backoff::new(Duration::from_millis(50), Duration::from_secs(1)),
    );
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    while seen.iter().filter(|e| **e == "handshaken").count() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.recv_event(left) {
            Some(ConnectionEvent::Connected(_)) => seen.push("connected"),
            Some(ConnectionEvent::Node(NodeEvent::Handshaken(_))) => seen.push("handshaken"),
            Some(ConnectionEvent::Disconnected { reconnect_in, .. }) => {
                assert_eq!(
                    reconnect_in,
                    Duration::from_millis(50),
                    "backoff reset after a handshake"
                );
                seen.push("disconnected")
            }
            Some(other) => panic!("unexpected {other:?}"),
            None => panic!("no event within {WAIT:?}; so far {seen:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            "connected",
            "handshaken",
            "disconnected",
            "connected",
            "handshaken"
        ]
    );
    py.finish();
    conn.shutdown();
}

#[test]
fn backoff_grows_while_nobody_listens() {
    // A port nobody listens on: bind, note the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conn = connect_mainnet(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Backoff::new(Duration::from_millis(10), Duration::from_millis(40)),
    );
    let mut delays = Vec::new();
    while delays.len() < 4 {
        match conn.recv_event(WAIT) {
            Some(ConnectionEvent::Disconnected { reconnect_in, .. }) => {
                delays.push(reconnect_in.as_millis())
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(delays, vec![10, 20, 40, 40]);
    // While disconnected a block is kept for the next connection (announced after its
    // handshake); a transaction is refused, not lost silently. The calls are taken in order,
    // so the first refusal is the transaction's.
    let b = block(227836);
    conn.send_block(b.clone());
    conn.announce_tx(b.txdata[1].clone());
    let refused = std::iter::from_fn(|| conn.recv_event(WAIT))
        .find(|e| matches!(e, ConnectionEvent::CallRefused { .. }));
    assert!(matches!(
        refused,
        Some(ConnectionEvent::CallRefused {
            call: "announce_tx",
            ..
        })
    ));
    conn.shutdown();
}
