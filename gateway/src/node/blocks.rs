//! [`BlockStore`]: the blocks the gateway can serve its node, bounded by bytes, kept across
//! connections, with the best chain they form.
//!
//! Contract: every block from the network or from the node goes in; the oldest go first once
//! `max_bytes` is passed. The best chain is the stored chain of most work ending at the stored
//! block of most work (work counted from the oldest stored ancestor); `getheaders` and
//! `getblocks` are answered along it from the first locator hash on it.

use std::collections::{HashMap, VecDeque};

use bitcoin::block::Header;
use bitcoin::{Block, BlockHash, Work};

#[derive(Debug)]
struct Stored {
    block: Block,
    size: usize,
    /// Work of this block and its stored ancestors (those present when it arrived).
    chain_work: Work,
    /// It came from the network (not from the node itself).
    from_network: bool,
}

/// Blocks kept to serve the node (see the module docs).
#[derive(Debug)]
pub struct BlockStore {
    max_bytes: usize,
    bytes: usize,
    blocks: HashMap<BlockHash, Stored>,
    /// Insertion order, for eviction.
    order: VecDeque<BlockHash>,
    tip: Option<BlockHash>,
    evicted: u64,
}

impl BlockStore {
    /// A store holding at most `max_bytes` of blocks (at least the newest one, whatever its
    /// size).
    pub fn new(max_bytes: usize) -> Self {
        BlockStore {
            max_bytes,
            bytes: 0,
            blocks: HashMap::new(),
            order: VecDeque::new(),
            tip: None,
            evicted: 0,
        }
    }

    /// Keep `block`. False if it was already kept.
    pub fn insert(&mut self, block: Block, from_network: bool) -> bool {
        let hash = block.block_hash();
        if let Some(s) = self.blocks.get_mut(&hash) {
            s.from_network |= from_network;
            return false;
        }
        let parent_work = self
            .blocks
            .get(&block.header.prev_blockhash)
            .map(|p| p.chain_work);
        let own = block.header.work();
        let chain_work = parent_work.map_or(own, |w| w + own);
        let size = block.total_size();
        self.bytes += size;
        self.blocks.insert(
            hash,
            Stored {
                block,
                size,
                chain_work,
                from_network,
            },
        );
        self.order.push_back(hash);
        if self.tip_work().is_none_or(|w| chain_work > w) {
            self.tip = Some(hash);
        }
        while self.bytes > self.max_bytes && self.order.len() > 1 {
            self.evict_oldest();
        }
        true
    }

    pub fn get(&self, hash: &BlockHash) -> Option<&Block> {
        self.blocks.get(hash).map(|s| &s.block)
    }

    pub fn contains(&self, hash: &BlockHash) -> bool {
        self.blocks.contains_key(hash)
    }

    /// The stored block of most work.
    pub fn tip(&self) -> Option<BlockHash> {
        self.tip
    }

    /// The tip came from the network (so the node may lack it).
    pub fn tip_from_network(&self) -> bool {
        self.tip
            .and_then(|t| self.blocks.get(&t))
            .is_some_and(|s| s.from_network)
    }

    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Blocks dropped to stay within `max_bytes`, since the store was made.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Headers of the best chain after the node's `locator`, up to `stop` (included) or `max`.
    pub fn headers_after(&self, locator: &[BlockHash], stop: BlockHash, max: usize) -> Vec<Header> {
        self.after(locator, stop, max)
            .into_iter()
            .filter_map(|h| self.blocks.get(&h).map(|s| s.block.header))
            .collect()
    }

    /// Hashes of the best chain after `locator`, up to `stop` (included) or `max`.
    pub fn after(&self, locator: &[BlockHash], stop: BlockHash, max: usize) -> Vec<BlockHash> {
        let chain = self.best_chain();
        let Some(first) = chain.first() else {
            return Vec::new();
        };
        let root = self.blocks[first].block.header.prev_blockhash;
        let start = locator.iter().find_map(|h| {
            if *h == root {
                Some(0)
            } else {
                chain.iter().position(|c| c == h).map(|i| i + 1)
            }
        });
        let Some(start) = start else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for h in &chain[start..] {
            if out.len() >= max {
                break;
            }
            out.push(*h);
            if *h == stop {
                break;
            }
        }
        out
    }

    /// The best chain, oldest stored ancestor first.
    fn best_chain(&self) -> Vec<BlockHash> {
        let mut chain = Vec::new();
        let mut at = self.tip;
        while let Some(h) = at {
            let Some(s) = self.blocks.get(&h) else { break };
            chain.push(h);
            at = Some(s.block.header.prev_blockhash);
        }
        chain.reverse();
        chain
    }

    fn tip_work(&self) -> Option<Work> {
        self.tip
            .and_then(|t| self.blocks.get(&t))
            .map(|s| s.chain_work)
    }

