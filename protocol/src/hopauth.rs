//! Per-hop peer authentication (`docs/protocol.md` §4.2).
//!
//! Each datagram's header carries an 8-byte hop tag: SipHash-2-4, keyed with the 128-bit session
//! key of the link (sender → receiver), over the header bytes before the tag
//! (`header[0..28]`, which is the whole header with the tag field left out). The payload is not
//! covered: a relay fans one fragment out to many peers and recomputes only this 36-byte tag per
//! destination, never touching the 1.2 KB payload. Payload integrity is end to end (§4.1: shard
//! hashes in the origin's signed manifest).
//!
//! Why SipHash-2-4: it is a PRF built for short inputs with a 128-bit key and a 64-bit output,
//! exactly this use, and it costs tens of nanoseconds on 28 bytes; HMAC-SHA256 (ring) costs two
//! SHA-256 compressions per tag, several times more (both measured in
//! `perf/benches/protocol_wire.rs`, numbers in §4.2).
//!
//! Session keys come from the registration handshake (§2.8, §2.9): an X25519 agreement between
//! the two ephemeral keys, expanded by HKDF-SHA256 ([`HopKeys::derive`]) into one key per
//! direction.

use crate::wire::{field, Error, Packet, HEADER_LEN};
use siphasher::sip::SipHasher24;

/// Bytes of the header the tag covers: everything before the tag field.
pub const AUTHENTICATED_LEN: usize = field::HOP_TAG.start;

/// The key of one direction of one link: the sender signs with it, the receiver verifies.
#[derive(Clone)]
pub struct HopKey {
    /// SipHash's state after the key is loaded (`v0..v3`), the start of every tag; the key
    /// itself is `init[0] ^ SIP_INIT[0]`, `init[1] ^ SIP_INIT[1]`.
    init: [u64; 4],
}

/// SipHash's initialisation constants ("somepseudorandomlygeneratedbytes").
const SIP_INIT: [u64; 4] = [
    0x736f_6d65_7073_6575,
    0x646f_7261_6e64_6f6d,
    0x6c79_6765_6e65_7261,
    0x7465_6462_7974_6573,
];

/// The 28 bytes a hop tag covers, read once as SipHash-2-4's message words, to be signed under
/// many keys: a relay's fan-out writes the same header (sender = the relay, hops + 1) to every
/// destination and only the key changes ([`HopKey::tag_input`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagInput {
    /// `header[0..24]` as three little-endian words.
    words: [u64; 3],
    /// The last block: `header[24..28]` little-endian, the length (28) in the top byte.
    last: u64,
}

impl TagInput {
    /// The message words of `header[0..28]`.
    #[inline]
    pub fn new(covered: &[u8; AUTHENTICATED_LEN]) -> TagInput {
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&covered[i..i + 8]);
            u64::from_le_bytes(w)
        };
        let mut tail = [0u8; 4];
        tail.copy_from_slice(&covered[24..28]);
        TagInput {
            words: [word(0), word(8), word(16)],
            last: u64::from(u32::from_le_bytes(tail)) | ((AUTHENTICATED_LEN as u64) << 56),
        }
    }

    /// The covered bytes of a header slice, or `None` if it is shorter than 28 bytes.
    #[inline]
    pub fn from_header(header: &[u8]) -> Option<TagInput> {
        let covered: &[u8; AUTHENTICATED_LEN] = header.get(..AUTHENTICATED_LEN)?.try_into().ok()?;
        Some(TagInput::new(covered))
    }
}

/// One SipRound (Aumasson and Bernstein, "SipHash: a fast short-input PRF", 2012, §2).
#[inline(always)]
fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

/// Four lanes of one SipHash variable: `v0` of four independent hashes, and so on.
type Lanes = [u64; 4];

#[inline(always)]
fn add(a: Lanes, b: Lanes) -> Lanes {
    core::array::from_fn(|l| a[l].wrapping_add(b[l]))
}

