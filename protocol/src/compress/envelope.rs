//! Unsealed block payloads (docs/protocol.md §6.9): the baseline with encryption off.
//!
//! A sealed payload (§5.1) is ciphertext and tag, indistinguishable from random bytes. An
//! unsealed one is [`PLAIN_MAGIC`] (16 bytes) followed by the encoded block (§6.3, §6.8). The
//! receiver tells them apart by the first 16 bytes: a sealed payload starts with them with
//! probability 2^-128, and even then its "block" fails to decode (a typed error, never a wrong
//! block: the chain adapter checks the merkle root). Both are what FEC encodes and the origin's
//! signed manifest hashes (§4.1), so no relay can turn one into the other. The magic is as long
//! as the AEAD tag: a block costs the same bytes on the wire sealed or not.

/// First 16 bytes of an unsealed payload.
pub const PLAIN_MAGIC: [u8; 16] = *b"photon/plain/v1\0";

/// The unsealed payload of an encoded block.
pub fn wrap_plain(encoded: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PLAIN_MAGIC.len() + encoded.len());
    out.extend_from_slice(&PLAIN_MAGIC);
    out.extend_from_slice(encoded);
    out
}

/// The encoded block of an unsealed payload; `None` when `payload` is not one (sealed).
pub fn unwrap_plain(payload: &[u8]) -> Option<&[u8]> {
    payload.strip_prefix(&PLAIN_MAGIC[..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap() {
        let p = wrap_plain(b"\x01\x00abc");
        assert_eq!(p.len(), 16 + 5);
        assert_eq!(unwrap_plain(&p), Some(&b"\x01\x00abc"[..]));
        assert_eq!(unwrap_plain(&p[1..]), None);
        assert_eq!(unwrap_plain(&PLAIN_MAGIC[..15]), None);
        assert_eq!(unwrap_plain(&PLAIN_MAGIC), Some(&[][..]));
    }
}
