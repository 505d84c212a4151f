//! Fuzz entry points (`fuzz/fuzz_targets/relay_frame.rs`); `relay/tests/fuzz_corpus_relay.rs`
//! replays the corpus through the same function, so `cargo test` re-checks what the fuzzer found.
//!
//! [`fuzz_frame`] treats the input both as a received Ethernet frame (the data path's
//! [`classify`], then what the pipeline does with each action, on byte vectors) and as a bare
//! Photon datagram for the control path ([`Control::handle`]). Hop tags are random in fuzzer
//! input, which would stop nearly everything at the tag check: when the sender is one of the
//! fixed peers, the input is re-signed with that peer's key first, so the parsers and handlers
//! behind the check are reached.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, OnceLock};

use photon_protocol::hopauth::{HopKey, HopKeys};
use photon_protocol::identity::Identity;
use photon_protocol::wire::{Packet, HEADER_LEN, MAX_DATAGRAM};
use ring::rand::SystemRandom;

use crate::control::{Control, ControlSettings, Outgoing, Source};
use crate::forward::dedup::Dedup;
use crate::forward::table::{LocalSpec, PeerKind, PeerSpec, Table};
use crate::forward::{admit, write_copy_header};
use crate::packet::{
    arp_reply_in_place, classify, icmp_echo_reply_in_place, payload_sum, Action, FORWARD_HEADER_LEN,
};

/// The relay's node id, IPv4 address, UDP port and MAC in the fuzz set-up.
pub const RELAY_ID: u32 = 1;
pub const RELAY_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const RELAY_PORT: u16 = 4433;
pub const RELAY_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
/// Gateways 2 and 3 and peer relay 4 have sessions (static keys, [`keys_of`]); gateway 2
/// originates the streams below 2^32, gateway 3 those under prefix 3.
pub const PEERS: [(u32, PeerKind); 3] = [
    (2, PeerKind::Gateway { streams: 0 }),
    (3, PeerKind::Gateway { streams: 3 }),
    (4, PeerKind::Relay),
];
const NOW_MS: u64 = 1_700_000_000_000;

/// Deterministic hop keys of peer `id`: `send` relay → peer, `recv` peer → relay.
pub fn keys_of(id: u32) -> HopKeys {
    HopKeys {
        send: HopKey::from_bytes(&[id as u8; 16]),
        recv: HopKey::from_bytes(&[id as u8 ^ 0x55; 16]),
    }
}

fn local_spec() -> LocalSpec {
    LocalSpec {
        node_id: RELAY_ID,
        ip: RELAY_IP,
        udp_port: RELAY_PORT,
        port_macs: vec![RELAY_MAC],
        max_hops: 8,
    }
}

fn peer_specs() -> Vec<PeerSpec> {
    PEERS
        .iter()
        .map(|&(id, kind)| PeerSpec {
            node_id: id,
            kind,
            addr: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 100 + id as u8), 5000 + id as u16),
            next_hop_mac: [2, 0, 0, 0, 1, id as u8],
            port: 0,
            keys: Some(keys_of(id)),
            subscribed: true,
        })
        .collect()
}

/// Re-signs `d` as its sender would if the sender is one of [`PEERS`].
fn resign(d: &mut [u8]) {
    let sender = match Packet::new_checked(&d[..]) {
        Ok(p) => p.sender(),
        Err(_) => return,
    };
    if PEERS.iter().any(|&(id, _)| id == sender) {
        let _ = keys_of(sender).recv.sign_header(d);
    }
}

/// A fresh control path (the relay identity is generated once per process).
fn control() -> Option<Control> {
    static PKCS8: OnceLock<Vec<u8>> = OnceLock::new();
    let pkcs8 = PKCS8.get_or_init(|| {
        Identity::generate(&SystemRandom::new())
            .map(|i| i.to_pkcs8_bytes().to_vec())
            .unwrap_or_default()
    });
    let identity = Identity::from_pkcs8_bytes(pkcs8).ok()?;
    let settings = ControlSettings {
        // Small bounds so that eviction paths run too.
        repair_cache_fragments: 4,
        tx_cache_bytes: 4096,
        // Small memories: they are allocated per input (and eviction paths run).
        replay_cache: 16,
        tx_memory: 16,
        key_release_memory: 16,
        ..ControlSettings::default()
    };
    Control::new(
        identity,
        local_spec(),
        peer_specs(),
        settings,
        Arc::new(SystemRandom::new()),
    )
    .ok()
}

