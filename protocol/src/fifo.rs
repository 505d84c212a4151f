//! Bounded first-in-first-out memories: what was seen recently, in fixed memory, the oldest
//! forgotten first. One home for every such memory in the relay and the gateway (replay
//! caches, seen transactions and blocks, key releases, caches bounded by bytes).
//!
//! FIFO, not LRU: cheap, and enough for "this was seen in the last N". A key inserted again
//! keeps its place and takes the new value.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// A map of at most `max_len` entries and `max_weight` total weight (each entry's weight is
/// the caller's: bytes, usually); inserting past either bound evicts the oldest entries.
#[derive(Debug)]
pub struct FifoMap<K, V> {
    map: HashMap<K, (V, usize)>,
    /// Insertion order. May hold keys already removed from `map` (removal is lazy); compacted
    /// when it grows past twice the live entries.
    order: VecDeque<K>,
    weight: usize,
    max_len: usize,
    max_weight: usize,
}

impl<K: Eq + Hash + Clone, V> FifoMap<K, V> {
    /// A map of at most `max_len` (at least 1) entries, unweighted.
    pub fn new(max_len: usize) -> Self {
        FifoMap::weighted(max_len, usize::MAX)
    }

    /// A map of at most `max_len` (at least 1) entries and `max_weight` total weight.
    pub fn weighted(max_len: usize, max_weight: usize) -> Self {
        let max_len = max_len.max(1);
        FifoMap {
            map: HashMap::with_capacity(max_len.min(1 << 16)),
            order: VecDeque::with_capacity(max_len.min(1 << 16)),
            weight: 0,
            max_len,
            max_weight,
        }
    }

    /// Inserts or replaces (weight 0); returns the entry forgotten to make room, if any.
    pub fn insert(&mut self, key: K, value: V) -> Option<(K, V)> {
        let mut evicted = None;
        self.insert_weighted_with(key, value, 0, |k, v| evicted = Some((k, v)));
        evicted
    }

    /// Inserts or replaces an entry of `weight`; returns the entries evicted to make room,
    /// oldest first. An entry heavier than `max_weight` is not stored (and nothing is evicted).
    pub fn insert_weighted(&mut self, key: K, value: V, weight: usize) -> Vec<(K, V)> {
        let mut evicted = Vec::new();
        self.insert_weighted_with(key, value, weight, |k, v| evicted.push((k, v)));
        evicted
    }

    /// [`FifoMap::insert_weighted`], each evicted entry handed to `evicted`. Returns whether
    /// the entry is stored.
    pub fn insert_weighted_with(
        &mut self,
        key: K,
        value: V,
        weight: usize,
        mut evicted: impl FnMut(K, V),
    ) -> bool {
        if weight > self.max_weight {
            return false;
        }
        if let Some((v, w)) = self.map.get_mut(&key) {
            *v = value;
            self.weight = self.weight - *w + weight;
            *w = weight;
        } else {
            while self.map.len() >= self.max_len {
                match self.pop_oldest() {
                    Some((k, v)) => evicted(k, v),
                    None => break,
                }
            }
            self.weight += weight;
            self.map.insert(key.clone(), (value, weight));
            self.order.push_back(key.clone());
        }
        while self.weight > self.max_weight {
            match self.pop_oldest_except(&key) {
                Some((k, v)) => evicted(k, v),
                None => break,
            }
        }
        true
    }

    /// Evicts the oldest entries until one more entry of `weight` fits both bounds, handing
    /// each to `evicted` (a caller that reuses evicted buffers).
    pub fn make_room(&mut self, weight: usize, mut evicted: impl FnMut(K, V)) {
        while !self.map.is_empty()
            && (self.map.len() >= self.max_len
                || self.weight.saturating_add(weight) > self.max_weight)
        {
            match self.pop_oldest() {
                Some((k, v)) => evicted(k, v),
                None => break,
            }
        }
    }

    /// Makes room for `extra` more weight on the entry `keep` (which grows in place): evicts
    /// the oldest other entries, handing each to `evicted`, then adds `extra` to `keep`'s
    /// weight. Returns false, changing nothing of `keep`, if `keep` is not there or would
    /// exceed the bound alone.
    pub fn grow(&mut self, keep: &K, extra: usize, mut evicted: impl FnMut(K, V)) -> bool {
        let Some(&(_, w)) = self.map.get(keep) else {
            return false;
        };
        if w.saturating_add(extra) > self.max_weight {
            return false;
        }
        while self.weight.saturating_add(extra) > self.max_weight {
            match self.pop_oldest_except(keep) {
                Some((k, v)) => evicted(k, v),
                None => break,
            }
        }
        if let Some((_, w)) = self.map.get_mut(keep) {
            *w += extra;
            self.weight += extra;
        }
        true
    }

