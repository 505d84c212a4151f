//! An emulated Bitcoin node for the testbed: the P2P peer a gateway connects to.
//!
//! It plays the node's side (inbound: the gateway opens the connection and sends `version`
//! first, as `gateway/src/node/driver.rs` does), independently of the gateway's code: its own
//! handshake (version, wtxidrelay, sendaddrv2, verack; sendheaders after), pings answered,
//! `inv`/`headers`/`cmpctblock` announcements fetched with `getdata`, and `getdata` served from
//! what it announced. Messages are the `bitcoin` crate's; framing is [`StreamDecoder`].
//!
//! A replay feeds it ([`EmuNode::send_tx`], [`EmuNode::send_block`], or [`EmuNode::feed`] with
//! a [`crate::trace::Event`]); it records, as [`NodeRecord`]s with unix-nanosecond times, what it
//! handed its gateway (`tx_sent`, `block_sent`) and what reached it from the network
//! (`tx_received`, `block_received`: when the message's last byte was read). The records are
//! [`crate::report`]'s input.
//!
//! [`EmuPeer`] is the sans-IO state machine; [`EmuNode`] is the thin driver: a listening socket
//! and one thread serving one connection at a time (a reconnecting gateway replaces the old
//! connection).

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bitcoin::consensus::encode::serialize;
use bitcoin::p2p::address::Address;
use bitcoin::p2p::message::{NetworkMessage, RawNetworkMessage};
use bitcoin::p2p::message_blockdata::Inventory;
use bitcoin::p2p::message_network::VersionMessage;
use bitcoin::p2p::{Magic, ServiceFlags};
use bitcoin::{Block, BlockHash, Network, Transaction, Txid, Wtxid};
use photon_ops::threads::{nothing_read, StopThreads};

use crate::replay::p2p::{Frame, StreamDecoder};
use crate::report::{NodeEventKind, NodeRecord};
use crate::trace::Event;

/// The protocol version the emulated node speaks (Bitcoin Core 0.21+: wtxid relay).
pub const PROTOCOL_VERSION: u32 = 70016;

/// How a block is handed to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlockDelivery {
    /// The whole block, unsolicited (what a node does for a block it mined, to a peer that asked
    /// for high-bandwidth compact blocks it would send `cmpctblock`; a whole block is the
    /// simplest for the gateway to take).
    #[default]
    Unsolicited,
    /// `headers` with its header; the gateway asks for it with `getdata`.
    Headers,
    /// `inv` of its hash; the gateway asks for it with `getdata`.
    Inv,
}

/// Settings of an emulated node.
#[derive(Debug, Clone)]
pub struct EmuNodeConfig {
    /// Its name in the records (e.g. `node3`).
    pub name: String,
    pub network: Network,
    /// Where it listens for its gateway.
    pub listen: SocketAddr,
    pub start_height: i32,
    pub user_agent: String,
}

impl EmuNodeConfig {
    /// Mainnet (the blocks in `data/bitcoin` pass the gateway's proof-of-work check there).
    pub fn new(name: &str, listen: SocketAddr) -> Self {
        EmuNodeConfig {
            name: name.to_string(),
            network: Network::Bitcoin,
            listen,
            start_height: 0,
            user_agent: "/photon-emunode:0.1/".to_string(),
        }
    }
}

pub use photon_ops::stages::unix_ns;

/// Counters of the emulated node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmuStats {
    pub connections: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    /// Messages of another network's magic, or that the decoder dropped.
    pub ignored: u64,
    pub getdata_not_found: u64,
}

