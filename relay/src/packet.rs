//! The relay's own Ethernet/ARP/IPv4/UDP/ICMP handling, sans-IO: pure functions over byte
//! slices, parsed with smoltcp's zero-copy `wire` views.
//!
//! - [`classify`] reads a received frame and says what to do with it ([`Action`]), from the
//!   headers alone: the payload of a fragment is never read.
//! - [`arp_reply_in_place`] and [`icmp_echo_reply_in_place`] turn a request into its answer in
//!   the same buffer.
//! - [`HeaderTemplate`] (per destination) and [`ForwardHeader`] (per fragment) build the
//!   78-byte Ethernet + IPv4 + UDP + Photon header of each fan-out copy.
//!
//! UDP checksums (the choice): a relay must not read the 1.2 KB payload per destination, nor,
//! ideally, at all. The received UDP checksum already contains the payload's ones'-complement
//! sum, so [`payload_sum`] recovers it by subtracting the sums of the pseudo-header, UDP header
//! and Photon header it arrived with (RFC 1624 incremental arithmetic, 60 bytes read); each
//! destination's checksum is then its own 78-byte header sum combined with that. Only when the
//! sender sent no checksum (0, legal in IPv4) or the UDP payload carries trailing bytes is the
//! payload summed, once per received packet. A payload corrupted on the way in keeps a checksum
//! that fails at the next receiver instead of being re-blessed. The payload itself is
//! authenticated end to end (§4.1), not by the relay.

use std::net::{Ipv4Addr, SocketAddrV4};

use photon_protocol::hopauth::{TagInput, AUTHENTICATED_LEN};
use photon_protocol::wire::{self, flags, FragmentKind, FragmentRepr, MessageType, HEADER_LEN};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    Icmpv4Message, Icmpv4Packet, IpProtocol, Ipv4Packet, UdpPacket,
};

use crate::forward::dedup::FragmentKey;
use crate::ops::counters::DropReason;

/// Ethernet header bytes.
pub const ETH_LEN: usize = 14;
/// IPv4 header bytes as the relay emits it (no options).
pub const IPV4_LEN: usize = 20;
/// UDP header bytes.
pub const UDP_LEN: usize = 8;
/// Ethernet + IPv4 + UDP, as emitted.
pub const L2L4_LEN: usize = ETH_LEN + IPV4_LEN + UDP_LEN;
/// A forwarded copy's whole header: Ethernet + IPv4 + UDP + Photon common header (78 bytes).
pub const FORWARD_HEADER_LEN: usize = L2L4_LEN + HEADER_LEN;
/// TTL of the relay's own packets.
pub const TTL: u8 = 64;

/// The relay's addresses as the classifier needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub udp_port: u16,
}

/// What the headers of a block fragment say (offsets into the frame and the fields the
/// forwarding decision needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentInfo {
    /// Offset of the UDP header.
    pub udp_offset: usize,
    /// Offset of the Photon header.
    pub photon_offset: usize,
    /// Photon header + payload bytes (what is forwarded).
    pub datagram_len: usize,
    /// UDP payload bytes as received (>= `datagram_len`; more means trailing bytes).
    pub udp_payload_len: usize,
    /// The UDP checksum as received (0: none).
    pub udp_checksum: u16,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub msg_type: u8,
    pub sender: u32,
    pub stream: u64,
    pub index: u16,
    /// The header's `count` and K (the store-and-forward hold reads them).
    pub count: u16,
    pub k: u16,
    pub hops: u8,
}

impl FragmentInfo {
    /// Offset where the fragment's payload (after the Photon header) starts.
    pub fn payload_offset(&self) -> usize {
        self.photon_offset + HEADER_LEN
    }

    /// Payload bytes after the Photon header.
    pub fn payload_len(&self) -> usize {
        self.datagram_len - HEADER_LEN
    }

    /// What the store-and-forward holder needs ([`crate::forward::hold`]), with `bytes` the cost of
    /// holding this fragment.
    pub fn hold_meta(&self, bytes: usize) -> crate::forward::hold::HoldMeta {
        let kind = match self.msg_type {
            t if t == MessageType::SourceShard.as_u8() => FragmentKind::Source,
            t if t == MessageType::RepairShard.as_u8() => FragmentKind::Repair,
            _ => FragmentKind::Manifest,
        };
        crate::forward::hold::HoldMeta {
            stream: self.stream,
            kind,
            count: self.count,
            k: self.k,
            bytes,
        }
    }

