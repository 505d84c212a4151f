//! Per-datagram costs of the wire layer (`docs/protocol.md` §1, §4.2) and block sealing (§5),
//! each beside the alternative it was chosen over:
//! - header check + parse, relay classification, fragment parse and emit (1232-byte datagram);
//! - the hop tag: SipHash-2-4 (chosen) vs HMAC-SHA256 truncated to 8 bytes (ring), sign and
//!   verify, and a relay's per-packet fan-out work (verify once, re-sign for 8 peers);
//! - seal and open of 1 MB of mainnet block 702861: AES-256-GCM (chosen) vs ChaCha20-Poly1305.
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use photon_protocol::hopauth::{tags_x4, HopKey, TagInput, AUTHENTICATED_LEN};
use photon_protocol::seal::{BlockKey, SealKey};
use photon_protocol::wire::{
    self, FragmentKind, FragmentRepr, HeaderRepr, Packet, HEADER_LEN, MAX_DATAGRAM,
};
use ring::aead;
use ring::hmac;
use ring::rand::SystemRandom;

mod common;

use common::block_1mb;

fn full_shard_datagram() -> Vec<u8> {
    let payload = vec![0xa5u8; wire::max_fragment_payload()];
    let f = FragmentRepr {
        kind: FragmentKind::Source,
        stream: 0x0123_4567_89ab_cdef,
        index: 17,
        count: 900,
        k: 900,
        r: 90,
        payload: &payload,
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let n = f.emit(7, 0, 0, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn wire_benches(c: &mut Criterion) {
    let dgram = full_shard_datagram();
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(1));
    g.bench_function("check+header_parse", |b| {
        b.iter(|| {
            let p = Packet::new_checked(black_box(&dgram[..])).unwrap();
            HeaderRepr::parse(&p).unwrap()
        })
    });
    g.bench_function("relay_classify(check,type,stream,index)", |b| {
        b.iter(|| {
            let p = Packet::new_checked(black_box(&dgram[..])).unwrap();
            let t = p.msg_type().unwrap();
            (t.is_block_fragment(), p.stream(), p.index(), p.sender())
        })
    });
    g.bench_function("fragment_parse", |b| {
        b.iter(|| {
            let p = Packet::new_checked(black_box(&dgram[..])).unwrap();
            FragmentRepr::parse(&p).unwrap().payload.len()
        })
    });
    let p = Packet::new_checked(&dgram[..]).unwrap();
    let frag = FragmentRepr::parse(&p).unwrap();
    let header = HeaderRepr::parse(&p).unwrap();
    let mut out = vec![0u8; MAX_DATAGRAM];
    g.bench_function("header_emit", |b| {
        b.iter(|| black_box(&header).emit(black_box(&mut out[..])).unwrap())
    });
    g.bench_function("fragment_emit(1196B payload copy)", |b| {
        b.iter(|| {
            black_box(&frag)
                .emit(7, 0, 0, black_box(&mut out[..]))
                .unwrap()
        })
    });
    g.finish();

    // --- hop tags ---
    let sip = HopKey::from_bytes(&[0x42; 16]);
    let hm = hmac::Key::new(hmac::HMAC_SHA256, &[0x42; 16]);
    let hmac_tag = |key: &hmac::Key, header: &[u8]| -> u64 {
        let t = hmac::sign(key, &header[..AUTHENTICATED_LEN]);
        let mut a = [0u8; 8];
        a.copy_from_slice(&t.as_ref()[..8]);
        u64::from_be_bytes(a)
    };
    let mut signed = dgram.clone();
    sip.sign_header(&mut signed).unwrap();
    let mut g = c.benchmark_group("hop_tag");
    g.throughput(Throughput::Elements(1));
    g.bench_function("siphash24_sign", |b| {
        let mut h = dgram[..HEADER_LEN].to_vec();
        b.iter(|| sip.sign_header(black_box(&mut h[..])).unwrap())
    });
    g.bench_function("siphash24_verify", |b| {
        b.iter(|| sip.verify(black_box(&signed[..])))
    });
    g.bench_function("hmac_sha256_trunc8_sign", |b| {
        let mut h = dgram[..HEADER_LEN].to_vec();
        b.iter(|| {
            let t = hmac_tag(&hm, black_box(&h[..]));
            h[28..36].copy_from_slice(&t.to_be_bytes());
        })
    });
    // A relay's per-packet work for one fragment: check, verify the previous hop, then for each
    // of 8 peers rewrite sender and hops and re-sign with that peer's key.
    let peers: Vec<HopKey> = (0..8u8).map(|i| HopKey::from_bytes(&[i; 16])).collect();
    let hpeers: Vec<hmac::Key> = (0..8u8)
        .map(|i| hmac::Key::new(hmac::HMAC_SHA256, &[i; 16]))
        .collect();
    g.bench_function("relay_fanout8_siphash24", |b| {
        let mut buf = signed.clone();
        b.iter(|| {
            let mut p = arrive(&mut buf, &signed, |p| assert!(sip.verify_packet(p)));
            for k in &peers {
                k.sign_packet(&mut p).unwrap();
                black_box(p.hop_tag());
            }
        })
    });
    // The relay's way since the fixed-length path: the shared header's message words read
    // once (TagInput), the eight tags four keys at a time (tags_x4).
    g.bench_function("relay_fanout8_siphash24_x4", |b| {
        let mut buf = signed.clone();
        b.iter(|| {
            let mut p = arrive(&mut buf, &signed, |p| assert!(sip.verify_packet(p)));
            p.set_hop_tag(0);
            let input = TagInput::from_header(p.header()).unwrap();
            for k in peers.chunks_exact(4) {
                black_box(tags_x4([&k[0], &k[1], &k[2], &k[3]], &input));
            }
        })
    });
    g.bench_function("relay_fanout8_hmac_sha256", |b| {
        let mut buf = signed.clone();
        b.iter(|| {
            let mut p = arrive(&mut buf, &signed, |p| {
                black_box(hmac_tag(&hm, p.header()));
            });
            for k in &hpeers {
                let t = hmac_tag(k, p.header());
                p.set_hop_tag(t);
                black_box(p.hop_tag());
            }
        })
    });
    g.finish();
}

/// A relay's receive step in the fan-out benches: a fresh datagram from the previous hop each
/// time (36-byte header copy), checked, its tag verified by `verify`, and sender and hops
/// rewritten for the next hop.
fn arrive<'a>(
    buf: &'a mut [u8],
    signed: &[u8],
    verify: impl FnOnce(&Packet<&mut [u8]>),
) -> Packet<&'a mut [u8]> {
    buf[..HEADER_LEN].copy_from_slice(&signed[..HEADER_LEN]);
    let mut p = Packet::new_checked(black_box(buf)).unwrap();
    verify(&p);
    p.set_sender(1);
    p.set_hops(1);
    p
}

