#![no_main]
// Any bytes as a pcap or pcapng capture, through the capture reader (pcap/pcapng blocks, link
// layers, IP, TCP reassembly, Bitcoin P2P framing with the 24- and 20-byte headers).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    photon_perf::replay::fuzz_capture(data);
});
