//! The short ID → transaction store (docs/protocol.md §6.2).
//!
//! Bounded two ways: a byte budget (oldest entries evicted first when an insert would pass it)
//! and an age limit (entries older than `ttl` are dropped by [`TxStore::expire`]; the caller
//! passes `now`, the store never reads a clock). Lookups by short ID, txid and wtxid.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::ShortId;

/// A transaction's two 32-byte identifiers. For chains without a witness hash `wtxid == txid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxIds {
    pub txid: [u8; 32],
    pub wtxid: [u8; 32],
}

/// Limits of a [`TxStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxStoreConfig {
    /// Most bytes the store may account for: every entry counts its transaction's bytes plus
    /// [`TxStore::ENTRY_OVERHEAD`]. A mempool's worth (300 MB in Bitcoin Core) is the natural size.
    pub max_bytes: usize,
    /// Entries older than this are dropped by [`TxStore::expire`].
    pub ttl: Duration,
}

impl Default for TxStoreConfig {
    fn default() -> Self {
        TxStoreConfig {
            max_bytes: 300 << 20,
            ttl: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxStoreError {
    /// One transaction alone is bigger than the whole budget.
    #[error("transaction of {tx_bytes} bytes does not fit a store of {max_bytes} bytes: raise `max_bytes`")]
    TooLarge { tx_bytes: usize, max_bytes: usize },
    /// The ID is bound to another transaction: an ID is never rebound while held (a hostile
    /// member could otherwise rebind recent IDs to junk and fail every block that uses them,
    /// docs/protocol/8-threat-model.md F2). A wrapped range reuses an ID only after the old
    /// binding expired (`ttl`) or was evicted.
    #[error("short ID {id} is bound to another transaction")]
    IdTaken { id: ShortId },
}

/// What [`TxStore::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Stored under the given ID.
    New,
    /// The same wtxid is already stored under another ID; kept as it was, nothing added.
    /// (One transaction has one ID: the one of the first relay that saw it, §6.1.)
    AlreadyKnown(ShortId),
}

/// Counters of a [`TxStore`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxStoreStats {
    pub entries: usize,
    pub bytes: usize,
    pub evicted_for_space: u64,
    pub expired: u64,
    /// Bindings refused: the ID was held for another transaction ([`TxStoreError::IdTaken`]).
    pub id_conflicts: u64,
}

#[derive(Debug)]
struct Entry {
    ids: TxIds,
    tx: Vec<u8>,
    inserted_at: Instant,
    seq: u64,
}

/// Short ID → transaction bytes, bounded in memory and age.
#[derive(Debug)]
pub struct TxStore {
    config: TxStoreConfig,
    by_id: HashMap<ShortId, Entry>,
    by_txid: HashMap<[u8; 32], ShortId>,
    by_wtxid: HashMap<[u8; 32], ShortId>,
    /// Insertion order: sequence number → ID. Oldest first for eviction and expiry.
    order: BTreeMap<u64, ShortId>,
    next_seq: u64,
    stats: TxStoreStats,
}

impl TxStore {
    /// Bytes charged per entry on top of the transaction: the entry, three map slots and the
    /// order index (a measured-by-reasoning estimate, not an allocator count).
    pub const ENTRY_OVERHEAD: usize = 192;

    pub fn new(config: TxStoreConfig) -> Self {
        TxStore {
            config,
            by_id: HashMap::new(),
            by_txid: HashMap::new(),
            by_wtxid: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            stats: TxStoreStats::default(),
        }
    }

    pub fn config(&self) -> &TxStoreConfig {
        &self.config
    }

