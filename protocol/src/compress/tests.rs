//! Decompression's checks on the fast path (ids from the receiver's store, §6.4): real blocks
//! come back byte-identical; a wrong merkle root, a wrong witness commitment, an altered whole
//! transaction of the payload and a store entry with wrong ids are all refused.

use std::time::Instant;

use ::bitcoin::hashes::Hash;
use ::bitcoin::Block;

use super::{compress, compress_as, decompress, BlockEncoding, DecompressError, Decompressed};
use crate::chain::{altered_witness, witness_tx, Bitcoin, ChainAdapter, ChainError};
use crate::shortid::{ShortId, TxIds, TxStore, TxStoreConfig};

fn real_block(height: u64) -> (Vec<u8>, Block) {
    let path = format!(
        "{}/../data/bitcoin/mainnet/{height}.raw",
        env!("CARGO_MANIFEST_DIR")
    );
    let raw = std::fs::read(path).expect("real block");
    let block = Bitcoin::decode_block(&raw).expect("decodes");
    (raw, block)
}

/// A store holding every transaction of `block` but the coinbase and those in `skip`, as a
/// gateway stores them (ids computed from the bytes), short ID = block position.
fn store_of(block: &Block, skip: &[usize]) -> TxStore {
    let mut store = TxStore::new(TxStoreConfig::default());
    let now = Instant::now();
    for (i, tx) in block.txdata.iter().enumerate().skip(1) {
        if !skip.contains(&i) {
            store
                .insert(
                    ShortId(i as u32),
                    Bitcoin::tx_ids(tx),
                    &Bitcoin::encode_tx(tx),
                    now,
                )
                .unwrap();
        }
    }
    store
}

fn decompress_complete(bytes: &[u8], store: &TxStore) -> Result<Block, DecompressError> {
    match decompress::<Bitcoin>(bytes, store)? {
        Decompressed::Complete(block) => Ok(block),
        Decompressed::Missing(p) => panic!("{p}"),
    }
}

/// Decompressing `bytes` against `store` fails the chain's check with `error`.
#[track_caller]
fn assert_refused(bytes: &[u8], store: &TxStore, error: ChainError) {
    assert_eq!(
        decompress_complete(bytes, store).unwrap_err(),
        DecompressError::Block(error)
    );
}

fn replace(hay: &mut [u8], from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let at = hay
        .windows(from.len())
        .position(|w| w == from)
        .expect("present");
    hay[at..at + from.len()].copy_from_slice(to);
}

#[test]
fn real_blocks_round_trip_byte_identical_on_the_fast_path() {
    for height in [702861, 574200, 556977, 481829, 300025, 227835] {
        let (raw, block) = real_block(height);
        let store = store_of(&block, &[]);
        for encoding in [BlockEncoding::Compact, BlockEncoding::Bip152Sized] {
            let c = compress_as::<Bitcoin>(encoding, &block, &store).unwrap();
            assert_eq!(c.stats.whole, 1, "{height}: only the coinbase whole");
            let back = decompress_complete(&c.bytes, &store).unwrap();
            assert!(Bitcoin::encode_block(&back) == raw, "{height} {encoding:?}");
        }
    }
}

#[test]
fn wrong_merkle_root_in_the_payload_is_refused() {
    let (_, block) = real_block(702861);
    let store = store_of(&block, &[]);
    let mut bytes = compress::<Bitcoin>(&block, &store).unwrap().bytes;
    let root = block.header.merkle_root.to_byte_array();
    let mut wrong = root;
    wrong[3] ^= 0x10;
    replace(&mut bytes, &root, &wrong);
    assert_refused(&bytes, &store, ChainError::MerkleMismatch);
}

#[test]
fn wrong_witness_commitment_is_refused() {
    // A coinbase with another commitment and a header whose merkle root matches it: the merkle
    // check passes, the commitment check must not.
    let (_, mut block) = real_block(574200);
    crate::chain::corrupt_witness_commitment(&mut block, 30);
    let store = store_of(&block, &[]);
    let c = compress::<Bitcoin>(&block, &store).unwrap();
    assert_refused(&c.bytes, &store, ChainError::WitnessCommitmentMismatch);
}

