//! Bitcoin P2P framing over a byte stream that may start mid-message or lose bytes.
//!
//! [`StreamDecoder`] is fed in-order stream bytes ([`StreamDecoder::push`]) and told where bytes
//! were lost ([`StreamDecoder::gap`]); it hands out whole messages. A stream whose start was not
//! seen, or that lost bytes, is *unsynchronised*: bytes are skipped up to the next known network
//! magic, and a candidate header is accepted only once its payload's checksum matches (a magic
//! inside a transaction is then just skipped one byte further). Memory is bounded by one frame
//! ([`MAX_PAYLOAD_LEN`] + 24 bytes) plus the last chunk pushed.
//!
//! Captures from before 2012 (Bitcoin 0.5 and older) carry `version` and `verack` with the
//! original 20-byte header, without the checksum field: a node sent a checksum only once it knew
//! its peer's version was 209 or later, so the messages exchanged before that had none (0.6.0
//! sends it always). [`LEGACY_COMMANDS`] are also tried as 20-byte frames when the 24-byte
//! reading fails; with no checksum to confirm them, such a frame is accepted only if the `bitcoin`
//! crate decodes its payload using exactly its length. A `version` from before protocol 70001
//! (BIP 37) ends without the `relay` byte, which the crate requires; it is decoded as
//! `relay = true`, what BIP 37 says such a peer means.
//!
//! Message encodings are the `bitcoin` crate's (`RawNetworkMessage`); this module only frames.

use bitcoin::consensus::encode::deserialize_partial;
use bitcoin::hashes::{sha256d, Hash};
use bitcoin::p2p::message::{NetworkMessage, RawNetworkMessage};
use bitcoin::p2p::Magic;

/// Bytes of a P2P header: magic (4), command (12), payload length (4), checksum (4).
pub const HEADER_LEN: usize = 24;
/// Bytes of the pre-2012 header of [`LEGACY_COMMANDS`]: no checksum.
pub const LEGACY_HEADER_LEN: usize = 20;
/// Commands that old nodes sent with the 20-byte header (those sent before the peer's version
/// was known).
pub const LEGACY_COMMANDS: [&str; 2] = ["version", "verack"];
/// Largest payload accepted (Bitcoin Core's `MAX_PROTOCOL_MESSAGE_LENGTH`).
pub const MAX_PAYLOAD_LEN: usize = 4_000_000;

/// Magics of the networks a capture may carry: mainnet, testnet3, testnet4, signet, regtest.
pub const KNOWN_MAGICS: [[u8; 4]; 5] = [
    [0xf9, 0xbe, 0xb4, 0xd9],
    [0x0b, 0x11, 0x09, 0x07],
    [0x1c, 0x16, 0x3f, 0x28],
    [0x0a, 0x03, 0xcf, 0x40],
    [0xfa, 0xbf, 0xb5, 0xda],
];

/// What the decoder counted (drops are counted, never logged).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FrameStats {
    /// Whole frames whose checksum matched.
    pub frames: u64,
    /// Frames that passed the checksum but whose payload the `bitcoin` crate refused.
    pub undecodable: u64,
    /// Bytes skipped while looking for a magic (mid-stream start, after a gap, non-Bitcoin data).
    pub skipped_bytes: u64,
    /// Times the decoder lost (or never had) its framing and had to resynchronise.
    pub resyncs: u64,
    /// Candidate headers after a magic that turned out to be false (bad command, oversize,
    /// checksum mismatch).
    pub false_magics: u64,
    /// Frames read with the pre-2012 20-byte header (no checksum), included in `frames`.
    pub legacy_headers: u64,
    /// `version` messages without the BIP 37 `relay` byte (protocol before 70001), decoded as
    /// `relay = true`.
    pub version_without_relay: u64,
}

/// One decoded frame, with the caller's tag of the chunk that completed it.
#[derive(Debug, Clone)]
pub struct Frame<T> {
    pub magic: Magic,
    pub message: NetworkMessage,
    /// Bytes of the frame (header and payload).
    pub wire_len: usize,
    /// The tag passed to the [`StreamDecoder::push`] whose bytes completed this frame.
    pub tag: T,
}

/// A Bitcoin P2P frame decoder for one direction of one stream. See the module docs.
#[derive(Debug)]
pub struct StreamDecoder {
    buf: Vec<u8>,
    /// Start of the unread bytes in `buf`.
    start: usize,
    synced: bool,
    stats: FrameStats,
}

