//! Property tests for every wire `Repr` (§1, §2): emit then parse gives the repr back, emit is
//! byte-stable, and arbitrary or mutated bytes never panic the parser.

use photon_protocol::identity::Identity;
use photon_protocol::wire::{
    self, FragmentKind, FragmentRepr, HeaderRepr, KeepaliveRepr, KeyReleaseRepr, Message,
    MessageType, Packet, ReceiptRepr, RegisterAckRepr, RegisterRepr, RepairRequestRepr, Repr,
    ShortIdAssignRepr, TransactionRepr, TxRequestRepr, HEADER_LEN, MAX_DATAGRAM,
    MAX_REPAIR_INDICES, MAX_SHARDS, MAX_SHORT_ID_ASSIGNMENTS, MAX_TX_REQUEST_IDS,
};
use proptest::prelude::*;
use ring::rand::SystemRandom;
use std::sync::OnceLock;

fn kind() -> impl Strategy<Value = FragmentKind> {
    prop_oneof![
        Just(FragmentKind::Source),
        Just(FragmentKind::Repair),
        Just(FragmentKind::Manifest)
    ]
}

/// A valid fragment header (payload chosen separately).
fn fragment_fields() -> impl Strategy<Value = (FragmentKind, u64, u16, u16, u16, u16)> {
    (
        kind(),
        any::<u64>(),
        1..=MAX_SHARDS,
        1..=MAX_SHARDS,
        1..=u16::MAX,
    )
        .prop_flat_map(|(kind, stream, k, r, manifest_count)| {
            let count = match kind {
                FragmentKind::Source => k,
                FragmentKind::Repair => r,
                FragmentKind::Manifest => manifest_count,
            };
            (0..count).prop_map(move |index| (kind, stream, index, count, k, r))
        })
}

fn payload(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 1..=max)
}

/// Owned form of a message, for strategies: fragments and transactions own the payload their
/// reprs borrow; every other message borrows nothing.
#[derive(Debug, Clone)]
enum Owned {
    Fragment((FragmentKind, u64, u16, u16, u16, u16), Vec<u8>),
    Transaction(u64, u16, u16, Option<u32>, u32, u32, Vec<u8>),
    Other(Message<'static>),
}

impl Owned {
    fn message(&self) -> Message<'_> {
        match self {
            Owned::Fragment((kind, stream, index, count, k, r), p) => {
                Message::Fragment(FragmentRepr {
                    kind: *kind,
                    stream: *stream,
                    index: *index,
                    count: *count,
                    k: *k,
                    r: *r,
                    payload: p,
                })
            }
            Owned::Transaction(transfer, index, count, short_id, tx_len, offset, data) => {
                Message::Transaction(TransactionRepr {
                    transfer: *transfer,
                    index: *index,
                    count: *count,
                    short_id: *short_id,
                    tx_len: *tx_len,
                    offset: *offset,
                    data,
                })
            }
            Owned::Other(m) => m.clone(),
        }
    }
}

fn transaction() -> impl Strategy<Value = Owned> {
    (
        any::<u64>(),
        1..=u16::MAX,
        any::<Option<u32>>(),
        payload(TransactionRepr::MAX_DATA),
        0u32..=1_000_000,
        0u32..=1000,
    )
        .prop_flat_map(|(transfer, count, short_id, data, offset, slack)| {
            let tx_len = offset + data.len() as u32 + slack;
            (0..count).prop_map(move |index| {
                Owned::Transaction(
                    transfer,
                    index,
                    count,
                    short_id,
                    tx_len,
                    offset,
                    data.clone(),
                )
            })
        })
}

fn repair_request() -> impl Strategy<Value = Owned> {
    // Either sparse anywhere (list) or dense in a window (bitmap).
    let sparse = prop::collection::vec(any::<u16>(), 1..=MAX_REPAIR_INDICES);
    let dense =
        (any::<u16>(), prop::collection::vec(0u16..4000, 1..=3000)).prop_map(|(base, offs)| {
            offs.into_iter()
                .map(|o| base.saturating_add(o))
                .collect::<Vec<_>>()
        });
    (any::<u64>(), kind(), prop_oneof![sparse, dense]).prop_map(|(stream, kind, missing)| {
        Owned::Other(Message::RepairRequest(RepairRequestRepr::new(
            stream, kind, missing,
        )))
    })
}