    /// The fragment's identity for dedup.
    pub fn dedup_key(&self) -> FragmentKey {
        FragmentKey {
            stream: self.stream,
            msg_type: self.msg_type,
            index: self.index,
        }
    }
}

/// What to do with a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A block fragment for the fan-out (still to be authenticated and deduplicated).
    Fragment(FragmentInfo),
    /// A Photon control message, an ARP reply or a retransmitted fragment: for the control path.
    Control,
    /// An ARP request for the relay's address: answer in place.
    ArpRequest,
    /// An ICMP echo request to the relay: answer in place.
    IcmpEcho,
    /// Drop and count.
    Drop(DropReason),
}

fn photon_error(e: wire::Error) -> DropReason {
    match e {
        wire::Error::BadMagic(_) => DropReason::NotPhoton,
        wire::Error::UnsupportedVersion(_) => DropReason::BadVersion,
        wire::Error::UnknownType(_) => DropReason::UnknownType,
        _ => DropReason::PhotonMalformed,
    }
}

/// Classifies a received Ethernet frame. Never panics, whatever the bytes.
pub fn classify(frame: &[u8], local: &Local) -> Action {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return Action::Drop(DropReason::EthMalformed);
    };
    let dst = eth.dst_addr();
    let for_us = dst.0 == local.mac;
    match eth.ethertype() {
        EthernetProtocol::Arp => {
            if !for_us && !dst.is_broadcast() {
                return Action::Drop(DropReason::NotOurMac);
            }
            classify_arp(eth.payload(), local)
        }
        EthernetProtocol::Ipv4 if for_us => classify_ipv4(eth.payload(), local),
        EthernetProtocol::Ipv4 => Action::Drop(DropReason::NotOurMac),
        _ => Action::Drop(DropReason::OtherEthertype),
    }
}

fn classify_arp(bytes: &[u8], local: &Local) -> Action {
    let Ok(arp) = ArpPacket::new_checked(bytes) else {
        return Action::Drop(DropReason::ArpOther);
    };
    match ArpRepr::parse(&arp) {
        Ok(ArpRepr::EthernetIpv4 {
            operation,
            source_protocol_addr,
            target_protocol_addr,
            ..
        }) => match operation {
            ArpOperation::Request if target_protocol_addr == local.ip => Action::ArpRequest,
            // Replies teach the control path a neighbour's MAC.
            ArpOperation::Reply if target_protocol_addr == local.ip => Action::Control,
            // Gratuitous ARP (sender = target address): a neighbour announcing its (maybe
            // new) MAC; the control path learns it if it is a next hop it resolves.
            ArpOperation::Request | ArpOperation::Reply
                if source_protocol_addr == target_protocol_addr
                    && source_protocol_addr != local.ip =>
            {
                Action::Control
            }
            _ => Action::Drop(DropReason::ArpOther),
        },
        _ => Action::Drop(DropReason::ArpOther),
    }
}

fn classify_ipv4(bytes: &[u8], local: &Local) -> Action {
    let Ok(ip) = Ipv4Packet::new_checked(bytes) else {
        return Action::Drop(DropReason::IpMalformed);
    };
    if ip.version() != 4 {
        return Action::Drop(DropReason::IpMalformed);
    }
    if !ip.verify_checksum() {
        return Action::Drop(DropReason::IpChecksum);
    }
    if ip.dst_addr() != local.ip {
        return Action::Drop(DropReason::NotOurIp);
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Action::Drop(DropReason::IpFragment);
    }
    let ip_hlen = usize::from(ip.header_len());
    match ip.next_header() {
        IpProtocol::Udp => classify_udp(&ip, ETH_LEN + ip_hlen, local),
        IpProtocol::Icmp => {
            let Ok(icmp) = Icmpv4Packet::new_checked(ip.payload()) else {
                return Action::Drop(DropReason::IcmpOther);
            };
            if icmp.msg_type() == Icmpv4Message::EchoRequest
                && icmp.msg_code() == 0
                && icmp.verify_checksum()
            {
                Action::IcmpEcho
            } else {
                Action::Drop(DropReason::IcmpOther)
            }
        }
        _ => Action::Drop(DropReason::OtherProtocol),
    }
}

