//! Compression and decompression of every real block in data/bitcoin/mainnet/ (docs/protocol.md
//! §6), short IDs assigned by the baseline model of §6.5 (3 relays, 2x traffic, 1% old), the
//! receiver knowing every transaction. Throughput is in bytes of the full block.
//!
//! cargo bench -p photon-perf --bench protocol_compress -- --warm-up-time 1 --measurement-time 3

use std::path::Path;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use photon_protocol::chain::{raw_block_files, Bitcoin, ChainAdapter};
use photon_protocol::compress::model::{in_block_parents, ArrivalModel};
use photon_protocol::compress::{compress, decompress, Decompressed};
use photon_protocol::shortid::{TxStore, TxStoreConfig};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn blocks() -> Vec<(u64, Vec<u8>)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/bitcoin/mainnet");
    raw_block_files(Path::new(dir))
        .expect("data/bitcoin/mainnet")
        .into_iter()
        .map(|(height, path)| (height, std::fs::read(&path).unwrap()))
        .collect()
}

fn store_for(block: &<Bitcoin as ChainAdapter>::Block, seed: u64) -> TxStore {
    let txs = Bitcoin::transactions(block);
    let parents = in_block_parents::<Bitcoin>(block);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ids = ArrivalModel::BASELINE.assign(&parents, &mut || rng.next_u64());
    let mut store = TxStore::new(TxStoreConfig::default());
    let now = Instant::now();
    for (tx, id) in txs.iter().zip(ids) {
        if let Some(id) = id {
            store
                .insert(id, Bitcoin::tx_ids(tx), &Bitcoin::encode_tx(tx), now)
                .unwrap();
        }
    }
    store
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("protocol_compress");
    for (height, raw) in blocks() {
        let block = Bitcoin::decode_block(&raw).unwrap();
        let store = store_for(&block, height);
        let compressed = compress::<Bitcoin>(&block, &store).unwrap();
        println!(
            "block {height}: {} txs, {} bytes full, {} compressed ({:.2} B/known tx)",
            Bitcoin::transactions(&block).len(),
            raw.len(),
            compressed.bytes.len(),
            compressed.stats.bytes_per_known_tx()
        );
        group.throughput(Throughput::Bytes(raw.len() as u64));
        group.bench_with_input(BenchmarkId::new("compress", height), &block, |b, block| {
            b.iter(|| compress::<Bitcoin>(block, &store).unwrap())
        });
        // Decompression as the receiver does it: parse, look up, decode the transactions, check
        // merkle root and witness commitment (from the ids the store holds for the referenced
        // transactions, hashing the whole ones: §6.4), encode the block for the node.
        group.bench_with_input(
            BenchmarkId::new("decompress", height),
            &compressed.bytes,
            |b, bytes| {
                b.iter(|| match decompress::<Bitcoin>(bytes, &store).unwrap() {
                    Decompressed::Complete(block) => Bitcoin::encode_block(&block),
                    Decompressed::Missing(p) => panic!("{p}"),
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
