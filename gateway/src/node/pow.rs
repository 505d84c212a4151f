//! Proof-of-work check of block headers, before a block from the node goes to the relays.
//!
//! The node is local and trusted, but a gateway must never spend relay bandwidth on junk: a
//! header whose hash does not meet its own target, or whose target is easier than the network
//! allows, is refused with a typed error and counted. This is the cheap check (one double
//! SHA-256 of 80 bytes); the merkle root and witness commitment are checked where the block is
//! rebuilt (`photon_protocol::chain::ChainAdapter::assemble`).

use bitcoin::block::Header;
use bitcoin::params::Params;
use bitcoin::{BlockHash, Network, Target};

/// Why a header's proof of work was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PowError {
    /// The header's `bits` encode a target above the limit (the network's `pow_limit`, or the
    /// stricter one configured).
    #[error("block {hash}: target {target:?} is easier than the limit {limit:?}")]
    TargetAboveLimit {
        hash: BlockHash,
        target: Target,
        limit: Target,
    },
    /// The header's hash is above its own target.
    #[error("block {hash}: hash does not meet the header's target")]
    BadProofOfWork { hash: BlockHash },
}

/// The easiest target a header of `network` may claim (its consensus `max_attainable_target`, the `pow_limit` of Bitcoin Core).
pub fn pow_limit(network: Network) -> Target {
    Params::new(network).max_attainable_target
}

/// Check that `header`'s hash meets its target and that the target is no easier than `limit`.
/// Returns the block hash.
pub fn check_pow(header: &Header, limit: Target) -> Result<BlockHash, PowError> {
    let target = header.target();
    if target > limit {
        return Err(PowError::TargetAboveLimit {
            hash: header.block_hash(),
            target,
            limit,
        });
    }
    header
        .validate_pow(target)
        .map_err(|_| PowError::BadProofOfWork {
            hash: header.block_hash(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::consensus::deserialize;

    fn mainnet_headers() -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../data/bitcoin/mainnet-headers-0-10236.bin"
        );
        std::fs::read(path).expect("data/bitcoin/mainnet-headers-0-10236.bin")
    }

    #[test]
    fn real_mainnet_headers_pass() {
        let bytes = mainnet_headers();
        let limit = pow_limit(Network::Bitcoin);
        let mut n = 0;
        for raw in bytes.chunks_exact(80).step_by(97) {
            let h: Header = deserialize(raw).unwrap();
            assert_eq!(check_pow(&h, limit), Ok(h.block_hash()));
            n += 1;
        }
        assert!(n > 100);
    }

    #[test]
    fn one_changed_byte_fails() {
        let bytes = mainnet_headers();
        let raw = &bytes[80 * 10_000..80 * 10_001];
        let limit = pow_limit(Network::Bitcoin);
        // Every byte but the bits field (72..76) changes the hash, which then misses the target
        // (odds of meeting it by chance: about 2^-32).
        for i in (0..72).chain(76..80) {
            let mut bad = raw.to_vec();
            bad[i] ^= 0x01;
            let h: Header = deserialize(&bad).unwrap();
            assert!(
                matches!(check_pow(&h, limit), Err(PowError::BadProofOfWork { .. })),
                "byte {i}"
            );
        }
    }

    proptest::proptest! {
        /// Any 80 bytes: no panic (bits with huge exponents included), and a random header
        /// never passes (it would need a hash with 32 leading zero bits: odds about 2^-32).
        #[test]
        fn random_headers_never_panic_never_pass(raw in proptest::array::uniform32(0u8..), tail in proptest::collection::vec(0u8.., 48)) {
            let mut bytes = raw.to_vec();
            bytes.extend(tail);
            let h: Header = deserialize(&bytes).unwrap();
            proptest::prop_assert!(check_pow(&h, pow_limit(Network::Bitcoin)).is_err());
        }
    }

    #[test]
    fn easy_target_refused_on_mainnet_but_regtest_accepts() {
        // Regtest's genesis header: bits 0x207fffff, above mainnet's limit.
        let genesis = bitcoin::blockdata::constants::genesis_block(Network::Regtest).header;
        assert!(matches!(
            check_pow(&genesis, pow_limit(Network::Bitcoin)),
            Err(PowError::TargetAboveLimit { .. })
        ));
        assert_eq!(
            check_pow(&genesis, pow_limit(Network::Regtest)),
            Ok(genesis.block_hash())
        );
    }
}
