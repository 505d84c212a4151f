//! The membership roster (`docs/protocol/8-threat-model.md`; wire format in
//! `docs/protocol/2-messages.md` §2.11): which gateways and relays make up a deployment, signed
//! by the deployment's operator key(s).
//!
//! A roster lists each member's Ed25519 public key and role; a relay also has its short-ID
//! range (§6.1), the only IDs it may assign. It carries a serial number (a newer roster has a
//! larger one) and an expiry (Unix seconds). Relays and gateways trust the operator keys from
//! their config and nothing else: a roster counts only when enough distinct operator keys
//! signed it ([`RosterTrust::threshold`]), it has not expired, and its serial is newer than the
//! one already held ([`Roster::check_replaces`]).
//!
//! Parsing is structural and panic-free on any input ([`Roster::parse`], typed
//! [`RosterError`]s); [`Roster::verify`] is the trust check. Sans-IO: the caller passes
//! `now_unix_s`.

use std::collections::HashSet;

use crate::identity::{Identity, PublicKey};
use crate::shortid::{ShortId, ShortIdRange};

/// The first bytes of every roster.
pub const MAGIC: &[u8; 4] = b"PHRS";
/// The format version this code reads and writes.
pub const VERSION: u8 = 1;
/// Domain of the operators' signatures, before the roster body.
pub const SIGNING_DOMAIN: &[u8; 16] = b"photon/roster/v1";
/// Bytes before the first member: magic, version, serial, expiry, member count.
pub const HEADER_LEN: usize = 4 + 1 + 8 + 8 + 2;
/// Bytes of one member: key, role, short-ID range first (u32) and count (u64).
pub const MEMBER_LEN: usize = 32 + 1 + 4 + 8;
/// Bytes of one signature: operator key and Ed25519 signature.
pub const SIGNATURE_LEN: usize = 32 + 64;
/// Most members of one roster (a parser never allocates for more).
pub const MAX_MEMBERS: usize = 4096;
/// Most signatures of one roster.
pub const MAX_SIGNATURES: usize = 16;

/// Role byte of a gateway.
const ROLE_GATEWAY: u8 = 1;
/// Role byte of a relay.
const ROLE_RELAY: u8 = 2;

/// What a member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberRole {
    /// A gateway beside a node: may originate blocks, its receipts count toward key release.
    Gateway,
    /// A relay: assigns short IDs from its range only.
    Relay { short_ids: ShortIdRange },
}

/// One member of the deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub key: PublicKey,
    pub role: MemberRole,
}

/// One operator signature over the roster body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RosterSignature {
    pub operator: PublicKey,
    pub signature: [u8; 64],
}

/// The operator keys a node trusts and how many of them must sign (from its config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterTrust {
    pub operators: Vec<PublicKey>,
    /// Distinct operator signatures needed (at least 1).
    pub threshold: usize,
}

/// Why a roster was refused. Every variant names what was wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RosterError {
    #[error("roster truncated: {what} needs {need} bytes at offset {at}, {have} left")]
    Truncated {
        what: &'static str,
        at: usize,
        need: usize,
        have: usize,
    },
    #[error("not a roster (magic bytes are not \"PHRS\")")]
    BadMagic,
    #[error("roster version {0} is not supported (this build reads version 1)")]
    UnsupportedVersion(u8),
    #[error("roster lists {0} members, at most 4096 are allowed")]
    TooManyMembers(usize),
    #[error("roster lists no members")]
    NoMembers,
    #[error("members {a} and {b} are gateways whose keys give the same stream prefix")]
    StreamPrefixClash { a: usize, b: usize },
    #[error("member {index}: unknown role byte {role}")]
    BadRole { index: usize, role: u8 },
    #[error("member {index}: a gateway has no short-ID range (first and count must be 0)")]
    GatewayWithRange { index: usize },
    #[error("member {index}: invalid short-ID range: {message}")]
    BadRange { index: usize, message: String },
    #[error("member {index}: key listed twice")]
    DuplicateMember { index: usize },
    #[error("members {a} and {b}: short-ID ranges overlap")]
    OverlappingRanges { a: usize, b: usize },
    #[error("roster has {0} signatures, at most 16 are allowed")]
    TooManySignatures(usize),
    #[error("{0} trailing bytes after the signatures")]
    TrailingBytes(usize),
    #[error("signature {index} does not verify under its operator key")]
    BadSignature { index: usize },
    #[error("roster has {have} valid signatures by trusted operators, {need} needed")]
    NotEnoughSignatures { have: usize, need: usize },
    #[error("roster expired at {expires_unix_s} (now {now_unix_s}, Unix seconds)")]
    Expired {
        expires_unix_s: u64,
        now_unix_s: u64,
    },
    #[error("roster serial {serial} is not newer than the one held ({current})")]
    NotNewer { serial: u64, current: u64 },
    #[error("no trusted operator key configured")]
    NoOperators,
}

