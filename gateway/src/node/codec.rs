//! Framing of the Bitcoin P2P byte stream: a 24-byte header (magic, command, payload length,
//! checksum) then the payload.
//!
//! The decoder is fed whatever the socket returned ([`FrameDecoder::push`]) and hands out whole
//! messages ([`FrameDecoder::next_message`]). It reads the header as soon as 24 bytes are in, so
//! a wrong magic or an oversize length is refused before its payload is buffered: the buffer
//! never holds more than one frame (at most [`MAX_PAYLOAD_LEN`] + 24 bytes) plus the last chunk
//! pushed. Every encoding (header fields, checksum, payloads) is the `bitcoin` crate's.

use bitcoin::consensus::encode::{self, deserialize, deserialize_partial, Encodable};
use bitcoin::p2p::message::{CommandString, NetworkMessage, RawNetworkMessage};
use bitcoin::p2p::Magic;

/// Bytes of a message header: magic (4), command (12), payload length (4), checksum (4).
pub const HEADER_LEN: usize = 24;

/// Largest payload accepted: Bitcoin Core's `MAX_PROTOCOL_MESSAGE_LENGTH` (4,000,000 bytes),
/// which also bounds a block (4,000,000 weight units serialize to at most 4,000,000 bytes).
pub const MAX_PAYLOAD_LEN: usize = 4_000_000;

/// Why a frame of the stream was refused.
///
/// [`FrameError::is_fatal`] says whether the stream is lost (its framing can no longer be
/// trusted: the connection must be closed) or only that one message was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The first four bytes are not this network's magic: wrong network or a desynchronised
    /// stream. Fatal.
    #[error("bad magic {got:02x?}, expected {expected:02x?}")]
    BadMagic { expected: [u8; 4], got: [u8; 4] },
    /// The command is not printable ASCII padded with NULs (Bitcoin Core's rule). Fatal.
    #[error("command field is not NUL-padded printable ASCII: {0:02x?}")]
    BadCommand([u8; 12]),
    /// The header announces a payload longer than the limit. Fatal: skipping it would mean
    /// reading up to 4 GiB from a peer that already broke the protocol.
    #[error("`{command}` announces a {len}-byte payload, over the {max}-byte limit")]
    Oversize {
        command: String,
        len: u32,
        max: usize,
    },
    /// The payload's double-SHA256 does not start with the header's checksum. The message is
    /// dropped; the stream goes on (as in Bitcoin Core since 0.22).
    #[error("`{command}` payload fails its checksum")]
    BadChecksum { command: String },
    /// The payload of a known command does not decode. The message is dropped; the stream goes
    /// on.
    #[error("`{command}` payload does not decode: {reason}")]
    BadPayload { command: String, reason: String },
}

impl FrameError {
    /// True when the stream's framing is lost and the connection must be closed.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            FrameError::BadMagic { .. } | FrameError::BadCommand(_) | FrameError::Oversize { .. }
        )
    }
}

