//! What the protocol benchmarks share.

/// The benchmarks' 1 MB input: the first 1,000,000 bytes of mainnet block 702861.
pub fn block_1mb() -> Vec<u8> {
    let raw = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../data/bitcoin/mainnet/702861.raw"
    ))
    .expect("mainnet block 702861");
    raw[..1_000_000].to_vec()
}