/// A panic-free reader of big-endian fields.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, what: &'static str, n: usize) -> Result<&'a [u8], RosterError> {
        let have = self.bytes.len().saturating_sub(self.at);
        if have < n {
            return Err(RosterError::Truncated {
                what,
                at: self.at,
                need: n,
                have,
            });
        }
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], RosterError> {
        let s = self.take(what, N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, RosterError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, RosterError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, RosterError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, RosterError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }
}

/// A deployment's membership roster. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roster {
    pub serial: u64,
    pub expires_unix_s: u64,
    pub members: Vec<Member>,
    pub signatures: Vec<RosterSignature>,
}

impl Roster {
    /// An unsigned roster; checks the members as [`Roster::parse`] would.
    pub fn new(
        serial: u64,
        expires_unix_s: u64,
        members: Vec<Member>,
    ) -> Result<Roster, RosterError> {
        check_members(&members)?;
        Ok(Roster {
            serial,
            expires_unix_s,
            members,
            signatures: Vec::new(),
        })
    }

    /// Parses a roster (structure only: see [`Roster::verify`] for trust). Never panics and
    /// never allocates for more than the bytes can hold.
    pub fn parse(bytes: &[u8]) -> Result<Roster, RosterError> {
        let mut c = Cursor { bytes, at: 0 };
        if &c.array::<4>("magic")? != MAGIC {
            return Err(RosterError::BadMagic);
        }
        let version = c.u8("version")?;
        if version != VERSION {
            return Err(RosterError::UnsupportedVersion(version));
        }
        let serial = c.u64("serial")?;
        let expires_unix_s = c.u64("expiry")?;
        let n = usize::from(c.u16("member count")?);
        if n > MAX_MEMBERS {
            return Err(RosterError::TooManyMembers(n));
        }
        // Checked before allocating: a claimed count the bytes cannot hold is refused here.
        let body_left = bytes.len().saturating_sub(c.at);
        if body_left < n * MEMBER_LEN {
            return Err(RosterError::Truncated {
                what: "members",
                at: c.at,
                need: n * MEMBER_LEN,
                have: body_left,
            });
        }
        let mut members = Vec::with_capacity(n);
        for index in 0..n {
            let key = PublicKey(c.array("member key")?);
            let role = c.u8("member role")?;
            let first = c.u32("short-ID first")?;
            let count = c.u64("short-ID count")?;
            let role = match role {
                ROLE_GATEWAY if first == 0 && count == 0 => MemberRole::Gateway,
                ROLE_GATEWAY => return Err(RosterError::GatewayWithRange { index }),
                ROLE_RELAY => MemberRole::Relay {
                    short_ids: ShortIdRange::new(first, count).map_err(|e| {
                        RosterError::BadRange {
                            index,
                            message: e.to_string(),
                        }
                    })?,
                },
                role => return Err(RosterError::BadRole { index, role }),
            };
            members.push(Member { key, role });
        }
        check_members(&members)?;
        let s = usize::from(c.u8("signature count")?);
        if s > MAX_SIGNATURES {
            return Err(RosterError::TooManySignatures(s));
        }
        let mut signatures = Vec::with_capacity(s);
        for _ in 0..s {
            signatures.push(RosterSignature {
                operator: PublicKey(c.array("operator key")?),
                signature: c.array("signature")?,
            });
        }
        let trailing = bytes.len() - c.at;
        if trailing != 0 {
            return Err(RosterError::TrailingBytes(trailing));
        }
        Ok(Roster {
            serial,
            expires_unix_s,
            members,
            signatures,
        })
    }

