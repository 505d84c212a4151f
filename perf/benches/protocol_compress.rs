//! Compression and decompression of every real block in data/bitcoin/mainnet/ (docs/protocol.md
//! §6), short IDs assigned by the baseline model of §6.5 (3 relays, 2x traffic, 1% old), the
//! receiver knowing every transaction. Throughput is in bytes of the full block.
//!
//! cargo bench -p photon-perf --bench protocol_compress -- --warm-up-time 1 --measurement-time 3

use std::collections::HashMap;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use photon_protocol::chain::{Bitcoin, ChainAdapter};
use photon_protocol::compress::model::ArrivalModel;
use photon_protocol::compress::{compress, decompress, Decompressed};
use photon_protocol::shortid::{TxStore, TxStoreConfig};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn blocks() -> Vec<(u64, Vec<u8>)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/bitcoin/mainnet");
    let mut out: Vec<(u64, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("data/bitcoin/mainnet")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let height = path.file_stem()?.to_str()?.parse().ok()?;
            (path.extension()? == "raw").then(|| (height, std::fs::read(&path).unwrap()))
        })
        .collect();
    out.sort();
    out
}

fn store_for(block: &<Bitcoin as ChainAdapter>::Block, seed: u64) -> TxStore {
    let txs = Bitcoin::transactions(block);
    let pos: HashMap<[u8; 32], usize> = txs
        .iter()
        .enumerate()
        .map(|(i, t)| (Bitcoin::tx_ids(t).txid, i))
        .collect();
    let parents: Vec<Vec<usize>> = txs
        .iter()
        .map(|t| {
            Bitcoin::parent_txids(t)
                .iter()
                .filter_map(|p| pos.get(p).copied())
                .collect()
        })
        .collect();
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
