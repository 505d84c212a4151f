#![no_main]
// Any bytes as a frame received by the relay (classifier, fan-out headers, ARP/ICMP answers,
// control path) and as a bare control datagram.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    photon_relay::fuzzing::fuzz_frame(data);
});
