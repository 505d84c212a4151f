//! NodePeer against a scripted node built from the `bitcoin` crate's messages, with fake time.

use std::time::Duration;

use bitcoin::consensus::deserialize;
use bitcoin::p2p::message::CommandString;
use bitcoin::p2p::message_blockdata::{GetBlocksMessage, GetHeadersMessage};
use bitcoin::p2p::message_network::VersionMessage;
use bitcoin::{Network, Transaction};

use super::*;
use crate::node::codec::decode_all;
use crate::node::PowError;

const NODE_ADDR: &str = "127.0.0.1:8333";

fn block(height: u32) -> Block {
    let path = format!(
        "{}/../data/bitcoin/mainnet/{height}.raw",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Bitcoin::decode_block(&bytes).unwrap()
}

fn node_version(version: u32) -> NetworkMessage {
    node_version_as(version, "/Satoshi:27.0.0/")
}

fn node_version_as(version: u32, user_agent: &str) -> NetworkMessage {
    let addr: SocketAddr = NODE_ADDR.parse().unwrap();
    NetworkMessage::Version(VersionMessage {
        version,
        services: ServiceFlags::NETWORK | ServiceFlags::WITNESS,
        timestamp: 1_700_000_000,
        receiver: Address::new(&addr, ServiceFlags::NONE),
        sender: Address::new(&addr, ServiceFlags::NONE),
        nonce: 42,
        user_agent: user_agent.into(),
        start_height: 850_000,
        relay: true,
    })
}

/// The node's end of the stream.
struct Sim {
    peer: NodePeer,
    now: Instant,
}

impl Sim {
    fn new(role: Role) -> Sim {
        let now = Instant::now();
        let peer = NodePeer::new(
            NodeConfig::new(Network::Bitcoin),
            role,
            NODE_ADDR.parse().unwrap(),
            now,
            1_700_000_000,
            7,
        );
        Sim { peer, now }
    }

    fn send(&mut self, msgs: Vec<NetworkMessage>) {
        let mut bytes = Vec::new();
        for m in msgs {
            encode_message(&mut bytes, Magic::BITCOIN, m);
        }
        self.peer.handle_bytes(&bytes, self.now).unwrap();
    }

    /// Everything the peer queued for the node.
    fn recv(&mut self) -> Vec<NetworkMessage> {
        let out = self.peer.poll_transmit().to_vec();
        self.peer.advance_transmit(out.len());
        decode_all(Magic::BITCOIN, &out).unwrap()
    }

    fn events(&mut self) -> Vec<NodeEvent> {
        std::iter::from_fn(|| self.peer.poll_event()).collect()
    }

    /// A completed outbound handshake with a 70016 node that sends wtxidrelay.
    fn handshaken() -> Sim {
        Self::handshaken_as("/Satoshi:27.0.0/")
    }

    /// As [`Sim::handshaken`], with a node of this user agent.
    fn handshaken_as(user_agent: &str) -> Sim {
        let mut sim = Sim::new(Role::Outbound);
        sim.recv();
        sim.send(vec![
            node_version_as(70016, user_agent),
            NetworkMessage::WtxidRelay,
            NetworkMessage::SendAddrV2,
            NetworkMessage::Verack,
        ]);
        sim.recv();
        sim.events();
        sim
    }
}

fn cmds(msgs: &[NetworkMessage]) -> Vec<&'static str> {
    msgs.iter().map(|m| m.cmd()).collect()
}

