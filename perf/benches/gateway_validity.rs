//! The gateway's check of a block before its node sees it (`validity::check_block`, F6 of
//! docs/protocol/8-threat-model.md) on the demo's three real blocks, beside the merkle-tree
//! rebuild it now skips for blocks that repeat no transaction (every txid hashed, as
//! `Block::check_merkle_root` does).
//!
//! cargo bench -p photon-perf --bench gateway_validity -- --warm-up-time 1 --measurement-time 3

use bitcoin::Target;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use photon_gateway::core::validity::check_block;
use photon_protocol::chain::{Bitcoin, ChainAdapter};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("gateway_validity");
    for height in [556977u32, 574200, 702861] {
        let path = format!(
            "{}/../data/bitcoin/mainnet/{height}.raw",
            env!("CARGO_MANIFEST_DIR")
        );
        let block = Bitcoin::decode_block(&std::fs::read(path).unwrap()).unwrap();
        group.bench_with_input(
            BenchmarkId::new("check_block", height),
            &block,
            |b, block| b.iter(|| check_block(block, Target::MAX).unwrap()),
        );
        group.bench_with_input(
            BenchmarkId::new("merkle_rebuild", height),
            &block,
            |b, block| b.iter(|| assert!(block.check_merkle_root())),
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
