#![no_main]
// Filled in with the parser it drives.
libfuzzer_sys::fuzz_target!(|_data: &[u8]| {});