/// Incremental decoder of one direction of a P2P connection.
#[derive(Debug)]
pub struct FrameDecoder {
    magic: Magic,
    max_payload: usize,
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf` (consumed bytes are dropped lazily, in `push`).
    start: usize,
    /// Set on a fatal error: the decoder refuses everything after it.
    failed: Option<FrameError>,
}

impl FrameDecoder {
    /// A decoder for `magic`'s network with Bitcoin Core's payload limit.
    pub fn new(magic: Magic) -> Self {
        Self::with_max_payload(magic, MAX_PAYLOAD_LEN)
    }

    /// A decoder with a smaller payload limit (tests, or a peer known to send small messages).
    pub fn with_max_payload(magic: Magic, max_payload: usize) -> Self {
        FrameDecoder {
            magic,
            max_payload: max_payload.min(MAX_PAYLOAD_LEN),
            buf: Vec::new(),
            start: 0,
            failed: None,
        }
    }

    /// Append bytes read from the stream. Call [`Self::next_message`] until it returns
    /// `Ok(None)` before pushing more, so that the buffer stays bounded. Ignored after a fatal
    /// error.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.start > 0 {
            // Moves at most one partial frame: whole frames were consumed by next_message.
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet consumed as messages.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole message, `Ok(None)` if more bytes are needed, or why the next frame was
    /// refused. After a non-fatal error the frame is consumed and decoding goes on with the
    /// next call; after a fatal one every call returns the same error.
    pub fn next_message(&mut self) -> Result<Option<NetworkMessage>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let avail = &self.buf[self.start..];
        let Some(header) = avail.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let header = match parse_header(header, self.magic, self.max_payload) {
            Ok(h) => h,
            Err(e) => {
                self.failed = Some(e.clone());
                self.buf = Vec::new();
                self.start = 0;
                return Err(e);
            }
        };
        let frame_len = HEADER_LEN + header.payload_len;
        let Some(frame) = avail.get(..frame_len) else {
            // Reserve once for the whole frame rather than growing chunk by chunk.
            self.buf.reserve(frame_len - avail.len());
            return Ok(None);
        };
        let decoded = deserialize::<RawNetworkMessage>(frame);
        self.start += frame_len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        match decoded {
            Ok(raw) => Ok(Some(raw.into_payload())),
            Err(encode::Error::InvalidChecksum { .. }) => Err(FrameError::BadChecksum {
                command: header.command,
            }),
            Err(e) => Err(FrameError::BadPayload {
                command: header.command,
                reason: e.to_string(),
            }),
        }
    }
}

struct Header {
    command: String,
    payload_len: usize,
}

/// Header fields through the crate's decoders; `header` is exactly 24 bytes.
fn parse_header(header: &[u8], magic: Magic, max_payload: usize) -> Result<Header, FrameError> {
    let mut got = [0u8; 4];
    got.copy_from_slice(&header[..4]);
    if got != magic.to_bytes() {
        return Err(FrameError::BadMagic {
            expected: magic.to_bytes(),
            got,
        });
    }
    let mut raw_command = [0u8; 12];
    raw_command.copy_from_slice(&header[4..16]);
    if !command_is_valid(&raw_command) {
        return Err(FrameError::BadCommand(raw_command));
    }
    let command = deserialize_partial::<CommandString>(&header[4..16])
        .map_err(|_| FrameError::BadCommand(raw_command))?
        .0
        .to_string();
    let len = deserialize_partial::<u32>(&header[16..20])
        .map_err(|_| FrameError::BadCommand(raw_command))?
        .0;
    let payload_len = len as usize;
    if payload_len > max_payload {
        return Err(FrameError::Oversize {
            command,
            len,
            max: max_payload,
        });
    }
    Ok(Header {
        command,
        payload_len,
    })
}

/// Bitcoin Core's `CMessageHeader::IsCommandValid`: printable ASCII, then only NULs.
fn command_is_valid(raw: &[u8; 12]) -> bool {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    raw[..end].iter().all(|&b| (0x20..=0x7e).contains(&b)) && raw[end..].iter().all(|&b| b == 0)
}

/// Append `msg` framed for `magic` to `out`, and give the message back (a block is moved in and
/// out rather than cloned). Returns the bytes appended.
pub fn encode_message(
    out: &mut Vec<u8>,
    magic: Magic,
    msg: NetworkMessage,
) -> (usize, NetworkMessage) {
    let raw = RawNetworkMessage::new(magic, msg);
    let before = out.len();
    // Writing into a Vec cannot fail.
    let _ = raw.consensus_encode(out);
    (out.len() - before, raw.into_payload())
}

/// Decode every message of a byte string (tests and tools). Stops at the first error.
pub fn decode_all(magic: Magic, bytes: &[u8]) -> Result<Vec<NetworkMessage>, FrameError> {
    let mut decoder = FrameDecoder::new(magic);
    decoder.push(bytes);
    let mut out = Vec::new();
    while let Some(msg) = decoder.next_message()? {
        out.push(msg);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::p2p::message_blockdata::Inventory;
    use bitcoin::p2p::message_compact_blocks::SendCmpct;
    use proptest::prelude::*;

    fn frame(msg: NetworkMessage) -> Vec<u8> {
        let mut out = Vec::new();
        encode_message(&mut out, Magic::BITCOIN, msg);
        out
    }

    #[test]
    fn golden_verack_and_ping() {
        // verack: magic, "verack" padded to 12, length 0, checksum = sha256d("")[..4] = 5df6e0e2.
        let verack = frame(NetworkMessage::Verack);
        let want: &[u8] = &[
            0xf9, 0xbe, 0xb4, 0xd9, b'v', b'e', b'r', b'a', b'c', b'k', 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0x5d, 0xf6, 0xe0, 0xe2,
        ];
        assert_eq!(verack, want);
        let ping = frame(NetworkMessage::Ping(0x0102030405060708));
        assert_eq!(&ping[4..8], b"ping");
        assert_eq!(&ping[16..20], &8u32.to_le_bytes());
        assert_eq!(&ping[24..], &0x0102030405060708u64.to_le_bytes());
    }

    #[test]
    fn partial_reads_byte_by_byte() {
        let mut stream = frame(NetworkMessage::Ping(7));
        stream.extend(frame(NetworkMessage::SendCmpct(SendCmpct {
            send_compact: false,
            version: 2,
        })));
        stream.extend(frame(NetworkMessage::WtxidRelay));
        let mut d = FrameDecoder::new(Magic::BITCOIN);
        let mut got = Vec::new();
        for b in &stream {
            d.push(std::slice::from_ref(b));
            while let Some(m) = d.next_message().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], NetworkMessage::Ping(7));
        assert_eq!(got[2], NetworkMessage::WtxidRelay);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn bad_magic_is_fatal_and_sticky() {
        let mut bytes = frame(NetworkMessage::Verack);
        bytes[0] = 0xfa;
        let mut d = FrameDecoder::new(Magic::BITCOIN);
        d.push(&bytes);
        let e = d.next_message().unwrap_err();
        assert!(matches!(e, FrameError::BadMagic { got, .. } if got[0] == 0xfa));
        assert!(e.is_fatal());
        d.push(&frame(NetworkMessage::Verack));
        assert_eq!(d.next_message().unwrap_err(), e);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn regtest_frame_refused_on_mainnet() {
        let mut out = Vec::new();
        encode_message(&mut out, Magic::REGTEST, NetworkMessage::Verack);
        assert!(matches!(
            decode_all(Magic::BITCOIN, &out),
            Err(FrameError::BadMagic { .. })
        ));
        assert_eq!(
            decode_all(Magic::REGTEST, &out).unwrap(),
            vec![NetworkMessage::Verack]
        );
    }

    #[test]
    fn bad_checksum_drops_one_message_only() {
        let mut bytes = frame(NetworkMessage::Ping(1));
        bytes[20] ^= 1;
        bytes.extend(frame(NetworkMessage::Ping(2)));
        let mut d = FrameDecoder::new(Magic::BITCOIN);
        d.push(&bytes);
        let e = d.next_message().unwrap_err();
        assert_eq!(
            e,
            FrameError::BadChecksum {
                command: "ping".into()
            }
        );
        assert!(!e.is_fatal());
        assert_eq!(d.next_message().unwrap(), Some(NetworkMessage::Ping(2)));
    }

    #[test]
    fn oversize_refused_from_the_header_alone() {
        let mut bytes = frame(NetworkMessage::Ping(1));
        bytes[16..20].copy_from_slice(&(MAX_PAYLOAD_LEN as u32 + 1).to_le_bytes());
        let mut d = FrameDecoder::new(Magic::BITCOIN);
        d.push(&bytes[..HEADER_LEN]);
        let e = d.next_message().unwrap_err();
        assert!(
            matches!(e, FrameError::Oversize { len, .. } if len as usize == MAX_PAYLOAD_LEN + 1)
        );
        assert!(e.is_fatal());
    }

    #[test]
    fn bad_command_is_fatal() {
        let mut bytes = frame(NetworkMessage::Verack);
        bytes[5] = 0; // "v\0rack": bytes after the first NUL
        assert!(matches!(
            decode_all(Magic::BITCOIN, &bytes),
            Err(FrameError::BadCommand(_))
        ));
        let mut bytes = frame(NetworkMessage::Verack);
        bytes[4] = 0x07;
        assert!(matches!(
            decode_all(Magic::BITCOIN, &bytes),
            Err(FrameError::BadCommand(_))
        ));
    }

    #[test]
    fn bad_payload_drops_one_message_only() {
        // A ping with a 3-byte payload (needs 8), correctly checksummed.
        let mut out = Vec::new();
        encode_message(
            &mut out,
            Magic::BITCOIN,
            NetworkMessage::Unknown {
                command: CommandString::try_from_static("ping").unwrap(),
                payload: vec![1, 2, 3],
            },
        );
        out.extend(frame(NetworkMessage::Verack));
        let mut d = FrameDecoder::new(Magic::BITCOIN);
        d.push(&out);
        assert!(matches!(
            d.next_message(),
            Err(FrameError::BadPayload { ref command, .. }) if command == "ping"
        ));
        assert_eq!(d.next_message().unwrap(), Some(NetworkMessage::Verack));
    }

    #[test]
    fn unknown_command_passes_through() {
        let msg = NetworkMessage::Unknown {
            command: CommandString::try_from_static("photonx").unwrap(),
            payload: vec![9; 10],
        };
        assert_eq!(
            decode_all(Magic::BITCOIN, &frame(msg.clone())).unwrap(),
            vec![msg]
        );
    }

    fn arb_message() -> impl Strategy<Value = NetworkMessage> {
        prop_oneof![
            Just(NetworkMessage::Verack),
            Just(NetworkMessage::WtxidRelay),
            Just(NetworkMessage::SendAddrV2),
            Just(NetworkMessage::SendHeaders),
            any::<u64>().prop_map(NetworkMessage::Ping),
            any::<u64>().prop_map(NetworkMessage::Pong),
            (0i64..2_100_000_000_000_000).prop_map(NetworkMessage::FeeFilter),
            (any::<bool>(), 1u64..3).prop_map(|(send_compact, version)| {
                NetworkMessage::SendCmpct(SendCmpct {
                    send_compact,
                    version,
                })
            }),
            proptest::collection::vec(any::<[u8; 32]>(), 0..20).prop_map(|hs| {
                NetworkMessage::Inv(
                    hs.into_iter()
                        .map(|hash| Inventory::Unknown { inv_type: 77, hash })
                        .collect(),
                )
            }),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(|payload| {
                NetworkMessage::Unknown {
                    command: CommandString::try_from_static("photonx").unwrap(),
                    payload,
                }
            }),
        ]
    }

    proptest! {
        /// Fuzz-style: arbitrary bytes, in arbitrary chunks, never panic, and the buffer stays
        /// within one frame plus one chunk.
        #[test]
        fn random_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..4096),
            chunk in 1usize..600,
            valid_prefix in any::<bool>(),
        ) {
            let mut stream = Vec::new();
            if valid_prefix {
                // Valid magic so the decoder gets past the header check more often.
                stream.extend_from_slice(&Magic::BITCOIN.to_bytes());
            }
            stream.extend_from_slice(&bytes);
            let mut d = FrameDecoder::with_max_payload(Magic::BITCOIN, 2048);
            for c in stream.chunks(chunk) {
                d.push(c);
                prop_assert!(d.buffered() <= HEADER_LEN + 2048 + chunk);
                loop {
                    match d.next_message() {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) if e.is_fatal() => break,
                        Err(_) => {}
                    }
                }
            }
        }

        /// Any message sequence, split at arbitrary points, decodes to the same sequence.
        #[test]
        fn round_trip_any_split(
            msgs in proptest::collection::vec(arb_message(), 1..12),
            cuts in proptest::collection::vec(1usize..200, 1..50),
        ) {
            let mut stream = Vec::new();
            for m in &msgs {
                encode_message(&mut stream, Magic::SIGNET, m.clone());
            }
            let mut d = FrameDecoder::new(Magic::SIGNET);
            let mut got = Vec::new();
            let mut rest = &stream[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = cuts[i % cuts.len()].min(rest.len());
                i += 1;
                d.push(&rest[..n]);
                rest = &rest[n..];
                while let Some(m) = d.next_message().unwrap() {
                    got.push(m);
                }
            }
            prop_assert_eq!(got, msgs);
            prop_assert_eq!(d.buffered(), 0);
        }
    }
}