fn seal_benches(c: &mut Criterion) {
    let block = block_1mb();
    let rng = SystemRandom::new();
    let mut g = c.benchmark_group("seal_1MB");
    g.throughput(Throughput::Bytes(block.len() as u64));
    g.sample_size(30);
    // Each seal's input: the block, with room for the 16-byte tag.
    let with_tag_room = || {
        let mut v = block.clone();
        v.reserve(16);
        v
    };
    g.bench_function("aes256gcm_seal(keygen+seal)", |b| {
        b.iter_batched(
            with_tag_room,
            |mut v| {
                SealKey::generate(&rng)
                    .unwrap()
                    .seal_in_place(9, &mut v)
                    .unwrap();
                v
            },
            BatchSize::LargeInput,
        )
    });
    let mut sealed = block.clone();
    let key = SealKey::generate(&rng)
        .unwrap()
        .seal_in_place(9, &mut sealed)
        .unwrap();
    g.bench_function("aes256gcm_open", |b| {
        b.iter_batched(
            || sealed.clone(),
            |mut v| {
                key.open_in_place(9, &mut v).unwrap();
                v
            },
            BatchSize::LargeInput,
        )
    });
    let _ = BlockKey::from_bytes(key.to_bytes());
    let chacha = aead::LessSafeKey::new(
        aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &[0x42; 32]).unwrap(),
    );
    g.bench_function("chacha20poly1305_seal", |b| {
        b.iter_batched(
            with_tag_room,
            |mut v| {
                let n = aead::Nonce::assume_unique_for_key([0; 12]);
                chacha
                    .seal_in_place_append_tag(n, aead::Aad::from(&[9u8; 8]), &mut v)
                    .unwrap();
                v
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("memcpy_1MB(reference)", |b| {
        b.iter_batched(|| (), |()| block.clone(), BatchSize::LargeInput)
    });
    g.finish();
}

criterion_group!(benches, wire_benches, seal_benches);
criterion_main!(benches);