    /// The weight bound.
    pub fn max_weight(&self) -> usize {
        self.max_weight
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key).map(|(v, _)| v)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key).map(|(v, _)| v)
    }

    pub fn contains(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    /// Removes an entry (its place in the order is dropped lazily).
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let (v, w) = self.map.remove(key)?;
        self.weight -= w;
        if self.order.len() > 2 * self.map.len() + 16 {
            let map = &self.map;
            self.order.retain(|k| map.contains_key(k));
        }
        Some(v)
    }

    /// Removes and returns the oldest entry.
    pub fn pop_oldest(&mut self) -> Option<(K, V)> {
        while let Some(k) = self.order.pop_front() {
            if let Some((v, w)) = self.map.remove(&k) {
                self.weight -= w;
                return Some((k, v));
            }
        }
        None
    }

    /// The oldest entry other than `keep` (removed), for making room by weight.
    fn pop_oldest_except(&mut self, keep: &K) -> Option<(K, V)> {
        let at = self
            .order
            .iter()
            .position(|k| k != keep && self.map.contains_key(k))?;
        let k = self.order.remove(at)?;
        let (v, w) = self.map.remove(&k)?;
        self.weight -= w;
        Some((k, v))
    }

    /// The oldest entry, without removing it.
    pub fn oldest(&self) -> Option<(&K, &V)> {
        self.order
            .iter()
            .find_map(|k| self.map.get_key_value(k).map(|(k, (v, _))| (k, v)))
    }

    /// Live entries, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.order
            .iter()
            .filter_map(|k| self.map.get(k).map(|(v, _)| (k, v)))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The entry bound.
    pub fn capacity(&self) -> usize {
        self.max_len
    }

    /// The live entries' total weight.
    pub fn weight(&self) -> usize {
        self.weight
    }
}

/// A set of at most `max_len` keys.
#[derive(Debug)]
pub struct FifoSet<K>(FifoMap<K, ()>);

impl<K: Eq + Hash + Clone> FifoSet<K> {
    pub fn new(max_len: usize) -> Self {
        FifoSet(FifoMap::new(max_len))
    }

    /// Returns true if the key was new.
    pub fn insert(&mut self, key: K) -> bool {
        if self.0.contains(&key) {
            return false;
        }
        self.0.insert(key, ());
        true
    }

    pub fn contains(&self, key: &K) -> bool {
        self.0.contains(key)
    }

    pub fn remove(&mut self, key: &K) -> bool {
        self.0.remove(key).is_some()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_the_oldest_when_full() {
        let mut m = FifoMap::new(3);
        for i in 0..3 {
            assert_eq!(m.insert(i, i * 10), None);
        }
        assert_eq!(m.insert(1, 11), None, "replacing keeps the size");
        assert_eq!(m.insert(3, 30), Some((0, 0)));
        assert_eq!(m.len(), 3);
        assert!(!m.contains(&0));
        assert_eq!(m.get(&1), Some(&11));
        assert_eq!(m.oldest(), Some((&1, &11)));
        assert_eq!(m.pop_oldest(), Some((1, 11)));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn evicts_oldest_by_count_and_weight() {
        let mut m = FifoMap::weighted(3, 100);
        assert!(m.insert_weighted(1, 'a', 10).is_empty());
        assert!(m.insert_weighted(2, 'b', 10).is_empty());
        assert!(m.insert_weighted(3, 'c', 10).is_empty());
        assert_eq!(m.insert_weighted(4, 'd', 10), vec![(1, 'a')]);
        assert_eq!(m.insert_weighted(5, 'e', 75), vec![(2, 'b')]);
        assert_eq!(m.insert_weighted(6, 'f', 20), vec![(3, 'c'), (4, 'd')]);
        assert_eq!(m.len(), 2);
        assert_eq!(m.weight(), 95);
        assert!(
            m.insert_weighted(7, 'g', 101).is_empty(),
            "too heavy: not stored"
        );
        assert!(!m.contains(&7));
        assert_eq!(m.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![5, 6]);
        // Replacing keeps the place and re-weighs; what no longer fits goes, oldest first.
        assert_eq!(m.insert_weighted(6, 'F', 30), vec![(5, 'e')]);
        assert_eq!((m.len(), m.weight(), m.get(&6)), (1, 30, Some(&'F')));
    }

    #[test]
    fn an_entry_grows_in_place_evicting_others_but_never_past_the_bound() {
        let mut m = FifoMap::weighted(10, 100);
        m.insert_weighted(1, 'a', 40);
        m.insert_weighted(2, 'b', 30);
        m.insert_weighted(3, 'c', 20);
        let mut gone = Vec::new();
        assert!(m.grow(&2, 50, |k, v| gone.push((k, v))));
        assert_eq!(gone, vec![(1, 'a')], "the oldest other entry");
        assert_eq!((m.weight(), m.len()), (100, 2));
        assert_eq!(
            m.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            vec![2, 3],
            "2 kept its place"
        );
        assert!(
            !m.grow(&2, 21, |_, _| panic!("nothing evicted")),
            "alone over the bound"
        );
        assert!(
            !m.grow(&9, 1, |_, _| panic!("nothing evicted")),
            "not there"
        );
        assert_eq!(m.weight(), 100);
    }

    #[test]
    fn lazy_removal_stays_bounded() {
        let mut s = FifoSet::new(4);
        for i in 0..10_000u32 {
            assert!(s.insert(i));
            assert!(s.remove(&i));
        }
        assert_eq!(s.len(), 0);
        assert!(s.0.order.len() <= 2 * 4 + 16 + 1);
        for i in 0..10u32 {
            s.insert(i);
        }
        assert_eq!(s.len(), 4);
        assert!(s.contains(&9) && !s.contains(&5));
    }
}