#[inline(always)]
fn rotl_xor(a: Lanes, r: u32, b: Lanes) -> Lanes {
    core::array::from_fn(|l| a[l].rotate_left(r) ^ b[l])
}

#[inline(always)]
fn rotl(a: Lanes, r: u32) -> Lanes {
    core::array::from_fn(|l| a[l].rotate_left(r))
}

/// [`sip_round`] on four independent states at once, lane-wise: the four dependency chains
/// interleave, where a single SipHash is bound by the latency of its one chain.
#[inline(always)]
fn sip_round_x4(v: &mut [Lanes; 4]) {
    let [mut v0, mut v1, mut v2, mut v3] = *v;
    v0 = add(v0, v1);
    v1 = rotl_xor(v1, 13, v0);
    v0 = rotl(v0, 32);
    v2 = add(v2, v3);
    v3 = rotl_xor(v3, 16, v2);
    v0 = add(v0, v3);
    v3 = rotl_xor(v3, 21, v0);
    v2 = add(v2, v1);
    v1 = rotl_xor(v1, 17, v2);
    v2 = rotl(v2, 32);
    *v = [v0, v1, v2, v3];
}

/// [`HopKey::tag_input`] under four keys at once: a fan-out signs one header for many links
/// (measured in perf/RESULTS.md §0.1; the tests check it lane by lane against `siphasher`).
#[inline]
pub fn tags_x4(keys: [&HopKey; 4], input: &TagInput) -> [u64; 4] {
    #[inline(always)]
    fn compress(v: &mut [Lanes; 4], m: u64) {
        v[3] = v[3].map(|x| x ^ m);
        sip_round_x4(v);
        sip_round_x4(v);
        v[0] = v[0].map(|x| x ^ m);
    }
    let mut v: [Lanes; 4] = core::array::from_fn(|i| core::array::from_fn(|l| keys[l].init[i]));
    compress(&mut v, input.words[0]);
    compress(&mut v, input.words[1]);
    compress(&mut v, input.words[2]);
    compress(&mut v, input.last);
    v[2] = v[2].map(|x| x ^ 0xff);
    sip_round_x4(&mut v);
    sip_round_x4(&mut v);
    sip_round_x4(&mut v);
    sip_round_x4(&mut v);
    core::array::from_fn(|l| v[0][l] ^ v[1][l] ^ v[2][l] ^ v[3][l])
}

impl HopKey {
    /// A key from 16 bytes (as [`HopKeys::derive`] produces).
    pub fn from_bytes(key: &[u8; 16]) -> HopKey {
        let mut k = [0u8; 8];
        k.copy_from_slice(&key[..8]);
        let k0 = u64::from_le_bytes(k);
        k.copy_from_slice(&key[8..]);
        let k1 = u64::from_le_bytes(k);
        HopKey {
            init: [
                k0 ^ SIP_INIT[0],
                k1 ^ SIP_INIT[1],
                k0 ^ SIP_INIT[2],
                k1 ^ SIP_INIT[3],
            ],
        }
    }

    /// The tag of a header: SipHash-2-4 over `header[0..28]`. A slice shorter than that is
    /// hashed whole (its tag can never verify, see [`HopKey::verify`]); bytes after 28 (the tag
    /// field, the payload) are ignored.
    #[inline]
    pub fn tag(&self, header: &[u8]) -> u64 {
        match TagInput::from_header(header) {
            Some(input) => self.tag_input(&input),
            // The general-length SipHash (`siphasher`), for a slice too short to carry a tag.
            None => {
                SipHasher24::new_with_keys(self.init[0] ^ SIP_INIT[0], self.init[1] ^ SIP_INIT[1])
                    .hash(header)
            }
        }
    }