fn classify_udp(ip: &Ipv4Packet<&[u8]>, udp_offset: usize, local: &Local) -> Action {
    let Ok(udp) = UdpPacket::new_checked(ip.payload()) else {
        return Action::Drop(DropReason::UdpMalformed);
    };
    if udp.dst_port() != local.udp_port {
        return Action::Drop(DropReason::WrongPort);
    }
    let place = UdpPlace {
        udp_offset,
        photon_offset: udp_offset + UDP_LEN,
        udp_checksum: udp.checksum(),
        src_ip: ip.src_addr(),
        dst_ip: ip.dst_addr(),
        src_port: udp.src_port(),
        dst_port: udp.dst_port(),
    };
    match classify_photon(udp.payload(), place) {
        Ok(Some(info)) => Action::Fragment(info),
        Ok(None) => Action::Control,
        Err(reason) => Action::Drop(reason),
    }
}

/// Where a UDP datagram was found and who sent it: what [`classify_photon`] needs besides its
/// bytes to describe a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPlace {
    /// Offset of the UDP header in the frame (0 when there is no frame: the socket backend).
    pub udp_offset: usize,
    /// Offset of the Photon header in the buffer the [`FragmentInfo`] offsets refer to.
    pub photon_offset: usize,
    /// The UDP checksum as received (0: none, or not seen).
    pub udp_checksum: u16,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
}

/// The Photon part of classification, shared by [`classify`] (Ethernet frames on the DPDK
/// path) and the kernel-socket backend ([`crate::socket::classify_datagram`]): `Ok(Some(_))` a
/// block fragment for the fan-out (still to be admitted), `Ok(None)` a message for the control
/// path (control messages, and retransmissions: they answer one requester's repair request
/// and are never fanned out again, §1.3), `Err(_)` a counted drop.
#[inline]
pub fn classify_photon(dgram: &[u8], place: UdpPlace) -> Result<Option<FragmentInfo>, DropReason> {
    let packet = wire::Packet::new_checked(dgram).map_err(photon_error)?;
    let msg_type = packet.msg_type().map_err(photon_error)?;
    if !msg_type.is_block_fragment() || packet.flags() & flags::RETRANSMIT != 0 {
        return Ok(None);
    }
    FragmentRepr::parse(&packet).map_err(photon_error)?;
    Ok(Some(FragmentInfo {
        udp_offset: place.udp_offset,
        photon_offset: place.photon_offset,
        datagram_len: packet.datagram().len(),
        udp_payload_len: dgram.len(),
        udp_checksum: place.udp_checksum,
        src_ip: place.src_ip,
        dst_ip: place.dst_ip,
        src_port: place.src_port,
        dst_port: place.dst_port,
        msg_type: msg_type.as_u8(),
        sender: packet.sender(),
        stream: packet.stream(),
        index: packet.index(),
        count: packet.count(),
        k: packet.k(),
        hops: packet.hops(),
    }))
}

// ---- ones'-complement arithmetic (RFC 1071 / RFC 1624) ----

/// Ones'-complement sum with end-around carry.
#[inline]
pub fn csum_add(a: u16, b: u16) -> u16 {
    let s = u32::from(a) + u32::from(b);
    ((s & 0xffff) + (s >> 16)) as u16
}

/// Ones'-complement difference: `a - b`.
#[inline]
pub fn csum_sub(a: u16, b: u16) -> u16 {
    csum_add(a, !b)
}

/// Ones'-complement sum of big-endian 16-bit words (an odd last byte is padded with zero),
/// without the final complement.
///
/// `#[inline]`: on the per-copy path it sums the 36-byte Photon header, a length the compiler
/// knows there, so the loop unrolls into a handful of loads and adds.
#[inline]
pub fn csum_data(data: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        // Sum 32-bit halves in a u64: ones'-complement sums may be taken in any word size.
        acc += (w >> 32) + (w & 0xffff_ffff);
    }
    let mut rest = chunks.remainder();
    while rest.len() >= 2 {
        acc += u64::from(u16::from_be_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
    }
    if let Some(&b) = rest.first() {
        acc += u64::from(b) << 8;
    }
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, udp_len: u16) -> u16 {
    let s = src.octets();
    let d = dst.octets();
    let words = [
        u16::from_be_bytes([s[0], s[1]]),
        u16::from_be_bytes([s[2], s[3]]),
        u16::from_be_bytes([d[0], d[1]]),
        u16::from_be_bytes([d[2], d[3]]),
        u16::from(u8::from(IpProtocol::Udp)),
        udp_len,
    ];
    words.iter().fold(0, |a, &w| csum_add(a, w))
}

