//! Block compression with relay-assigned short IDs (docs/protocol.md §6.3).
//!
//! A compressed block is the block's header and its transactions in block order: each one the
//! receiver is expected to know as a reference to its short ID, the others whole. References
//! are indexes into a few runs of IDs ("groups", §6.3.1), bit-packed at
//! `ceil(log2(window))` bits each, where the window is the number of IDs the groups span.
//!
//! Sender: [`compress`] against the sender's [`TxStore`]. Receiver: [`decompress`] against its
//! own store; it returns the block when every referenced transaction is known (no round trip),
//! or a [`PendingBlock`] naming the missing short IDs, to be completed with
//! [`PendingBlock::supply`] and [`PendingBlock::finish`]. The rebuilt block is checked by the
//! chain adapter (merkle root, witness commitment) before it is returned.
//!
//! Two baselines share the same entry points (§6.8): [`compress_as`] with
//! [`BlockEncoding::Bip152Sized`] (the same short IDs, 6 bytes each) or [`BlockEncoding::Full`]
//! (the block's chain encoding). The payload's first byte names its encoding, and
//! [`decompress`] follows it. [`envelope`] is the unsealed payload of §6.9.

pub mod bits;
pub mod encoding;
pub mod envelope;
mod format;
pub mod model;
mod plan;
pub mod varint;

pub use encoding::{Bip152SizedRepr, BlockEncoding, FullBlockRepr};
pub use format::{ref_width, CompressedBlockRepr, FormatError, IdGroup, VERSION};
pub use plan::choose_groups;

use crate::chain::{ChainAdapter, ChainError};
use crate::shortid::{ShortId, TxIds, TxStore};

/// Why a block could not be compressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompressError {
    #[error("block has {count} transactions, more than the {max} a {chain} block can hold")]
    TooManyTxs {
        count: usize,
        max: usize,
        chain: &'static str,
    },
}

/// Why a compressed block could not be turned back into a block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("compressed block is for chain {found}, this decoder is for chain {expected}")]
    WrongChain { expected: u8, found: u8 },
    #[error("transaction {position} of the block: {error}")]
    Tx { position: usize, error: ChainError },
    #[error("rebuilt block rejected: {0}")]
    Block(ChainError),
    #[error("{0} short IDs are still missing")]
    StillMissing(usize),
    /// The payload's first byte names no encoding this decoder knows (§6.8).
    #[error("block payload format {0} is unknown (known: 1 compact, 2 BIP152-sized, 3 full)")]
    UnknownFormat(u8),
    #[error("block payload is empty")]
    Empty,
}

/// Sizes of one compressed block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressStats {
    pub tx_count: usize,
    /// Transactions sent as references.
    pub known: usize,
    /// Transactions sent whole.
    pub whole: usize,
    pub groups: usize,
    /// Bits per reference.
    pub width: u32,
    /// IDs the groups span.
    pub window: u64,
    /// The whole compressed block.
    pub bytes: usize,
    /// Header and whole transactions, with their length prefixes.
    pub header_and_whole_bytes: usize,
}

impl CompressStats {
    pub fn of(repr: &CompressedBlockRepr<'_>) -> Self {
        let header_and_whole_bytes = varint::len(repr.header.len() as u64)
            + repr.header.len()
            + repr
                .whole_txs
                .iter()
                .map(|t| varint::len(t.len() as u64) + t.len())
                .sum::<usize>();
        CompressStats {
            tx_count: repr.tx_count as usize,
            known: repr.refs.len(),
            whole: repr.whole_txs.len(),
            groups: repr.groups.len(),
            width: ref_width(repr.window()),
            window: repr.window(),
            bytes: repr.buffer_len(),
            header_and_whole_bytes,
        }
    }

