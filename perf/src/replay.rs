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
pub mod write;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Write};
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
    /// Bytes of the frame (24- or 20-byte header and payload).
    pub wire_len: usize,
    /// Byte offset in the capture file of the packet that completed it (progress of a replay).
    pub file_offset: u64,
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
    /// Why reading stopped before the end of the file, if it did (truncated or corrupt file),
    /// with the byte offset where.
    pub stopped_early: Option<CaptureFault>,
    /// Bytes of the capture read (up to the fault, if there was one).
    pub bytes_read: u64,
}

/// Why a capture stopped being readable before its end, and at which byte offset of the file.
/// [`read_capture`] keeps what it read before the fault (a capture cut short by a crash is
/// still worth replaying) and reports the fault in [`CaptureStats::stopped_early`];
/// [`CaptureStats::check`] turns it into an error for those who want one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum CaptureFault {
    /// The file ends inside a block (a capture cut short, or still being written).
    #[error("truncated at byte {offset}: the file ends inside a block ({left} bytes left over)")]
    Truncated { offset: u64, left: usize },
    /// A block at `offset` does not parse (bad block type, lengths that disagree...).
    #[error("corrupt at byte {offset}: {reason}")]
    Corrupt { offset: u64, reason: String },
    /// A block at `offset` says it is larger than the reader's limit.
    #[error("corrupt at byte {offset}: a block larger than {max} bytes")]
    BlockTooLarge { offset: u64, max: usize },
    /// Reading the file failed at `offset`.
    #[error("read error at byte {offset}: {reason}")]
    Read { offset: u64, reason: String },
}

impl CaptureFault {
    /// Byte offset in the file where the fault is.
    pub fn offset(&self) -> u64 {
        match self {
            CaptureFault::Truncated { offset, .. }
            | CaptureFault::Corrupt { offset, .. }
            | CaptureFault::BlockTooLarge { offset, .. }
            | CaptureFault::Read { offset, .. } => *offset,
        }
    }
}

impl CaptureStats {
    /// `Err` with the fault if the capture was not readable to its end.
    pub fn check(&self) -> Result<(), CaptureFault> {
        self.stopped_early.clone().map_or(Ok(()), Err)
    }
}

/// Why a capture could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a pcap or pcapng capture (at byte 0): {reason}")]
    NotACapture { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Largest block the reader's buffer grows to (a pcapng block holds one packet: 256 KiB snaplen
/// is tcpdump's default; 16 MiB leaves room for odd writers).
pub const MAX_BLOCK: usize = 16 << 20;
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
    /// File offset of the frame being handled (set by the file reader).
    file_offset: u64,
    /// Interface of the frames handled next (pcapng; set by the file reader, 0 otherwise).
    pub interface: u32,
}

impl PacketExtractor {
    pub fn new(config: TcpConfig) -> Self {
        PacketExtractor {
            reassembler: tcp::Reassembler::new(config),
            stats: CaptureStats::default(),
            file_offset: 0,
            interface: 0,
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
            interface: self.interface,
        };
        let stats = &mut self.stats;
        let offset = self.file_offset;
        self.reassembler.handle_segment(
            ts_ns,
            key,
            tcp.sequence_number(),
            tcp.syn(),
            tcp.fin(),
            tcp.rst(),
            tcp.payload(),
            &mut |(flow, frame)| keep(stats, flow, frame, offset, on_message),
        );
    }

    /// End of the capture: skip what holes are left, close every stream, return the counters.
    pub fn finish(mut self, on_message: &mut impl FnMut(CapturedMessage)) -> CaptureStats {
        let stats = &mut self.stats;
        let offset = self.file_offset;
        self.reassembler
            .finish(&mut |(flow, frame)| keep(stats, flow, frame, offset, on_message));
        self.stats.tcp = self.reassembler.stats();
        self.stats
    }
}

fn keep(
    stats: &mut CaptureStats,
    flow: FlowKey,
    frame: p2p::Frame<u64>,
    file_offset: u64,
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
            file_offset,
            message: frame.message,
        });
    } else {
        *stats.skipped.entry(cmd).or_default() += 1;
    }
}