/// The ones'-complement sum of the fragment's payload (the bytes after the Photon header),
/// recovered from the received UDP checksum without reading the payload when possible (see the
/// module docs), else computed over it.
pub fn payload_sum(frame: &[u8], info: &FragmentInfo) -> u16 {
    let payload = frame
        .get(info.payload_offset()..info.photon_offset + info.datagram_len)
        .unwrap_or(&[]);
    if info.udp_checksum == 0 || info.udp_payload_len != info.datagram_len {
        return csum_data(payload);
    }
    let udp_len = (UDP_LEN + info.udp_payload_len) as u16;
    let photon = frame
        .get(info.photon_offset..info.payload_offset())
        .unwrap_or(&[]);
    let total = !info.udp_checksum;
    let known = [
        pseudo_header_sum(info.src_ip, info.dst_ip, udp_len),
        info.src_port,
        info.dst_port,
        udp_len,
        csum_data(photon),
    ];
    known.iter().fold(total, |acc, &k| csum_sub(acc, k))
}

/// The constant part of the Ethernet + IPv4 + UDP header towards one destination, with the
/// partial checksums of its constant fields; built once per peer when a table is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderTemplate {
    bytes: [u8; L2L4_LEN],
    ip_sum: u16,
    udp_sum: u16,
}

impl HeaderTemplate {
    /// [`HeaderTemplate::new`] with each end's IP and UDP port as one socket address.
    pub fn between(
        src_mac: [u8; 6],
        src: SocketAddrV4,
        dst_mac: [u8; 6],
        dst: SocketAddrV4,
    ) -> HeaderTemplate {
        HeaderTemplate::new(
            src_mac,
            *src.ip(),
            src.port(),
            dst_mac,
            *dst.ip(),
            dst.port(),
        )
    }

    /// A template for frames from `src` (MAC, IP, UDP port) to `dst_mac` / `dst_ip:dst_port`.
    pub fn new(
        src_mac: [u8; 6],
        src_ip: Ipv4Addr,
        src_port: u16,
        dst_mac: [u8; 6],
        dst_ip: Ipv4Addr,
        dst_port: u16,
    ) -> HeaderTemplate {
        let mut bytes = [0u8; L2L4_LEN];
        {
            let mut eth = EthernetFrame::new_unchecked(&mut bytes[..]);
            eth.set_dst_addr(EthernetAddress(dst_mac));
            eth.set_src_addr(EthernetAddress(src_mac));
            eth.set_ethertype(EthernetProtocol::Ipv4);
        }
        {
            let mut ip = Ipv4Packet::new_unchecked(&mut bytes[ETH_LEN..ETH_LEN + IPV4_LEN]);
            ip.set_version(4);
            ip.set_header_len(IPV4_LEN as u8);
            ip.set_dscp(0);
            ip.set_ecn(0);
            ip.set_total_len(0);
            ip.set_ident(0);
            ip.clear_flags();
            // DF: Photon datagrams are sized never to need fragmentation (§1.1); with DF the
            // identification field may be constant (RFC 6864).
            ip.set_dont_frag(true);
            ip.set_frag_offset(0);
            ip.set_hop_limit(TTL);
            ip.set_next_header(IpProtocol::Udp);
            ip.set_checksum(0);
            ip.set_src_addr(src_ip);
            ip.set_dst_addr(dst_ip);
        }
        {
            let mut udp = UdpPacket::new_unchecked(&mut bytes[ETH_LEN + IPV4_LEN..]);
            udp.set_src_port(src_port);
            udp.set_dst_port(dst_port);
            udp.set_len(0);
            udp.set_checksum(0);
        }
        let ip_sum = csum_data(&bytes[ETH_LEN..ETH_LEN + IPV4_LEN]);
        let udp_sum = csum_add(
            pseudo_header_sum(src_ip, dst_ip, 0),
            csum_add(src_port, dst_port),
        );
        HeaderTemplate {
            bytes,
            ip_sum,
            udp_sum,
        }
    }

