//! Fuzz entry points (`fuzz/fuzz_targets/node_frames.rs`); `gateway/tests/fuzz_corpus_node.rs`
//! replays the corpus through the same function.

use bitcoin::p2p::Magic;

use crate::node::codec::{decode_all, encode_message, FrameDecoder, HEADER_LEN};

/// Any bytes as the Bitcoin P2P stream from the node, through [`FrameDecoder`].
///
/// The first input byte picks the payload limit and how the rest is cut into reads (as a
/// socket would return it); the rest is the stream. Checked invariants: the decoder never
/// buffers more than one frame plus the last read; after a fatal error it refuses everything
/// with the same error; every decoded message re-encodes and decodes to itself; the same
/// stream pushed in one piece gives the same messages and errors in the same order.
pub fn fuzz_node_frames(data: &[u8]) {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let max_payload = match control & 0x3 {
        0 => 64,
        1 => 1 << 10,
        2 => 1 << 16,
        _ => crate::node::codec::MAX_PAYLOAD_LEN,
    };
    let chunk = usize::from(control >> 2) + 1;
    let magic = Magic::BITCOIN;

    let chunked = decode(magic, max_payload, stream, chunk);
    let whole = decode(magic, max_payload, stream, stream.len().max(1));
    assert_eq!(chunked, whole, "results depend on how the stream was cut");

    for msg in chunked.into_iter().flatten() {
        let mut bytes = Vec::new();
        let (_, msg) = encode_message(&mut bytes, magic, msg);
        let again = decode_all(magic, &bytes).expect("a re-encoded message decodes");
        assert_eq!(again, vec![msg], "decode(encode(m)) != m");
    }
}

type Outcome = Result<bitcoin::p2p::message::NetworkMessage, String>;

/// Pushes `stream` in reads of `chunk` bytes, draining after each; returns every message or
/// error in order (a fatal error ends the list).
fn decode(magic: Magic, max_payload: usize, stream: &[u8], chunk: usize) -> Vec<Outcome> {
    let mut d = FrameDecoder::with_max_payload(magic, max_payload);
    let mut out = Vec::new();
    for read in stream.chunks(chunk) {
        d.push(read);
        loop {
            match d.next_message() {
                Ok(Some(m)) => out.push(Ok(m)),
                Ok(None) => break,
                Err(e) => {
                    let fatal = e.is_fatal();
                    out.push(Err(e.to_string()));
                    if fatal {
                        // Refused for good: the same error again, nothing buffered.
                        d.push(b"more bytes");
                        assert_eq!(
                            d.next_message().map_err(|e2| e2.to_string()),
                            Err(e.to_string())
                        );
                        assert_eq!(d.buffered(), 0);
                        return out;
                    }
                }
            }
        }
        assert!(
            d.buffered() <= HEADER_LEN + max_payload + read.len(),
            "decoder holds {} bytes",
            d.buffered()
        );
    }
    out
}
