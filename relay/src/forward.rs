//! The forwarding sequence, sans-IO: is this fragment forwarded ([`admit`]), is it held
//! ([`hold`]), and what header does each copy get ([`copy_header`], [`write_copy`],
//! [`copy_tags`]). [`sequence::Forwarder`] runs them in order for both backends; the tests call
//! them on plain byte vectors.

pub mod dedup;
pub mod hold;
pub mod publish;
pub mod sequence;
pub mod table;

use photon_protocol::hopauth::{tags_x4, HopKey};
use photon_protocol::wire::HEADER_LEN;

use self::dedup::{Dedup, Seen};
use self::table::{Peer, Table};
use crate::ops::counters::{Counter, DropReason, LocalCounters};
use crate::packet::{ForwardHeader, FragmentInfo};

/// Why a classified fragment is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Dropped for a reason counted as a drop.
    Drop(DropReason),
    /// Already forwarded (counted as a dedup hit).
    Duplicate,
}

/// Checks, in this order: the sender is in the table, its session exists, its hop tag verifies
/// (so forged fragments can neither be forwarded nor poison the dedup table), a gateway sends
/// only its own streams ([`PeerKind::may_send`](table::PeerKind::may_send): no member can
/// take another's dedup slots, hold or repair cache), the hop limit,
/// that someone is subscribed, and finally dedup (`now`: the coarse clock of
/// [`Dedup::check_insert`]). Returns the sender's slot.
#[inline]
pub fn admit(
    table: &Table,
    dedup: &Dedup,
    frame: &[u8],
    info: &FragmentInfo,
    now: u16,
) -> Result<usize, Reject> {
    let slot = table
        .slot_of(info.sender)
        .ok_or(Reject::Drop(DropReason::UnknownSender))?;
    let peer = table
        .peer(slot)
        .ok_or(Reject::Drop(DropReason::UnknownSender))?;
    let keys = peer
        .spec
        .keys
        .as_ref()
        .ok_or(Reject::Drop(DropReason::NoSession))?;
    let header = frame
        .get(info.photon_offset..info.photon_offset + HEADER_LEN)
        .unwrap_or(&[]);
    if !keys.recv.verify(header) {
        return Err(Reject::Drop(DropReason::BadHopTag));
    }
    if !peer.spec.kind.may_send(info.stream) {
        return Err(Reject::Drop(DropReason::ForeignStream));
    }
    if info.hops >= table.local().max_hops {
        return Err(Reject::Drop(DropReason::HopLimit));
    }
    if table.destination_count(slot) == 0 {
        return Err(Reject::Drop(DropReason::NoDestination));
    }
    match dedup.check_insert(&info.dedup_key(), now) {
        Seen::New => Ok(slot),
        Seen::Duplicate => Err(Reject::Duplicate),
    }
}

/// [`admit`] with its outcome counted, as both backends count it: a duplicate as a dedup hit,
/// a drop under its reason, an admitted fragment under `fragments`. Returns the sender's slot
/// of an admitted fragment.
#[inline]
pub fn admit_counted(
    table: &Table,
    dedup: &Dedup,
    frame: &[u8],
    info: &FragmentInfo,
    now: u16,
    counters: &mut LocalCounters,
) -> Option<usize> {
    match admit(table, dedup, frame, info, now) {
        Ok(slot) => {
            counters.inc(Counter::Fragments);
            Some(slot)
        }
        Err(Reject::Duplicate) => {
            counters.inc(Counter::DedupHits);
            None
        }
        Err(Reject::Drop(r)) => {
            counters.drop(r);
            None
        }
    }
}

/// What all copies of an admitted fragment share ([`ForwardHeader`]): the received Photon
/// header `photon_in` with `sender` = this relay and `hops` + 1, the payload's length and its
/// sum `payload_sum` (from [`crate::packet::payload_sum`], once per received fragment). `None`
/// if `photon_in` is short or the lengths overflow.
#[inline]
pub fn copy_header(
    table: &Table,
    photon_in: &[u8],
    info: &FragmentInfo,
    payload_sum: u16,
) -> Option<ForwardHeader> {
    ForwardHeader::new(
        photon_in,
        table.local().node_id,
        info.hops.saturating_add(1),
        info.payload_len(),
        payload_sum,
    )
}