    /// The template bytes (lengths and checksums zero).
    pub fn bytes(&self) -> &[u8; L2L4_LEN] {
        &self.bytes
    }
}

/// What every copy of one forwarded fragment shares, computed once per fragment: the Photon
/// header as sent (the received one with `sender` and `hops` rewritten, tag field zero), its
/// covered bytes as the hop tag's message words ([`TagInput`]), the lengths, and the
/// ones'-complement sum of everything in the UDP checksum except the destination's addresses
/// (in the [`HeaderTemplate`]) and its tag. A copy then costs the template copy, the header
/// copy, one tag and two checksum additions ([`ForwardHeader::write`]).
#[derive(Debug, Clone)]
pub struct ForwardHeader {
    photon: [u8; HEADER_LEN],
    tag_input: TagInput,
    udp_len: u16,
    total_len: u16,
    /// UDP length (twice: header field and pseudo-header), `photon[..28]` and the payload.
    sum: u16,
}

impl ForwardHeader {
    /// The shared part of the copies of a fragment whose received Photon header is `photon_in`
    /// (at least [`HEADER_LEN`] bytes, else `None`), sent on by `sender` with `hops`, followed
    /// by a payload of `payload_len` bytes summing to `payload_sum` ([`payload_sum`]).
    #[inline]
    pub fn new(
        photon_in: &[u8],
        sender: u32,
        hops: u8,
        payload_len: usize,
        payload_sum: u16,
    ) -> Option<ForwardHeader> {
        let mut photon = [0u8; HEADER_LEN];
        photon.copy_from_slice(photon_in.get(..HEADER_LEN)?);
        {
            let mut p = wire::Packet::new_unchecked(&mut photon[..]);
            p.set_sender(sender);
            p.set_hops(hops);
            p.set_hop_tag(0);
        }
        let covered: &[u8; AUTHENTICATED_LEN] = photon[..AUTHENTICATED_LEN].try_into().ok()?;
        let tag_input = TagInput::new(covered);
        let udp_len = u16::try_from(UDP_LEN + HEADER_LEN + payload_len).ok()?;
        let total_len = (IPV4_LEN as u16).checked_add(udp_len)?;
        let sum = [udp_len, udp_len, csum_data(covered), payload_sum]
            .into_iter()
            .fold(0, csum_add);
        Some(ForwardHeader {
            photon,
            tag_input,
            udp_len,
            total_len,
            sum,
        })
    }

    /// The hop tag's message: sign it with the destination link's key
    /// ([`photon_protocol::hopauth::HopKey::tag_input`]).
    #[inline]
    pub fn tag_input(&self) -> &TagInput {
        &self.tag_input
    }

    /// The Photon header as sent, tag field zero.
    pub fn photon(&self) -> &[u8; HEADER_LEN] {
        &self.photon
    }

    /// Writes the Photon header as sent, with `tag`, into `out[..HEADER_LEN]` (the whole of a
    /// copy's header where the kernel adds Ethernet/IPv4/UDP: the socket backend). Returns the
    /// bytes written, or `None` if `out` is short.
    #[inline]
    pub fn write_photon(&self, out: &mut [u8], tag: u64) -> Option<usize> {
        let out = out.get_mut(..HEADER_LEN)?;
        out.copy_from_slice(&self.photon);
        out[AUTHENTICATED_LEN..].copy_from_slice(&tag.to_be_bytes());
        Some(HEADER_LEN)
    }

    /// Writes one copy's 78-byte header into `out[..FORWARD_HEADER_LEN]`: the destination's
    /// template with lengths and checksums filled in, then the Photon header with `tag`.
    /// Returns the bytes written, or `None` if `out` is short.
    #[inline]
    pub fn write(&self, out: &mut [u8], template: &HeaderTemplate, tag: u64) -> Option<usize> {
        let out = out.get_mut(..FORWARD_HEADER_LEN)?;
        let (l2l4, photon) = out.split_at_mut(L2L4_LEN);
        l2l4.copy_from_slice(&template.bytes);
        self.write_photon(photon, tag)?;
        let ip_csum = !csum_add(template.ip_sum, self.total_len);
        // The tag's four 16-bit words, summed in 32-bit halves and folded.
        let mut t = (tag >> 32) + (tag & 0xffff_ffff);
        t = (t & 0xffff) + (t >> 16);
        t = (t & 0xffff) + (t >> 16);
        t = (t & 0xffff) + (t >> 16);
        let udp_sum = csum_add(csum_add(template.udp_sum, self.sum), t as u16);
        let udp_csum = match !udp_sum {
            0 => 0xffff, // 0 means "no checksum" in UDP: send the other zero
            c => c,
        };
        let ip = &mut l2l4[ETH_LEN..];
        ip[2..4].copy_from_slice(&self.total_len.to_be_bytes());
        ip[10..12].copy_from_slice(&ip_csum.to_be_bytes());
        let udp = &mut l2l4[ETH_LEN + IPV4_LEN..];
        udp[4..6].copy_from_slice(&self.udp_len.to_be_bytes());
        udp[6..8].copy_from_slice(&udp_csum.to_be_bytes());
        Some(FORWARD_HEADER_LEN)
    }
}