fn owned() -> impl Strategy<Value = Owned> {
    prop_oneof![
        (fragment_fields(), payload(wire::max_fragment_payload()))
            .prop_map(|(f, p)| Owned::Fragment(f, p)),
        transaction(),
        prop::collection::vec(any::<([u8; 32], u32)>(), 0..=MAX_SHORT_ID_ASSIGNMENTS).prop_map(
            |entries| Owned::Other(Message::ShortIdAssign(ShortIdAssignRepr { entries }))
        ),
        (
            any::<u64>(),
            prop::collection::vec(any::<u32>(), 1..=MAX_TX_REQUEST_IDS)
        )
            .prop_map(|(stream, short_ids)| Owned::Other(Message::TxRequest(
                TxRequestRepr { stream, short_ids }
            ))),
        (
            any::<u64>(),
            any::<[u8; 32]>(),
            any::<Option<([u8; 32], [u8; 32], [u8; 32])>>()
        )
            .prop_map(|(stream, manifest_hash, tail)| {
                // Unsigned (legacy, 32 bytes) or signed (128 bytes): any bytes round-trip,
                // the parser does not verify.
                let signed = tail.map(|(receiver, s1, s2)| {
                    let mut signature = [0u8; 64];
                    signature[..32].copy_from_slice(&s1);
                    signature[32..].copy_from_slice(&s2);
                    (receiver, signature)
                });
                Owned::Other(Message::Receipt(ReceiptRepr {
                    stream,
                    manifest_hash,
                    signed,
                }))
            }),
        (
            any::<u64>(),
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            any::<[u8; 32]>()
        )
            .prop_map(|(stream, key, s1, s2)| {
                let mut signature = [0u8; 64];
                signature[..32].copy_from_slice(&s1);
                signature[32..].copy_from_slice(&s2);
                Owned::Other(Message::KeyRelease(KeyReleaseRepr {
                    stream,
                    key,
                    signature,
                }))
            }),
        repair_request(),
        (
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            any::<[u8; 16]>(),
            any::<u64>(),
            any::<[u8; 32]>()
        )
            .prop_map(|(identity, ephemeral, nonce, timestamp_ms, s)| {
                let mut signature = [0u8; 64];
                signature[..32].copy_from_slice(&s);
                Owned::Other(Message::Register(RegisterRepr {
                    identity,
                    ephemeral,
                    nonce,
                    timestamp_ms,
                    signature,
                }))
            }),
        (
            any::<(u8, u32)>(),
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            any::<[u8; 16]>(),
            any::<(u64, u32)>(),
            any::<[u8; 32]>()
        )
            .prop_map(
                |((status, node_id), identity, ephemeral, nonce, (ts, ka), s)| {
                    let mut signature = [0u8; 64];
                    signature[32..].copy_from_slice(&s);
                    Owned::Other(Message::RegisterAck(RegisterAckRepr {
                        status,
                        node_id,
                        identity,
                        ephemeral,
                        nonce,
                        timestamp_ms: ts,
                        keepalive_ms: ka,
                        signature,
                    }))
                }
            ),
        any::<(u32, u32)>()
            .prop_map(|(seq, echo)| Owned::Other(Message::Keepalive(KeepaliveRepr { seq, echo }))),
    ]
}

