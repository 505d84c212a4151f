//! Framing on UDP and the message kinds (`docs/protocol.md` §1 and §2).
//!
//! Every Photon datagram is a fixed 36-byte common header followed by a message payload, at most
//! [`MAX_DATAGRAM`] bytes in all. The header alone tells a relay what to do with a datagram
//! (classify, dedup, fan out, authenticate the previous hop) without reading the payload.
//!
//! Two layers, in the smoltcp manner:
//! - [`Packet`] is a zero-copy view over any byte buffer (`T: AsRef<[u8]>`, `AsMut` for setters):
//!   a socket buffer, a DPDK mbuf's data slice, a `Vec`. After [`Packet::new_checked`] (or
//!   [`Packet::check_len`]) succeeded, no accessor panics.
//! - `Repr`s are the parsed, validated, owned-or-borrowed meaning: [`HeaderRepr`], [`FragmentRepr`]
//!   for block fragments, and [`Repr`] / [`Message`] for every message kind. Each has `parse`,
//!   `emit` and `buffer_len`; `parse(emit(parse(x))) == parse(x)` for every `x` that parses.
//!
//! All integers are big-endian (network order).

mod fragment;
mod header;
mod message;

pub use fragment::{FragmentKind, FragmentRepr};
pub use header::{field, HeaderRepr, Packet};
pub use message::{
    register_status, KeepaliveRepr, KeyReleaseRepr, Message, ReceiptRepr, RegisterAckRepr,
    RegisterRepr, RepairRequestRepr, Repr, ShortIdAssignRepr, TransactionRepr, TxRequestRepr,
    KEY_RELEASE_LEN, MAX_REPAIR_INDICES, MAX_SHORT_ID_ASSIGNMENTS, MAX_TX_LEN, MAX_TX_REQUEST_IDS,
    REGISTER_ACK_LEN, REGISTER_LEN,
};

/// Most bytes of UDP payload a Photon datagram may carry (§1.1). 1232 = 1280 (the IPv6 minimum
/// MTU) - 40 (IPv6 header) - 8 (UDP header): it crosses any path without IP fragmentation.
pub const MAX_DATAGRAM: usize = 1232;

/// Length of the common header every datagram starts with (§1.2).
pub const HEADER_LEN: usize = field::HOP_TAG.end;

/// The two magic bytes every datagram starts with: ASCII `"Ph"`.
pub const MAGIC: u16 = 0x5068;

/// The protocol version this library speaks (§1.4).
pub const VERSION: u8 = 1;

/// Largest number of source shards (K) or repair shards (R) in one block's Reed-Solomon code
/// (§3): the limit of `reed-solomon-simd`, which also bounds K + R to 65536.
pub const MAX_SHARDS: u16 = 32768;

/// Bytes of message payload that fit in one datagram after the common header (§1.1): the most a
/// block fragment (source shard, repair shard, manifest fragment) can carry. 1196 in version 1.
pub const fn max_fragment_payload() -> usize {
    MAX_DATAGRAM - HEADER_LEN
}

/// Header flag bits (§1.3). Senders set unknown bits to zero; receivers ignore them, so a later
/// version can give them a meaning without breaking older peers.
pub mod flags {
    /// The fragment is a retransmission answering a repair request (§2.8), unicast to the
    /// requester; relays do not fan it out again.
    pub const RETRANSMIT: u8 = 0x01;
}

