#![no_main]
// Length-prefixed datagrams fed to an assembler with small limits (§7.2).
libfuzzer_sys::fuzz_target!(|data: &[u8]| photon_protocol::assembler::fuzz_assembler(data));
