//! Prints the compression table of docs/protocol/6-compression.md: every real block in
//! data/bitcoin/mainnet/, compressed against short IDs assigned by the model of §6.5, beside
//! its BIP152 compact block and its full size. Every compressed block is also decompressed and
//! checked byte for byte against the original.
//!
//! A second table gives the three encodings a gateway can send (`[block] encoding`, §6.8:
//! compact, BIP152-sized, full) under model B: the payload (plus the 16-byte AEAD tag or the
//! unsealed marker, the same size) and the bytes of every datagram of its first pass (FEC
//! source and repair shards and the signed manifest, headers included), as the protocol's
//! `Sender` emits them for one destination.
//!
//! cargo run --release -p photon-protocol --example compression_table

use std::time::Instant;

use bitcoin::bip152::HeaderAndShortIds;
use bitcoin::consensus::serialize;
use photon_protocol::chain::{raw_block_files, Bitcoin, ChainAdapter};
use photon_protocol::compress::model::{in_block_parents, ArrivalModel};
use photon_protocol::compress::{
    compress, compress_as, decompress, BlockEncoding, CompressStats, Decompressed,
};
use photon_protocol::identity::Identity;
use photon_protocol::integrity::own_stream_id;
use photon_protocol::seal::TAG_LEN;
use photon_protocol::sender::{Sender, SenderConfig};
use photon_protocol::shortid::{TxStore, TxStoreConfig};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct Named {
    name: &'static str,
    model: ArrivalModel,
}

fn models() -> [Named; 4] {
    let base = ArrivalModel::BASELINE;
    [
        Named {
            name: "A: 1 relay, 1.5x traffic, 1% old",
            model: ArrivalModel {
                relays: 1,
                traffic_multiple: 1.5,
                ..base
            },
        },
        Named {
            name: "B: 3 relays, 2x traffic, 1% old (baseline)",
            model: base,
        },
        Named {
            name: "C: 2 relays, 2x traffic, 5% old",
            model: ArrivalModel {
                relays: 2,
                old_fraction: 0.05,
                ..base
            },
        },
        Named {
            name: "D: 3 relays, 4x traffic, 5% old (stress)",
            model: ArrivalModel {
                traffic_multiple: 4.0,
                old_fraction: 0.05,
                ..base
            },
        },
    ]
}

/// The sender's store after the model's announcements (the receiver's is the same here).
fn store_for(block: &bitcoin::Block, model: &ArrivalModel, seed: u64) -> TxStore {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ids = model.assign(&in_block_parents::<Bitcoin>(block), &mut || rng.next_u64());
    let mut store = TxStore::new(TxStoreConfig::default());
    let now = Instant::now();
    for (tx, id) in Bitcoin::transactions(block).iter().zip(ids) {
        if let Some(id) = id {
            store
                .insert(id, Bitcoin::tx_ids(tx), &Bitcoin::encode_tx(tx), now)
                .expect("fits");
        }
    }
    store
}

/// Bits per reference no code can beat: log2(W! / (W - k)!) / k for k ordered distinct IDs
/// out of the window of W the groups span.
fn bound_bits(stats: &CompressStats) -> f64 {
    let k = stats.known as u64;
    if k == 0 {
        return 0.0;
    }
    let w = stats.window;
    (0..k).map(|i| ((w - i) as f64).log2()).sum::<f64>() / k as f64
}

/// Bytes of every datagram of the first pass of `payload` (unpaced, one destination).
fn wire_bytes(payload_len: usize, key: &Identity) -> (usize, usize) {
    let payload = vec![0u8; payload_len];
    let cfg = SenderConfig::unpaced();
    let now = Instant::now();
    let mut s = Sender::new(
        cfg,
        own_stream_id(key.key_pair(), 1),
        &payload,
        key.key_pair(),
        now,
    )
    .expect("sender");
    let mut buf = vec![0u8; photon_protocol::wire::MAX_DATAGRAM];
    let (mut bytes, mut datagrams) = (0, 0);
    while let Some(len) = s.poll_transmit(now, &mut buf) {
        bytes += len;
        datagrams += 1;
    }
    (bytes, datagrams)
}