    /// Store `tx` (its chain encoding) under `id`, received at `now`.
    ///
    /// `ids` must be the transaction's identifiers as this process computed them from these
    /// very bytes (`ChainAdapter::tx_ids` of the decoded `tx`), never ids read from the
    /// network: decompression takes them instead of hashing the transaction again when it
    /// checks a block's merkle root and witness commitment (docs/protocol.md §6.4).
    ///
    /// Evicts the oldest entries while the budget would be passed. An ID already bound to
    /// another transaction is refused ([`TxStoreError::IdTaken`], counted `id_conflicts`); the
    /// same transaction under the same ID again is [`Inserted::AlreadyKnown`].
    pub fn insert(
        &mut self,
        id: ShortId,
        ids: TxIds,
        tx: &[u8],
        now: Instant,
    ) -> Result<Inserted, TxStoreError> {
        let cost = tx.len() + Self::ENTRY_OVERHEAD;
        if cost > self.config.max_bytes {
            return Err(TxStoreError::TooLarge {
                tx_bytes: tx.len(),
                max_bytes: self.config.max_bytes,
            });
        }
        if let Some(&existing) = self.by_wtxid.get(&ids.wtxid) {
            return Ok(Inserted::AlreadyKnown(existing));
        }
        if self.by_id.contains_key(&id) {
            self.stats.id_conflicts += 1;
            return Err(TxStoreError::IdTaken { id });
        }
        while self.stats.bytes + cost > self.config.max_bytes {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.remove(oldest);
            self.stats.evicted_for_space += 1;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, id);
        self.by_txid.insert(ids.txid, id);
        self.by_wtxid.insert(ids.wtxid, id);
        self.by_id.insert(
            id,
            Entry {
                ids,
                tx: tx.to_vec(),
                inserted_at: now,
                seq,
            },
        );
        self.stats.bytes += cost;
        self.stats.entries = self.by_id.len();
        Ok(Inserted::New)
    }