    /// SipHash-2-4 of the 28 covered bytes, read once into `input`: the same function as
    /// [`HopKey::tag`] (and as the `siphasher` crate, which the tests check it against),
    /// written out for exactly this length so that a relay signing one header under eight
    /// keys pays 12 SipRounds per key and nothing else: no length loop, no byte-wise tail, no
    /// call (the general-length hash was a third of the relay core's time at fan-out 8;
    /// perf/RESULTS.md §0.1).
    #[inline]
    pub fn tag_input(&self, input: &TagInput) -> u64 {
        #[inline(always)]
        fn compress(v: &mut [u64; 4], m: u64) {
            v[3] ^= m;
            sip_round(v);
            sip_round(v);
            v[0] ^= m;
        }
        let mut v = self.init;
        // Written out: the iterator form compiled to a loop with a branch per block.
        compress(&mut v, input.words[0]);
        compress(&mut v, input.words[1]);
        compress(&mut v, input.words[2]);
        compress(&mut v, input.last);
        v[2] ^= 0xff;
        sip_round(&mut v);
        sip_round(&mut v);
        sip_round(&mut v);
        sip_round(&mut v);
        v[0] ^ v[1] ^ v[2] ^ v[3]
    }

    /// Whether the header's tag field holds this key's tag of the header. False for a slice
    /// shorter than the header. Constant-time comparison is not needed: the tag is a PRF output
    /// checked once per datagram, and a timing oracle on it would only let an attacker learn the
    /// tag of a header they already sent (this is the standard argument for short MAC checks on
    /// a datagram path; see §4.2).
    #[inline]
    pub fn verify(&self, header: &[u8]) -> bool {
        let Some(tag) = header.get(field::HOP_TAG) else {
            return false;
        };
        let mut t = [0u8; 8];
        t.copy_from_slice(tag);
        u64::from_be_bytes(t) == self.tag(header)
    }

    /// Writes the tag into the header's tag field, in place. `header` is the datagram buffer (or
    /// at least its first [`HEADER_LEN`] bytes).
    #[inline]
    pub fn sign_header(&self, header: &mut [u8]) -> Result<(), Error> {
        if header.len() < HEADER_LEN {
            return Err(Error::Truncated {
                need: HEADER_LEN,
                got: header.len(),
            });
        }
        let tag = self.tag(header);
        header[field::HOP_TAG].copy_from_slice(&tag.to_be_bytes());
        Ok(())
    }

    /// [`HopKey::sign_header`] on a packet view.
    #[inline]
    pub fn sign_packet<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
    ) -> Result<(), Error> {
        let tag = self.tag(packet.header());
        packet.set_hop_tag(tag);
        Ok(())
    }

    /// [`HopKey::verify`] on a checked packet view.
    #[inline]
    pub fn verify_packet<T: AsRef<[u8]>>(&self, packet: &Packet<T>) -> bool {
        self.verify(packet.header())
    }
}

impl core::fmt::Debug for HopKey {
    /// Redacted: a key is never printed.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("HopKey(<redacted>)")
    }
}

/// Which end of the handshake this side was: the initiator sent the registration (§2.8), the
/// responder the ack (§2.9). A gateway is the initiator towards its relay; between relays, the
/// one that registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Initiator,
    Responder,
}

/// Both directions of one link's session.
#[derive(Debug, Clone)]
pub struct HopKeys {
    /// Signs what this side sends.
    pub send: HopKey,
    /// Verifies what this side receives.
    pub recv: HopKey,
}

/// HKDF info prefix; the full info binds both ephemerals and both node ids.
const HKDF_INFO: &[u8] = b"photon/hop/v1";

struct Len32;
impl ring::hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// What both sides feed the key schedule besides the shared secret (§4.2).
#[derive(Debug, Clone, Copy)]
pub struct HandshakeContext<'a> {
    /// The registration's nonce (§2.8); the HKDF salt.
    pub nonce: &'a [u8; 16],
    /// The initiator's X25519 public key.
    pub initiator_ephemeral: &'a [u8; 32],
    /// The responder's X25519 public key.
    pub responder_ephemeral: &'a [u8; 32],
    /// The initiator's node id, as assigned in the ack.
    pub initiator_node: u32,
    /// The responder's node id.
    pub responder_node: u32,
}