    /// Bytes spent on the known transactions: everything but the header and the whole
    /// transactions (so counts, groups and references), per known transaction.
    pub fn bytes_per_known_tx(&self) -> f64 {
        if self.known == 0 {
            return 0.0;
        }
        (self.bytes - self.header_and_whole_bytes) as f64 / self.known as f64
    }
}

/// A compressed block and its sizes.
#[derive(Debug, Clone)]
pub struct Compressed {
    pub bytes: Vec<u8>,
    pub stats: CompressStats,
}

/// Compress `block` against the sender's store: every transaction whose wtxid has a short ID
/// is sent as a reference, the others (the coinbase at least) whole.
///
/// Looking up by wtxid, not txid, makes the reference name the exact bytes (witness included).
pub fn compress<C: ChainAdapter>(
    block: &C::Block,
    store: &TxStore,
) -> Result<Compressed, CompressError> {
    compress_as::<C>(BlockEncoding::Compact, block, store)
}

/// Encode `block` as `encoding` (§6.3, §6.8): compact and BIP152-sized reference the same
/// transactions (those whose wtxid has a short ID in `store`, each ID once); full ignores the
/// store.
pub fn compress_as<C: ChainAdapter>(
    encoding: BlockEncoding,
    block: &C::Block,
    store: &TxStore,
) -> Result<Compressed, CompressError> {
    let txs = C::transactions(block);
    if txs.len() > C::MAX_TXS_PER_BLOCK {
        return Err(CompressError::TooManyTxs {
            count: txs.len(),
            max: C::MAX_TXS_PER_BLOCK,
            chain: C::NAME,
        });
    }
    let header = C::header_bytes(block);
    if encoding == BlockEncoding::Full {
        let repr = FullBlockRepr {
            chain_id: C::CHAIN_ID,
            block: &C::encode_block(block),
        };
        let mut bytes = Vec::with_capacity(repr.buffer_len());
        repr.emit(&mut bytes);
        let stats = CompressStats {
            tx_count: txs.len(),
            known: 0,
            whole: txs.len(),
            groups: 0,
            width: 0,
            window: 0,
            bytes: bytes.len(),
            header_and_whole_bytes: bytes.len() - 2,
        };
        return Ok(Compressed { bytes, stats });
    }
    let mut refs = Vec::with_capacity(txs.len());
    let mut whole_positions = Vec::new();
    let mut whole_encoded = Vec::new();
    let mut seen = std::collections::HashSet::with_capacity(txs.len());
    for (position, tx) in txs.iter().enumerate() {
        let ids = C::tx_ids(tx);
        match store.id_by_wtxid(&ids.wtxid) {
            Some(id) if seen.insert(id) => refs.push(id),
            _ => {
                // `position < MAX_TXS_PER_BLOCK`, far below u32::MAX.
                whole_positions.push(position as u32);
                whole_encoded.push(C::encode_tx(tx));
            }
        }
    }
    if encoding == BlockEncoding::Bip152Sized {
        let repr = Bip152SizedRepr {
            chain_id: C::CHAIN_ID,
            header: &header,
            tx_count: txs.len() as u32,
            whole_positions,
            refs,
            whole_txs: whole_encoded.iter().map(Vec::as_slice).collect(),
        };
        let mut bytes = Vec::with_capacity(repr.buffer_len());
        repr.emit(&mut bytes)
            .expect("the encoder builds a valid repr: each ID once, positions ascending");
        let header_and_whole_bytes = varint::len(header.len() as u64)
            + header.len()
            + whole_encoded
                .iter()
                .map(|t| varint::len(t.len() as u64) + t.len())
                .sum::<usize>();
        let stats = CompressStats {
            tx_count: txs.len(),
            known: repr.refs.len(),
            whole: repr.whole_txs.len(),
            groups: 0,
            width: 8 * encoding::BIP152_REF_LEN as u32,
            window: 0,
            bytes: bytes.len(),
            header_and_whole_bytes,
        };
        return Ok(Compressed { bytes, stats });
    }
    let mut sorted: Vec<u32> = refs.iter().map(|id| id.0).collect();
    sorted.sort_unstable();
    let repr = CompressedBlockRepr {
        chain_id: C::CHAIN_ID,
        header: &header,
        tx_count: txs.len() as u32,
        whole_positions,
        groups: choose_groups(&sorted),
        refs,
        whole_txs: whole_encoded.iter().map(Vec::as_slice).collect(),
    };
    let mut bytes = Vec::with_capacity(repr.buffer_len());
    repr.emit(&mut bytes)
        .expect("the encoder builds a valid repr: groups cover every reference");
    let stats = CompressStats::of(&repr);
    Ok(Compressed { bytes, stats })
}

