#![no_main]
// Membership rosters (protocol/src/roster.rs): parse, round trip, signature check.
libfuzzer_sys::fuzz_target!(|data: &[u8]| photon_protocol::roster::fuzz_roster(data));