/// The sans-IO node side of one connection. Feed it with [`EmuPeer::handle_message`] and the
/// calls; take what to write with [`EmuPeer::take_outgoing`].
#[derive(Debug)]
pub struct EmuPeer {
    name: String,
    magic: Magic,
    start_height: i32,
    user_agent: String,
    nonce: u64,
    their_version: Option<u32>,
    they_wtxid: bool,
    handshaken: bool,
    txs: HashMap<Txid, Arc<Transaction>>,
    wtxids: HashMap<Wtxid, Txid>,
    blocks: HashMap<BlockHash, Arc<Block>>,
    seen_txs: HashSet<Txid>,
    seen_blocks: HashSet<BlockHash>,
    out: Vec<NetworkMessage>,
    records: Vec<NodeRecord>,
    pub stats: EmuStats,
}

impl EmuPeer {
    pub fn new(config: &EmuNodeConfig, nonce: u64) -> Self {
        EmuPeer {
            name: config.name.clone(),
            magic: config.network.magic(),
            start_height: config.start_height,
            user_agent: config.user_agent.clone(),
            nonce,
            their_version: None,
            they_wtxid: false,
            handshaken: false,
            txs: HashMap::new(),
            wtxids: HashMap::new(),
            blocks: HashMap::new(),
            seen_txs: HashSet::new(),
            seen_blocks: HashSet::new(),
            out: Vec::new(),
            records: Vec::new(),
            stats: EmuStats::default(),
        }
    }

    /// A new connection: the handshake starts over; what was announced stays servable.
    pub fn reset_connection(&mut self) {
        self.their_version = None;
        self.they_wtxid = false;
        self.handshaken = false;
        self.out.clear();
    }

    pub fn is_handshaken(&self) -> bool {
        self.handshaken
    }

    pub fn magic(&self) -> Magic {
        self.magic
    }

    /// Messages to write, in order.
    pub fn take_outgoing(&mut self) -> Vec<NetworkMessage> {
        self.stats.messages_out += self.out.len() as u64;
        std::mem::take(&mut self.out)
    }

    /// Records since the last call.
    pub fn take_records(&mut self) -> Vec<NodeRecord> {
        std::mem::take(&mut self.records)
    }

    fn record(&mut self, t_ns: u64, event: NodeEventKind, id: String, bytes: usize) {
        self.records.push(NodeRecord {
            t_ns,
            node: self.name.clone(),
            event,
            id,
            bytes: bytes as u64,
        });
    }

    /// Announces a transaction (inv by wtxid where the gateway asked for wtxid relay); served on
    /// `getdata`. `now_ns` is recorded as `tx_sent`.
    pub fn send_tx(&mut self, tx: Arc<Transaction>, now_ns: u64) {
        let txid = tx.compute_txid();
        let wtxid = tx.compute_wtxid();
        self.record(
            now_ns,
            NodeEventKind::TxSent,
            txid.to_string(),
            tx.total_size(),
        );
        self.seen_txs.insert(txid);
        self.wtxids.insert(wtxid, txid);
        self.txs.insert(txid, tx);
        let inv = if self.they_wtxid {
            Inventory::WTx(wtxid)
        } else {
            Inventory::Transaction(txid)
        };
        self.out.push(NetworkMessage::Inv(vec![inv]));
    }

    /// Hands over a block as `delivery` says. `now_ns` is recorded as `block_sent`.
    pub fn send_block(&mut self, block: Arc<Block>, delivery: BlockDelivery, now_ns: u64) {
        let hash = block.block_hash();
        self.record(
            now_ns,
            NodeEventKind::BlockSent,
            hash.to_string(),
            block.total_size(),
        );
        self.seen_blocks.insert(hash);
        let msg = match delivery {
            BlockDelivery::Unsolicited => NetworkMessage::Block((*block).clone()),
            BlockDelivery::Headers => NetworkMessage::Headers(vec![block.header]),
            BlockDelivery::Inv => NetworkMessage::Inv(vec![Inventory::Block(hash)]),
        };
        self.blocks.insert(hash, block);
        self.out.push(msg);
    }