/// Result of [`decompress`].
#[derive(Debug)]
pub enum Decompressed<C: ChainAdapter> {
    /// Every transaction was known: the block, checked by the chain adapter.
    Complete(C::Block),
    /// Some referenced transactions are not in the store: ask the peer for
    /// [`PendingBlock::missing`], then [`PendingBlock::supply`] them.
    Missing(PendingBlock),
}

/// A block waiting for transactions the receiver did not have.
#[derive(Debug, Clone)]
pub struct PendingBlock {
    chain_id: u8,
    header: Vec<u8>,
    /// The bytes of every transaction obtained so far, one after the other (one allocation
    /// for the block, not one per transaction).
    arena: Vec<u8>,
    /// Per block position: where its bytes are in `arena` (empty while missing), and its ids
    /// when they came from the receiver's store.
    slots: Vec<Slot>,
    /// (short ID, block position), sorted by short ID.
    missing: Vec<(ShortId, usize)>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    start: usize,
    end: usize,
    ids: Option<TxIds>,
}

impl PendingBlock {
    fn put(&mut self, position: usize, tx: &[u8], ids: Option<TxIds>) {
        let start = self.arena.len();
        self.arena.extend_from_slice(tx);
        self.slots[position] = Slot {
            start,
            end: self.arena.len(),
            ids,
        };
    }
}

impl std::fmt::Display for PendingBlock {
    /// `missing short IDs [0x..., ...]`: what the receiver asks its peer for.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "missing short IDs [")?;
        for (i, (id, _)) in self.missing.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{id}")?;
        }
        write!(f, "]")
    }
}

/// [`PendingBlock::supply`] was given an ID the block is not waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("short ID {0} is not missing from this block")]
pub struct NotMissing(pub ShortId);

impl PendingBlock {
    /// The short IDs still missing, ascending.
    pub fn missing(&self) -> Vec<ShortId> {
        self.missing.iter().map(|&(id, _)| id).collect()
    }

    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }

    /// Give the transaction (chain encoding) for a missing short ID.
    pub fn supply(&mut self, id: ShortId, tx: &[u8]) -> Result<(), NotMissing> {
        let at = self
            .missing
            .binary_search_by_key(&id, |&(m, _)| m)
            .map_err(|_| NotMissing(id))?;
        let (_, position) = self.missing.remove(at);
        // Bytes from the network: their ids are not known, the check hashes them.
        self.put(position, tx, None);
        Ok(())
    }

    /// Take whatever missing transactions the store now has (e.g. after fetching them).
    pub fn fill_from(&mut self, store: &TxStore) {
        let mut missing = std::mem::take(&mut self.missing);
        missing.retain(|&(id, position)| match store.get_with_ids(id) {
            Some((tx, ids)) => {
                self.put(position, tx, Some(ids));
                false
            }
            None => true,
        });
        self.missing = missing;
    }

    /// Rebuild and check the block once nothing is missing.
    pub fn finish<C: ChainAdapter>(self) -> Result<C::Block, DecompressError> {
        if self.chain_id != C::CHAIN_ID {
            return Err(DecompressError::WrongChain {
                expected: C::CHAIN_ID,
                found: self.chain_id,
            });
        }
        if !self.missing.is_empty() {
            return Err(DecompressError::StillMissing(self.missing.len()));
        }
        let txs = self
            .slots
            .iter()
            .map(|s| (&self.arena[s.start..s.end], s.ids));
        assemble::<C>(&self.header, txs)
    }
}