/// The second table: the three encodings under model B, payload and wire bytes.
fn encodings_table(files: &[(u64, std::path::PathBuf)], model: &ArrivalModel) {
    let key = Identity::generate(&ring::rand::SystemRandom::new()).expect("identity");
    println!();
    println!(
        "Encodings (`[block] encoding`), model B; payload = encoded block + {TAG_LEN} (AEAD tag, \
         or the unsealed marker); wire = every datagram of the first pass to one destination \
         (shards, repair, manifest, headers):"
    );
    println!();
    println!(
        "| height | txs | BIP152 cmpctblock | compact payload | compact wire (datagrams) | \
         bip152 payload | bip152 wire (datagrams) | full payload | full wire (datagrams) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut totals = [(0usize, 0usize); 3];
    for (height, path) in files {
        let raw = std::fs::read(path).expect("read block");
        let block = Bitcoin::decode_block(&raw).expect("a real block decodes");
        let store = store_for(&block, model, height * 16 + 1);
        let cmpct = HeaderAndShortIds::from_block(&block, 0x5eed, 2, &[]).expect("bip152");
        print!(
            "| {height} | {} | {} |",
            block.txdata.len(),
            serialize(&cmpct).len()
        );
        for (i, e) in BlockEncoding::ALL.into_iter().enumerate() {
            let c = compress_as::<Bitcoin>(e, &block, &store).expect("encode");
            match decompress::<Bitcoin>(&c.bytes, &store).expect("decode") {
                Decompressed::Complete(back) => {
                    assert_eq!(
                        Bitcoin::encode_block(&back),
                        raw,
                        "{e:?} round trip of {height}"
                    )
                }
                Decompressed::Missing(p) => panic!("{height}: {} missing", p.missing().len()),
            }
            let payload = c.bytes.len() + TAG_LEN;
            let (wire, datagrams) = wire_bytes(payload, &key);
            totals[i].0 += payload;
            totals[i].1 += wire;
            print!(" {payload} | {wire} ({datagrams}) |");
        }
        println!();
    }
    println!();
    for (e, (payload, wire)) in BlockEncoding::ALL.iter().zip(totals) {
        println!(
            "- {}: {payload} payload bytes, {wire} wire bytes over {} blocks",
            e.name(),
            files.len()
        );
    }
}

fn main() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/bitcoin/mainnet");
    let files = raw_block_files(std::path::Path::new(dir)).expect("data/bitcoin/mainnet");
    let models = models();

    println!("Models (seeded ChaCha8, seed = height * 16 + model):");
    for m in &models {
        println!("- {}", m.name);
    }
    println!();
    print!("| height | txs | full bytes | BIP152 bytes | BIP152 B/known |");
    for m in &models {
        print!(" {} bytes | {} B/known |", &m.name[..1], &m.name[..1]);
    }
    println!(" B: width, groups, bound bits |");
    print!("|---:|---:|---:|---:|---:|");
    for _ in &models {
        print!("---:|---:|");
    }
    println!("---|");

    let mut totals = vec![(0usize, 0usize, 0.0f64); models.len()]; // ref bytes, known, sum of per-block
    let mut bip_totals = (0usize, 0usize, 0.0f64);
    let mut full_total = 0usize;
    let mut goal_missed = Vec::new();
    for (height, path) in &files {
        let raw = std::fs::read(path).expect("read block");
        let block = Bitcoin::decode_block(&raw).expect("a real block decodes");
        let n = block.txdata.len();
        full_total += raw.len();

        let cmpct = HeaderAndShortIds::from_block(&block, 0x5eed, 2, &[]).expect("bip152");
        let bip_bytes = serialize(&cmpct).len();
        let coinbase = serialize(&block.txdata[0]).len();
        // Everything but header and the prefilled coinbase (its index and bytes), per short ID.
        let bip_known = n - 1;
        let bip_ref = bip_bytes - 80 - 1 - coinbase;
        let bip_per = if bip_known > 0 {
            bip_ref as f64 / bip_known as f64
        } else {
            0.0
        };
        bip_totals.0 += bip_ref;
        bip_totals.1 += bip_known;
        bip_totals.2 += bip_per;

        print!(
            "| {height} | {n} | {} | {bip_bytes} | {bip_per:.2} |",
            raw.len()
        );
        let mut detail = String::new();
        for (mi, m) in models.iter().enumerate() {
            let store = store_for(&block, &m.model, height * 16 + mi as u64);
            let c = compress::<Bitcoin>(&block, &store).expect("compress");
            // Check the round trip on every block and model.
            match decompress::<Bitcoin>(&c.bytes, &store).expect("decompress") {
                Decompressed::Complete(back) => {
                    assert_eq!(Bitcoin::encode_block(&back), raw, "round trip of {height}")
                }
                Decompressed::Missing(p) => panic!("{height}: {} missing", p.missing().len()),
            }
            let s = c.stats;
            let per = s.bytes_per_known_tx();
            totals[mi].0 += s.bytes - s.header_and_whole_bytes;
            totals[mi].1 += s.known;
            totals[mi].2 += per;
            if per > 2.0 {
                goal_missed.push(format!("{height} under {}: {per:.2}", &m.name[..1]));
            }
            print!(" {} | {per:.2} |", s.bytes);
            if mi == 1 {
                detail = format!(" {}, {}, {:.2} |", s.width, s.groups, bound_bits(&s));
            }
        }
        println!("{detail}");
    }

    let blocks = files.len() as f64;
    println!();
    println!("Over {} blocks ({full_total} bytes in full):", files.len());
    println!(
        "- BIP152: {:.3} B/known tx (all known txs together), {:.3} (mean of blocks)",
        bip_totals.0 as f64 / bip_totals.1 as f64,
        bip_totals.2 / blocks
    );
    for (m, t) in models.iter().zip(&totals) {
        println!(
            "- {}: {:.3} B/known tx (all known txs together), {:.3} (mean of blocks)",
            m.name,
            t.0 as f64 / t.1 as f64,
            t.2 / blocks
        );
    }
    if goal_missed.is_empty() {
        println!("- Goal (<= 2 B/known tx) met on every block under every model.");
    } else {
        println!("- Blocks over 2 B/known tx: {}", goal_missed.join("; "));
    }
    encodings_table(&files, &models[1].model);
}
