//! Writes seed inputs for the `manifest` and `assembler` fuzz targets (§4.1, §7.2):
//! real manifest fragments signed by the fuzz key, and a length-prefixed datagram sequence of a
//! small block's stream (with a duplicate, a forged shard and a truncated datagram).
//!
//! Run: `cargo run -p photon-protocol --example transport_corpus -- fuzz/corpus`
use std::time::Instant;

use photon_protocol::integrity::own_stream_id;
use photon_protocol::sender::{Sender, SenderConfig};
use photon_protocol::wire;
use ring::signature::Ed25519KeyPair;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    let key = Ed25519KeyPair::from_seed_unchecked(&[0x5a; 32]).map_err(|e| format!("{e}"))?;
    let t0 = Instant::now();
    let cfg = SenderConfig::unpaced();
    for (name, len) in [("small", 3000usize), ("medium", 40_000)] {
        let block: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let mut s = Sender::new(cfg, own_stream_id(&key, 0x77), &block, &key, t0)?;
        let mut buf = [0u8; wire::MAX_DATAGRAM];
        let mut stream = Vec::new();
        let mut first_manifest = None;
        while let Some(n) = s.poll_transmit(t0, &mut buf) {
            let d = &buf[..n];
            if d[3] == 0x03 && first_manifest.is_none() {
                first_manifest = Some(d[wire::HEADER_LEN..].to_vec());
            }
            stream.extend_from_slice(&(n as u16).to_be_bytes());
            stream.extend_from_slice(d);
        }
        // A duplicate of the first datagram, a forged copy of it, a truncated one.
        let first_len = usize::from(u16::from_be_bytes([stream[0], stream[1]]));
        let first = stream[2..2 + first_len].to_vec();
        let mut forged = first.clone();
        let last = forged.len() - 1;
        forged[last] ^= 0xff;
        for d in [&first[..], &forged[..], &first[..first_len / 2]] {
            stream.extend_from_slice(&(d.len() as u16).to_be_bytes());
            stream.extend_from_slice(d);
        }
        std::fs::write(
            dir.join("assembler").join(format!("{name}_stream")),
            &stream,
        )?;
        let m = first_manifest.ok_or("no manifest fragment")?;
        std::fs::write(dir.join("manifest").join(format!("{name}_fragment0")), &m)?;
    }
    std::fs::write(dir.join("manifest").join("short"), [0u8; 16])?;
    std::fs::write(
        dir.join("assembler").join("empty_prefix"),
        [0u8, 0, 0, 5, 1, 2, 3, 4, 5],
    )?;
    Ok(())
}