/// Writes one forwarded copy's header into `out[..FORWARD_HEADER_LEN]`: the template's
/// Ethernet/IPv4/UDP header with lengths and checksums filled in, then the received Photon
/// header `photon_in` with `sender` and `hops` rewritten and the hop tag computed by `sign`
/// (the destination link's key, §4.2, over the header as sent with a zero tag field).
/// `payload_len` and `payload_sum` describe the shared payload that follows. Returns the bytes
/// written, or `None` if `out` or `photon_in` is short. One copy's worth of
/// [`ForwardHeader`]: the fan-out builds that once and writes it per destination.
// Eight plain arguments rather than a struct built per call.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn write_forward_header(
    out: &mut [u8],
    template: &HeaderTemplate,
    photon_in: &[u8],
    sender: u32,
    hops: u8,
    payload_len: usize,
    payload_sum: u16,
    sign: impl FnOnce(&[u8]) -> u64,
) -> Option<usize> {
    let h = ForwardHeader::new(photon_in, sender, hops, payload_len, payload_sum)?;
    let tag = sign(h.photon());
    h.write(out, template, tag)
}

/// Where a control datagram came from, as the driver saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// Source IPv4 address and UDP port (after any NAT).
    pub addr: SocketAddrV4,
    /// Next-hop MAC towards it (DPDK: the frame's source MAC; sockets: zero, unused).
    pub mac: [u8; 6],
    /// Relay port it arrived on (DPDK port index; sockets: 0).
    pub port: u16,
}

impl Source {
    /// A source seen through a kernel socket (no MAC, port 0).
    pub fn socket(addr: SocketAddrV4) -> Source {
        Source {
            addr,
            mac: [0; 6],
            port: 0,
        }
    }
}

/// Where a received frame came from and its UDP payload (`None`: not IPv4/UDP).
pub fn parse_udp<'a>(frame: &'a [u8], port_macs: &[[u8; 6]]) -> Option<(Source, &'a [u8])> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.next_header() != IpProtocol::Udp {
        return None;
    }
    let udp = UdpPacket::new_checked(ip.payload()).ok()?;
    let port = port_macs
        .iter()
        .position(|m| *m == eth.dst_addr().0)
        .unwrap_or(0) as u16;
    let src = Source {
        addr: SocketAddrV4::new(ip.src_addr(), udp.src_port()),
        mac: eth.src_addr().0,
        port,
    };
    let off = ETH_LEN + usize::from(ip.header_len()) + UDP_LEN;
    let len = usize::from(udp.len()).checked_sub(UDP_LEN)?;
    Some((src, frame.get(off..off + len)?))
}

/// Turns an ARP request for `local.ip` (as [`classify`] found it) into the reply, in place.
/// Returns false (and leaves the frame alone) if it is not such a request.
pub fn arp_reply_in_place(frame: &mut [u8], local: &Local) -> bool {
    let Ok(mut eth) = EthernetFrame::new_checked(&mut *frame) else {
        return false;
    };
    let requester_mac;
    let requester_ip;
    {
        let Ok(arp) = ArpPacket::new_checked(eth.payload_mut()) else {
            return false;
        };
        match ArpRepr::parse(&arp) {
            Ok(ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Request,
                source_hardware_addr,
                source_protocol_addr,
                target_protocol_addr,
                ..
            }) if target_protocol_addr == local.ip => {
                requester_mac = source_hardware_addr;
                requester_ip = source_protocol_addr;
            }
            _ => return false,
        }
    }
    eth.set_dst_addr(requester_mac);
    eth.set_src_addr(EthernetAddress(local.mac));
    let Ok(mut arp) = ArpPacket::new_checked(eth.payload_mut()) else {
        return false;
    };
    ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: EthernetAddress(local.mac),
        source_protocol_addr: local.ip,
        target_hardware_addr: requester_mac,
        target_protocol_addr: requester_ip,
    }
    .emit(&mut arp);
    true
}

