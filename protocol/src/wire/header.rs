//! The common header (§1.2): a zero-copy [`Packet`] view and its [`HeaderRepr`].

use super::{Error, MessageType, Result, HEADER_LEN, MAGIC, MAX_DATAGRAM, VERSION};

/// Byte ranges of the header fields (§1.2). Big-endian.
///
/// ```text
///  0       2   3   4   5   6       8                              16              20
///  +-------+---+---+---+---+-------+-------------------------------+---------------+
///  | magic |ver|typ|flg|hop| paylen|            stream             |    sender     |
///  +-------+---+---+---+---+-------+-------------------------------+---------------+
///  20      22      24      26      28                              36
///  +-------+-------+-------+-------+-------------------------------+
///  | index | count |   K   |   R   |            hop tag            |
///  +-------+-------+-------+-------+-------------------------------+
/// ```
pub mod field {
    use core::ops::Range;
    pub type Field = Range<usize>;

    /// `"Ph"`, [`super::MAGIC`].
    pub const MAGIC: Field = 0..2;
    /// Protocol version, [`super::VERSION`].
    pub const VERSION: usize = 2;
    /// Message type, [`crate::wire::MessageType`].
    pub const TYPE: usize = 3;
    /// Flag bits, [`crate::wire::flags`].
    pub const FLAGS: usize = 4;
    /// Relay hops travelled so far; each relay increments it when forwarding.
    pub const HOPS: usize = 5;
    /// Payload bytes after the header.
    pub const PAYLOAD_LEN: Field = 6..8;
    /// Block stream id (zero for kinds without a stream).
    pub const STREAM: Field = 8..16;
    /// Node id of the hop sender (the gateway or relay that sent this datagram on this hop).
    pub const SENDER: Field = 16..20;
    /// Fragment index within its kind (§2.1); zero for other kinds.
    pub const INDEX: Field = 20..22;
    /// Fragments of this kind in the stream (§2.1); zero for other kinds.
    pub const COUNT: Field = 22..24;
    /// Source shards K of the block's Reed-Solomon code.
    pub const K: Field = 24..26;
    /// Repair shards R of the block's Reed-Solomon code.
    pub const R: Field = 26..28;
    /// Per-hop authentication tag (§4.2), computed over the header with this field zeroed.
    pub const HOP_TAG: Field = 28..36;
    /// Where the payload starts.
    pub const PAYLOAD: usize = HOP_TAG.end;
}

/// A zero-copy view of a Photon datagram over any buffer: a socket buffer, a DPDK mbuf's data
/// slice, a `Vec<u8>`.
///
/// Contract (as smoltcp's): once [`Packet::check_len`] passed, which [`Packet::new_checked`]
/// runs, no accessor panics. The buffer may be longer than header + payload (trailing bytes are
/// ignored and never forwarded, §1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

#[inline]
fn be16(b: &[u8], f: field::Field) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[f]);
    u16::from_be_bytes(a)
}

#[inline]
fn be32(b: &[u8], f: field::Field) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[f]);
    u32::from_be_bytes(a)
}

