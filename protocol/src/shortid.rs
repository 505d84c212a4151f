//! Transaction short IDs (docs/protocol.md §6.1) and the short ID → transaction store (§6.2).
//!
//! A relay gives every transaction it is the first to see a 32-bit short ID taken from its own
//! range of the ID space, in arrival order, as bloXroute's relays do. Ranges of different relays
//! never overlap, so a mesh of relays never hands out the same ID twice without coordination.
//! Gateways keep the IDs they learn in a [`TxStore`] and compress blocks against it
//! ([`crate::compress`]).

mod store;

pub use store::{Inserted, TxIds, TxStore, TxStoreConfig, TxStoreError, TxStoreStats};

use std::fmt;

/// A transaction's 32-bit short ID, as assigned by one relay from its [`ShortIdRange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShortId(pub u32);

impl fmt::Display for ShortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

/// Errors of the short ID allocator and its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShortIdError {
    /// A range must hold at least one ID.
    #[error("short ID range starting at {first:#010x} is empty: give it a length of at least 1")]
    EmptyRange { first: u32 },
    /// `first + len` runs past the 32-bit ID space.
    #[error("short ID range {first:#010x} + {len} runs past 0xffffffff: lower `first` or `len`")]
    RangeOverflow { first: u32, len: u64 },
    /// `relay_index` must be below `relay_count`, and `relay_count` at least 1.
    #[error("relay index {index} is not below the relay count {count}")]
    BadRelayIndex { index: u32, count: u32 },
    /// Every ID of the range was handed out and the allocator was told not to wrap.
    #[error("short ID range {first:#010x}+{len} is exhausted (wrap disabled): give this relay a bigger range")]
    Exhausted { first: u32, len: u64 },
}

/// A contiguous range of short IDs owned by one relay: `first .. first + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShortIdRange {
    first: u32,
    // u64 so that a range covering the whole 32-bit space (len 2^32) can be written.
    len: u64,
}

impl ShortIdRange {
    /// The range `first .. first + len`; `len` may be up to `2^32 - first`.
    pub fn new(first: u32, len: u64) -> Result<Self, ShortIdError> {
        if len == 0 {
            return Err(ShortIdError::EmptyRange { first });
        }
        if u64::from(first) + len > 1 << 32 {
            return Err(ShortIdError::RangeOverflow { first, len });
        }
        Ok(ShortIdRange { first, len })
    }

    /// Relay `index` of a mesh of `count` relays: the 32-bit space cut into `count` equal ranges
    /// (the last one takes the remainder). The simplest assignment that never collides.
    pub fn for_relay(index: u32, count: u32) -> Result<Self, ShortIdError> {
        if count == 0 || index >= count {
            return Err(ShortIdError::BadRelayIndex { index, count });
        }
        let size = (1u64 << 32) / u64::from(count);
        let first = size * u64::from(index);
        let len = if index + 1 == count {
            (1u64 << 32) - first
        } else {
            size
        };
        // first < 2^32 because index < count.
        ShortIdRange::new(first as u32, len)
    }

    pub fn first(&self) -> u32 {
        self.first
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// Never true: a range holds at least one ID (kept for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn contains(&self, id: ShortId) -> bool {
        let id = u64::from(id.0);
        id >= u64::from(self.first) && id < u64::from(self.first) + self.len
    }
}

/// What [`ShortIdAllocator::next`] does once every ID of its range was handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExhaustion {
    /// Start again at the first ID of the range. The old holders of reused IDs must be gone by
    /// then: a [`TxStore`] replaces the entry of a reused ID (§6.2), and a block that still
    /// refers to the old transaction fails its merkle check at the receiver rather than decoding
    /// to a wrong block.
    Wrap,
    /// Return [`ShortIdError::Exhausted`] for ever after.
    Fail,
}

/// Hands out the IDs of one relay's range in order: `first`, `first + 1`, ...
///
/// With a range of 2^28 IDs and 10 transactions a second a relay wraps after 10 months; the
/// [`TxStore`]'s expiry is minutes to hours, so IDs are long forgotten before they come back.
#[derive(Debug, Clone)]
pub struct ShortIdAllocator {
    range: ShortIdRange,
    next_offset: u64,
    on_exhaustion: OnExhaustion,
    wraps: u64,
}

