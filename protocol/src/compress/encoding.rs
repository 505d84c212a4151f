//! The block encodings a gateway may send (docs/protocol.md §6.8), told apart by the payload's
//! first byte, so a receiver decodes whatever its sender chose:
//!
//! - `1` compact: relay-assigned short IDs, bit-packed ([`super::CompressedBlockRepr`], §6.3);
//! - `2` BIP152-sized: the same short IDs, each widened to a fixed 6 bytes (a size baseline,
//!   [`Bip152SizedRepr`]);
//! - `3` full: the block's chain encoding, no short IDs ([`FullBlockRepr`]).
//!
//! ```text
//! BIP152-sized (format 2)              full (format 3)
//! u8      format = 2                   u8   format = 3
//! u8      chain id                     u8   chain id
//! varint  header length, header        ...  the block's chain encoding, to the end
//! varint  tx count n
//! varint  whole count w, w positions (as in §6.3)
//! refs    n - w x 6 bytes: u48 BE, the short ID (< 2^32)
//! whole   per whole tx: varint length, chain encoding
//! ```

use std::collections::HashSet;

use super::format::{
    check_common, parse_whole_txs, whole_txs_len, write_prefix, write_whole_txs,
    CompressedBlockRepr, FormatError, Prefix, Reader, VERSION,
};
use crate::shortid::ShortId;

/// First byte of a compact (§6.3) payload.
pub const FORMAT_COMPACT: u8 = VERSION;
/// First byte of a BIP152-sized payload.
pub const FORMAT_BIP152_SIZED: u8 = 2;
/// First byte of a full-block payload.
pub const FORMAT_FULL: u8 = 3;
/// Bytes per reference in the BIP152-sized encoding (BIP152's short IDs are 6 bytes).
pub const BIP152_REF_LEN: usize = 6;

/// How a block is encoded for the network (the gateway's `[block] encoding`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum BlockEncoding {
    /// Relay-assigned short IDs, bit-packed (§6.3).
    #[default]
    Compact,
    /// Every known transaction as its relay-assigned short ID widened to 6 bytes: BIP152's
    /// size, our reconstruction. Not BIP152's SipHash IDs.
    Bip152Sized,
    /// The block's chain encoding: no short IDs, no transaction requests.
    Full,
}

impl BlockEncoding {
    pub const ALL: [BlockEncoding; 3] = [
        BlockEncoding::Compact,
        BlockEncoding::Bip152Sized,
        BlockEncoding::Full,
    ];

    /// The payload's first byte.
    pub fn format_byte(self) -> u8 {
        match self {
            BlockEncoding::Compact => FORMAT_COMPACT,
            BlockEncoding::Bip152Sized => FORMAT_BIP152_SIZED,
            BlockEncoding::Full => FORMAT_FULL,
        }
    }

    pub fn from_format_byte(byte: u8) -> Option<BlockEncoding> {
        match byte {
            FORMAT_COMPACT => Some(BlockEncoding::Compact),
            FORMAT_BIP152_SIZED => Some(BlockEncoding::Bip152Sized),
            FORMAT_FULL => Some(BlockEncoding::Full),
            _ => None,
        }
    }

    /// The name in the gateway's config: `compact`, `bip152`, `full`.
    pub fn name(self) -> &'static str {
        match self {
            BlockEncoding::Compact => "compact",
            BlockEncoding::Bip152Sized => "bip152",
            BlockEncoding::Full => "full",
        }
    }

    pub fn from_name(name: &str) -> Option<BlockEncoding> {
        BlockEncoding::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// A parsed BIP152-sized block (format 2): as §6.3 without groups, each reference a 6-byte
/// big-endian short ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bip152SizedRepr<'a> {
    pub chain_id: u8,
    pub header: &'a [u8],
    /// All transactions of the block: `refs.len() + whole_txs.len()`.
    pub tx_count: u32,
    /// Block positions of the whole transactions, ascending.
    pub whole_positions: Vec<u32>,
    /// Short IDs of the known transactions, in block order, each once.
    pub refs: Vec<ShortId>,
    /// Chain encodings of the whole transactions, in block order.
    pub whole_txs: Vec<&'a [u8]>,
}

