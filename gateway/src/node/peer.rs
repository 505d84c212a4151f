//! [`NodePeer`]: the sans-IO state machine of one P2P connection to the node.
//!
//! Call order (as quinn's `Connection`): after any input ([`NodePeer::handle_bytes`],
//! [`NodePeer::handle_timeout`], or a queue call such as [`NodePeer::announce_tx`]), drain
//! [`NodePeer::poll_event`] and write [`NodePeer::poll_transmit`] to the socket (then
//! [`NodePeer::advance_transmit`] by what was written); wake up at [`NodePeer::poll_timeout`].
//! An `Err` from `handle_bytes`/`handle_timeout` means the connection must be closed.

use std::net::SocketAddr;
use std::time::Instant;

use bitcoin::bip152::{BlockTransactions, HeaderAndShortIds};
use bitcoin::hashes::Hash;
use bitcoin::p2p::address::Address;
use bitcoin::p2p::message::NetworkMessage;
use bitcoin::p2p::message_blockdata::{GetBlocksMessage, GetHeadersMessage, Inventory};
use bitcoin::p2p::message_compact_blocks::{BlockTxn, CmpctBlock, GetBlockTxn, SendCmpct};
use bitcoin::p2p::message_network::VersionMessage;
use bitcoin::p2p::{Magic, ServiceFlags};
use bitcoin::{Block, BlockHash, Target, Transaction, Txid, Wtxid};
use photon_protocol::chain::{Bitcoin, ChainAdapter};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::blocks::BlockStore;
use super::codec::{encode_message, FrameDecoder, FrameError};
use super::pow::{check_pow, pow_limit};
use super::{
    accepts_unsolicited_blocks, BlockMessage, NodeConfig, NodeError, NodeEvent, NodeStats,
    PeerInfo, MIN_PEER_VERSION, PROTOCOL_VERSION,
};
use photon_protocol::fifo::{FifoMap, FifoSet};

/// Which side opened the TCP connection. The opener sends `version` first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We connected to the node (the usual gateway set-up).
    Outbound,
    /// The node connected to us (`-connect`/`-addnode` pointing at the gateway).
    Inbound,
}

/// IDs remembered per connection (node-known transactions, seen transactions).
const KNOWN_TXS: usize = 200_000;
/// Requests in flight; announcements past this are dropped (counted).
const MAX_IN_FLIGHT_TXS: usize = 50_000;
const KNOWN_BLOCKS: usize = 4_096;
/// Headers requested from one `headers` message at most (Core announces up to 8).
const MAX_HEADERS_REQUESTED: usize = 16;
/// `inv`/`getdata`/`notfound` entries per message (Core's MAX_INV_SZ).
const MAX_INV_PER_MSG: usize = 50_000;
/// Headers per `headers` reply (Core's MAX_HEADERS_RESULTS).
const MAX_HEADERS_RESULTS: usize = 2_000;
/// Hashes per `inv` answering `getblocks` (Core's limit).
const MAX_GETBLOCKS_RESULTS: usize = 500;
/// Compact blocks version we speak (BIP 152 version 2: wtxid short IDs, segwit).
const CMPCT_VERSION: u64 = 2;

#[derive(Debug, Default)]
struct Handshake {
    their_version: Option<VersionMessage>,
    their_verack: bool,
    /// We sent wtxidrelay (their version >= 70016), and they did.
    we_sent_wtxidrelay: bool,
    they_sent_wtxidrelay: bool,
    they_sent_addrv2: bool,
    done: bool,
}

/// One connection to the node, as a state machine. See the module docs for the call order.
#[derive(Debug)]
pub struct NodePeer {
    config: NodeConfig,
    magic: Magic,
    role: Role,
    limit: Target,
    node_addr: SocketAddr,
    unix_time: i64,
    rng: ChaCha8Rng,
    our_nonce: u64,

    decoder: FrameDecoder,
    out: Vec<u8>,
    out_start: usize,
    events: std::collections::VecDeque<NodeEvent>,

    hs: Handshake,
    info: Option<PeerInfo>,
    /// The node sent `sendheaders`: announce blocks to it with `headers`.
    node_prefers_headers: bool,
    /// The node's `sendcmpct` for version 2, if any.
    node_cmpct: Option<SendCmpct>,
    node_fee_filter: i64,

