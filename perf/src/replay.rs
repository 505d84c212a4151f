//! Replay input A: Bitcoin P2P messages pulled out of packet captures.
//!
//! [`read_capture`] reads a pcap or pcapng file (`pcap-parser`), takes the TCP segments of any
//! number of connections out of Ethernet, Linux cooked (SLL/SLL2) or raw IP frames
//! (`etherparse`), reassembles each direction ([`tcp::Reassembler`]) and frames the Bitcoin P2P
//! messages in it ([`p2p::StreamDecoder`], decoding with the `bitcoin` crate). It keeps
//! `version`, `inv`, `tx`, `block`, `cmpctblock` and `headers`, each with the capture time at
//! which its last byte was available in order, and counts the rest. Captures that start
//! mid-stream, lost packets and unrelated traffic (UDP, other TCP) are expected: they show up in
//! [`CaptureStats`], never as a panic or an error. A file that is not a capture at all is a
//! [`CaptureError`]; one cut short (or corrupt past some point) is read up to there and says so
//! in [`CaptureStats::stopped_early`].

pub mod p2p;
pub mod tcp;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use bitcoin::p2p::message::NetworkMessage;
use bitcoin::p2p::Magic;
use etherparse::{EtherType, NetSlice, SlicedPacket, TransportSlice};
use pcap_parser::data::{get_packetdata, PacketData};
use pcap_parser::pcapng::Block;
use pcap_parser::{create_reader, Linktype, PcapBlockOwned, PcapError};

pub use self::tcp::{FlowKey, TcpConfig, TcpStats};

/// The commands [`read_capture`] keeps.
pub const KEPT_COMMANDS: [&str; 6] = ["version", "inv", "tx", "block", "cmpctblock", "headers"];

/// A Bitcoin P2P message seen in a capture.
#[derive(Debug, Clone)]
pub struct CapturedMessage {
    /// Capture time (unix nanoseconds) at which its last byte was available in order.
    pub ts_ns: u64,
    /// The direction it travelled.
    pub flow: FlowKey,
    pub magic: Magic,
    /// Bytes of the frame (24-byte header and payload).
    pub wire_len: usize,
    pub message: NetworkMessage,
}

/// What reading a capture counted.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CaptureStats {
    /// `pcap` or `pcapng`.
    pub format: String,
    pub packets: u64,
    /// Frames of a link type we do not read, or without an IP header (ARP...).
    pub non_ip: u64,
    /// IP packets that are not TCP (UDP, ICMP...).
    pub non_tcp: u64,
    /// IP fragments (not reassembled: Bitcoin's TCP never fragments at the IP layer).
    pub ip_fragments: u64,
    /// Frames whose headers did not parse, or that the capture truncated (snaplen).
    pub malformed: u64,
    pub tcp: TcpStats,
    /// Messages kept, by command.
    pub kept: BTreeMap<String, u64>,
    /// Messages framed but not kept, by command (unknown commands included).
    pub skipped: BTreeMap<String, u64>,
    /// Capture time of the first and last packet (unix nanoseconds).
    pub first_ts_ns: Option<u64>,
    pub last_ts_ns: Option<u64>,
    /// Why reading stopped before the end of the file, if it did (truncated or corrupt file).
    pub stopped_early: Option<String>,
}

/// Why a capture could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a pcap or pcapng capture: {reason}")]
    NotACapture { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Largest block the reader's buffer grows to (a pcapng block holds one packet: 256 KiB snaplen
/// is tcpdump's default; 16 MiB leaves room for odd writers).
const MAX_BLOCK: usize = 16 << 20;
const READ_BUFFER: usize = 1 << 20;

/// Per-interface timestamp decoding of a pcapng section.
#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: Linktype,
    units_per_sec: u64,
    offset_sec: i64,
}

