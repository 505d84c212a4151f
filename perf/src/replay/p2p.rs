//! Bitcoin P2P framing over a byte stream that may start mid-message or lose bytes.
//!
//! [`StreamDecoder`] is fed in-order stream bytes ([`StreamDecoder::push`]) and told where bytes
//! were lost ([`StreamDecoder::gap`]); it hands out whole messages. A stream whose start was not
//! seen, or that lost bytes, is *unsynchronised*: bytes are skipped up to the next known network
//! magic, and a candidate header is accepted only once its payload's checksum matches (a magic
//! inside a transaction is then just skipped one byte further). Memory is bounded by one frame
//! ([`MAX_PAYLOAD_LEN`] + 24 bytes) plus the last chunk pushed.
//!
//! Message encodings are the `bitcoin` crate's (`RawNetworkMessage`); this module only frames.

use bitcoin::consensus::encode::deserialize_partial;
use bitcoin::hashes::{sha256d, Hash};
use bitcoin::p2p::message::{NetworkMessage, RawNetworkMessage};
use bitcoin::p2p::Magic;

/// Bytes of a P2P header: magic (4), command (12), payload length (4), checksum (4).
pub const HEADER_LEN: usize = 24;
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
                        return None;
                    }
                    let checksum = sha256d::Hash::hash(&avail[HEADER_LEN..total]);
                    if checksum.as_byte_array()[..4] != avail[20..24] {
                        self.header_refused();
                        continue;
                    }
                    self.stats.frames += 1;
                    self.synced = true;
                    let decoded = deserialize_partial::<RawNetworkMessage>(&avail[..total]);
                    self.start += total;
                    match decoded {
                        Ok((raw, _)) => {
                            return Some(Frame {
                                magic: *raw.magic(),
                                message: raw.into_payload(),
                                wire_len: total,
                                tag: tag.clone(),
                            })
                        }
                        Err(_) => self.stats.undecodable += 1,
                    }
                }
                Err(()) => self.header_refused(),
            }
        }
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
}
