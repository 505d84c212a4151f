//! The transaction cache: recent transactions by short ID, kept to answer tx requests (§2.4)
//! at the relay instead of passing them on to every gateway.
//!
//! The relay assigns short IDs and fans the transactions out, so it sees every transaction a
//! block can reference; keeping the recent ones lets it answer a gateway that lacks some of a
//! block's transactions with one unicast per transaction, without a round trip to the origin.
//! Entries are keyed by short ID and hold the transaction's fragments as the relay passed them
//! on (its own transfer id, index, count, tx_len, offset, data). Bounded in bytes (data plus a
//! fixed per-fragment overhead, so the number of entries is bounded too), oldest first out. A
//! short ID reused for another transaction (a wrapped range) replaces the old entry.

use photon_protocol::fifo::FifoMap;
use photon_protocol::wire::TransactionRepr;

/// Bytes charged per cached fragment on top of its data (map entry, vectors, fields), so that
/// tiny fragments cannot make the entry count unbounded.
pub const FRAGMENT_OVERHEAD: usize = 64;

/// One fragment of a cached transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxFragment {
    pub index: u16,
    pub offset: u32,
    pub data: Vec<u8>,
}

/// A transaction as the relay passed it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedTx {
    /// The relay's transfer id for it (header `stream`).
    pub transfer: u64,
    pub count: u16,
    pub tx_len: u32,
    /// Fragments received so far, at most `count`, distinct indices.
    pub fragments: Vec<TxFragment>,
}

impl CachedTx {
    /// Whether every fragment is held (only complete transactions are served).
    pub fn is_complete(&self) -> bool {
        self.fragments.len() == usize::from(self.count)
    }

    /// The fragments as transaction messages carrying `short_id`.
    pub fn reprs(&self, short_id: u32) -> impl Iterator<Item = TransactionRepr<'_>> {
        self.fragments.iter().map(move |f| TransactionRepr {
            transfer: self.transfer,
            index: f.index,
            count: self.count,
            short_id: Some(short_id),
            tx_len: self.tx_len,
            offset: f.offset,
            data: &f.data,
        })
    }
}

/// A byte-bounded FIFO of transactions by short ID ([`FifoMap`], weighted by cost).
#[derive(Debug)]
pub struct TxCache {
    fifo: FifoMap<u32, CachedTx>,
    evicted: u64,
}

impl TxCache {
    /// A cache of at most `max_bytes` (0 disables it: nothing is stored).
    pub fn new(max_bytes: usize) -> TxCache {
        TxCache {
            fifo: FifoMap::weighted(usize::MAX, max_bytes),
            evicted: 0,
        }
    }

    /// Records one fragment of the transaction `short_id` as passed on under the relay transfer
    /// id `transfer`. Returns whether it was stored (false: too big for the cache, a duplicate
    /// fragment, or inconsistent with the fragments held, which are then kept).
    pub fn record(&mut self, short_id: u32, transfer: u64, tx: &TransactionRepr<'_>) -> bool {
        let cost = tx.data.len() + FRAGMENT_OVERHEAD;
        if cost > self.fifo.max_weight() || tx.count == 0 || tx.index >= tx.count {
            return false;
        }
        let fragment = TxFragment {
            index: tx.index,
            offset: tx.offset,
            data: tx.data.to_vec(),
        };
        let evicted = &mut self.evicted;
        match self.fifo.get(&short_id) {
            // The same transaction (the relay transfer id is per transaction): add a fragment.
            Some(e) if e.transfer == transfer => {
                if e.count != tx.count
                    || e.tx_len != tx.tx_len
                    || e.fragments.iter().any(|f| f.index == tx.index)
                {
                    return false;
                }
                if self.fifo.grow(&short_id, cost, |_, _| *evicted += 1) {
                    if let Some(e) = self.fifo.get_mut(&short_id) {
                        e.fragments.push(fragment);
                    }
                    return true;
                }
                // It alone would exceed the bound: drop it and start again with this fragment.
                self.fifo.remove(&short_id);
                *evicted += 1;
            }
            // A short ID reused for another transaction: the new one replaces it.
            Some(_) => {
                self.fifo.remove(&short_id);
                *evicted += 1;
            }
            None => {}
        }
        let entry = CachedTx {
            transfer,
            count: tx.count,
            tx_len: tx.tx_len,
            fragments: vec![fragment],
        };
        self.fifo.make_room(cost, |_, _| *evicted += 1);
        self.fifo
            .insert_weighted_with(short_id, entry, cost, |_, _| *evicted += 1)
    }

    /// The complete transaction with this short ID, if held.
    pub fn get_complete(&self, short_id: u32) -> Option<&CachedTx> {
        self.fifo.get(&short_id).filter(|e| e.is_complete())
    }

    /// Transactions held (complete or not).
    pub fn len(&self) -> usize {
        self.fifo.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fifo.is_empty()
    }

    /// Bytes charged (data plus [`FRAGMENT_OVERHEAD`] per fragment), at most the bound.
    pub fn bytes(&self) -> usize {
        self.fifo.weight()
    }

    /// Transactions evicted or replaced so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(data: &[u8], index: u16, count: u16) -> TransactionRepr<'_> {
        TransactionRepr {
            transfer: 9,
            index,
            count,
            short_id: None,
            tx_len: data.len() as u32 * u32::from(count),
            offset: data.len() as u32 * u32::from(index),
            data,
        }
    }

    #[test]
    fn complete_only_after_every_fragment() {
        let mut c = TxCache::new(1 << 20);
        let d = [7u8; 100];
        assert!(c.record(5, 1000, &frag(&d, 1, 2)));
        assert!(c.get_complete(5).is_none());
        assert!(!c.record(5, 1000, &frag(&d, 1, 2)), "duplicate fragment");
        assert!(c.record(5, 1000, &frag(&d, 0, 2)));
        let e = c.get_complete(5).unwrap();
        let reprs: Vec<_> = e.reprs(5).collect();
        assert_eq!(reprs.len(), 2);
        assert!(reprs
            .iter()
            .all(|r| r.short_id == Some(5) && r.transfer == 1000));
        assert_eq!(c.bytes(), 2 * (100 + FRAGMENT_OVERHEAD));
    }

    #[test]
    fn bounded_in_bytes_oldest_out_and_reused_ids_replace() {
        let one = 100 + FRAGMENT_OVERHEAD;
        let mut c = TxCache::new(3 * one);
        let d = [1u8; 100];
        for id in 0..10u32 {
            assert!(c.record(id, u64::from(id), &frag(&d, 0, 1)));
            assert!(c.bytes() <= 3 * one);
        }
        assert_eq!(c.len(), 3);
        assert!(c.get_complete(6).is_none() && c.get_complete(7).is_some());
        assert_eq!(c.evicted(), 7);
        // Short ID 9 reused for another transaction (another relay transfer id).
        let d2 = [2u8; 50];
        assert!(c.record(9, 77, &frag(&d2, 0, 1)));
        let e = c.get_complete(9).unwrap();
        assert_eq!((e.transfer, e.fragments[0].data.len()), (77, 50));
        assert_eq!(c.bytes(), 2 * one + 50 + FRAGMENT_OVERHEAD);
        // Too big for the cache at all; a disabled cache stores nothing.
        assert!(!TxCache::new(10).record(1, 1, &frag(&d, 0, 1)));
        assert!(!c.record(1, 1, &frag(&d, 3, 2)), "index out of range");
    }
}
