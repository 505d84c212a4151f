//! The Bitcoin adapter: the `bitcoin` crate's consensus encoding, txid/wtxid, merkle root and
//! witness commitment checks.

use ::bitcoin::block::Header;
use ::bitcoin::consensus::{deserialize, serialize};
use ::bitcoin::hashes::Hash;
use ::bitcoin::{Block, Transaction};

use super::{ChainAdapter, ChainError, TxIds};

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
        TxIds {
            txid: tx.compute_txid().to_byte_array(),
            wtxid: tx.compute_wtxid().to_byte_array(),
        }
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
}
