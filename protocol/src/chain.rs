//! The chain adapter (docs/protocol.md §6.4): everything block compression needs to know about a
//! chain, so that [`crate::compress`] and [`crate::shortid`] stay chain-agnostic.
//!
//! Bitcoin is the first adapter ([`Bitcoin`]); its encoding is the `bitcoin` crate's, never
//! written by hand here.

mod bitcoin;
#[cfg(test)]
pub(crate) use bitcoin::{altered_witness, corrupt_witness_commitment, witness_tx};

pub use self::bitcoin::{raw_block_files, Bitcoin};

pub use crate::shortid::TxIds;

/// Why a block or transaction did not decode, or a rebuilt block did not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The bytes are not a valid encoding (includes trailing bytes after the object).
    #[error("{what} does not decode: {reason}")]
    Decode { what: &'static str, reason: String },
    /// The merkle root computed from the transactions is not the header's.
    #[error("merkle root of the transactions does not match the header")]
    MerkleMismatch,
    /// The witness commitment in the coinbase does not match the transactions' wtxids.
    #[error("witness commitment in the coinbase does not match the transactions")]
    WitnessCommitmentMismatch,
    /// A block needs at least one transaction (its coinbase).
    #[error("block has no transactions")]
    NoTransactions,
}

/// A chain as seen by block compression: block → header + transactions, transaction → IDs,
/// and the chain's own encodings.
pub trait ChainAdapter {
    /// The chain's byte in a compressed block (§6.3).
    const CHAIN_ID: u8;
    /// Human name, for messages.
    const NAME: &'static str;
    /// Upper bound on the transactions of one valid block. Decoders cap counts read from the
    /// network by it, before any allocation.
    const MAX_TXS_PER_BLOCK: usize;

    type Block;
    type Tx;

    /// Decode a whole block from its chain encoding.
    fn decode_block(bytes: &[u8]) -> Result<Self::Block, ChainError>;
    /// The chain encoding of a block.
    fn encode_block(block: &Self::Block) -> Vec<u8>;
    /// The block's hash, in the chain's internal byte order.
    fn block_hash(block: &Self::Block) -> [u8; 32];
    /// The encoded header (everything of the block but its transactions).
    fn header_bytes(block: &Self::Block) -> Vec<u8>;
    /// The block's transactions in block order.
    fn transactions(block: &Self::Block) -> &[Self::Tx];

    fn decode_tx(bytes: &[u8]) -> Result<Self::Tx, ChainError>;
    fn encode_tx(tx: &Self::Tx) -> Vec<u8>;
    fn tx_ids(tx: &Self::Tx) -> TxIds;
    /// The txids this transaction spends from (to order parents before children in models).
    fn parent_txids(tx: &Self::Tx) -> Vec<[u8; 32]>;

    /// Rebuild a block from an encoded header and its transactions, and check that they belong
    /// together (merkle root, and whatever else commits to the transactions).
    fn assemble(header: &[u8], txs: Vec<Self::Tx>) -> Result<Self::Block, ChainError>;

    /// [`assemble`](Self::assemble), with the identifiers of some transactions already known:
    /// `known[i]`, when `Some`, is taken as the [`TxIds`] of `txs[i]` instead of hashing it
    /// (§6.4). The checks are the same; only where the hashes come from changes.
    ///
    /// Pass `Some` only for ids this process computed itself from the very bytes `txs[i]` was
    /// decoded from (the receiver's [`crate::shortid::TxStore`] holds such ids): a wrong id
    /// makes the block fail its check, or, were it chosen by an attacker, pass with
    /// transactions the header does not commit to. Transactions received in the block payload
    /// itself are always `None`. Entries past `known.len()` count as `None`.
    ///
    /// The default ignores `known` and runs the full check.
    fn assemble_with_ids(
        header: &[u8],
        txs: Vec<Self::Tx>,
        known: &[Option<TxIds>],
    ) -> Result<Self::Block, ChainError> {
        let _ = known;
        Self::assemble(header, txs)
    }
}
