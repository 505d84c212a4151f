#![no_main]
// Any bytes as the Bitcoin P2P stream from the node, cut into reads, through the gateway's
// frame decoder.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    photon_gateway::fuzzing::fuzz_node_frames(data);
});