/// Writes an ARP request for `target` from `local` into `out` (42 bytes; for the control path,
/// which resolves next hops). Returns the frame length, or `None` if `out` is short.
pub fn emit_arp_request(out: &mut [u8], local: &Local, target: Ipv4Addr) -> Option<usize> {
    const LEN: usize = ETH_LEN + 28;
    let out = out.get_mut(..LEN)?;
    let mut eth = EthernetFrame::new_unchecked(&mut *out);
    eth.set_dst_addr(EthernetAddress::BROADCAST);
    eth.set_src_addr(EthernetAddress(local.mac));
    eth.set_ethertype(EthernetProtocol::Arp);
    let mut arp = ArpPacket::new_unchecked(eth.payload_mut());
    ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(local.mac),
        source_protocol_addr: local.ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    }
    .emit(&mut arp);
    Some(LEN)
}

/// Parses an ARP frame into (sender IP, sender MAC), for neighbour learning on the control path.
pub fn arp_sender(frame: &[u8]) -> Option<(Ipv4Addr, [u8; 6])> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Arp {
        return None;
    }
    let arp = ArpPacket::new_checked(eth.payload()).ok()?;
    match ArpRepr::parse(&arp).ok()? {
        ArpRepr::EthernetIpv4 {
            source_hardware_addr,
            source_protocol_addr,
            ..
        } => Some((source_protocol_addr, source_hardware_addr.0)),
        _ => None,
    }
}

/// Turns an ICMP echo request to `local.ip` into the echo reply, in place. Returns false (frame
/// unchanged) if it is not one.
pub fn icmp_echo_reply_in_place(frame: &mut [u8], local: &Local) -> bool {
    if classify(frame, local) != Action::IcmpEcho {
        return false;
    }
    let Ok(mut eth) = EthernetFrame::new_checked(&mut *frame) else {
        return false;
    };
    let peer_mac = eth.src_addr();
    eth.set_dst_addr(peer_mac);
    eth.set_src_addr(EthernetAddress(local.mac));
    let Ok(mut ip) = Ipv4Packet::new_checked(eth.payload_mut()) else {
        return false;
    };
    let peer_ip = ip.src_addr();
    ip.set_src_addr(local.ip);
    ip.set_dst_addr(peer_ip);
    ip.set_hop_limit(TTL);
    ip.fill_checksum();
    let Ok(mut icmp) = Icmpv4Packet::new_checked(ip.payload_mut()) else {
        return false;
    };
    icmp.set_msg_type(Icmpv4Message::EchoReply);
    // Echo requests are rare and small: recompute over the message.
    icmp.fill_checksum();
    true
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use super::*;

    #[test]
    fn parse_udp_finds_source_and_payload() {
        let t = HeaderTemplate::new(
            [2, 0, 0, 0, 0, 9],
            Ipv4Addr::new(10, 0, 0, 9),
            5555,
            [2, 0, 0, 0, 0, 1],
            Ipv4Addr::new(10, 0, 0, 1),
            4433,
        );
        let mut frame = t.bytes().to_vec();
        frame.extend_from_slice(b"photon-datagram");
        let total = (frame.len() - ETH_LEN) as u16;
        frame[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&total.to_be_bytes());
        let udp_len = total - IPV4_LEN as u16;
        frame[ETH_LEN + IPV4_LEN + 4..ETH_LEN + IPV4_LEN + 6]
            .copy_from_slice(&udp_len.to_be_bytes());
        let (src, payload) =
            parse_udp(&frame, &[[2, 0, 0, 0, 0, 7], [2, 0, 0, 0, 0, 1]]).expect("a UDP frame");
        assert_eq!(
            src.addr,
            SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 9), 5555)
        );
        assert_eq!(src.mac, [2, 0, 0, 0, 0, 9]);
        assert_eq!(src.port, 1, "the port whose MAC it was sent to");
        assert_eq!(payload, b"photon-datagram");
    }
}