/// Why a datagram or message was rejected. Every variant is a counted drop at the caller, never
/// a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The buffer is shorter than the header, or than the header plus the announced payload.
    #[error("truncated: need {need} bytes, got {got}")]
    Truncated { need: usize, got: usize },
    /// The announced payload length would make the datagram exceed [`MAX_DATAGRAM`].
    #[error("datagram of {len} bytes exceeds the maximum of {max}")]
    TooLong { len: usize, max: usize },
    /// The first two bytes are not [`MAGIC`]: not a Photon datagram.
    #[error("bad magic {0:#06x}")]
    BadMagic(u16),
    /// A version this library does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// A message type this library does not know.
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    /// A kind-specific parser was handed a datagram of another kind.
    #[error("expected a {expected} datagram, got type {got:#04x}")]
    WrongType { expected: &'static str, got: u8 },
    /// The payload length does not fit the message kind (e.g. a receipt shorter than its fixed
    /// part, or a list whose count does not match the bytes that follow).
    #[error("bad payload length for {msg}: {len} bytes")]
    BadLength { msg: &'static str, len: usize },
    /// A field holds a value outside its allowed range (e.g. fragment index >= count, K = 0).
    #[error("field {field} out of range")]
    BadField { field: &'static str },
    /// The output buffer passed to an `emit` is too small.
    #[error("output buffer too small: need {need} bytes, got {got}")]
    BufferTooSmall { need: usize, got: usize },
}

/// Result with a wire [`Error`].
pub type Result<T> = core::result::Result<T, Error>;

/// The message kinds (§2). The value is the header's type byte.
///
/// Types `0x01..=0x0f` are block fragments: relays fan them out cut-through to every subscribed
/// peer, keyed for dedup by (stream, type, index). Everything else is control traffic handled by
/// the relay's or gateway's slow path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum MessageType {
    /// A Reed-Solomon source shard of a sealed block (§2.1).
    SourceShard = 0x01,
    /// A Reed-Solomon repair shard (§2.1).
    RepairShard = 0x02,
    /// A fragment of the block's signed manifest (§2.1, §4.1).
    Manifest = 0x03,
    /// A transaction, with or without its short ID (§2.2).
    Transaction = 0x10,
    /// Relay-assigned short IDs: tx hash -> 32-bit short ID (§2.3).
    ShortIdAssign = 0x11,
    /// A gateway asks for transactions it lacks, by short ID (§2.4).
    TxRequest = 0x12,
    /// "I hold stream X" (§2.5).
    Receipt = 0x20,
    /// The block key of a stream, released after receipts (§2.6).
    KeyRelease = 0x21,
    /// A NACK: missing fragment indices of a stream (§2.7).
    RepairRequest = 0x22,
    /// A gateway registers with a relay (§2.8).
    Register = 0x30,
    /// The relay's answer to a registration (§2.9).
    RegisterAck = 0x31,
    /// Liveness, and NAT binding refresh (§2.10).
    Keepalive = 0x32,
}

impl MessageType {
    /// Every message type, in type-byte order.
    pub const ALL: [MessageType; 12] = [
        MessageType::SourceShard,
        MessageType::RepairShard,
        MessageType::Manifest,
        MessageType::Transaction,
        MessageType::ShortIdAssign,
        MessageType::TxRequest,
        MessageType::Receipt,
        MessageType::KeyRelease,
        MessageType::RepairRequest,
        MessageType::Register,
        MessageType::RegisterAck,
        MessageType::Keepalive,
    ];

    /// The type for a header's type byte.
    pub const fn from_u8(value: u8) -> Result<Self> {
        Ok(match value {
            0x01 => MessageType::SourceShard,
            0x02 => MessageType::RepairShard,
            0x03 => MessageType::Manifest,
            0x10 => MessageType::Transaction,
            0x11 => MessageType::ShortIdAssign,
            0x12 => MessageType::TxRequest,
            0x20 => MessageType::Receipt,
            0x21 => MessageType::KeyRelease,
            0x22 => MessageType::RepairRequest,
            0x30 => MessageType::Register,
            0x31 => MessageType::RegisterAck,
            0x32 => MessageType::Keepalive,
            other => return Err(Error::UnknownType(other)),
        })
    }

    /// The header's type byte.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// Block fragments are fanned out by relays; everything else is control traffic.
    pub const fn is_block_fragment(self) -> bool {
        (self as u8) < 0x10
    }

    /// Whether the header's stream field names a block stream for this kind (§1.2).
    pub const fn has_stream(self) -> bool {
        matches!(
            self,
            MessageType::SourceShard
                | MessageType::RepairShard
                | MessageType::Manifest
                | MessageType::Receipt
                | MessageType::KeyRelease
                | MessageType::RepairRequest
        )
    }
}

impl TryFrom<u8> for MessageType {
    type Error = Error;
    fn try_from(value: u8) -> Result<Self> {
        MessageType::from_u8(value)
    }
}

impl From<MessageType> for u8 {
    fn from(value: MessageType) -> u8 {
        value as u8
    }
}

#[cfg(feature = "fuzzing")]
/// Fuzz entry (`fuzz/fuzz_targets/wire_packet.rs`, replayed by `protocol/tests/fuzz_corpus_wire.rs`).
///
/// Parses any bytes as a datagram of any kind; whatever parses must emit to exactly
/// `buffer_len()` bytes and parse back to the same `Repr`, and the view's accessors must not
/// panic. Panics (the fuzzer's signal) only if an invariant breaks.
pub fn fuzz_packet(data: &[u8]) {
    let Ok(packet) = Packet::new_checked(data) else {
        return;
    };
    // Every accessor, raw, on any checked buffer.
    let _ = (
        packet.magic(),
        packet.version(),
        packet.msg_type_raw(),
        packet.flags(),
        packet.hops(),
        packet.sender(),
        packet.stream(),
        packet.index(),
        packet.count(),
        packet.k(),
        packet.r(),
        packet.hop_tag(),
        packet.header().len(),
        packet.payload().len(),
        packet.datagram().len(),
    );
    assert_eq!(packet.payload().len(), usize::from(packet.payload_len()));

    if let Ok(header) = HeaderRepr::parse(&packet) {
        let mut buf = [0u8; MAX_DATAGRAM];
        let n = header.emit(&mut buf).expect("a parsed header re-emits");
        assert_eq!(n, HEADER_LEN);
        let len = HEADER_LEN + usize::from(header.payload_len);
        let again = Packet::new_checked(&buf[..len]).expect("emitted header checks");
        assert_eq!(HeaderRepr::parse(&again), Ok(header));
        assert_eq!(again.hop_tag(), 0);
    }

    let Ok(repr) = Repr::parse(&packet) else {
        return;
    };
    let len = repr.buffer_len().expect("a parsed repr has a length");
    assert!(len <= MAX_DATAGRAM, "a parsed repr fits a datagram");
    let mut buf = [0u8; MAX_DATAGRAM];
    let written = repr.emit(&mut buf).expect("a parsed repr re-emits");
    assert_eq!(written, len);
    let again = Packet::new_checked(&buf[..written]).expect("emitted datagram checks");
    let reparsed = Repr::parse(&again).expect("emitted datagram parses");
    assert_eq!(reparsed, repr);
    // Emit is a pure function of the repr: emitting the reparsed repr gives the same bytes.
    let mut buf2 = [0u8; MAX_DATAGRAM];
    let written2 = reparsed.emit(&mut buf2).expect("re-emit");
    assert_eq!(buf[..written], buf2[..written2]);
}
