//! Node identities and the registration handshake (`docs/protocol.md` §5.2, §2.8, §2.9, §4.2).
//!
//! - [`Identity`]: a long-term Ed25519 key pair (ring), stored as PKCS#8 bytes (the binaries
//!   write and read the files; this crate stays sans-IO). Signs manifests, key releases,
//!   registrations. Its Debug never prints the secret.
//! - [`EphemeralKey`]: a one-use X25519 key for the registration; the agreement, expanded by
//!   HKDF ([`crate::hopauth::HopKeys::derive`]), gives the per-hop session keys.
//! - [`register`] / [`verify_register`] / [`register_ack`] / [`verify_register_ack`]: building
//!   and checking the two signed handshake messages. The caller passes `now_ms`.

use crate::hopauth::{HandshakeContext, HopKeys, Role};
use crate::wire::{RegisterAckRepr, RegisterRepr};
use ring::agreement;
use ring::rand::SecureRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair};

/// Why an identity operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The random source failed.
    #[error("random source failed")]
    Rng,
    /// The bytes are not an Ed25519 PKCS#8 v2 document ring accepts.
    #[error("not a valid Ed25519 PKCS#8 key")]
    BadKeyFile,
    /// A signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// The peer's X25519 public key is invalid, or the agreement failed.
    #[error("key agreement failed")]
    Agreement,
    /// A registration's timestamp is outside the accepted window.
    #[error("timestamp {timestamp_ms} ms is outside the window around {now_ms} ms")]
    Stale { timestamp_ms: u64, now_ms: u64 },
    /// A registration ack does not answer our registration (nonce differs).
    #[error("registration ack does not match the registration")]
    Mismatch,
}

/// An Ed25519 public key. Written (`Display`) and read (`FromStr`, serde) as 64 lowercase
/// hex digits, as `keygen` prints it and configs list it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

/// A public key that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid public key {0:?}: expected 64 hex digits (32 bytes)")]
pub struct ParsePublicKeyError(pub String);

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for PublicKey {
    type Err = ParsePublicKeyError;
    fn from_str(s: &str) -> Result<PublicKey, ParsePublicKeyError> {
        let bad = || ParsePublicKeyError(s.chars().take(80).collect());
        let t = s.trim();
        if t.len() != 64 || !t.is_ascii() {
            return Err(bad());
        }
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(PublicKey(k))
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl PublicKey {
    /// Verifies an Ed25519 signature over `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8; 64]) -> Result<(), IdentityError> {
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.0)
            .verify(msg, sig)
            .map_err(|_| IdentityError::BadSignature)
    }
}

impl core::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PublicKey(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// A long-term Ed25519 identity. Debug shows only the public key.
pub struct Identity {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
}

impl Identity {
    /// A new random identity.
    pub fn generate(rng: &dyn SecureRandom) -> Result<Identity, IdentityError> {
        let doc = Ed25519KeyPair::generate_pkcs8(rng).map_err(|_| IdentityError::Rng)?;
        Identity::from_pkcs8_bytes(doc.as_ref())
    }

    /// Loads an identity from PKCS#8 bytes (the contents of a key file).
    pub fn from_pkcs8_bytes(pkcs8: &[u8]) -> Result<Identity, IdentityError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| IdentityError::BadKeyFile)?;
        Ok(Identity {
            pair,
            pkcs8: pkcs8.to_vec(),
        })
    }

    /// The PKCS#8 bytes to store in a key file. This is the secret: write it with mode 0600 and
    /// never log it.
    pub fn to_pkcs8_bytes(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The key pair, for signing a block's manifest (`integrity::SignedManifest`, `Sender`).
    pub fn key_pair(&self) -> &Ed25519KeyPair {
        &self.pair
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        let mut k = [0u8; 32];
        k.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(k)
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        let mut s = [0u8; 64];
        s.copy_from_slice(self.pair.sign(msg).as_ref());
        s
    }
}

impl core::fmt::Debug for Identity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Identity")
            .field("public_key", &self.public_key())
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A one-use X25519 key for one registration (§4.2). Consumed by the agreement.
pub struct EphemeralKey {
    private: agreement::EphemeralPrivateKey,
    public: [u8; 32],
}

impl EphemeralKey {
    /// A fresh key.
    pub fn generate(rng: &dyn SecureRandom) -> Result<EphemeralKey, IdentityError> {
        let private = agreement::EphemeralPrivateKey::generate(&agreement::X25519, rng)
            .map_err(|_| IdentityError::Rng)?;
        let pubkey = private
            .compute_public_key()
            .map_err(|_| IdentityError::Rng)?;
        let mut public = [0u8; 32];
        public.copy_from_slice(pubkey.as_ref());
        Ok(EphemeralKey { private, public })
    }

