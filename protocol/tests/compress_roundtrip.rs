//! Every real block of data/bitcoin/mainnet/ through compression and back (docs/protocol.md §6):
//! byte-identical when the receiver knows every transaction; a "missing short IDs [..]" result
//! when it does not, completed once they are supplied; typed errors for wrong supplies.

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use photon_protocol::chain::{raw_block_files, Bitcoin, ChainAdapter, ChainError};
use photon_protocol::compress::model::{in_block_parents, ArrivalModel};
use photon_protocol::compress::{compress, decompress, Compressed, DecompressError, Decompressed};
use photon_protocol::shortid::{ShortId, TxStore, TxStoreConfig};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn real_blocks() -> Vec<(u64, Vec<u8>)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/bitcoin/mainnet");
    let out: Vec<(u64, Vec<u8>)> = raw_block_files(Path::new(dir))
        .expect("data/bitcoin/mainnet")
        .into_iter()
        .filter_map(|(height, path)| Some((height, std::fs::read(&path).ok()?)))
        .collect();
    assert_eq!(
        out.len(),
        16,
        "the 16 shared blocks of data/bitcoin/SOURCES.md"
    );
    out
}

/// The store of a gateway that saw the model's announcements, minus `skip`.
/// The stored block at `height`.
fn real_block(height: u64) -> Vec<u8> {
    let mut blocks = real_blocks().into_iter();
    blocks
        .find(|(h, _)| *h == height)
        .expect("block in data/")
        .1
}

/// Block `raw` as its sender compresses it: every transaction of the block given a short ID
/// ([`assign`], seeded with `height`) and in the sender's store.
fn sent(raw: &[u8], height: u64) -> (bitcoin::Block, Vec<Option<ShortId>>, TxStore, Compressed) {
    let block = Bitcoin::decode_block(raw).unwrap();
    let ids = assign(&block, height);
    let sender = store(&block, &ids, &HashSet::new());
    let c = compress::<Bitcoin>(&block, &sender).unwrap();
    (block, ids, sender, c)
}

fn store(block: &bitcoin::Block, ids: &[Option<ShortId>], skip: &HashSet<ShortId>) -> TxStore {
    let mut store = TxStore::new(TxStoreConfig::default());
    let now = Instant::now();
    for (tx, id) in block.txdata.iter().zip(ids) {
        if let Some(id) = id.filter(|id| !skip.contains(id)) {
            store
                .insert(id, Bitcoin::tx_ids(tx), &Bitcoin::encode_tx(tx), now)
                .unwrap();
        }
    }
    store
}

fn assign(block: &bitcoin::Block, seed: u64) -> Vec<Option<ShortId>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    ArrivalModel::BASELINE.assign(&in_block_parents::<Bitcoin>(block), &mut || rng.next_u64())
}

#[test]
fn every_real_block_round_trips_when_all_known() {
    for (height, raw) in real_blocks() {
        let (block, ids, _, c) = sent(&raw, height);
        assert_eq!(
            c.stats.known,
            block.txdata.len() - 1,
            "{height}: all but the coinbase"
        );
        assert_eq!(c.stats.whole, 1);
        assert!(
            c.bytes.len() < raw.len() / 10,
            "{height}: {} bytes",
            c.bytes.len()
        );
        // A separate receiver store holding the same transactions.
        let receiver = store(&block, &ids, &HashSet::new());
        match decompress::<Bitcoin>(&c.bytes, &receiver).unwrap() {
            Decompressed::Complete(back) => {
                assert!(Bitcoin::encode_block(&back) == raw, "{height}")
            }
            Decompressed::Missing(p) => panic!("{height}: {p}"),
        }
    }
}

