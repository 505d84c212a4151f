//! Every message kind (§2) and the datagram-level [`Repr`].
//!
//! Extensibility rule (§2.0): every payload is a fixed part, then length- or count-prefixed
//! variable parts; a receiver parses what it knows and ignores trailing bytes. A later version
//! appends fields at the end of a payload without breaking older peers; older peers re-emit
//! without them (so `parse(emit(parse(x))) == parse(x)`, but the bytes need not be identical).
//! Header fields a kind does not use are written as zero and ignored on receipt.

use super::fragment::{FragmentKind, FragmentRepr};
use super::{Error, HeaderRepr, MessageType, Packet, Result, HEADER_LEN, MAX_DATAGRAM};

const MAX_PAYLOAD: usize = MAX_DATAGRAM - HEADER_LEN;

/// A panic-free reader over untrusted payload bytes: every short read is a typed error.
struct Reader<'a> {
    msg: &'static str,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(msg: &'static str, buf: &'a [u8]) -> Self {
        Reader { msg, buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(Error::BadLength {
                msg: self.msg,
                len: self.buf.len(),
            });
        };
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}

/// A writer into a slice sized by `buffer_len` beforehand, so it never runs out.
struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }
}

/// Header fields a message kind uses besides type, flags, hops and sender.
#[derive(Default)]
struct Fields {
    stream: u64,
    index: u16,
    count: u16,
}

/// What each non-fragment message implements; the `impl_repr!` macro turns it into the public
/// `parse` / `buffer_len` / `emit` trio.
trait Body<'a>: Sized {
    const TYPE: MessageType;
    const NAME: &'static str;
    fn from_parts(header: &HeaderRepr, payload: &'a [u8]) -> Result<Self>;
    /// The header's stream, index and count it sets; all zero by default.
    fn fields(&self) -> Fields {
        Fields::default()
    }
    /// Payload length; errors if this repr cannot fit a datagram.
    fn payload_len(&self) -> Result<usize>;
    /// Writes exactly `payload_len()` bytes.
    fn write(&self, w: &mut Writer<'_>);
}

fn emit_body<'a, B: Body<'a>>(
    b: &B,
    sender: u32,
    flags: u8,
    hops: u8,
    buf: &mut [u8],
) -> Result<usize> {
    let payload_len = b.payload_len()?;
    let len = HEADER_LEN + payload_len;
    if len > MAX_DATAGRAM {
        return Err(Error::TooLong {
            len,
            max: MAX_DATAGRAM,
        });
    }
    if buf.len() < len {
        return Err(Error::BufferTooSmall {
            need: len,
            got: buf.len(),
        });
    }
    let f = b.fields();
    HeaderRepr {
        msg_type: B::TYPE,
        flags,
        hops,
        payload_len: u16::try_from(payload_len).map_err(|_| Error::TooLong {
            len,
            max: MAX_DATAGRAM,
        })?,
        stream: f.stream,
        sender,
        index: f.index,
        count: f.count,
        k: 0,
        r: 0,
    }
    .emit(buf)?;
    let mut w = Writer {
        buf: &mut buf[HEADER_LEN..len],
        pos: 0,
    };
    b.write(&mut w);
    debug_assert_eq!(w.pos, payload_len);
    Ok(len)
}

fn parse_body<'a, B: Body<'a>, T: AsRef<[u8]>>(packet: &'a Packet<T>) -> Result<B> {
    let header = HeaderRepr::parse(packet)?;
    if header.msg_type != B::TYPE {
        return Err(Error::WrongType {
            expected: B::NAME,
            got: header.msg_type.as_u8(),
        });
    }
    B::from_parts(&header, packet.payload())
}

macro_rules! impl_repr {
    ($ty:ty) => {
        impl<'a> $ty {
            /// Parses this message kind from a packet (type must match, else
            /// [`Error::WrongType`]).
            pub fn parse<T: AsRef<[u8]>>(packet: &'a Packet<T>) -> Result<Self> {
                parse_body(packet)
            }

            /// Datagram length [`Self::emit`] writes, or [`Error::TooLong`] if it cannot fit.
            pub fn buffer_len(&self) -> Result<usize> {
                Ok(HEADER_LEN + Body::payload_len(self)?)
            }

            /// Writes the whole datagram (hop tag zero, for §4.2 to fill); returns its length.
            pub fn emit(&self, sender: u32, flags: u8, hops: u8, buf: &mut [u8]) -> Result<usize> {
                emit_body(self, sender, flags, hops, buf)
            }
        }
    };
}

// --- §2.2 Transaction -----------------------------------------------------------------------

/// Largest serialized transaction accepted (the block weight limit, in bytes).
pub const MAX_TX_LEN: u32 = 4_000_000;
const TX_HAS_SHORT_ID: u8 = 0x01;
const TX_FIXED: usize = 1 + 4 + 4 + 4 + 2;

/// A transaction, or one fragment of it if it does not fit one datagram (§2.2).
///
/// Header: `stream` is the sender's transfer id (unique per sender and transaction), `index` /
/// `count` the fragment. Payload: `tx_flags u8` (bit 0: short ID present), `short_id u32`,
/// `tx_len u32`, `offset u32`, `data_len u16`, `data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransactionRepr<'a> {
    pub transfer: u64,
    pub index: u16,
    pub count: u16,
    /// The relay-assigned short ID, when the sender knows it.
    pub short_id: Option<u32>,
    /// Length of the whole serialized transaction.
    pub tx_len: u32,
    /// Where `data` sits in the serialized transaction.
    pub offset: u32,
    pub data: &'a [u8],
}

impl TransactionRepr<'_> {
    /// Most transaction bytes one fragment carries.
    pub const MAX_DATA: usize = MAX_PAYLOAD - TX_FIXED;

    fn check(&self) -> Result<()> {
        if self.count == 0 || self.index >= self.count {
            return Err(Error::BadField { field: "index" });
        }
        if self.tx_len == 0 || self.tx_len > MAX_TX_LEN {
            return Err(Error::BadField { field: "tx_len" });
        }
        let end = u64::from(self.offset) + self.data.len() as u64;
        if self.data.is_empty() || end > u64::from(self.tx_len) {
            return Err(Error::BadField { field: "offset" });
        }
        Ok(())
    }
}