impl<'a> Bip152SizedRepr<'a> {
    /// The same block as a compact block without short-ID groups.
    pub fn into_compact(self) -> CompressedBlockRepr<'a> {
        CompressedBlockRepr {
            chain_id: self.chain_id,
            header: self.header,
            tx_count: self.tx_count,
            whole_positions: self.whole_positions,
            groups: Vec::new(),
            refs: self.refs,
            whole_txs: self.whole_txs,
        }
    }

    /// Parse a whole BIP152-sized payload; `max_txs` is the chain's limit.
    pub fn parse(input: &'a [u8], max_txs: usize) -> Result<Self, FormatError> {
        let mut r = Reader::new(input);
        let Prefix {
            chain_id,
            header,
            tx_count,
            whole_positions,
        } = Prefix::parse(&mut r, FORMAT_BIP152_SIZED, "format", max_txs)?;
        let whole_count = whole_positions.len();
        let known = tx_count as usize - whole_count;
        // known <= tx_count <= max_txs: the allocation is bounded by the chain.
        let ref_bytes = r.bytes(known * BIP152_REF_LEN, "references")?;
        let mut refs = Vec::with_capacity(known);
        let mut seen = HashSet::with_capacity(known);
        for chunk in ref_bytes.chunks_exact(BIP152_REF_LEN) {
            let mut wide = [0u8; 8];
            wide[2..].copy_from_slice(chunk);
            let value = u64::from_be_bytes(wide);
            let id = u32::try_from(value).map_err(|_| FormatError::TooLarge {
                what: "short ID",
                value,
                max: u64::from(u32::MAX),
            })?;
            let id = ShortId(id);
            if !seen.insert(id) {
                return Err(FormatError::DuplicateRef(id));
            }
            refs.push(id);
        }
        let whole_txs = parse_whole_txs(&mut r, whole_count)?;
        Ok(Bip152SizedRepr {
            chain_id,
            header,
            tx_count,
            whole_positions,
            refs,
            whole_txs,
        })
    }

    fn check(&self) -> Result<(), FormatError> {
        check_common(
            self.tx_count,
            &self.whole_positions,
            self.whole_txs.len(),
            &self.refs,
        )
    }

    /// Bytes [`Self::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        Prefix::len(self.header, self.tx_count, &self.whole_positions)
            + self.refs.len() * BIP152_REF_LEN
            + whole_txs_len(&self.whole_txs)
    }

    /// Append the encoding to `out`. Fails only for a hand-built repr that breaks the rules
    /// (a parsed one emits the bytes it was parsed from).
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), FormatError> {
        self.check()?;
        out.reserve(self.buffer_len());
        write_prefix(
            out,
            FORMAT_BIP152_SIZED,
            self.chain_id,
            self.header,
            self.tx_count,
            &self.whole_positions,
        );
        for id in &self.refs {
            out.extend_from_slice(&u64::from(id.0).to_be_bytes()[2..]);
        }
        write_whole_txs(out, &self.whole_txs);
        Ok(())
    }
}

/// A full-block payload (format 3): the chain id and the block's chain encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FullBlockRepr<'a> {
    pub chain_id: u8,
    /// The block's chain encoding (checked by the chain adapter when decoded).
    pub block: &'a [u8],
}

impl<'a> FullBlockRepr<'a> {
    pub fn parse(input: &'a [u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(input);
        let format = r.u8("format")?;
        if format != FORMAT_FULL {
            return Err(FormatError::UnknownVersion(format));
        }
        let chain_id = r.u8("chain id")?;
        Ok(FullBlockRepr {
            chain_id,
            block: &input[r.pos()..],
        })
    }