#[test]
fn altered_whole_tx_of_the_payload_is_hashed_and_refused() {
    // The receiver stores the transaction but the sender did not: it travels whole, and its
    // bytes (altered witness: same txid) are hashed, not matched to the store by ID.
    let (_, block) = real_block(556977);
    let i = witness_tx(&block);
    let sender = store_of(&block, &[i]);
    let receiver = store_of(&block, &[]);
    let good = Bitcoin::encode_tx(&block.txdata[i]);
    let bad = Bitcoin::encode_tx(&altered_witness(&block.txdata[i]));
    let mut bytes = compress::<Bitcoin>(&block, &sender).unwrap().bytes;
    assert_eq!(decompress_complete(&bytes, &receiver).unwrap(), block);
    replace(&mut bytes, &good, &bad);
    assert_refused(&bytes, &receiver, ChainError::WitnessCommitmentMismatch);
}

#[test]
fn supplied_tx_is_hashed_and_refused_when_altered() {
    let (raw, block) = real_block(702861);
    let i = witness_tx(&block);
    let sender = store_of(&block, &[]);
    let receiver = store_of(&block, &[i]);
    let c = compress::<Bitcoin>(&block, &sender).unwrap();
    let Decompressed::Missing(pending) = decompress::<Bitcoin>(&c.bytes, &receiver).unwrap() else {
        panic!("tx {i} is missing")
    };
    assert_eq!(pending.missing(), [ShortId(i as u32)]);
    let mut bad = pending.clone();
    bad.supply(
        ShortId(i as u32),
        &Bitcoin::encode_tx(&altered_witness(&block.txdata[i])),
    )
    .unwrap();
    assert_eq!(
        bad.finish::<Bitcoin>().unwrap_err(),
        DecompressError::Block(ChainError::WitnessCommitmentMismatch)
    );
    let mut good = pending;
    good.supply(ShortId(i as u32), sender.get(ShortId(i as u32)).unwrap())
        .unwrap();
    assert!(Bitcoin::encode_block(&good.finish::<Bitcoin>().unwrap()) == raw);
}

/// The receiver's store holds the right bytes for one transaction under wrong ids (which its
/// own insert path never does: it computes them from the bytes). The fast path takes the
/// stored ids as they are, so the block is refused, never accepted with other contents.
#[test]
fn store_entry_with_wrong_ids_is_refused() {
    let (_, block) = real_block(556977);
    let i = witness_tx(&block);
    let sender = store_of(&block, &[]);
    let c = compress::<Bitcoin>(&block, &sender).unwrap();
    let right = Bitcoin::tx_ids(&block.txdata[i]);
    let bytes = Bitcoin::encode_tx(&block.txdata[i]);
    let cases = [
        (
            TxIds {
                txid: [0x11; 32],
                ..right
            },
            ChainError::MerkleMismatch,
        ),
        (
            TxIds {
                wtxid: [0x22; 32],
                ..right
            },
            ChainError::WitnessCommitmentMismatch,
        ),
    ];
    for (ids, error) in cases {
        let mut receiver = store_of(&block, &[i]);
        receiver
            .insert(ShortId(i as u32), ids, &bytes, Instant::now())
            .unwrap();
        assert_refused(&c.bytes, &receiver, error.clone());
        // The same entry taken by `fill_from` into a pending block.
        let partial = store_of(&block, &[i]);
        let Decompressed::Missing(mut pending) = decompress::<Bitcoin>(&c.bytes, &partial).unwrap()
        else {
            panic!("tx {i} is missing")
        };
        pending.fill_from(&receiver);
        assert!(pending.is_complete());
        assert_eq!(
            pending.finish::<Bitcoin>().unwrap_err(),
            DecompressError::Block(error)
        );
    }
}

#[test]
fn full_encoding_keeps_the_full_check() {
    let (raw, mut block) = real_block(702861);
    let empty = TxStore::new(TxStoreConfig::default());
    let c = compress_as::<Bitcoin>(BlockEncoding::Full, &block, &empty).unwrap();
    assert!(Bitcoin::encode_block(&decompress_complete(&c.bytes, &empty).unwrap()) == raw);
    let i = witness_tx(&block);
    block.txdata[i] = altered_witness(&block.txdata[i]);
    let c = compress_as::<Bitcoin>(BlockEncoding::Full, &block, &empty).unwrap();
    assert_refused(&c.bytes, &empty, ChainError::WitnessCommitmentMismatch);
}