impl HopKeys {
    /// Expands an X25519 shared secret into the two direction keys:
    /// `okm = HKDF-SHA256(salt = nonce, ikm = secret, info = "photon/hop/v1" || initiator
    /// ephemeral || responder ephemeral || initiator node || responder node)`, 32 bytes;
    /// `okm[..16]` keys initiator → responder, `okm[16..]` responder → initiator.
    pub fn derive(shared_secret: &[u8], ctx: &HandshakeContext<'_>, role: Role) -> HopKeys {
        let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, ctx.nonce);
        let prk = salt.extract(shared_secret);
        let inode = ctx.initiator_node.to_be_bytes();
        let rnode = ctx.responder_node.to_be_bytes();
        let info: [&[u8]; 5] = [
            HKDF_INFO,
            ctx.initiator_ephemeral,
            ctx.responder_ephemeral,
            &inode,
            &rnode,
        ];
        let mut okm = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's 255 * 32 limit, so expand/fill cannot fail.
        if let Ok(o) = prk.expand(&info, Len32) {
            let _ = o.fill(&mut okm);
        }
        let mut i2r = [0u8; 16];
        let mut r2i = [0u8; 16];
        i2r.copy_from_slice(&okm[..16]);
        r2i.copy_from_slice(&okm[16..]);
        let (i2r, r2i) = (HopKey::from_bytes(&i2r), HopKey::from_bytes(&r2i));
        match role {
            Role::Initiator => HopKeys {
                send: i2r,
                recv: r2i,
            },
            Role::Responder => HopKeys {
                send: r2i,
                recv: i2r,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{FragmentKind, FragmentRepr, MAX_DATAGRAM};

    fn key() -> HopKey {
        let k: [u8; 16] = core::array::from_fn(|i| i as u8);
        HopKey::from_bytes(&k)
    }

    #[test]
    fn siphash_reference_vector() {
        // SipHash-2-4 paper, appendix A: key 00..0f, message 00..0e (15 bytes) ->
        // 0xa129ca6149be45e5. Checks that the crate is the function §4.2 names.
        let msg: [u8; 15] = core::array::from_fn(|i| i as u8);
        assert_eq!(key().tag(&msg), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn fixed_length_tag_is_the_papers_siphash() {
        // SipHash-2-4 paper, appendix A / the reference vectors.h: key 00..0f, message 00..1b
        // (28 bytes, the length a hop tag covers).
        let msg: [u8; AUTHENTICATED_LEN] = core::array::from_fn(|i| i as u8);
        let expect = u64::from_le_bytes([0xa5, 0xc9, 0x1d, 0xa7, 0xac, 0xaa, 0x4d, 0xde]);
        assert_eq!(key().tag_input(&TagInput::new(&msg)), expect);
        assert_eq!(key().tag(&msg), expect);
        assert_eq!(
            SipHasher24::new_with_key(&core::array::from_fn(|i| i as u8)).hash(&msg),
            expect
        );
    }

    proptest::proptest! {
        #[test]
        fn fixed_length_tag_matches_the_siphasher_crate(
            k in proptest::array::uniform16(proptest::num::u8::ANY),
            h in proptest::collection::vec(proptest::num::u8::ANY, AUTHENTICATED_LEN..HEADER_LEN + 4),
        ) {
            let key = HopKey::from_bytes(&k);
            let reference = SipHasher24::new_with_key(&k).hash(&h[..AUTHENTICATED_LEN]);
            let input = TagInput::from_header(&h).unwrap();
            proptest::prop_assert_eq!(key.tag_input(&input), reference);
            proptest::prop_assert_eq!(key.tag(&h), reference);
            let others: [HopKey; 3] = core::array::from_fn(|i| {
                let mut k2 = k;
                k2[i] ^= 0x5a;
                HopKey::from_bytes(&k2)
            });
            let x4 = tags_x4([&key, &others[0], &others[1], &others[2]], &input);
            proptest::prop_assert_eq!(x4[0], reference);
            for (t, o) in x4[1..].iter().zip(&others) {
                proptest::prop_assert_eq!(*t, o.tag(&h));
            }
        }
    }

    #[test]
    fn golden_signed_header() {
        // The golden header of wire::header tests; tag computed by this key.
        let mut dgram = vec![
            0x50, 0x68, 0x01, 0x01, 0x01, 0x02, 0x00, 0x03, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06,
            0x07, 0x08, 0x0a, 0x0b, 0x0c, 0x0d, 0x00, 0x05, 0x00, 0x0a, 0x00, 0x0a, 0x00, 0x04, 0,
            0, 0, 0, 0, 0, 0, 0, 0xaa, 0xbb, 0xcc,
        ];
        key().sign_header(&mut dgram).unwrap();
        let expect_tag = key().tag(&dgram[..28]);
        assert_eq!(&dgram[28..36], &expect_tag.to_be_bytes());
        assert!(key().verify(&dgram));
        // The payload is not covered: changing it keeps the tag valid (end-to-end checks catch it).
        dgram[36] ^= 0xff;
        assert!(key().verify(&dgram));
    }

    #[test]
    fn every_header_bit_is_covered() {
        let payload = [7u8; 100];
        let f = FragmentRepr {
            kind: FragmentKind::Source,
            stream: 99,
            index: 3,
            count: 10,
            k: 10,
            r: 2,
            payload: &payload,
        };
        let mut buf = [0u8; MAX_DATAGRAM];
        let n = f.emit(1234, 0, 0, &mut buf).unwrap();
        let mut p = Packet::new_checked(&mut buf[..n]).unwrap();
        key().sign_packet(&mut p).unwrap();
        assert!(key().verify_packet(&p));
        let dgram = p.into_inner();
        for bit in 0..AUTHENTICATED_LEN * 8 {
            let mut d = dgram.to_vec();
            d[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !key().verify(&d),
                "flipping header bit {bit} must break the tag"
            );
        }
        for bit in AUTHENTICATED_LEN * 8..HEADER_LEN * 8 {
            let mut d = dgram.to_vec();
            d[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !key().verify(&d),
                "flipping tag bit {bit} must break the tag"
            );
        }
        // Another link's key does not verify it.
        assert!(!HopKey::from_bytes(&[9; 16]).verify(dgram));
    }

    #[test]
    fn short_buffers_are_errors_not_panics() {
        assert!(!key().verify(&[0u8; 35]));
        assert_eq!(
            key().sign_header(&mut [0u8; 20]),
            Err(Error::Truncated {
                need: HEADER_LEN,
                got: 20
            })
        );
        let _ = key().tag(&[]);
    }

    #[test]
    fn derived_keys_pair_up_by_role() {
        let ctx = HandshakeContext {
            nonce: &[1; 16],
            initiator_ephemeral: &[2; 32],
            responder_ephemeral: &[3; 32],
            initiator_node: 10,
            responder_node: 20,
        };
        let a = HopKeys::derive(&[42; 32], &ctx, Role::Initiator);
        let b = HopKeys::derive(&[42; 32], &ctx, Role::Responder);
        let h = [0x5au8; HEADER_LEN];
        assert_eq!(a.send.tag(&h), b.recv.tag(&h));
        assert_eq!(a.recv.tag(&h), b.send.tag(&h));
        assert_ne!(
            a.send.tag(&h),
            a.recv.tag(&h),
            "directions use different keys"
        );
        let other = HandshakeContext {
            initiator_node: 11,
            ..ctx
        };
        let c = HopKeys::derive(&[42; 32], &other, Role::Initiator);
        assert_ne!(
            a.send.tag(&h),
            c.send.tag(&h),
            "node ids are bound into the keys"
        );
        assert_eq!(format!("{:?}", a.send), "HopKey(<redacted>)");
    }
}