#[test]
fn outbound_handshake_as_core_expects() {
    let mut sim = Sim::new(Role::Outbound);
    let first = sim.recv();
    assert_eq!(cmds(&first), ["version"]);
    let NetworkMessage::Version(v) = &first[0] else {
        unreachable!()
    };
    assert_eq!(v.version, 70016);
    assert_eq!(v.user_agent, crate::node::USER_AGENT);
    assert!(v.user_agent.starts_with("/photon-gateway:"));
    assert!(v.services.has(ServiceFlags::WITNESS));
    assert!(v.relay);
    assert!(!sim.peer.is_handshaken());

    sim.send(vec![
        node_version(70016),
        NetworkMessage::WtxidRelay,
        NetworkMessage::SendAddrV2,
    ]);
    // wtxidrelay and sendaddrv2 strictly before our verack.
    assert_eq!(cmds(&sim.recv()), ["wtxidrelay", "sendaddrv2", "verack"]);
    assert!(sim.events().is_empty());

    sim.send(vec![NetworkMessage::Verack]);
    let after = sim.recv();
    assert_eq!(cmds(&after), ["sendheaders", "sendcmpct", "feefilter"]);
    assert_eq!(
        after[1],
        NetworkMessage::SendCmpct(SendCmpct {
            send_compact: false,
            version: 2
        })
    );
    let ev = sim.events();
    let [NodeEvent::Handshaken(info)] = &ev[..] else {
        panic!("{ev:?}")
    };
    assert!(info.wtxid_relay && info.addrv2);
    assert_eq!(info.user_agent, "/Satoshi:27.0.0/");
    assert_eq!(info.start_height, 850_000);
    assert!(sim.peer.is_handshaken());
}

#[test]
fn inbound_waits_for_version() {
    let mut sim = Sim::new(Role::Inbound);
    assert!(sim.recv().is_empty());
    sim.send(vec![node_version(70016)]);
    assert_eq!(
        cmds(&sim.recv()),
        ["version", "wtxidrelay", "sendaddrv2", "verack"]
    );
}

#[test]
fn old_peer_gets_no_wtxidrelay_and_txid_announcements() {
    let mut sim = Sim::new(Role::Outbound);
    sim.recv();
    sim.send(vec![node_version(70015), NetworkMessage::Verack]);
    assert_eq!(
        cmds(&sim.recv()),
        [
            "sendaddrv2",
            "verack",
            "sendheaders",
            "sendcmpct",
            "feefilter"
        ]
    );
    let tx = block(403617).txdata[1].clone();
    assert_eq!(sim.peer.announce_tx(tx.clone()), Ok(true));
    assert_eq!(
        sim.recv(),
        vec![NetworkMessage::Inv(vec![Inventory::Transaction(
            tx.compute_txid()
        )])]
    );
}

#[test]
fn too_old_and_self_connection_are_fatal() {
    let mut sim = Sim::new(Role::Outbound);
    let mut bytes = Vec::new();
    encode_message(&mut bytes, Magic::BITCOIN, node_version(70001));
    let e = sim.peer.handle_bytes(&bytes, sim.now).unwrap_err();
    assert!(matches!(e, NodeError::VersionTooOld { version: 70001, .. }));
    assert!(e.is_fatal());

    let mut sim = Sim::new(Role::Outbound);
    let NetworkMessage::Version(mut ours) = sim.recv().remove(0) else {
        unreachable!()
    };
    ours.version = 70016;
    let mut bytes = Vec::new();
    encode_message(&mut bytes, Magic::BITCOIN, NetworkMessage::Version(ours));
    assert_eq!(
        sim.peer.handle_bytes(&bytes, sim.now),
        Err(NodeError::SelfConnection)
    );
}

#[test]
fn unknown_and_early_messages_are_tolerated() {
    let mut sim = Sim::new(Role::Outbound);
    sim.recv();
    sim.send(vec![
        NetworkMessage::Ping(1), // before version: ignored
        NetworkMessage::Unknown {
            command: CommandString::try_from_static("sendtxrcncl").unwrap(),
            payload: vec![0; 12],
        },
        node_version(70016),
        NetworkMessage::Verack,
        NetworkMessage::WtxidRelay, // after verack: ignored
        NetworkMessage::Addr(vec![]),
    ]);
    let out = sim.recv();
    assert!(!out.iter().any(|m| m.cmd() == "pong"));
    let s = sim.peer.stats();
    assert_eq!(s.unknown_messages, 1);
    assert_eq!(s.ignored_messages, 3);
    assert!(!sim.peer.peer_info().unwrap().wtxid_relay);
}

