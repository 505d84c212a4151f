//! The whole block path of the protocol on real mainnet blocks, sans-IO with fake time:
//! compress (§6) → seal (§5) → FEC + signed manifest, paced sender (§3, §4.1, §7) → a seeded
//! lossy link → assembler (verify each shard, decode) → signed key release (§2.6) → open →
//! decompress from the receiver's tx store → the original block, byte-identical.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use photon_protocol::assembler::{Assembler, AssemblerConfig, Event};
use photon_protocol::chain::{Bitcoin, ChainAdapter};
use photon_protocol::compress::{compress, decompress, Decompressed};
use photon_protocol::identity::Identity;
use photon_protocol::integrity::own_stream_id;
use photon_protocol::seal::{BlockKey, SealKey};
use photon_protocol::sender::{Sender, SenderConfig};
use photon_protocol::shortid::{ShortId, TxStore, TxStoreConfig};
use photon_protocol::wire::{self, KeyReleaseRepr};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ring::rand::SystemRandom;

fn block_bytes(height: u32) -> Vec<u8> {
    let path = format!(
        "{}/../data/bitcoin/mainnet/{height}.raw",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Sender and receiver stores: every non-coinbase tx gets a short ID at the sender; the
/// receiver lacks `unknown` of them (chosen by the seeded rng).
fn stores(
    block: &<Bitcoin as ChainAdapter>::Block,
    unknown: f64,
    rng: &mut ChaCha8Rng,
) -> (TxStore, TxStore, usize) {
    let now = Instant::now();
    let mut sender = TxStore::new(TxStoreConfig::default());
    let mut receiver = TxStore::new(TxStoreConfig::default());
    let mut missing = 0;
    for (i, tx) in Bitcoin::transactions(block).iter().enumerate().skip(1) {
        let id = ShortId(0x0100_0000 + i as u32 * 3);
        let bytes = Bitcoin::encode_tx(tx);
        sender
            .insert(id, Bitcoin::tx_ids(tx), &bytes, now)
            .expect("fits");
        if rng.gen_bool(unknown) {
            missing += 1;
        } else {
            receiver
                .insert(id, Bitcoin::tx_ids(tx), &bytes, now)
                .expect("fits");
        }
    }
    (sender, receiver, missing)
}

/// Sends `sealed` through a link with `loss`, duplication and reordering; returns the bytes
/// the assembler delivered and how many repair rounds it took.
fn transfer(
    sealed: &[u8],
    origin: &Identity,
    stream: u64,
    loss: f64,
    rng: &mut ChaCha8Rng,
) -> (Vec<u8>, usize) {
    let t0 = Instant::now();
    let cfg = SenderConfig {
        node_id: 7,
        rate_bytes_per_sec: 125_000_000,
        ..SenderConfig::default()
    };
    let mut sender = Sender::new(cfg, stream, sealed, origin.key_pair(), t0).expect("sender");
    let mut asm = Assembler::new(AssemblerConfig {
        trusted_origins: vec![origin.public_key().0],
        repair_delay: Duration::from_millis(20),
        ..AssemblerConfig::default()
    });
    let mut in_flight: BTreeMap<(Instant, u64), Vec<u8>> = BTreeMap::new();
    let mut seq = 0u64;
    let mut buf = [0u8; wire::MAX_DATAGRAM];
    let mut now = t0;
    let mut repairs = 0;
    loop {
        assert!(
            now - t0 < Duration::from_secs(60),
            "not delivered in 60 s of fake time"
        );
        while let Some(n) = sender.poll_transmit(now, &mut buf) {
            if rng.gen_bool(loss) {
                continue;
            }
            let copies = if rng.gen_bool(0.01) { 2 } else { 1 };
            for _ in 0..copies {
                seq += 1;
                let delay = Duration::from_micros(5_000 + rng.gen_range(0..2_000));
                in_flight.insert((now + delay, seq), buf[..n].to_vec());
            }
        }
        while let Some(entry) = in_flight.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let d = entry.remove();
            let _ = asm.handle_datagram(now, &d);
        }
        if asm.poll_timeout().is_some_and(|t| t <= now) {
            asm.handle_timeout(now);
        }
        while let Some(ev) = asm.poll_event() {
            match ev {
                Event::BlockReady { stream: s, bytes } => {
                    assert_eq!(s, stream);
                    return (bytes, repairs);
                }
                Event::SendRepairRequest { kind, missing, .. } => {
                    repairs += 1;
                    sender.handle_repair_request(kind, &missing);
                }
                _ => {}
            }
        }
        now = common::next_instant(
            now,
            [
                sender.poll_timeout(),
                in_flight.keys().next().map(|k| k.0),
                asm.poll_timeout(),
            ],
        );
    }
}

fn round_trip(height: u32, unknown: f64, loss: f64, seed: u64) {
    let raw = block_bytes(height);
    let block = Bitcoin::decode_block(&raw).expect("real block");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (sender_store, mut receiver_store, missing) = stores(&block, unknown, &mut rng);

    // Source gateway: compress, seal with a fresh key.
    let compressed = compress::<Bitcoin>(&block, &sender_store).expect("compress");
    assert!(
        compressed.bytes.len() < raw.len() / 20,
        "{height}: {} of {} bytes",
        compressed.bytes.len(),
        raw.len()
    );
    let sysrand = SystemRandom::new();
    let origin = Identity::generate(&sysrand).expect("identity");
    let stream = own_stream_id(origin.key_pair(), height);
    let mut sealed = compressed.bytes.clone();
    let key = SealKey::generate(&sysrand)
        .expect("key")
        .seal_in_place(stream, &mut sealed)
        .expect("seal");
    assert!(
        !sealed.windows(80).any(|w| w == &raw[..80]),
        "the header is not visible in the sealed bytes"
    );

    // Through the lossy link: what the receiver assembles is exactly what was sealed.
    let (delivered, _repairs) = transfer(&sealed, &origin, stream, loss, &mut rng);
    assert_eq!(delivered, sealed, "{height}: assembled bytes differ");

    // Without the key nothing opens; a key release signed by someone else is refused.
    let wrong = BlockKey::from_bytes([0x42; 32]);
    assert!(wrong.open(stream, &delivered).is_err());
    let impostor = Identity::generate(&sysrand).expect("identity");
    let forged = key.release(stream, &impostor);
    assert!(BlockKey::from_release(&forged, &origin.public_key()).is_err());

    // The genuine key release, through its wire encoding.
    let release = key.release(stream, &origin);
    let mut dgram = vec![0u8; 256];
    let n = wire::Repr::new(7, wire::Message::KeyRelease(release))
        .emit(&mut dgram)
        .expect("emit key release");
    let packet = wire::Packet::new_checked(&dgram[..n]).expect("packet");
    let parsed = wire::Repr::parse(&packet).expect("parse");
    let wire::Message::KeyRelease(received) = parsed.message else {
        panic!("not a key release")
    };
    let received: KeyReleaseRepr = received;
    let opened = BlockKey::from_release(&received, &origin.public_key())
        .expect("origin's release verifies")
        .open(stream, &delivered)
        .expect("opens");
    assert_eq!(opened, compressed.bytes);

    // Decompress from the receiver's store; fetch what it lacks from the sender's store.
    let block_out = match decompress::<Bitcoin>(&opened, &receiver_store).expect("decompress") {
        Decompressed::Complete(b) => {
            assert_eq!(missing, 0, "complete although {missing} txs were unknown");
            b
        }
        Decompressed::Missing(mut pending) => {
            let want = pending.missing();
            assert_eq!(want.len(), missing, "asks for exactly the unknown txs");
            for id in want {
                let tx = sender_store.get(id).expect("sender knows it").to_vec();
                pending.supply(id, &tx).expect("was missing");
                receiver_store
                    .insert(
                        id,
                        Bitcoin::tx_ids(&Bitcoin::decode_tx(&tx).unwrap()),
                        &tx,
                        Instant::now(),
                    )
                    .unwrap();
            }
            pending.finish::<Bitcoin>().expect("complete block")
        }
    };
    assert_eq!(Bitcoin::block_hash(&block_out), Bitcoin::block_hash(&block));
    assert_eq!(
        Bitcoin::encode_block(&block_out),
        raw,
        "{height}: byte-identical"
    );
}

#[test]
fn block_702861_all_known_2pct_loss() {
    round_trip(702861, 0.0, 0.02, 1);
}

#[test]
fn block_574200_ten_percent_unknown_5pct_loss() {
    round_trip(574200, 0.10, 0.05, 2);
}

#[test]
fn block_556977_all_known_1pct_loss() {
    round_trip(556977, 0.0, 0.01, 3);
}

#[test]
fn block_367891_one_huge_tx_unknown() {
    // 840 KB transaction: the worst case for compression and fragmenting (nothing to gain when
    // the receiver lacks it; every byte still arrives).
    round_trip(367891, 1.0, 0.01, 4);
}
