//! The gateway's node side: a peer to the local Bitcoin node over its P2P protocol.
//!
//! Two layers, as in quinn:
//! - [`NodePeer`] is sans-IO: bytes from the TCP stream go in ([`NodePeer::handle_bytes`]),
//!   [`NodeEvent`]s and bytes to write come out ([`NodePeer::poll_event`],
//!   [`NodePeer::poll_transmit`]); the caller passes `now`. It does the handshake a current
//!   Bitcoin Core expects, answers pings, fetches new transactions and blocks the node announces
//!   (checking each block header's proof of work), announces transactions from the network to
//!   the node and serves them on `getdata`, and delivers blocks.
//! - [`NodeConnection`] is the thin driver: one TCP connection to the node, a reader thread and
//!   a loop thread, reconnecting with exponential backoff.
//!
//! Messages and their encodings are the `bitcoin` crate's (`bitcoin::p2p`); [`codec`] only
//! frames them.
//!
//! # What the gateway calls
//!
//! From the node to the network: [`NodeEvent::TxReceived`] and [`NodeEvent::BlockReceived`]
//! (the block's header has passed [`pow::check_pow`]). From the network to the node:
//! [`NodePeer::announce_tx`] (inv, then `tx` on getdata), [`NodePeer::send_block`] (the whole
//! block, unsolicited: the fastest way in), [`NodePeer::announce_block`] (`headers` or `inv`,
//! then `block`/`cmpctblock` on getdata), [`NodePeer::send_cmpct_block`] (where the node asked
//! for high-bandwidth compact blocks). [`NodeConnection`] has the same methods, sent to its
//! thread.

pub mod blocks;
pub mod codec;
pub mod pow;

mod driver;
mod peer;

use std::time::{Duration, Instant};

use bitcoin::p2p::ServiceFlags;
use bitcoin::{Block, BlockHash, Network, Target, Transaction};

pub use self::blocks::BlockStore;
pub use self::codec::FrameError;
pub use self::driver::{Backoff, ConnectionEvent, NodeConnection};
pub use self::peer::{NodePeer, Role};
pub use self::pow::PowError;

/// The protocol version we speak: 70016 (BIP 339, wtxid relay), Bitcoin Core's since 0.21.
pub const PROTOCOL_VERSION: u32 = 70016;
/// The oldest peer version accepted: 70015 (Core 0.18.1), which already has sendheaders
/// (70012), feefilter (70013) and compact blocks (70014).
pub const MIN_PEER_VERSION: u32 = 70015;
/// BIP 14 user agent.
pub const USER_AGENT: &str = concat!("/photon-gateway:", env!("CARGO_PKG_VERSION"), "/");

/// Settings of the node side. [`NodeConfig::new`] gives the defaults for a network.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's network: its magic, and the proof-of-work limit headers are checked against.
    pub network: Network,
    /// Our BIP 14 user agent in the `version` message.
    pub user_agent: String,
    /// Services we advertise. Default `NODE_WITNESS` only: we do not serve the chain, so the
    /// node never picks us to sync headers or blocks from.
    pub services: ServiceFlags,
    /// The height we claim in `version` (informational for Core).
    pub start_height: i32,
    /// `fee_filter` we send the node, in sat per 1000 vbytes: it announces only transactions
    /// paying at least this. 0 asks for everything its mempool takes.
    pub fee_filter: i64,
    /// A target stricter than the network's `pow_limit` that block headers must meet (e.g. a
    /// recent mainnet difficulty, so junk with the minimum difficulty is refused). `None`: the
    /// network's `pow_limit`.
    pub max_target: Option<Target>,
    /// The node must complete the handshake within this (Core: 60 s).
    pub handshake_timeout: Duration,
    /// We ping the node this often.
    pub ping_interval: Duration,
    /// No message, or no pong, for this long and the connection is dead (Core: 20 min).
    pub idle_timeout: Duration,
    /// Bytes of transactions kept after announcing them, to serve the node's `getdata`.
    pub tx_cache_bytes: usize,
    /// Bytes of blocks from the network kept, across connections, to serve the node's
    /// `getdata`/`getblocktxn`/`getheaders`/`getblocks` (a node that fell behind or
    /// restarted catches up from them); the oldest go first.
    pub block_store_bytes: usize,
    /// Bytes queued for the node past which new messages are refused (a node not reading).
    pub max_send_buffer: usize,
}