/// Decode the transactions and let the chain adapter check the block (§6.4). Each comes with
/// its ids when the receiver's store has them (computed by this process from these bytes when
/// it stored them): the check takes those and hashes only the others (the whole transactions of
/// the payload, those supplied by a peer).
fn assemble<'t, C: ChainAdapter>(
    header: &[u8],
    txs: impl ExactSizeIterator<Item = (&'t [u8], Option<TxIds>)>,
) -> Result<C::Block, DecompressError> {
    let mut decoded = Vec::with_capacity(txs.len());
    let mut known = Vec::with_capacity(txs.len());
    for (position, (bytes, ids)) in txs.enumerate() {
        decoded.push(C::decode_tx(bytes).map_err(|error| DecompressError::Tx { position, error })?);
        known.push(ids);
    }
    C::assemble_with_ids(header, decoded, &known).map_err(DecompressError::Block)
}

/// Decode a block payload received from the network (any encoding of §6.3 and §6.8, named by
/// its first byte) against the receiver's store.
pub fn decompress<C: ChainAdapter>(
    data: &[u8],
    store: &TxStore,
) -> Result<Decompressed<C>, DecompressError>
where
    C::Tx: Clone,
{
    let Some(&first) = data.first() else {
        return Err(DecompressError::Empty);
    };
    let r = match BlockEncoding::from_format_byte(first) {
        Some(BlockEncoding::Compact) => CompressedBlockRepr::parse(data, C::MAX_TXS_PER_BLOCK)?,
        // Rebuilt as a compact block: it only lacks the groups, which the rebuild does not read.
        Some(BlockEncoding::Bip152Sized) => {
            Bip152SizedRepr::parse(data, C::MAX_TXS_PER_BLOCK)?.into_compact()
        }
        Some(BlockEncoding::Full) => {
            let r = FullBlockRepr::parse(data)?;
            check_chain::<C>(r.chain_id)?;
            let block = C::decode_block(r.block).map_err(DecompressError::Block)?;
            // The chain encoding alone is not checked: rebuild it through the adapter so the
            // merkle root and witness commitment are verified as on every other path.
            let header = C::header_bytes(&block);
            let txs = C::transactions(&block).to_vec();
            return C::assemble(&header, txs)
                .map(Decompressed::Complete)
                .map_err(DecompressError::Block);
        }
        None => return Err(DecompressError::UnknownFormat(first)),
    };
    rebuild::<C>(
        r.chain_id,
        r.header,
        r.tx_count,
        &r.whole_positions,
        &r.whole_txs,
        &r.refs,
        store,
    )
}

fn check_chain<C: ChainAdapter>(found: u8) -> Result<(), DecompressError> {
    if found != C::CHAIN_ID {
        return Err(DecompressError::WrongChain {
            expected: C::CHAIN_ID,
            found,
        });
    }
    Ok(())
}