impl<'a> Body<'a> for TransactionRepr<'a> {
    const TYPE: MessageType = MessageType::Transaction;
    const NAME: &'static str = "transaction";
    fn from_parts(h: &HeaderRepr, payload: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(Self::NAME, payload);
        let tx_flags = r.u8()?;
        let short_id = r.u32()?;
        let tx_len = r.u32()?;
        let offset = r.u32()?;
        let data_len = r.u16()?;
        let data = r.take(usize::from(data_len))?;
        let repr = TransactionRepr {
            transfer: h.stream,
            index: h.index,
            count: h.count,
            short_id: (tx_flags & TX_HAS_SHORT_ID != 0).then_some(short_id),
            tx_len,
            offset,
            data,
        };
        repr.check()?;
        Ok(repr)
    }
    fn fields(&self) -> Fields {
        Fields {
            stream: self.transfer,
            index: self.index,
            count: self.count,
        }
    }
    fn payload_len(&self) -> Result<usize> {
        self.check()?;
        let len = TX_FIXED + self.data.len();
        if len > MAX_PAYLOAD {
            return Err(Error::TooLong {
                len: HEADER_LEN + len,
                max: MAX_DATAGRAM,
            });
        }
        Ok(len)
    }
    fn write(&self, w: &mut Writer<'_>) {
        w.put(&[if self.short_id.is_some() {
            TX_HAS_SHORT_ID
        } else {
            0
        }]);
        w.put(&self.short_id.unwrap_or(0).to_be_bytes());
        w.put(&self.tx_len.to_be_bytes());
        w.put(&self.offset.to_be_bytes());
        // payload_len() bounded data to MAX_DATA < u16::MAX.
        w.put(&(self.data.len() as u16).to_be_bytes());
        w.put(self.data);
    }
}
impl_repr!(TransactionRepr<'a>);

// --- §2.3 Short-ID assignment ---------------------------------------------------------------

const SHORT_ID_ENTRY: usize = 32 + 4;
/// Most (tx hash, short ID) pairs in one assignment datagram.
pub const MAX_SHORT_ID_ASSIGNMENTS: usize = (MAX_PAYLOAD - 2) / SHORT_ID_ENTRY;

/// Relay-assigned short IDs (§2.3). Payload: `n u16`, then `n` × (`tx_hash [32]`, `short_id u32`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortIdAssignRepr {
    /// (transaction hash as Bitcoin serializes it, short ID).
    pub entries: Vec<([u8; 32], u32)>,
}

impl<'a> Body<'a> for ShortIdAssignRepr {
    const TYPE: MessageType = MessageType::ShortIdAssign;
    const NAME: &'static str = "short-ID assignment";
    fn from_parts(_: &HeaderRepr, payload: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(Self::NAME, payload);
        let n = usize::from(r.u16()?);
        if n > MAX_SHORT_ID_ASSIGNMENTS {
            return Err(Error::BadLength {
                msg: Self::NAME,
                len: payload.len(),
            });
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            entries.push((r.array()?, r.u32()?));
        }
        Ok(ShortIdAssignRepr { entries })
    }
    fn payload_len(&self) -> Result<usize> {
        if self.entries.len() > MAX_SHORT_ID_ASSIGNMENTS {
            let len = HEADER_LEN + 2 + SHORT_ID_ENTRY * self.entries.len();
            return Err(Error::TooLong {
                len,
                max: MAX_DATAGRAM,
            });
        }
        Ok(2 + SHORT_ID_ENTRY * self.entries.len())
    }
    fn write(&self, w: &mut Writer<'_>) {
        w.put(&(self.entries.len() as u16).to_be_bytes());
        for (hash, id) in &self.entries {
            w.put(hash);
            w.put(&id.to_be_bytes());
        }
    }
}
impl_repr!(ShortIdAssignRepr);

// --- §2.4 Tx request by short ID -----------------------------------------------------------

/// Most short IDs in one request.
pub const MAX_TX_REQUEST_IDS: usize = (MAX_PAYLOAD - 2) / 4;

/// A gateway asks for transactions it lacks, by short ID (§2.4). Header `stream`: the block
/// stream whose decompression needs them (0 if none). Payload: `n u16`, `n` × `short_id u32`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxRequestRepr {
    pub stream: u64,
    pub short_ids: Vec<u32>,
}

impl<'a> Body<'a> for TxRequestRepr {
    const TYPE: MessageType = MessageType::TxRequest;
    const NAME: &'static str = "tx request";
    fn from_parts(h: &HeaderRepr, payload: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(Self::NAME, payload);
        let n = usize::from(r.u16()?);
        if n == 0 || n > MAX_TX_REQUEST_IDS {
            return Err(Error::BadField { field: "n" });
        }
        let mut short_ids = Vec::with_capacity(n);
        for _ in 0..n {
            short_ids.push(r.u32()?);
        }
        Ok(TxRequestRepr {
            stream: h.stream,
            short_ids,
        })
    }
    fn fields(&self) -> Fields {
        Fields {
            stream: self.stream,
            ..Fields::default()
        }
    }
    fn payload_len(&self) -> Result<usize> {
        if self.short_ids.is_empty() {
            return Err(Error::BadField { field: "n" });
        }
        if self.short_ids.len() > MAX_TX_REQUEST_IDS {
            let len = HEADER_LEN + 2 + 4 * self.short_ids.len();
            return Err(Error::TooLong {
                len,
                max: MAX_DATAGRAM,
            });
        }
        Ok(2 + 4 * self.short_ids.len())
    }
    fn write(&self, w: &mut Writer<'_>) {
        w.put(&(self.short_ids.len() as u16).to_be_bytes());
        for id in &self.short_ids {
            w.put(&id.to_be_bytes());
        }
    }
}
impl_repr!(TxRequestRepr);

// --- §2.5 Receipt ---------------------------------------------------------------------------

/// Payload length of an unsigned (legacy) receipt: `manifest_hash` only.
pub const RECEIPT_LEN: usize = 32;
/// Payload length of a signed receipt: `manifest_hash`, `receiver`, `signature`.
pub const SIGNED_RECEIPT_LEN: usize = 32 + 32 + 64;