    /// A message from the gateway, whose last byte was read at `now_ns`.
    pub fn handle_message(&mut self, msg: NetworkMessage, now_ns: u64) {
        self.stats.messages_in += 1;
        match msg {
            NetworkMessage::Version(v) => {
                if self.their_version.is_some() {
                    return;
                }
                self.their_version = Some(v.version);
                self.out
                    .push(NetworkMessage::Version(self.version_message()));
                if v.version >= 70016 {
                    self.out.push(NetworkMessage::WtxidRelay);
                }
                self.out.push(NetworkMessage::SendAddrV2);
                self.out.push(NetworkMessage::Verack);
            }
            NetworkMessage::Verack if self.their_version.is_some() && !self.handshaken => {
                self.handshaken = true;
                self.out.push(NetworkMessage::SendHeaders);
            }
            NetworkMessage::WtxidRelay => self.they_wtxid = true,
            NetworkMessage::Ping(n) => self.out.push(NetworkMessage::Pong(n)),
            NetworkMessage::Inv(items) => {
                let want: Vec<Inventory> = items
                    .into_iter()
                    .filter_map(|i| match i {
                        Inventory::WTx(w) if !self.wtxids.contains_key(&w) => Some(i),
                        Inventory::Transaction(t) | Inventory::WitnessTransaction(t)
                            if !self.seen_txs.contains(&t) =>
                        {
                            Some(Inventory::WitnessTransaction(t))
                        }
                        Inventory::Block(h)
                        | Inventory::WitnessBlock(h)
                        | Inventory::CompactBlock(h)
                            if !self.seen_blocks.contains(&h) =>
                        {
                            Some(Inventory::WitnessBlock(h))
                        }
                        _ => None,
                    })
                    .collect();
                if !want.is_empty() {
                    self.out.push(NetworkMessage::GetData(want));
                }
            }
            NetworkMessage::Headers(headers) => {
                let want: Vec<Inventory> = headers
                    .iter()
                    .map(|h| h.block_hash())
                    .filter(|h| !self.seen_blocks.contains(h))
                    .map(Inventory::WitnessBlock)
                    .collect();
                if !want.is_empty() {
                    self.out.push(NetworkMessage::GetData(want));
                }
            }
            NetworkMessage::CmpctBlock(cb) => {
                // No mempool reconstruction here: fetch the whole block.
                let h = cb.compact_block.header.block_hash();
                if !self.seen_blocks.contains(&h) {
                    self.out
                        .push(NetworkMessage::GetData(vec![Inventory::WitnessBlock(h)]));
                }
            }
            NetworkMessage::Tx(tx) => {
                let txid = tx.compute_txid();
                if self.seen_txs.insert(txid) {
                    self.wtxids.insert(tx.compute_wtxid(), txid);
                    self.record(
                        now_ns,
                        NodeEventKind::TxReceived,
                        txid.to_string(),
                        tx.total_size(),
                    );
                }
            }
            NetworkMessage::Block(block) => {
                let hash = block.block_hash();
                if self.seen_blocks.insert(hash) {
                    self.record(
                        now_ns,
                        NodeEventKind::BlockReceived,
                        hash.to_string(),
                        block.total_size(),
                    );
                }
            }
            NetworkMessage::GetData(items) => self.serve(items),
            _ => {}
        }
    }

    fn serve(&mut self, items: Vec<Inventory>) {
        let mut not_found = Vec::new();
        for item in items {
            let msg = match item {
                Inventory::WTx(w) => self
                    .wtxids
                    .get(&w)
                    .and_then(|t| self.txs.get(t))
                    .map(|tx| NetworkMessage::Tx((**tx).clone())),
                Inventory::WitnessTransaction(t) => self
                    .txs
                    .get(&t)
                    .map(|tx| NetworkMessage::Tx((**tx).clone())),
                Inventory::Transaction(t) => self.txs.get(&t).map(|tx| {
                    let mut tx = (**tx).clone();
                    tx.input.iter_mut().for_each(|i| i.witness.clear());
                    NetworkMessage::Tx(tx)
                }),
                Inventory::Block(h) | Inventory::WitnessBlock(h) => self
                    .blocks
                    .get(&h)
                    .map(|b| NetworkMessage::Block((**b).clone())),
                _ => None,
            };
            match msg {
                Some(m) => self.out.push(m),
                None => not_found.push(item),
            }
        }
        if !not_found.is_empty() {
            self.stats.getdata_not_found += not_found.len() as u64;
            self.out.push(NetworkMessage::NotFound(not_found));
        }
    }

