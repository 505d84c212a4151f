//! What a gateway checks of a block from the network before its node sees it (F6 of
//! `docs/protocol/8-threat-model.md`): a trusted origin's merkle-consistent block may still be
//! invalid, and a node that gets one disconnects or discourages its gateway. Cheap checks only:
//! the header's proof of work against its own bits and the network's limit, the size/weight
//! rule, and no duplicate-transaction mutation (CVE-2012-2459: a block whose transaction list
//! repeats the last one(s) of a level has the same merkle root as the real block). Whether the
//! parent is known (the node's header chain) is not checked here yet.

use std::collections::HashSet;

use bitcoin::hashes::{sha256d, Hash};
use bitcoin::{Block, Target, Transaction};

use crate::node::pow::{check_pow, PowError};

/// The consensus weight limit (BIP141).
pub const MAX_BLOCK_WEIGHT: u64 = 4_000_000;

/// Why a decoded block is not handed to the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BlockInvalid {
    #[error(transparent)]
    Pow(#[from] PowError),
    #[error("block weight {weight} is above the limit {MAX_BLOCK_WEIGHT}")]
    TooHeavy { weight: u64 },
    #[error("duplicate-transaction mutation of the merkle tree (CVE-2012-2459)")]
    Mutated,
    #[error("block has no transactions")]
    Empty,
}

/// The checks above, in order of cost.
pub fn check_block(block: &Block, limit: Target) -> Result<(), BlockInvalid> {
    check_pow(&block.header, limit)?;
    if block.txdata.is_empty() {
        return Err(BlockInvalid::Empty);
    }
    let weight = block.weight().to_wu();
    if weight > MAX_BLOCK_WEIGHT {
        return Err(BlockInvalid::TooHeavy { weight });
    }
    // The tree is rebuilt (every txid hashed again: perf/benches/gateway_validity.rs) only for
    // a block that repeats a transaction, which every mutation does.
    if may_repeat_a_transaction(&block.txdata) {
        let txids: Vec<[u8; 32]> = block
            .txdata
            .iter()
            .map(|t| t.compute_txid().to_byte_array())
            .collect();
        if merkle_mutated(txids) {
            return Err(BlockInvalid::Mutated);
        }
    }
    Ok(())
}

/// False only if no two of `txs` can be the same transaction: each spends a first input no
/// other spends. A mutation always repeats one: two equal hashes side by side at level k of
/// the tree are two equal runs of 2^k transactions (barring a SHA-256d collision), and two
/// equal transactions spend the same first input. A transaction without inputs, or two
/// coinbases (both spend the null outpoint), count as a possible repeat. No transaction is
/// hashed: one set insert per transaction.
pub fn may_repeat_a_transaction(txs: &[Transaction]) -> bool {
    let mut spent = HashSet::with_capacity(txs.len());
    txs.iter().any(|tx| match tx.input.first() {
        Some(i) => !spent.insert(i.previous_output),
        None => true,
    })
}

/// Bitcoin Core's `ComputeMerkleRoot` mutation flag: at any level, two equal hashes side by
/// side as a pair (not the odd last one paired with itself) mean the list was padded by
/// duplication, so another (shorter) list has the same root.
pub fn merkle_mutated(mut level: Vec<[u8; 32]>) -> bool {
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        for pair in level.chunks(2) {
            let (a, b) = match pair {
                [a, b] => {
                    if a == b {
                        return true;
                    }
                    (a, b)
                }
                [a] => (a, a),
                _ => unreachable!("chunks(2) yields one or two"),
            };
            let mut buf = [0u8; 64];
            buf[..32].copy_from_slice(a);
            buf[32..].copy_from_slice(b);
            next.push(sha256d::Hash::hash(&buf).to_byte_array());
        }
        level = next;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use photon_protocol::chain::{Bitcoin, ChainAdapter};

    fn block(height: u32) -> Block {
        let path = format!(
            "{}/../data/bitcoin/mainnet/{height}.raw",
            env!("CARGO_MANIFEST_DIR")
        );
        Bitcoin::decode_block(&std::fs::read(path).unwrap()).unwrap()
    }

    fn limit() -> Target {
        crate::node::pow::pow_limit(bitcoin::Network::Bitcoin)
    }

    #[test]
    fn real_blocks_pass_and_mutations_do_not() {
        // Real blocks repeat no transaction: the tree is not rebuilt for them.
        for h in [227836, 556977, 574200, 702861] {
            let b = block(h);
            assert!(!may_repeat_a_transaction(&b.txdata), "{h}");
            check_block(&b, limit()).unwrap();
        }
        let b = block(227836);
        // CVE-2012-2459: repeating the last 2^k transactions, where level k of the tree has an
        // odd count, keeps the merkle root. Find such a k for this block.
        let m = (0..12)
            .map(|k| {
                let mut m = b.clone();
                let n = m.txdata.len();
                m.txdata
                    .extend_from_slice(&b.txdata[n.saturating_sub(1 << k)..]);
                m
            })
            .find(|m| m.check_merkle_root())
            .expect("a duplication that keeps the root");
        assert!(may_repeat_a_transaction(&m.txdata));
        assert_eq!(check_block(&m, limit()), Err(BlockInvalid::Mutated));
        let mut p = b.clone();
        p.header.nonce ^= 1;
        assert!(matches!(
            check_block(&p, limit()),
            Err(BlockInvalid::Pow(PowError::BadProofOfWork { .. }))
        ));
    }
}