#[inline]
fn be64(b: &[u8], f: field::Field) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[f]);
    u64::from_be_bytes(a)
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without any check. Accessors may panic until [`Packet::check_len`] passed.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking its length ([`Packet::check_len`]), the magic and the
    /// version. The message type is not checked here: a relay may count or forward kinds it does
    /// not know; [`HeaderRepr::parse`] rejects them.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let packet = Packet::new_unchecked(buffer);
        packet.check_len()?;
        if packet.magic() != MAGIC {
            return Err(Error::BadMagic(packet.magic()));
        }
        if packet.version() != VERSION {
            return Err(Error::UnsupportedVersion(packet.version()));
        }
        Ok(packet)
    }

    /// Checks that the buffer holds the whole header and the payload it announces, and that the
    /// datagram does not exceed [`MAX_DATAGRAM`].
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let got = self.buffer.as_ref().len();
        if got < HEADER_LEN {
            return Err(Error::Truncated {
                need: HEADER_LEN,
                got,
            });
        }
        let need = HEADER_LEN + usize::from(self.payload_len());
        if need > MAX_DATAGRAM {
            return Err(Error::TooLong {
                len: need,
                max: MAX_DATAGRAM,
            });
        }
        if got < need {
            return Err(Error::Truncated { need, got });
        }
        Ok(())
    }

    /// The underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The magic bytes as a big-endian u16.
    #[inline]
    pub fn magic(&self) -> u16 {
        be16(self.buffer.as_ref(), field::MAGIC)
    }

    /// The version byte.
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }

    /// The raw type byte (see [`Packet::msg_type`]).
    #[inline]
    pub fn msg_type_raw(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// The message type, or [`Error::UnknownType`].
    #[inline]
    pub fn msg_type(&self) -> Result<MessageType> {
        MessageType::from_u8(self.msg_type_raw())
    }

    /// The flag bits ([`crate::wire::flags`]).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Relay hops travelled.
    #[inline]
    pub fn hops(&self) -> u8 {
        self.buffer.as_ref()[field::HOPS]
    }

    /// Announced payload length.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }

    /// Block stream id.
    #[inline]
    pub fn stream(&self) -> u64 {
        be64(self.buffer.as_ref(), field::STREAM)
    }

    /// Node id of the hop sender.
    #[inline]
    pub fn sender(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SENDER)
    }

    /// Fragment index.
    #[inline]
    pub fn index(&self) -> u16 {
        be16(self.buffer.as_ref(), field::INDEX)
    }

    /// Fragment count.
    #[inline]
    pub fn count(&self) -> u16 {
        be16(self.buffer.as_ref(), field::COUNT)
    }

    /// Source shards K.
    #[inline]
    pub fn k(&self) -> u16 {
        be16(self.buffer.as_ref(), field::K)
    }

    /// Repair shards R.
    #[inline]
    pub fn r(&self) -> u16 {
        be16(self.buffer.as_ref(), field::R)
    }

    /// The per-hop authentication tag (§4.2).
    #[inline]
    pub fn hop_tag(&self) -> u64 {
        be64(self.buffer.as_ref(), field::HOP_TAG)
    }

    /// The header bytes, what the hop tag covers (with the tag field zeroed, §4.2).
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..HEADER_LEN]
    }

    /// The payload: exactly `payload_len` bytes after the header. Clamped to the buffer, so it
    /// cannot panic even after [`Packet::set_payload_len`] grew the announced length.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = (field::PAYLOAD + usize::from(self.payload_len())).min(b.len());
        &b[field::PAYLOAD..end]
    }

    /// Header plus payload: the bytes to send or forward (trailing bytes excluded). Clamped to
    /// the buffer like [`Packet::payload`].
    #[inline]
    pub fn datagram(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = (field::PAYLOAD + usize::from(self.payload_len())).min(b.len());
        &b[..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    fn put(&mut self, f: field::Field, bytes: &[u8]) {
        self.buffer.as_mut()[f].copy_from_slice(bytes);
    }

    /// Sets the magic.
    #[inline]
    pub fn set_magic(&mut self, value: u16) {
        self.put(field::MAGIC, &value.to_be_bytes());
    }

    /// Sets the version byte.
    #[inline]
    pub fn set_version(&mut self, value: u8) {
        self.buffer.as_mut()[field::VERSION] = value;
    }

    /// Sets the type byte.
    #[inline]
    pub fn set_msg_type(&mut self, value: MessageType) {
        self.buffer.as_mut()[field::TYPE] = value.as_u8();
    }

    /// Sets the flag bits.
    #[inline]
    pub fn set_flags(&mut self, value: u8) {
        self.buffer.as_mut()[field::FLAGS] = value;
    }

    /// Sets the hop count.
    #[inline]
    pub fn set_hops(&mut self, value: u8) {
        self.buffer.as_mut()[field::HOPS] = value;
    }

    /// Sets the announced payload length. Re-run [`Packet::check_len`] before trusting it.
    #[inline]
    pub fn set_payload_len(&mut self, value: u16) {
        self.put(field::PAYLOAD_LEN, &value.to_be_bytes());
    }

    /// Sets the stream id.
    #[inline]
    pub fn set_stream(&mut self, value: u64) {
        self.put(field::STREAM, &value.to_be_bytes());
    }

    /// Sets the hop sender's node id (a relay rewrites it when forwarding).
    #[inline]
    pub fn set_sender(&mut self, value: u32) {
        self.put(field::SENDER, &value.to_be_bytes());
    }

    /// Sets the fragment index.
    #[inline]
    pub fn set_index(&mut self, value: u16) {
        self.put(field::INDEX, &value.to_be_bytes());
    }

    /// Sets the fragment count.
    #[inline]
    pub fn set_count(&mut self, value: u16) {
        self.put(field::COUNT, &value.to_be_bytes());
    }

    /// Sets K.
    #[inline]
    pub fn set_k(&mut self, value: u16) {
        self.put(field::K, &value.to_be_bytes());
    }

    /// Sets R.
    #[inline]
    pub fn set_r(&mut self, value: u16) {
        self.put(field::R, &value.to_be_bytes());
    }

    /// Sets the hop tag.
    #[inline]
    pub fn set_hop_tag(&mut self, value: u64) {
        self.put(field::HOP_TAG, &value.to_be_bytes());
    }

    /// The header bytes, mutable (for [`crate::hopauth`]).
    #[inline]
    pub fn header_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[..HEADER_LEN]
    }

    /// The payload, mutable: exactly `payload_len` bytes (clamped to the buffer). Lets a sender
    /// encode a shard straight into the datagram buffer.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = usize::from(self.payload_len());
        let b = self.buffer.as_mut();
        let end = (field::PAYLOAD + len).min(b.len());
        &mut b[field::PAYLOAD..end]
    }
}

