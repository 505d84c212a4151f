//! Replays every file of `fuzz/corpus/wire_packet/` through the fuzz entry
//! `photon_protocol::wire::fuzz_packet`, so `cargo test` re-checks what the fuzzer found.

use photon_protocol::wire::{self, Packet, Repr};
use std::path::Path;

#[test]
fn replay_wire_packet_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/wire_packet");
    let mut files = 0;
    let mut golden_parsed = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory exists") {
        let path = entry.expect("readable entry").path();
        if !path.is_file() {
            continue;
        }
        let data = std::fs::read(&path).expect("readable corpus file");
        wire::fuzz_packet(&data);
        files += 1;
        // The hand-made seeds named golden_* must stay valid datagrams.
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with("golden_") {
            let packet = Packet::new_checked(&data[..])
                .unwrap_or_else(|e| panic!("{name} no longer checks: {e}"));
            Repr::parse(&packet).unwrap_or_else(|e| panic!("{name} no longer parses: {e}"));
            golden_parsed += 1;
        }
    }
    assert!(
        golden_parsed >= 12,
        "expected the golden seeds, found {golden_parsed}"
    );
    println!("replayed {files} corpus files ({golden_parsed} golden)");
}