impl ShortIdAllocator {
    pub fn new(range: ShortIdRange, on_exhaustion: OnExhaustion) -> Self {
        ShortIdAllocator {
            range,
            next_offset: 0,
            on_exhaustion,
            wraps: 0,
        }
    }

    /// Start at `first + offset` (e.g. after a restart, from a persisted counter).
    /// An offset past the range is taken modulo the range length.
    pub fn starting_at(range: ShortIdRange, offset: u64, on_exhaustion: OnExhaustion) -> Self {
        ShortIdAllocator {
            range,
            next_offset: offset % range.len,
            on_exhaustion,
            wraps: 0,
        }
    }

    /// The next ID of the range.
    pub fn next_id(&mut self) -> Result<ShortId, ShortIdError> {
        if self.next_offset == self.range.len {
            match self.on_exhaustion {
                OnExhaustion::Wrap => {
                    self.next_offset = 0;
                    self.wraps += 1;
                }
                OnExhaustion::Fail => {
                    return Err(ShortIdError::Exhausted {
                        first: self.range.first,
                        len: self.range.len,
                    })
                }
            }
        }
        // first + offset < first + len <= 2^32, checked by ShortIdRange::new.
        let id = ShortId((u64::from(self.range.first) + self.next_offset) as u32);
        self.next_offset += 1;
        Ok(id)
    }

    /// IDs left before the range is exhausted (or wraps).
    pub fn remaining(&self) -> u64 {
        self.range.len - self.next_offset
    }

    /// How many times the allocator went back to the start of its range.
    pub fn wraps(&self) -> u64 {
        self.wraps
    }

    pub fn range(&self) -> ShortIdRange {
        self.range
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_for_relays_tile_the_space() {
        let mut end = 0u64;
        for i in 0..7 {
            let r = ShortIdRange::for_relay(i, 7).unwrap();
            assert_eq!(u64::from(r.first()), end);
            end += r.len();
        }
        assert_eq!(end, 1 << 32);
        assert_eq!(
            ShortIdRange::for_relay(3, 3),
            Err(ShortIdError::BadRelayIndex { index: 3, count: 3 })
        );
        assert_eq!(
            ShortIdRange::new(5, 0),
            Err(ShortIdError::EmptyRange { first: 5 })
        );
        assert!(ShortIdRange::new(u32::MAX, 2).is_err());
        assert!(ShortIdRange::new(u32::MAX, 1)
            .unwrap()
            .contains(ShortId(u32::MAX)));
    }

    #[test]
    fn allocator_wraps_or_fails_explicitly() {
        let range = ShortIdRange::new(10, 3).unwrap();
        let mut wrap = ShortIdAllocator::new(range, OnExhaustion::Wrap);
        let ids: Vec<u32> = (0..7).map(|_| wrap.next_id().unwrap().0).collect();
        assert_eq!(ids, [10, 11, 12, 10, 11, 12, 10]);
        assert_eq!(wrap.wraps(), 2);
        assert_eq!(wrap.remaining(), 2);

        let mut fail = ShortIdAllocator::new(range, OnExhaustion::Fail);
        for want in 10..13 {
            assert_eq!(fail.next_id(), Ok(ShortId(want)));
        }
        assert_eq!(
            fail.next_id(),
            Err(ShortIdError::Exhausted { first: 10, len: 3 })
        );
        assert_eq!(
            fail.next_id(),
            Err(ShortIdError::Exhausted { first: 10, len: 3 })
        );
    }

    #[test]
    fn allocator_at_top_of_space() {
        let range = ShortIdRange::new(u32::MAX - 1, 2).unwrap();
        let mut a = ShortIdAllocator::starting_at(range, 1, OnExhaustion::Wrap);
        assert_eq!(a.next_id(), Ok(ShortId(u32::MAX)));
        assert_eq!(a.next_id(), Ok(ShortId(u32::MAX - 1)));
    }
}
