//! The emulated node against the gateway's real node side (`photon_gateway::node`): the gateway
//! connects out to it, completes the handshake, and transactions and blocks go both ways.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::{Block, Network};
use photon_gateway::node::{Backoff, ConnectionEvent, NodeConfig, NodeConnection, NodeEvent};
use photon_perf::emunode::{BlockDelivery, EmuNode, EmuNodeConfig};
use photon_perf::report::{NodeEventKind, NodeRecord};

fn block(height: u32) -> Block {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../data/bitcoin/mainnet/{height}.raw"));
    bitcoin::consensus::encode::deserialize(&std::fs::read(path).unwrap()).unwrap()
}

/// Waits for a gateway event matching `f`.
fn wait_event<T>(
    gw: &NodeConnection,
    timeout: Duration,
    mut f: impl FnMut(&ConnectionEvent) -> Option<T>,
) -> Option<T> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if let Some(e) = gw.recv_event(Duration::from_millis(50)) {
            if let Some(t) = f(&e) {
                return Some(t);
            }
        }
    }
    None
}

/// The node's first record of `kind`, waiting up to 10 s.
fn first_record(node: &EmuNode, kind: NodeEventKind) -> Option<NodeRecord> {
    node.wait_record(Duration::from_secs(10), |r| r.event == kind)
}

#[test]
fn gateway_and_emulated_node_exchange_txs_and_blocks() {
    let node = EmuNode::listen(EmuNodeConfig::new("node0", "127.0.0.1:0".parse().unwrap()))
        .expect("listen on loopback");
    let gw = NodeConnection::connect(
        node.local_addr(),
        NodeConfig::new(Network::Bitcoin),
        Backoff::default(),
    );
    let info = wait_event(&gw, Duration::from_secs(10), |e| match e {
        ConnectionEvent::Node(NodeEvent::Handshaken(info)) => Some(info.clone()),
        _ => None,
    })
    .expect("handshake");
    assert!(info.wtxid_relay);
    assert!(node.wait_handshake(Duration::from_secs(5)));

    // Node to gateway: a transaction (inv by wtxid, getdata, tx).
    let b = block(227836);
    let tx = Arc::new(b.txdata[1].clone());
    node.send_tx(tx.clone());
    let got = wait_event(&gw, Duration::from_secs(10), |e| match e {
        ConnectionEvent::Node(NodeEvent::TxReceived { tx, .. }) => Some(tx.compute_txid()),
        _ => None,
    });
    assert_eq!(got, Some(tx.compute_txid()));

    // Node to gateway: a block announced by headers (the gateway fetches it) and one sent whole.
    for (height, how) in [
        (227835, BlockDelivery::Headers),
        (227836, BlockDelivery::Unsolicited),
    ] {
        let b = Arc::new(block(height));
        node.send_block(b.clone(), how);
        let got = wait_event(&gw, Duration::from_secs(10), |e| match e {
            ConnectionEvent::Node(NodeEvent::BlockReceived { hash, .. }) => Some(*hash),
            _ => None,
        });
        assert_eq!(got, Some(b.block_hash()), "{how:?}");
    }

    // Gateway to node: a block from the network, and a transaction announced.
    let from_network = block(300025);
    gw.send_block(from_network.clone());
    let r =
        first_record(&node, NodeEventKind::BlockReceived).expect("block reached the emulated node");
    assert_eq!(r.id, from_network.block_hash().to_string());
    assert_eq!(r.bytes as usize, from_network.total_size());
    let tx2 = from_network.txdata[1].clone();
    gw.announce_tx(tx2.clone());
    let r = first_record(&node, NodeEventKind::TxReceived).expect("tx reached the emulated node");
    assert_eq!(r.id, tx2.compute_txid().to_string());

    let sent: Vec<NodeEventKind> = node
        .records()
        .iter()
        .map(|r| r.event)
        .filter(|e| matches!(e, NodeEventKind::TxSent | NodeEventKind::BlockSent))
        .collect();
    assert_eq!(
        sent,
        [
            NodeEventKind::TxSent,
            NodeEventKind::BlockSent,
            NodeEventKind::BlockSent
        ]
    );
    gw.shutdown();
    node.shutdown();
}
