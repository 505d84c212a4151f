//! Golden bytes of the compressed block format (docs/protocol.md §6.3) and its typed errors.
// Bytes of references are written in groups of the 3-bit reference width, not of 4 bits.
#![allow(clippy::unusual_byte_groupings)]

use photon_protocol::chain::{Bitcoin, ChainAdapter};
use photon_protocol::compress::varint::VarintError;
use photon_protocol::compress::{
    decompress, CompressedBlockRepr, DecompressError, FormatError, IdGroup,
};
use photon_protocol::shortid::{ShortId, TxStore, TxStoreConfig};

const MAX: usize = Bitcoin::MAX_TXS_PER_BLOCK;

#[rustfmt::skip]
const GOLDEN: &[u8] = &[
    0x01,                   // version 1
    0x00,                   // chain 0: Bitcoin
    0x04, b'H', b'D', b'R', b'!', // header length 4, header
    0x04,                   // 4 transactions
    0x02, 0x00, 0x01,       // 2 whole: position 0, then 2 (= 0 + 1 + 1)
    0x02,                   // 2 groups
    0xe8, 0x07, 0x04,       // first ID 1000, length 5 (4 + 1)
    0x92, 0xf8, 0xff, 0xff, 0x07, 0x00, // gap 0x7ffffc12 after 1005 (+1): first 0x80000000, length 1
    0b010_101_00,           // window 6 -> 3 bits: index 2 (ID 1002), index 5 (ID 0x80000000), padding
    0x02, b'c', b'b',       // whole tx at position 0
    0x03, b't', b'x', b'2', // whole tx at position 2
];

fn golden_repr() -> CompressedBlockRepr<'static> {
    CompressedBlockRepr {
        chain_id: 0,
        header: b"HDR!",
        tx_count: 4,
        whole_positions: vec![0, 2],
        groups: vec![
            IdGroup {
                first: 1000,
                len: 5,
            },
            IdGroup {
                first: 0x8000_0000,
                len: 1,
            },
        ],
        refs: vec![ShortId(1002), ShortId(0x8000_0000)],
        whole_txs: vec![b"cb", b"tx2"],
    }
}

#[test]
fn golden_emit_and_parse() {
    let repr = golden_repr();
    let mut out = Vec::new();
    repr.emit(&mut out).unwrap();
    assert_eq!(out, GOLDEN);
    assert_eq!(repr.buffer_len(), GOLDEN.len());
    assert_eq!(CompressedBlockRepr::parse(GOLDEN, MAX).unwrap(), repr);
}

fn with(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = GOLDEN.to_vec();
    f(&mut v);
    v
}

#[test]
fn typed_errors() {
    let parse = |b: &[u8]| CompressedBlockRepr::parse(b, MAX).unwrap_err();
    assert_eq!(
        parse(&[]),
        FormatError::Truncated {
            what: "version",
            offset: 0,
            needed: 1
        }
    );
    assert_eq!(parse(&with(|v| v[0] = 2)), FormatError::UnknownVersion(2));
    assert_eq!(
        parse(&GOLDEN[..GOLDEN.len() - 1]),
        FormatError::Truncated {
            what: "whole tx",
            offset: 26,
            needed: 1
        }
    );
    assert_eq!(parse(&with(|v| v.push(0))), FormatError::TrailingBytes(1));
    // Header length past the input.
    assert!(matches!(
        parse(&with(|v| v[2] = 0x7f)),
        FormatError::TooLarge {
            what: "header length",
            ..
        }
    ));
    // A non-shortest varint (tx count 4 as 0x84 0x00).
    let long = with(|v| {
        v[7] = 0x84;
        v.insert(8, 0x00);
    });
    assert_eq!(
        parse(&long),
        FormatError::Varint {
            what: "tx count",
            offset: 7,
            error: VarintError::NonCanonical
        }
    );
    // A tx count beyond the chain's limit: rejected before any allocation.
    let huge = [0x01, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x0f];
    assert!(matches!(
        parse(&huge),
        FormatError::TooLarge {
            what: "tx count",
            ..
        }
    ));
    // Whole count larger than the bytes left.
    let many_whole = [0x01, 0x00, 0x00, 0x05, 0x05, 0x00];
    assert!(matches!(
        parse(&many_whole),
        FormatError::TooLarge {
            what: "whole count",
            ..
        }
    ));
    // Whole position past the tx count.
    assert!(matches!(
        parse(&with(|v| v[10] = 0x05)),
        FormatError::BadWholePosition { .. }
    ));
    // Padding bits set.
    assert_eq!(parse(&with(|v| v[21] |= 1)), FormatError::BadPadding);
    // Reference index 6 or 7 in a window of 6.
    assert_eq!(
        parse(&with(|v| v[21] = 0b111_101_00)),
        FormatError::RefOutOfWindow {
            index: 7,
            window: 6
        }
    );
    // The same ID twice.
    assert_eq!(
        parse(&with(|v| v[21] = 0b010_010_00)),
        FormatError::DuplicateRef(ShortId(1002))
    );
    // A group running past 0xffffffff.
    let past = [
        0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01,
    ];
    assert_eq!(parse(&past), FormatError::GroupOutOfSpace { index: 0 });
}

#[test]
fn hand_built_reprs_that_break_the_rules_do_not_emit() {
    let mut out = Vec::new();
    let mut r = golden_repr();
    r.refs.push(ShortId(1003));
    assert!(matches!(
        r.emit(&mut out),
        Err(FormatError::CountMismatch { .. })
    ));
    let mut r = golden_repr();
    r.refs[1] = ShortId(7);
    assert!(matches!(
        r.emit(&mut out),
        Err(FormatError::RefOutOfWindow { .. })
    ));
    let mut r = golden_repr();
    r.groups[1].first = 1004;
    assert_eq!(r.emit(&mut out), Err(FormatError::BadGroups));
}

#[test]
fn decompress_checks_chain_and_transactions() {
    let store = TxStore::new(TxStoreConfig::default());
    let other_chain = with(|v| v[1] = 9);
    assert_eq!(
        decompress::<Bitcoin>(&other_chain, &store).unwrap_err(),
        DecompressError::WrongChain {
            expected: 0,
            found: 9
        }
    );
    // No references, two whole "transactions" that are not Bitcoin transactions.
    let no_refs = CompressedBlockRepr {
        tx_count: 2,
        whole_positions: vec![0, 1],
        groups: vec![],
        refs: vec![],
        ..golden_repr()
    };
    let mut bytes = Vec::new();
    no_refs.emit(&mut bytes).unwrap();
    assert!(matches!(
        decompress::<Bitcoin>(&bytes, &store).unwrap_err(),
        DecompressError::Tx { position: 0, .. }
    ));
}