    /// The public half, sent in the registration or its ack.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// X25519 with the peer's public key, then HKDF into this side's [`HopKeys`]
    /// (§4.2). `ctx` must be the same on both sides.
    pub fn agree(
        self,
        peer_public: &[u8; 32],
        ctx: &HandshakeContext<'_>,
        role: Role,
    ) -> Result<HopKeys, IdentityError> {
        let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, peer_public);
        agreement::agree_ephemeral(self.private, &peer, |secret| {
            HopKeys::derive(secret, ctx, role)
        })
        .map_err(|_| IdentityError::Agreement)
    }
}

impl core::fmt::Debug for EphemeralKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EphemeralKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// Builds a signed registration (§2.8).
pub fn register(
    identity: &Identity,
    ephemeral: &EphemeralKey,
    nonce: [u8; 16],
    timestamp_ms: u64,
) -> RegisterRepr {
    let mut r = RegisterRepr {
        identity: identity.public_key().0,
        ephemeral: ephemeral.public_key(),
        nonce,
        timestamp_ms,
        signature: [0; 64],
    };
    r.signature = identity.sign(&r.signing_input());
    r
}

/// Checks a registration's signature and that its timestamp is within `window_ms` of `now_ms`.
/// Replay of a fresh registration within the window is the caller's to refuse (by remembering
/// (identity, nonce) pairs for the window, §2.8).
pub fn verify_register(
    r: &RegisterRepr,
    now_ms: u64,
    window_ms: u64,
) -> Result<PublicKey, IdentityError> {
    let key = PublicKey(r.identity);
    key.verify(&r.signing_input(), &r.signature)?;
    if r.timestamp_ms.abs_diff(now_ms) > window_ms {
        return Err(IdentityError::Stale {
            timestamp_ms: r.timestamp_ms,
            now_ms,
        });
    }
    Ok(key)
}

/// The key-schedule context of a registration (§4.2), the same on both sides: `req`'s nonce and
/// ephemeral, `ack`'s ephemeral, the gateway (initiator) as the node the ack assigns, the relay
/// as `responder_node`.
pub fn registration_context<'a>(
    req: &'a RegisterRepr,
    ack: &'a RegisterAckRepr,
    responder_node: u32,
) -> HandshakeContext<'a> {
    HandshakeContext {
        nonce: &req.nonce,
        initiator_ephemeral: &req.ephemeral,
        responder_ephemeral: &ack.ephemeral,
        initiator_node: ack.node_id,
        responder_node,
    }
}

/// Builds the relay's signed answer to `request` (§2.9).
pub fn register_ack(
    relay: &Identity,
    ephemeral: &EphemeralKey,
    request: &RegisterRepr,
    status: u8,
    node_id: u32,
    timestamp_ms: u64,
    keepalive_ms: u32,
) -> RegisterAckRepr {
    let mut a = RegisterAckRepr {
        status,
        node_id,
        identity: relay.public_key().0,
        ephemeral: ephemeral.public_key(),
        nonce: request.nonce,
        timestamp_ms,
        keepalive_ms,
        signature: [0; 64],
    };
    a.signature = relay.sign(&a.signing_input(&request.ephemeral));
    a
}

/// The gateway checks the ack to its `request`: nonce echoed, signed by `relay` (the relay key
/// it was configured with, so a man in the middle cannot answer in its place).
pub fn verify_register_ack(
    ack: &RegisterAckRepr,
    request: &RegisterRepr,
    relay: &PublicKey,
) -> Result<(), IdentityError> {
    if ack.nonce != request.nonce || ack.identity != relay.0 {
        return Err(IdentityError::Mismatch);
    }
    relay.verify(&ack.signing_input(&request.ephemeral), &ack.signature)
}

#[cfg(test)]
mod tests {
    #[test]
    fn public_keys_are_written_and_read_as_64_hex_digits() {
        let k = PublicKey(std::array::from_fn(|i| (i * 9) as u8));
        let hex = k.to_string();
        assert_eq!(hex.len(), 64);
        assert!(hex.starts_with("0009121b"), "{hex}");
        assert_eq!(hex.parse::<PublicKey>(), Ok(k));
        assert_eq!(hex.to_uppercase().parse::<PublicKey>(), Ok(k));
        assert_eq!(
            format!(" {hex}\n").parse::<PublicKey>(),
            Ok(k),
            "surrounding space"
        );
        for bad in [
            "",
            "00",
            &hex[..63],
            &format!("{hex}0"),
            &hex.replace('0', "g"),
        ] {
            let e = bad.parse::<PublicKey>().unwrap_err();
            assert!(e.to_string().contains("64 hex digits"), "{e}");
        }
    }

