//! Bounded first-in-first-out sets and maps: what the node peer remembers (IDs the node knows,
//! requests in flight, transactions kept to serve `getdata`) must not grow with what the node
//! sends. The oldest entries go first.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// A map holding at most `max_len` entries and `max_weight` total weight; inserting past either
/// bound evicts the oldest entries.
#[derive(Debug)]
pub(crate) struct FifoMap<K, V> {
    map: HashMap<K, (V, usize)>,
    /// Insertion order. May hold keys already removed from `map` (removal is lazy); compacted
    /// when it grows past twice the live entries.
    order: VecDeque<K>,
    weight: usize,
    max_len: usize,
    max_weight: usize,
}

impl<K: Hash + Eq + Clone, V> FifoMap<K, V> {
    pub(crate) fn new(max_len: usize, max_weight: usize) -> Self {
        FifoMap {
            map: HashMap::new(),
            order: VecDeque::new(),
            weight: 0,
            max_len: max_len.max(1),
            max_weight,
        }
    }

    /// Insert (an existing key keeps its place and value: first writer wins). Returns the
    /// entries evicted to make room. An entry heavier than `max_weight` is not stored.
    pub(crate) fn insert(&mut self, key: K, value: V, weight: usize) -> Vec<(K, V)> {
        let mut evicted = Vec::new();
        if self.map.contains_key(&key) || weight > self.max_weight {
            return evicted;
        }
        while self.map.len() >= self.max_len || self.weight + weight > self.max_weight {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((v, w)) = self.map.remove(&old) {
                self.weight -= w;
                evicted.push((old, v));
            }
        }
        self.weight += weight;
        self.map.insert(key.clone(), (value, weight));
        self.order.push_back(key);
        evicted
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key).map(|(v, _)| v)
    }

    pub(crate) fn contains(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let (v, w) = self.map.remove(key)?;
        self.weight -= w;
        if self.order.len() > 2 * self.map.len() + 16 {
            let map = &self.map;
            self.order.retain(|k| map.contains_key(k));
        }
        Some(v)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Live entries, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.order
            .iter()
            .filter_map(|k| self.map.get(k).map(|(v, _)| (k, v)))
    }
}

/// A set of at most `max_len` keys.
#[derive(Debug)]
pub(crate) struct FifoSet<K>(FifoMap<K, ()>);

impl<K: Hash + Eq + Clone> FifoSet<K> {
    pub(crate) fn new(max_len: usize) -> Self {
        FifoSet(FifoMap::new(max_len, usize::MAX))
    }

    /// Returns true if the key was new.
    pub(crate) fn insert(&mut self, key: K) -> bool {
        if self.0.contains(&key) {
            return false;
        }
        self.0.insert(key, (), 0);
        true
    }

    pub(crate) fn contains(&self, key: &K) -> bool {
        self.0.contains(key)
    }

    pub(crate) fn remove(&mut self, key: &K) -> bool {
        self.0.remove(key).is_some()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_by_count_and_weight() {
        let mut m = FifoMap::new(3, 100);
        assert!(m.insert(1, 'a', 10).is_empty());
        assert!(m.insert(2, 'b', 10).is_empty());
        assert!(m.insert(3, 'c', 10).is_empty());
        assert_eq!(m.insert(4, 'd', 10), vec![(1, 'a')]);
        assert_eq!(m.insert(5, 'e', 75), vec![(2, 'b')]);
        assert_eq!(m.insert(6, 'f', 20), vec![(3, 'c'), (4, 'd')]);
        assert_eq!(m.len(), 2);
        assert!(m.insert(7, 'g', 101).is_empty(), "too heavy: not stored");
        assert!(!m.contains(&7));
        assert_eq!(m.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![5, 6]);
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