impl NodeConfig {
    /// Defaults for `network`.
    pub fn new(network: Network) -> Self {
        NodeConfig {
            network,
            user_agent: USER_AGENT.to_string(),
            services: ServiceFlags::WITNESS,
            start_height: 0,
            fee_filter: 0,
            max_target: None,
            handshake_timeout: Duration::from_secs(60),
            ping_interval: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(20 * 60),
            tx_cache_bytes: 64 << 20,
            block_store_bytes: 256 << 20,
            max_send_buffer: 64 << 20,
        }
    }
}

/// What the node told us about itself in its `version`, and what was negotiated before
/// `verack`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub version: u32,
    pub services: ServiceFlags,
    pub user_agent: String,
    pub start_height: i32,
    /// The node asked to be sent transaction announcements (`version.relay`).
    pub relay: bool,
    /// Both sides sent `wtxidrelay` (BIP 339): transactions are announced by wtxid.
    pub wtxid_relay: bool,
    /// The node sent `sendaddrv2` (BIP 155).
    pub addrv2: bool,
}

/// What the node peer reports to the gateway, in order. Drain with [`NodePeer::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// The handshake is complete: version and verack went both ways.
    Handshaken(PeerInfo),
    /// A transaction new to this connection came from the node (it announced it, we asked for
    /// it). Transactions we announced to the node are never reported back.
    TxReceived {
        tx: Transaction,
        received_at: Instant,
    },
    /// The node announced a block (inv, headers or cmpctblock) that we have now requested;
    /// the whole block follows as [`NodeEvent::BlockReceived`].
    BlockAnnounced {
        hash: BlockHash,
        announced_at: Instant,
    },
    /// A block came from the node and its header's proof of work checks out. `received_at` is
    /// the `now` of the call in which its last byte arrived.
    BlockReceived {
        block: Block,
        hash: BlockHash,
        received_at: Instant,
    },
    /// A block or header from the node failed the proof-of-work check; it was dropped.
    BlockRejected { error: PowError },
    /// A block from the network went to the node: pushed, or asked for by the node after an
    /// announcement. The only event that says a block was handed over.
    BlockSent {
        hash: BlockHash,
        message: BlockMessage,
    },
    /// The delivery `mode` asked for is not one this node takes; `used` is sent instead.
    /// Reported once per connection (every occurrence is counted in
    /// [`NodeStats::delivery_fallbacks`]).
    DeliveryFallback {
        mode: &'static str,
        used: &'static str,
        reason: &'static str,
    },
}

/// How a block was handed to the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockMessage {
    /// A `block` message.
    Block,
    /// A BIP 152 `cmpctblock` (the node asks for what it lacks with `getblocktxn`).
    Compact,
}

impl BlockMessage {
    pub fn name(self) -> &'static str {
        match self {
            BlockMessage::Block => "block",
            BlockMessage::Compact => "cmpctblock",
        }
    }
}

/// Nodes known to process a block nobody asked for when it extends their best chain: Bitcoin
/// Core (`/Satoshi:`) and the nodes descended from it that keep that behaviour, and Photon's
/// emulated node. Others (bcoin drops the peer) are sent announcements.
pub fn accepts_unsolicited_blocks(info: &PeerInfo) -> bool {
    ["/Satoshi:", "/Bitcoin SV:", "/photon-emunode:"]
        .iter()
        .any(|p| info.user_agent.starts_with(p))
}