    /// Drop every entry inserted more than `ttl` before `now`. Entries are visited oldest
    /// first by insertion; the walk stops at the first young one, so `now` values passed to
    /// `insert` should not go backwards. Returns how many were dropped.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        while let Some((_, &id)) = self.order.first_key_value() {
            let old = match self.by_id.get(&id) {
                Some(e) => now.saturating_duration_since(e.inserted_at) > self.config.ttl,
                None => true, // cannot happen: order and by_id change together
            };
            if !old {
                break;
            }
            self.order.pop_first();
            self.remove(id);
            dropped += 1;
        }
        self.stats.expired += dropped as u64;
        dropped
    }

    /// Remove the entry of `id`; returns its transaction bytes.
    pub fn remove(&mut self, id: ShortId) -> Option<Vec<u8>> {
        let entry = self.by_id.remove(&id)?;
        self.order.remove(&entry.seq);
        if self.by_txid.get(&entry.ids.txid) == Some(&id) {
            self.by_txid.remove(&entry.ids.txid);
        }
        if self.by_wtxid.get(&entry.ids.wtxid) == Some(&id) {
            self.by_wtxid.remove(&entry.ids.wtxid);
        }
        self.stats.bytes -= entry.tx.len() + Self::ENTRY_OVERHEAD;
        self.stats.entries = self.by_id.len();
        Some(entry.tx)
    }

    /// The transaction bytes stored under `id`.
    pub fn get(&self, id: ShortId) -> Option<&[u8]> {
        self.by_id.get(&id).map(|e| e.tx.as_slice())
    }

    /// The transaction bytes stored under `id` and their identifiers, in one lookup.
    pub fn get_with_ids(&self, id: ShortId) -> Option<(&[u8], TxIds)> {
        self.by_id.get(&id).map(|e| (e.tx.as_slice(), e.ids))
    }

    /// The identifiers of the transaction stored under `id`.
    pub fn ids(&self, id: ShortId) -> Option<TxIds> {
        self.by_id.get(&id).map(|e| e.ids)
    }

    pub fn id_by_txid(&self, txid: &[u8; 32]) -> Option<ShortId> {
        self.by_txid.get(txid).copied()
    }

    pub fn id_by_wtxid(&self, wtxid: &[u8; 32]) -> Option<ShortId> {
        self.by_wtxid.get(wtxid).copied()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn stats(&self) -> TxStoreStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u8) -> TxIds {
        TxIds {
            txid: [n; 32],
            wtxid: [n ^ 0x80; 32],
        }
    }

    fn store(max_bytes: usize, ttl_s: u64) -> TxStore {
        TxStore::new(TxStoreConfig {
            max_bytes,
            ttl: Duration::from_secs(ttl_s),
        })
    }

    #[test]
    fn lookups_by_id_txid_wtxid() {
        let t0 = Instant::now();
        let mut s = store(1 << 20, 60);
        assert_eq!(s.insert(ShortId(7), ids(1), b"abc", t0), Ok(Inserted::New));
        assert_eq!(s.get(ShortId(7)), Some(&b"abc"[..]));
        assert_eq!(s.get_with_ids(ShortId(7)), Some((&b"abc"[..], ids(1))));
        assert_eq!(s.get_with_ids(ShortId(8)), None);
        assert_eq!(s.id_by_txid(&[1; 32]), Some(ShortId(7)));
        assert_eq!(s.id_by_wtxid(&[0x81; 32]), Some(ShortId(7)));
        assert_eq!(
            s.insert(ShortId(8), ids(1), b"abc", t0),
            Ok(Inserted::AlreadyKnown(ShortId(7)))
        );
        assert_eq!(s.len(), 1);
        assert_eq!(
            s.insert(ShortId(7), ids(1), b"abc", t0),
            Ok(Inserted::AlreadyKnown(ShortId(7)))
        );
        // ID 7 is never rebound to another transaction while it is held.
        assert_eq!(
            s.insert(ShortId(7), ids(2), b"xyz", t0),
            Err(TxStoreError::IdTaken { id: ShortId(7) })
        );
        assert_eq!(s.get(ShortId(7)), Some(&b"abc"[..]));
        assert_eq!(s.id_by_txid(&[1; 32]), Some(ShortId(7)));
        assert_eq!(s.stats().id_conflicts, 1);
        assert_eq!(s.stats().bytes, 3 + TxStore::ENTRY_OVERHEAD);
        // Once the binding is gone (expired, evicted), the ID may carry another transaction.
        s.remove(ShortId(7));
        assert_eq!(s.insert(ShortId(7), ids(2), b"xyz", t0), Ok(Inserted::New));
    }

    #[test]
    fn byte_budget_evicts_oldest_first() {
        let t0 = Instant::now();
        let per = 100 + TxStore::ENTRY_OVERHEAD;
        let mut s = store(3 * per, 60);
        for n in 0..5u8 {
            s.insert(ShortId(u32::from(n)), ids(n), &[n; 100], t0)
                .unwrap();
            assert!(s.stats().bytes <= 3 * per);
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.get(ShortId(0)), None);
        assert_eq!(s.get(ShortId(1)), None);
        assert!(s.get(ShortId(2)).is_some());
        assert_eq!(s.stats().evicted_for_space, 2);
        assert_eq!(
            s.insert(ShortId(9), ids(9), &[0; 4000], t0),
            Err(TxStoreError::TooLarge {
                tx_bytes: 4000,
                max_bytes: 3 * per
            })
        );
    }

    #[test]
    fn expiry_uses_callers_clock() {
        let t0 = Instant::now();
        let mut s = store(1 << 20, 60);
        s.insert(ShortId(1), ids(1), b"a", t0).unwrap();
        s.insert(ShortId(2), ids(2), b"b", t0 + Duration::from_secs(30))
            .unwrap();
        assert_eq!(s.expire(t0 + Duration::from_secs(60)), 0);
        assert_eq!(s.expire(t0 + Duration::from_secs(61)), 1);
        assert_eq!(s.get(ShortId(1)), None);
        assert_eq!(s.expire(t0 + Duration::from_secs(91)), 1);
        assert!(s.is_empty());
        assert_eq!(s.stats().bytes, 0);
        assert_eq!(s.stats().expired, 2);
    }
}
