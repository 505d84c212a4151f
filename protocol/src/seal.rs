//! Sealing blocks end to end (`docs/protocol.md` §5.1), signed key releases (§2.6) and the
//! signing input of receipts (§2.5).
//!
//! The origin gateway seals each block with a fresh random 256-bit key (AES-256-GCM, ring), the
//! stream id bound in as associated data and nonce. Relays forward only sealed bytes and never
//! hold a key. Once enough receipts came in (§7), the origin releases the key in a key-release
//! message signed with its identity (§2.6); receivers check the signature, then open the block.
//!
//! Single use is enforced by the types: a [`SealKey`] seals exactly one block (sealing consumes
//! it) and hands back the [`BlockKey`] that opens it and travels in the key release. Because a key
//! never seals twice, the nonce can be the stream id without risk of nonce reuse.

use crate::identity::{Identity, IdentityError, PublicKey};
use crate::wire::{KeyReleaseRepr, ReceiptRepr};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::SecureRandom;

/// The AEAD (§5.1). AES-256-GCM: with AES-NI and carry-less multiply (every x86-64 server of
/// the last decade, and ARMv8 with crypto extensions) ring runs it several times faster than
/// ChaCha20-Poly1305 on a 1 MB block (both measured in `perf/benches/protocol_wire.rs`).
pub static ALGORITHM: &aead::Algorithm = &aead::AES_256_GCM;

/// Key length in bytes.
pub const KEY_LEN: usize = 32;

/// Bytes a sealed block has beyond its plaintext: the AEAD tag.
pub const TAG_LEN: usize = 16;

/// Associated-data prefix; the stream id follows it.
const AAD_DOMAIN: &[u8; 14] = b"photon/seal/v1";

/// Why sealing or opening failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The random source failed.
    #[error("random source failed")]
    Rng,
    /// The block is too large for the AEAD (AES-GCM: about 64 GB).
    #[error("block too large to seal")]
    TooLarge,
    /// Opening failed: wrong key, wrong stream, or the bytes were altered.
    #[error("sealed block does not authenticate (wrong key, wrong stream, or altered)")]
    Open,
    /// The key release's signature does not verify.
    #[error("key release signature invalid")]
    BadSignature,
}

fn nonce(stream: u64) -> Nonce {
    let mut n = [0u8; aead::NONCE_LEN];
    n[4..].copy_from_slice(&stream.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn aad(stream: u64) -> [u8; 22] {
    let mut a = [0u8; 22];
    a[..14].copy_from_slice(AAD_DOMAIN);
    a[14..].copy_from_slice(&stream.to_be_bytes());
    a
}

fn less_safe(bytes: &[u8; KEY_LEN]) -> LessSafeKey {
    // A 32-byte key is exactly what AES-256-GCM takes, so this cannot fail.
    let unbound = UnboundKey::new(ALGORITHM, bytes).unwrap_or_else(|_| unreachable!());
    LessSafeKey::new(unbound)
}

/// A fresh block key that can seal one block. Debug is redacted.
pub struct SealKey {
    bytes: [u8; KEY_LEN],
}

impl SealKey {
    /// A fresh random key from `rng` (e.g. `ring::rand::SystemRandom`).
    pub fn generate(rng: &dyn SecureRandom) -> Result<SealKey, SealError> {
        let mut bytes = [0u8; KEY_LEN];
        rng.fill(&mut bytes).map_err(|_| SealError::Rng)?;
        Ok(SealKey { bytes })
    }

    /// Seals `block` in place (the 16-byte tag is appended) for `stream`, consuming the key;
    /// returns the key that opens it, to be released later (§2.6).
    pub fn seal_in_place(self, stream: u64, block: &mut Vec<u8>) -> Result<BlockKey, SealError> {
        less_safe(&self.bytes)
            .seal_in_place_append_tag(nonce(stream), Aad::from(aad(stream)), block)
            .map_err(|_| SealError::TooLarge)?;
        Ok(BlockKey { bytes: self.bytes })
    }
}

impl core::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

/// The key that opens one sealed block; what a key release carries. Debug is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct BlockKey {
    bytes: [u8; KEY_LEN],
}

impl BlockKey {
    /// From the bytes of a key release.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> BlockKey {
        BlockKey { bytes }
    }

    /// The bytes, for a key release.
    pub fn to_bytes(&self) -> [u8; KEY_LEN] {
        self.bytes
    }

    /// Opens a sealed block of `stream` in place; returns the plaintext (the buffer minus the
    /// tag). [`SealError::Open`] if the key, the stream or any byte is wrong.
    pub fn open_in_place<'a>(
        &self,
        stream: u64,
        sealed: &'a mut [u8],
    ) -> Result<&'a mut [u8], SealError> {
        less_safe(&self.bytes)
            .open_in_place(nonce(stream), Aad::from(aad(stream)), sealed)
            .map_err(|_| SealError::Open)
    }

    /// Opens a sealed block into a new buffer.
    pub fn open(&self, stream: u64, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut buf = sealed.to_vec();
        let len = self.open_in_place(stream, &mut buf)?.len();
        buf.truncate(len);
        Ok(buf)
    }

    /// The origin's signed key release for `stream` (§2.6).
    pub fn release(&self, stream: u64, origin: &Identity) -> KeyReleaseRepr {
        KeyReleaseRepr {
            stream,
            key: self.bytes,
            signature: origin.sign(&key_release_signing_input(stream, &self.bytes)),
        }
    }

    /// Checks a key release against the origin's public key (from the stream's signed manifest,
    /// §4.1) and returns the key it carries.
    pub fn from_release(
        release: &KeyReleaseRepr,
        origin: &PublicKey,
    ) -> Result<BlockKey, SealError> {
        let input = key_release_signing_input(release.stream, &release.key);
        origin
            .verify(&input, &release.signature)
            .map_err(|_| SealError::BadSignature)?;
        Ok(BlockKey { bytes: release.key })
    }
}