/// The parsed common header (§1.2), without the hop tag, which belongs to [`crate::hopauth`]:
/// [`HeaderRepr::emit`] writes it as zero, and a hop key signs the header in place afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeaderRepr {
    pub msg_type: MessageType,
    pub flags: u8,
    pub hops: u8,
    pub payload_len: u16,
    pub stream: u64,
    pub sender: u32,
    pub index: u16,
    pub count: u16,
    pub k: u16,
    pub r: u16,
}

impl HeaderRepr {
    /// Parses the header of a checked packet. Only the type is validated here; each message
    /// kind's `Repr` validates the fields it uses.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<HeaderRepr> {
        packet.check_len()?;
        if packet.magic() != MAGIC {
            return Err(Error::BadMagic(packet.magic()));
        }
        if packet.version() != VERSION {
            return Err(Error::UnsupportedVersion(packet.version()));
        }
        Ok(HeaderRepr {
            msg_type: packet.msg_type()?,
            flags: packet.flags(),
            hops: packet.hops(),
            payload_len: packet.payload_len(),
            stream: packet.stream(),
            sender: packet.sender(),
            index: packet.index(),
            count: packet.count(),
            k: packet.k(),
            r: packet.r(),
        })
    }

    /// Bytes [`HeaderRepr::emit`] writes: [`HEADER_LEN`].
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header (hop tag zeroed) into the first [`HEADER_LEN`] bytes of `buf`; the
    /// payload is the caller's to write after it. Returns [`HEADER_LEN`].
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        if buf.len() < HEADER_LEN {
            return Err(Error::BufferTooSmall {
                need: HEADER_LEN,
                got: buf.len(),
            });
        }
        let len = HEADER_LEN + usize::from(self.payload_len);
        if len > MAX_DATAGRAM {
            return Err(Error::TooLong {
                len,
                max: MAX_DATAGRAM,
            });
        }
        let mut p = Packet::new_unchecked(&mut buf[..HEADER_LEN]);
        p.set_magic(MAGIC);
        p.set_version(VERSION);
        p.set_msg_type(self.msg_type);
        p.set_flags(self.flags);
        p.set_hops(self.hops);
        p.set_payload_len(self.payload_len);
        p.set_stream(self.stream);
        p.set_sender(self.sender);
        p.set_index(self.index);
        p.set_count(self.count);
        p.set_k(self.k);
        p.set_r(self.r);
        p.set_hop_tag(0);
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::max_fragment_payload;

    /// A source shard header: stream 0x0102030405060708, sender 0x0a0b0c0d, index 5 of K=10,
    /// R=4, 3 payload bytes, hop tag 0x1122334455667788, RETRANSMIT flag, 2 hops.
    const GOLDEN: [u8; 39] = [
        0x50, 0x68, // magic "Ph"
        0x01, // version
        0x01, // type: source shard
        0x01, // flags: retransmit
        0x02, // hops
        0x00, 0x03, // payload length
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // stream
        0x0a, 0x0b, 0x0c, 0x0d, // sender
        0x00, 0x05, // index
        0x00, 0x0a, // count
        0x00, 0x0a, // K
        0x00, 0x04, // R
        0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, // hop tag
        0xaa, 0xbb, 0xcc, // payload
    ];

    #[test]
    fn header_is_36_bytes_and_payload_fits() {
        assert_eq!(HEADER_LEN, 36);
        assert_eq!(max_fragment_payload(), 1196);
    }

    #[test]
    fn golden_accessors() {
        let p = Packet::new_checked(&GOLDEN[..]).unwrap();
        assert_eq!(p.magic(), MAGIC);
        assert_eq!(p.version(), 1);
        assert_eq!(p.msg_type(), Ok(MessageType::SourceShard));
        assert_eq!(p.flags(), crate::wire::flags::RETRANSMIT);
        assert_eq!(p.hops(), 2);
        assert_eq!(p.payload_len(), 3);
        assert_eq!(p.stream(), 0x0102_0304_0506_0708);
        assert_eq!(p.sender(), 0x0a0b_0c0d);
        assert_eq!((p.index(), p.count(), p.k(), p.r()), (5, 10, 10, 4));
        assert_eq!(p.hop_tag(), 0x1122_3344_5566_7788);
        assert_eq!(p.payload(), &[0xaa, 0xbb, 0xcc]);
        assert_eq!(p.datagram(), &GOLDEN[..]);
    }

    #[test]
    fn golden_emit() {
        let p = Packet::new_checked(&GOLDEN[..]).unwrap();
        let repr = HeaderRepr::parse(&p).unwrap();
        let mut buf = [0u8; 39];
        assert_eq!(repr.emit(&mut buf), Ok(HEADER_LEN));
        buf[HEADER_LEN..].copy_from_slice(p.payload());
        let mut expect = GOLDEN;
        expect[field::HOP_TAG].fill(0); // emit leaves the tag to hopauth
        assert_eq!(buf, expect);
    }

    #[test]
    fn trailing_bytes_are_ignored() {
        let mut long = GOLDEN.to_vec();
        long.extend_from_slice(&[0xee; 5]);
        let p = Packet::new_checked(&long[..]).unwrap();
        assert_eq!(p.payload(), &[0xaa, 0xbb, 0xcc]);
        assert_eq!(p.datagram(), &GOLDEN[..]);
    }

    #[test]
    fn rejects_bad_input_with_typed_errors() {
        assert_eq!(
            Packet::new_checked(&GOLDEN[..10]).unwrap_err(),
            Error::Truncated {
                need: HEADER_LEN,
                got: 10
            }
        );
        assert_eq!(
            Packet::new_checked(&GOLDEN[..37]).unwrap_err(),
            Error::Truncated { need: 39, got: 37 }
        );
        let mut bad = GOLDEN;
        bad[0] = 0;
        assert_eq!(
            Packet::new_checked(&bad[..]).unwrap_err(),
            Error::BadMagic(0x0068)
        );
        let mut bad = GOLDEN;
        bad[2] = 2;
        assert_eq!(
            Packet::new_checked(&bad[..]).unwrap_err(),
            Error::UnsupportedVersion(2)
        );
        let mut bad = GOLDEN;
        bad[3] = 0x7f;
        let p = Packet::new_checked(&bad[..]).unwrap();
        assert_eq!(HeaderRepr::parse(&p).unwrap_err(), Error::UnknownType(0x7f));
        let mut big = vec![0u8; 2000];
        big[..HEADER_LEN].copy_from_slice(&GOLDEN[..HEADER_LEN]);
        big[6..8].copy_from_slice(&1197u16.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&big[..]).unwrap_err(),
            Error::TooLong {
                len: 1233,
                max: MAX_DATAGRAM
            }
        );
    }

    #[test]
    fn setters_round_trip_and_payload_mut() {
        let mut buf = [0u8; 40];
        let repr = HeaderRepr {
            msg_type: MessageType::RepairShard,
            flags: 0,
            hops: 0,
            payload_len: 4,
            stream: 7,
            sender: 9,
            index: 1,
            count: 2,
            k: 3,
            r: 2,
        };
        repr.emit(&mut buf).unwrap();
        let mut p = Packet::new_checked(&mut buf[..]).unwrap();
        p.payload_mut().copy_from_slice(&[1, 2, 3, 4]);
        p.set_hops(p.hops() + 1);
        p.set_sender(42);
        p.set_hop_tag(0xdead_beef);
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
        let again = HeaderRepr::parse(&p).unwrap();
        assert_eq!(
            again,
            HeaderRepr {
                hops: 1,
                sender: 42,
                ..repr
            }
        );
        assert_eq!(p.hop_tag(), 0xdead_beef);
        // Growing the announced length past the buffer makes check_len fail, and the payload
        // accessor clamps instead of panicking.
        p.set_payload_len(100);
        assert!(p.check_len().is_err());
        assert_eq!(p.payload().len(), 4);
    }

    #[test]
    fn emit_rejects_small_buffer_and_oversize_payload() {
        let repr = HeaderRepr {
            msg_type: MessageType::Keepalive,
            flags: 0,
            hops: 0,
            payload_len: 0,
            stream: 0,
            sender: 0,
            index: 0,
            count: 0,
            k: 0,
            r: 0,
        };
        let mut small = [0u8; 35];
        assert_eq!(
            repr.emit(&mut small),
            Err(Error::BufferTooSmall { need: 36, got: 35 })
        );
        let mut buf = [0u8; 36];
        let big = HeaderRepr {
            payload_len: 1197,
            ..repr
        };
        assert_eq!(
            big.emit(&mut buf),
            Err(Error::TooLong {
                len: 1233,
                max: 1232
            })
        );
    }
}