/// "I hold stream X" (§2.5). Header `stream`; payload: `manifest_hash [32]`, the hash of the
/// signed manifest (§4.1) of the sealed block received whole, so the receipt names the exact
/// content, not only the stream number; then, in a signed receipt, `receiver [32]` (the
/// receiving gateway's Ed25519 public key, §5.3) and `signature [64]`, its signature over
/// `seal::receipt_signing_input(stream, manifest_hash)`; signing and verifying live in
/// `crate::seal` (the wire layer does no cryptography).
///
/// Parse: a 32-byte payload is a legacy unsigned receipt (`signed: None`); 128 bytes or more a
/// signed one (bytes after 128 are ignored, §2.0); 0..=31 and 33..=127 bytes (a truncated
/// tail) are [`Error::BadLength`]. The signature is checked by [`ReceiptRepr::verify`], not by
/// the parser: relays pass receipts on without reading them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptRepr {
    pub stream: u64,
    pub manifest_hash: [u8; 32],
    /// `(receiver, signature)` of a signed receipt; `None`: an unsigned receipt, which names
    /// no receiver.
    pub signed: Option<([u8; 32], [u8; 64])>,
}

impl ReceiptRepr {
    /// An unsigned (legacy) receipt.
    pub fn unsigned(stream: u64, manifest_hash: [u8; 32]) -> ReceiptRepr {
        ReceiptRepr {
            stream,
            manifest_hash,
            signed: None,
        }
    }
}

impl<'a> Body<'a> for ReceiptRepr {
    const TYPE: MessageType = MessageType::Receipt;
    const NAME: &'static str = "receipt";
    fn from_parts(h: &HeaderRepr, payload: &'a [u8]) -> Result<Self> {
        if payload.len() != RECEIPT_LEN && payload.len() < SIGNED_RECEIPT_LEN {
            return Err(Error::BadLength {
                msg: Self::NAME,
                len: payload.len(),
            });
        }
        let mut r = Reader::new(Self::NAME, payload);
        let manifest_hash = r.array()?;
        let signed = if payload.len() >= SIGNED_RECEIPT_LEN {
            Some((r.array()?, r.array()?))
        } else {
            None
        };
        Ok(ReceiptRepr {
            stream: h.stream,
            manifest_hash,
            signed,
        })
    }
    fn fields(&self) -> Fields {
        Fields {
            stream: self.stream,
            ..Fields::default()
        }
    }
    fn payload_len(&self) -> Result<usize> {
        Ok(if self.signed.is_some() {
            SIGNED_RECEIPT_LEN
        } else {
            RECEIPT_LEN
        })
    }
    fn write(&self, w: &mut Writer<'_>) {
        w.put(&self.manifest_hash);
        if let Some((receiver, signature)) = &self.signed {
            w.put(receiver);
            w.put(signature);
        }
    }
}
impl_repr!(ReceiptRepr);

// --- §2.6 Key release -----------------------------------------------------------------------

/// Payload length of a key release.
pub const KEY_RELEASE_LEN: usize = 32 + 64;

/// The block key of a stream (§2.6), released by the origin gateway once enough receipts came
/// in. Signed, not sealed: once released the key is meant for every gateway, and what matters is
/// that nobody but the origin can release a (wrong) key for its stream. Payload: `key [32]`,
/// `signature [64]`: the origin's Ed25519 signature over
/// `seal::key_release_signing_input(stream, key)`, checked against the origin key
/// named in the stream's signed manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyReleaseRepr {
    pub stream: u64,
    pub key: [u8; 32],
    pub signature: [u8; 64],
}

impl<'a> Body<'a> for KeyReleaseRepr {
    const TYPE: MessageType = MessageType::KeyRelease;
    const NAME: &'static str = "key release";
    fn from_parts(h: &HeaderRepr, payload: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(Self::NAME, payload);
        Ok(KeyReleaseRepr {
            stream: h.stream,
            key: r.array()?,
            signature: r.array()?,
        })
    }
    fn fields(&self) -> Fields {
        Fields {
            stream: self.stream,
            ..Fields::default()
        }
    }
    fn payload_len(&self) -> Result<usize> {
        Ok(KEY_RELEASE_LEN)
    }
    fn write(&self, w: &mut Writer<'_>) {
        w.put(&self.key);
        w.put(&self.signature);
    }
}
impl_repr!(KeyReleaseRepr);

// --- §2.7 Repair request (NACK) -------------------------------------------------------------

const REPAIR_FIXED: usize = 1 + 1 + 2 + 2;
const REPAIR_LIST: u8 = 0;
const REPAIR_BITMAP: u8 = 1;
/// Most indices a list-encoded repair request carries; bitmaps cover longer spans.
pub const MAX_REPAIR_INDICES: usize = (MAX_PAYLOAD - REPAIR_FIXED) / 2;
const MAX_BITMAP_SPAN: usize = (MAX_PAYLOAD - REPAIR_FIXED) * 8;

/// Missing fragments of a stream (§2.7). Payload: `kind u8` (the fragment message type),
/// `encoding u8` (0 list, 1 bitmap), `base u16`, `n u16`, then either `n` × `index u16` (list)
/// or `ceil(n/8)` bytes whose bit `i` (MSB first) set means index `base + i` is missing.
/// The sender picks the shorter encoding; the repr holds the indices sorted and unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairRequestRepr {
    pub stream: u64,
    pub kind: FragmentKind,
    /// Missing indices, sorted ascending, no duplicates, non-empty.
    pub missing: Vec<u16>,
}

impl RepairRequestRepr {
    /// Builds a request, sorting and deduplicating `missing`.
    pub fn new(stream: u64, kind: FragmentKind, mut missing: Vec<u16>) -> Self {
        missing.sort_unstable();
        missing.dedup();
        RepairRequestRepr {
            stream,
            kind,
            missing,
        }
    }