/// The sans-IO part: link-layer frames in, messages out. [`read_capture`] drives it from a file;
/// tests drive it directly.
#[derive(Debug, Default)]
pub struct PacketExtractor {
    reassembler: tcp::Reassembler,
    stats: CaptureStats,
}

impl PacketExtractor {
    pub fn new(config: TcpConfig) -> Self {
        PacketExtractor {
            reassembler: tcp::Reassembler::new(config),
            stats: CaptureStats::default(),
        }
    }

    /// One captured frame of link type `linktype`, captured at `ts_ns` (unix nanoseconds).
    /// `orig_len` is its length on the wire (a larger value than `frame.len()` means the
    /// capture truncated it).
    pub fn handle_frame(
        &mut self,
        ts_ns: u64,
        linktype: Linktype,
        frame: &[u8],
        orig_len: usize,
        on_message: &mut impl FnMut(CapturedMessage),
    ) {
        self.stats.packets += 1;
        self.stats.first_ts_ns.get_or_insert(ts_ns);
        self.stats.last_ts_ns = Some(ts_ns);
        if orig_len > frame.len() {
            // Truncated by snaplen: its TCP payload is incomplete; the hole it leaves is
            // skipped like a lost segment.
            self.stats.malformed += 1;
            return;
        }
        let sliced = match get_packetdata(frame, linktype, frame.len()) {
            Some(PacketData::L2(eth)) => SlicedPacket::from_ethernet(eth),
            Some(PacketData::L3(ethertype, ip)) => {
                SlicedPacket::from_ether_type(EtherType(ethertype), ip)
            }
            _ => {
                self.stats.non_ip += 1;
                return;
            }
        };
        let Ok(sliced) = sliced else {
            self.stats.malformed += 1;
            return;
        };
        let (src_ip, dst_ip, fragmented): (IpAddr, IpAddr, bool) = match &sliced.net {
            Some(NetSlice::Ipv4(v4)) => (
                v4.header().source_addr().into(),
                v4.header().destination_addr().into(),
                v4.payload().fragmented,
            ),
            Some(NetSlice::Ipv6(v6)) => (
                v6.header().source_addr().into(),
                v6.header().destination_addr().into(),
                v6.payload().fragmented,
            ),
            None => {
                self.stats.non_ip += 1;
                return;
            }
        };
        if fragmented {
            self.stats.ip_fragments += 1;
            return;
        }
        let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else {
            self.stats.non_tcp += 1;
            return;
        };
        let key = FlowKey {
            src: SocketAddr::new(src_ip, tcp.source_port()),
            dst: SocketAddr::new(dst_ip, tcp.destination_port()),
        };
        let stats = &mut self.stats;
        self.reassembler.handle_segment(
            ts_ns,
            key,
            tcp.sequence_number(),
            tcp.syn(),
            tcp.fin(),
            tcp.rst(),
            tcp.payload(),
            &mut |(flow, frame)| keep(stats, flow, frame, on_message),
        );
    }

    /// End of the capture: skip what holes are left, close every stream, return the counters.
    pub fn finish(mut self, on_message: &mut impl FnMut(CapturedMessage)) -> CaptureStats {
        let stats = &mut self.stats;
        self.reassembler
            .finish(&mut |(flow, frame)| keep(stats, flow, frame, on_message));
        self.stats.tcp = self.reassembler.stats();
        self.stats
    }
}

fn keep(
    stats: &mut CaptureStats,
    flow: FlowKey,
    frame: p2p::Frame<u64>,
    on_message: &mut impl FnMut(CapturedMessage),
) {
    let cmd = frame.message.cmd().to_string();
    if KEPT_COMMANDS.contains(&cmd.as_str()) {
        *stats.kept.entry(cmd).or_default() += 1;
        on_message(CapturedMessage {
            ts_ns: frame.tag,
            flow,
            magic: frame.magic,
            wire_len: frame.wire_len,
            message: frame.message,
        });
    } else {
        *stats.skipped.entry(cmd).or_default() += 1;
    }
}