    pub fn buffer_len(&self) -> usize {
        2 + self.block.len()
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.reserve(self.buffer_len());
        out.push(FORMAT_FULL);
        out.push(self.chain_id);
        out.extend_from_slice(self.block);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_format_bytes_round_trip() {
        for e in BlockEncoding::ALL {
            assert_eq!(BlockEncoding::from_name(e.name()), Some(e));
            assert_eq!(BlockEncoding::from_format_byte(e.format_byte()), Some(e));
        }
        assert_eq!(BlockEncoding::from_name("bip-152"), None);
        assert_eq!(BlockEncoding::from_format_byte(0), None);
        assert_eq!(BlockEncoding::from_format_byte(4), None);
        assert_eq!(BlockEncoding::default(), BlockEncoding::Compact);
    }

    /// Golden vector of §6.8: header "HDR!", 4 transactions, whole at 0 and 2, references to
    /// 1002 and 0x80000000.
    #[test]
    fn bip152_sized_golden_vector() {
        let repr = Bip152SizedRepr {
            chain_id: 0,
            header: b"HDR!",
            tx_count: 4,
            whole_positions: vec![0, 2],
            refs: vec![ShortId(1002), ShortId(0x8000_0000)],
            whole_txs: vec![b"cb", b"tx2"],
        };
        let mut out = Vec::new();
        repr.emit(&mut out).unwrap();
        let golden: &[u8] = &[
            0x02, 0x00, 0x04, b'H', b'D', b'R', b'!', 0x04, 0x02, 0x00, 0x01, //
            0x00, 0x00, 0x00, 0x00, 0x03, 0xea, //
            0x00, 0x00, 0x80, 0x00, 0x00, 0x00, //
            0x02, b'c', b'b', 0x03, b't', b'x', b'2',
        ];
        assert_eq!(out, golden);
        assert_eq!(repr.buffer_len(), golden.len());
        assert_eq!(Bip152SizedRepr::parse(golden, 100).unwrap(), repr);
    }

    #[test]
    fn bip152_sized_errors_are_typed() {
        let good: Vec<u8> = vec![
            0x02, 0x00, 0x00, 0x02, 0x01, 0x00, 0, 0, 0, 0, 0, 7, 0x01, 0xaa,
        ];
        let r = Bip152SizedRepr::parse(&good, 10).unwrap();
        assert_eq!(r.refs, vec![ShortId(7)]);
        // A short ID above 32 bits.
        let mut wide = good.clone();
        wide[7] = 1;
        assert!(matches!(
            Bip152SizedRepr::parse(&wide, 10),
            Err(FormatError::TooLarge {
                what: "short ID",
                ..
            })
        ));
        // Truncated references, trailing bytes, tx count over the limit, wrong format byte.
        assert!(matches!(
            Bip152SizedRepr::parse(&good[..9], 10),
            Err(FormatError::Truncated { .. })
        ));
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(
            Bip152SizedRepr::parse(&trailing, 10),
            Err(FormatError::TrailingBytes(1))
        );
        assert!(matches!(
            Bip152SizedRepr::parse(&good, 1),
            Err(FormatError::TooLarge {
                what: "tx count",
                ..
            })
        ));
        let mut v1 = good.clone();
        v1[0] = 1;
        assert_eq!(
            Bip152SizedRepr::parse(&v1, 10),
            Err(FormatError::UnknownVersion(1))
        );
        // The same ID twice.
        let dup: Vec<u8> = vec![
            0x02, 0x00, 0x00, 0x02, 0x00, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 7,
        ];
        assert_eq!(
            Bip152SizedRepr::parse(&dup, 10),
            Err(FormatError::DuplicateRef(ShortId(7)))
        );
    }

    #[test]
    fn full_round_trip() {
        let f = FullBlockRepr::parse(&[3, 0, 9, 9]).unwrap();
        assert_eq!(f.block, &[9, 9]);
        let mut out = Vec::new();
        f.emit(&mut out);
        assert_eq!(out, [3, 0, 9, 9]);
        assert!(matches!(
            FullBlockRepr::parse(&[3]),
            Err(FormatError::Truncated { .. })
        ));
    }
}

#[cfg(test)]
mod real_blocks {
    use std::time::Instant;

    use super::BlockEncoding;
    use crate::chain::{Bitcoin, ChainAdapter};
    use crate::compress::{compress_as, decompress, DecompressError, Decompressed};
    use crate::shortid::{ShortId, TxStore, TxStoreConfig};