#[test]
fn ping_pong_and_timers() {
    let mut sim = Sim::handshaken();
    sim.send(vec![NetworkMessage::Ping(99)]);
    assert_eq!(sim.recv(), vec![NetworkMessage::Pong(99)]);

    // Our own ping after ping_interval; its pong gives the round trip.
    let t0 = sim.now;
    assert_eq!(sim.peer.poll_timeout(), t0 + Duration::from_secs(120));
    sim.now = t0 + Duration::from_secs(120);
    sim.peer.handle_timeout(sim.now).unwrap();
    let out = sim.recv();
    let [NetworkMessage::Ping(nonce)] = out[..] else {
        panic!("{out:?}")
    };
    sim.now += Duration::from_millis(3);
    sim.send(vec![NetworkMessage::Pong(nonce)]);
    assert_eq!(
        sim.peer.stats().last_ping_rtt,
        Some(Duration::from_millis(3))
    );

    // Silence for idle_timeout kills the connection.
    let later = sim.now + Duration::from_secs(20 * 60);
    assert!(matches!(
        sim.peer.handle_timeout(later),
        Err(NodeError::Idle(_))
    ));
}

#[test]
fn handshake_timeout() {
    let mut sim = Sim::new(Role::Outbound);
    let deadline = sim.peer.poll_timeout();
    assert_eq!(deadline, sim.now + Duration::from_secs(60));
    sim.peer
        .handle_timeout(deadline - Duration::from_millis(1))
        .unwrap();
    assert_eq!(
        sim.peer.handle_timeout(deadline),
        Err(NodeError::HandshakeTimeout(Duration::from_secs(60)))
    );
}

#[test]
fn tx_from_node_inv_getdata_tx() {
    let mut sim = Sim::handshaken();
    let tx = block(403617).txdata[5].clone();
    let wtxid = tx.compute_wtxid();
    sim.send(vec![NetworkMessage::Inv(vec![Inventory::WTx(wtxid)])]);
    assert_eq!(
        sim.recv(),
        vec![NetworkMessage::GetData(vec![Inventory::WTx(wtxid)])]
    );
    // A second announcement while in flight asks nothing.
    sim.send(vec![NetworkMessage::Inv(vec![Inventory::WTx(wtxid)])]);
    assert!(sim.recv().is_empty());
    sim.send(vec![NetworkMessage::Tx(tx.clone())]);
    assert_eq!(
        sim.events(),
        vec![NodeEvent::TxReceived {
            tx: tx.clone(),
            received_at: sim.now
        }]
    );
    sim.send(vec![NetworkMessage::Tx(tx.clone())]);
    assert!(sim.events().is_empty());
    assert_eq!(sim.peer.stats().duplicate_txs, 1);
    // The node has it: announcing it back is a no-op.
    assert_eq!(sim.peer.announce_tx(tx), Ok(false));
}