    /// txids and wtxids the node has (it announced or sent them, or we announced them).
    node_knows_tx: FifoSet<[u8; 32]>,
    /// txids/wtxids requested from the node, not yet received.
    txs_in_flight: FifoSet<[u8; 32]>,
    /// wtxids received from the node (reported once).
    txs_seen: FifoSet<[u8; 32]>,
    /// Transactions we announced, kept to serve getdata: wtxid → tx.
    tx_cache: FifoMap<[u8; 32], Transaction>,
    /// txid → wtxid for `tx_cache` (getdata by txid from peers without wtxidrelay).
    tx_by_txid: std::collections::HashMap<[u8; 32], [u8; 32]>,
    pending_inv: Vec<Inventory>,

    node_knows_block: FifoSet<BlockHash>,
    blocks_in_flight: FifoSet<BlockHash>,
    blocks_seen: FifoSet<BlockHash>,
    /// Kept across connections: see [`NodePeer::with_blocks`].
    blocks: BlockStore,
    /// A block from the network came before the handshake: announce the tip after it.
    announce_after_handshake: bool,
    /// A delivery mode's fallback was reported on this connection.
    fallback_said: bool,

    started_at: Instant,
    last_recv: Instant,
    next_ping_at: Instant,
    ping_in_flight: Option<(u64, Instant)>,

    stats: NodeStats,
}