    fn block(height: u32) -> bitcoin::Block {
        let path = format!(
            "{}/../data/bitcoin/mainnet/{height}.raw",
            env!("CARGO_MANIFEST_DIR")
        );
        Bitcoin::decode_block(&std::fs::read(path).expect("block file")).expect("real block")
    }

    /// Every transaction but the coinbase under ID 1000 + position; `skip` of them left out.
    fn store(b: &bitcoin::Block, skip: impl Fn(usize) -> bool) -> TxStore {
        let mut s = TxStore::new(TxStoreConfig::default());
        for (i, tx) in b.txdata.iter().enumerate().skip(1) {
            if !skip(i) {
                let id = ShortId(1000 + i as u32);
                s.insert(
                    id,
                    Bitcoin::tx_ids(tx),
                    &Bitcoin::encode_tx(tx),
                    Instant::now(),
                )
                .unwrap();
            }
        }
        s
    }

    #[test]
    fn every_encoding_round_trips_a_real_block() {
        let b = block(227836);
        let raw = Bitcoin::encode_block(&b);
        let sender = store(&b, |_| false);
        let receiver = store(&b, |i| i % 10 == 3);
        let mut sizes = Vec::new();
        for e in BlockEncoding::ALL {
            let c = compress_as::<Bitcoin>(e, &b, &sender).unwrap();
            assert_eq!(c.bytes[0], e.format_byte());
            assert_eq!(c.stats.bytes, c.bytes.len());
            sizes.push(c.bytes.len());
            // The sender's own store knows everything: no round trip.
            match decompress::<Bitcoin>(&c.bytes, &sender).unwrap() {
                Decompressed::Complete(back) => assert_eq!(Bitcoin::encode_block(&back), raw),
                Decompressed::Missing(p) => panic!("{e:?}: {p}"),
            }
            match decompress::<Bitcoin>(&c.bytes, &receiver).unwrap() {
                Decompressed::Complete(back) => {
                    assert_eq!(e, BlockEncoding::Full, "only full needs no store");
                    assert_eq!(Bitcoin::encode_block(&back), raw);
                }
                Decompressed::Missing(mut p) => {
                    let want: Vec<ShortId> = (1..b.txdata.len())
                        .filter(|i| i % 10 == 3)
                        .map(|i| ShortId(1000 + i as u32))
                        .collect();
                    assert_eq!(p.missing(), want);
                    p.fill_from(&sender);
                    let back = p.finish::<Bitcoin>().unwrap();
                    assert_eq!(Bitcoin::encode_block(&back), raw);
                }
            }
        }
        let n = b.txdata.len();
        // BIP152-sized: 6 bytes per known transaction, plus 5 bytes (format, chain, tx count,
        // whole count, the coinbase's position) beside the header and the whole coinbase.
        let bip = compress_as::<Bitcoin>(BlockEncoding::Bip152Sized, &b, &sender).unwrap();
        assert_eq!(bip.stats.known, n - 1);
        assert_eq!(bip.stats.bytes_per_known_tx(), 6.0 + 5.0 / (n - 1) as f64);
        assert_eq!(sizes[2], raw.len() + 2);
        assert!(sizes[0] < sizes[1] && sizes[1] < sizes[2], "{sizes:?}");
    }

    #[test]
    fn a_full_block_with_a_wrong_merkle_root_is_refused() {
        let b = block(227836);
        let empty = TxStore::new(TxStoreConfig::default());
        let mut c = compress_as::<Bitcoin>(BlockEncoding::Full, &b, &empty)
            .unwrap()
            .bytes;
        // Byte 2 + 36: the first byte of the header's merkle root.
        c[2 + 36] ^= 1;
        assert!(matches!(
            decompress::<Bitcoin>(&c, &empty),
            Err(DecompressError::Block(
                crate::chain::ChainError::MerkleMismatch
            ))
        ));
        c[0] = 9;
        assert_eq!(
            decompress::<Bitcoin>(&c, &empty).unwrap_err(),
            DecompressError::UnknownFormat(9)
        );
        assert_eq!(
            decompress::<Bitcoin>(&[], &empty).unwrap_err(),
            DecompressError::Empty
        );
    }
}