#[test]
fn tx_to_node_announced_by_wtxid_and_served() {
    let mut sim = Sim::handshaken();
    let b = block(702861);
    // A segwit transaction: its wtxid differs from its txid.
    let tx: Transaction = b
        .txdata
        .iter()
        .skip(1)
        .find(|t| t.compute_wtxid().to_byte_array() != t.compute_txid().to_byte_array())
        .unwrap()
        .clone();
    let other = b.txdata[1..]
        .iter()
        .find(|t| t.compute_txid() != tx.compute_txid())
        .unwrap()
        .clone();
    assert_eq!(sim.peer.announce_tx(tx.clone()), Ok(true));
    assert_eq!(sim.peer.announce_tx(other.clone()), Ok(true));
    assert_eq!(sim.peer.announce_tx(tx.clone()), Ok(false));
    // Batched into one inv.
    assert_eq!(
        sim.recv(),
        vec![NetworkMessage::Inv(vec![
            Inventory::WTx(tx.compute_wtxid()),
            Inventory::WTx(other.compute_wtxid())
        ])]
    );
    let unknown = Inventory::WTx(Wtxid::from_byte_array([7; 32]));
    sim.send(vec![NetworkMessage::GetData(vec![
        Inventory::WTx(tx.compute_wtxid()),
        unknown,
    ])]);
    assert_eq!(
        sim.recv(),
        vec![
            NetworkMessage::Tx(tx.clone()),
            NetworkMessage::NotFound(vec![unknown])
        ]
    );
    // By txid without witness flag: the witness is stripped.
    sim.send(vec![NetworkMessage::GetData(vec![Inventory::Transaction(
        tx.compute_txid(),
    )])]);
    let out = sim.recv();
    let [NetworkMessage::Tx(stripped)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(stripped.compute_txid(), tx.compute_txid());
    assert!(stripped.input.iter().all(|i| i.witness.is_empty()));
    assert_eq!(sim.peer.stats().getdata_served, 2);
    assert_eq!(sim.peer.stats().getdata_not_found, 1);
    // The node announcing it back to us does not make us fetch it.
    sim.send(vec![NetworkMessage::Inv(vec![Inventory::WTx(
        tx.compute_wtxid(),
    )])]);
    assert!(sim.recv().is_empty());
}

#[test]
fn calls_before_handshake_keep_blocks_and_refuse_txs() {
    let mut sim = Sim::new(Role::Outbound);
    sim.recv();
    let b = block(227836);
    assert_eq!(
        sim.peer.announce_tx(b.txdata[1].clone()),
        Err(NodeError::NotHandshaken)
    );
    assert!(!NodeError::NotHandshaken.is_fatal());
    // A block before the handshake is kept, and the tip announced right after it.
    sim.peer.send_block(b.clone()).unwrap();
    assert_eq!(sim.peer.stats().blocks_deferred, 1);
    assert!(sim.recv().is_empty());
    sim.send(vec![node_version(70016), NetworkMessage::Verack]);
    let out = sim.recv();
    assert_eq!(
        out.last(),
        Some(&NetworkMessage::Inv(vec![Inventory::Block(b.block_hash())]))
    );
    sim.send(vec![NetworkMessage::GetData(vec![
        Inventory::WitnessBlock(b.block_hash()),
    ])]);
    assert_eq!(sim.recv(), vec![NetworkMessage::Block(b.clone())]);
    let ev = sim.events();
    assert!(ev.contains(&NodeEvent::BlockSent {
        hash: b.block_hash(),
        message: BlockMessage::Block
    }));
}

#[test]
fn blocks_are_kept_across_connections() {
    // A block delivered on one connection is served on the next (the driver carries the
    // store): a node that reconnects or restarts asks for it.
    let b = block(227836);
    let mut first = Sim::handshaken();
    first.peer.announce_block(b.clone()).unwrap();
    let store = first.peer.take_blocks();
    let mut sim = Sim::new(Role::Outbound);
    sim.peer = NodePeer::new(
        NodeConfig::new(Network::Bitcoin),
        Role::Outbound,
        NODE_ADDR.parse().unwrap(),
        sim.now,
        1_700_000_000,
        8,
    )
    .with_blocks(store);
    sim.recv();
    sim.send(vec![node_version(70016), NetworkMessage::Verack]);
    assert_eq!(
        sim.recv().last(),
        Some(&NetworkMessage::Inv(vec![Inventory::Block(b.block_hash())]))
    );
    sim.send(vec![NetworkMessage::GetData(vec![
        Inventory::WitnessBlock(b.block_hash()),
    ])]);
    assert_eq!(sim.recv(), vec![NetworkMessage::Block(b)]);
}

#[test]
fn push_to_a_node_that_drops_unrequested_blocks_announces() {
    // bcoin disconnects a peer that sends a block it did not ask for.
    let b = block(702861);
    let mut sim = Sim::handshaken_as("/bcoin:1.0.2/");
    sim.peer.send_block(b.clone()).unwrap();
    assert_eq!(
        sim.recv(),
        vec![NetworkMessage::Inv(vec![Inventory::Block(b.block_hash())])]
    );
    let ev = sim.events();
    assert!(
        matches!(
            ev[..],
            [NodeEvent::DeliveryFallback {
                mode: "push",
                used: "announce",
                ..
            }]
        ),
        "{ev:?}"
    );
    // Said once; counted every time.
    let c = block(227836);
    sim.peer.send_block(c.clone()).unwrap();
    assert_eq!(
        sim.recv(),
        vec![NetworkMessage::Inv(vec![Inventory::Block(c.block_hash())])]
    );
    assert!(sim.events().is_empty());
    assert_eq!(sim.peer.stats().delivery_fallbacks, 2);
    assert_eq!(sim.peer.stats().blocks_sent, 0);
    // The node asks (as bcoin does, for a compact block) and gets it.
    sim.send(vec![NetworkMessage::GetData(vec![
        Inventory::CompactBlock(b.block_hash()),
    ])]);
    let out = sim.recv();
    assert!(
        matches!(&out[..], [NetworkMessage::CmpctBlock(cb)] if cb.compact_block.header == b.header),
        "{:?}",
        cmds(&out)
    );
    assert_eq!(
        sim.events(),
        vec![NodeEvent::BlockSent {
            hash: b.block_hash(),
            message: BlockMessage::Compact
        }]
    );
}

#[test]
fn getblocks_answered_along_the_stored_chain() {
    let parent = block(227835);
    let b = block(227836);
    let mut sim = Sim::handshaken();
    sim.peer.announce_block(parent.clone()).unwrap();
    sim.peer.announce_block(b.clone()).unwrap();
    sim.recv();
    // A node that has the parent's parent: both, in order.
    sim.send(vec![NetworkMessage::GetBlocks(GetBlocksMessage {
        version: 70016,
        locator_hashes: vec![parent.header.prev_blockhash],
        stop_hash: BlockHash::all_zeros(),
    })]);
    assert_eq!(
        sim.recv(),
        vec![NetworkMessage::Inv(vec![
            Inventory::Block(parent.block_hash()),
            Inventory::Block(b.block_hash())
        ])]
    );
    // A node that has the parent: the block; one that has both: no answer.
    sim.send(vec![NetworkMessage::GetBlocks(GetBlocksMessage {
        version: 70016,
        locator_hashes: vec![parent.block_hash()],
        stop_hash: BlockHash::all_zeros(),
    })]);
    assert_eq!(
        sim.recv(),
        vec![NetworkMessage::Inv(vec![Inventory::Block(b.block_hash())])]
    );
    sim.send(vec![NetworkMessage::GetBlocks(GetBlocksMessage {
        version: 70016,
        locator_hashes: vec![b.block_hash()],
        stop_hash: BlockHash::all_zeros(),
    })]);
    assert!(sim.recv().is_empty());
    assert_eq!(sim.peer.stats().getblocks_served, 3);
}

#[test]
fn block_from_node_after_inv_and_pow_check() {
    let mut sim = Sim::handshaken();
    let b = block(403617);
    let hash = b.block_hash();
    sim.send(vec![NetworkMessage::Inv(vec![Inventory::Block(hash)])]);
    assert_eq!(
        sim.recv(),
        vec![NetworkMessage::GetData(vec![Inventory::WitnessBlock(hash)])]
    );
    assert_eq!(
        sim.events(),
        vec![NodeEvent::BlockAnnounced {
            hash,
            announced_at: sim.now
        }]
    );
    sim.now += Duration::from_millis(5);
    sim.send(vec![NetworkMessage::Block(b.clone())]);
    let ev = sim.events();
    let [NodeEvent::BlockReceived {
        block: got,
        hash: h,
        received_at,
    }] = &ev[..]
    else {
        panic!("{ev:?}")
    };
    assert_eq!((got, *h, *received_at), (&b, hash, sim.now));
    assert_eq!(
        h.to_string(),
        "00000000000000000245be9dd046492886b4527c7fa3494f26a9a9d876ecea22"
    );
    // Again: a duplicate, not reported.
    sim.send(vec![NetworkMessage::Block(b)]);
    assert!(sim.events().is_empty());
    assert_eq!(sim.peer.stats().duplicate_blocks, 1);
    assert_eq!(sim.peer.stats().blocks_received, 1);
}

#[test]
fn junk_block_is_rejected_and_counted() {
    let mut sim = Sim::handshaken();
    let mut b = block(363703);
    b.header.nonce ^= 1; // one changed byte of a real header
    sim.send(vec![NetworkMessage::Block(b.clone())]);
    assert_eq!(
        sim.events(),
        vec![NodeEvent::BlockRejected {
            error: PowError::BadProofOfWork {
                hash: b.block_hash()
            }
        }]
    );
    assert_eq!(sim.peer.stats().pow_rejected, 1);
    assert_eq!(sim.peer.stats().blocks_received, 0);
}

#[test]
fn headers_announcement_checked_then_fetched() {
    let mut sim = Sim::handshaken();
    let good = block(367891).header;
    let mut bad = block(383616).header;
    bad.time += 1;
    sim.send(vec![NetworkMessage::Headers(vec![bad, good])]);
    assert_eq!(
        sim.recv(),
        vec![NetworkMessage::GetData(vec![Inventory::WitnessBlock(
            good.block_hash()
        )])]
    );
    let ev = sim.events();
    assert!(matches!(ev[0], NodeEvent::BlockRejected { .. }));
    assert!(matches!(ev[1], NodeEvent::BlockAnnounced { hash, .. } if hash == good.block_hash()));
    assert_eq!(sim.peer.stats().pow_rejected, 1);
}

#[test]
fn send_block_pushes_the_whole_block() {
    let mut sim = Sim::handshaken();
    let b = block(702861);
    sim.peer.send_block(b.clone()).unwrap();
    let out = sim.recv();
    assert_eq!(out, vec![NetworkMessage::Block(b.clone())]);
    // Announcing it back to us fetches nothing.
    sim.send(vec![NetworkMessage::Headers(vec![b.header])]);
    assert!(sim.recv().is_empty());
}

#[test]
fn announce_block_by_headers_or_inv_then_serve() {
    let b = block(227836);
    let parent = block(227835);
    assert_eq!(b.header.prev_blockhash, parent.block_hash());

    // Without sendheaders: inv.
    let mut sim = Sim::handshaken();
    sim.peer.announce_block(b.clone()).unwrap();
    assert_eq!(
        sim.recv(),
        vec![NetworkMessage::Inv(vec![Inventory::Block(b.block_hash())])]
    );

    // With sendheaders: headers; then getdata, getheaders.
    let mut sim = Sim::handshaken();
    sim.send(vec![NetworkMessage::SendHeaders]);
    sim.peer.announce_block(parent.clone()).unwrap();
    sim.peer.announce_block(b.clone()).unwrap();
    assert_eq!(
        sim.recv(),
        vec![
            NetworkMessage::Headers(vec![parent.header]),
            NetworkMessage::Headers(vec![b.header])
        ]
    );
    sim.send(vec![NetworkMessage::GetData(vec![
        Inventory::WitnessBlock(b.block_hash()),
    ])]);
    assert_eq!(sim.recv(), vec![NetworkMessage::Block(b.clone())]);
    sim.send(vec![NetworkMessage::GetHeaders(GetHeadersMessage {
        version: 70016,
        locator_hashes: vec![parent.header.prev_blockhash],
        stop_hash: BlockHash::all_zeros(),
    })]);
    assert_eq!(
        sim.recv(),
        vec![NetworkMessage::Headers(vec![parent.header, b.header])]
    );
}

#[test]
fn compact_blocks_only_where_asked() {
    let b = block(481815);
    let mut sim = Sim::handshaken();
    // Not asked for high-bandwidth compact blocks: announced instead, said once.
    sim.peer.send_cmpct_block(b.clone()).unwrap();
    assert_eq!(
        sim.recv(),
        vec![NetworkMessage::Inv(vec![Inventory::Block(b.block_hash())])]
    );
    assert!(matches!(
        sim.events()[..],
        [NodeEvent::DeliveryFallback {
            mode: "compact",
            ..
        }]
    ));
    assert_eq!(sim.peer.stats().cmpct_blocks_sent, 0);
    sim.send(vec![NetworkMessage::SendCmpct(SendCmpct {
        send_compact: true,
        version: 2,
    })]);
    sim.peer.send_cmpct_block(b.clone()).unwrap();
    let out = sim.recv();
    let [NetworkMessage::CmpctBlock(cb)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(cb.compact_block.header, b.header);
    assert_eq!(cb.compact_block.short_ids.len(), b.txdata.len() - 1);
    assert_eq!(cb.compact_block.prefilled_txs.len(), 1);
    // The node lacks two transactions: blocktxn serves them.
    let req = bitcoin::bip152::BlockTransactionsRequest {
        block_hash: b.block_hash(),
        indexes: vec![3, 1000],
    };
    sim.send(vec![NetworkMessage::GetBlockTxn(GetBlockTxn {
        txs_request: req,
    })]);
    let out = sim.recv();
    let [NetworkMessage::BlockTxn(bt)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(
        bt.transactions.transactions,
        vec![b.txdata[3].clone(), b.txdata[1000].clone()]
    );
}

#[test]
fn bad_checksum_counted_bad_magic_fatal() {
    let mut sim = Sim::handshaken();
    let mut bytes = Vec::new();
    encode_message(&mut bytes, Magic::BITCOIN, NetworkMessage::Ping(5));
    bytes[22] ^= 0xff;
    encode_message(&mut bytes, Magic::BITCOIN, NetworkMessage::Ping(6));
    sim.peer.handle_bytes(&bytes, sim.now).unwrap();
    assert_eq!(sim.recv(), vec![NetworkMessage::Pong(6)]);
    assert_eq!(sim.peer.stats().bad_checksum, 1);

    let mut bytes = Vec::new();
    encode_message(&mut bytes, Magic::TESTNET4, NetworkMessage::Ping(5));
    let e = sim.peer.handle_bytes(&bytes, sim.now).unwrap_err();
    assert!(matches!(e, NodeError::Frame(FrameError::BadMagic { .. })));
    assert!(e.is_fatal());
}

#[test]
fn a_block_split_into_small_reads() {
    let mut sim = Sim::handshaken();
    let b = block(556977);
    let mut bytes = Vec::new();
    encode_message(&mut bytes, Magic::BITCOIN, NetworkMessage::Block(b.clone()));
    for chunk in bytes.chunks(1460) {
        sim.peer.handle_bytes(chunk, sim.now).unwrap();
    }
    assert!(matches!(&sim.events()[..], [NodeEvent::BlockReceived { block, .. }] if *block == b));
    let _ = deserialize::<Block>(&bitcoin::consensus::serialize(&b)).unwrap();
}

proptest::proptest! {
    /// Fuzz-style: well-framed messages whose payloads are random bytes, under every command
    /// the peer handles, never panic and never close the connection (bad payloads are counted).
    #[test]
    fn random_payloads_never_panic(
        msgs in proptest::collection::vec(
            (0usize..16, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)),
            1..20,
        ),
    ) {
        const COMMANDS: [&str; 16] = [
            "version", "verack", "inv", "getdata", "headers", "block", "tx", "getheaders",
            "getblocktxn", "sendcmpct", "cmpctblock", "ping", "pong", "feefilter", "notfound",
            "wtxidrelay",
        ];
        let mut sim = Sim::handshaken();
        sim.peer.send_block(block(227836)).unwrap();
        for (c, payload) in msgs {
            let mut bytes = Vec::new();
            encode_message(&mut bytes, Magic::BITCOIN, NetworkMessage::Unknown {
                command: CommandString::try_from(COMMANDS[c]).unwrap(),
                payload,
            });
            proptest::prop_assert_eq!(sim.peer.handle_bytes(&bytes, sim.now), Ok(()));
            sim.recv();
            sim.events();
        }
    }
}