impl NodePeer {
    /// A new connection to the node at `node_addr`. An outbound peer queues its `version` at
    /// once. `unix_time` goes into `version` (seconds since 1970); `seed` seeds the nonces.
    pub fn new(
        config: NodeConfig,
        role: Role,
        node_addr: SocketAddr,
        now: Instant,
        unix_time: i64,
        seed: u64,
    ) -> Self {
        let magic = Magic::from(config.network);
        let limit = match config.max_target {
            Some(t) => t.min(pow_limit(config.network)),
            None => pow_limit(config.network),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let our_nonce = rng.next_u64();
        let tx_cache = FifoMap::weighted(KNOWN_TXS, config.tx_cache_bytes);
        let blocks = BlockStore::new(config.block_store_bytes);
        let mut peer = NodePeer {
            magic,
            role,
            limit,
            node_addr,
            unix_time,
            rng,
            our_nonce,
            decoder: FrameDecoder::new(magic),
            out: Vec::new(),
            out_start: 0,
            events: Default::default(),
            hs: Handshake::default(),
            info: None,
            node_prefers_headers: false,
            node_cmpct: None,
            node_fee_filter: 0,
            node_knows_tx: FifoSet::new(KNOWN_TXS),
            txs_in_flight: FifoSet::new(MAX_IN_FLIGHT_TXS),
            txs_seen: FifoSet::new(KNOWN_TXS),
            tx_cache,
            tx_by_txid: Default::default(),
            pending_inv: Vec::new(),
            node_knows_block: FifoSet::new(KNOWN_BLOCKS),
            blocks_in_flight: FifoSet::new(KNOWN_BLOCKS),
            blocks_seen: FifoSet::new(KNOWN_BLOCKS),
            blocks,
            announce_after_handshake: false,
            fallback_said: false,
            started_at: now,
            last_recv: now,
            next_ping_at: now + config.ping_interval,
            ping_in_flight: None,
            stats: NodeStats::default(),
            config,
        };
        if role == Role::Outbound {
            peer.send_version();
        }
        peer
    }

    // ----- input -------------------------------------------------------------------------

    /// Feed bytes read from the node's stream. Messages are handled as they complete; a
    /// message with a bad checksum or payload is dropped and counted. `Err` (always fatal):
    /// close the connection.
    pub fn handle_bytes(&mut self, bytes: &[u8], now: Instant) -> Result<(), NodeError> {
        self.stats.bytes_in += bytes.len() as u64;
        if !bytes.is_empty() {
            self.last_recv = now;
        }
        self.decoder.push(bytes);
        loop {
            match self.decoder.next_message() {
                Ok(Some(msg)) => {
                    self.stats.messages_in += 1;
                    self.handle_message(msg, now)?;
                }
                Ok(None) => return Ok(()),
                Err(FrameError::BadChecksum { .. }) => self.stats.bad_checksum += 1,
                Err(FrameError::BadPayload { .. }) => self.stats.bad_payload += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Timers: handshake deadline, pings, idle detection. Call at [`Self::poll_timeout`] (or
    /// any time). `Err`: close the connection.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), NodeError> {
        if !self.hs.done {
            if now.saturating_duration_since(self.started_at) >= self.config.handshake_timeout {
                return Err(NodeError::HandshakeTimeout(self.config.handshake_timeout));
            }
            return Ok(());
        }
        let idle = self.config.idle_timeout;
        if now.saturating_duration_since(self.last_recv) >= idle {
            return Err(NodeError::Idle(idle));
        }
        if let Some((_, sent)) = self.ping_in_flight {
            if now.saturating_duration_since(sent) >= idle {
                return Err(NodeError::Idle(idle));
            }
        } else if now >= self.next_ping_at {
            let nonce = self.rng.next_u64();
            if self.queue(NetworkMessage::Ping(nonce)).is_ok() {
                self.ping_in_flight = Some((nonce, now));
                self.stats.pings_sent += 1;
            }
            self.next_ping_at = now + self.config.ping_interval;
        }
        Ok(())
    }

    /// When [`Self::handle_timeout`] has something to do next.
    pub fn poll_timeout(&self) -> Instant {
        if !self.hs.done {
            return self.started_at + self.config.handshake_timeout;
        }
        let idle_at = self.last_recv + self.config.idle_timeout;
        match self.ping_in_flight {
            Some((_, sent)) => idle_at.min(sent + self.config.idle_timeout),
            None => idle_at.min(self.next_ping_at),
        }
    }

    // ----- output ------------------------------------------------------------------------

    /// The next event for the gateway.
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    /// Bytes to write to the node (empty if none). Flushes pending transaction announcements
    /// into one `inv` first.
    pub fn poll_transmit(&mut self) -> &[u8] {
        self.flush_inv();
        &self.out[self.out_start..]
    }

    /// `n` bytes of [`Self::poll_transmit`] were written to the socket.
    pub fn advance_transmit(&mut self, n: usize) {
        self.out_start = (self.out_start + n).min(self.out.len());
        if self.out_start == self.out.len() {
            self.out.clear();
            self.out_start = 0;
        }
    }

    // ----- state -------------------------------------------------------------------------

    /// True once version and verack went both ways.
    pub fn is_handshaken(&self) -> bool {
        self.hs.done
    }

    /// The node's version details, once handshaken.
    pub fn peer_info(&self) -> Option<&PeerInfo> {
        self.info.as_ref()
    }

    /// The node sent `sendheaders` (blocks are announced to it with `headers`).
    pub fn node_prefers_headers(&self) -> bool {
        self.node_prefers_headers
    }

    /// The node's compact-blocks request (version 2), if any; `send_compact` true means it
    /// wants new blocks pushed as `cmpctblock` (high-bandwidth mode).
    pub fn node_compact_blocks(&self) -> Option<SendCmpct> {
        self.node_cmpct
    }

    /// The node's `feefilter`, in sat per 1000 vbytes (0 if none).
    pub fn node_fee_filter(&self) -> i64 {
        self.node_fee_filter
    }

    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    // ----- the gateway's calls -----------------------------------------------------------

    /// Announce a transaction from the network to the node (by wtxid if wtxidrelay was
    /// negotiated, else by txid), and keep it to serve the node's `getdata`. Announcements are
    /// batched into one `inv` at the next [`Self::poll_transmit`]. Returns `Ok(false)` if the
    /// node already has it or it was already announced.
    pub fn announce_tx(&mut self, tx: Transaction) -> Result<bool, NodeError> {
        self.handshaken()?;
        let ids = Bitcoin::tx_ids(&tx);
        if self.node_knows_tx.contains(&ids.wtxid)
            || self.node_knows_tx.contains(&ids.txid)
            || self.tx_cache.contains(&ids.wtxid)
        {
            return Ok(false);
        }
        self.check_send_buffer()?;
        let size = tx.total_size();
        for (_, old) in self.tx_cache.insert_weighted(ids.wtxid, tx, size) {
            self.tx_by_txid.remove(&old.compute_txid().to_byte_array());
        }
        if self.tx_cache.contains(&ids.wtxid) {
            self.tx_by_txid.insert(ids.txid, ids.wtxid);
        }
        self.node_knows_tx.insert(ids.wtxid);
        self.node_knows_tx.insert(ids.txid);
        self.pending_inv.push(if self.wtxid_relay() {
            Inventory::WTx(Wtxid::from_byte_array(ids.wtxid))
        } else {
            Inventory::Transaction(Txid::from_byte_array(ids.txid))
        });
        self.stats.txs_announced += 1;
        if self.pending_inv.len() >= MAX_INV_PER_MSG {
            self.flush_inv();
        }
        Ok(true)
    }

    /// Push a whole block to the node, unsolicited (`block` message): the fastest way in, to a
    /// node known to process unrequested blocks that extend its chain (Bitcoin Core and its
    /// descendants, by user agent: see [`accepts_unsolicited_blocks`]). Any other node is sent
    /// an announcement instead ([`Self::announce_block`]; reported once per connection as
    /// [`NodeEvent::DeliveryFallback`]): bcoin, for one, drops a peer that sends a block it did
    /// not ask for. Before the handshake the block is kept and the tip announced after it.
    pub fn send_block(&mut self, block: Block) -> Result<(), NodeError> {
        if !self.hs.done {
            return self.defer_block(block);
        }
        if !self.info.as_ref().is_some_and(accepts_unsolicited_blocks) {
            self.say_fallback("push", "unsolicited blocks are not known to be accepted");
            return self.announce_block(block);
        }
        self.check_send_buffer()?;
        let hash = block.block_hash();
        // Serialized from the block itself, which then moves into the store (no copy of it).
        if let NetworkMessage::Block(b) = self.queue_unchecked(NetworkMessage::Block(block)) {
            self.blocks.insert(b, true);
        }
        self.node_knows_block.insert(hash);
        self.blocks_seen.insert(hash);
        self.stats.blocks_sent += 1;
        self.events.push_back(NodeEvent::BlockSent {
            hash,
            message: BlockMessage::Block,
        });
        Ok(())
    }

    /// Announce a block to the node: one `headers` if it sent `sendheaders`, else an `inv`;
    /// it then asks with `getdata` (served from the block store as `block` or `cmpctblock`,
    /// reported as [`NodeEvent::BlockSent`]). Works with every node. Before the handshake the
    /// block is kept and the tip announced after it.
    pub fn announce_block(&mut self, block: Block) -> Result<(), NodeError> {
        if !self.hs.done {
            return self.defer_block(block);
        }
        self.check_send_buffer()?;
        let hash = block.block_hash();
        let msg = if self.node_prefers_headers {
            NetworkMessage::Headers(vec![block.header])
        } else {
            NetworkMessage::Inv(vec![Inventory::Block(hash)])
        };
        self.queue_unchecked(msg);
        self.stats.blocks_announced += 1;
        self.remember_block(hash, block);
        Ok(())
    }

    /// Push a block as a BIP 152 `cmpctblock` (coinbase prefilled), where the node asked for
    /// high-bandwidth compact blocks version 2. The node rebuilds it from its mempool and asks
    /// for what it lacks with `getblocktxn` (served from the block store). A node that asked
    /// only for low-bandwidth compact blocks (or none) is sent an announcement instead
    /// (reported once per connection as [`NodeEvent::DeliveryFallback`]); it then asks for the
    /// `cmpctblock` or the block with `getdata`.
    pub fn send_cmpct_block(&mut self, block: Block) -> Result<(), NodeError> {
        if !self.hs.done {
            return self.defer_block(block);
        }
        match self.node_cmpct {
            Some(sc) if sc.send_compact => {}
            _ => {
                self.say_fallback(
                    "compact",
                    "the node did not ask for high-bandwidth compact blocks",
                );
                return self.announce_block(block);
            }
        }
        self.check_send_buffer()?;
        let nonce = self.rng.next_u64();
        let compact = HeaderAndShortIds::from_block(&block, nonce, CMPCT_VERSION as u32, &[])
            .map_err(|e| NodeError::CompactBlock(e.to_string()))?;
        let hash = block.block_hash();
        self.queue_unchecked(NetworkMessage::CmpctBlock(CmpctBlock {
            compact_block: compact,
        }));
        self.stats.cmpct_blocks_sent += 1;
        self.events.push_back(NodeEvent::BlockSent {
            hash,
            message: BlockMessage::Compact,
        });
        self.remember_block(hash, block);
        Ok(())
    }

    /// Keep a block the node may ask for (one it gave us, or one delivered while no
    /// connection was up), without announcing it.
    pub fn keep_block(&mut self, block: Block, from_network: bool) {
        self.blocks.insert(block, from_network);
    }

    /// Take the block store over a new connection (the driver carries it from one connection
    /// to the next, so a node that reconnects or restarts can still fetch what it missed).
    pub fn with_blocks(mut self, blocks: BlockStore) -> Self {
        self.blocks = blocks;
        if self.blocks.tip_from_network() {
            self.announce_after_handshake = true;
        }
        self
    }

    /// Give the block store back (at the end of a connection).
    pub fn take_blocks(&mut self) -> BlockStore {
        std::mem::replace(&mut self.blocks, BlockStore::new(0))
    }

    /// The blocks kept to serve the node.
    pub fn blocks(&self) -> &BlockStore {
        &self.blocks
    }

    // ----- internals ---------------------------------------------------------------------

    fn wtxid_relay(&self) -> bool {
        self.hs.we_sent_wtxidrelay && self.hs.they_sent_wtxidrelay
    }

    fn remember_block(&mut self, hash: BlockHash, block: Block) {
        self.node_knows_block.insert(hash);
        self.blocks_seen.insert(hash);
        self.blocks.insert(block, true);
    }

    /// A block for the node before the handshake: kept, and the tip announced after it.
    fn defer_block(&mut self, block: Block) -> Result<(), NodeError> {
        self.blocks.insert(block, true);
        self.announce_after_handshake = true;
        self.stats.blocks_deferred += 1;
        Ok(())
    }

    fn say_fallback(&mut self, mode: &'static str, reason: &'static str) {
        self.stats.delivery_fallbacks += 1;
        if !self.fallback_said {
            self.fallback_said = true;
            self.events.push_back(NodeEvent::DeliveryFallback {
                mode,
                used: "announce",
                reason,
            });
        }
    }

    /// After the handshake: announce the store's tip if it came from the network (the node
    /// then fetches it, and asks with `getheaders`/`getblocks` for what lies between).
    fn announce_tip(&mut self) {
        self.announce_after_handshake = false;
        if !self.blocks.tip_from_network() {
            return;
        }
        if let Some(tip) = self.blocks.tip() {
            self.queue_unchecked(NetworkMessage::Inv(vec![Inventory::Block(tip)]));
            self.stats.blocks_announced += 1;
        }
    }

    fn queued(&self) -> usize {
        self.out.len() - self.out_start
    }

    /// Calls that send to the node need the handshake done.
    fn handshaken(&self) -> Result<(), NodeError> {
        if self.hs.done {
            Ok(())
        } else {
            Err(NodeError::NotHandshaken)
        }
    }

    fn check_send_buffer(&mut self) -> Result<(), NodeError> {
        if self.queued() > self.config.max_send_buffer {
            self.stats.send_buffer_full += 1;
            return Err(NodeError::SendBufferFull {
                queued: self.queued(),
                limit: self.config.max_send_buffer,
            });
        }
        Ok(())
    }

    /// Queue a message the peer itself decided to send (replies, handshake): dropped and
    /// counted if the send buffer is full.
    fn queue(&mut self, msg: NetworkMessage) -> Result<(), NodeError> {
        self.check_send_buffer()?;
        self.queue_unchecked(msg);
        Ok(())
    }

    fn queue_unchecked(&mut self, msg: NetworkMessage) -> NetworkMessage {
        if self.out_start > 0 && self.out_start * 2 > self.out.len() {
            self.out.drain(..self.out_start);
            self.out_start = 0;
        }
        let (n, msg) = encode_message(&mut self.out, self.magic, msg);
        self.stats.bytes_out += n as u64;
        self.stats.messages_out += 1;
        msg
    }

    fn flush_inv(&mut self) {
        while !self.pending_inv.is_empty() {
            let n = self.pending_inv.len().min(MAX_INV_PER_MSG);
            let batch: Vec<Inventory> = self.pending_inv.drain(..n).collect();
            self.queue_unchecked(NetworkMessage::Inv(batch));
        }
    }

    fn send_version(&mut self) {
        let services = self.config.services;
        let msg = VersionMessage {
            version: PROTOCOL_VERSION,
            services,
            timestamp: self.unix_time,
            receiver: Address::new(&self.node_addr, ServiceFlags::NONE),
            // Core ignores addr_from; all-zero as it sends itself.
            sender: Address {
                services,
                address: [0; 8],
                port: 0,
            },
            nonce: self.our_nonce,
            user_agent: self.config.user_agent.clone(),
            start_height: self.config.start_height,
            relay: true,
        };
        self.queue_unchecked(NetworkMessage::Version(msg));
    }

    /// Whether a handshake-only message (`wtxidrelay`, `sendaddrv2`) came in its window, after
    /// their `version` and before their `verack`; one outside it is counted as ignored.
    fn in_handshake_window(&mut self) -> bool {
        let inside = self.hs.their_version.is_some() && !self.hs.their_verack;
        if !inside {
            self.stats.ignored_messages += 1;
        }
        inside
    }

    fn handle_message(&mut self, msg: NetworkMessage, now: Instant) -> Result<(), NodeError> {
        // Handshake messages first; anything else before the handshake is ignored (as Core
        // does with messages before verack).
        match msg {
            NetworkMessage::Version(v) => return self.on_version(v),
            NetworkMessage::Verack => return self.on_verack(),
            NetworkMessage::WtxidRelay => {
                if self.in_handshake_window() {
                    self.hs.they_sent_wtxidrelay = true;
                }
                return Ok(());
            }
            NetworkMessage::SendAddrV2 => {
                if self.in_handshake_window() {
                    self.hs.they_sent_addrv2 = true;
                }
                return Ok(());
            }
            NetworkMessage::Unknown { .. } => {
                self.stats.unknown_messages += 1;
                return Ok(());
            }
            _ if !self.hs.done => {
                self.stats.ignored_messages += 1;
                return Ok(());
            }
            _ => {}
        }
        match msg {
            NetworkMessage::Ping(nonce) => {
                if self.queue(NetworkMessage::Pong(nonce)).is_ok() {
                    self.stats.pongs_sent += 1;
                }
            }
            NetworkMessage::Pong(nonce) => match self.ping_in_flight {
                Some((n, sent)) if n == nonce => {
                    self.stats.last_ping_rtt = Some(now.saturating_duration_since(sent));
                    self.ping_in_flight = None;
                }
                _ => self.stats.ignored_messages += 1,
            },
            NetworkMessage::SendHeaders => self.node_prefers_headers = true,
            NetworkMessage::SendCmpct(sc) => {
                // Only version 2 (segwit) is of use; keep the last one (BIP 152: the latest
                // sendcmpct sets the announcement mode).
                if sc.version == CMPCT_VERSION {
                    self.node_cmpct = Some(sc);
                } else {
                    self.stats.ignored_messages += 1;
                }
            }
            NetworkMessage::FeeFilter(f) => self.node_fee_filter = f,
            NetworkMessage::Inv(items) => self.on_inv(items, now),
            NetworkMessage::Headers(headers) => self.on_headers(headers, now),
            NetworkMessage::CmpctBlock(cb) => self.on_headers(vec![cb.compact_block.header], now),
            NetworkMessage::Tx(tx) => self.on_tx(tx, now),
            NetworkMessage::Block(block) => self.on_block(block, now),
            NetworkMessage::GetData(items) => self.on_getdata(items),
            NetworkMessage::GetHeaders(req) => self.on_getheaders(req),
            NetworkMessage::GetBlocks(req) => self.on_getblocks(req),
            NetworkMessage::GetBlockTxn(req) => self.on_getblocktxn(req),
            _ => self.stats.ignored_messages += 1,
        }
        Ok(())
    }

    fn on_version(&mut self, v: VersionMessage) -> Result<(), NodeError> {
        if self.hs.their_version.is_some() {
            self.stats.ignored_messages += 1;
            return Ok(());
        }
        if v.nonce == self.our_nonce && v.nonce != 0 {
            return Err(NodeError::SelfConnection);
        }
        if v.version < MIN_PEER_VERSION {
            return Err(NodeError::VersionTooOld {
                version: v.version,
                min: MIN_PEER_VERSION,
            });
        }
        if self.role == Role::Inbound {
            self.send_version();
        }
        // BIP 339 and BIP 155: both must come between version and verack.
        if v.version >= 70016 {
            self.queue_unchecked(NetworkMessage::WtxidRelay);
            self.hs.we_sent_wtxidrelay = true;
        }
        self.queue_unchecked(NetworkMessage::SendAddrV2);
        self.queue_unchecked(NetworkMessage::Verack);
        self.hs.their_version = Some(v);
        Ok(())
    }

    fn on_verack(&mut self) -> Result<(), NodeError> {
        if self.hs.their_version.is_none() || self.hs.their_verack {
            self.stats.ignored_messages += 1;
            return Ok(());
        }
        self.hs.their_verack = true;
        self.hs.done = true;
        let Some(v) = self.hs.their_version.as_ref() else {
            return Ok(());
        };
        let info = PeerInfo {
            version: v.version,
            services: v.services,
            user_agent: v.user_agent.clone(),
            start_height: v.start_height,
            relay: v.relay,
            wtxid_relay: self.wtxid_relay(),
            addrv2: self.hs.they_sent_addrv2,
        };
        // After verack, as Core does: announce blocks to us with headers; compact blocks v2
        // in low-bandwidth mode (we fetch whole blocks: the node is next door); our feefilter.
        self.queue_unchecked(NetworkMessage::SendHeaders);
        self.queue_unchecked(NetworkMessage::SendCmpct(SendCmpct {
            send_compact: false,
            version: CMPCT_VERSION,
        }));
        self.queue_unchecked(NetworkMessage::FeeFilter(self.config.fee_filter));
        self.info = Some(info.clone());
        self.events.push_back(NodeEvent::Handshaken(info));
        if self.announce_after_handshake {
            self.announce_tip();
        }
        Ok(())
    }

    fn on_inv(&mut self, items: Vec<Inventory>, now: Instant) {
        let mut want = Vec::new();
        for item in items {
            match item {
                Inventory::WTx(w) => {
                    let id = w.to_byte_array();
                    if self.want_tx(id) {
                        want.push(Inventory::WTx(w));
                    }
                }
                Inventory::Transaction(t) | Inventory::WitnessTransaction(t) => {
                    let id = t.to_byte_array();
                    if self.want_tx(id) {
                        want.push(Inventory::WitnessTransaction(t));
                    }
                }
                Inventory::Block(h) | Inventory::WitnessBlock(h) | Inventory::CompactBlock(h) => {
                    if self.want_block(h, now) {
                        want.push(Inventory::WitnessBlock(h));
                    }
                }
                _ => self.stats.ignored_messages += 1,
            }
        }
        self.request(want);
    }

    /// The node announced a tx: do we ask for it?
    fn want_tx(&mut self, id: [u8; 32]) -> bool {
        self.node_knows_tx.insert(id);
        if self.txs_seen.contains(&id)
            || self.tx_cache.contains(&id)
            || self.tx_by_txid.contains_key(&id)
            || self.txs_in_flight.contains(&id)
        {
            return false;
        }
        if self.txs_in_flight.len() >= MAX_IN_FLIGHT_TXS {
            self.stats.requests_dropped += 1;
            return false;
        }
        self.txs_in_flight.insert(id);
        self.stats.txs_requested += 1;
        true
    }

    fn want_block(&mut self, hash: BlockHash, now: Instant) -> bool {
        self.node_knows_block.insert(hash);
        if self.blocks_seen.contains(&hash) || !self.blocks_in_flight.insert(hash) {
            return false;
        }
        self.stats.blocks_requested += 1;
        self.events.push_back(NodeEvent::BlockAnnounced {
            hash,
            announced_at: now,
        });
        true
    }

    fn request(&mut self, want: Vec<Inventory>) {
        for chunk in want.chunks(MAX_INV_PER_MSG) {
            if self.queue(NetworkMessage::GetData(chunk.to_vec())).is_err() {
                // Not asked: forget them so a later announcement asks again.
                for item in chunk {
                    match item {
                        Inventory::WTx(w) => {
                            self.txs_in_flight.remove(&w.to_byte_array());
                        }
                        Inventory::WitnessTransaction(t) => {
                            self.txs_in_flight.remove(&t.to_byte_array());
                        }
                        Inventory::WitnessBlock(h) => {
                            self.blocks_in_flight.remove(h);
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    fn on_headers(&mut self, headers: Vec<bitcoin::block::Header>, now: Instant) {
        let mut want = Vec::new();
        for header in headers {
            let hash = header.block_hash();
            if self.blocks_seen.contains(&hash) || self.blocks_in_flight.contains(&hash) {
                continue;
            }
            if let Err(error) = check_pow(&header, self.limit) {
                self.stats.pow_rejected += 1;
                self.events.push_back(NodeEvent::BlockRejected { error });
                continue;
            }
            if want.len() >= MAX_HEADERS_REQUESTED {
                self.stats.requests_dropped += 1;
                continue;
            }
            if self.want_block(hash, now) {
                want.push(Inventory::WitnessBlock(hash));
            }
        }
        self.request(want);
    }

    fn on_tx(&mut self, tx: Transaction, now: Instant) {
        let ids = Bitcoin::tx_ids(&tx);
        self.txs_in_flight.remove(&ids.wtxid);
        self.txs_in_flight.remove(&ids.txid);
        self.node_knows_tx.insert(ids.wtxid);
        self.node_knows_tx.insert(ids.txid);
        if !self.txs_seen.insert(ids.wtxid) || self.tx_cache.contains(&ids.wtxid) {
            self.stats.duplicate_txs += 1;
            return;
        }
        self.stats.txs_received += 1;
        self.events.push_back(NodeEvent::TxReceived {
            tx,
            received_at: now,
        });
    }

    fn on_block(&mut self, block: Block, now: Instant) {
        let hash = match check_pow(&block.header, self.limit) {
            Ok(hash) => hash,
            Err(error) => {
                self.stats.pow_rejected += 1;
                self.blocks_in_flight.remove(&block.block_hash());
                self.events.push_back(NodeEvent::BlockRejected { error });
                return;
            }
        };
        self.blocks_in_flight.remove(&hash);
        self.node_knows_block.insert(hash);
        if !self.blocks_seen.insert(hash) {
            self.stats.duplicate_blocks += 1;
            return;
        }
        self.stats.blocks_received += 1;
        self.events.push_back(NodeEvent::BlockReceived {
            block,
            hash,
            received_at: now,
        });
    }

    fn cached_tx(&self, wtxid: &[u8; 32]) -> Option<&Transaction> {
        self.tx_cache.get(wtxid)
    }

    fn on_getdata(&mut self, items: Vec<Inventory>) {
        let mut not_found = Vec::new();
        for item in items {
            let mut sent = None;
            let reply = match item {
                Inventory::WTx(w) => self
                    .cached_tx(&w.to_byte_array())
                    .map(|tx| NetworkMessage::Tx(tx.clone())),
                Inventory::WitnessTransaction(t) => self
                    .tx_by_txid
                    .get(&t.to_byte_array())
                    .and_then(|w| self.cached_tx(w))
                    .map(|tx| NetworkMessage::Tx(tx.clone())),
                Inventory::Transaction(t) => self
                    .tx_by_txid
                    .get(&t.to_byte_array())
                    .and_then(|w| self.cached_tx(w))
                    .map(|tx| NetworkMessage::Tx(strip_witness(tx))),
                Inventory::WitnessBlock(h) => {
                    sent = Some((h, BlockMessage::Block));
                    self.blocks
                        .get(&h)
                        .map(|b| NetworkMessage::Block(b.clone()))
                }
                Inventory::Block(h) => {
                    sent = Some((h, BlockMessage::Block));
                    self.blocks.get(&h).map(|b| {
                        NetworkMessage::Block(Block {
                            header: b.header,
                            txdata: b.txdata.iter().map(strip_witness).collect(),
                        })
                    })
                }
                Inventory::CompactBlock(h) => {
                    sent = Some((h, BlockMessage::Compact));
                    let nonce = self.rng.next_u64();
                    self.blocks.get(&h).and_then(|b| {
                        HeaderAndShortIds::from_block(b, nonce, CMPCT_VERSION as u32, &[])
                            .ok()
                            .map(|c| NetworkMessage::CmpctBlock(CmpctBlock { compact_block: c }))
                    })
                }
                _ => None,
            };
            match reply {
                Some(msg) => {
                    if self.queue(msg).is_ok() {
                        self.stats.getdata_served += 1;
                        if let Some((hash, message)) = sent {
                            self.node_knows_block.insert(hash);
                            self.events
                                .push_back(NodeEvent::BlockSent { hash, message });
                        }
                    }
                }
                None => {
                    self.stats.getdata_not_found += 1;
                    not_found.push(item);
                }
            }
        }
        for chunk in not_found.chunks(MAX_INV_PER_MSG) {
            let _ = self.queue(NetworkMessage::NotFound(chunk.to_vec()));
        }
    }

    /// Answer with the headers of the stored best chain that follow the node's locator
    /// (possibly none).
    fn on_getheaders(&mut self, req: GetHeadersMessage) {
        let headers = if req.locator_hashes.is_empty() {
            self.blocks
                .get(&req.stop_hash)
                .map(|b| vec![b.header])
                .unwrap_or_default()
        } else {
            self.blocks
                .headers_after(&req.locator_hashes, req.stop_hash, MAX_HEADERS_RESULTS)
        };
        self.stats.getheaders_served += 1;
        let _ = self.queue(NetworkMessage::Headers(headers));
    }

    /// Answer with an `inv` of the stored best chain's blocks that follow the node's locator
    /// (none: no answer, as Core does when it has nothing to add).
    fn on_getblocks(&mut self, req: GetBlocksMessage) {
        let hashes = self
            .blocks
            .after(&req.locator_hashes, req.stop_hash, MAX_GETBLOCKS_RESULTS);
        self.stats.getblocks_served += 1;
        if hashes.is_empty() {
            return;
        }
        let inv = hashes.into_iter().map(Inventory::Block).collect();
        let _ = self.queue(NetworkMessage::Inv(inv));
    }

    fn on_getblocktxn(&mut self, req: GetBlockTxn) {
        let reply = self
            .blocks
            .get(&req.txs_request.block_hash)
            .and_then(|b| BlockTransactions::from_request(&req.txs_request, b).ok());
        match reply {
            Some(transactions) => {
                if self
                    .queue(NetworkMessage::BlockTxn(BlockTxn { transactions }))
                    .is_ok()
                {
                    self.stats.getdata_served += 1;
                }
            }
            None => self.stats.getdata_not_found += 1,
        }
    }
}

fn strip_witness(tx: &Transaction) -> Transaction {
    let mut tx = tx.clone();
    for input in &mut tx.input {
        input.witness.clear();
    }
    tx
}

#[cfg(test)]
mod tests;
