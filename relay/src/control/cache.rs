//! The repair cache: recent block fragments, kept to answer repair requests (§2.7).
//!
//! Keyed by (stream, fragment type, index), bounded both in fragments and in bytes, oldest
//! first out. Generic over the buffer ([`FragmentBuf`]): the socket backend stores the datagram
//! bytes (a `Vec` whose allocation is reused for the next insertion once the cache is full, so
//! a steady state allocates nothing); the DPDK control core stores what the data cores handed
//! over: a small mbuf holding the Photon header chained in front of the received payload
//! buffer, shared by refcount with the forwarded copies (zero-copy; evicting frees it). The
//! control path keeps both in one cache as [`Stored`].

#[cfg(feature = "dpdk")]
use photon_dpdk::Mbuf;
use photon_protocol::fifo::FifoMap;
use photon_protocol::wire::{FragmentKind, Packet, HEADER_LEN, MAGIC, VERSION};

/// What a repair cache can hold: a fragment datagram, possibly in segments.
pub trait FragmentBuf {
    /// Bytes of the whole datagram (what the byte bound counts).
    fn byte_len(&self) -> usize;
    /// The whole datagram, copied into `out` (cleared first).
    fn copy_to(&self, out: &mut Vec<u8>);
}

impl FragmentBuf for Vec<u8> {
    fn byte_len(&self) -> usize {
        self.len()
    }
    fn copy_to(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(self);
    }
}

#[cfg(feature = "dpdk")]
impl FragmentBuf for Mbuf {
    fn byte_len(&self) -> usize {
        self.pkt_len()
    }
    fn copy_to(&self, out: &mut Vec<u8>) {
        out.clear();
        for seg in self.segments_data() {
            out.extend_from_slice(seg);
        }
    }
}

/// A cached fragment: bytes (socket backend) or an mbuf chain (DPDK backend).
#[derive(Debug)]
pub enum Stored {
    Bytes(Vec<u8>),
    #[cfg(feature = "dpdk")]
    Mbuf(Mbuf),
}

impl FragmentBuf for Stored {
    fn byte_len(&self) -> usize {
        match self {
            Stored::Bytes(b) => b.byte_len(),
            #[cfg(feature = "dpdk")]
            Stored::Mbuf(m) => m.byte_len(),
        }
    }
    fn copy_to(&self, out: &mut Vec<u8>) {
        match self {
            Stored::Bytes(b) => b.copy_to(out),
            #[cfg(feature = "dpdk")]
            Stored::Mbuf(m) => m.copy_to(out),
        }
    }
}

/// Which fragment: the same key the dedup uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub stream: u64,
    pub kind: FragmentKind,
    pub index: u16,
}

/// A bounded FIFO of fragments ([`FifoMap`], weighted by bytes).
#[derive(Debug)]
pub struct RepairCache<B> {
    fifo: FifoMap<CacheKey, B>,
    evicted: u64,
}

impl<B: FragmentBuf> RepairCache<B> {
    /// A cache of at most `max_fragments` fragments and `max_bytes` bytes (each at least 1).
    pub fn new(max_fragments: usize, max_bytes: usize) -> Self {
        RepairCache {
            fifo: FifoMap::weighted(max_fragments, max_bytes.max(1)),
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

    /// The key of a fragment from its Photon header alone (`header` holds at least the
    /// [`HEADER_LEN`] header bytes, the payload may be elsewhere: the first segment of a cached
    /// mbuf chain). Checks the magic, version and type, not the announced length.
    pub fn key_of_header(header: &[u8]) -> Option<CacheKey> {
        let h = header.get(..HEADER_LEN)?;
        let p = Packet::new_unchecked(h);
        if p.magic() != MAGIC || p.version() != VERSION {
            return None;
        }
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
        let evicted = &mut self.evicted;
        self.fifo.make_room(len, |_, old| {
            *evicted += 1;
            spare = Some(old);
        });
        spare
    }

    /// Stores `buf` under `key` unless the key is already cached (the first copy is kept: it is
    /// the one that was forwarded). Returns the buffer back if it was not stored.
    pub fn insert(&mut self, key: CacheKey, buf: B) -> Option<B> {
        let len = buf.byte_len();
        if self.fifo.contains(&key) || len > self.fifo.max_weight() {
            return Some(buf);
        }
        drop(self.make_room(len));
        self.fifo.insert_weighted_with(key, buf, len, |_, _| {});
        None
    }

    pub fn get(&self, key: &CacheKey) -> Option<&B> {
        self.fifo.get(key)
    }

    pub fn contains(&self, key: &CacheKey) -> bool {
        self.fifo.contains(key)
    }

    /// Fragments held.
    pub fn len(&self) -> usize {
        self.fifo.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fifo.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.fifo.weight()
    }

    /// Fragments evicted so far to stay within the bounds.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Whether `len` bytes could be cached at all.
    fn fits(&self, len: usize) -> bool {
        len <= self.fifo.max_weight()
    }
}

impl RepairCache<Vec<u8>> {
    /// Copies `datagram` in, reusing an evicted buffer's allocation when the cache is full.
    /// Returns whether it was stored (false: not a fragment, already cached, or too big).
    pub fn insert_copy(&mut self, datagram: &[u8]) -> bool {
        let Some(key) = Self::key_of(datagram) else {
            return false;
        };
        if self.contains(&key) || !self.fits(datagram.len()) {
            return false;
        }
        let mut buf = self.make_room(datagram.len()).unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(datagram);
        self.insert(key, buf).is_none()
    }
}

impl RepairCache<Stored> {
    /// Copies `datagram` in, as `RepairCache<Vec<u8>>::insert_copy` does, for the control
    /// path's mixed cache: reuses an evicted byte buffer's allocation (an evicted mbuf is
    /// freed).
    pub fn insert_datagram(&mut self, datagram: &[u8]) -> bool {
        let Some(key) = Self::key_of(datagram) else {
            return false;
        };
        if self.contains(&key) || !self.fits(datagram.len()) {
            return false;
        }
        let mut buf = match self.make_room(datagram.len()) {
            Some(Stored::Bytes(b)) => b,
            _ => Vec::new(),
        };
        buf.clear();
        buf.extend_from_slice(datagram);
        self.insert(key, Stored::Bytes(buf)).is_none()
    }

    /// Stores an mbuf chain whose first segment starts with the fragment's Photon header (as
    /// the DPDK data cores hand them over). Returns whether it was stored; if not, the chain
    /// is dropped (freed) here.
    #[cfg(feature = "dpdk")]
    pub fn insert_mbuf(&mut self, m: Mbuf) -> bool {
        let Some(key) = Self::key_of_header(m.data()) else {
            return false;
        };
        self.insert(key, Stored::Mbuf(m)).is_none()
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
        let mut c: RepairCache<Vec<u8>> = RepairCache::new(4, 1 << 20);
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
        let mut c: RepairCache<Stored> = RepairCache::new(1000, 3 * one);
        for i in 0..20 {
            c.insert_datagram(&frag(2, i, 1000));
            assert!(c.bytes() <= 3 * one);
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.bytes(), 3 * one);
        assert!(c.contains(&key(2, 19)) && !c.contains(&key(2, 16)));
    }
}
