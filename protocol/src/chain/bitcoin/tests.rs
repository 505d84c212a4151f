//! The id-based check of [`Bitcoin::assemble_with_ids`] against the `bitcoin` crate's own
//! (`check_merkle_root`, `check_witness_commitment`) on real blocks and altered ones.

use ::bitcoin::hashes::Hash;
use ::bitcoin::{Block, Witness};

use super::{altered_witness, witness_tx, Bitcoin, ChainAdapter, ChainError, TxIds};

fn real_block(height: u64) -> Block {
    let path = format!(
        "{}/../data/bitcoin/mainnet/{height}.raw",
        env!("CARGO_MANIFEST_DIR")
    );
    Bitcoin::decode_block(&std::fs::read(path).expect("real block")).expect("decodes")
}

fn all_real_blocks() -> Vec<Block> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/bitcoin/mainnet");
    let files = super::raw_block_files(std::path::Path::new(dir)).expect("data/bitcoin/mainnet");
    assert_eq!(files.len(), 16);
    files.into_iter().map(|(h, _)| real_block(h)).collect()
}

fn header(block: &Block) -> Vec<u8> {
    Bitcoin::header_bytes(block)
}

fn all_ids(block: &Block) -> Vec<Option<TxIds>> {
    block
        .txdata
        .iter()
        .map(|t| Some(Bitcoin::tx_ids(t)))
        .collect()
}

/// Both checks on the same block: the crate's (all ids unknown) and the id-based one (all
/// given), which must agree.
fn both(
    block: &Block,
    ids: &[Option<TxIds>],
) -> (Result<Block, ChainError>, Result<Block, ChainError>) {
    let full = Bitcoin::assemble(&header(block), block.txdata.clone());
    let fast = Bitcoin::assemble_with_ids(&header(block), block.txdata.clone(), ids);
    (full, fast)
}

#[test]
fn wtxid_shortcut_matches_the_crate() {
    for block in all_real_blocks() {
        for tx in &block.txdata {
            let ids = Bitcoin::tx_ids(tx);
            assert_eq!(ids.txid, tx.compute_txid().to_byte_array());
            assert_eq!(ids.wtxid, tx.compute_wtxid().to_byte_array());
        }
    }
}

#[test]
fn ids_check_accepts_every_real_block_as_the_crate_does() {
    for block in all_real_blocks() {
        let ids = all_ids(&block);
        let (full, fast) = both(&block, &ids);
        assert_eq!(full.expect("real block"), block);
        assert_eq!(fast.expect("real block"), block);
        // Some ids known, the others (every third) hashed.
        let some: Vec<Option<TxIds>> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| id.filter(|_| i % 3 != 0))
            .collect();
        let part = Bitcoin::assemble_with_ids(&header(&block), block.txdata.clone(), &some);
        assert_eq!(part.expect("real block"), block);
    }
}

#[test]
fn wrong_merkle_root_is_refused() {
    let mut block = real_block(702861);
    let ids = all_ids(&block);
    let mut root = block.header.merkle_root.to_byte_array();
    root[7] ^= 0x40;
    block.header.merkle_root = ::bitcoin::TxMerkleNode::from_byte_array(root);
    let (full, fast) = both(&block, &ids);
    assert_eq!(full.unwrap_err(), ChainError::MerkleMismatch);
    assert_eq!(fast.unwrap_err(), ChainError::MerkleMismatch);
}

#[test]
fn wrong_witness_commitment_is_refused() {
    let mut block = real_block(574200);
    // Another commitment in the coinbase, the header's merkle root made to match it: only the
    // witness commitment is wrong.
    super::corrupt_witness_commitment(&mut block, 20);
    let (full, fast) = both(&block, &all_ids(&block));
    assert_eq!(full.unwrap_err(), ChainError::WitnessCommitmentMismatch);
    assert_eq!(fast.unwrap_err(), ChainError::WitnessCommitmentMismatch);

    // No commitment output at all, in a block with witness data.
    let mut block = real_block(574200);
    block.txdata[0]
        .output
        .retain(|o| !o.script_pubkey.as_bytes().starts_with(&[0x6a, 0x24]));
    block.header.merkle_root = block.compute_merkle_root().unwrap();
    let (full, fast) = both(&block, &all_ids(&block));
    assert_eq!(full.unwrap_err(), ChainError::WitnessCommitmentMismatch);
    assert_eq!(fast.unwrap_err(), ChainError::WitnessCommitmentMismatch);

    // The coinbase's witness reserved value is not 32 bytes.
    let mut block = real_block(556977);
    block.txdata[0].input[0].witness = Witness::from_slice(&[[0u8; 31]]);
    block.header.merkle_root = block.compute_merkle_root().unwrap();
    let (full, fast) = both(&block, &all_ids(&block));
    assert_eq!(full.unwrap_err(), ChainError::WitnessCommitmentMismatch);
    assert_eq!(fast.unwrap_err(), ChainError::WitnessCommitmentMismatch);
}

#[test]
fn altered_witness_of_a_hashed_tx_is_refused() {
    // A transaction whose ids are not given (as one sent whole in the payload) is hashed: its
    // altered witness changes its wtxid, not its txid.
    let mut block = real_block(702861);
    let mut ids = all_ids(&block);
    let i = witness_tx(&block);
    block.txdata[i] = altered_witness(&block.txdata[i]);
    ids[i] = None;
    let (full, fast) = both(&block, &ids);
    assert_eq!(full.unwrap_err(), ChainError::WitnessCommitmentMismatch);
    assert_eq!(fast.unwrap_err(), ChainError::WitnessCommitmentMismatch);
}

#[test]
fn wrong_given_ids_are_refused() {
    // Given ids are taken as they are: a wrong txid fails the merkle root, a wrong wtxid the
    // witness commitment (a corrupt store can make a good block fail, never pass).
    let block = real_block(556977);
    let i = witness_tx(&block);
    let mut ids = all_ids(&block);
    ids[i].as_mut().unwrap().txid[0] ^= 1;
    let fast = Bitcoin::assemble_with_ids(&header(&block), block.txdata.clone(), &ids);
    assert_eq!(fast.unwrap_err(), ChainError::MerkleMismatch);
    let mut ids = all_ids(&block);
    ids[i].as_mut().unwrap().wtxid[31] ^= 0x80;
    let fast = Bitcoin::assemble_with_ids(&header(&block), block.txdata.clone(), &ids);
    assert_eq!(fast.unwrap_err(), ChainError::WitnessCommitmentMismatch);
    // The coinbase's wtxid counts as zero whatever is given (BIP141).
    let mut ids = all_ids(&block);
    ids[0].as_mut().unwrap().wtxid = [0xee; 32];
    let fast = Bitcoin::assemble_with_ids(&header(&block), block.txdata.clone(), &ids);
    assert_eq!(fast.unwrap(), block);
}

#[test]
fn no_transactions_and_bad_header_are_typed_errors() {
    let block = real_block(227836);
    let ids = [Some(Bitcoin::tx_ids(&block.txdata[0]))];
    assert_eq!(
        Bitcoin::assemble_with_ids(&header(&block), Vec::new(), &ids).unwrap_err(),
        ChainError::NoTransactions
    );
    assert!(matches!(
        Bitcoin::assemble_with_ids(&header(&block)[..79], block.txdata.clone(), &ids),
        Err(ChainError::Decode { .. })
    ));
}

#[test]
fn pre_segwit_block_needs_no_commitment() {
    let block = real_block(300025);
    let (full, fast) = both(&block, &all_ids(&block));
    assert_eq!(full.unwrap(), block);
    assert_eq!(fast.unwrap(), block);
}