    fn check(&self) -> Result<()> {
        if self.missing.is_empty() {
            return Err(Error::BadField { field: "missing" });
        }
        if self.missing.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::BadField { field: "missing" });
        }
        Ok(())
    }

    /// (encoding, span) the emitter will use.
    fn encoding(&self) -> (u8, usize) {
        let (first, last) = (self.missing[0], self.missing[self.missing.len() - 1]);
        let span = usize::from(last - first) + 1;
        if span.div_ceil(8) < 2 * self.missing.len() {
            (REPAIR_BITMAP, span)
        } else {
            (REPAIR_LIST, self.missing.len())
        }
    }
}

impl<'a> Body<'a> for RepairRequestRepr {
    const TYPE: MessageType = MessageType::RepairRequest;
    const NAME: &'static str = "repair request";
    fn from_parts(h: &HeaderRepr, payload: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(Self::NAME, payload);
        let kind = MessageType::from_u8(r.u8()?)
            .ok()
            .and_then(FragmentKind::from_msg_type)
            .ok_or(Error::BadField { field: "kind" })?;
        let encoding = r.u8()?;
        let base = r.u16()?;
        let n = usize::from(r.u16()?);
        if n == 0 {
            return Err(Error::BadField { field: "n" });
        }
        let mut missing = match encoding {
            REPAIR_LIST => {
                let mut v = Vec::with_capacity(n.min(MAX_REPAIR_INDICES));
                for _ in 0..n {
                    v.push(r.u16()?);
                }
                v
            }
            REPAIR_BITMAP => {
                if usize::from(base) + n > 1 << 16 {
                    return Err(Error::BadField { field: "n" });
                }
                let bits = r.take(n.div_ceil(8))?;
                (0..n)
                    .filter(|&i| bits[i / 8] & (0x80 >> (i % 8)) != 0)
                    // base + i <= 65535 checked above.
                    .map(|i| base + i as u16)
                    .collect()
            }
            _ => return Err(Error::BadField { field: "encoding" }),
        };
        missing.sort_unstable();
        missing.dedup();
        let repr = RepairRequestRepr {
            stream: h.stream,
            kind,
            missing,
        };
        repr.check()?;
        Ok(repr)
    }
    fn fields(&self) -> Fields {
        Fields {
            stream: self.stream,
            ..Fields::default()
        }
    }
    fn payload_len(&self) -> Result<usize> {
        self.check()?;
        let len = match self.encoding() {
            (REPAIR_BITMAP, span) if span <= MAX_BITMAP_SPAN => REPAIR_FIXED + span.div_ceil(8),
            (REPAIR_LIST, n) if n <= MAX_REPAIR_INDICES => REPAIR_FIXED + 2 * n,
            (_, n) => {
                let len = HEADER_LEN + REPAIR_FIXED + n.div_ceil(8).min(2 * n);
                return Err(Error::TooLong {
                    len,
                    max: MAX_DATAGRAM,
                });
            }
        };
        Ok(len)
    }
    fn write(&self, w: &mut Writer<'_>) {
        let (encoding, n) = self.encoding();
        let base = self.missing[0];
        w.put(&[self.kind.msg_type().as_u8(), encoding]);
        w.put(&(if encoding == REPAIR_BITMAP { base } else { 0 }).to_be_bytes());
        // payload_len() checked n against the datagram bound, far below u16::MAX.
        w.put(&(n as u16).to_be_bytes());
        if encoding == REPAIR_BITMAP {
            let start = w.pos;
            let nbytes = n.div_ceil(8);
            w.put(&vec![0u8; nbytes]);
            for &i in &self.missing {
                let bit = usize::from(i - base);
                w.buf[start + bit / 8] |= 0x80 >> (bit % 8);
            }
        } else {
            for i in &self.missing {
                w.put(&i.to_be_bytes());
            }
        }
    }
}
impl_repr!(RepairRequestRepr);

// --- §2.8 Registration ----------------------------------------------------------------------

/// Payload length of a registration.
pub const REGISTER_LEN: usize = 32 + 32 + 16 + 8 + 64;

/// A gateway registers with a relay (§2.8). Header sender: 0 (the relay assigns the node id).
/// Payload: `identity [32]` (Ed25519 public key), `ephemeral [32]` (X25519 public key for the hop
/// session key, §4.2), `nonce [16]`, `timestamp_ms u64` (Unix time), `signature [64]`: Ed25519 by
/// `identity` over [`RegisterRepr::signing_input`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterRepr {
    pub identity: [u8; 32],
    pub ephemeral: [u8; 32],
    pub nonce: [u8; 16],
    pub timestamp_ms: u64,
    pub signature: [u8; 64],
}

impl RegisterRepr {
    /// Domain separation for the registration signature.
    pub const DOMAIN: &'static [u8; 20] = b"photon/register/v1\0\0";

    /// The bytes the gateway signs: domain, then the payload up to the signature.
    pub fn signing_input(&self) -> [u8; 20 + 32 + 32 + 16 + 8] {
        let mut out = [0u8; 108];
        out[..20].copy_from_slice(Self::DOMAIN);
        out[20..52].copy_from_slice(&self.identity);
        out[52..84].copy_from_slice(&self.ephemeral);
        out[84..100].copy_from_slice(&self.nonce);
        out[100..].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        out
    }
}

impl<'a> Body<'a> for RegisterRepr {
    const TYPE: MessageType = MessageType::Register;
    const NAME: &'static str = "register";
    fn from_parts(_: &HeaderRepr, payload: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(Self::NAME, payload);
        Ok(RegisterRepr {
            identity: r.array()?,
            ephemeral: r.array()?,
            nonce: r.array()?,
            timestamp_ms: r.u64()?,
            signature: r.array()?,
        })
    }
    fn payload_len(&self) -> Result<usize> {
        Ok(REGISTER_LEN)
    }
    fn write(&self, w: &mut Writer<'_>) {
        w.put(&self.identity);
        w.put(&self.ephemeral);
        w.put(&self.nonce);
        w.put(&self.timestamp_ms.to_be_bytes());
        w.put(&self.signature);
    }
}
impl_repr!(RegisterRepr);

/// Payload length of a registration ack.
pub const REGISTER_ACK_LEN: usize = 1 + 4 + 32 + 32 + 16 + 8 + 4 + 64;

