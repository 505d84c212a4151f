//! A capture replayed through the testbed: the transactions and blocks of a pcap/pcapng file,
//! streamed, deduplicated across the capture's peers, at the capture's own timing.
//!
//! [`CaptureFeed::start`] reads the file on its own thread ([`crate::replay::read_capture`],
//! which streams) and hands [`FeedItem`]s over a bounded channel: the first transaction is
//! replayed while the rest of the file is still being read, and a multi-GB capture never sits
//! in memory (the reader waits while the channel is full). [`Dedup`], the sans-IO part, turns
//! captured messages into replay [`Event`]s:
//!
//! - a `tx` or `block` seen on several peers' streams is replayed once, at its first capture
//!   time; the later copies are counted as duplicates ([`FeedCounts`]). Seen ids are kept in a
//!   window of the last [`FeedConfig::window`] ids of each kind (a duplicate comes from another
//!   peer within seconds; the window bounds memory on captures of any length);
//! - a block's transactions that were not replayed before it (never in the capture, or only
//!   before the window) are its [`Event::Block::missing`]: the receivers' mempools do not have
//!   them, so they travel whole inside the block, as they would have;
//! - offsets are from the first replayed message's capture time. The reader hands messages out
//!   in the order they became complete in their TCP stream, which is capture order except where
//!   a retransmission filled a hole late; such a message keeps its own capture time.
//!
//! [`Announcements`] is what the capture shows about the P2P network itself: for each block,
//! when each peer of the capture first announced it (`inv` or `headers` of at most 8 blocks, as
//! a node announces, `cmpctblock`; longer ones are chain sync), so the report can put the spread of a block
//! over the capture's peers beside Photon's propagation of the same block.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bitcoin::p2p::message::NetworkMessage;
use bitcoin::p2p::message_blockdata::Inventory;
use bitcoin::{BlockHash, Txid};
use serde::{Deserialize, Serialize};

use crate::replay::{read_capture, CaptureError, CaptureStats, CapturedMessage, TcpConfig};
use crate::trace::Event;

/// First bytes of a pcap file (microsecond and nanosecond, either byte order) or of a pcapng
/// section header block.
pub const CAPTURE_MAGICS: [[u8; 4]; 5] = [
    [0xd4, 0xc3, 0xb2, 0xa1],
    [0xa1, 0xb2, 0xc3, 0xd4],
    [0x4d, 0x3c, 0xb2, 0xa1],
    [0xa1, 0xb2, 0x3c, 0x4d],
    [0x0a, 0x0d, 0x0d, 0x0a],
];

/// Headers messages longer than this, and `inv`s of more blocks than this, are chain sync, not
/// announcements (Bitcoin Core announces at most `MAX_BLOCKS_TO_ANNOUNCE` = 8 blocks by
/// headers; an `inv` of hundreds of blocks answers a `getblocks`).
pub const MAX_ANNOUNCED_HEADERS: usize = 8;

/// Limits of a feed.
#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// Ids of each kind (txids, block hashes) remembered for deduplication.
    pub window: usize,
    /// Blocks whose announcements are tracked; announcements of further blocks are counted.
    pub max_announced_blocks: usize,
    /// Items in flight between the reader thread and the player.
    pub channel: usize,
    pub tcp: TcpConfig,
}

impl Default for FeedConfig {
    /// 1,048,576 ids of each kind (about 100 MB at most), 10,000 announced blocks, 4,096 items.
    fn default() -> Self {
        FeedConfig {
            window: 1 << 20,
            max_announced_blocks: 10_000,
            channel: 4096,
            tcp: TcpConfig::default(),
        }
    }
}

/// What a feed replayed, of what it found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedCounts {
    /// `tx` messages in the capture, duplicates included.
    pub tx_found: u64,
    pub tx_replayed: u64,
    /// `tx` messages of a transaction already replayed (another peer's copy).
    pub tx_duplicates: u64,
    pub blocks_found: u64,
    pub blocks_replayed: u64,
    pub block_duplicates: u64,
    /// Transactions of replayed blocks (coinbase excluded) that were not replayed before them.
    pub block_txs_missing: u64,
    /// Transactions of replayed blocks (coinbase excluded).
    pub block_txs: u64,
    /// TCP connections (per capture interface) that carried Bitcoin messages.
    pub connections: u64,
    /// Events whose capture time was before an earlier event's (a late retransmission).
    pub out_of_order: u64,
}

