//! §3: any K of the K + R shards rebuild the block.
use photon_protocol::fec::{Decoder, Encoded, FecError, RepairPolicy};
use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn rebuild_from(enc: &Encoded, indices: &[usize]) -> Result<Vec<u8>, FecError> {
    let mut dec = Decoder::new(*enc.params());
    for &i in indices {
        dec.insert(i, enc.shard(i).expect("index in range"))?;
    }
    dec.decode()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn any_k_of_k_plus_r_rebuild(
        block in proptest::collection::vec(any::<u8>(), 1..4000),
        half_shard in 1usize..100,
        permille in 0u32..1500,
        min_repair in 0u32..8,
        seed in any::<u64>(),
    ) {
        let policy = RepairPolicy { overhead_permille: permille, min_repair };
        let enc = Encoded::encode(&block, 2 * half_shard, &policy).unwrap();
        let (k, total) = (enc.params().k(), enc.params().total());
        let mut idx: Vec<usize> = (0..total).collect();
        idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        prop_assert_eq!(rebuild_from(&enc, &idx[..k]).unwrap(), block);
        // One fewer is not enough, and says so.
        if k > 1 {
            let short = rebuild_from(&enc, &idx[..k - 1]);
            prop_assert!(
                matches!(short, Err(FecError::NotEnoughShards { .. })),
                "K-1 shards gave {:?}",
                short.map(|b| b.len())
            );
        }
    }
}

#[test]
fn one_megabyte_mainnet_block_with_default_loss_replaced_by_repair() {
    let raw = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../data/bitcoin/mainnet/702861.raw"
    ))
    .unwrap();
    let enc = Encoded::encode(&raw, 1196, &RepairPolicy::DEFAULT).unwrap();
    let (k, r) = (enc.params().k(), enc.params().r());
    assert_eq!(k, raw.len().div_ceil(1196));
    // Lose R source shards spread over the block: every repair shard is needed.
    let lost: Vec<usize> = (0..r).map(|i| i * k / r).collect();
    let kept: Vec<usize> = (0..k + r).filter(|i| !lost.contains(i)).collect();
    assert_eq!(kept.len(), k);
    assert_eq!(rebuild_from(&enc, &kept).unwrap(), raw);
    // One more loss and it cannot decode.
    assert!(matches!(
        rebuild_from(&enc, &kept[1..]),
        Err(FecError::NotEnoughShards { .. })
    ));
}
