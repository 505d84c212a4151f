//! FEC and integrity costs of a 1 MB block (`docs/protocol.md` §3, §4.1): encode, decode with
//! the default repair budget's worth of source shards lost, manifest build + sign, manifest
//! fragment verify (first, with signature, and further ones by Merkle proof), per-shard hash
//! check. Input: the first 1,000,000 bytes of mainnet block 702861.
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use photon_protocol::fec::{self, Decoder, Encoded, RepairPolicy};
use photon_protocol::integrity::{
    own_stream_id, Ed25519KeyPair, ManifestCollector, ManifestFragmentRepr, SignedManifest,
};
use photon_protocol::wire;

mod common;

use common::block_1mb;

fn benches(c: &mut Criterion) {
    let block = block_1mb();
    let shard = fec::shard_size_for(wire::max_fragment_payload(), 0).unwrap();
    let policy = RepairPolicy::DEFAULT;
    let enc = Encoded::encode(&block, shard, &policy).unwrap();
    let (k, r) = (enc.params().k(), enc.params().r());
    let key = Ed25519KeyPair::from_seed_unchecked(&[1; 32]).unwrap();

    let mut g = c.benchmark_group("fec_1MB");
    g.throughput(Throughput::Bytes(block.len() as u64));
    g.bench_function(format!("encode K={k} R={r}"), |b| {
        b.iter(|| Encoded::encode(black_box(&block), shard, &policy).unwrap())
    });
    // R source shards lost, spread over the block; all R repair shards used.
    let lost: Vec<usize> = (0..r).map(|i| i * k / r).collect();
    let kept: Vec<usize> = (0..k + r).filter(|i| !lost.contains(i)).collect();
    g.bench_function(format!("decode {r} source shards lost"), |b| {
        b.iter(|| {
            let mut d = Decoder::new(*enc.params());
            for &i in &kept {
                d.insert(i, enc.shard(i).unwrap()).unwrap();
            }
            d.decode().unwrap()
        })
    });
    g.bench_function("decode no loss", |b| {
        b.iter(|| {
            let mut d = Decoder::new(*enc.params());
            for i in 0..k {
                d.insert(i, enc.shard(i).unwrap()).unwrap();
            }
            d.decode().unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("integrity_1MB");
    g.bench_function("manifest build+sign (hash all shards)", |b| {
        b.iter(|| {
            SignedManifest::build(
                own_stream_id(&key, 7),
                black_box(&enc),
                &key,
                wire::max_fragment_payload(),
            )
            .unwrap()
        })
    });
    let m = SignedManifest::build(
        own_stream_id(&key, 7),
        &enc,
        &key,
        wire::max_fragment_payload(),
    )
    .unwrap();
    let mut frags = Vec::new();
    for i in 0..m.fragment_count() {
        let mut buf = vec![0u8; wire::MAX_DATAGRAM];
        let n = m.emit_fragment(i, &mut buf).unwrap();
        buf.truncate(n);
        frags.push(buf);
    }
    let pk = photon_protocol::integrity::public_key(&key);
    g.bench_function(
        "first manifest fragment: parse + Merkle + Ed25519 verify",
        |b| {
            b.iter(|| {
                let f = ManifestFragmentRepr::parse(black_box(&frags[0])).unwrap();
                ManifestCollector::new(&f, |k| *k == pk).unwrap()
            })
        },
    );
    let first = ManifestFragmentRepr::parse(&frags[0]).unwrap();
    g.bench_function("further manifest fragment: parse + Merkle proof", |b| {
        b.iter_batched(
            || ManifestCollector::new(&first, |k| *k == pk).unwrap().0,
            |mut c| {
                c.insert(&ManifestFragmentRepr::parse(black_box(&frags[1])).unwrap())
                    .unwrap()
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let (mut coll, _) = ManifestCollector::new(&first, |k| *k == pk).unwrap();
    for f in &frags[1..] {
        let _ = coll.insert(&ManifestFragmentRepr::parse(f).unwrap());
    }
    let s0 = enc.shard(0).unwrap();
    g.throughput(Throughput::Bytes(s0.len() as u64));
    g.bench_function("per-shard verify (SHA-256 of 1196 bytes)", |b| {
        b.iter(|| coll.check_shard(0, black_box(s0)).unwrap())
    });
    g.finish();
}

criterion_group!(protocol_fec, benches);
criterion_main!(protocol_fec);