/// Reads the capture at `path` (pcap or pcapng, probed), calling `on_message` for each kept
/// message in the order they became complete.
pub fn read_capture(
    path: &Path,
    config: TcpConfig,
    mut on_message: impl FnMut(CapturedMessage),
) -> Result<CaptureStats, CaptureError> {
    let file = File::open(path).map_err(|source| CaptureError::Open {
        path: path.to_owned(),
        source,
    })?;
    let not_a_capture = |reason: String| CaptureError::NotACapture {
        path: path.to_owned(),
        reason,
    };
    let mut reader = create_reader(READ_BUFFER, BufReader::new(file))
        .map_err(|e| not_a_capture(e.to_string()))?;
    let mut capacity = READ_BUFFER;
    let mut ex = PacketExtractor::new(config);
    let mut legacy: Option<(Linktype, bool)> = None;
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut format = None;
    let mut stopped_early = None;
    loop {
        match reader.next() {
            Ok((consumed, block)) => {
                match block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        format = Some("pcap");
                        legacy = Some((h.network, h.is_nanosecond_precision()));
                    }
                    PcapBlockOwned::Legacy(b) => {
                        if let Some((linktype, nanos)) = legacy {
                            let frac = u64::from(b.ts_usec) * if nanos { 1 } else { 1_000 };
                            let ts = u64::from(b.ts_sec) * 1_000_000_000 + frac;
                            ex.handle_frame(
                                ts,
                                linktype,
                                b.data,
                                b.origlen as usize,
                                &mut on_message,
                            );
                        }
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                        format = Some("pcapng");
                        interfaces.clear(); // interface ids are per section
                    }
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        interfaces.push(Interface {
                            linktype: idb.linktype,
                            // An invalid resolution leaves this interface's packets unread.
                            units_per_sec: idb.ts_resolution().unwrap_or(0),
                            offset_sec: idb.ts_offset(),
                        });
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        match interfaces.get(epb.if_id as usize) {
                            Some(i) if i.units_per_sec > 0 => {
                                let raw = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                                let ts = ng_ts(raw, i.units_per_sec, i.offset_sec);
                                let data = epb.data.get(..epb.caplen as usize).unwrap_or(epb.data);
                                ex.handle_frame(
                                    ts,
                                    i.linktype,
                                    data,
                                    epb.origlen as usize,
                                    &mut on_message,
                                );
                            }
                            _ => ex.stats.malformed += 1,
                        }
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                        // No timestamp in a simple packet block: it cannot be placed in time.
                        let _ = spb;
                        ex.stats.malformed += 1;
                    }
                    PcapBlockOwned::NG(_) => {}
                }
                reader.consume(consumed);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                if reader.reader_exhausted() {
                    if !reader.data().is_empty() {
                        stopped_early = Some(format!(
                            "file ends inside a block ({} bytes left over)",
                            reader.data().len()
                        ));
                    }
                    break;
                }
                let before = reader.data().len();
                if let Err(e) = reader.refill() {
                    stopped_early = Some(format!("read error: {e}"));
                    break;
                }
                if reader.data().len() == before {
                    // The buffer is full and still holds no whole block: grow it.
                    if capacity >= MAX_BLOCK || !reader.grow(capacity * 2) {
                        stopped_early = Some(format!("a block larger than {MAX_BLOCK} bytes"));
                        break;
                    }
                    capacity *= 2;
                }
            }
            Err(e) => {
                stopped_early = Some(format!("corrupt capture: {e}"));
                break;
            }
        }
    }
    let mut stats = ex.finish(&mut on_message);
    stats.format = format.unwrap_or("unknown").to_string();
    stats.stopped_early = stopped_early;
    Ok(stats)
}