    /// Parses and verifies in one step: what a node does with a roster file or message.
    pub fn open(bytes: &[u8], trust: &RosterTrust, now_unix_s: u64) -> Result<Roster, RosterError> {
        let r = Roster::parse(bytes)?;
        r.verify(trust, now_unix_s)?;
        Ok(r)
    }

    /// The body the operators sign (everything before the signature count), without domain.
    fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.members.len() * MEMBER_LEN);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.serial.to_be_bytes());
        out.extend_from_slice(&self.expires_unix_s.to_be_bytes());
        // `check_members` bounds the count to MAX_MEMBERS (< u16::MAX).
        out.extend_from_slice(&(self.members.len().min(MAX_MEMBERS) as u16).to_be_bytes());
        for m in self.members.iter().take(MAX_MEMBERS) {
            out.extend_from_slice(&m.key.0);
            let (role, first, count) = match m.role {
                MemberRole::Gateway => (ROLE_GATEWAY, 0, 0),
                MemberRole::Relay { short_ids } => (ROLE_RELAY, short_ids.first(), short_ids.len()),
            };
            out.push(role);
            out.extend_from_slice(&first.to_be_bytes());
            out.extend_from_slice(&count.to_be_bytes());
        }
        out
    }

    /// What an operator signs: `"photon/roster/v1" || body`.
    pub fn signing_input(&self) -> Vec<u8> {
        let mut out = SIGNING_DOMAIN.to_vec();
        out.extend_from_slice(&self.body());
        out
    }

    /// Adds (or replaces) `operator`'s signature. Refuses a 17th signer.
    pub fn sign(&mut self, operator: &Identity) -> Result<(), RosterError> {
        let key = operator.public_key();
        let signature = operator.sign(&self.signing_input());
        if let Some(s) = self.signatures.iter_mut().find(|s| s.operator == key) {
            s.signature = signature;
            return Ok(());
        }
        if self.signatures.len() >= MAX_SIGNATURES {
            return Err(RosterError::TooManySignatures(self.signatures.len() + 1));
        }
        self.signatures.push(RosterSignature {
            operator: key,
            signature,
        });
        Ok(())
    }

    /// The wire (and file) form: body, signature count, signatures.
    pub fn emit(&self) -> Vec<u8> {
        let mut out = self.body();
        let sigs = &self.signatures[..self.signatures.len().min(MAX_SIGNATURES)];
        out.push(sigs.len() as u8);
        for s in sigs {
            out.extend_from_slice(&s.operator.0);
            out.extend_from_slice(&s.signature);
        }
        out
    }

    /// Bytes of [`Roster::emit`].
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + self.members.len() * MEMBER_LEN
            + 1
            + self.signatures.len().min(MAX_SIGNATURES) * SIGNATURE_LEN
    }

    /// The trust check: at least `trust.threshold` distinct trusted operators signed, every
    /// signature by a trusted operator verifies, and the roster has not expired at
    /// `now_unix_s`. Signatures by keys that are not trusted are ignored (a roster may be
    /// signed for several deployments' operators); one by a trusted key that does not verify
    /// refuses the roster (it was altered).
    pub fn verify(&self, trust: &RosterTrust, now_unix_s: u64) -> Result<(), RosterError> {
        if trust.operators.is_empty() {
            return Err(RosterError::NoOperators);
        }
        let input = self.signing_input();
        let mut good = HashSet::new();
        for (index, s) in self.signatures.iter().enumerate() {
            if !trust.operators.contains(&s.operator) {
                continue;
            }
            s.operator
                .verify(&input, &s.signature)
                .map_err(|_| RosterError::BadSignature { index })?;
            good.insert(s.operator);
        }
        let need = trust.threshold.max(1);
        if good.len() < need {
            return Err(RosterError::NotEnoughSignatures {
                have: good.len(),
                need,
            });
        }
        if now_unix_s >= self.expires_unix_s {
            return Err(RosterError::Expired {
                expires_unix_s: self.expires_unix_s,
                now_unix_s,
            });
        }
        Ok(())
    }

    /// Whether this roster may replace `current`: only a strictly newer serial.
    pub fn check_replaces(&self, current: &Roster) -> Result<(), RosterError> {
        if self.serial <= current.serial {
            return Err(RosterError::NotNewer {
                serial: self.serial,
                current: current.serial,
            });
        }
        Ok(())
    }

    /// The member with `key`.
    pub fn member(&self, key: &PublicKey) -> Option<&Member> {
        self.members.iter().find(|m| m.key == *key)
    }

    /// Whether `key` is a gateway of the deployment.
    pub fn is_gateway(&self, key: &PublicKey) -> bool {
        matches!(
            self.member(key),
            Some(Member {
                role: MemberRole::Gateway,
                ..
            })
        )
    }

    /// Whether `key` is a relay of the deployment.
    pub fn is_relay(&self, key: &PublicKey) -> bool {
        self.relay_range(key).is_some()
    }

    /// The short-ID range of relay `key`.
    pub fn relay_range(&self, key: &PublicKey) -> Option<ShortIdRange> {
        match self.member(key)?.role {
            MemberRole::Relay { short_ids } => Some(short_ids),
            MemberRole::Gateway => None,
        }
    }

    /// Whether `id` lies in relay `key`'s range.
    pub fn relay_may_assign(&self, key: &PublicKey, id: ShortId) -> bool {
        self.relay_range(key).is_some_and(|r| r.contains(id))
    }

    /// The gateways' keys, in roster order.
    pub fn gateways(&self) -> impl Iterator<Item = PublicKey> + '_ {
        self.members
            .iter()
            .filter(|m| m.role == MemberRole::Gateway)
            .map(|m| m.key)
    }

    /// The relays' keys with their ranges, in roster order.
    pub fn relays(&self) -> impl Iterator<Item = (PublicKey, ShortIdRange)> + '_ {
        self.members.iter().filter_map(|m| match m.role {
            MemberRole::Relay { short_ids } => Some((m.key, short_ids)),
            MemberRole::Gateway => None,
        })
    }
}