/// Registration status codes (§2.9). Unknown codes mean "rejected, reason unknown".
pub mod register_status {
    pub const ACCEPTED: u8 = 0;
    /// The identity is not on the relay's allow list.
    pub const UNKNOWN_IDENTITY: u8 = 1;
    /// The registration signature does not verify.
    pub const BAD_SIGNATURE: u8 = 2;
    /// The timestamp is outside the relay's window, or the nonce was seen.
    pub const STALE: u8 = 3;
    /// The relay is full.
    pub const BUSY: u8 = 4;
}

/// The relay's answer to a registration (§2.9). Header sender: the relay's node id. Payload:
/// `status u8`, `node_id u32` (the gateway's node id from now on), `identity [32]` (relay's
/// Ed25519 key), `ephemeral [32]` (relay's X25519 key), `nonce [16]` (echo of the request's),
/// `timestamp_ms u64`, `keepalive_ms u32` (how often the relay wants keepalives),
/// `signature [64]`: Ed25519 by the relay over [`RegisterAckRepr::signing_input`], which also
/// covers the gateway's ephemeral key so the two ephemerals are bound together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterAckRepr {
    pub status: u8,
    pub node_id: u32,
    pub identity: [u8; 32],
    pub ephemeral: [u8; 32],
    pub nonce: [u8; 16],
    pub timestamp_ms: u64,
    pub keepalive_ms: u32,
    pub signature: [u8; 64],
}

impl RegisterAckRepr {
    /// Domain separation for the ack signature.
    pub const DOMAIN: &'static [u8; 20] = b"photon/register-ack1";

    /// The bytes the relay signs: domain, the gateway's ephemeral key, then the payload up to
    /// the signature.
    pub fn signing_input(&self, gateway_ephemeral: &[u8; 32]) -> [u8; 20 + 32 + 97] {
        let mut out = [0u8; 149];
        out[..20].copy_from_slice(Self::DOMAIN);
        out[20..52].copy_from_slice(gateway_ephemeral);
        out[52] = self.status;
        out[53..57].copy_from_slice(&self.node_id.to_be_bytes());
        out[57..89].copy_from_slice(&self.identity);
        out[89..121].copy_from_slice(&self.ephemeral);
        out[121..137].copy_from_slice(&self.nonce);
        out[137..145].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        out[145..].copy_from_slice(&self.keepalive_ms.to_be_bytes());
        out
    }
}

impl<'a> Body<'a> for RegisterAckRepr {
    const TYPE: MessageType = MessageType::RegisterAck;
    const NAME: &'static str = "register ack";
    fn from_parts(_: &HeaderRepr, payload: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(Self::NAME, payload);
        Ok(RegisterAckRepr {
            status: r.u8()?,
            node_id: r.u32()?,
            identity: r.array()?,
            ephemeral: r.array()?,
            nonce: r.array()?,
            timestamp_ms: r.u64()?,
            keepalive_ms: r.u32()?,
            signature: r.array()?,
        })
    }
    fn payload_len(&self) -> Result<usize> {
        Ok(REGISTER_ACK_LEN)
    }
    fn write(&self, w: &mut Writer<'_>) {
        w.put(&[self.status]);
        w.put(&self.node_id.to_be_bytes());
        w.put(&self.identity);
        w.put(&self.ephemeral);
        w.put(&self.nonce);
        w.put(&self.timestamp_ms.to_be_bytes());
        w.put(&self.keepalive_ms.to_be_bytes());
        w.put(&self.signature);
    }
}
impl_repr!(RegisterAckRepr);

// --- §2.10 Keepalive ------------------------------------------------------------------------

/// Liveness (§2.10). Payload: `seq u32` (the sender's counter), `echo u32` (the last `seq`
/// received from the peer, for round-trip measurement; 0 if none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepaliveRepr {
    pub seq: u32,
    pub echo: u32,
}

impl<'a> Body<'a> for KeepaliveRepr {
    const TYPE: MessageType = MessageType::Keepalive;
    const NAME: &'static str = "keepalive";
    fn from_parts(_: &HeaderRepr, payload: &'a [u8]) -> Result<Self> {
        let mut r = Reader::new(Self::NAME, payload);
        Ok(KeepaliveRepr {
            seq: r.u32()?,
            echo: r.u32()?,
        })
    }
    fn payload_len(&self) -> Result<usize> {
        Ok(8)
    }
    fn write(&self, w: &mut Writer<'_>) {
        w.put(&self.seq.to_be_bytes());
        w.put(&self.echo.to_be_bytes());
    }
}
impl_repr!(KeepaliveRepr);

// --- Any message ----------------------------------------------------------------------------

/// Any message's meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    Fragment(FragmentRepr<'a>),
    Transaction(TransactionRepr<'a>),
    ShortIdAssign(ShortIdAssignRepr),
    TxRequest(TxRequestRepr),
    Receipt(ReceiptRepr),
    KeyRelease(KeyReleaseRepr),
    RepairRequest(RepairRequestRepr),
    Register(RegisterRepr),
    RegisterAck(RegisterAckRepr),
    Keepalive(KeepaliveRepr),
}

impl Message<'_> {
    /// The message type.
    pub fn msg_type(&self) -> MessageType {
        match self {
            Message::Fragment(f) => f.kind.msg_type(),
            Message::Transaction(_) => MessageType::Transaction,
            Message::ShortIdAssign(_) => MessageType::ShortIdAssign,
            Message::TxRequest(_) => MessageType::TxRequest,
            Message::Receipt(_) => MessageType::Receipt,
            Message::KeyRelease(_) => MessageType::KeyRelease,
            Message::RepairRequest(_) => MessageType::RepairRequest,
            Message::Register(_) => MessageType::Register,
            Message::RegisterAck(_) => MessageType::RegisterAck,
            Message::Keepalive(_) => MessageType::Keepalive,
        }
    }
}

/// A whole datagram's meaning: the per-hop header fields plus the message. The hop tag is not
/// part of it: [`Repr::emit`] writes zero there and [`crate::hopauth`] signs in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repr<'a> {
    /// Node id of the hop sender.
    pub sender: u32,
    /// Relay hops travelled.
    pub hops: u8,
    /// Header flag bits ([`crate::wire::flags`]).
    pub flags: u8,
    pub message: Message<'a>,
}

