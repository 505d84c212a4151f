//! Block fragments (§2.1): source shards, repair shards and manifest fragments.

use super::{max_fragment_payload, Error, HeaderRepr, MessageType, Packet, Result, MAX_SHARDS};

/// Which kind of block fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FragmentKind {
    /// Reed-Solomon source (original) shard `index` of K.
    Source,
    /// Reed-Solomon repair (recovery) shard `index` of R.
    Repair,
    /// Fragment `index` of `count` of the block's signed manifest (§4.1); opaque here.
    Manifest,
}

impl FragmentKind {
    /// The message type carrying this kind.
    pub const fn msg_type(self) -> MessageType {
        match self {
            FragmentKind::Source => MessageType::SourceShard,
            FragmentKind::Repair => MessageType::RepairShard,
            FragmentKind::Manifest => MessageType::Manifest,
        }
    }

    /// The kind for a message type, if it is a block fragment.
    pub const fn from_msg_type(t: MessageType) -> Option<FragmentKind> {
        match t {
            MessageType::SourceShard => Some(FragmentKind::Source),
            MessageType::RepairShard => Some(FragmentKind::Repair),
            MessageType::Manifest => Some(FragmentKind::Manifest),
            _ => None,
        }
    }
}

/// One block fragment (§2.1). Everything but the payload lives in the common header, so a relay
/// classifies and dedups it from the header alone.
///
/// Invariants checked by [`FragmentRepr::parse`] and [`FragmentRepr::check`] (hence by emit):
/// - `1 <= k <= 32768`, `r <= 32768`;
/// - source: `count == k`, repair: `count == r`, manifest: `count >= 1`;
/// - `index < count`;
/// - `1 <= payload.len() <= max_fragment_payload()`.
///
/// Index spaces are per kind, as `reed-solomon-simd` numbers them: source shards `0..K`, repair
/// shards `0..R`, manifest fragments `0..count`. The manifest fragments also carry the block's
/// K and R so a receiver can size its decoder from whichever fragment arrives first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragmentRepr<'a> {
    pub kind: FragmentKind,
    pub stream: u64,
    pub index: u16,
    pub count: u16,
    pub k: u16,
    pub r: u16,
    pub payload: &'a [u8],
}