/// [`read_capture`] into a vector.
pub fn read_capture_all(
    path: &Path,
    config: TcpConfig,
) -> Result<(Vec<CapturedMessage>, CaptureStats), CaptureError> {
    let mut msgs = Vec::new();
    let stats = read_capture(path, config, |m| msgs.push(m))?;
    Ok((msgs, stats))
}

/// A pcapng timestamp in unix nanoseconds.
fn ng_ts(raw: u64, units_per_sec: u64, offset_sec: i64) -> u64 {
    let units = u128::from(units_per_sec);
    let raw = u128::from(raw);
    let ns = (raw / units) * 1_000_000_000 + (raw % units) * 1_000_000_000 / units;
    let ns = ns as i128 + i128::from(offset_sec) * 1_000_000_000;
    ns.clamp(0, i128::from(u64::MAX)) as u64
}

/// Rewrites a pcap capture as pcapng (one interface, nanosecond timestamps), with
/// `pcap-parser`'s writer. tcpdump writes only pcap; this gives tests and users a pcapng of the
/// same packets. Returns the number of packets written.
pub fn pcap_to_pcapng(input: &Path, output: &Path) -> Result<u64, CaptureError> {
    use pcap_parser::pcapng::{
        EnhancedPacketBlock, InterfaceDescriptionBlock, OptionCode, PcapNGOption,
        SectionHeaderBlock,
    };
    use pcap_parser::ToVec;
    use std::borrow::Cow;

    let file = File::open(input).map_err(|source| CaptureError::Open {
        path: input.to_owned(),
        source,
    })?;
    let not_a_capture = |reason: String| CaptureError::NotACapture {
        path: input.to_owned(),
        reason,
    };
    let mut reader = create_reader(READ_BUFFER, BufReader::new(file))
        .map_err(|e| not_a_capture(e.to_string()))?;
    let mut out = Vec::new();
    let mut nanos = false;
    let mut packets = 0u64;
    let ser = |e: String| not_a_capture(format!("pcapng serialisation: {e}"));
    loop {
        match reader.next() {
            Ok((consumed, block)) => {
                match block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        nanos = h.is_nanosecond_precision();
                        let mut shb = SectionHeaderBlock {
                            block_type: pcap_parser::SHB_MAGIC,
                            block_len1: 0,
                            bom: pcap_parser::BOM_MAGIC,
                            major_version: 1,
                            minor_version: 0,
                            section_len: -1,
                            options: vec![],
                            block_len2: 0,
                        };
                        out.extend(shb.to_vec().map_err(|e| ser(format!("{e:?}")))?);
                        let tsresol = [9u8];
                        let mut idb = InterfaceDescriptionBlock {
                            block_type: pcap_parser::IDB_MAGIC,
                            block_len1: 0,
                            linktype: h.network,
                            reserved: 0,
                            snaplen: h.snaplen,
                            options: vec![PcapNGOption {
                                code: OptionCode::IfTsresol,
                                len: 1,
                                value: Cow::Borrowed(&tsresol),
                            }],
                            block_len2: 0,
                            if_tsresol: 9,
                            if_tsoffset: 0,
                        };
                        out.extend(idb.to_vec().map_err(|e| ser(format!("{e:?}")))?);
                    }
                    PcapBlockOwned::Legacy(b) => {
                        let frac = u64::from(b.ts_usec) * if nanos { 1 } else { 1_000 };
                        let ts = u64::from(b.ts_sec) * 1_000_000_000 + frac;
                        let mut epb = EnhancedPacketBlock {
                            block_type: pcap_parser::EPB_MAGIC,
                            block_len1: 0,
                            if_id: 0,
                            ts_high: (ts >> 32) as u32,
                            ts_low: ts as u32,
                            caplen: b.caplen,
                            origlen: b.origlen,
                            data: b.data,
                            options: vec![],
                            block_len2: 0,
                        };
                        out.extend(epb.to_vec().map_err(|e| ser(format!("{e:?}")))?);
                        packets += 1;
                    }
                    PcapBlockOwned::NG(_) => {
                        return Err(not_a_capture("already pcapng".into()));
                    }
                }
                reader.consume(consumed);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                if reader.reader_exhausted() {
                    break;
                }
                reader
                    .refill()
                    .map_err(|e| not_a_capture(format!("read error: {e}")))?;
            }
            Err(e) => return Err(not_a_capture(e.to_string())),
        }
    }
    let mut f = File::create(output).map_err(|source| CaptureError::Write {
        path: output.to_owned(),
        source,
    })?;
    f.write_all(&out).map_err(|source| CaptureError::Write {
        path: output.to_owned(),
        source,
    })?;
    Ok(packets)
}

