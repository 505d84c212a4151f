//! Writing captures (pcap with nanosecond timestamps, pcapng with several interfaces), with
//! `pcap-parser`'s serialiser: the fuzz seeds and the tests build their captures with these, and
//! [`super::pcap_to_pcapng`] rewrites tcpdump's pcap output.

use std::borrow::Cow;

use pcap_parser::pcap::{LegacyPcapBlock, PcapHeader};
use pcap_parser::pcapng::{
    EnhancedPacketBlock, InterfaceDescriptionBlock, OptionCode, PcapNGOption, SectionHeaderBlock,
};
use pcap_parser::{Linktype, ToVec};

/// One packet to write: interface (pcapng; ignored by pcap), capture time (unix ns), frame.
#[derive(Debug, Clone)]
pub struct Packet {
    pub interface: u32,
    pub ts_ns: u64,
    pub data: Vec<u8>,
}

/// Why a capture could not be serialised (`pcap-parser`'s `GenError`, as text).
#[derive(Debug, thiserror::Error)]
#[error("capture serialisation: {0}")]
pub struct WriteError(pub String);

fn ser(e: impl std::fmt::Debug) -> WriteError {
    WriteError(format!("{e:?}"))
}

/// A pcap file (nanosecond-precision magic) of `packets` on one link type.
pub fn pcap_bytes(linktype: Linktype, packets: &[Packet]) -> Result<Vec<u8>, WriteError> {
    let mut header = PcapHeader::new();
    header.magic_number = 0xa1b2_3c4d; // nanosecond timestamps
    header.snaplen = 262_144;
    header.network = linktype;
    let mut out = header.to_vec().map_err(ser)?;
    for p in packets {
        let len = u32::try_from(p.data.len()).map_err(ser)?;
        let mut b = LegacyPcapBlock {
            ts_sec: u32::try_from(p.ts_ns / 1_000_000_000).map_err(ser)?,
            ts_usec: (p.ts_ns % 1_000_000_000) as u32,
            caplen: len,
            origlen: len,
            data: &p.data,
        };
        out.extend(b.to_vec().map_err(ser)?);
    }
    Ok(out)
}

/// The section header block that starts a pcapng file.
pub fn pcapng_section() -> Result<Vec<u8>, WriteError> {
    pcapng_section_with(vec![])
}

/// [`pcapng_section`] with `options` (a comment, as mergecap writes one, ...).
pub fn pcapng_section_with(options: Vec<PcapNGOption<'_>>) -> Result<Vec<u8>, WriteError> {
    let mut shb = SectionHeaderBlock {
        block_type: pcap_parser::SHB_MAGIC,
        block_len1: 0,
        bom: pcap_parser::BOM_MAGIC,
        major_version: 1,
        minor_version: 0,
        section_len: -1,
        options,
        block_len2: 0,
    };
    shb.to_vec().map_err(ser)
}

/// An interface description block with nanosecond timestamps.
pub fn pcapng_interface(linktype: Linktype, snaplen: u32) -> Result<Vec<u8>, WriteError> {
    let tsresol = [9u8];
    let mut idb = InterfaceDescriptionBlock {
        block_type: pcap_parser::IDB_MAGIC,
        block_len1: 0,
        linktype,
        reserved: 0,
        snaplen,
        options: vec![PcapNGOption {
            code: OptionCode::IfTsresol,
            len: 1,
            value: Cow::Borrowed(&tsresol),
        }],
        block_len2: 0,
        if_tsresol: 9,
        if_tsoffset: 0,
    };
    idb.to_vec().map_err(ser)
}

/// An enhanced packet block of interface `p.interface`, nanosecond timestamp.
pub fn pcapng_packet(p: &Packet, origlen: u32) -> Result<Vec<u8>, WriteError> {
    let mut epb = EnhancedPacketBlock {
        block_type: pcap_parser::EPB_MAGIC,
        block_len1: 0,
        if_id: p.interface,
        ts_high: (p.ts_ns >> 32) as u32,
        ts_low: p.ts_ns as u32,
        caplen: u32::try_from(p.data.len()).map_err(ser)?,
        origlen,
        data: &p.data,
        options: vec![],
        block_len2: 0,
    };
    epb.to_vec().map_err(ser)
}

/// A pcapng file: one section, one interface per entry of `interfaces`, then `packets`.
pub fn pcapng_bytes(interfaces: &[Linktype], packets: &[Packet]) -> Result<Vec<u8>, WriteError> {
    let mut out = pcapng_section()?;
    for &l in interfaces {
        out.extend(pcapng_interface(l, 262_144)?);
    }
    for p in packets {
        out.extend(pcapng_packet(p, u32::try_from(p.data.len()).map_err(ser)?)?);
    }
    Ok(out)
}