/// No member twice, relays' ranges disjoint, at least one and at most [`MAX_MEMBERS`].
fn check_members(members: &[Member]) -> Result<(), RosterError> {
    if members.is_empty() {
        return Err(RosterError::NoMembers);
    }
    if members.len() > MAX_MEMBERS {
        return Err(RosterError::TooManyMembers(members.len()));
    }
    let mut seen = HashSet::with_capacity(members.len());
    // Gateway prefix → member index: relays tell a gateway's own streams by their prefix
    // (§4.1.6), so two gateways may not share one.
    let mut prefixes = std::collections::HashMap::with_capacity(members.len());
    for (index, m) in members.iter().enumerate() {
        if !seen.insert(m.key) {
            return Err(RosterError::DuplicateMember { index });
        }
        if m.role == MemberRole::Gateway {
            if let Some(a) = prefixes.insert(crate::integrity::stream_prefix(&m.key.0), index) {
                return Err(RosterError::StreamPrefixClash { a, b: index });
            }
        }
    }
    // Sorted by start, each range must end before the next begins: O(n log n).
    let mut ranges: Vec<(u64, u64, usize)> = members
        .iter()
        .enumerate()
        .filter_map(|(i, m)| match m.role {
            MemberRole::Relay { short_ids } => {
                let first = u64::from(short_ids.first());
                Some((first, first + short_ids.len(), i))
            }
            MemberRole::Gateway => None,
        })
        .collect();
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(RosterError::OverlappingRanges {
                a: w[0].2.min(w[1].2),
                b: w[0].2.max(w[1].2),
            });
        }
    }
    Ok(())
}

