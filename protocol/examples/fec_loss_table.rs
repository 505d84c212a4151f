//! Seeded loss simulation behind the default repair overhead (`docs/protocol.md` §3.4).
//!
//! For 1 MB blocks (1,000,000 bytes) in 1196-byte shards (K = 837), for each repair overhead and
//! i.i.d. loss rate, counts the share of blocks a receiver rebuilds with no retransmission: at
//! least K of the K + R shards *and* at least Km of the Km + Rm manifest fragments arrive (the
//! code is MDS, so that is exact). Loss is drawn on fragment indices only; the first
//! `REAL_TRIALS` trials of every cell also run the real encoder, manifest and decoder on the
//! first 1,000,000 bytes of mainnet block 702861 and check the rebuilt bytes.
//!
//! Run: `cargo run --release -p photon-protocol --example fec_loss_table [trials]`
use photon_protocol::fec::{self, Decoder, Encoded, RepairPolicy};
use photon_protocol::integrity::{own_stream_id, SignedManifest};
use photon_protocol::wire;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ring::signature::Ed25519KeyPair;

const BLOCK_LEN: usize = 1_000_000;
const REAL_TRIALS: usize = 10;
const OVERHEADS_PERMILLE: [u32; 9] = [20, 30, 40, 50, 60, 80, 100, 150, 200];
const LOSSES: [f64; 3] = [0.01, 0.02, 0.05];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let trials: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20_000);
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../data/bitcoin/mainnet/702861.raw"
    );
    let raw = std::fs::read(path)?;
    let block = &raw[..BLOCK_LEN.min(raw.len())];
    let key = Ed25519KeyPair::from_seed_unchecked(&[42; 32]).map_err(|e| format!("{e}"))?;
    let shard_size = fec::shard_size_for(wire::max_fragment_payload(), 0)?;

    println!(
        "block {} bytes, shard {} bytes, {} trials per cell, seed = cell index",
        block.len(),
        shard_size,
        trials
    );
    println!(
        "| repair overhead | K | R | manifest Km+Rm: datagram bytes (% of block) | wire bytes (all datagrams) | decoded at 1 % loss | at 2 % | at 5 % |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (oi, &permille) in OVERHEADS_PERMILLE.iter().enumerate() {
        let policy = RepairPolicy {
            overhead_permille: permille,
            min_repair: 4,
        };
        let enc = Encoded::encode(block, shard_size, &policy)?;
        let manifest = SignedManifest::build(
            own_stream_id(&key, 7),
            &enc,
            &key,
            wire::max_fragment_payload(),
        )?;
        let (k, r) = (enc.params().k(), enc.params().r());
        let (km, mt) = (
            usize::from(manifest.meta().chunk_count),
            manifest.fragment_count(),
        );
        let wire_bytes = (k + r) * (wire::HEADER_LEN + shard_size)
            + mt * (wire::HEADER_LEN + manifest.fragment_len());
        let mut cells = Vec::new();
        for (li, &loss) in LOSSES.iter().enumerate() {
            let mut rng = ChaCha8Rng::seed_from_u64((oi * LOSSES.len() + li) as u64);
            let mut ok = 0usize;
            for t in 0..trials {
                let kept: Vec<bool> = (0..k + r).map(|_| !rng.gen_bool(loss)).collect();
                let manifest_kept = (0..mt).filter(|_| !rng.gen_bool(loss)).count();
                let shards_kept = kept.iter().filter(|&&x| x).count();
                let decoded = shards_kept >= k && manifest_kept >= km;
                ok += usize::from(decoded);
                if t < REAL_TRIALS {
                    let mut dec = Decoder::new(*enc.params());
                    for (i, _) in kept.iter().enumerate().filter(|(_, &x)| x) {
                        dec.insert(i, enc.shard(i).ok_or("shard")?)?;
                    }
                    match dec.decode() {
                        Ok(bytes) => assert_eq!(bytes, block, "decoded block differs"),
                        Err(_) => {
                            assert!(shards_kept < k, "decoder refused {shards_kept} >= K shards")
                        }
                    }
                }
            }
            cells.push(ok as f64 * 100.0 / trials as f64);
        }
        println!(
            "| {:.0} % | {} | {} | {}+{}: {} ({:.2} %) | {} (+{:.2} % over the block) | {:.3} % | {:.3} % | {:.3} % |",
            f64::from(permille) / 10.0,
            k,
            r,
            km,
            mt - km,
            mt * (wire::HEADER_LEN + manifest.fragment_len()),
            (mt * (wire::HEADER_LEN + manifest.fragment_len())) as f64 * 100.0 / block.len() as f64,
            wire_bytes,
            (wire_bytes as f64 / block.len() as f64 - 1.0) * 100.0,
            cells[0],
            cells[1],
            cells[2]
        );
    }
    Ok(())
}