    fn version_message(&self) -> VersionMessage {
        let unspecified = Address {
            services: ServiceFlags::NONE,
            address: [0; 8],
            port: 0,
        };
        VersionMessage {
            version: PROTOCOL_VERSION,
            services: ServiceFlags::NETWORK | ServiceFlags::WITNESS,
            timestamp: (unix_ns() / 1_000_000_000) as i64,
            receiver: unspecified.clone(),
            sender: unspecified,
            nonce: self.nonce,
            user_agent: self.user_agent.clone(),
            start_height: self.start_height,
            relay: true,
        }
    }
}

enum Command {
    Tx(Arc<Transaction>),
    Block(Arc<Block>, BlockDelivery),
}

/// The driver: listens for its gateway and runs an [`EmuPeer`] on a thread.
pub struct EmuNode {
    thread: StopThreads,
    name: String,
    local_addr: SocketAddr,
    commands: Sender<Command>,
    records: Arc<Mutex<Vec<NodeRecord>>>,
    handshaken: Arc<AtomicBool>,
}

/// How long the thread waits in one read (how soon it takes calls and notices stop).
const POLL: Duration = Duration::from_millis(2);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

impl EmuNode {
    /// Binds `config.listen` and starts serving.
    pub fn listen(config: EmuNodeConfig) -> io::Result<EmuNode> {
        let listener = TcpListener::bind(config.listen)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let (tx, rx) = mpsc::channel();
        let records = Arc::new(Mutex::new(Vec::new()));
        let handshaken = Arc::new(AtomicBool::new(false));
        let mut thread = StopThreads::new();
        let nonce = unix_ns() ^ u64::from(local_addr.port()).rotate_left(48);
        let looper = Loop {
            listener,
            peer: EmuPeer::new(&config, nonce),
            commands: rx,
            records: records.clone(),
            handshaken: handshaken.clone(),
            stop: thread.flag(),
        };
        thread.spawn(format!("emunode-{}", config.name), move || looper.run())?;
        Ok(EmuNode {
            thread,
            name: config.name,
            local_addr,
            commands: tx,
            records,
            handshaken,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the gateway connects.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether a gateway is connected with the handshake complete.
    pub fn is_handshaken(&self) -> bool {
        self.handshaken.load(Ordering::Relaxed)
    }

    /// Waits up to `timeout` for a completed handshake.
    pub fn wait_handshake(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.is_handshaken() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.is_handshaken()
    }

    /// Announces a transaction to the gateway (see [`EmuPeer::send_tx`]).
    pub fn send_tx(&self, tx: Arc<Transaction>) {
        let _ = self.commands.send(Command::Tx(tx));
    }

    /// Hands a block to the gateway (see [`EmuPeer::send_block`]).
    pub fn send_block(&self, block: Arc<Block>, delivery: BlockDelivery) {
        let _ = self.commands.send(Command::Block(block, delivery));
    }

    /// Plays one replay event: a transaction is announced, a block handed over.
    pub fn feed(&self, event: &Event, delivery: BlockDelivery) {
        match event {
            Event::Tx { tx, .. } => self.send_tx(tx.clone()),
            Event::Block { block, .. } => self.send_block(block.clone(), delivery),
        }
    }

    /// Everything recorded so far.
    pub fn records(&self) -> Vec<NodeRecord> {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits up to `timeout` until a record matches `pred`.
    pub fn wait_record(
        &self,
        timeout: Duration,
        pred: impl Fn(&NodeRecord) -> bool,
    ) -> Option<NodeRecord> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(r) = self.records().into_iter().find(|r| pred(r)) {
                return Some(r);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Writes the records as JSON lines (the report's input).
    pub fn write_records(&self, path: &Path) -> io::Result<()> {
        let mut f = io::BufWriter::new(std::fs::File::create(path)?);
        for r in self.records() {
            serde_json::to_writer(&mut f, &r)?;
            f.write_all(b"\n")?;
        }
        f.flush()
    }

    /// Stops the thread (closing the connection) and waits for it.
    pub fn shutdown(mut self) {
        self.thread.stop();
    }
}

struct Loop {
    listener: TcpListener,
    peer: EmuPeer,
    commands: Receiver<Command>,
    records: Arc<Mutex<Vec<NodeRecord>>>,
    handshaken: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Loop {
    fn run(mut self) {
        let mut conn: Option<(TcpStream, StreamDecoder)> = None;
        let mut buf = vec![0u8; 256 * 1024];
        while !self.stop.load(Ordering::Relaxed) {
            if let Ok((stream, _)) = self.listener.accept() {
                // A new connection (the gateway reconnected) replaces the old one.
                if stream.set_nonblocking(false).is_ok()
                    && stream.set_read_timeout(Some(POLL)).is_ok()
                    && stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_ok()
                {
                    let _ = stream.set_nodelay(true);
                    self.peer.reset_connection();
                    self.peer.stats.connections += 1;
                    conn = Some((stream, StreamDecoder::new(true)));
                }
            }
            while let Ok(cmd) = self.commands.try_recv() {
                let now = unix_ns();
                match cmd {
                    Command::Tx(tx) => self.peer.send_tx(tx, now),
                    Command::Block(b, d) => self.peer.send_block(b, d, now),
                }
            }
            let mut lost = false;
            match conn.as_mut() {
                Some((stream, decoder)) => {
                    if self.write(stream).is_err() {
                        lost = true;
                    } else {
                        match stream.read(&mut buf) {
                            Ok(0) => lost = true,
                            Ok(n) => {
                                let now = unix_ns();
                                let magic = self.peer.magic();
                                let peer = &mut self.peer;
                                decoder.push(&buf[..n], now, &mut |f: Frame<u64>| {
                                    if f.magic == magic {
                                        peer.handle_message(f.message, f.tag);
                                    } else {
                                        peer.stats.ignored += 1;
                                    }
                                });
                                lost = self.write(stream).is_err();
                            }
                            Err(e) if nothing_read(&e) => {}
                            Err(_) => lost = true,
                        }
                    }
                }
                None => {
                    // Calls made before the gateway connects are queued by the peer; keep them.
                    std::thread::sleep(POLL);
                }
            }
            if lost {
                conn = None;
                self.peer.reset_connection();
            }
            self.handshaken.store(
                conn.is_some() && self.peer.is_handshaken(),
                Ordering::Relaxed,
            );
            self.publish();
        }
        self.publish();
    }

    fn write(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        if self.peer.their_version.is_none() {
            return Ok(()); // nothing may go out before the gateway's version
        }
        let magic = self.peer.magic();
        let msgs = self.peer.take_outgoing();
        if msgs.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        for m in msgs {
            bytes.extend(serialize(&RawNetworkMessage::new(magic, m)));
        }
        stream.write_all(&bytes)
    }

    fn publish(&mut self) {
        let new = self.peer.take_records();
        if !new.is_empty() {
            self.records
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(new);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> EmuNodeConfig {
        EmuNodeConfig::new("n0", "127.0.0.1:0".parse().unwrap())
    }

    fn gateway_version(version: u32) -> NetworkMessage {
        let a = Address {
            services: ServiceFlags::NONE,
            address: [0; 8],
            port: 0,
        };
        NetworkMessage::Version(VersionMessage {
            version,
            services: ServiceFlags::WITNESS,
            timestamp: 0,
            receiver: a.clone(),
            sender: a,
            nonce: 1,
            user_agent: "/test/".into(),
            start_height: 0,
            relay: true,
        })
    }

    fn block() -> Block {
        let bytes = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/bitcoin/mainnet/227836.raw"),
        )
        .unwrap();
        bitcoin::consensus::encode::deserialize(&bytes).unwrap()
    }

    #[test]
    fn handshake_then_serves_what_it_announced() {
        let mut p = EmuPeer::new(&cfg(), 9);
        p.handle_message(gateway_version(70016), 1);
        let out = p.take_outgoing();
        let cmds: Vec<&str> = out.iter().map(|m| m.cmd()).collect();
        assert_eq!(cmds, ["version", "wtxidrelay", "sendaddrv2", "verack"]);
        p.handle_message(NetworkMessage::WtxidRelay, 2);
        p.handle_message(NetworkMessage::Verack, 3);
        assert!(p.is_handshaken());
        assert_eq!(
            p.take_outgoing()
                .iter()
                .map(|m| m.cmd())
                .collect::<Vec<_>>(),
            ["sendheaders"]
        );

        let b = Arc::new(block());
        let tx = Arc::new(b.txdata[1].clone());
        p.send_tx(tx.clone(), 10);
        let out = p.take_outgoing();
        assert_eq!(
            out,
            vec![NetworkMessage::Inv(vec![Inventory::WTx(
                tx.compute_wtxid()
            )])]
        );
        p.handle_message(
            NetworkMessage::GetData(vec![Inventory::WTx(tx.compute_wtxid())]),
            11,
        );
        assert_eq!(p.take_outgoing(), vec![NetworkMessage::Tx((*tx).clone())]);

        p.send_block(b.clone(), BlockDelivery::Headers, 20);
        assert_eq!(
            p.take_outgoing(),
            vec![NetworkMessage::Headers(vec![b.header])]
        );
        p.handle_message(
            NetworkMessage::GetData(vec![
                Inventory::WitnessBlock(b.block_hash()),
                Inventory::WitnessBlock(bitcoin::hashes::Hash::all_zeros()),
            ]),
            21,
        );
        let out = p.take_outgoing();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], NetworkMessage::Block((*b).clone()));
        assert_eq!(out[1].cmd(), "notfound");
        let kinds: Vec<NodeEventKind> = p.take_records().iter().map(|r| r.event).collect();
        assert_eq!(kinds, [NodeEventKind::TxSent, NodeEventKind::BlockSent]);
    }

    #[test]
    fn fetches_announcements_and_records_arrivals_once() {
        let mut p = EmuPeer::new(&cfg(), 9);
        p.handle_message(gateway_version(70016), 1);
        p.handle_message(NetworkMessage::Verack, 2);
        p.take_outgoing();
        let b = block();
        p.handle_message(NetworkMessage::Headers(vec![b.header]), 5);
        assert_eq!(
            p.take_outgoing(),
            vec![NetworkMessage::GetData(vec![Inventory::WitnessBlock(
                b.block_hash()
            )])]
        );
        p.handle_message(NetworkMessage::Block(b.clone()), 7);
        p.handle_message(NetworkMessage::Block(b.clone()), 8);
        p.handle_message(NetworkMessage::Tx(b.txdata[2].clone()), 9);
        let r = p.take_records();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].event, NodeEventKind::BlockReceived);
        assert_eq!(r[0].t_ns, 7);
        assert_eq!(r[0].id, b.block_hash().to_string());
        assert_eq!(r[1].event, NodeEventKind::TxReceived);
        // Known now: not fetched again.
        p.handle_message(
            NetworkMessage::Inv(vec![Inventory::Block(b.block_hash())]),
            10,
        );
        assert!(p.take_outgoing().is_empty());
        p.handle_message(NetworkMessage::Ping(5), 11);
        assert_eq!(p.take_outgoing(), vec![NetworkMessage::Pong(5)]);
    }
}
