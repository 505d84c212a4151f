//! Store-and-forward, sans-IO: hold each block stream's fragments until the relay holds enough
//! to rebuild the block (K shards and every manifest fragment), then let them all go, in
//! arrival order. A measurement baseline (`[relay] forwarding = "store-and-forward"`), never
//! the default. Bounded (streams, bytes, timeout) and never drops: an overflow or timeout
//! releases early (counted). Generic over the held frame, so both backends run it through
//! [`crate::forward::sequence::Forwarder`]. Design: `docs/internals/relay.md`.

use std::collections::{HashMap, VecDeque};

use photon_protocol::fifo::FifoSet;

use photon_protocol::wire::FragmentKind;

/// `[relay] forwarding`: how the relay forwards block fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Forwarding {
    /// Each admitted fragment is fanned out as it arrives (the relay's design).
    #[default]
    CutThrough,
    /// Fragments are held per stream until the block could be rebuilt (baseline).
    StoreAndForward,
}

impl Forwarding {
    /// The config spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Forwarding::CutThrough => "cut-through",
            Forwarding::StoreAndForward => "store-and-forward",
        }
    }
}

impl std::str::FromStr for Forwarding {
    type Err = String;
    fn from_str(s: &str) -> Result<Forwarding, String> {
        match s {
            "cut-through" => Ok(Forwarding::CutThrough),
            "store-and-forward" => Ok(Forwarding::StoreAndForward),
            other => Err(format!(
                "unknown forwarding mode {other:?}: expected \"cut-through\" or \"store-and-forward\""
            )),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Forwarding {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Forwarding, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Bounds of a [`Holder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldLimits {
    /// Streams held at once (>= 1).
    pub max_streams: usize,
    /// Datagram bytes held at once, all streams together (>= 1).
    pub max_bytes: usize,
    /// A stream is released incomplete this long after its first fragment (caller's unit).
    pub timeout: u64,
}

/// What the holder needs to know about one admitted fragment (from its Photon header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldMeta {
    pub stream: u64,
    pub kind: FragmentKind,
    /// The header's `count` (manifest fragments: how many the stream has).
    pub count: u16,
    /// The header's K: shards needed to rebuild the block.
    pub k: u16,
    /// Bytes this fragment costs (the datagram length).
    pub bytes: usize,
}

/// Counts of what the holder did, for the caller's counters (cumulative).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HoldStats {
    /// Fragments taken and held.
    pub held: u64,
    /// Held fragments released (queued for forwarding).
    pub released: u64,
    /// Streams released complete.
    pub streams_complete: u64,
    /// Streams released incomplete after the timeout.
    pub streams_timeout: u64,
    /// Streams released incomplete to stay within the bounds.
    pub streams_overflow: u64,
}

/// Why a stream was released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Complete,
    Timeout,
    Overflow,
}

struct Slot<F> {
    stream: u64,
    /// Arrival time of the first fragment.
    since: u64,
    k: u16,
    shards: u16,
    /// Manifest fragments expected (0: no manifest fragment seen yet).
    manifest_count: u16,
    manifests: u16,
    bytes: usize,
    frames: Vec<F>,
}

/// Per-stream holding state. See the module documentation.
pub struct Holder<F> {
    limits: HoldLimits,
    slots: Vec<Slot<F>>,
    free: Vec<usize>,
    /// Held stream → slot.
    index: HashMap<u64, usize>,
    /// Held streams, oldest first (slot indices; a released slot is skipped lazily).
    order: VecDeque<(u64, usize)>,
    /// Recently released streams (FIFO-bounded).
    released: FifoSet<u64>,
    bytes: usize,
    ready: VecDeque<F>,
    stats: HoldStats,
}

impl<F> std::fmt::Debug for Holder<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holder")
            .field("limits", &self.limits)
            .field("streams", &self.index.len())
            .field("bytes", &self.bytes)
            .field("ready", &self.ready.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl<F> Holder<F> {
    /// A holder within `limits` (bounds of 0 are taken as 1).
    pub fn new(limits: HoldLimits) -> Holder<F> {
        let max_streams = limits.max_streams.max(1);
        let limits = HoldLimits {
            max_streams,
            max_bytes: limits.max_bytes.max(1),
            timeout: limits.timeout,
        };
        let released_cap = max_streams.saturating_mul(4);
        Holder {
            limits,
            slots: (0..max_streams)
                .map(|_| Slot {
                    stream: 0,
                    since: 0,
                    k: 0,
                    shards: 0,
                    manifest_count: 0,
                    manifests: 0,
                    bytes: 0,
                    frames: Vec::new(),
                })
                .collect(),
            free: (0..max_streams).rev().collect(),
            index: HashMap::with_capacity(max_streams),
            order: VecDeque::with_capacity(2 * max_streams + 1),
            released: FifoSet::new(released_cap),
            bytes: 0,
            ready: VecDeque::new(),
            stats: HoldStats::default(),
        }
    }

    /// Offers one admitted fragment at time `now`. Returns it back when it is to be forwarded
    /// straight away (its stream was released before); otherwise it is held, and every frame
    /// this call released (possibly including it) waits in [`Holder::pop_ready`], in order.
    pub fn offer(&mut self, meta: &HoldMeta, frame: F, now: u64) -> Option<F> {
        if self.released.contains(&meta.stream) {
            return Some(frame);
        }
        let slot = match self.index.get(&meta.stream) {
            Some(&s) => s,
            None => {
                if self.free.is_empty() {
                    self.release_oldest();
                }
                // release_oldest freed a slot (max_streams >= 1 and every slot in use is in
                // `order`); the fallback keeps this panic-free regardless.
                let Some(s) = self.free.pop() else {
                    return Some(frame);
                };
                let sl = &mut self.slots[s];
                sl.stream = meta.stream;
                sl.since = now;
                sl.k = 0;
                sl.shards = 0;
                sl.manifest_count = 0;
                sl.manifests = 0;
                sl.bytes = 0;
                self.index.insert(meta.stream, s);
                if self.order.len() >= 2 * self.limits.max_streams {
                    // Entries of streams released early (complete) linger until they reach
                    // the front: compact so the queue stays within its preallocated size.
                    let index = &self.index;
                    self.order.retain(|(st, sl)| index.get(st) == Some(sl));
                }
                self.order.push_back((meta.stream, s));
                s
            }
        };
        // Make room in bytes, oldest other streams first.
        while self.bytes + meta.bytes > self.limits.max_bytes {
            match self.oldest_other(slot) {
                Some(s) => self.release(s, Why::Overflow),
                None => break,
            }
        }
        let sl = &mut self.slots[slot];
        match meta.kind {
            FragmentKind::Source | FragmentKind::Repair => {
                sl.k = meta.k;
                sl.shards = sl.shards.saturating_add(1);
            }
            FragmentKind::Manifest => {
                sl.k = meta.k;
                sl.manifest_count = meta.count;
                sl.manifests = sl.manifests.saturating_add(1);
            }
        }
        sl.frames.push(frame);
        sl.bytes += meta.bytes;
        self.bytes += meta.bytes;
        self.stats.held += 1;
        let complete = sl.k > 0
            && sl.shards >= sl.k
            && sl.manifest_count > 0
            && sl.manifests >= sl.manifest_count;
        if complete {
            self.release(slot, Why::Complete);
        } else if self.bytes > self.limits.max_bytes {
            // This stream alone is over the byte bound: let it go.
            self.release(slot, Why::Overflow);
        }
        None
    }

    /// Releases every stream held since `now - timeout` or earlier. Returns how many.
    pub fn expire(&mut self, now: u64) -> usize {
        let mut n = 0;
        while let Some(&(stream, s)) = self.order.front() {
            if self.index.get(&stream) != Some(&s) {
                self.order.pop_front();
                continue;
            }
            if now.saturating_sub(self.slots[s].since) < self.limits.timeout {
                break;
            }
            self.release(s, Why::Timeout);
            n += 1;
        }
        n
    }

    /// The next released frame to forward, in release order.
    pub fn pop_ready(&mut self) -> Option<F> {
        self.ready.pop_front()
    }

    /// Whether released frames wait (one branch for the driver's fast path).
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Streams held now.
    pub fn streams(&self) -> usize {
        self.index.len()
    }

    /// Datagram bytes held now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// What the holder did so far.
    pub fn stats(&self) -> HoldStats {
        self.stats
    }

    /// Drops everything held and queued (shutdown); returns how many frames that was.
    pub fn clear(&mut self) -> usize {
        let mut n = self.ready.len();
        self.ready.clear();
        for (_, s) in self.index.drain() {
            n += self.slots[s].frames.len();
            self.slots[s].frames.clear();
            self.free.push(s);
        }
        self.order.clear();
        self.bytes = 0;
        n
    }

    fn oldest_other(&mut self, except: usize) -> Option<usize> {
        // Skip stale entries at the front; look past `except` without removing it.
        while let Some(&(stream, s)) = self.order.front() {
            if self.index.get(&stream) == Some(&s) {
                break;
            }
            self.order.pop_front();
        }
        self.order
            .iter()
            .find(|&&(stream, s)| s != except && self.index.get(&stream) == Some(&s))
            .map(|&(_, s)| s)
    }

    fn release_oldest(&mut self) {
        while let Some((stream, s)) = self.order.pop_front() {
            if self.index.get(&stream) == Some(&s) {
                self.release(s, Why::Overflow);
                return;
            }
        }
    }

    fn release(&mut self, s: usize, why: Why) {
        let sl = &mut self.slots[s];
        let stream = sl.stream;
        self.index.remove(&stream);
        self.bytes -= sl.bytes;
        sl.bytes = 0;
        self.stats.released += sl.frames.len() as u64;
        self.ready.extend(sl.frames.drain(..));
        self.free.push(s);
        match why {
            Why::Complete => self.stats.streams_complete += 1,
            Why::Timeout => self.stats.streams_timeout += 1,
            Why::Overflow => self.stats.streams_overflow += 1,
        }
        self.released.insert(stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(stream: u64, kind: FragmentKind, count: u16, k: u16) -> HoldMeta {
        HoldMeta {
            stream,
            kind,
            count,
            k,
            bytes: 100,
        }
    }

    fn limits() -> HoldLimits {
        HoldLimits {
            max_streams: 4,
            max_bytes: 100_000,
            timeout: 1000,
        }
    }

    fn drain<F>(h: &mut Holder<F>) -> Vec<F> {
        std::iter::from_fn(|| h.pop_ready()).collect()
    }

    #[test]
    fn holds_until_k_shards_and_every_manifest_fragment_then_in_arrival_order() {
        let mut h = Holder::new(limits());
        // K = 3, R = 2, manifest of 2 fragments. Arrival: m0, s0, r1, s2, (complete at m1).
        assert_eq!(
            h.offer(&meta(7, FragmentKind::Manifest, 2, 3), "m0", 0),
            None
        );
        assert_eq!(h.offer(&meta(7, FragmentKind::Source, 3, 3), "s0", 1), None);
        assert_eq!(h.offer(&meta(7, FragmentKind::Repair, 2, 3), "r1", 2), None);
        assert_eq!(h.offer(&meta(7, FragmentKind::Source, 3, 3), "s2", 3), None);
        assert!(!h.has_ready(), "3 shards but one manifest fragment missing");
        assert_eq!(h.streams(), 1);
        assert_eq!(h.bytes(), 400);
        assert_eq!(
            h.offer(&meta(7, FragmentKind::Manifest, 2, 3), "m1", 4),
            None
        );
        assert_eq!(drain(&mut h), ["m0", "s0", "r1", "s2", "m1"]);
        assert_eq!((h.streams(), h.bytes()), (0, 0));
        // Later fragments of the stream go straight through.
        assert_eq!(
            h.offer(&meta(7, FragmentKind::Repair, 2, 3), "r0", 5),
            Some("r0")
        );
        let s = h.stats();
        assert_eq!((s.held, s.released, s.streams_complete), (5, 5, 1));
    }

    #[test]
    fn shards_alone_never_complete_a_stream_without_its_manifest() {
        let mut h = Holder::new(limits());
        for i in 0..10 {
            assert_eq!(h.offer(&meta(1, FragmentKind::Source, 2, 2), i, 0), None);
        }
        assert!(!h.has_ready());
        assert_eq!(h.offer(&meta(1, FragmentKind::Manifest, 1, 2), 99, 0), None);
        assert_eq!(drain(&mut h).len(), 11);
    }

    #[test]
    fn streams_are_independent() {
        let mut h = Holder::new(limits());
        h.offer(&meta(1, FragmentKind::Manifest, 1, 1), "a-m", 0);
        h.offer(&meta(2, FragmentKind::Manifest, 1, 1), "b-m", 0);
        h.offer(&meta(2, FragmentKind::Source, 1, 1), "b-s", 0);
        assert_eq!(drain(&mut h), ["b-m", "b-s"]);
        h.offer(&meta(1, FragmentKind::Repair, 1, 1), "a-r", 0);
        assert_eq!(drain(&mut h), ["a-m", "a-r"]);
    }

    #[test]
    fn timeout_releases_incomplete_streams_oldest_first() {
        let mut h = Holder::new(limits());
        h.offer(&meta(1, FragmentKind::Source, 5, 5), "a", 0);
        h.offer(&meta(2, FragmentKind::Source, 5, 5), "b", 500);
        h.offer(&meta(1, FragmentKind::Source, 5, 5), "a2", 600);
        assert_eq!(h.expire(999), 0);
        assert_eq!(h.expire(1000), 1);
        assert_eq!(drain(&mut h), ["a", "a2"]);
        assert_eq!(h.expire(1500), 1);
        assert_eq!(drain(&mut h), ["b"]);
        assert_eq!(h.stats().streams_timeout, 2);
        // A released stream's fragments then pass straight.
        assert_eq!(
            h.offer(&meta(1, FragmentKind::Source, 5, 5), "a3", 2000),
            Some("a3")
        );
    }

    #[test]
    fn too_many_streams_release_the_oldest() {
        let mut h = Holder::new(limits());
        for s in 0..4u64 {
            h.offer(&meta(s, FragmentKind::Source, 5, 5), s, s);
        }
        assert!(!h.has_ready());
        h.offer(&meta(9, FragmentKind::Source, 5, 5), 9, 9);
        assert_eq!(drain(&mut h), [0]);
        assert_eq!(h.streams(), 4);
        assert_eq!(h.stats().streams_overflow, 1);
    }

    #[test]
    fn byte_bound_releases_others_first_then_the_stream_itself() {
        let mut h = Holder::new(HoldLimits {
            max_bytes: 300,
            ..limits()
        });
        h.offer(&meta(1, FragmentKind::Source, 9, 9), "a0", 0);
        h.offer(&meta(1, FragmentKind::Source, 9, 9), "a1", 0);
        h.offer(&meta(2, FragmentKind::Source, 9, 9), "b0", 0);
        assert!(!h.has_ready());
        h.offer(&meta(2, FragmentKind::Source, 9, 9), "b1", 0);
        assert_eq!(drain(&mut h), ["a0", "a1"], "oldest other stream first");
        h.offer(&meta(2, FragmentKind::Source, 9, 9), "b2", 0);
        assert!(!h.has_ready(), "exactly at the bound");
        h.offer(&meta(2, FragmentKind::Source, 9, 9), "b3", 0);
        assert_eq!(drain(&mut h), ["b0", "b1", "b2", "b3"]);
        assert_eq!(h.bytes(), 0);
        assert_eq!(h.stats().streams_overflow, 2);
    }

    #[test]
    fn forgotten_released_streams_are_bounded_and_clear_drops_all() {
        let mut h = Holder::new(HoldLimits {
            max_streams: 1,
            ..limits()
        });
        for s in 0..100u64 {
            h.offer(&meta(s, FragmentKind::Manifest, 1, 1), s, 0);
            h.offer(&meta(s, FragmentKind::Source, 1, 1), s, 0);
        }
        assert!(
            h.released.len() <= 4,
            "the FifoSet holds at most its capacity (its order is bounded by its own test)"
        );
        assert_eq!(drain(&mut h).len(), 200);
        h.offer(&meta(1000, FragmentKind::Source, 2, 2), 1, 0);
        h.offer(&meta(1001, FragmentKind::Source, 2, 2), 2, 0);
        assert_eq!(h.clear(), 2, "one queued (overflow), one held");
        assert_eq!((h.streams(), h.bytes(), h.has_ready()), (0, 0, false));
    }

    #[test]
    fn forwarding_parses_only_the_two_modes() {
        assert_eq!("cut-through".parse(), Ok(Forwarding::CutThrough));
        assert_eq!("store-and-forward".parse(), Ok(Forwarding::StoreAndForward));
        let e = "store_and_forward".parse::<Forwarding>().unwrap_err();
        assert!(
            e.contains("store_and_forward") && e.contains("cut-through"),
            "{e}"
        );
    }
}