impl core::fmt::Debug for BlockKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("BlockKey(<redacted>)")
    }
}

/// What the origin signs to release a key (§2.6): `"photon/key-release/v1" || stream (u64 BE) ||
/// key`.
pub fn key_release_signing_input(stream: u64, key: &[u8; KEY_LEN]) -> [u8; 21 + 8 + KEY_LEN] {
    let mut out = [0u8; 61];
    out[..21].copy_from_slice(b"photon/key-release/v1");
    out[21..29].copy_from_slice(&stream.to_be_bytes());
    out[29..].copy_from_slice(key);
    out
}

/// Domain of a receipt signature (§2.5).
pub const RECEIPT_DOMAIN: &[u8; 17] = b"photon/receipt/v1";

/// What a receiving gateway signs in a receipt (§2.5): `"photon/receipt/v1" || stream (u64 BE)
/// || manifest_hash`. Domain-separated from every other signature of the protocol (key release,
/// registration, manifest), so a receipt signature is never valid as anything else. The
/// receiver's key is not repeated in the input: an Ed25519 signature already binds it.
pub fn receipt_signing_input(stream: u64, manifest_hash: &[u8; 32]) -> [u8; 17 + 8 + 32] {
    let mut out = [0u8; 57];
    out[..17].copy_from_slice(RECEIPT_DOMAIN);
    out[17..25].copy_from_slice(&stream.to_be_bytes());
    out[25..].copy_from_slice(manifest_hash);
    out
}

/// Signing and checking receipts (§2.5): cryptography on the wire layer's [`ReceiptRepr`],
/// kept here so `wire` depends on no crypto.
impl ReceiptRepr {
    /// A receipt signed by `receiver`, the gateway that holds the block.
    pub fn sign(stream: u64, manifest_hash: [u8; 32], receiver: &Identity) -> ReceiptRepr {
        let input = receipt_signing_input(stream, &manifest_hash);
        ReceiptRepr {
            stream,
            manifest_hash,
            signed: Some((receiver.public_key().0, receiver.sign(&input))),
        }
    }

