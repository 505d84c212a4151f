//! Replays every file of `fuzz/corpus/manifest/` and `fuzz/corpus/assembler/` through the same
//! entry functions the fuzz targets call (seeds are written by `examples/transport_corpus.rs`).
#[path = "../../fuzz/corpus_replay.rs"]
mod corpus_replay;

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) -> usize {
    let dir = corpus_replay::corpus_dir(env!("CARGO_MANIFEST_DIR"), target);
    corpus_replay::replay(&dir, |_, data| f(data))
}

#[test]
fn manifest_corpus() {
    assert!(replay("manifest", photon_protocol::integrity::fuzz_manifest) >= 3);
}

#[test]
fn assembler_corpus() {
    assert!(replay("assembler", photon_protocol::assembler::fuzz_assembler) >= 3);
}

#[test]
fn seed_stream_delivers_its_block() {
    // The seed streams are genuine: fed to an assembler trusting the fuzz key, they deliver.
    use photon_protocol::assembler::{fuzz_origin, Assembler, AssemblerConfig, Event};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/assembler/small_stream");
    let data = std::fs::read(dir).unwrap();
    let mut a = Assembler::new(AssemblerConfig {
        trusted_origins: vec![fuzz_origin()],
        ..Default::default()
    });
    let now = std::time::Instant::now();
    let mut rest = &data[..];
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let _ = a.handle_datagram(now, &rest[2..2 + len]);
        rest = &rest[2 + len..];
    }
    let block: Vec<u8> = (0..3000usize).map(|i| (i * 31 % 251) as u8).collect();
    let mut delivered = false;
    while let Some(ev) = a.poll_event() {
        if let Event::BlockReady { bytes, .. } = ev {
            assert_eq!(bytes, block);
            delivered = true;
        }
    }
    assert!(delivered);
}