/// Sans-IO: captured messages in, replay events out. See the module docs.
#[derive(Debug)]
pub struct Dedup {
    t0_ns: Option<u64>,
    last_ns: u64,
    txs: Window<Txid>,
    blocks: Window<BlockHash>,
    connections: HashSet<(u32, SocketAddr, SocketAddr)>,
    max_connections: usize,
    block_index: usize,
    pub counts: FeedCounts,
}

/// A set that remembers the last `cap` ids inserted.
#[derive(Debug)]
struct Window<T> {
    set: HashSet<T>,
    order: VecDeque<T>,
    cap: usize,
}

impl<T: Hash + Eq + Copy> Window<T> {
    fn new(cap: usize) -> Self {
        Window {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    fn contains(&self, id: &T) -> bool {
        self.set.contains(id)
    }

    /// False if it was there already.
    fn insert(&mut self, id: T) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

impl Dedup {
    pub fn new(window: usize, max_connections: usize) -> Self {
        Dedup {
            t0_ns: None,
            last_ns: 0,
            txs: Window::new(window),
            blocks: Window::new(window),
            connections: HashSet::new(),
            max_connections,
            block_index: 0,
            counts: FeedCounts::default(),
        }
    }

    /// Capture time (unix ns) of the first replayed event, offset zero of the replay.
    pub fn t0_ns(&self) -> Option<u64> {
        self.t0_ns
    }

    /// One captured message; the event to replay, if it is a first sighting of a tx or block.
    pub fn push(&mut self, m: &CapturedMessage) -> Option<(Duration, Event)> {
        if self.connections.len() < self.max_connections {
            let (i, a, b) = (m.flow.interface, m.flow.src, m.flow.dst);
            let pair = if a <= b { (i, a, b) } else { (i, b, a) };
            if self.connections.insert(pair) {
                self.counts.connections += 1;
            }
        }
        let event = match &m.message {
            NetworkMessage::Tx(tx) => {
                self.counts.tx_found += 1;
                if !self.txs.insert(tx.compute_txid()) {
                    self.counts.tx_duplicates += 1;
                    return None;
                }
                self.counts.tx_replayed += 1;
                Event::Tx {
                    tx: Arc::new(tx.clone()),
                    block: None,
                }
            }
            NetworkMessage::Block(block) => {
                self.counts.blocks_found += 1;
                if !self.blocks.insert(block.block_hash()) {
                    self.counts.block_duplicates += 1;
                    return None;
                }
                self.counts.blocks_replayed += 1;
                let missing: Vec<Txid> = block
                    .txdata
                    .iter()
                    .skip(1)
                    .map(|t| t.compute_txid())
                    .filter(|id| !self.txs.contains(id))
                    .collect();
                self.counts.block_txs += block.txdata.len().saturating_sub(1) as u64;
                self.counts.block_txs_missing += missing.len() as u64;
                let index = self.block_index;
                self.block_index += 1;
                Event::Block {
                    block: Arc::new(block.clone()),
                    index,
                    missing,
                }
            }
            _ => return None,
        };
        let t0 = *self.t0_ns.get_or_insert(m.ts_ns);
        if m.ts_ns < self.last_ns {
            self.counts.out_of_order += 1;
        }
        self.last_ns = self.last_ns.max(m.ts_ns);
        Some((Duration::from_nanos(m.ts_ns.saturating_sub(t0)), event))
    }
}

/// How one block was announced in the capture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockAnnouncements {
    /// Block hash (hex, as Bitcoin displays it).
    pub hash: String,
    /// Distinct peers (sending endpoints, per capture interface) that announced it.
    pub announcers: usize,
    /// Capture time (unix ns) of its first announcement (of its first sight, if it was never
    /// announced).
    pub first_ns: u64,
    /// For each announcer, the delay of its first announcement after the first one (ms,
    /// sorted; the first announcer's 0 included).
    pub delays_ms: Vec<f64>,
    /// Announcements by command (`inv`, `headers`, `cmpctblock`), every copy counted.
    pub by_command: BTreeMap<String, u64>,
    /// Capture time (unix ns) the block itself was first seen whole, if it was.
    pub block_seen_ns: Option<u64>,
}

impl BlockAnnouncements {
    /// Delay of the median announcer after the first (ms); `None` without announcers.
    pub fn median_ms(&self) -> Option<f64> {
        self.delays_ms.get(self.delays_ms.len() / 2).copied()
    }

    /// Delay of the last announcer after the first (ms); `None` without announcers.
    pub fn spread_ms(&self) -> Option<f64> {
        self.delays_ms.last().copied()
    }
}

#[derive(Debug, Default)]
struct Seen {
    /// First announcement by each peer: (capture interface, sending endpoint).
    by_peer: HashMap<(u32, SocketAddr), u64>,
    by_command: BTreeMap<String, u64>,
    block_seen_ns: Option<u64>,
}

/// Block announcements per peer; see the module docs.
#[derive(Debug)]
pub struct Announcements {
    blocks: HashMap<BlockHash, Seen>,
    max_blocks: usize,
    /// Announcements of blocks beyond `max_blocks`, not tracked.
    pub dropped: u64,
    /// `headers` messages of more than [`MAX_ANNOUNCED_HEADERS`] (chain sync), not counted.
    pub sync_headers: u64,
    /// `inv` messages of more than [`MAX_ANNOUNCED_HEADERS`] blocks (the answer to a
    /// `getblocks`: chain sync), not counted.
    pub sync_invs: u64,
}

impl Announcements {
    pub fn new(max_blocks: usize) -> Self {
        Announcements {
            blocks: HashMap::new(),
            max_blocks,
            dropped: 0,
            sync_headers: 0,
            sync_invs: 0,
        }
    }

    fn seen(&mut self, hash: BlockHash) -> Option<&mut Seen> {
        if !self.blocks.contains_key(&hash) && self.blocks.len() >= self.max_blocks {
            self.dropped += 1;
            return None;
        }
        Some(self.blocks.entry(hash).or_default())
    }

    fn announce(&mut self, hash: BlockHash, peer: (u32, SocketAddr), ts_ns: u64, command: &str) {
        if let Some(s) = self.seen(hash) {
            *s.by_command.entry(command.to_string()).or_default() += 1;
            let t = s.by_peer.entry(peer).or_insert(ts_ns);
            *t = (*t).min(ts_ns);
        }
    }

    /// One captured message.
    pub fn observe(&mut self, m: &CapturedMessage) {
        let peer = (m.flow.interface, m.flow.src);
        match &m.message {
            NetworkMessage::Inv(items) => {
                let blocks: Vec<BlockHash> = items
                    .iter()
                    .filter_map(|i| match i {
                        Inventory::Block(h)
                        | Inventory::WitnessBlock(h)
                        | Inventory::CompactBlock(h) => Some(*h),
                        _ => None,
                    })
                    .collect();
                if blocks.len() > MAX_ANNOUNCED_HEADERS {
                    // The answer to a `getblocks` (up to 500 hashes): chain sync.
                    self.sync_invs += 1;
                    return;
                }
                for h in blocks {
                    self.announce(h, peer, m.ts_ns, "inv");
                }
            }
            NetworkMessage::Headers(headers) if headers.len() > MAX_ANNOUNCED_HEADERS => {
                self.sync_headers += 1;
            }
            NetworkMessage::Headers(headers) => {
                for h in headers {
                    self.announce(h.block_hash(), peer, m.ts_ns, "headers");
                }
            }
            NetworkMessage::CmpctBlock(c) => {
                let h = c.compact_block.header.block_hash();
                self.announce(h, peer, m.ts_ns, "cmpctblock");
            }
            NetworkMessage::Block(b) => {
                if let Some(s) = self.seen(b.block_hash()) {
                    let t = s.block_seen_ns.get_or_insert(m.ts_ns);
                    *t = (*t).min(m.ts_ns);
                }
            }
            _ => {}
        }
    }

    /// One row per block that was announced or seen whole, by first announcement (or first
    /// sight) time; a block only seen whole has no announcers.
    pub fn rows(&self) -> Vec<BlockAnnouncements> {
        let mut rows: Vec<BlockAnnouncements> = self
            .blocks
            .iter()
            .filter_map(|(hash, s)| {
                let first = s.by_peer.values().min().copied().or(s.block_seen_ns)?;
                let mut delays: Vec<f64> = s
                    .by_peer
                    .values()
                    .map(|&t| (t - first) as f64 / 1e6)
                    .collect();
                delays.sort_by(f64::total_cmp);
                Some(BlockAnnouncements {
                    hash: hash.to_string(),
                    announcers: s.by_peer.len(),
                    first_ns: first,
                    delays_ms: delays,
                    by_command: s.by_command.clone(),
                    block_seen_ns: s.block_seen_ns,
                })
            })
            .collect();
        rows.sort_by_key(|r| r.first_ns);
        rows
    }
}

/// What a finished feed found (written as JSON beside the run's records: the report's input for
/// the capture's own propagation).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeedSummary {
    pub capture: PathBuf,
    pub stats: CaptureStatsSummary,
    pub counts: FeedCounts,
    /// Capture time (unix ns) of offset zero.
    pub t0_ns: Option<u64>,
    pub announcements: Vec<BlockAnnouncements>,
    pub announcements_dropped: u64,
    pub sync_headers: u64,
    /// `inv`s of more than [`MAX_ANNOUNCED_HEADERS`] blocks (chain sync), not counted.
    #[serde(default)]
    pub sync_invs: u64,
}

/// The capture counters the summary keeps (the full [`CaptureStats`] is not deserialisable).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CaptureStatsSummary {
    pub format: String,
    pub packets: u64,
    pub bytes_read: u64,
    pub first_ts_ns: Option<u64>,
    pub last_ts_ns: Option<u64>,
    pub tcp_directions: u64,
    pub mid_stream_directions: u64,
    pub holes_skipped: u64,
    pub frames: u64,
    pub legacy_headers: u64,
    pub version_without_relay: u64,
    pub resyncs: u64,
    pub skipped_bytes: u64,
    pub kept: BTreeMap<String, u64>,
    /// The fault that stopped reading early, with its byte offset, if any.
    pub stopped_early: Option<String>,
}