/// Reads the capture at `path` (pcap or pcapng, probed) as a stream, calling `on_message` for
/// each kept message in the order they became complete: the first message comes out long
/// before a large file is read to its end, and memory stays bounded (one read buffer of at most
/// [`MAX_BLOCK`] bytes, plus the reassembler's limits in [`TcpConfig`]) whatever the file's size.
pub fn read_capture(
    path: &Path,
    config: TcpConfig,
    on_message: impl FnMut(CapturedMessage),
) -> Result<CaptureStats, CaptureError> {
    let file = File::open(path).map_err(|source| CaptureError::Open {
        path: path.to_owned(),
        source,
    })?;
    read_capture_from(BufReader::new(file), path, config, on_message)
}

/// [`read_capture`] of bytes in memory (tests, the fuzz target).
pub fn read_capture_bytes(
    bytes: &[u8],
    config: TcpConfig,
    on_message: impl FnMut(CapturedMessage),
) -> Result<CaptureStats, CaptureError> {
    read_capture_from(bytes, Path::new("<bytes>"), config, on_message)
}

/// [`read_capture`] from any reader; `path` names it in errors.
pub fn read_capture_from<R: Read>(
    source: R,
    path: &Path,
    config: TcpConfig,
    mut on_message: impl FnMut(CapturedMessage),
) -> Result<CaptureStats, CaptureError> {
    let not_a_capture = |reason: String| CaptureError::NotACapture {
        path: path.to_owned(),
        reason,
    };
    let mut reader =
        create_reader(READ_BUFFER, source).map_err(|e| not_a_capture(e.to_string()))?;
    let mut capacity = READ_BUFFER;
    let mut ex = PacketExtractor::new(config);
    let mut legacy: Option<(Linktype, bool)> = None;
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut format = None;
    let mut stopped_early = None;
    // File offset of the block at the front of the reader's buffer.
    let mut offset = 0u64;
    loop {
        match reader.next() {
            Ok((consumed, block)) => {
                ex.file_offset = offset;
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
                                ex.interface = epb.if_id;
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
                offset += consumed as u64;
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                if reader.reader_exhausted() {
                    if !reader.data().is_empty() {
                        stopped_early = Some(CaptureFault::Truncated {
                            offset,
                            left: reader.data().len(),
                        });
                    }
                    break;
                }
                let before = reader.data().len();
                if let Err(e) = reader.refill() {
                    stopped_early = Some(CaptureFault::Read {
                        offset,
                        reason: e.to_string(),
                    });
                    break;
                }
                if reader.data().len() == before {
                    // The buffer is full and still holds no whole block: grow it.
                    if capacity >= MAX_BLOCK || !reader.grow(capacity * 2) {
                        stopped_early = Some(CaptureFault::BlockTooLarge {
                            offset,
                            max: MAX_BLOCK,
                        });
                        break;
                    }
                    capacity *= 2;
                }
            }
            Err(PcapError::UnexpectedEof) => {
                stopped_early = Some(CaptureFault::Truncated {
                    offset,
                    left: reader.data().len(),
                });
                break;
            }
            Err(e) => {
                stopped_early = Some(CaptureFault::Corrupt {
                    offset,
                    reason: e.to_string(),
                });
                break;
            }
        }
    }
    ex.file_offset = offset;
    let mut stats = ex.finish(&mut on_message);
    stats.format = format.unwrap_or("unknown").to_string();
    stats.stopped_early = stopped_early;
    stats.bytes_read = offset;
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
/// `pcap-parser`'s writer ([`write`]). tcpdump writes only pcap; this gives tests and users a
/// pcapng of the same packets. Returns the number of packets written.
pub fn pcap_to_pcapng(input: &Path, output: &Path) -> Result<u64, CaptureError> {
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
    let ser = |e: write::WriteError| not_a_capture(e.to_string());
    loop {
        match reader.next() {
            Ok((consumed, block)) => {
                match block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        nanos = h.is_nanosecond_precision();
                        out.extend(write::pcapng_section().map_err(ser)?);
                        out.extend(write::pcapng_interface(h.network, h.snaplen).map_err(ser)?);
                    }
                    PcapBlockOwned::Legacy(b) => {
                        let frac = u64::from(b.ts_usec) * if nanos { 1 } else { 1_000 };
                        let p = write::Packet {
                            interface: 0,
                            ts_ns: u64::from(b.ts_sec) * 1_000_000_000 + frac,
                            data: b.data.to_vec(),
                        };
                        out.extend(write::pcapng_packet(&p, b.origlen).map_err(ser)?);
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

#[cfg(feature = "fuzzing")]
/// Fuzz entry (`fuzz/fuzz_targets/capture.rs`; `perf/tests/fuzz_corpus_capture.rs` replays the
/// corpus through it): any bytes as a capture file. Small reassembler limits, so that the
/// fuzzer reaches the hole-skipping and flow-refusing paths. Checked: no panic; what was read
/// never passes the input's end, nor does a fault's offset or a message's; every message handed
/// out is one of [`KEPT_COMMANDS`] and was counted.
pub fn fuzz_capture(data: &[u8]) {
    let config = TcpConfig {
        max_flows: 8,
        max_pending_bytes: 4096,
        hole_timeout_ns: 1_000_000,
    };
    let mut seen = 0u64;
    let Ok(stats) = read_capture_bytes(data, config, |m| {
        assert!(KEPT_COMMANDS.contains(&m.message.cmd()));
        assert!(m.file_offset <= data.len() as u64);
        seen += 1;
    }) else {
        return;
    };
    assert!(stats.bytes_read <= data.len() as u64);
    if let Some(f) = &stats.stopped_early {
        assert!(f.offset() <= data.len() as u64, "{f}");
    }
    assert_eq!(stats.kept.values().sum::<u64>(), seen);
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
    /// Also time `tcpdump -r FILE -w /dev/null` on the same file right after, and print both
    /// parse rates (MB/s of capture) side by side.
    #[arg(long)]
    pub tcpdump_reference: bool,
}

/// Runs `photon-perf replay-pcap`.
pub fn run_replay_pcap(args: &ReplayPcapArgs) -> Result<(), String> {
    let mut first_ts = None;
    let list = args.list;
    let mut stdout_closed = false;
    let started = std::time::Instant::now();
    let stats = read_capture(&args.file, TcpConfig::default(), |m| {
        if list && !stdout_closed {
            let t0 = *first_ts.get_or_insert(m.ts_ns);
            // A closed stdout (`| head`) ends the listing, not the process with a panic.
            stdout_closed = writeln!(
                std::io::stdout(),
                "{:>12.6}s  {}  {:<10} {:>8} B  {}",
                (m.ts_ns - t0) as f64 / 1e9,
                m.flow,
                m.message.cmd(),
                m.wire_len,
                summary(&m.message)
            )
            .is_err();
        }
    })
    .map_err(|e| e.to_string())?;
    let elapsed = started.elapsed().as_secs_f64();
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
        "framing: {} frames ({} with the pre-2012 20-byte header, {} versions without the relay \
         byte), {} undecodable, {} resyncs, {} false magics, {} bytes skipped",
        f.frames,
        f.legacy_headers,
        f.version_without_relay,
        f.undecodable,
        f.resyncs,
        f.false_magics,
        f.skipped_bytes
    );
    let mb = stats.bytes_read as f64 / 1e6;
    println!(
        "parse: {mb:.3} MB in {elapsed:.3} s: {:.1} MB/s (pcap blocks, link/IP/TCP headers, \
         reassembly, Bitcoin framing and decoding)",
        mb / elapsed.max(1e-9)
    );
    if args.tcpdump_reference {
        let t = std::time::Instant::now();
        let out = std::process::Command::new("tcpdump")
            .arg("-r")
            .arg(&args.file)
            .args(["-w", "/dev/null"])
            .output()
            .map_err(|e| format!("cannot run tcpdump: {e}"))?;
        let ref_s = t.elapsed().as_secs_f64();
        if !out.status.success() {
            return Err(format!(
                "tcpdump -r failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let file_mb = std::fs::metadata(&args.file).map_or(mb, |m| m.len() as f64 / 1e6);
        println!(
            "reference: tcpdump -r FILE -w /dev/null: {file_mb:.3} MB in {ref_s:.3} s: {:.1} MB/s \
             (read and write back only); photon-perf replay-pcap at {:.2}x its rate",
            file_mb / ref_s.max(1e-9),
            (mb / elapsed.max(1e-9)) / (file_mb / ref_s.max(1e-9))
        );
    }
    if let Some(why) = &stats.stopped_early {
        println!("stopped early: {why}");
    }
    stats
        .check()
        .map_err(|e| format!("{}: {e}", args.file.display()))
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
