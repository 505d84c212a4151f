#![no_main]
// Compressed blocks (docs/protocol.md §6.3): parse, emit back, decompress against an empty store.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    photon_protocol::compress::fuzz_compressed_block(data);
});
