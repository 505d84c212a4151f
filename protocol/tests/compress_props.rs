//! Property tests of the compressed block codecs (docs/protocol.md §6.3): varints, bit packing,
//! group choice and the whole encoding round trip; arbitrary bytes never panic the decoder.
// Bytes of references are written in groups of the 3-bit reference width, not of 4 bits.
#![allow(clippy::unusual_byte_groupings)]

use photon_protocol::compress::bits::{packed_len, BitReader, BitWriter};
use photon_protocol::compress::{
    choose_groups, fuzz_compressed_block, ref_width, varint, CompressedBlockRepr,
};
use photon_protocol::shortid::ShortId;
use proptest::prelude::*;

proptest! {
    #[test]
    fn varint_round_trips(v in any::<u64>()) {
        let mut out = Vec::new();
        varint::write(&mut out, v);
        prop_assert_eq!(out.len(), varint::len(v));
        prop_assert_eq!(varint::read(&out), Ok((v, out.len())));
    }

    #[test]
    fn varint_read_of_any_bytes_is_canonical(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
        if let Ok((v, used)) = varint::read(&bytes) {
            let mut out = Vec::new();
            varint::write(&mut out, v);
            prop_assert_eq!(&out[..], &bytes[..used]);
        }
    }

    #[test]
    fn bits_round_trip(width in 0u32..=32, values in proptest::collection::vec(any::<u32>(), 0..200)) {
        let mask = if width == 32 { u32::MAX } else { (1u32 << width) - 1 };
        let mut w = BitWriter::default();
        for &v in &values {
            w.write(v, width);
        }
        let bytes = w.finish();
        prop_assert_eq!(bytes.len(), packed_len(values.len(), width));
        let mut r = BitReader::new(&bytes);
        for &v in &values {
            prop_assert_eq!(r.read(width), Some(v & mask));
        }
        prop_assert!(r.at_clean_end());
    }

    #[test]
    fn groups_cover_every_id(mut ids in proptest::collection::vec(any::<u32>(), 0..300)) {
        ids.sort_unstable();
        ids.dedup();
        let groups = choose_groups(&ids);
        for pair in groups.windows(2) {
            prop_assert!(u64::from(pair[0].first) + u64::from(pair[0].len) < u64::from(pair[1].first));
        }
        for id in &ids {
            prop_assert!(groups.iter().any(|g| *id >= g.first && u64::from(*id) < u64::from(g.first) + u64::from(g.len)));
        }
        // Never wider than one reference per possible ID.
        let window: u64 = groups.iter().map(|g| u64::from(g.len)).sum();
        prop_assert!(ref_width(window) <= 32);
    }

    #[test]
    fn encoding_round_trips(
        mut ids in proptest::collection::vec(any::<u32>(), 0..200),
        header in proptest::collection::vec(any::<u8>(), 0..100),
        whole in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 0..20),
        shuffle in any::<u64>(),
    ) {
        ids.sort_unstable();
        ids.dedup();
        let groups = choose_groups(&ids);
        // Block order is not ID order.
        let mut refs: Vec<ShortId> = ids.iter().map(|&i| ShortId(i)).collect();
        if !refs.is_empty() {
            let k = (shuffle % refs.len() as u64) as usize;
            refs.rotate_left(k);
            refs.reverse();
        }
        let tx_count = (refs.len() + whole.len()) as u32;
        // Whole and known transactions alternate while both last.
        let m = refs.len().min(whole.len()) as u32;
        let whole_positions: Vec<u32> =
            (0..whole.len() as u32).map(|i| if i < m { 2 * i } else { i + m }).collect();
        let repr = CompressedBlockRepr {
            chain_id: 0,
            header: &header,
            tx_count,
            whole_positions,
            groups,
            refs,
            whole_txs: whole.iter().map(Vec::as_slice).collect(),
        };
        let mut bytes = Vec::new();
        repr.emit(&mut bytes).unwrap();
        prop_assert_eq!(bytes.len(), repr.buffer_len());
        let parsed = CompressedBlockRepr::parse(&bytes, 1 << 20).unwrap();
        prop_assert_eq!(&parsed, &repr);
        fuzz_compressed_block(&bytes);
    }

    #[test]
    fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        fuzz_compressed_block(&bytes);
    }

    #[test]
    fn decoder_never_panics_near_valid(flip in 0usize..29, byte in any::<u8>()) {
        let mut bytes = vec![
            0x01, 0x00, 0x04, b'H', b'D', b'R', b'!', 0x04, 0x02, 0x00, 0x01, 0x02, 0xe8, 0x07,
            0x04, 0x92, 0xf8, 0xff, 0xff, 0x07, 0x00, 0b010_101_00, 0x02, b'c', b'b', 0x03, b't',
            b'x', b'2',
        ];
        bytes[flip] = byte;
        fuzz_compressed_block(&bytes);
    }
}