impl From<&CaptureStats> for CaptureStatsSummary {
    fn from(s: &CaptureStats) -> Self {
        CaptureStatsSummary {
            format: s.format.clone(),
            packets: s.packets,
            bytes_read: s.bytes_read,
            first_ts_ns: s.first_ts_ns,
            last_ts_ns: s.last_ts_ns,
            tcp_directions: s.tcp.flows,
            mid_stream_directions: s.tcp.mid_stream_flows,
            holes_skipped: s.tcp.holes_skipped,
            frames: s.tcp.frames.frames,
            legacy_headers: s.tcp.frames.legacy_headers,
            version_without_relay: s.tcp.frames.version_without_relay,
            resyncs: s.tcp.frames.resyncs,
            skipped_bytes: s.tcp.frames.skipped_bytes,
            kept: s.kept.clone(),
            stopped_early: s.stopped_early.as_ref().map(|f| f.to_string()),
        }
    }
}

impl FeedSummary {
    /// The replay's description (the report's first line): the capture, and what was taken
    /// from it.
    pub fn description(&self, speed: f64) -> String {
        let s = &self.stats;
        let c = &self.counts;
        let span = match (s.first_ts_ns, s.last_ts_ns) {
            (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 1e9,
            _ => 0.0,
        };
        let name = self.capture.file_name().map_or_else(
            || self.capture.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let pace = if (speed - 1.0).abs() < f64::EPSILON {
            "in real time".to_string()
        } else {
            format!("{speed}x faster than real time")
        };
        let mut d = format!(
            "capture {name} ({}, {} packets over {span:.1} s, {} TCP connections with Bitcoin \
             messages): replayed at the source node with the capture's own timing, {pace}: {} \
             of the {} tx messages found ({} duplicates from other peers' streams) and {} of \
             the {} blocks found ({} duplicates); {} of the replayed blocks' {} transactions \
             were never replayed before their block and travel inside it",
            s.format,
            s.packets,
            c.connections,
            c.tx_replayed,
            c.tx_found,
            c.tx_duplicates,
            c.blocks_replayed,
            c.blocks_found,
            c.block_duplicates,
            c.block_txs_missing,
            c.block_txs,
        );
        if s.legacy_headers > 0 {
            d.push_str(&format!(
                "; {} messages with the pre-2012 20-byte header",
                s.legacy_headers
            ));
        }
        if s.holes_skipped > 0 || s.mid_stream_directions > 0 {
            d.push_str(&format!(
                "; {} TCP directions joined mid-stream, {} lost segments skipped",
                s.mid_stream_directions, s.holes_skipped
            ));
        }
        if let Some(f) = &s.stopped_early {
            d.push_str(&format!("; the capture stops early: {f}"));
        }
        d
    }

    /// Writes the summary as JSON.
    pub fn write(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// Reads a summary written by [`FeedSummary::write`].
    pub fn read(path: &Path) -> Result<FeedSummary, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// What the reader thread hands the player.
#[derive(Debug)]
pub enum FeedItem {
    /// An event at `at` from offset zero; `file_offset`: how far into the file it was found.
    Event {
        at: Duration,
        file_offset: u64,
        event: Event,
    },
    /// The end of the capture.
    End(Box<FeedSummary>),
}

/// A capture being read on its own thread. See the module docs.
pub struct CaptureFeed {
    rx: Receiver<FeedItem>,
    thread: Option<JoinHandle<Result<(), CaptureError>>>,
    /// Size of the file (progress bars).
    pub file_len: u64,
}

impl CaptureFeed {
    /// Opens the capture (errors at once if it cannot be opened or is not a capture) and starts
    /// reading it.
    pub fn start(path: &Path, config: FeedConfig) -> Result<CaptureFeed, CaptureError> {
        let file_len = std::fs::metadata(path)
            .map_err(|source| CaptureError::Open {
                path: path.to_owned(),
                source,
            })?
            .len();
        // Probe the magic here, so that a wrong file is an error of `start` (the blocks are
        // the reader thread's: a pcapng section header may be of any length).
        let mut magic = [0u8; 4];
        std::io::Read::read_exact(
            &mut std::fs::File::open(path).map_err(|source| CaptureError::Open {
                path: path.to_owned(),
                source,
            })?,
            &mut magic,
        )
        .map_err(|e| CaptureError::NotACapture {
            path: path.to_owned(),
            reason: format!("shorter than a file header: {e}"),
        })?;
        if !CAPTURE_MAGICS.contains(&magic) {
            return Err(CaptureError::NotACapture {
                path: path.to_owned(),
                reason: format!("magic {magic:02x?} is neither pcap's nor pcapng's"),
            });
        }
        let (tx, rx) = sync_channel(config.channel.max(1));
        let path = path.to_owned();
        let thread = std::thread::Builder::new()
            .name("capture-feed".into())
            .spawn(move || {
                let mut dedup = Dedup::new(config.window, config.tcp.max_flows);
                let mut ann = Announcements::new(config.max_announced_blocks);
                let mut open = true;
                let stats = read_capture(&path, config.tcp.clone(), |m| {
                    ann.observe(&m);
                    if let Some((at, event)) = dedup.push(&m) {
                        // A player that went away stops the sends, not the counting.
                        open = open
                            && tx
                                .send(FeedItem::Event {
                                    at,
                                    file_offset: m.file_offset,
                                    event,
                                })
                                .is_ok();
                    }
                })?;
                let summary = FeedSummary {
                    capture: path,
                    stats: CaptureStatsSummary::from(&stats),
                    counts: dedup.counts.clone(),
                    t0_ns: dedup.t0_ns(),
                    announcements: ann.rows(),
                    announcements_dropped: ann.dropped,
                    sync_headers: ann.sync_headers,
                    sync_invs: ann.sync_invs,
                };
                let _ = tx.send(FeedItem::End(Box::new(summary)));
                Ok(())
            })
            .map_err(|source| CaptureError::Open {
                path: PathBuf::from("<capture-feed thread>"),
                source,
            })?;
        Ok(CaptureFeed {
            rx,
            thread: Some(thread),
            file_len,
        })
    }

    /// The next item; `None` once the reader is done (after [`FeedItem::End`]) or failed (see
    /// [`CaptureFeed::join`]).
    pub fn recv(&self) -> Option<FeedItem> {
        self.rx.recv().ok()
    }

    /// Waits for the reader thread; its error, if it failed.
    pub fn join(mut self) -> Result<(), String> {
        drop(std::mem::replace(&mut self.rx, sync_channel(1).1));
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r.map_err(|e| e.to_string()),
            Some(Err(_)) => Err("the capture reader thread panicked".into()),
            None => Ok(()),
        }
    }

    /// Reads the whole capture into a list of events and its summary (tests and small captures).
    pub fn collect(
        path: &Path,
        config: FeedConfig,
    ) -> Result<(Vec<(Duration, Event)>, FeedSummary), String> {
        let feed = CaptureFeed::start(path, config).map_err(|e| e.to_string())?;
        let mut events = Vec::new();
        let mut summary = None;
        while let Some(item) = feed.recv() {
            match item {
                FeedItem::Event { at, event, .. } => events.push((at, event)),
                FeedItem::End(s) => summary = Some(*s),
            }
        }
        feed.join()?;
        summary
            .map(|s| (events, s))
            .ok_or_else(|| "the capture reader ended without a summary".to_string())
    }
}