/// Writes the 78-byte header of the copy of `shared` for `dest` into `out`:
/// Ethernet/IPv4/UDP towards the peer's observed address and the hop tag under the link's send
/// key. Returns the length, or `None` if `out` is short or `dest` has no key.
#[inline]
pub fn write_copy(out: &mut [u8], shared: &ForwardHeader, dest: &Peer) -> Option<usize> {
    let keys = dest.spec.keys.as_ref()?;
    shared.write(out, &dest.template, keys.send.tag_input(shared.tag_input()))
}

/// Writes the 36-byte Photon header of the copy for `dest` into `out` (the socket backend's
/// copies: the kernel adds the rest), the hop tag under the link's send key. Returns the
/// length, or `None` if `out` is short or `dest` has no key.
#[inline]
pub fn write_copy_photon(out: &mut [u8], shared: &ForwardHeader, dest: &Peer) -> Option<usize> {
    let keys = dest.spec.keys.as_ref()?;
    shared.write_photon(out, keys.send.tag_input(shared.tag_input()))
}

/// The hop tags of `shared` towards each of `dests` (under each link's send key) into
/// `tags[..dests.len()]`, four keys at a time ([`tags_x4`]: the four SipHash chains
/// interleave). A destination without a key gets 0, and no copy ([`write_copy_tagged`]).
#[inline]
pub fn copy_tags(shared: &ForwardHeader, dests: &[Option<&Peer>], tags: &mut [u64]) {
    fn key<'a>(d: &Option<&'a Peer>) -> Option<&'a HopKey> {
        d.and_then(|p| p.spec.keys.as_ref()).map(|k| &k.send)
    }
    let input = shared.tag_input();
    let mut chunks = dests.chunks_exact(4);
    let mut out = tags.chunks_exact_mut(4);
    for (d, t) in (&mut chunks).zip(&mut out) {
        match (key(&d[0]), key(&d[1]), key(&d[2]), key(&d[3])) {
            (Some(a), Some(b), Some(c), Some(e)) => {
                t.copy_from_slice(&tags_x4([a, b, c, e], input))
            }
            _ => {
                for (t, d) in t.iter_mut().zip(d) {
                    *t = key(d).map_or(0, |k| k.tag_input(input));
                }
            }
        }
    }
    for (t, d) in out.into_remainder().iter_mut().zip(chunks.remainder()) {
        *t = key(d).map_or(0, |k| k.tag_input(input));
    }
}

/// [`write_copy`] with the tag already computed ([`copy_tags`]); `None` also when `dest` has
/// no key.
#[inline]
pub fn write_copy_tagged(
    out: &mut [u8],
    shared: &ForwardHeader,
    dest: &Peer,
    tag: u64,
) -> Option<usize> {
    dest.spec.keys.as_ref()?;
    shared.write(out, &dest.template, tag)
}

