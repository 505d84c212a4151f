//! The Bitcoin adapter: the `bitcoin` crate's consensus encoding, txid/wtxid, merkle root and
//! witness commitment checks.

use std::path::{Path, PathBuf};

use ::bitcoin::block::Header;
use ::bitcoin::consensus::{deserialize, serialize};
use ::bitcoin::hashes::{sha256d, Hash};
use ::bitcoin::merkle_tree::calculate_root_inline;
use ::bitcoin::{Block, Transaction, TxMerkleNode, WitnessCommitment, WitnessMerkleNode};

use super::{ChainAdapter, ChainError, TxIds};

/// The blocks stored as `<height>.raw` files (bare consensus encoding, as in
/// `data/bitcoin/mainnet`) in `dir`: (height, path), lowest height first. Other files, and
/// entries that cannot be read, are passed over.
pub fn raw_block_files(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)?.flatten() {
        let path = entry.path();
        let height = path.file_stem().and_then(|s| s.to_str()?.parse().ok());
        if let (Some(height), true) = (height, path.extension() == Some("raw".as_ref())) {
            out.push((height, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Bitcoin mainnet (and its test networks: the encoding is the same).
#[derive(Debug, Clone, Copy, Default)]
pub struct Bitcoin;

fn decode<T: ::bitcoin::consensus::Decodable>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, ChainError> {
    deserialize(bytes).map_err(|e| ChainError::Decode {
        what,
        reason: e.to_string(),
    })
}

impl ChainAdapter for Bitcoin {
    const CHAIN_ID: u8 = 0;
    const NAME: &'static str = "bitcoin";
    /// 4,000,000 weight units / 240 (the weight of a 60-byte transaction, about the smallest
    /// that spends anything) is 16,666; rounded up for margin.
    const MAX_TXS_PER_BLOCK: usize = 20_000;

    type Block = Block;
    type Tx = Transaction;

    fn decode_block(bytes: &[u8]) -> Result<Block, ChainError> {
        decode(bytes, "bitcoin block")
    }

    fn encode_block(block: &Block) -> Vec<u8> {
        serialize(block)
    }

    fn block_hash(block: &Block) -> [u8; 32] {
        block.header.block_hash().to_byte_array()
    }

    fn header_bytes(block: &Block) -> Vec<u8> {
        serialize(&block.header)
    }

    fn transactions(block: &Block) -> &[Transaction] {
        &block.txdata
    }

    fn decode_tx(bytes: &[u8]) -> Result<Transaction, ChainError> {
        decode(bytes, "bitcoin transaction")
    }

    fn encode_tx(tx: &Transaction) -> Vec<u8> {
        serialize(tx)
    }

    fn tx_ids(tx: &Transaction) -> TxIds {
        let txid = tx.compute_txid().to_byte_array();
        // Without witness data the wtxid hashes the same bytes as the txid (BIP141).
        let wtxid = if has_witness(tx) {
            tx.compute_wtxid().to_byte_array()
        } else {
            txid
        };
        TxIds { txid, wtxid }
    }

    fn parent_txids(tx: &Transaction) -> Vec<[u8; 32]> {
        if tx.is_coinbase() {
            return Vec::new();
        }
        tx.input
            .iter()
            .map(|i| i.previous_output.txid.to_byte_array())
            .collect()
    }

    fn assemble(header: &[u8], txs: Vec<Transaction>) -> Result<Block, ChainError> {
        let header: Header = decode(header, "bitcoin block header")?;
        if txs.is_empty() {
            return Err(ChainError::NoTransactions);
        }
        let block = Block {
            header,
            txdata: txs,
        };
        if !block.check_merkle_root() {
            return Err(ChainError::MerkleMismatch);
        }
        // The merkle root covers txids only: witness data is committed in the coinbase.
        if !block.check_witness_commitment() {
            return Err(ChainError::WitnessCommitmentMismatch);
        }
        Ok(block)
    }

    /// The checks of [`assemble`](Bitcoin::assemble) (`Block::check_merkle_root` and
    /// `Block::check_witness_commitment`), computed from the given ids where there are some:
    /// the merkle root over the txids, the witness root over the wtxids with the coinbase's
    /// as zero (BIP141), then the commitment in the coinbase's last output that carries one.
    fn assemble_with_ids(
        header: &[u8],
        txs: Vec<Transaction>,
        known: &[Option<TxIds>],
    ) -> Result<Block, ChainError> {
        if known.iter().all(Option::is_none) {
            return Self::assemble(header, txs);
        }
        let header: Header = decode(header, "bitcoin block header")?;
        if txs.is_empty() {
            return Err(ChainError::NoTransactions);
        }
        let mut txids = Vec::with_capacity(txs.len());
        let mut wtxids = Vec::with_capacity(txs.len());
        let mut any_witness = false;
        for (i, tx) in txs.iter().enumerate() {
            any_witness |= has_witness(tx);
            let ids = match known.get(i).copied().flatten() {
                Some(ids) => ids,
                None => Self::tx_ids(tx),
            };
            txids.push(sha256d::Hash::from_byte_array(ids.txid));
            wtxids.push(sha256d::Hash::from_byte_array(ids.wtxid));
        }
        let root = calculate_root_inline(&mut txids).map(TxMerkleNode::from_raw_hash);
        if root != Some(header.merkle_root) {
            return Err(ChainError::MerkleMismatch);
        }
        // As `check_witness_commitment`: optional when no transaction has witness data.
        if any_witness && !witness_commitment_matches(&txs[0], &mut wtxids) {
            return Err(ChainError::WitnessCommitmentMismatch);
        }
        Ok(Block {
            header,
            txdata: txs,
        })
    }
}

fn has_witness(tx: &Transaction) -> bool {
    tx.input.iter().any(|i| !i.witness.is_empty())
}

/// OP_RETURN, push 36, and BIP141's commitment header: how a witness commitment output starts.
const WITNESS_COMMITMENT_MAGIC: [u8; 6] = [0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];

/// Test support: flips byte `at` of the script of the coinbase's last witness-commitment output
/// and recomputes the header's merkle root, so that only the witness commitment is wrong.
#[cfg(test)]
pub(crate) fn corrupt_witness_commitment(block: &mut Block, at: usize) {
    let out = block.txdata[0]
        .output
        .iter_mut()
        .rev()
        .find(|o| {
            o.script_pubkey
                .as_bytes()
                .starts_with(&WITNESS_COMMITMENT_MAGIC)
        })
        .expect("a block with a witness commitment");
    let mut script = out.script_pubkey.to_bytes();
    script[at] ^= 1;
    out.script_pubkey = script.into();
    block.header.merkle_root = block.compute_merkle_root().expect("transactions");
}

/// Test support: a transaction of `block` (not the coinbase) whose last witness item is not
/// empty.
#[cfg(test)]
pub(crate) fn witness_tx(block: &Block) -> usize {
    (1..block.txdata.len())
        .find(|&i| {
            block.txdata[i]
                .input
                .iter()
                .any(|inp| inp.witness.last().is_some_and(|w| !w.is_empty()))
        })
        .expect("a segwit block")
}

/// Test support: `tx` with one bit of its witness flipped (same txid, another wtxid).
#[cfg(test)]
pub(crate) fn altered_witness(tx: &Transaction) -> Transaction {
    let mut tx = tx.clone();
    let inp = tx
        .input
        .iter_mut()
        .find(|i| i.witness.last().is_some_and(|w| !w.is_empty()))
        .expect("witness data");
    let mut items: Vec<Vec<u8>> = inp.witness.iter().map(<[u8]>::to_vec).collect();
    items.last_mut().expect("an item")[0] ^= 1;
    inp.witness = ::bitcoin::Witness::from_slice(&items);
    tx
}

/// `Block::check_witness_commitment` of bitcoin 0.32 for a block with some witness data, with
/// the wtxids given (`wtxids[0]`, the coinbase's, is replaced by zeros here).
fn witness_commitment_matches(coinbase: &Transaction, wtxids: &mut [sha256d::Hash]) -> bool {
    if !coinbase.is_coinbase() {
        return false;
    }
    // The commitment is in the last output that starts with the magic bytes.
    let Some(out) = coinbase.output.iter().rev().find(|o| {
        let s = o.script_pubkey.as_bytes();
        s.len() >= 38 && s[..6] == WITNESS_COMMITMENT_MAGIC
    }) else {
        return false;
    };
    let mut commitment = [0u8; 32];
    commitment.copy_from_slice(&out.script_pubkey.as_bytes()[6..38]);
    let commitment = WitnessCommitment::from_byte_array(commitment);
    // The witness reserved value: the coinbase input's only witness item, 32 bytes.
    let witness = &coinbase.input[0].witness;
    let reserved = match (witness.len(), witness.nth(0)) {
        (1, Some(value)) if value.len() == 32 => value,
        _ => return false,
    };
    let Some(first) = wtxids.first_mut() else {
        return false;
    };
    *first = sha256d::Hash::all_zeros();
    match calculate_root_inline(wtxids) {
        Some(root) => {
            commitment
                == Block::compute_witness_commitment(
                    &WitnessMerkleNode::from_raw_hash(root),
                    reserved,
                )
        }
        None => false,
    }
}

#[cfg(test)]
mod tests;