/// The fuzz entry point: any bytes, parsed, emitted again and verified; never panics, and a
/// parsed roster emits to the same bytes.
#[cfg(feature = "fuzzing")]
pub fn fuzz_roster(data: &[u8]) {
    if let Ok(r) = Roster::parse(data) {
        assert_eq!(r.emit(), data, "a parsed roster emits to its own bytes");
        assert_eq!(r.buffer_len(), data.len());
        let trust = RosterTrust {
            operators: r.signatures.iter().map(|s| s.operator).collect(),
            threshold: 1,
        };
        let _ = r.verify(&trust, 0);
        let _ = r.gateways().count() + r.relays().count();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    fn id() -> Identity {
        Identity::generate(&SystemRandom::new()).unwrap()
    }

    fn relay(key: PublicKey, first: u32, count: u64) -> Member {
        Member {
            key,
            role: MemberRole::Relay {
                short_ids: ShortIdRange::new(first, count).unwrap(),
            },
        }
    }

    fn gateway(key: PublicKey) -> Member {
        Member {
            key,
            role: MemberRole::Gateway,
        }
    }

    fn signed(op: &Identity, serial: u64) -> Roster {
        let mut r = Roster::new(
            serial,
            2_000_000_000,
            vec![
                gateway(PublicKey([1; 32])),
                gateway(PublicKey([2; 32])),
                relay(PublicKey([3; 32]), 0, 1 << 20),
                relay(PublicKey([4; 32]), 1 << 20, 1 << 20),
            ],
        )
        .unwrap();
        r.sign(op).unwrap();
        r
    }

    fn trust(ops: &[&Identity], threshold: usize) -> RosterTrust {
        RosterTrust {
            operators: ops.iter().map(|o| o.public_key()).collect(),
            threshold,
        }
    }

    #[test]
    fn round_trip_and_accessors() {
        let op = id();
        let r = signed(&op, 7);
        let bytes = r.emit();
        assert_eq!(bytes.len(), r.buffer_len());
        assert_eq!(bytes.len(), HEADER_LEN + 4 * MEMBER_LEN + 1 + SIGNATURE_LEN);
        let back = Roster::open(&bytes, &trust(&[&op], 1), 1_000).unwrap();
        assert_eq!(back, r);
        assert!(back.is_gateway(&PublicKey([1; 32])));
        assert!(!back.is_gateway(&PublicKey([3; 32])));
        assert!(back.is_relay(&PublicKey([4; 32])));
        assert!(back.relay_may_assign(&PublicKey([4; 32]), ShortId(1 << 20)));
        assert!(!back.relay_may_assign(&PublicKey([3; 32]), ShortId(1 << 20)));
        assert_eq!(back.gateways().count(), 2);
        assert_eq!(back.relays().count(), 2);
    }

    #[test]
    fn golden_header_bytes() {
        let r = Roster::new(0x0102, 0x0a0b, vec![gateway(PublicKey([0xee; 32]))]).unwrap();
        let b = r.emit();
        assert_eq!(&b[..4], b"PHRS");
        assert_eq!(b[4], 1);
        assert_eq!(&b[5..13], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(&b[13..21], &[0, 0, 0, 0, 0, 0, 0x0a, 0x0b]);
        assert_eq!(&b[21..23], &[0, 1]);
        assert_eq!(&b[23..55], &[0xee; 32]);
        assert_eq!(&b[55..68], &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(b[68], 0, "no signatures");
        assert_eq!(b.len(), 69);
    }

    #[test]
    fn refuses_bad_signatures_and_untrusted_operators() {
        let (op, other) = (id(), id());
        let r = signed(&op, 1);
        assert!(matches!(
            r.verify(&trust(&[&other], 1), 0),
            Err(RosterError::NotEnoughSignatures { have: 0, need: 1 })
        ));
        // An altered member after signing.
        let mut bytes = r.emit();
        bytes[HEADER_LEN] ^= 1;
        assert_eq!(
            Roster::open(&bytes, &trust(&[&op], 1), 0),
            Err(RosterError::BadSignature { index: 0 })
        );
        // A threshold of two needs two distinct trusted signers.
        let mut two = r.clone();
        assert!(matches!(
            two.verify(&trust(&[&op, &other], 2), 0),
            Err(RosterError::NotEnoughSignatures { have: 1, need: 2 })
        ));
        two.sign(&op).unwrap();
        assert_eq!(two.signatures.len(), 1, "signing twice replaces");
        two.sign(&other).unwrap();
        two.verify(&trust(&[&op, &other], 2), 0).unwrap();
        assert_eq!(
            r.verify(
                &RosterTrust {
                    operators: vec![],
                    threshold: 1
                },
                0
            ),
            Err(RosterError::NoOperators)
        );
    }

    #[test]
    fn refuses_expired_and_older() {
        let op = id();
        let r = signed(&op, 5);
        assert!(matches!(
            r.verify(&trust(&[&op], 1), 2_000_000_000),
            Err(RosterError::Expired { .. })
        ));
        let older = signed(&op, 4);
        assert_eq!(
            older.check_replaces(&r),
            Err(RosterError::NotNewer {
                serial: 4,
                current: 5
            })
        );
        assert!(signed(&op, 5).check_replaces(&r).is_err());
        signed(&op, 6).check_replaces(&r).unwrap();
    }

    #[test]
    fn structural_errors_are_typed() {
        let op = id();
        let good = signed(&op, 1).emit();
        for cut in 0..good.len() {
            assert!(
                matches!(
                    Roster::parse(&good[..cut]),
                    Err(RosterError::Truncated { .. })
                ),
                "cut at {cut}"
            );
        }
        let mut b = good.clone();
        b.push(0);
        assert_eq!(Roster::parse(&b), Err(RosterError::TrailingBytes(1)));
        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(Roster::parse(&b), Err(RosterError::BadMagic));
        let mut b = good.clone();
        b[4] = 2;
        assert_eq!(Roster::parse(&b), Err(RosterError::UnsupportedVersion(2)));
        let mut b = good.clone();
        b[HEADER_LEN + 32] = 9;
        assert_eq!(
            Roster::parse(&b),
            Err(RosterError::BadRole { index: 0, role: 9 })
        );
        let mut b = good.clone();
        b[HEADER_LEN + 36] = 1;
        assert_eq!(
            Roster::parse(&b),
            Err(RosterError::GatewayWithRange { index: 0 })
        );
        // A member count far beyond the bytes: refused before allocating.
        let mut b = good.clone();
        b[21..23].copy_from_slice(&4000u16.to_be_bytes());
        assert!(matches!(
            Roster::parse(&b),
            Err(RosterError::Truncated {
                what: "members",
                ..
            })
        ));
        let mut b = good.clone();
        b[21..23].copy_from_slice(&5000u16.to_be_bytes());
        assert_eq!(Roster::parse(&b), Err(RosterError::TooManyMembers(5000)));
    }

    #[test]
    fn members_are_checked() {
        let k = PublicKey([9; 32]);
        assert_eq!(Roster::new(1, 2, vec![]), Err(RosterError::NoMembers));
        assert_eq!(
            Roster::new(1, 2, vec![gateway(k), relay(k, 0, 10)]),
            Err(RosterError::DuplicateMember { index: 1 })
        );
        assert_eq!(
            Roster::new(
                1,
                2,
                vec![
                    relay(PublicKey([1; 32]), 100, 10),
                    relay(PublicKey([2; 32]), 0, 101)
                ]
            ),
            Err(RosterError::OverlappingRanges { a: 0, b: 1 })
        );
        Roster::new(
            1,
            2,
            vec![
                relay(PublicKey([1; 32]), 100, 10),
                relay(PublicKey([2; 32]), 0, 100),
            ],
        )
        .unwrap();
    }
}