/// What the relay emits must be whole Photon datagrams within the size limit.
fn check_outgoing(out: &[Outgoing]) {
    for o in out {
        assert!(o.datagram.len() <= MAX_DATAGRAM, "oversize datagram");
        assert!(
            Packet::new_checked(&o.datagram[..]).is_ok(),
            "the relay emitted a datagram that does not check"
        );
    }
}

/// The control path on one datagram: recorded as a forwarded fragment (repair cache), handled
/// twice (duplicates, replays), then a repair request that names it.
fn control_datagram(control: &mut Control, src: Source, datagram: &[u8]) {
    let mut d = datagram.to_vec();
    resign(&mut d);
    control.record_fragment(&d);
    let mut out = Vec::new();
    control.handle(NOW_MS, src, &d, &mut out);
    control.handle(NOW_MS + 1, src, &d, &mut out);
    control.tick(NOW_MS + 2);
    check_outgoing(&out);
    assert!(control.cache().len() <= 4);
    assert!(control.tx_cache().bytes() <= 4096);
}

/// One frame through the data path's decisions: classify, then admit and build every copy's
/// header for a fragment, answer ARP/ICMP in place, or hand a control frame to the control path.
fn data_path(frame: &[u8], control: &mut Control) {
    let spec = local_spec();
    let local = spec.local(0);
    match classify(frame, &local) {
        Action::Fragment(info) => {
            assert!(info.datagram_len >= HEADER_LEN);
            assert!(info.payload_offset() + info.payload_len() <= frame.len());
            assert!(info.datagram_len <= info.udp_payload_len);
            let mut f = frame.to_vec();
            resign(&mut f[info.photon_offset..info.photon_offset + info.datagram_len]);
            let Ok(table) = Table::new(spec.clone(), peer_specs()) else {
                return;
            };
            let dedup = Dedup::new(64, [1, 2]);
            let Ok(from) = admit(&table, &dedup, &f, &info, 0) else {
                return;
            };
            let psum = payload_sum(&f, &info);
            let photon_in = &f[info.photon_offset..info.payload_offset()];
            let payload = &f[info.payload_offset()..info.payload_offset() + info.payload_len()];
            for (_, dest) in table.destinations(from) {
                let mut copy = vec![0u8; FORWARD_HEADER_LEN];
                let n = write_copy_header(&mut copy, &table, dest, photon_in, &info, psum);
                assert_eq!(n, Some(FORWARD_HEADER_LEN));
                copy.extend_from_slice(payload);
                // The copy classifies as a fragment again at the next relay (sent to its IP).
                let p = Packet::new_checked(&copy[FORWARD_HEADER_LEN - HEADER_LEN..]);
                assert!(p.is_ok(), "forwarded copy does not check");
                if let Some(keys) = &dest.spec.keys {
                    assert!(keys.send.verify(&copy[FORWARD_HEADER_LEN - HEADER_LEN..]));
                }
            }
            // The control core keeps forwarded fragments for repairs.
            control.record_fragment(&f[info.photon_offset..info.photon_offset + info.datagram_len]);
        }
        Action::Control => {
            if let Some((src, dgram)) = crate::packet::parse_udp(frame, &spec.port_macs) {
                control_datagram(control, src, dgram);
            }
        }
        Action::ArpRequest => {
            let mut f = frame.to_vec();
            let _ = arp_reply_in_place(&mut f, &local);
            assert_eq!(f.len(), frame.len());
        }
        Action::IcmpEcho => {
            let mut f = frame.to_vec();
            let _ = icmp_echo_reply_in_place(&mut f, &local);
            assert_eq!(f.len(), frame.len());
        }
        Action::Drop(_) => {}
    }
}

/// Any bytes as a received Ethernet frame and as a control datagram. Panics only when an
/// invariant breaks (what the fuzzer looks for); any input is otherwise a counted drop.
pub fn fuzz_frame(data: &[u8]) {
    let Some(mut c) = control() else {
        return;
    };
    data_path(data, &mut c);
    let src = Source {
        addr: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 102), 5002),
        mac: [2, 0, 0, 0, 1, 2],
        port: 0,
    };
    control_datagram(&mut c, src, data);
}
