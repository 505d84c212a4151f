//! Replays every file of `fuzz/corpus/wire_packet/` through the fuzz entry
//! `photon_protocol::wire::fuzz_packet`, so `cargo test` re-checks what the fuzzer found.

#[path = "../../fuzz/corpus_replay.rs"]
mod corpus_replay;

use photon_protocol::wire::{self, Packet, Repr};

#[test]
fn replay_wire_packet_corpus() {
    let dir = corpus_replay::corpus_dir(env!("CARGO_MANIFEST_DIR"), "wire_packet");
    let mut golden_parsed = 0;
    let files = corpus_replay::replay(&dir, |name, data| {
        wire::fuzz_packet(data);
        // The hand-made seeds named golden_* must stay valid datagrams.
        if name.starts_with("golden_") {
            let packet = Packet::new_checked(data)
                .unwrap_or_else(|e| panic!("{name} no longer checks: {e}"));
            Repr::parse(&packet).unwrap_or_else(|e| panic!("{name} no longer parses: {e}"));
            golden_parsed += 1;
        }
    });
    assert!(
        golden_parsed >= 12,
        "expected the golden seeds, found {golden_parsed}"
    );
    println!("replayed {files} corpus files ({golden_parsed} golden)");
}