impl<'a> Repr<'a> {
    /// A datagram as its sender first sends it: no hops travelled, no flags.
    pub fn new(sender: u32, message: Message<'a>) -> Repr<'a> {
        Repr {
            sender,
            hops: 0,
            flags: 0,
            message,
        }
    }

    /// Parses any datagram.
    pub fn parse<T: AsRef<[u8]>>(packet: &'a Packet<T>) -> Result<Repr<'a>> {
        let header = HeaderRepr::parse(packet)?;
        let payload = packet.payload();
        let message = match header.msg_type {
            MessageType::SourceShard | MessageType::RepairShard | MessageType::Manifest => {
                Message::Fragment(FragmentRepr::from_header(&header, payload)?)
            }
            MessageType::Transaction => {
                Message::Transaction(TransactionRepr::from_parts(&header, payload)?)
            }
            MessageType::ShortIdAssign => {
                Message::ShortIdAssign(ShortIdAssignRepr::from_parts(&header, payload)?)
            }
            MessageType::TxRequest => {
                Message::TxRequest(TxRequestRepr::from_parts(&header, payload)?)
            }
            MessageType::Receipt => Message::Receipt(ReceiptRepr::from_parts(&header, payload)?),
            MessageType::KeyRelease => {
                Message::KeyRelease(KeyReleaseRepr::from_parts(&header, payload)?)
            }
            MessageType::RepairRequest => {
                Message::RepairRequest(RepairRequestRepr::from_parts(&header, payload)?)
            }
            MessageType::Register => Message::Register(RegisterRepr::from_parts(&header, payload)?),
            MessageType::RegisterAck => {
                Message::RegisterAck(RegisterAckRepr::from_parts(&header, payload)?)
            }
            MessageType::Keepalive => {
                Message::Keepalive(KeepaliveRepr::from_parts(&header, payload)?)
            }
        };
        Ok(Repr {
            sender: header.sender,
            hops: header.hops,
            flags: header.flags,
            message,
        })
    }

    /// Datagram length [`Repr::emit`] writes, or the error emit would return.
    pub fn buffer_len(&self) -> Result<usize> {
        match &self.message {
            Message::Fragment(f) => f.check().map(|()| f.buffer_len()),
            Message::Transaction(m) => m.buffer_len(),
            Message::ShortIdAssign(m) => m.buffer_len(),
            Message::TxRequest(m) => m.buffer_len(),
            Message::Receipt(m) => m.buffer_len(),
            Message::KeyRelease(m) => m.buffer_len(),
            Message::RepairRequest(m) => m.buffer_len(),
            Message::Register(m) => m.buffer_len(),
            Message::RegisterAck(m) => m.buffer_len(),
            Message::Keepalive(m) => m.buffer_len(),
        }
    }

    /// Writes the datagram into `buf` (hop tag zero); returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let (s, f, h) = (self.sender, self.flags, self.hops);
        match &self.message {
            Message::Fragment(m) => m.emit(s, f, h, buf),
            Message::Transaction(m) => m.emit(s, f, h, buf),
            Message::ShortIdAssign(m) => m.emit(s, f, h, buf),
            Message::TxRequest(m) => m.emit(s, f, h, buf),
            Message::Receipt(m) => m.emit(s, f, h, buf),
            Message::KeyRelease(m) => m.emit(s, f, h, buf),
            Message::RepairRequest(m) => m.emit(s, f, h, buf),
            Message::Register(m) => m.emit(s, f, h, buf),
            Message::RegisterAck(m) => m.emit(s, f, h, buf),
            Message::Keepalive(m) => m.emit(s, f, h, buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Header bytes 0..36 with the given type, payload length, stream, sender, index and count
    /// (no flags, no hops, K = R = 0, tag 0), written out field by field as on the wire.
    fn hdr(ty: u8, len: u16, stream: u64, sender: u32, index: u16, count: u16) -> Vec<u8> {
        let mut h = vec![0x50, 0x68, 0x01, ty, 0x00, 0x00];
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(&stream.to_be_bytes());
        h.extend_from_slice(&sender.to_be_bytes());
        h.extend_from_slice(&index.to_be_bytes());
        h.extend_from_slice(&count.to_be_bytes());
        h.extend_from_slice(&[0; 4 + 8]);
        h
    }

    /// Parses `bytes`, checks the repr, and checks that emitting it gives `bytes` back.
    fn golden(bytes: &[u8], expect: Repr<'_>) {
        let p = Packet::new_checked(bytes).unwrap();
        let repr = Repr::parse(&p).unwrap();
        assert_eq!(repr, expect);
        assert_eq!(repr.buffer_len(), Ok(bytes.len()));
        let mut buf = [0u8; MAX_DATAGRAM];
        let n = repr.emit(&mut buf).unwrap();
        assert_eq!(&buf[..n], bytes);
    }

    fn repr(sender: u32, message: Message<'_>) -> Repr<'_> {
        Repr {
            sender,
            hops: 0,
            flags: 0,
            message,
        }
    }

    #[test]
    fn golden_keepalive() {
        let bytes = [
            0x50, 0x68, 0x01, 0x32, 0x00, 0x00, 0x00, 0x08, // magic, v1, keepalive, len 8
            0, 0, 0, 0, 0, 0, 0, 0, // stream
            0, 0, 0, 5, // sender 5
            0, 0, 0, 0, 0, 0, 0, 0, // index, count, K, R
            0, 0, 0, 0, 0, 0, 0, 0, // hop tag
            0, 0, 0, 1, 0, 0, 0, 2, // seq 1, echo 2
        ];
        golden(
            &bytes,
            repr(5, Message::Keepalive(KeepaliveRepr { seq: 1, echo: 2 })),
        );
    }

    #[test]
    fn golden_transaction_with_and_without_short_id() {
        let mut with = hdr(0x10, 18, 0x77, 3, 0, 1);
        with.extend_from_slice(&[
            0x01, // has short ID
            0xca, 0xfe, 0xba, 0xbe, // short ID
            0, 0, 0, 3, // tx_len 3
            0, 0, 0, 0, // offset 0
            0, 3, // data_len 3
            0x02, 0x00, 0x00, // data
        ]);
        let tx = TransactionRepr {
            transfer: 0x77,
            index: 0,
            count: 1,
            short_id: Some(0xcafe_babe),
            tx_len: 3,
            offset: 0,
            data: &[0x02, 0x00, 0x00],
        };
        golden(&with, repr(3, Message::Transaction(tx)));

        // Second fragment of a 5-byte tx, no short ID.
        let mut without = hdr(0x10, 17, 0x78, 3, 1, 2);
        without.extend_from_slice(&[0x00, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 3, 0, 2, 0xaa, 0xbb]);
        let tx = TransactionRepr {
            transfer: 0x78,
            index: 1,
            count: 2,
            short_id: None,
            tx_len: 5,
            offset: 3,
            data: &[0xaa, 0xbb],
        };
        golden(&without, repr(3, Message::Transaction(tx)));
    }

    #[test]
    fn golden_short_id_assign() {
        let mut bytes = hdr(0x11, 2 + 36 * 2, 0, 1, 0, 0);
        bytes.extend_from_slice(&[0, 2]);
        bytes.extend_from_slice(&[0x11; 32]);
        bytes.extend_from_slice(&[0, 0, 0, 1]);
        bytes.extend_from_slice(&[0x22; 32]);
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xfe]);
        let m = ShortIdAssignRepr {
            entries: vec![([0x11; 32], 1), ([0x22; 32], 0xffff_fffe)],
        };
        golden(&bytes, repr(1, Message::ShortIdAssign(m)));
    }

    #[test]
    fn golden_tx_request() {
        let mut bytes = hdr(0x12, 10, 9, 2, 0, 0);
        bytes.extend_from_slice(&[0, 2, 0, 0, 0, 7, 0x80, 0, 0, 0]);
        let m = TxRequestRepr {
            stream: 9,
            short_ids: vec![7, 0x8000_0000],
        };
        golden(&bytes, repr(2, Message::TxRequest(m)));
    }

    #[test]
    fn golden_receipt_and_key_release() {
        let mut bytes = hdr(0x20, 32, 0x0102, 4, 0, 0);
        bytes.extend_from_slice(&[0xab; 32]);
        let m = ReceiptRepr::unsigned(0x0102, [0xab; 32]);
        golden(&bytes, repr(4, Message::Receipt(m)));

        let mut bytes = hdr(0x21, 96, 0x0102, 4, 0, 0);
        bytes.extend_from_slice(&[0x4b; 32]);
        bytes.extend_from_slice(&[0x5e; 64]);
        let m = KeyReleaseRepr {
            stream: 0x0102,
            key: [0x4b; 32],
            signature: [0x5e; 64],
        };
        golden(&bytes, repr(4, Message::KeyRelease(m)));
    }

    #[test]
    fn golden_signed_receipt() {
        // The wire bytes of the signed receipt whose signature `seal`'s tests check against
        // an independent implementation.
        let (public, signature) = crate::seal::tests::receipt_golden();
        let mut bytes = hdr(0x20, 128, 0x0102, 4, 0, 0);
        bytes.extend_from_slice(&[0xab; 32]); // manifest_hash
        bytes.extend_from_slice(&public); // receiver
        bytes.extend_from_slice(&signature); // signature
        let m = ReceiptRepr {
            stream: 0x0102,
            manifest_hash: [0xab; 32],
            signed: Some((public, signature)),
        };
        golden(&bytes, repr(4, Message::Receipt(m)));
    }

    #[test]
    fn receipt_lengths_legacy_signed_and_truncated() {
        let parse = |len: usize| {
            let mut b = hdr(0x20, len as u16, 9, 1, 0, 0);
            b.extend((0..len).map(|i| i as u8));
            let p = Packet::new_checked(&b[..]).unwrap();
            ReceiptRepr::parse(&p)
        };
        // 32 bytes: the legacy unsigned receipt still parses.
        let legacy = parse(32).unwrap();
        assert_eq!(legacy.signed, None);
        assert_eq!(legacy.buffer_len(), Ok(HEADER_LEN + RECEIPT_LEN));
        // 128 bytes: signed; the tail is (receiver, signature) in that order.
        let signed = parse(128).unwrap();
        let (receiver, signature) = signed.signed.unwrap();
        assert_eq!(receiver[0], 32);
        assert_eq!(signature[0], 64);
        assert_eq!(signed.buffer_len(), Ok(HEADER_LEN + SIGNED_RECEIPT_LEN));
        // Bytes after the signed tail are a later version's: ignored (§2.0).
        let longer = parse(140).unwrap();
        assert_eq!(longer, signed);
        assert_eq!(longer.buffer_len(), Ok(HEADER_LEN + SIGNED_RECEIPT_LEN));
        // A short hash or a truncated tail is no receipt.
        for len in [0, 31, 33, 64, 96, 127] {
            assert_eq!(
                parse(len),
                Err(Error::BadLength {
                    msg: "receipt",
                    len
                }),
                "{len}"
            );
        }
    }

    #[test]
    fn golden_repair_request_list_and_bitmap() {
        // Sparse: list of 2 repair-shard indices.
        let mut bytes = hdr(0x22, 10, 5, 6, 0, 0);
        bytes.extend_from_slice(&[0x02, 0x00, 0, 0, 0, 2, 0x00, 0x03, 0x01, 0x00]);
        let m = RepairRequestRepr::new(5, FragmentKind::Repair, vec![256, 3]);
        golden(&bytes, repr(6, Message::RepairRequest(m)));

        // Dense: source shards 10, 11, 12, 17 -> bitmap from base 10, 8 bits.
        let mut bytes = hdr(0x22, 7, 5, 6, 0, 0);
        bytes.extend_from_slice(&[0x01, 0x01, 0, 10, 0, 8, 0b1110_0001]);
        let m = RepairRequestRepr::new(5, FragmentKind::Source, vec![17, 10, 11, 12]);
        golden(&bytes, repr(6, Message::RepairRequest(m)));
    }

    #[test]
    fn golden_register_and_ack() {
        let mut bytes = hdr(0x30, 152, 0, 0, 0, 0);
        bytes.extend_from_slice(&[0x01; 32]); // identity
        bytes.extend_from_slice(&[0x02; 32]); // ephemeral
        bytes.extend_from_slice(&[0x03; 16]); // nonce
        bytes.extend_from_slice(&[0, 0, 1, 0x8b, 0xcf, 0xe5, 0x68, 0x00]); // 1_700_000_000_000 ms
        bytes.extend_from_slice(&[0x04; 64]); // signature
        let m = RegisterRepr {
            identity: [1; 32],
            ephemeral: [2; 32],
            nonce: [3; 16],
            timestamp_ms: 1_700_000_000_000,
            signature: [4; 64],
        };
        golden(&bytes, repr(0, Message::Register(m)));
        assert_eq!(&m.signing_input()[..20], b"photon/register/v1\0\0");

        let mut bytes = hdr(0x31, 161, 0, 100, 0, 0);
        bytes.push(0); // accepted
        bytes.extend_from_slice(&[0, 0, 0, 42]); // node id 42
        bytes.extend_from_slice(&[0x05; 32]);
        bytes.extend_from_slice(&[0x06; 32]);
        bytes.extend_from_slice(&[0x03; 16]);
        bytes.extend_from_slice(&[0, 0, 1, 0x8b, 0xcf, 0xe5, 0x68, 0x01]);
        bytes.extend_from_slice(&[0, 0, 0x03, 0xe8]); // keepalive 1000 ms
        bytes.extend_from_slice(&[0x07; 64]);
        let m = RegisterAckRepr {
            status: register_status::ACCEPTED,
            node_id: 42,
            identity: [5; 32],
            ephemeral: [6; 32],
            nonce: [3; 16],
            timestamp_ms: 1_700_000_000_001,
            keepalive_ms: 1000,
            signature: [7; 64],
        };
        golden(&bytes, repr(100, Message::RegisterAck(m)));
    }

    #[test]
    fn trailing_payload_bytes_are_ignored() {
        // A later version appended 3 bytes to a keepalive: an old peer still reads it.
        let mut bytes = hdr(0x32, 11, 0, 5, 0, 0);
        bytes.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2, 0xee, 0xee, 0xee]);
        let p = Packet::new_checked(&bytes[..]).unwrap();
        let r = Repr::parse(&p).unwrap();
        assert_eq!(
            r.message,
            Message::Keepalive(KeepaliveRepr { seq: 1, echo: 2 })
        );
        assert_eq!(r.buffer_len(), Ok(HEADER_LEN + 8));
    }

    #[test]
    fn bad_payloads_get_typed_errors() {
        let parse = |bytes: &[u8]| Repr::parse(&Packet::new_checked(bytes).unwrap()).unwrap_err();
        // Receipt short by one byte.
        let mut b = hdr(0x20, 31, 1, 1, 0, 0);
        b.extend_from_slice(&[0; 31]);
        assert_eq!(
            parse(&b),
            Error::BadLength {
                msg: "receipt",
                len: 31
            }
        );
        // Short-ID list announcing more entries than follow.
        let mut b = hdr(0x11, 2 + 36, 0, 1, 0, 0);
        b.extend_from_slice(&[0, 2]);
        b.extend_from_slice(&[0; 36]);
        assert_eq!(
            parse(&b),
            Error::BadLength {
                msg: "short-ID assignment",
                len: 38
            }
        );
        // Transaction data running past tx_len.
        let mut b = hdr(0x10, 17, 1, 1, 0, 1);
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 1, 2]);
        assert_eq!(parse(&b), Error::BadField { field: "offset" });
        // Repair request with an unknown kind and one with an unknown encoding.
        let mut b = hdr(0x22, 8, 1, 1, 0, 0);
        b.extend_from_slice(&[0x10, 0, 0, 0, 0, 1, 0, 1]);
        assert_eq!(parse(&b), Error::BadField { field: "kind" });
        b[HEADER_LEN] = 0x01;
        b[HEADER_LEN + 1] = 9;
        assert_eq!(parse(&b), Error::BadField { field: "encoding" });
        // Bitmap running past index 65535.
        let mut b = hdr(0x22, 7, 1, 1, 0, 0);
        b.extend_from_slice(&[0x01, 0x01, 0xff, 0xff, 0, 2, 0xc0]);
        assert_eq!(parse(&b), Error::BadField { field: "n" });
        // A kind-specific parser refuses another kind.
        let mut b = hdr(0x32, 8, 0, 1, 0, 0);
        b.extend_from_slice(&[0; 8]);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(
            ReceiptRepr::parse(&p),
            Err(Error::WrongType {
                expected: "receipt",
                got: 0x32
            })
        );
        // Empty tx request.
        let mut b = hdr(0x12, 2, 1, 1, 0, 0);
        b.extend_from_slice(&[0, 0]);
        assert_eq!(parse(&b), Error::BadField { field: "n" });
    }

    #[test]
    fn emit_refuses_what_cannot_fit() {
        let m = TxRequestRepr {
            stream: 0,
            short_ids: vec![1; MAX_TX_REQUEST_IDS + 1],
        };
        assert!(matches!(m.buffer_len(), Err(Error::TooLong { .. })));
        let m = TxRequestRepr {
            stream: 0,
            short_ids: vec![1; MAX_TX_REQUEST_IDS],
        };
        let mut buf = [0u8; MAX_DATAGRAM];
        assert!(m.emit(0, 0, 0, &mut buf).unwrap() <= MAX_DATAGRAM);
        // A repair request whose indices neither list nor bitmap can carry in one datagram.
        let missing: Vec<u16> = (0..=65535u16).step_by(2).collect();
        let m = RepairRequestRepr::new(1, FragmentKind::Source, missing);
        assert!(matches!(m.buffer_len(), Err(Error::TooLong { .. })));
        // Too small an output buffer.
        let k = KeepaliveRepr { seq: 0, echo: 0 };
        assert_eq!(
            k.emit(0, 0, 0, &mut buf[..40]),
            Err(Error::BufferTooSmall { need: 44, got: 40 })
        );
    }
}