    fn evict_oldest(&mut self) {
        let Some(h) = self.order.pop_front() else {
            return;
        };
        if let Some(s) = self.blocks.remove(&h) {
            self.bytes -= s.size;
            self.evicted += 1;
        }
        if self.tip == Some(h) {
            self.tip = self
                .blocks
                .iter()
                .max_by_key(|(_, s)| s.chain_work)
                .map(|(h, _)| *h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::block::Version;
    use bitcoin::hashes::Hash;
    use bitcoin::{CompactTarget, TxMerkleNode};

    /// A regtest-difficulty child of `prev` (no transactions: only headers matter here).
    fn child(prev: BlockHash, nonce: u32) -> Block {
        Block {
            header: Header {
                version: Version::TWO,
                prev_blockhash: prev,
                merkle_root: TxMerkleNode::all_zeros(),
                time: 1_700_000_000,
                bits: CompactTarget::from_consensus(0x207f_ffff),
                nonce,
            },
            txdata: Vec::new(),
        }
    }

    fn chain(from: BlockHash, n: usize, salt: u32) -> Vec<Block> {
        let mut out: Vec<Block> = Vec::new();
        let mut prev = from;
        for i in 0..n {
            let b = child(prev, salt * 1000 + i as u32);
            prev = b.block_hash();
            out.push(b);
        }
        out
    }

    #[test]
    fn answers_along_the_best_chain_from_the_locator() {
        let root = BlockHash::all_zeros();
        let main = chain(root, 10, 1);
        let mut s = BlockStore::new(1 << 20);
        for b in &main {
            assert!(s.insert(b.clone(), true));
        }
        assert!(!s.insert(main[3].clone(), false));
        let hashes: Vec<_> = main.iter().map(|b| b.block_hash()).collect();
        assert_eq!(s.tip(), Some(hashes[9]));
        // The node has block 4 (and older): it gets 5.., in order, up to `max`.
        let loc = [BlockHash::from_byte_array([7; 32]), hashes[4], hashes[1]];
        assert_eq!(
            s.after(&loc, BlockHash::all_zeros(), 500),
            hashes[5..].to_vec()
        );
        assert_eq!(
            s.after(&loc, BlockHash::all_zeros(), 2),
            hashes[5..7].to_vec()
        );
        assert_eq!(s.after(&loc, hashes[6], 500), hashes[5..7].to_vec());
        // The node has only the stored chain's parent: everything.
        assert_eq!(s.after(&[root], BlockHash::all_zeros(), 500), hashes);
        let headers = s.headers_after(&[root], BlockHash::all_zeros(), 3);
        assert_eq!(
            headers,
            main[..3].iter().map(|b| b.header).collect::<Vec<_>>()
        );
        // A locator we know nothing of: nothing.
        assert!(s
            .after(
                &[BlockHash::from_byte_array([9; 32])],
                BlockHash::all_zeros(),
                500
            )
            .is_empty());
    }

    #[test]
    fn a_longer_branch_becomes_the_best_chain() {
        let root = BlockHash::all_zeros();
        let main = chain(root, 4, 1);
        let fork = chain(main[1].block_hash(), 3, 2);
        let mut s = BlockStore::new(1 << 20);
        for b in main.iter().chain(&fork[..2]) {
            s.insert(b.clone(), true);
        }
        // Equal work: the first to get there stays the tip.
        assert_eq!(s.tip(), Some(main[3].block_hash()));
        s.insert(fork[2].clone(), true);
        assert_eq!(s.tip(), Some(fork[2].block_hash()));
        // A node on the old branch, at main[3], gets the new branch from the fork point.
        let loc = [
            main[3].block_hash(),
            main[2].block_hash(),
            main[1].block_hash(),
        ];
        let want: Vec<_> = fork.iter().map(|b| b.block_hash()).collect();
        assert_eq!(s.after(&loc, BlockHash::all_zeros(), 500), want);
    }

    #[test]
    fn bounded_by_bytes_oldest_first() {
        let blocks = chain(BlockHash::all_zeros(), 10, 3);
        let size = blocks[0].total_size();
        let mut s = BlockStore::new(4 * size);
        for b in &blocks {
            s.insert(b.clone(), false);
        }
        assert_eq!(s.len(), 4);
        assert_eq!(s.bytes(), 4 * size);
        assert_eq!(s.evicted(), 6);
        assert!(!s.contains(&blocks[5].block_hash()));
        assert!(s.contains(&blocks[6].block_hash()));
        assert_eq!(s.tip(), Some(blocks[9].block_hash()));
        assert!(!s.tip_from_network());
        // The oldest kept block's parent is the chain's root now.
        let got = s.after(&[blocks[5].block_hash()], BlockHash::all_zeros(), 500);
        assert_eq!(got.len(), 4);
        // One block larger than the whole budget is still kept (the newest).
        let mut tiny = BlockStore::new(1);
        tiny.insert(blocks[0].clone(), true);
        assert_eq!(tiny.len(), 1);
        assert!(tiny.tip_from_network());
    }
}