impl StreamDecoder {
    /// A decoder for a stream whose first byte is the first byte of a message (`synced`, e.g.
    /// after a TCP SYN) or of unknown position (`!synced`, e.g. a capture that started
    /// mid-stream).
    pub fn new(synced: bool) -> Self {
        StreamDecoder {
            buf: Vec::new(),
            start: 0,
            synced,
            stats: FrameStats {
                resyncs: u64::from(!synced),
                ..FrameStats::default()
            },
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &FrameStats {
        &self.stats
    }

    /// Bytes buffered (at most one frame plus the last chunk).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Bytes were lost before the next [`StreamDecoder::push`]: what is buffered is dropped and
    /// the decoder resynchronises on the next magic.
    pub fn gap(&mut self) {
        self.stats.skipped_bytes += self.buffered() as u64;
        self.buf.clear();
        self.start = 0;
        if self.synced {
            self.synced = false;
            self.stats.resyncs += 1;
        }
    }

    /// Feed in-order bytes; every frame they complete is passed to `out` with `tag`.
    pub fn push<T: Clone>(&mut self, bytes: &[u8], tag: T, out: &mut impl FnMut(Frame<T>)) {
        // Compact before growing: keeps the buffer at one frame plus this chunk.
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
        while let Some(frame) = self.next_frame(&tag) {
            out(frame);
        }
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// One frame from the buffer, or `None` when more bytes are needed.
    fn next_frame<T: Clone>(&mut self, tag: &T) -> Option<Frame<T>> {
        loop {
            let avail = &self.buf[self.start..];
            if !self.synced {
                match find_magic(avail) {
                    Some(at) => {
                        self.stats.skipped_bytes += at as u64;
                        self.start += at;
                    }
                    None => {
                        // Keep the last 3 bytes: a magic may straddle chunks.
                        let keep = avail.len().min(3);
                        let skip = avail.len() - keep;
                        self.stats.skipped_bytes += skip as u64;
                        self.start += skip;
                        return None;
                    }
                }
            }
            let avail = &self.buf[self.start..];
            if avail.len() < HEADER_LEN {
                return None;
            }
            match check_header(avail) {
                Ok(len) => {
                    let total = HEADER_LEN + len;
                    if avail.len() < total {
                        // A legacy frame may be complete while the 24-byte reading waits for
                        // bytes that belong to the next message.
                        // It must then be followed by the next message's magic, or a 24-byte
                        // frame cut by the chunk could be taken for a legacy one.
                        match self.legacy_frame(tag, true) {
                            Legacy::Frame(f) => return Some(f),
                            Legacy::Not | Legacy::NeedMore => return None,
                        }
                    }
                    let checksum = sha256d::Hash::hash(&avail[HEADER_LEN..total]);
                    if checksum.as_byte_array()[..4] != avail[20..24] {
                        match self.legacy_frame(tag, false) {
                            Legacy::Frame(f) => return Some(f),
                            Legacy::NeedMore => return None,
                            Legacy::Not => {
                                self.header_refused();
                                continue;
                            }
                        }
                    }
                    self.stats.frames += 1;
                    self.synced = true;
                    let decoded = decode(&avail[..total], false, &mut self.stats);
                    self.start += total;
                    match decoded {
                        Some((magic, message)) => {
                            return Some(Frame {
                                magic,
                                message,
                                wire_len: total,
                                tag: tag.clone(),
                            })
                        }
                        None => self.stats.undecodable += 1,
                    }
                }
                Err(()) => self.header_refused(),
            }
        }
    }

    /// The bytes at `start` read as a 20-byte-header frame of a [`LEGACY_COMMANDS`] command;
    /// with `next_magic`, only if a known magic follows it.
    fn legacy_frame<T: Clone>(&mut self, tag: &T, next_magic: bool) -> Legacy<T> {
        let avail = &self.buf[self.start..];
        let Some(len) = legacy_header(avail) else {
            return Legacy::Not;
        };
        let total = LEGACY_HEADER_LEN + len;
        let Some(payload) = avail.get(LEGACY_HEADER_LEN..total) else {
            return Legacy::NeedMore;
        };
        if next_magic {
            match avail.get(total..total + 4) {
                None => return Legacy::NeedMore,
                Some(m) if !KNOWN_MAGICS.iter().any(|k| k == m) => return Legacy::Not,
                Some(_) => {}
            }
        }
        // The same frame with the checksum the `bitcoin` crate expects.
        let mut full = Vec::with_capacity(HEADER_LEN + len);
        full.extend_from_slice(&avail[..LEGACY_HEADER_LEN]);
        full.extend_from_slice(&sha256d::Hash::hash(payload).as_byte_array()[..4]);
        full.extend_from_slice(payload);
        let mut stats = self.stats.clone();
        let Some((magic, message)) = decode(&full, true, &mut stats) else {
            return Legacy::Not;
        };
        self.stats = stats;
        self.stats.frames += 1;
        self.stats.legacy_headers += 1;
        self.synced = true;
        self.start += total;
        Legacy::Frame(Frame {
            magic,
            message,
            wire_len: total,
            tag: tag.clone(),
        })
    }

    /// The header at `start` is not a frame: if we thought we were in sync we are not any more;
    /// either way look for the next magic one byte further.
    fn header_refused(&mut self) {
        if self.synced {
            self.synced = false;
            self.stats.resyncs += 1;
        } else {
            self.stats.false_magics += 1;
        }
        self.stats.skipped_bytes += 1;
        self.start += 1;
    }
}

enum Legacy<T> {
    Frame(Frame<T>),
    /// It may be one, once more bytes come.
    NeedMore,
    /// It is not one.
    Not,
}

/// A whole 24-byte-header frame (checksum already checked) decoded by the `bitcoin` crate; with
/// `exact` (a frame no checksum confirmed), only if it used the payload exactly. A `version`
/// without its `relay` byte is decoded with `relay = true` (see the module docs).
fn decode(frame: &[u8], exact: bool, stats: &mut FrameStats) -> Option<(Magic, NetworkMessage)> {
    if let Ok((raw, used)) = deserialize_partial::<RawNetworkMessage>(frame) {
        if used == frame.len() && !(exact && trailing_payload(&raw, frame.len())) {
            return Some((*raw.magic(), raw.into_payload()));
        }
        return None;
    }
    if frame.get(4..16) != Some(b"version\0\0\0\0\0".as_slice()) {
        return None;
    }
    let mut with_relay = Vec::with_capacity(frame.len() + 1);
    with_relay.extend_from_slice(&frame[..16]);
    let len = u32::try_from(frame.len() - HEADER_LEN + 1).ok()?;
    with_relay.extend_from_slice(&len.to_le_bytes());
    let payload = &frame[HEADER_LEN..];
    let mut payload_relay = payload.to_vec();
    payload_relay.push(1);
    with_relay.extend_from_slice(&sha256d::Hash::hash(&payload_relay).as_byte_array()[..4]);
    with_relay.extend_from_slice(&payload_relay);
    let (raw, used) = deserialize_partial::<RawNetworkMessage>(&with_relay).ok()?;
    // Exact in any case: the relay byte must be what completes the payload.
    if used != with_relay.len() || trailing_payload(&raw, with_relay.len()) {
        return None;
    }
    stats.version_without_relay += 1;
    Some((*raw.magic(), raw.into_payload()))
}

/// Whether the crate decoded the message from fewer bytes than its payload (it ignores the
/// rest): re-encoding gives the length it used. Only for rare frames (legacy ones): it costs a
/// serialisation.
fn trailing_payload(raw: &RawNetworkMessage, frame_len: usize) -> bool {
    // Unknown commands keep their whole payload; the others must re-encode to the same size.
    !matches!(raw.payload(), NetworkMessage::Unknown { .. })
        && bitcoin::consensus::encode::serialize(raw).len() != frame_len
}

/// Checks a 20-byte legacy header of one of [`LEGACY_COMMANDS`] and returns its payload length.
fn legacy_header(h: &[u8]) -> Option<usize> {
    let magic: [u8; 4] = h.get(..4)?.try_into().ok()?;
    if !KNOWN_MAGICS.contains(&magic) {
        return None;
    }
    let command = h.get(4..16)?;
    if !LEGACY_COMMANDS.iter().any(|c| {
        let mut padded = [0u8; 12];
        padded[..c.len()].copy_from_slice(c.as_bytes());
        command == padded
    }) {
        return None;
    }
    let len = u32::from_le_bytes(h.get(16..20)?.try_into().ok()?) as usize;
    (len <= MAX_PAYLOAD_LEN).then_some(len)
}

/// Position of the first known magic in `bytes`.
fn find_magic(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| KNOWN_MAGICS.iter().any(|m| m == w))
}

/// Checks a 24-byte header (known magic, NUL-padded printable ASCII command, length within the
/// limit) and returns the payload length.
fn check_header(h: &[u8]) -> Result<usize, ()> {
    let magic: [u8; 4] = h.get(..4).and_then(|m| m.try_into().ok()).ok_or(())?;
    if !KNOWN_MAGICS.contains(&magic) {
        return Err(());
    }
    let command = h.get(4..16).ok_or(())?;
    let name_len = command.iter().position(|&b| b == 0).unwrap_or(12);
    if name_len == 0
        || !command[..name_len].iter().all(|b| b.is_ascii_graphic())
        || !command[name_len..].iter().all(|&b| b == 0)
    {
        return Err(());
    }
    let len_bytes: [u8; 4] = h.get(16..20).and_then(|l| l.try_into().ok()).ok_or(())?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len > MAX_PAYLOAD_LEN {
        return Err(());
    }
    Ok(len)
}

/// A mainnet message `cmd` in the pre-2012 framing: the 20-byte header (no checksum) Bitcoin
/// 0.3-0.5 sent `version` and `verack` with. For test captures: `cmd` is at most 12 bytes.
pub fn legacy_frame(cmd: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Magic::BITCOIN.to_bytes().to_vec();
    let mut c = [0u8; 12];
    c[..cmd.len()].copy_from_slice(cmd.as_bytes());
    out.extend(c);
    out.extend((payload.len() as u32).to_le_bytes());
    out.extend(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::consensus::encode::serialize;

    fn frame(msg: NetworkMessage) -> Vec<u8> {
        serialize(&RawNetworkMessage::new(Magic::BITCOIN, msg))
    }

    fn decode_all(dec: &mut StreamDecoder, chunks: &[&[u8]]) -> Vec<NetworkMessage> {
        let mut got = Vec::new();
        for c in chunks {
            dec.push(c, (), &mut |f: Frame<()>| got.push(f.message));
        }
        got
    }

    #[test]
    fn synced_stream_in_one_byte_chunks() {
        let mut bytes = frame(NetworkMessage::Ping(7));
        bytes.extend(frame(NetworkMessage::Verack));
        let mut dec = StreamDecoder::new(true);
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        let got = decode_all(&mut dec, &chunks);
        assert_eq!(got, vec![NetworkMessage::Ping(7), NetworkMessage::Verack]);
        assert_eq!(dec.stats().skipped_bytes, 0);
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn mid_stream_start_skips_to_next_frame() {
        let first = frame(NetworkMessage::Ping(1));
        let mut bytes = first[5..].to_vec();
        bytes.extend(frame(NetworkMessage::Pong(2)));
        let mut dec = StreamDecoder::new(false);
        let got = decode_all(&mut dec, &[&bytes]);
        assert_eq!(got, vec![NetworkMessage::Pong(2)]);
        assert_eq!(dec.stats().skipped_bytes, first.len() as u64 - 5);
    }

    #[test]
    fn false_magic_inside_payload_is_skipped() {
        // A ping whose nonce contains the mainnet magic, seen from the middle of its header.
        let nonce = u64::from_le_bytes([0xf9, 0xbe, 0xb4, 0xd9, 1, 2, 3, 4]);
        let ping = frame(NetworkMessage::Ping(nonce));
        let mut bytes = ping[10..].to_vec();
        bytes.extend(frame(NetworkMessage::Pong(9)));
        let mut dec = StreamDecoder::new(false);
        let got = decode_all(&mut dec, &[&bytes]);
        assert_eq!(got, vec![NetworkMessage::Pong(9)]);
        assert!(dec.stats().false_magics >= 1);
    }

    #[test]
    fn gap_resynchronises() {
        let a = frame(NetworkMessage::Ping(1));
        let b = frame(NetworkMessage::Ping(2));
        let c = frame(NetworkMessage::Ping(3));
        let mut dec = StreamDecoder::new(true);
        let mut got = decode_all(&mut dec, &[&a, &b[..10]]);
        dec.gap();
        // b[10..20] is lost; the rest of b and all of c arrive.
        got.extend(decode_all(&mut dec, &[&b[20..], &c]));
        assert_eq!(got, vec![NetworkMessage::Ping(1), NetworkMessage::Ping(3)]);
        assert_eq!(dec.stats().resyncs, 1);
    }

    #[test]
    fn corrupted_header_in_sync_resynchronises() {
        let mut a = frame(NetworkMessage::Ping(1));
        a[5] = 0x01; // command byte not printable
        let b = frame(NetworkMessage::Ping(2));
        let mut dec = StreamDecoder::new(true);
        let got = decode_all(&mut dec, &[&a, &b]);
        assert_eq!(got, vec![NetworkMessage::Ping(2)]);
        assert_eq!(dec.stats().resyncs, 1);
    }

    fn old_version() -> (bitcoin::p2p::message_network::VersionMessage, Vec<u8>) {
        use bitcoin::p2p::address::Address;
        use bitcoin::p2p::ServiceFlags;
        let a = Address::new(&"10.1.2.3:8333".parse().unwrap(), ServiceFlags::NETWORK);
        let v = bitcoin::p2p::message_network::VersionMessage {
            version: 32200,
            services: ServiceFlags::NETWORK,
            timestamp: 1_310_000_000,
            receiver: a.clone(),
            sender: a,
            nonce: 0x1234_5678_9abc_def0,
            user_agent: "/Satoshi:0.3.22/".into(),
            start_height: 135_000,
            relay: true,
        };
        let mut bytes = serialize(&v);
        bytes.pop(); // no relay byte before protocol 70001
        (v, bytes)
    }

    fn legacy_stream() -> (Vec<u8>, Vec<NetworkMessage>) {
        let (v, payload) = old_version();
        // A 2011 `version` (protocol 32200, no BIP 37 `relay` byte) and `verack`.
        let mut bytes = legacy_frame("version", &payload);
        bytes.extend(legacy_frame("verack", &[]));
        bytes.extend(frame(NetworkMessage::Ping(5)));
        let want = vec![
            NetworkMessage::Version(v),
            NetworkMessage::Verack,
            NetworkMessage::Ping(5),
        ];
        (bytes, want)
    }

    #[test]
    fn legacy_20_byte_headers_whole_and_byte_by_byte() {
        let (bytes, want) = legacy_stream();
        for chunk in [bytes.len(), 1, 7] {
            let mut dec = StreamDecoder::new(true);
            let chunks: Vec<&[u8]> = bytes.chunks(chunk).collect();
            let got = decode_all(&mut dec, &chunks);
            assert_eq!(got, want, "chunks of {chunk}");
            let s = dec.stats();
            assert_eq!(
                (s.frames, s.legacy_headers, s.version_without_relay),
                (3, 2, 1)
            );
            assert_eq!(
                (s.resyncs, s.skipped_bytes, s.false_magics),
                (0, 0, 0),
                "{s:?}"
            );
        }
    }

    #[test]
    fn legacy_headers_found_mid_stream() {
        let (bytes, want) = legacy_stream();
        let mut stream = frame(NetworkMessage::Ping(1))[9..].to_vec();
        stream.extend(&bytes);
        let mut dec = StreamDecoder::new(false);
        assert_eq!(decode_all(&mut dec, &[&stream]), want);
        assert_eq!(dec.stats().legacy_headers, 2);
    }

    #[test]
    fn modern_verack_cut_after_20_bytes_is_not_taken_for_legacy() {
        let mut bytes = frame(NetworkMessage::Verack);
        bytes.extend(frame(NetworkMessage::Ping(2)));
        let mut dec = StreamDecoder::new(true);
        let got = decode_all(&mut dec, &[&bytes[..20], &bytes[20..22], &bytes[22..]]);
        assert_eq!(got, vec![NetworkMessage::Verack, NetworkMessage::Ping(2)]);
        assert_eq!(dec.stats().legacy_headers, 0);
        assert_eq!(dec.stats().skipped_bytes, 0);
    }

    #[test]
    fn modern_version_without_relay_byte() {
        // 2012-2013 nodes (protocol 60001-70000): checksum present, no relay byte.
        let (v, payload) = old_version();
        let mut bytes = Magic::BITCOIN.to_bytes().to_vec();
        bytes.extend(b"version\0\0\0\0\0");
        bytes.extend((payload.len() as u32).to_le_bytes());
        bytes.extend(&sha256d::Hash::hash(&payload).as_byte_array()[..4]);
        bytes.extend(&payload);
        let mut dec = StreamDecoder::new(true);
        assert_eq!(
            decode_all(&mut dec, &[&bytes]),
            vec![NetworkMessage::Version(v)]
        );
        assert_eq!(dec.stats().version_without_relay, 1);
        assert_eq!(dec.stats().legacy_headers, 0);
    }
}