/// `photon-perf capture-tile`: a large capture made of a real one, for the parse-rate and memory
/// measurements of perf/RESULTS.md: the packets of `input` (pcap) written `copies` times, copy
/// `k` shifted in time by `k` times (the capture's span + 1 s) and its TCP ports by `k`
/// (so every copy is its own set of connections). Streams: memory holds one copy of `input`.
#[derive(clap::Args, Debug)]
pub struct TileArgs {
    /// A pcap capture (tcpdump -w).
    pub input: std::path::PathBuf,
    /// The pcap to write.
    pub output: std::path::PathBuf,
    /// How many copies.
    #[arg(long, default_value_t = 100)]
    pub copies: u32,
}

/// Runs `photon-perf capture-tile`.
pub fn run_tile(args: &TileArgs) -> Result<(), String> {
    use std::io::Write;
    let bytes = std::fs::read(&args.input).map_err(|e| format!("{}: {e}", args.input.display()))?;
    let (linktype, packets) = read_pcap_packets(&bytes)?;
    let first = packets.iter().map(|p| p.ts_ns).min().unwrap_or(0);
    let last = packets.iter().map(|p| p.ts_ns).max().unwrap_or(0);
    let step = last - first + 1_000_000_000;
    let file = std::fs::File::create(&args.output)
        .map_err(|e| format!("{}: {e}", args.output.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let werr = |e: std::io::Error| format!("{}: {e}", args.output.display());
    out.write_all(&pcap_bytes(linktype, &[]).map_err(|e| e.to_string())?)
        .map_err(werr)?;
    let mut written = 0u64;
    for k in 0..args.copies {
        for p in &packets {
            let mut data = p.data.clone();
            shift_ports(&mut data, linktype, k as u16);
            let q = Packet {
                interface: 0,
                ts_ns: p.ts_ns + u64::from(k) * step,
                data,
            };
            // The 24-byte file header is skipped: only the record.
            let rec = pcap_bytes(linktype, std::slice::from_ref(&q)).map_err(|e| e.to_string())?;
            out.write_all(&rec[24..]).map_err(werr)?;
            written += 1;
        }
    }
    out.flush().map_err(werr)?;
    println!(
        "{}: {written} packets ({} copies of {})",
        args.output.display(),
        args.copies,
        args.input.display()
    );
    Ok(())
}

/// Adds `k` to both TCP ports of a frame (wrapping), where it is TCP over IP.
fn shift_ports(frame: &mut [u8], linktype: Linktype, k: u16) {
    use etherparse::{SlicedPacket, TransportSlice};
    use pcap_parser::data::{get_packetdata, PacketData};
    let at = {
        let sliced = match get_packetdata(frame, linktype, frame.len()) {
            Some(PacketData::L2(eth)) => SlicedPacket::from_ethernet(eth),
            Some(PacketData::L3(t, ip)) => {
                SlicedPacket::from_ether_type(etherparse::EtherType(t), ip)
            }
            _ => return,
        };
        match sliced {
            Ok(SlicedPacket {
                transport: Some(TransportSlice::Tcp(tcp)),
                ..
            }) => tcp.slice().as_ptr() as usize - frame.as_ptr() as usize,
            _ => return,
        }
    };
    for off in [at, at + 2] {
        if let Some(b) = frame.get_mut(off..off + 2) {
            let port = u16::from_be_bytes([b[0], b[1]]).wrapping_add(k);
            b.copy_from_slice(&port.to_be_bytes());
        }
    }
}

/// The link type and packets of a pcap file in memory.
pub fn read_pcap_packets(bytes: &[u8]) -> Result<(Linktype, Vec<Packet>), String> {
    use pcap_parser::{create_reader, PcapBlockOwned, PcapError};
    let mut reader = create_reader(1 << 20, bytes).map_err(|e| e.to_string())?;
    let (mut linktype, mut nanos, mut out) = (Linktype::ETHERNET, false, Vec::new());
    loop {
        match reader.next() {
            Ok((n, block)) => {
                match block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        linktype = h.network;
                        nanos = h.is_nanosecond_precision();
                    }
                    PcapBlockOwned::Legacy(b) => out.push(Packet {
                        interface: 0,
                        ts_ns: u64::from(b.ts_sec) * 1_000_000_000
                            + u64::from(b.ts_usec) * if nanos { 1 } else { 1000 },
                        data: b.data.to_vec(),
                    }),
                    PcapBlockOwned::NG(_) => return Err("a pcapng file: pcap expected".into()),
                }
                reader.consume(n);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                if reader.reader_exhausted() {
                    break;
                }
                reader.refill().map_err(|e| e.to_string())?;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok((linktype, out))
}