#[test]
fn ten_percent_unknown_asks_for_exactly_those_and_completes() {
    for (height, raw) in real_blocks() {
        let (block, ids, sender, c) = sent(&raw, height);

        let mut rng = ChaCha8Rng::seed_from_u64(height ^ 0xdead);
        let unknown: HashSet<ShortId> = ids
            .iter()
            .flatten()
            .copied()
            .filter(|_| rng.gen_bool(0.1))
            .collect();
        let receiver = store(&block, &ids, &unknown);
        let mut pending = match decompress::<Bitcoin>(&c.bytes, &receiver).unwrap() {
            Decompressed::Missing(p) => p,
            Decompressed::Complete(_) if unknown.is_empty() => continue,
            Decompressed::Complete(_) => {
                panic!("{height}: completed without {} txs", unknown.len())
            }
        };
        let mut want: Vec<ShortId> = unknown.iter().copied().collect();
        want.sort_unstable();
        assert_eq!(pending.missing(), want, "{height}");
        assert!(pending.to_string().starts_with("missing short IDs [0x"));
        // Finishing early is a typed error, not a wrong block.
        assert_eq!(
            pending.clone().finish::<Bitcoin>().unwrap_err(),
            DecompressError::StillMissing(want.len())
        );
        for id in &want {
            pending.supply(*id, sender.get(*id).unwrap()).unwrap();
        }
        assert!(pending.supply(want[0], b"again").is_err());
        assert!(pending.is_complete());
        assert!(
            Bitcoin::encode_block(&pending.finish::<Bitcoin>().unwrap()) == raw,
            "{height}"
        );
    }
}

#[test]
fn fill_from_store_after_fetch() {
    let raw = real_block(556977);
    let (block, ids, sender, c) = sent(&raw, 556977);
    let skip: HashSet<ShortId> = ids.iter().flatten().copied().step_by(7).collect();
    let mut receiver = store(&block, &ids, &skip);
    let Decompressed::Missing(mut pending) = decompress::<Bitcoin>(&c.bytes, &receiver).unwrap()
    else {
        panic!("expected missing")
    };
    assert_eq!(pending.missing().len(), skip.len());
    // The gateway fetched them into its store.
    let now = Instant::now();
    for id in pending.missing() {
        receiver
            .insert(id, sender.ids(id).unwrap(), sender.get(id).unwrap(), now)
            .unwrap();
    }
    pending.fill_from(&receiver);
    assert!(pending.is_complete());
    assert!(Bitcoin::encode_block(&pending.finish::<Bitcoin>().unwrap()) == raw);
}

#[test]
fn wrong_transactions_fail_the_merkle_check() {
    let raw = real_block(300025);
    let (block, ids, _, c) = sent(&raw, 300025);

    // The receiver's store holds another transaction under one ID (e.g. a wrapped range).
    let (a, b) = (ids[1].unwrap(), ids[2].unwrap());
    let mut receiver = store(&block, &ids, &HashSet::new());
    let other = Bitcoin::tx_ids(&block.txdata[2]);
    let other_bytes = receiver.get(b).unwrap().to_vec();
    receiver.remove(b);
    // The old holder of `a` expired first: a held ID is never rebound (§6.2).
    receiver.remove(a);
    receiver
        .insert(a, other, &other_bytes, Instant::now())
        .unwrap();
    let Decompressed::Missing(mut pending) = decompress::<Bitcoin>(&c.bytes, &receiver).unwrap()
    else {
        panic!("b is missing")
    };
    assert_eq!(pending.missing(), [b]);
    pending.supply(b, &other_bytes).unwrap();
    assert_eq!(
        pending.finish::<Bitcoin>().unwrap_err(),
        DecompressError::Block(ChainError::MerkleMismatch)
    );
}

#[test]
fn empty_store_sends_everything_whole() {
    let (_, raw) = real_blocks()
        .into_iter()
        .find(|(h, _)| *h == 227836)
        .unwrap();
    let block = Bitcoin::decode_block(&raw).unwrap();
    let empty = TxStore::new(TxStoreConfig::default());
    let c = compress::<Bitcoin>(&block, &empty).unwrap();
    assert_eq!(
        (c.stats.known, c.stats.whole, c.stats.groups),
        (0, block.txdata.len(), 0)
    );
    match decompress::<Bitcoin>(&c.bytes, &empty).unwrap() {
        Decompressed::Complete(back) => assert!(Bitcoin::encode_block(&back) == raw),
        Decompressed::Missing(p) => panic!("{p}"),
    }
}
