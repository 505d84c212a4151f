#![no_main]
// Manifest fragment payloads (§4.1): parse, round trip, root and signature checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| photon_protocol::integrity::fuzz_manifest(data));
