//! Replays every file of `fuzz/corpus/node_frames/` through the fuzz entry
//! `photon_gateway::fuzzing::fuzz_node_frames`, so `cargo test` re-checks what the fuzzer found.
//!
//! `PHOTON_WRITE_SEEDS=1 cargo test -p photon-gateway --test fuzz_corpus_node` (re)writes the
//! `seed_*` files: framed P2P streams (version/verack/ping, the genesis block, an inv, a
//! corrupted checksum, a wrong magic), each led by the control byte the entry reads first.

#[path = "../../fuzz/corpus_replay.rs"]
mod corpus_replay;

use std::path::PathBuf;

use bitcoin::blockdata::constants::genesis_block;
use bitcoin::p2p::message::NetworkMessage;
use bitcoin::p2p::message_blockdata::Inventory;
use bitcoin::p2p::Magic;
use bitcoin::Network;
use photon_gateway::fuzzing::fuzz_node_frames;
use photon_gateway::node::codec::encode_message;

fn corpus() -> PathBuf {
    corpus_replay::corpus_dir(env!("CARGO_MANIFEST_DIR"), "node_frames")
}

fn stream(control: u8, msgs: Vec<NetworkMessage>) -> Vec<u8> {
    let mut out = vec![control];
    for m in msgs {
        encode_message(&mut out, Magic::BITCOIN, m);
    }
    out
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let genesis = genesis_block(Network::Bitcoin);
    let inv = NetworkMessage::Inv(vec![Inventory::Block(genesis.block_hash())]);
    let mut bad_checksum = stream(0x07, vec![NetworkMessage::Ping(1), NetworkMessage::Ping(2)]);
    // The first frame's checksum (bytes 20..24 of the frame, after the control byte).
    bad_checksum[1 + 20] ^= 0xff;
    let mut bad_magic = stream(0x03, vec![NetworkMessage::Verack]);
    bad_magic[1] ^= 0x01;
    vec![
        (
            "seed_handshake",
            stream(
                0x12,
                vec![
                    NetworkMessage::Verack,
                    NetworkMessage::Ping(0x0123_4567_89ab_cdef),
                    NetworkMessage::Pong(5),
                    NetworkMessage::SendHeaders,
                ],
            ),
        ),
        (
            "seed_genesis_block",
            stream(0x05, vec![NetworkMessage::Block(genesis), inv]),
        ),
        ("seed_bad_checksum", bad_checksum),
        ("seed_bad_magic", bad_magic),
        (
            "seed_oversize_small_limit",
            stream(
                0x00,
                vec![NetworkMessage::Block(genesis_block(Network::Bitcoin))],
            ),
        ),
    ]
}

#[test]
fn replay_node_frames_corpus() {
    corpus_replay::replay_with_seeds(&corpus(), &seeds(), fuzz_node_frames);
}
