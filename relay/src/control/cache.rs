//! The repair cache: recent block fragments, kept to answer repair requests (§2.7).
//!
//! Keyed by (stream, fragment type, index), bounded both in fragments and in bytes, oldest
//! first out. Generic over the buffer: the socket backend stores the datagram bytes (a `Vec`
//! whose allocation is reused for the next insertion once the cache is full, so a steady state
//! allocates nothing); a DPDK control core can store a refcounted mbuf reference instead
//! (zero-copy), since only `AsRef<[u8]>` is needed to answer.

use std::collections::{HashMap, VecDeque};

use photon_protocol::wire::{FragmentKind, Packet};

/// Which fragment: the same key the dedup uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub stream: u64,
    pub kind: FragmentKind,
    pub index: u16,
}

/// A bounded FIFO of fragments.
#[derive(Debug)]
pub struct RepairCache<B> {
    map: HashMap<CacheKey, B>,
    order: VecDeque<CacheKey>,
    max_fragments: usize,
    max_bytes: usize,
    bytes: usize,
    evicted: u64,
}

impl<B: AsRef<[u8]>> RepairCache<B> {
    /// A cache of at most `max_fragments` fragments and `max_bytes` bytes (each at least 1).
    pub fn new(max_fragments: usize, max_bytes: usize) -> Self {
        RepairCache {
            map: HashMap::with_capacity(max_fragments.min(1 << 16)),
            order: VecDeque::with_capacity(max_fragments.min(1 << 16)),
            max_fragments: max_fragments.max(1),
            max_bytes: max_bytes.max(1),
            bytes: 0,
            evicted: 0,
        }
    }

    /// The key of a datagram, if it is a block fragment (checked length, known type).
    pub fn key_of(datagram: &[u8]) -> Option<CacheKey> {
        let p = Packet::new_checked(datagram).ok()?;
        let kind = FragmentKind::from_msg_type(p.msg_type().ok()?)?;
        Some(CacheKey {
            stream: p.stream(),
            kind,
            index: p.index(),
        })
    }

    /// Makes room for `len` more bytes and one more fragment; returns one evicted buffer for
    /// reuse, if any was evicted.
    pub fn make_room(&mut self, len: usize) -> Option<B> {
        let mut spare = None;
        while !self.order.is_empty()
            && (self.map.len() >= self.max_fragments || self.bytes + len > self.max_bytes)
        {
            if let Some(old) = self.order.pop_front().and_then(|k| self.map.remove(&k)) {
                self.bytes -= old.as_ref().len();
                self.evicted += 1;
                spare = Some(old);
            }
        }
        spare
    }

    /// Stores `buf` under `key` unless the key is already cached (the first copy is kept: it is
    /// the one that was forwarded). Returns the buffer back if it was not stored.
    pub fn insert(&mut self, key: CacheKey, buf: B) -> Option<B> {
        let len = buf.as_ref().len();
        if self.map.contains_key(&key) || len > self.max_bytes {
            return Some(buf);
        }
        let spare = self.make_room(len);
        drop(spare);
        self.bytes += len;
        self.order.push_back(key);
        self.map.insert(key, buf);
        None
    }

    pub fn get(&self, key: &CacheKey) -> Option<&B> {
        self.map.get(key)
    }

    pub fn contains(&self, key: &CacheKey) -> bool {
        self.map.contains_key(key)
    }

    /// Fragments held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Fragments evicted so far to stay within the bounds.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

impl RepairCache<Vec<u8>> {
    /// Copies `datagram` in, reusing an evicted buffer's allocation when the cache is full.
    /// Returns whether it was stored (false: not a fragment, already cached, or too big).
    pub fn insert_copy(&mut self, datagram: &[u8]) -> bool {
        let Some(key) = Self::key_of(datagram) else {
            return false;
        };
        if self.map.contains_key(&key) || datagram.len() > self.max_bytes {
            return false;
        }
        let mut buf = self.make_room(datagram.len()).unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(datagram);
        self.insert(key, buf).is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use photon_protocol::wire::FragmentRepr;

    fn frag(stream: u64, index: u16, len: usize) -> Vec<u8> {
        let payload = vec![index as u8; len];
        let f = FragmentRepr {
            kind: FragmentKind::Repair,
            stream,
            index,
            count: 1000,
            k: 10,
            r: 1000,
            payload: &payload,
        };
        let mut buf = vec![0u8; f.buffer_len()];
        f.emit(7, 0, 0, &mut buf).unwrap();
        buf
    }

    fn key(stream: u64, index: u16) -> CacheKey {
        CacheKey {
            stream,
            kind: FragmentKind::Repair,
            index,
        }
    }

    #[test]
    fn bounded_in_fragments_oldest_out() {
        let mut c = RepairCache::new(4, 1 << 20);
        for i in 0..10 {
            assert!(c.insert_copy(&frag(1, i, 100)));
        }
        assert_eq!(c.len(), 4);
        assert_eq!(c.evicted(), 6);
        assert!(!c.contains(&key(1, 5)));
        for i in 6..10 {
            assert_eq!(c.get(&key(1, i)).unwrap(), &frag(1, i, 100));
        }
        assert!(!c.insert_copy(&frag(1, 9, 100)), "first copy kept");
        assert!(!c.insert_copy(b"not a fragment"));
    }

    #[test]
    fn bounded_in_bytes() {
        let one = frag(2, 0, 1000).len();
        let mut c = RepairCache::new(1000, 3 * one);
        for i in 0..20 {
            c.insert_copy(&frag(2, i, 1000));
            assert!(c.bytes() <= 3 * one);
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.bytes(), 3 * one);
        assert!(c.contains(&key(2, 19)) && !c.contains(&key(2, 16)));
    }
}