    use super::*;
    use crate::wire::{register_status, HEADER_LEN};
    use ring::rand::SystemRandom;

    #[test]
    fn pkcs8_round_trip_sign_verify() {
        let rng = SystemRandom::new();
        let id = Identity::generate(&rng).unwrap();
        let again = Identity::from_pkcs8_bytes(id.to_pkcs8_bytes()).unwrap();
        assert_eq!(id.public_key(), again.public_key());
        let sig = again.sign(b"hello");
        assert_eq!(id.public_key().verify(b"hello", &sig), Ok(()));
        assert_eq!(
            id.public_key().verify(b"hellO", &sig),
            Err(IdentityError::BadSignature)
        );
        assert_eq!(
            Identity::from_pkcs8_bytes(b"not a key").unwrap_err(),
            IdentityError::BadKeyFile
        );
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let id = Identity::generate(&SystemRandom::new()).unwrap();
        let shown = format!("{id:?}");
        assert!(shown.contains("<redacted>"));
        // ring's Ed25519 PKCS#8 v2 layout: a 16-byte prefix, then the 32-byte secret seed.
        let pkcs8 = id.to_pkcs8_bytes();
        assert_eq!(
            &pkcs8[..16],
            &[
                0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
                0x04, 0x20
            ]
        );
        let seed_hex: String = pkcs8[16..48].iter().map(|b| format!("{b:02x}")).collect();
        assert!(!shown.contains(&seed_hex[..16]), "{shown}");
        assert!(!shown.contains(&format!("{:?}", &pkcs8[16..48])));
    }

    #[test]
    fn rfc8032_test_vector_1() {
        // RFC 8032 §7.1 TEST 1: secret 9d61b1..., public d75a98..., empty message.
        let seed = hex32("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
        let public = hex32("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
        let pair = Ed25519KeyPair::from_seed_and_public_key(&seed, &public).unwrap();
        let sig = pair.sign(b"");
        let expect = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";
        let got: String = sig.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, expect);
        let mut s = [0u8; 64];
        s.copy_from_slice(sig.as_ref());
        assert_eq!(PublicKey(public).verify(b"", &s), Ok(()));
    }

    fn hex32(s: &str) -> [u8; 32] {
        core::array::from_fn(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
    }

    #[test]
    fn handshake_gives_matching_hop_keys() {
        let rng = SystemRandom::new();
        let gw = Identity::generate(&rng).unwrap();
        let relay = Identity::generate(&rng).unwrap();
        let gw_eph = EphemeralKey::generate(&rng).unwrap();
        let relay_eph = EphemeralKey::generate(&rng).unwrap();
        let now = 1_700_000_000_000;

        let req = register(&gw, &gw_eph, [7; 16], now);
        assert_eq!(
            verify_register(&req, now + 1000, 30_000),
            Ok(gw.public_key())
        );
        assert!(matches!(
            verify_register(&req, now + 60_000, 30_000),
            Err(IdentityError::Stale { .. })
        ));
        let mut forged = req;
        forged.ephemeral[0] ^= 1;
        assert_eq!(
            verify_register(&forged, now, 30_000),
            Err(IdentityError::BadSignature)
        );

        let ack = register_ack(
            &relay,
            &relay_eph,
            &req,
            register_status::ACCEPTED,
            42,
            now,
            1000,
        );
        assert_eq!(verify_register_ack(&ack, &req, &relay.public_key()), Ok(()));
        assert_eq!(
            verify_register_ack(&ack, &req, &gw.public_key()),
            Err(IdentityError::Mismatch)
        );

        let ctx = registration_context(&req, &ack, 1);
        let gw_keys = gw_eph.agree(&ack.ephemeral, &ctx, Role::Initiator).unwrap();
        let relay_keys = relay_eph
            .agree(&req.ephemeral, &ctx, Role::Responder)
            .unwrap();
        let mut header = [0x11u8; HEADER_LEN];
        gw_keys.send.sign_header(&mut header).unwrap();
        assert!(relay_keys.recv.verify(&header));
        assert!(!relay_keys.send.verify(&header));
    }
}