/// [`copy_header`] and [`write_copy`] for one destination (tests, fuzzing).
#[inline]
pub fn write_copy_header(
    out: &mut [u8],
    table: &Table,
    dest: &Peer,
    photon_in: &[u8],
    info: &FragmentInfo,
    payload_sum: u16,
) -> Option<usize> {
    write_copy(
        out,
        &copy_header(table, photon_in, info, payload_sum)?,
        dest,
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use photon_protocol::wire::{
        flags, FragmentKind, FragmentRepr, HeaderRepr, MessageType, Packet,
    };
    use smoltcp::wire::{EthernetFrame, IpAddress, Ipv4Packet, UdpPacket};

    use super::*;
    use crate::forward::table::{LocalSpec, PeerSpec};
    use crate::packet::{classify, payload_sum, Action, Local, FORWARD_HEADER_LEN};
    use crate::testkit;

    pub const RELAY_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    pub const RELAY_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    pub const PORT: u16 = 4433;

    pub use crate::testkit::keys_of;

    pub fn peer_addr(id: u32) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, id as u8), 5000 + id as u16)
    }

    pub fn peer_mac(id: u32) -> [u8; 6] {
        [2, 0, 0, 0, 1, id as u8]
    }

    /// Test gateway `id` ([`testkit::gateway`]: its streams are those below 2^32).
    pub fn gateway(id: u32) -> PeerSpec {
        testkit::gateway(id, peer_addr(id), peer_mac(id))
    }

    /// The relay (node 1) with `peers`.
    pub fn table_of(peers: Vec<PeerSpec>) -> Table {
        let local = LocalSpec {
            node_id: 1,
            ip: RELAY_IP,
            udp_port: PORT,
            port_macs: vec![RELAY_MAC],
            max_hops: 4,
        };
        Table::new(local, peers).unwrap()
    }

    pub fn table(ids: &[u32]) -> Table {
        table_of(ids.iter().map(|&id| gateway(id)).collect())
    }

    pub fn local() -> Local {
        Local {
            mac: RELAY_MAC,
            ip: RELAY_IP,
            udp_port: PORT,
        }
    }

    /// A fragment frame as peer `from` sends it to the relay, signed with its key, with a real
    /// UDP checksum (or none when `udp_csum` is false).
    pub fn fragment_frame(
        from: u32,
        stream: u64,
        index: u16,
        payload: &[u8],
        hops: u8,
        udp_csum: bool,
    ) -> Vec<u8> {
        let f = FragmentRepr {
            kind: FragmentKind::Source,
            stream,
            index,
            count: 100,
            k: 100,
            r: 10,
            payload,
        };
        let dgram = testkit::signed_fragment(&f, from, hops, &keys_of(from).recv);
        udp_frame(from, &dgram, udp_csum)
    }

    /// Wraps a datagram in Ethernet/IPv4/UDP from peer `from` to the relay.
    pub fn udp_frame(from: u32, dgram: &[u8], udp_csum: bool) -> Vec<u8> {
        testkit::to_relay(peer_mac(from), peer_addr(from), dgram, udp_csum)
    }

    /// Runs the whole decision on a frame the way the pipeline does, and returns the copies
    /// (destination node id, bytes).
    pub fn forward(
        table: &Table,
        dedup: &Dedup,
        frame: &[u8],
    ) -> Result<Vec<(u32, Vec<u8>)>, Reject> {
        let Action::Fragment(info) = classify(frame, &local()) else {
            panic!("not a fragment: {:?}", classify(frame, &local()));
        };
        let from = admit(table, dedup, frame, &info, 0)?;
        let sum = payload_sum(frame, &info);
        let payload = &frame[info.payload_offset()..info.photon_offset + info.datagram_len];
        Ok(table
            .destinations(from)
            .map(|(_, dest)| {
                let mut out = vec![0u8; FORWARD_HEADER_LEN];
                let photon_in = &frame[info.photon_offset..];
                assert_eq!(
                    write_copy_header(&mut out, table, dest, photon_in, &info, sum),
                    Some(FORWARD_HEADER_LEN)
                );
                out.extend_from_slice(payload);
                (dest.spec.node_id, out)
            })
            .collect())
    }

    fn check_copy(to: u32, copy: &[u8], payload: &[u8], hops: u8) {
        let eth = EthernetFrame::new_checked(copy).unwrap();
        assert_eq!(eth.dst_addr().0, peer_mac(to));
        assert_eq!(eth.src_addr().0, RELAY_MAC);
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum(), "IPv4 checksum of the copy to {to}");
        assert_eq!(
            (ip.src_addr(), ip.dst_addr()),
            (RELAY_IP, *peer_addr(to).ip())
        );
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(
            (udp.src_port(), udp.dst_port()),
            (PORT, peer_addr(to).port())
        );
        assert!(
            udp.verify_checksum(
                &IpAddress::Ipv4(RELAY_IP),
                &IpAddress::Ipv4(*peer_addr(to).ip())
            ),
            "UDP checksum of the copy to {to}"
        );
        let p = Packet::new_checked(udp.payload()).unwrap();
        let h = HeaderRepr::parse(&p).unwrap();
        assert_eq!(
            (h.sender, h.hops, h.msg_type),
            (1, hops, MessageType::SourceShard)
        );
        assert!(
            keys_of(to).send.verify(p.header()),
            "hop tag under the relay→{to} key"
        );
        assert_eq!(p.payload(), payload, "payload forwarded untouched");
    }

    #[test]
    fn fans_out_to_every_subscriber_but_the_sender_with_valid_checksums_and_tags() {
        let t = table(&[2, 3, 4, 5]);
        let d = Dedup::new(1024, [0, 0]);
        for (stream, (udp_csum, len)) in [(true, 1196usize), (true, 777), (false, 1196), (true, 1)]
            .into_iter()
            .enumerate()
        {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let frame = fragment_frame(3, stream as u64, 9, &payload, 1, udp_csum);
            let copies = forward(&t, &d, &frame).unwrap();
            let to: Vec<u32> = copies.iter().map(|c| c.0).collect();
            assert_eq!(to, vec![2, 4, 5], "everyone but the sender 3");
            for (id, c) in &copies {
                check_copy(*id, c, &payload, 2);
            }
        }
    }

    #[test]
    fn copy_tags_match_each_links_key_in_every_grouping() {
        // 11 slots: a full group of four (the four-lane path), a group with a hole (no key:
        // one at a time, the hole gets 0), and a remainder of two.
        let t = table(&[2, 3, 4, 5, 6, 7, 8]);
        let frame = fragment_frame(2, 5, 1, &[9u8; 300], 0, true);
        let Action::Fragment(info) = classify(&frame, &local()) else {
            panic!("a fragment")
        };
        let photon_in = &frame[info.photon_offset..];
        let shared = copy_header(&t, photon_in, &info, payload_sum(&frame, &info)).unwrap();
        let peer = |id| t.peer(t.slot_of(id).unwrap());
        let dests: Vec<Option<&Peer>> = [3, 4, 5, 6, 7, 0, 8, 3, 4, 5, 6]
            .into_iter()
            .map(|id| if id == 0 { None } else { peer(id) })
            .collect();
        let mut tags = vec![u64::MAX; dests.len()];
        copy_tags(&shared, &dests, &mut tags);
        for (d, &tag) in dests.iter().zip(&tags) {
            match d {
                Some(p) => {
                    let key = &p.spec.keys.as_ref().unwrap().send;
                    assert_eq!(tag, key.tag(shared.photon()), "to {}", p.spec.node_id);
                    let mut out = [0u8; FORWARD_HEADER_LEN];
                    assert_eq!(
                        write_copy_tagged(&mut out, &shared, p, tag),
                        write_copy(&mut [0u8; FORWARD_HEADER_LEN], &shared, p)
                    );
                    assert!(key.verify(&out[FORWARD_HEADER_LEN - HEADER_LEN..]));
                }
                None => assert_eq!(tag, 0),
            }
        }
    }

    #[test]
    fn trailing_bytes_are_not_forwarded_and_checksum_still_right() {
        let t = table(&[2, 3]);
        let d = Dedup::new(1024, [0, 0]);
        let payload = vec![0xabu8; 301];
        let f = FragmentRepr {
            kind: FragmentKind::Repair,
            stream: 1,
            index: 0,
            count: 10,
            k: 100,
            r: 10,
            payload: &payload,
        };
        let mut dgram = testkit::signed_fragment(&f, 2, 0, &keys_of(2).recv);
        dgram.extend_from_slice(&[0xee; 5]); // trailing bytes inside the UDP payload
        let frame = udp_frame(2, &dgram, true);
        let copies = forward(&t, &d, &frame).unwrap();
        assert_eq!(copies.len(), 1);
        let eth = EthernetFrame::new_checked(&copies[0].1[..]).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(udp.payload().len(), 36 + 301);
        assert!(udp.verify_checksum(
            &IpAddress::Ipv4(RELAY_IP),
            &IpAddress::Ipv4(*peer_addr(3).ip())
        ));
    }

    #[test]
    fn duplicate_is_forwarded_once_even_from_another_peer() {
        let t = table(&[2, 3, 4]);
        let d = Dedup::new(1024, [1, 1]);
        let payload = [1u8; 100];
        assert_eq!(
            forward(&t, &d, &fragment_frame(2, 77, 5, &payload, 0, true))
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            forward(&t, &d, &fragment_frame(2, 77, 5, &payload, 0, true)),
            Err(Reject::Duplicate)
        );
        assert_eq!(
            forward(&t, &d, &fragment_frame(3, 77, 5, &payload, 1, true)),
            Err(Reject::Duplicate),
            "second path"
        );
        assert_eq!(
            forward(&t, &d, &fragment_frame(3, 77, 6, &payload, 1, true))
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn unknown_sender_bad_tag_no_session_and_hop_limit_are_dropped() {
        let t = table(&[2, 3]);
        let d = Dedup::new(1024, [2, 2]);
        let payload = [1u8; 50];
        assert_eq!(
            forward(&t, &d, &fragment_frame(9, 1, 0, &payload, 0, true)),
            Err(Reject::Drop(DropReason::UnknownSender))
        );
        let mut forged = fragment_frame(2, 1, 0, &payload, 0, true);
        forged[42 + 8] ^= 1; // stream byte: the tag no longer matches
        assert_eq!(
            forward(&t, &d, &forged),
            Err(Reject::Drop(DropReason::BadHopTag))
        );
        assert_eq!(
            forward(&t, &d, &fragment_frame(2, 1, 0, &payload, 4, true)),
            Err(Reject::Drop(DropReason::HopLimit))
        );
        // A forged copy did not poison the dedup table: the genuine one still goes through.
        assert_eq!(
            forward(&t, &d, &fragment_frame(2, 1, 0, &payload, 0, true))
                .unwrap()
                .len(),
            1
        );
        let mut spec_t = table(&[2]);
        assert_eq!(
            forward(&spec_t, &d, &fragment_frame(2, 5, 0, &payload, 0, true)),
            Err(Reject::Drop(DropReason::NoDestination))
        );
        let local = spec_t.local().clone();
        let mut peers: Vec<PeerSpec> = spec_t.peers().iter().map(|p| p.spec.clone()).collect();
        peers[0].keys = None;
        spec_t = Table::new(local, peers).unwrap();
        assert_eq!(
            forward(&spec_t, &d, &fragment_frame(2, 6, 0, &payload, 0, true)),
            Err(Reject::Drop(DropReason::NoSession))
        );
    }

    #[test]
    fn control_messages_and_retransmissions_go_to_the_control_path() {
        let payload = [1u8; 10];
        let f = FragmentRepr {
            kind: FragmentKind::Source,
            stream: 1,
            index: 0,
            count: 100,
            k: 100,
            r: 0,
            payload: &payload,
        };
        let mut dgram = vec![0u8; f.buffer_len()];
        f.emit(2, flags::RETRANSMIT, 0, &mut dgram).unwrap();
        assert_eq!(
            classify(&udp_frame(2, &dgram, true), &local()),
            Action::Control
        );
        let ka = HeaderRepr {
            msg_type: MessageType::Keepalive,
            flags: 0,
            hops: 0,
            payload_len: 0,
            stream: 0,
            sender: 2,
            index: 0,
            count: 0,
            k: 0,
            r: 0,
        };
        let mut dgram = vec![0u8; 36];
        ka.emit(&mut dgram).unwrap();
        assert_eq!(
            classify(&udp_frame(2, &dgram, true), &local()),
            Action::Control
        );
    }

    #[test]
    fn attack_foreign_stream_fragments_cannot_take_the_origins_slots() {
        // F3: member gateway 11 sends fragments of gateway 10's stream (10's prefix) ahead of
        // 10's own, to make 10's genuine fragments duplicates (dedup, hold, repair cache). They
        // are dropped before dedup, counted, and 10's fragments go through; a peer relay may
        // forward any origin's stream.
        let mut specs: Vec<PeerSpec> = [10, 11, 12].map(gateway).into();
        specs[0].kind = table::PeerKind::Gateway { streams: 0xa };
        specs[1].kind = table::PeerKind::Gateway { streams: 0xb };
        specs[2].kind = table::PeerKind::Relay;
        let t = table_of(specs);
        let d = Dedup::new(1024, [3, 3]);
        let victim = 0xa_0000_0042u64;
        let mut counters = LocalCounters::default();
        for index in 0..100 {
            let junk = fragment_frame(11, victim, index, &[0xee], 0, true);
            let Action::Fragment(info) = classify(&junk, &local()) else {
                panic!("not a fragment");
            };
            assert_eq!(admit_counted(&t, &d, &junk, &info, 0, &mut counters), None);
        }
        assert_eq!(
            counters.get(Counter::Drop(DropReason::ForeignStream)),
            100,
            "every junk fragment counted"
        );
        assert_eq!(counters.get(Counter::DedupHits), 0);
        // The origin's own fragments are all new, fanned out to 11 and the relay.
        for index in 0..100 {
            let copies = forward(
                &t,
                &d,
                &fragment_frame(10, victim, index, b"genuine", 0, true),
            )
            .unwrap_or_else(|e| panic!("fragment {index} of the origin: {e:?}"));
            let mut to: Vec<u32> = copies.iter().map(|c| c.0).collect();
            to.sort();
            assert_eq!(to, [11, 12]);
        }
        // 11's own stream is forwarded; the peer relay's copy of 10's stream is a duplicate
        // only because 10's went first, and another of 10's streams from it is admitted.
        assert!(forward(&t, &d, &fragment_frame(11, 0xb_0000_0001, 0, b"x", 0, true)).is_ok());
        assert_eq!(
            forward(&t, &d, &fragment_frame(12, victim, 0, b"genuine", 1, true)).err(),
            Some(Reject::Duplicate)
        );
        assert!(forward(&t, &d, &fragment_frame(12, 0xa_0000_0043, 0, b"y", 1, true)).is_ok());
    }
}