/// One receiving gateway's identity for the signed-receipt property (key generation is slow
/// next to a proptest case).
fn receipt_identity() -> &'static Identity {
    static ID: OnceLock<Identity> = OnceLock::new();
    ID.get_or_init(|| Identity::generate(&SystemRandom::new()).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_repr_round_trips(owned in owned(), sender in any::<u32>(), hops in any::<u8>(),
                              flags in any::<u8>()) {
        let repr = Repr { sender, hops, flags, message: owned.message() };
        let len = match repr.buffer_len() {
            Ok(len) => len,
            // Only a repair request may be unrepresentable (too many scattered indices).
            Err(e) => {
                prop_assert!(matches!(repr.message, Message::RepairRequest(_)), "{e}");
                let too_long = matches!(e, wire::Error::TooLong { .. });
                prop_assert!(too_long);
                return Ok(());
            }
        };
        prop_assert!(len <= MAX_DATAGRAM);
        let mut buf = [0u8; MAX_DATAGRAM];
        prop_assert_eq!(repr.emit(&mut buf), Ok(len));
        let packet = Packet::new_checked(&buf[..len]).unwrap();
        prop_assert_eq!(packet.msg_type(), Ok(repr.message.msg_type()));
        prop_assert_eq!(packet.hop_tag(), 0);
        let parsed = Repr::parse(&packet).unwrap();
        prop_assert_eq!(&parsed, &repr);
        // Byte-stable: the parsed repr emits the same bytes.
        let mut again = [0u8; MAX_DATAGRAM];
        prop_assert_eq!(parsed.emit(&mut again), Ok(len));
        prop_assert_eq!(&buf[..len], &again[..len]);
        // The same view works over a mutable buffer (as over an mbuf's data slice).
        let mut owned_buf = buf[..len].to_vec();
        let mut view = Packet::new_checked(&mut owned_buf[..]).unwrap();
        view.set_hops(view.hops().wrapping_add(1));
        prop_assert_eq!(HeaderRepr::parse(&view).unwrap().hops, hops.wrapping_add(1));
        // Every truncation is a typed error, never a panic.
        for cut in [0, 1, HEADER_LEN - 1, HEADER_LEN, len.saturating_sub(1)] {
            if cut < len {
                prop_assert!(Packet::new_checked(&buf[..cut]).is_err());
            }
        }
    }

    #[test]
    fn header_round_trips(t in prop::sample::select(MessageType::ALL.to_vec()),
                          flags in any::<u8>(), hops in any::<u8>(),
                          payload_len in 0..=wire::max_fragment_payload() as u16,
                          stream in any::<u64>(), sender in any::<u32>(),
                          f in any::<(u16, u16, u16, u16)>()) {
        let h = HeaderRepr { msg_type: t, flags, hops, payload_len, stream, sender,
                             index: f.0, count: f.1, k: f.2, r: f.3 };
        let mut buf = [0u8; MAX_DATAGRAM];
        prop_assert_eq!(h.emit(&mut buf), Ok(HEADER_LEN));
        let p = Packet::new_checked(&buf[..HEADER_LEN + usize::from(payload_len)]).unwrap();
        prop_assert_eq!(HeaderRepr::parse(&p), Ok(h));
    }

    #[test]
    fn signed_receipts_verify_after_the_wire_and_nothing_else_does(
        stream in any::<u64>(), hash in any::<[u8; 32]>(), sender in any::<u32>(),
        hops in any::<u8>(), flip in 0usize..128, bit in 0u8..8) {
        let id = receipt_identity();
        let m = ReceiptRepr::sign(stream, hash, id);
        // What a relay does: re-emit the parsed repr with its own sender and hop count.
        let repr = Repr { sender, hops, flags: 0, message: Message::Receipt(m) };
        let mut buf = [0u8; MAX_DATAGRAM];
        let len = repr.emit(&mut buf).unwrap();
        prop_assert_eq!(len, HEADER_LEN + 128);
        let p = Packet::new_checked(&buf[..len]).unwrap();
        let got = ReceiptRepr::parse(&p).unwrap();
        prop_assert_eq!(got.verify(), Ok(Some(id.public_key())));
        // Any single bit flipped in the payload breaks the signature.
        buf[HEADER_LEN + flip] ^= 1 << bit;
        let p = Packet::new_checked(&buf[..len]).unwrap();
        let bad = ReceiptRepr::parse(&p).unwrap();
        prop_assert!(bad.verify().is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..1400)) {
        wire::fuzz_packet(&data);
    }

    #[test]
    fn mutated_valid_datagrams_never_panic(owned in owned(), flips in
                                           prop::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let repr = Repr { sender: 1, hops: 0, flags: 0, message: owned.message() };
        let mut buf = [0u8; MAX_DATAGRAM];
        let Ok(len) = repr.emit(&mut buf) else { return Ok(()); };
        for (at, x) in flips {
            buf[at % len] ^= x;
        }
        wire::fuzz_packet(&buf[..len]);
    }
}
