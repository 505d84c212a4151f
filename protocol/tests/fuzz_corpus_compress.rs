//! Replays every file of fuzz/corpus/compressed_block/ through the fuzz entry
//! `photon_protocol::compress::fuzz_compressed_block` (the same function the cargo-fuzz target
//! calls), so a crash found by fuzzing and saved there stays fixed.
//!
//! The seed files are small real compressed blocks, written by
//! `cargo test -p photon-protocol --test fuzz_corpus_compress -- --ignored write_seeds`.
// Bytes of references are written in groups of the 3-bit reference width, not of 4 bits.
#![allow(clippy::unusual_byte_groupings)]

#[path = "../../fuzz/corpus_replay.rs"]
mod corpus_replay;

use std::path::PathBuf;
use std::time::Instant;

use photon_protocol::chain::{Bitcoin, ChainAdapter};
use photon_protocol::compress::{compress, fuzz_compressed_block};
use photon_protocol::shortid::{ShortId, TxStore, TxStoreConfig};

fn corpus_dir() -> PathBuf {
    corpus_replay::corpus_dir(env!("CARGO_MANIFEST_DIR"), "compressed_block")
}

#[test]
fn replay_corpus() {
    let replayed = corpus_replay::replay(&corpus_dir(), |_, data| fuzz_compressed_block(data));
    assert!(
        replayed >= 4,
        "the seed files are in the corpus ({replayed} found)"
    );
}

/// Blocks 0-438 of mainnet in blk*.dat framing: magic, u32 LE length, block.
fn early_blocks() -> Vec<Vec<u8>> {
    let data = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../data/bitcoin/mainnet-blocks-0-438.blk"
    ))
    .unwrap();
    let mut out = Vec::new();
    let mut rest = &data[..];
    while rest.len() >= 8 && rest[..4] == [0xf9, 0xbe, 0xb4, 0xd9] {
        let len = u32::from_le_bytes(rest[4..8].try_into().unwrap()) as usize;
        out.push(rest[8..8 + len].to_vec());
        rest = &rest[8 + len..];
    }
    out
}

#[test]
#[ignore = "writes the seed files of fuzz/corpus/compressed_block/"]
fn write_seeds() {
    let blocks = early_blocks();
    assert_eq!(blocks.len(), 439);
    let write = |name: &str, bytes: &[u8]| std::fs::write(corpus_dir().join(name), bytes).unwrap();
    // The golden vector of compress_golden.rs.
    #[rustfmt::skip]
    write("golden-format", &[
        0x01, 0x00, 0x04, b'H', b'D', b'R', b'!', 0x04, 0x02, 0x00, 0x01, 0x02, 0xe8, 0x07, 0x04,
        0x92, 0xf8, 0xff, 0xff, 0x07, 0x00, 0b010_101_00, 0x02, b'c', b'b', 0x03, b't', b'x', b'2',
    ]);
    // Genesis, all whole.
    let genesis = Bitcoin::decode_block(&blocks[0]).unwrap();
    let empty = TxStore::new(TxStoreConfig::default());
    write(
        "genesis-whole",
        &compress::<Bitcoin>(&genesis, &empty).unwrap().bytes,
    );
    // The first blocks with more than a coinbase, their other transactions known by short ID.
    let mut seeds = 0;
    for (height, raw) in blocks.iter().enumerate() {
        let block = Bitcoin::decode_block(raw).unwrap();
        if block.txdata.len() < 2 || seeds == 3 {
            continue;
        }
        let mut store = TxStore::new(TxStoreConfig::default());
        for (i, tx) in block.txdata.iter().enumerate().skip(1) {
            let id = ShortId(0x4000_0000 + 3 * i as u32);
            store
                .insert(
                    id,
                    Bitcoin::tx_ids(tx),
                    &Bitcoin::encode_tx(tx),
                    Instant::now(),
                )
                .unwrap();
        }
        write(
            &format!("block-{height}-known"),
            &compress::<Bitcoin>(&block, &store).unwrap().bytes,
        );
        write(
            &format!("block-{height}-whole"),
            &compress::<Bitcoin>(&block, &empty).unwrap().bytes,
        );
        seeds += 1;
    }
}
