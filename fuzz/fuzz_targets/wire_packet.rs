#![no_main]
// Any bytes as a Photon datagram of any kind: parse, then emit/parse round trip (§1, §2).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    photon_protocol::wire::fuzz_packet(data);
});