/// Block order from a parsed compact or BIP152-sized payload: whole transactions at their
/// positions, references (looked up in `store`) fill the rest.
fn rebuild<C: ChainAdapter>(
    chain_id: u8,
    header: &[u8],
    tx_count: u32,
    whole_positions: &[u32],
    whole_txs: &[&[u8]],
    refs: &[ShortId],
    store: &TxStore,
) -> Result<Decompressed<C>, DecompressError> {
    check_chain::<C>(chain_id)?;
    let n = tx_count as usize;
    // Block order: the bytes and, for a transaction of the store, its ids (a whole one of the
    // payload has none: it is hashed); a missing one is an empty slice for now.
    let mut order: Vec<(&[u8], Option<TxIds>)> = Vec::with_capacity(n);
    let (mut w, mut r) = (0usize, 0usize);
    let mut missing = Vec::new();
    for position in 0..n {
        if whole_positions.get(w) == Some(&(position as u32)) {
            order.push((whole_txs[w], None));
            w += 1;
        } else {
            let id = refs[r];
            r += 1;
            match store.get_with_ids(id) {
                Some((tx, ids)) => order.push((tx, Some(ids))),
                None => {
                    missing.push((id, position));
                    order.push((&[][..], None));
                }
            }
        }
    }
    if missing.is_empty() {
        return assemble::<C>(header, order.into_iter()).map(Decompressed::Complete);
    }
    missing.sort_unstable();
    let mut pending = PendingBlock {
        chain_id,
        header: header.to_vec(),
        arena: Vec::with_capacity(order.iter().map(|(tx, _)| tx.len()).sum()),
        slots: vec![Slot::default(); n],
        missing,
    };
    for (position, (tx, ids)) in order.into_iter().enumerate() {
        if !tx.is_empty() {
            pending.put(position, tx, ids);
        }
    }
    Ok(Decompressed::Missing(pending))
}

#[cfg(feature = "fuzzing")]
/// Fuzz entry (fuzz/fuzz_targets/compressed_block.rs, replayed by
/// protocol/tests/fuzz_corpus_compress.rs): any input must parse or fail with a typed error,
/// whatever its format byte (§6.3, §6.8); a parsed payload must emit back to the same bytes,
/// and decoding it against an empty store must ask for exactly its references (or fail with a
/// typed error), never panic.
pub fn fuzz_compressed_block(data: &[u8]) {
    use crate::chain::Bitcoin;
    use crate::shortid::TxStoreConfig;
    let store = TxStore::new(TxStoreConfig::default());
    let result = decompress::<Bitcoin>(data, &store);
    let max = Bitcoin::MAX_TXS_PER_BLOCK;
    // (emitted bytes, tx count, references) of whichever format parses.
    let parsed = match data
        .first()
        .copied()
        .and_then(BlockEncoding::from_format_byte)
    {
        Some(BlockEncoding::Compact) => CompressedBlockRepr::parse(data, max).map(|r| {
            let mut out = Vec::new();
            r.emit(&mut out).expect("a parsed compressed block emits");
            assert_eq!(r.buffer_len(), out.len());
            (out, r.tx_count, r.refs)
        }),
        Some(BlockEncoding::Bip152Sized) => Bip152SizedRepr::parse(data, max).map(|r| {
            let mut out = Vec::new();
            r.emit(&mut out).expect("a parsed BIP152-sized block emits");
            assert_eq!(r.buffer_len(), out.len());
            (out, r.tx_count, r.refs)
        }),
        Some(BlockEncoding::Full) => FullBlockRepr::parse(data).map(|r| {
            let mut out = Vec::new();
            r.emit(&mut out);
            (out, 0, Vec::new())
        }),
        None => {
            assert!(result.is_err(), "decoded a payload of no known format");
            return;
        }
    };
    let Ok((out, tx_count, refs)) = parsed else {
        assert!(result.is_err(), "decompress accepted what parse rejected");
        return;
    };
    assert_eq!(out, data, "parse then emit is not the identity");
    match result {
        Ok(Decompressed::Complete(block)) => {
            assert!(
                refs.is_empty(),
                "completed without the referenced transactions"
            );
            if data[0] != encoding::FORMAT_FULL {
                assert_eq!(Bitcoin::transactions(&block).len(), tx_count as usize);
            }
        }
        Ok(Decompressed::Missing(pending)) => {
            let mut want = refs;
            want.sort_unstable();
            assert_eq!(pending.missing(), want);
            assert!(matches!(
                pending.finish::<Bitcoin>(),
                Err(DecompressError::StillMissing(n)) if n == want.len()
            ));
        }
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests;