/// `photon-perf replay-pcap`: prints the Bitcoin messages of a capture and what was counted.
#[derive(clap::Args, Debug)]
pub struct ReplayPcapArgs {
    /// The capture (pcap or pcapng; tcpdump -w writes pcap).
    pub file: PathBuf,
    /// Print every kept message (time, direction, command, summary), not just the totals.
    #[arg(long)]
    pub list: bool,
    /// Print the counters as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `photon-perf replay-pcap`.
pub fn run_replay_pcap(args: &ReplayPcapArgs) -> Result<(), String> {
    let mut first_ts = None;
    let list = args.list;
    let stats = read_capture(&args.file, TcpConfig::default(), |m| {
        if list {
            let t0 = *first_ts.get_or_insert(m.ts_ns);
            println!(
                "{:>12.6}s  {}  {:<10} {:>8} B  {}",
                (m.ts_ns - t0) as f64 / 1e9,
                m.flow,
                m.message.cmd(),
                m.wire_len,
                summary(&m.message)
            );
        }
    })
    .map_err(|e| e.to_string())?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&stats).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    let span = match (stats.first_ts_ns, stats.last_ts_ns) {
        (Some(a), Some(b)) => (b - a) as f64 / 1e9,
        _ => 0.0,
    };
    println!(
        "{}: {} ({} packets over {span:.3} s; {} TCP directions, {} started mid-stream)",
        args.file.display(),
        stats.format,
        stats.packets,
        stats.tcp.flows,
        stats.tcp.mid_stream_flows
    );
    println!("kept:    {:?}", stats.kept);
    println!("skipped: {:?}", stats.skipped);
    println!(
        "other traffic: {} non-IP, {} non-TCP, {} IP fragments, {} malformed/truncated",
        stats.non_ip, stats.non_tcp, stats.ip_fragments, stats.malformed
    );
    println!(
        "TCP: {} segments, {} duplicate bytes, {} out-of-order, {} holes skipped ({} bytes)",
        stats.tcp.segments,
        stats.tcp.duplicate_bytes,
        stats.tcp.out_of_order_segments,
        stats.tcp.holes_skipped,
        stats.tcp.hole_bytes
    );
    let f = &stats.tcp.frames;
    println!(
        "framing: {} frames, {} undecodable, {} resyncs, {} false magics, {} bytes skipped",
        f.frames, f.undecodable, f.resyncs, f.false_magics, f.skipped_bytes
    );
    if let Some(why) = &stats.stopped_early {
        println!("stopped early: {why}");
    }
    Ok(())
}

/// One line about a message.
pub fn summary(m: &NetworkMessage) -> String {
    match m {
        NetworkMessage::Version(v) => {
            format!("v{} {} height {}", v.version, v.user_agent, v.start_height)
        }
        NetworkMessage::Inv(items) => format!("{} items", items.len()),
        NetworkMessage::Tx(tx) => format!("{}", tx.compute_txid()),
        NetworkMessage::Block(b) => format!("{} ({} txs)", b.block_hash(), b.txdata.len()),
        NetworkMessage::CmpctBlock(c) => format!("{}", c.compact_block.header.block_hash()),
        NetworkMessage::Headers(h) => format!("{} headers", h.len()),
        _ => String::new(),
    }
}