impl<'a> FragmentRepr<'a> {
    /// Parses a block fragment from a packet. Fails with [`Error::WrongType`] if the packet is
    /// another kind.
    pub fn parse<T: AsRef<[u8]>>(packet: &'a Packet<T>) -> Result<FragmentRepr<'a>> {
        let header = HeaderRepr::parse(packet)?;
        FragmentRepr::from_header(&header, packet.payload())
    }

    /// From an already parsed header and its payload.
    pub(super) fn from_header(header: &HeaderRepr, payload: &'a [u8]) -> Result<FragmentRepr<'a>> {
        let kind = FragmentKind::from_msg_type(header.msg_type).ok_or(Error::WrongType {
            expected: "block fragment",
            got: header.msg_type.as_u8(),
        })?;
        let repr = FragmentRepr {
            kind,
            stream: header.stream,
            index: header.index,
            count: header.count,
            k: header.k,
            r: header.r,
            payload,
        };
        repr.check()?;
        Ok(repr)
    }

    /// Checks the invariants listed on the type.
    pub fn check(&self) -> Result<()> {
        if self.k == 0 || self.k > MAX_SHARDS {
            return Err(Error::BadField { field: "k" });
        }
        if self.r > MAX_SHARDS {
            return Err(Error::BadField { field: "r" });
        }
        let count_ok = match self.kind {
            FragmentKind::Source => self.count == self.k,
            FragmentKind::Repair => self.count == self.r,
            FragmentKind::Manifest => self.count >= 1,
        };
        if !count_ok {
            return Err(Error::BadField { field: "count" });
        }
        if self.index >= self.count {
            return Err(Error::BadField { field: "index" });
        }
        if self.payload.is_empty() || self.payload.len() > max_fragment_payload() {
            return Err(Error::BadLength {
                msg: "block fragment",
                len: self.payload.len(),
            });
        }
        Ok(())
    }

    /// The common header for this fragment, sent by `sender` (hop tag left to §4.2).
    pub fn header(&self, sender: u32, flags: u8, hops: u8) -> HeaderRepr {
        HeaderRepr {
            msg_type: self.kind.msg_type(),
            flags,
            hops,
            // check() bounds the payload to max_fragment_payload() < u16::MAX.
            payload_len: u16::try_from(self.payload.len()).unwrap_or(u16::MAX),
            stream: self.stream,
            sender,
            index: self.index,
            count: self.count,
            k: self.k,
            r: self.r,
        }
    }

    /// Datagram length: header plus payload.
    pub fn buffer_len(&self) -> usize {
        super::HEADER_LEN + self.payload.len()
    }

    /// Writes header and payload into `buf`; returns the datagram length. Checks the invariants
    /// first, so an invalid repr is never put on the wire.
    pub fn emit(&self, sender: u32, flags: u8, hops: u8, buf: &mut [u8]) -> Result<usize> {
        self.check()?;
        let len = self.buffer_len();
        if buf.len() < len {
            return Err(Error::BufferTooSmall {
                need: len,
                got: buf.len(),
            });
        }
        self.header(sender, flags, hops).emit(buf)?;
        buf[super::HEADER_LEN..len].copy_from_slice(self.payload);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::HEADER_LEN;

    /// Repair shard 2 of R=3 (K=4) of stream 0x42, 4 payload bytes, from sender 7.
    const GOLDEN_REPAIR: [u8; 40] = [
        0x50, 0x68, 0x01, 0x02, 0x00, 0x00, 0x00,
        0x04, // magic, v1, repair, flags, hops, len 4
        0, 0, 0, 0, 0, 0, 0, 0x42, // stream
        0, 0, 0, 7, // sender
        0, 2, 0, 3, 0, 4, 0, 3, // index 2, count 3, K 4, R 3
        0, 0, 0, 0, 0, 0, 0, 0, // hop tag (unsigned)
        0xde, 0xad, 0xbe, 0xef,
    ];

    /// Manifest fragment 0 of 2 of stream 1, K=10, R=5, opaque payload "m".
    const GOLDEN_MANIFEST: [u8; 37] = [
        0x50, 0x68, 0x01, 0x03, 0x00, 0x01, 0x00, 0x01, // manifest, 1 hop, len 1
        0, 0, 0, 0, 0, 0, 0, 1, // stream
        0, 0, 0, 9, // sender
        0, 0, 0, 2, 0, 10, 0, 5, // index 0, count 2, K 10, R 5
        0, 0, 0, 0, 0, 0, 0, 0, // hop tag
        b'm',
    ];

    #[test]
    fn golden_repair_shard() {
        let p = Packet::new_checked(&GOLDEN_REPAIR[..]).unwrap();
        let f = FragmentRepr::parse(&p).unwrap();
        assert_eq!(
            f,
            FragmentRepr {
                kind: FragmentKind::Repair,
                stream: 0x42,
                index: 2,
                count: 3,
                k: 4,
                r: 3,
                payload: &[0xde, 0xad, 0xbe, 0xef],
            }
        );
        let mut buf = [0u8; 64];
        let n = f.emit(7, 0, 0, &mut buf).unwrap();
        assert_eq!(&buf[..n], &GOLDEN_REPAIR[..]);
    }

    #[test]
    fn golden_manifest_fragment() {
        let p = Packet::new_checked(&GOLDEN_MANIFEST[..]).unwrap();
        let f = FragmentRepr::parse(&p).unwrap();
        assert_eq!(f.kind, FragmentKind::Manifest);
        assert_eq!((f.index, f.count, f.k, f.r), (0, 2, 10, 5));
        assert_eq!(f.payload, b"m");
        let mut buf = [0u8; 64];
        let n = f.emit(9, 0, 1, &mut buf).unwrap();
        assert_eq!(&buf[..n], &GOLDEN_MANIFEST[..]);
    }

    #[test]
    fn full_size_shard_fits_one_datagram() {
        let payload = vec![0x5a; max_fragment_payload()];
        let f = FragmentRepr {
            kind: FragmentKind::Source,
            stream: u64::MAX,
            index: MAX_SHARDS - 1,
            count: MAX_SHARDS,
            k: MAX_SHARDS,
            r: MAX_SHARDS,
            payload: &payload,
        };
        let mut buf = [0u8; crate::wire::MAX_DATAGRAM];
        assert_eq!(f.emit(1, 0, 0, &mut buf), Ok(crate::wire::MAX_DATAGRAM));
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(FragmentRepr::parse(&p), Ok(f));
    }

    #[test]
    fn invariants_are_enforced() {
        let base = FragmentRepr {
            kind: FragmentKind::Source,
            stream: 1,
            index: 0,
            count: 4,
            k: 4,
            r: 2,
            payload: &[1, 2],
        };
        assert_eq!(base.check(), Ok(()));
        let bad = |f: FragmentRepr<'_>| f.check().unwrap_err();
        assert_eq!(
            bad(FragmentRepr {
                k: 0,
                count: 0,
                ..base
            }),
            Error::BadField { field: "k" }
        );
        assert_eq!(
            bad(FragmentRepr {
                k: MAX_SHARDS + 1,
                count: MAX_SHARDS + 1,
                ..base
            }),
            Error::BadField { field: "k" }
        );
        assert_eq!(
            bad(FragmentRepr {
                r: MAX_SHARDS + 1,
                ..base
            }),
            Error::BadField { field: "r" }
        );
        assert_eq!(
            bad(FragmentRepr { count: 3, ..base }),
            Error::BadField { field: "count" }
        );
        assert_eq!(
            bad(FragmentRepr { index: 4, ..base }),
            Error::BadField { field: "index" }
        );
        assert_eq!(
            bad(FragmentRepr {
                kind: FragmentKind::Repair,
                index: 2,
                count: 2,
                ..base
            }),
            Error::BadField { field: "index" }
        );
        assert_eq!(
            bad(FragmentRepr {
                kind: FragmentKind::Repair,
                r: 0,
                count: 0,
                ..base
            }),
            Error::BadField { field: "index" }
        );
        assert_eq!(
            bad(FragmentRepr {
                payload: &[],
                ..base
            }),
            Error::BadLength {
                msg: "block fragment",
                len: 0
            }
        );
        // A non-fragment packet is not a fragment.
        let mut buf = [0u8; HEADER_LEN];
        HeaderRepr {
            msg_type: MessageType::Keepalive,
            ..base.header(1, 0, 0)
        }
        .emit(&mut buf)
        .unwrap();
        buf[6..8].fill(0);
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(
            FragmentRepr::parse(&p),
            Err(Error::WrongType {
                expected: "block fragment",
                got: 0x32
            })
        );
    }
}
