//! Frame builders shared by the relay's unit tests (`forward`), its integration tests
//! (`tests/common`) and the corpus seeds (`tests/fuzz_corpus_relay.rs`): one copy of the
//! Ethernet/IPv4/UDP wrapping instead of one per test file.
//!
//! A module of the library rather than a `#[path]` include because the unit tests reach it as
//! `crate::testkit` and the integration tests as `photon_relay::testkit`, with the same imports
//! resolving on both sides. Compiled only for tests and under cargo feature `test-support`
//! (which the crate's own dev-dependency turns on), never in a release build.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

use photon_protocol::hopauth::{HopKey, HopKeys};
use photon_protocol::wire::FragmentRepr;
use smoltcp::wire::{IpAddress, Ipv4Packet, UdpPacket};

use crate::forward::table::{PeerKind, PeerSpec};
use crate::packet::HeaderTemplate;

/// The relay the test frames are addressed to.
pub const RELAY_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub const RELAY_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const RELAY_PORT: u16 = 4433;

/// Node `id`'s deterministic hop keys: `send` keys relay → peer, `recv` peer → relay.
pub fn keys_of(id: u32) -> HopKeys {
    HopKeys {
        send: HopKey::from_bytes(&[id as u8; 16]),
        recv: HopKey::from_bytes(&[id as u8 ^ 0x55; 16]),
    }
}

/// Gateway `id` at `addr` behind `mac`, on port 0, subscribed, with its [`keys_of`]; it
/// originates the streams below 2^32 (prefix 0, [`PeerKind::Gateway`]).
pub fn gateway(id: u32, addr: SocketAddrV4, mac: [u8; 6]) -> PeerSpec {
    PeerSpec {
        node_id: id,
        kind: PeerKind::Gateway { streams: 0 },
        addr,
        next_hop_mac: mac,
        port: 0,
        keys: Some(keys_of(id)),
        subscribed: true,
    }
}

/// [`udp_frame`] from (`src_mac`, `src`) to the relay ([`RELAY_MAC`], [`RELAY_IP`], [`RELAY_PORT`]).
pub fn to_relay(src_mac: [u8; 6], src: SocketAddrV4, dgram: &[u8], udp_csum: bool) -> Vec<u8> {
    let relay = SocketAddrV4::new(RELAY_IP, RELAY_PORT);
    udp_frame(src_mac, src, RELAY_MAC, relay, dgram, udp_csum)
}

/// Ethernet/IPv4/UDP from (`src_mac`, `src`) to (`dst_mac`, `dst`) around `dgram`: IPv4
/// checksum filled, UDP checksum filled when `udp_csum` (zero, "none", otherwise).
pub fn udp_frame(
    src_mac: [u8; 6],
    src: SocketAddrV4,
    dst_mac: [u8; 6],
    dst: SocketAddrV4,
    dgram: &[u8],
    udp_csum: bool,
) -> Vec<u8> {
    let t = HeaderTemplate::between(src_mac, src, dst_mac, dst);
    let mut frame = t.bytes().to_vec();
    frame.extend_from_slice(dgram);
    let total = frame.len() - 14;
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut frame[14..]);
        ip.set_total_len(total as u16);
        ip.fill_checksum();
    }
    let mut udp = UdpPacket::new_unchecked(&mut frame[34..]);
    udp.set_len((total - 20) as u16);
    if udp_csum {
        udp.fill_checksum(&IpAddress::Ipv4(*src.ip()), &IpAddress::Ipv4(*dst.ip()));
    }
    frame
}

/// The datagram of fragment `f` as node `from` sends it after `hops` hops, its header signed
/// with `key`.
pub fn signed_fragment(f: &FragmentRepr<'_>, from: u32, hops: u8, key: &HopKey) -> Vec<u8> {
    let mut dgram = vec![0u8; f.buffer_len()];
    f.emit(from, 0, hops, &mut dgram).expect("emit");
    key.sign_header(&mut dgram).expect("sign");
    dgram
}

/// A fresh stage-log path in the temp directory: `photon-relay-stages-{what}-{pid}-{ns}.jsonl`.
pub fn stage_log_path(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "photon-relay-stages-{what}-{}-{}.jsonl",
        std::process::id(),
        crate::ops::stages::unix_ns()
    ))
}