/// Why the connection to the node must be closed, or why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// The byte stream's framing is lost (always a fatal [`FrameError`]).
    #[error("framing: {0}")]
    Frame(#[from] FrameError),
    /// The node speaks a protocol version older than [`MIN_PEER_VERSION`].
    #[error("node speaks protocol version {version}, older than {min}")]
    VersionTooOld { version: u32, min: u32 },
    /// The node's `version` carried our own nonce: we connected to ourselves.
    #[error("connected to ourselves (version nonce echoed)")]
    SelfConnection,
    /// No completed handshake within `handshake_timeout`.
    #[error("handshake not complete after {0:?}")]
    HandshakeTimeout(Duration),
    /// Nothing received, or no pong, within `idle_timeout`.
    #[error("node silent for {0:?}")]
    Idle(Duration),
    /// Not fatal: the call needs a completed handshake.
    #[error("handshake with the node not complete yet")]
    NotHandshaken,
    /// Not fatal: more than `max_send_buffer` bytes are waiting for the node; the message was
    /// not queued.
    #[error("{queued} bytes already queued for the node (limit {limit})")]
    SendBufferFull { queued: usize, limit: usize },
    /// Not fatal: the compact block could not be built.
    #[error("compact block: {0}")]
    CompactBlock(String),
}

impl NodeError {
    /// A short name, for counters.
    pub fn reason(&self) -> &'static str {
        match self {
            NodeError::Frame(_) => "framing",
            NodeError::VersionTooOld { .. } => "version_too_old",
            NodeError::SelfConnection => "self_connection",
            NodeError::HandshakeTimeout(_) => "handshake_timeout",
            NodeError::Idle(_) => "idle",
            NodeError::NotHandshaken => "not_handshaken",
            NodeError::SendBufferFull { .. } => "send_buffer_full",
            NodeError::CompactBlock(_) => "compact_block",
        }
    }

    /// True when the connection must be closed; false for a refused call.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            NodeError::NotHandshaken
                | NodeError::SendBufferFull { .. }
                | NodeError::CompactBlock(_)
        )
    }
}

/// Counters of one connection (drops are counted, never logged per message).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStats {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    /// Messages dropped for a bad checksum.
    pub bad_checksum: u64,
    /// Messages dropped because their payload did not decode.
    pub bad_payload: u64,
    /// Commands we do not know (tolerated and skipped).
    pub unknown_messages: u64,
    /// Known messages we do not use (addr, notfound, ...), or out of their place (before
    /// version, a second version, wtxidrelay after verack).
    pub ignored_messages: u64,
    pub txs_received: u64,
    /// Transactions from the node already seen on this connection.
    pub duplicate_txs: u64,
    pub txs_requested: u64,
    pub txs_announced: u64,
    pub blocks_received: u64,
    pub duplicate_blocks: u64,
    pub blocks_requested: u64,
    /// Blocks or headers refused by the proof-of-work check.
    pub pow_rejected: u64,
    pub blocks_sent: u64,
    pub cmpct_blocks_sent: u64,
    pub blocks_announced: u64,
    /// Blocks for the node that came before a handshake: kept, the tip announced after it.
    pub blocks_deferred: u64,
    /// Deliveries sent as announcements because the node does not take what the mode sends.
    pub delivery_fallbacks: u64,
    pub getheaders_served: u64,
    pub getblocks_served: u64,
    /// getdata items answered with the tx or block.
    pub getdata_served: u64,
    /// getdata items we did not have (answered with `notfound`).
    pub getdata_not_found: u64,
    /// Announcements beyond what we track (in-flight request table full).
    pub requests_dropped: u64,
    /// Messages not queued because the send buffer was full.
    pub send_buffer_full: u64,
    pub pings_sent: u64,
    pub pongs_sent: u64,
    /// Round trip of the last answered ping.
    pub last_ping_rtt: Option<Duration>,
}