    /// The receiver this receipt proves holds the block: `Ok(None)` for an unsigned receipt,
    /// `Ok(Some(key))` when the signature verifies under the key it names, else
    /// [`IdentityError::BadSignature`].
    pub fn verify(&self) -> core::result::Result<Option<PublicKey>, IdentityError> {
        let Some((receiver, signature)) = &self.signed else {
            return Ok(None);
        };
        let key = PublicKey(*receiver);
        key.verify(
            &receipt_signing_input(self.stream, &self.manifest_hash),
            signature,
        )?;
        Ok(Some(key))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    /// An identity from a fixed Ed25519 seed, as a PKCS#8 v2 document (ring's layout), so the
    /// signature is deterministic and can be checked against an independent implementation.
    fn seed_identity(seed: u8, public: &[u8; 32]) -> Identity {
        let mut doc = vec![
            0x30, 0x53, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        doc.extend_from_slice(&[seed; 32]);
        doc.extend_from_slice(&[0xa1, 0x23, 0x03, 0x21, 0x00]);
        doc.extend_from_slice(public);
        Identity::from_pkcs8_bytes(&doc).unwrap()
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The signed receipt's golden vector: (receiver key, signature) of stream 0x0102 and
    /// manifest hash ab * 32, computed independently with Python's `cryptography` (OpenSSL)
    /// Ed25519 from seed 07 * 32, message "photon/receipt/v1" || 0000000000000102 || ab * 32.
    pub(crate) fn receipt_golden() -> ([u8; 32], [u8; 64]) {
        let public: [u8; 32] =
            hex("ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c")
                .try_into()
                .unwrap();
        let signature: [u8; 64] = hex(
            "8e0d27271ade6d7af213b68b830603a9526fad7325bdc6214fa15d34823d56b0\
             cd7eb1f18636b5293b6e3569e1c5d04fba59c899bf9e5b30b25020f4ecedd604",
        )
        .try_into()
        .unwrap();
        (public, signature)
    }

    #[test]
    fn receipt_signature_golden_vector() {
        let (public, signature) = receipt_golden();
        let id = seed_identity(7, &public);
        assert_eq!(id.public_key().0, public);

        let m = ReceiptRepr::sign(0x0102, [0xab; 32], &id);
        assert_eq!(m.signed, Some((public, signature)));
        assert_eq!(m.verify(), Ok(Some(PublicKey(public))));
        assert_eq!(
            &receipt_signing_input(0x0102, &[0xab; 32])[..17],
            b"photon/receipt/v1"
        );

        // Tampering with any signed part, or claiming another receiver, breaks it.
        let bad = IdentityError::BadSignature;
        let moved = ReceiptRepr {
            stream: 0x0103,
            ..m
        };
        assert_eq!(moved.verify(), Err(bad));
        let other_block = ReceiptRepr {
            manifest_hash: [0xac; 32],
            ..m
        };
        assert_eq!(other_block.verify(), Err(bad));
        let mut sig = signature;
        sig[63] ^= 0x01;
        let forged = ReceiptRepr {
            signed: Some((public, sig)),
            ..m
        };
        assert_eq!(forged.verify(), Err(bad));
        let claimed = ReceiptRepr {
            signed: Some(([0x11; 32], signature)),
            ..m
        };
        assert_eq!(claimed.verify(), Err(bad));
        // An unsigned receipt names nobody.
        assert_eq!(ReceiptRepr::unsigned(1, [0; 32]).verify(), Ok(None));
    }

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let rng = SystemRandom::new();
        let block: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut buf = block.clone();
        let key = SealKey::generate(&rng)
            .unwrap()
            .seal_in_place(7, &mut buf)
            .unwrap();
        assert_eq!(buf.len(), block.len() + TAG_LEN);
        assert_ne!(&buf[..block.len()], &block[..]);
        assert_eq!(key.open(7, &buf).unwrap(), block);
        // Wrong stream (associated data and nonce), wrong key, altered byte: all refused.
        assert_eq!(key.open(8, &buf), Err(SealError::Open));
        let wrong = BlockKey::from_bytes([0; 32]);
        assert_eq!(wrong.open(7, &buf), Err(SealError::Open));
        let mut bad = buf.clone();
        bad[500] ^= 1;
        assert_eq!(key.open(7, &bad), Err(SealError::Open));
        assert_eq!(key.open(7, &buf[..10]), Err(SealError::Open));
        assert_eq!(format!("{key:?}"), "BlockKey(<redacted>)");
    }

    #[test]
    fn golden_aes_256_gcm_vector() {
        // Fixed key, stream 1, plaintext "photon": pins the algorithm, nonce and AAD layout.
        let key = SealKey { bytes: [0x42; 32] };
        let mut buf = b"photon".to_vec();
        let opener = key.seal_in_place(1, &mut buf).unwrap();
        assert_eq!(buf.len(), 6 + 16);
        let again = BlockKey::from_bytes([0x42; 32]);
        assert_eq!(again.open(1, &buf).unwrap(), b"photon");
        assert_eq!(opener, again);
        // Computed independently with Python's `cryptography` (OpenSSL) AESGCM:
        // key 42*32, nonce 00000000 || 0000000000000001, aad "photon/seal/v1" || 00..01.
        let expect: [u8; 22] = [
            0x38, 0xe3, 0xbb, 0x60, 0xb0, 0x35, 0xfe, 0xbb, 0xe7, 0xd5, 0x77, 0xe1, 0xa2, 0xf3,
            0xcb, 0xc7, 0xb5, 0x02, 0xdf, 0xa3, 0x7f, 0x14,
        ];
        assert_eq!(buf, expect, "sealed bytes: {buf:02x?}");
    }

    #[test]
    fn key_release_signed_by_origin_only() {
        let rng = SystemRandom::new();
        let origin = Identity::generate(&rng).unwrap();
        let other = Identity::generate(&rng).unwrap();
        let mut buf = vec![1, 2, 3];
        let key = SealKey::generate(&rng)
            .unwrap()
            .seal_in_place(9, &mut buf)
            .unwrap();
        let release = key.release(9, &origin);
        let got = BlockKey::from_release(&release, &origin.public_key()).unwrap();
        assert_eq!(got.open(9, &buf).unwrap(), vec![1, 2, 3]);
        assert_eq!(
            BlockKey::from_release(&release, &other.public_key()),
            Err(SealError::BadSignature)
        );
        // Rebinding the key to another stream breaks the signature.
        let moved = KeyReleaseRepr {
            stream: 10,
            ..release
        };
        assert_eq!(
            BlockKey::from_release(&moved, &origin.public_key()),
            Err(SealError::BadSignature)
        );
    }
}
