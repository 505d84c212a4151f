//! Helpers shared by the capture tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bitcoin::consensus::encode::{deserialize, serialize};
use bitcoin::p2p::address::Address;
use bitcoin::p2p::message::{NetworkMessage, RawNetworkMessage};
use bitcoin::p2p::message_blockdata::Inventory;
use bitcoin::p2p::message_network::VersionMessage;
use bitcoin::p2p::{Magic, ServiceFlags};
use bitcoin::Block;
use photon_perf::replay::CapturedMessage;

pub fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub fn block(height: u32) -> Block {
    deserialize(&std::fs::read(data(&format!("../data/bitcoin/mainnet/{height}.raw"))).unwrap())
        .unwrap()
}

pub fn version(nonce: u64) -> NetworkMessage {
    let a = Address {
        services: ServiceFlags::NONE,
        address: [0; 8],
        port: 0,
    };
    NetworkMessage::Version(VersionMessage {
        version: 70016,
        services: ServiceFlags::WITNESS,
        timestamp: 1_700_000_000,
        receiver: a.clone(),
        sender: a,
        nonce,
        user_agent: "/photon-test/".into(),
        start_height: 1,
        relay: true,
    })
}

/// What each test connection sends: version, inv, tx, a real block, headers, and a ping (not
/// kept).
pub fn conversation(nonce: u64, b: &Block) -> Vec<NetworkMessage> {
    let tx = b.txdata[1].clone();
    vec![
        version(nonce),
        NetworkMessage::Inv(vec![Inventory::Transaction(tx.compute_txid())]),
        NetworkMessage::Tx(tx),
        NetworkMessage::Ping(nonce),
        NetworkMessage::Block(b.clone()),
        NetworkMessage::Headers(vec![b.header]),
    ]
}

pub fn wire(msgs: &[NetworkMessage]) -> Vec<u8> {
    msgs.iter()
        .flat_map(|m| serialize(&RawNetworkMessage::new(Magic::BITCOIN, m.clone())))
        .collect()
}

pub fn kept(msgs: &[NetworkMessage]) -> Vec<NetworkMessage> {
    msgs.iter().filter(|m| m.cmd() != "ping").cloned().collect()
}

/// Checks the messages of a capture of [`record_loopback`]: two Bitcoin connections with their
/// whole conversation in order, nothing from the junk connection.
pub fn check_loopback_capture(msgs: &[CapturedMessage], b: &Block) {
    let mut flows: Vec<SocketAddr> = msgs.iter().map(|m| m.flow.src).collect();
    flows.sort();
    flows.dedup();
    assert_eq!(flows.len(), 2, "two Bitcoin connections");
    for (i, src) in flows.iter().enumerate() {
        let of: Vec<&CapturedMessage> = msgs.iter().filter(|m| m.flow.src == *src).collect();
        let NetworkMessage::Version(v) = &of[0].message else {
            panic!("first message is {}", of[0].message.cmd())
        };
        let got: Vec<NetworkMessage> = of.iter().map(|m| m.message.clone()).collect();
        assert_eq!(got, kept(&conversation(v.nonce, b)), "connection {i}");
        assert!(of.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
        assert!(
            of[0].ts_ns > 1_600_000_000_000_000_000,
            "capture times are unix ns"
        );
    }
}

/// tcpdump capturing on `lo`, each packet written at once (`-U --immediate-mode`), numeric, with
/// a 16 MiB kernel buffer (the default is 2 MiB: with it, a connection's burst was lost when
/// tcpdump lost the CPU to a loaded machine); stderr piped (for [`await_tcpdump`]). The caller
/// adds the output options and the filter.
pub fn tcpdump_on_lo() -> std::process::Command {
    use std::process::{Command, Stdio};
    let mut c = Command::new("tcpdump");
    c.args(["-i", "lo", "-U", "--immediate-mode", "-n", "-B", "16384"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    c
}

/// Waits until the tcpdump `child` (stderr piped) says it captures ("listening on", after a
/// "data link type" line with -y); panics with `needs` and tcpdump's words if it does not.
pub fn await_tcpdump(child: &mut std::process::Child, needs: &str) {
    use std::io::{BufRead, BufReader};
    let mut err = BufReader::new(child.stderr.take().expect("tcpdump's stderr piped"));
    let mut line = String::new();
    for _ in 0..3 {
        line.clear();
        let _ = err.read_line(&mut line);
        if line.contains("listening on") || !line.contains("data link type") {
            break;
        }
    }
    assert!(
        line.contains("listening on"),
        "{needs}: tcpdump says {}",
        line.trim()
    );
}

/// SIGTERM to tcpdump (it flushes and closes the file), then up to 5 s for it to exit; killed
/// after that.
pub fn stop_tcpdump(child: &mut std::process::Child) {
    use std::time::{Duration, Instant};
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
