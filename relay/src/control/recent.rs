//! Bounded first-in-first-out memories for the control path: what was seen recently, in fixed
//! memory, the oldest forgotten first.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// A map that holds at most `capacity` entries; inserting into a full map forgets the oldest
/// insertion. Re-inserting a key keeps its original position (FIFO, not LRU: cheap, and
/// enough for "this transaction / stream was seen in the last N").
#[derive(Debug)]
pub struct FifoMap<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V> FifoMap<K, V> {
    /// A map of at most `capacity` (at least 1) entries.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        FifoMap {
            map: HashMap::with_capacity(capacity.min(1 << 16)),
            order: VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity,
        }
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key)
    }

    pub fn contains(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    /// Inserts or replaces; returns the entry forgotten to make room, if any.
    pub fn insert(&mut self, key: K, value: V) -> Option<(K, V)> {
        if let Some(v) = self.map.get_mut(&key) {
            *v = value;
            return None;
        }
        let mut evicted = None;
        if self.map.len() >= self.capacity {
            evicted = self.pop_oldest();
        }
        self.order.push_back(key.clone());
        self.map.insert(key, value);
        evicted
    }

    /// Removes and returns the oldest entry.
    pub fn pop_oldest(&mut self) -> Option<(K, V)> {
        while let Some(k) = self.order.pop_front() {
            if let Some(v) = self.map.remove(&k) {
                return Some((k, v));
            }
        }
        None
    }

    /// The oldest entry, without removing it.
    pub fn oldest(&self) -> Option<(&K, &V)> {
        self.order.iter().find_map(|k| self.map.get_key_value(k))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
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
}
