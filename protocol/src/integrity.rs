//! Block integrity end to end (`docs/protocol.md` §4.1).
//!
//! The source gateway signs, with its Ed25519 identity, a *manifest*: the block's FEC parameters
//! and a 16-byte hash of every shard, source and repair. A receiver checks each shard against its
//! hash before the shard goes near the Reed-Solomon decoder, so one forged or corrupted shard is
//! dropped alone and never poisons a block; a block rebuilt from checked shards is the block the
//! source sent.
//!
//! The manifest (the hash table, 16 bytes per shard) is itself cut into chunks and protected by
//! the same Reed-Solomon code (§3): `Km` source chunks go first, `Rm` repair chunks go after the
//! block's shards, and any `Km` of them rebuild the table. Every chunk travels in a manifest
//! fragment that is verifiable on its own: a Merkle tree over the chunks has its root signed,
//! and each fragment repeats the signed metadata, the signature and its chunk's Merkle proof.
//! A receiver verifies one signature per block and then checks each further fragment with a few
//! hashes.
//!
//! - [`shard_hash`]: the per-shard hash (domain-separated with stream id and index).
//! - [`SignedManifest`]: the sender's side, built from a [`fec::Encoded`] block.
//! - [`ManifestFragment`] / [`ManifestFragmentRepr`]: one fragment's payload, view and `Repr`.
//! - [`ManifestCollector`]: the receiver's side; gathers fragments and answers shard hashes.

use ring::digest;
use ring::signature;

/// The signing key a manifest takes: ring's Ed25519 key pair, re-exported so callers (and the
/// identity module, §5) need no direct `ring` dependency.
pub use ring::signature::Ed25519KeyPair;

use crate::fec::{self, Encoded, FecError, FecParams, RepairPolicy};

/// Bytes of a shard hash, of a Merkle node.
pub const HASH_LEN: usize = 16;
/// Bytes of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Bytes of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Most manifest chunks (`Km + Rm`) accepted: a 32768-shard table in 600-byte chunks is ~900.
pub const MAX_MANIFEST_CHUNKS: usize = 1024;
/// Most Merkle proof nodes (log2 of [`MAX_MANIFEST_CHUNKS`]).
pub const MAX_PROOF_DEPTH: usize = 10;

/// A truncated, domain-separated SHA-256.
pub type Hash = [u8; HASH_LEN];

/// Repair policy for manifest chunks: 40 %, at least 2. Losing the manifest stalls the whole
/// block, so it gets more protection than the block: with 5 % (K = 837) the block's shards rarely
/// fail at 5 % loss while a 15 + 4 manifest would fail 0.3 % of the time (§3.4, §4.1.3).
pub const MANIFEST_REPAIR: RepairPolicy = RepairPolicy {
    overhead_permille: 400,
    min_repair: 2,
};

const SHARD_DOMAIN: &[u8] = b"photon/v1/shard\0";
const LEAF_DOMAIN: &[u8] = b"photon/v1/manifest-leaf\0";
const NODE_DOMAIN: &[u8] = b"photon/v1/manifest-node\0";
const SIGN_DOMAIN: &[u8] = b"photon/v1/manifest-sig\0";
const STREAM_DOMAIN: &[u8] = b"photon/v1/stream-prefix\0";

/// The high 32 bits of every stream id `origin` sends (§4.1.6): the first four bytes of
/// SHA-256(`"photon/v1/stream-prefix\0"` ‖ origin key), big-endian. A relay admits a
/// gateway's fragments only for streams under its prefix, and receivers bind a stream only to
/// the origin whose prefix it carries, so no other member can inject into it.
pub fn stream_prefix(origin: &[u8; PUBLIC_KEY_LEN]) -> u32 {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(STREAM_DOMAIN);
    ctx.update(origin);
    let d = ctx.finish();
    let mut b = [0u8; 4];
    b.copy_from_slice(&d.as_ref()[..4]);
    u32::from_be_bytes(b)
}

/// The stream id `origin` sends as its stream `low` (§4.1.6): its [`stream_prefix`] in the
/// high 32 bits. Origins draw `low` at random, non-zero.
pub fn stream_id(origin: &[u8; PUBLIC_KEY_LEN], low: u32) -> u64 {
    u64::from(stream_prefix(origin)) << 32 | u64::from(low)
}

/// [`stream_id`] for the origin whose signing key is `key`.
pub fn own_stream_id(key: &Ed25519KeyPair, low: u32) -> u64 {
    stream_id(&public_key(key), low)
}

/// The prefix `stream` carries: its high 32 bits (§4.1.6).
#[inline]
pub fn prefix_of(stream: u64) -> u32 {
    (stream >> 32) as u32
}

/// Whether `stream` carries `origin`'s [`stream_prefix`].
pub fn is_stream_of(stream: u64, origin: &[u8; PUBLIC_KEY_LEN]) -> bool {
    prefix_of(stream) == stream_prefix(origin)
}

/// Why a manifest fragment or a shard was rejected. Each is a counted drop at the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    /// Fewer bytes than the fixed part, or a length that does not match the metadata.
    #[error("manifest fragment of {got} bytes, expected {expected}")]
    BadLength { got: usize, expected: usize },
    /// A metadata field out of range or inconsistent with the others.
    #[error("manifest field {0} out of range")]
    BadField(&'static str),
    /// FEC parameters that do not describe a block.
    #[error("manifest FEC parameters: {0}")]
    Fec(#[from] FecError),
    /// The signature does not verify under the origin's key.
    #[error("bad manifest signature")]
    BadSignature,
    /// The origin's key is not trusted.
    #[error("untrusted origin")]
    UntrustedOrigin,
    /// A manifest for a stream id without its origin's [`stream_prefix`] (§4.1.6).
    #[error("stream id does not carry its origin's prefix")]
    ForeignStream,
    /// A fragment of another manifest (different metadata or root) for a stream already bound.
    #[error("manifest fragment conflicts with the verified manifest of this stream")]
    Conflict,
    /// A shard whose hash differs from the manifest's.
    #[error("shard {index} does not match its manifest hash")]
    ShardMismatch { index: u16 },
    /// The output buffer passed to an `emit` is too small.
    #[error("output buffer too small: need {need} bytes, got {got}")]
    BufferTooSmall { need: usize, got: usize },
}

/// The hash of shard `index` (global: `0..K` source, `K..K+R` repair) of stream `stream`.
pub fn shard_hash(stream: u64, index: u16, shard: &[u8]) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(SHARD_DOMAIN);
    ctx.update(&stream.to_be_bytes());
    ctx.update(&index.to_be_bytes());
    ctx.update(shard);
    truncate(ctx.finish())
}

fn truncate(d: digest::Digest) -> Hash {
    let mut h = [0u8; HASH_LEN];
    h.copy_from_slice(&d.as_ref()[..HASH_LEN]);
    h
}

fn leaf_hash(index: u16, chunk: &[u8]) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(LEAF_DOMAIN);
    ctx.update(&index.to_be_bytes());
    ctx.update(chunk);
    truncate(ctx.finish())
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(NODE_DOMAIN);
    ctx.update(left);
    ctx.update(right);
    truncate(ctx.finish())
}

/// Merkle depth for `leaves` leaves (the leaf level is padded to a power of two with zeros).
fn depth_for(leaves: usize) -> usize {
    leaves.next_power_of_two().trailing_zeros() as usize
}

/// Byte ranges of a manifest fragment payload (§4.1.2). Big-endian.
///
/// ```text
///  0                32       40     44   46  48  50    52   54   56           120  122
///  | origin key 32  | stream |blklen|shsz| K | R |chksz| Km | Rm | signature 64 |idx| proof 16*d | chunk |
/// ```
pub mod field {
    use core::ops::Range;
    /// The origin gateway's Ed25519 public key.
    pub const ORIGIN: Range<usize> = 0..32;
    /// Stream id (same as the common header's).
    pub const STREAM: Range<usize> = 32..40;
    /// Block length in bytes before padding.
    pub const BLOCK_LEN: Range<usize> = 40..44;
    /// Shard size.
    pub const SHARD_SIZE: Range<usize> = 44..46;
    /// K.
    pub const K: Range<usize> = 46..48;
    /// R.
    pub const R: Range<usize> = 48..50;
    /// Bytes per manifest chunk.
    pub const CHUNK_SIZE: Range<usize> = 50..52;
    /// Manifest source chunks Km.
    pub const KM: Range<usize> = 52..54;
    /// Manifest repair chunks Rm.
    pub const RM: Range<usize> = 54..56;
    /// Everything before is the signed metadata.
    pub const META: Range<usize> = 0..56;
    /// Ed25519 signature over domain || metadata || Merkle root.
    pub const SIGNATURE: Range<usize> = 56..120;
    /// Chunk index `0..Km+Rm`.
    pub const CHUNK_INDEX: Range<usize> = 120..122;
    /// Where the Merkle proof starts; `16 * depth` bytes, then the chunk.
    pub const PROOF: usize = 122;
}

/// Bytes of a manifest fragment payload before the proof and chunk.
pub const FIXED_LEN: usize = field::PROOF;

/// The signed metadata of a block's manifest (§4.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ManifestMeta {
    /// The origin gateway's Ed25519 public key.
    pub origin: [u8; PUBLIC_KEY_LEN],
    /// The block's stream id.
    pub stream: u64,
    /// How the block was cut (§3.2).
    pub fec: FecParams,
    /// Bytes per manifest chunk (a multiple of [`HASH_LEN`]).
    pub chunk_size: u16,
    /// Km.
    pub chunk_count: u16,
    /// Rm.
    pub chunk_repair: u16,
}

impl ManifestMeta {
    /// Bytes of the hash table: 16 per shard.
    pub fn table_len(&self) -> usize {
        self.fec.total() * HASH_LEN
    }

    /// Km + Rm.
    pub fn chunks_total(&self) -> usize {
        usize::from(self.chunk_count) + usize::from(self.chunk_repair)
    }

    /// Merkle proof nodes per fragment.
    pub fn depth(&self) -> usize {
        depth_for(self.chunks_total())
    }

    /// Bytes of every manifest fragment payload of this manifest.
    pub fn fragment_len(&self) -> usize {
        FIXED_LEN + HASH_LEN * self.depth() + usize::from(self.chunk_size)
    }

    /// FEC parameters of the hash table's own code.
    pub fn table_fec(&self) -> Result<FecParams, IntegrityError> {
        Ok(FecParams::new(
            self.table_len(),
            usize::from(self.chunk_size),
            usize::from(self.chunk_count),
            usize::from(self.chunk_repair),
        )?)
    }

    fn validate(&self) -> Result<(), IntegrityError> {
        let fec = FecParams::new(
            self.fec.block_len(),
            self.fec.shard_len(),
            self.fec.k(),
            self.fec.r(),
        )?;
        if fec != self.fec {
            return Err(IntegrityError::BadField("fec"));
        }
        if self.chunk_size == 0 || usize::from(self.chunk_size) % HASH_LEN != 0 {
            return Err(IntegrityError::BadField("chunk size"));
        }
        if self.chunks_total() > MAX_MANIFEST_CHUNKS {
            return Err(IntegrityError::BadField("chunk count"));
        }
        self.table_fec()?;
        Ok(())
    }

    fn emit(&self, out: &mut [u8]) {
        out[field::ORIGIN].copy_from_slice(&self.origin);
        out[field::STREAM].copy_from_slice(&self.stream.to_be_bytes());
        out[field::BLOCK_LEN].copy_from_slice(&self.fec.block_len.to_be_bytes());
        out[field::SHARD_SIZE].copy_from_slice(&self.fec.shard_size.to_be_bytes());
        out[field::K].copy_from_slice(&self.fec.source_count.to_be_bytes());
        out[field::R].copy_from_slice(&self.fec.repair_count.to_be_bytes());
        out[field::CHUNK_SIZE].copy_from_slice(&self.chunk_size.to_be_bytes());
        out[field::KM].copy_from_slice(&self.chunk_count.to_be_bytes());
        out[field::RM].copy_from_slice(&self.chunk_repair.to_be_bytes());
    }

    /// The manifest's name in receipts (§2.5): full SHA-256 of the signed message (domain,
    /// metadata, Merkle root). Equal hashes mean the same block, shard for shard.
    pub fn manifest_hash(&self, root: &Hash) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest::digest(&digest::SHA256, &self.signed_message(root)).as_ref());
        out
    }

    fn signed_message(&self, root: &Hash) -> [u8; 23 + 56 + HASH_LEN] {
        let mut msg = [0u8; 23 + 56 + HASH_LEN];
        msg[..SIGN_DOMAIN.len()].copy_from_slice(SIGN_DOMAIN);
        self.emit(&mut msg[SIGN_DOMAIN.len()..SIGN_DOMAIN.len() + 56]);
        msg[SIGN_DOMAIN.len() + 56..].copy_from_slice(root);
        msg
    }
}

/// The sender's manifest of one block: metadata, hash table chunks (source and repair), Merkle
/// tree, signature. Emits manifest fragment payloads.
#[derive(Debug, Clone)]
pub struct SignedManifest {
    meta: ManifestMeta,
    signature: [u8; SIGNATURE_LEN],
    chunks: Encoded,
    /// Tree levels, leaves first (padded to a power of two), root last.
    tree: Vec<Vec<Hash>>,
}

impl SignedManifest {
    /// Builds and signs the manifest of `block` (already FEC-encoded) for fragments of at most
    /// `payload_budget` bytes (the wire's max fragment payload).
    pub fn build(
        stream: u64,
        block: &Encoded,
        key: &Ed25519KeyPair,
        payload_budget: usize,
    ) -> Result<Self, IntegrityError> {
        if own_stream_id(key, stream as u32) != stream {
            return Err(IntegrityError::ForeignStream);
        }
        let fec = *block.params();
        let mut table = Vec::with_capacity(fec.total() * HASH_LEN);
        for (i, shard) in block.shards().enumerate() {
            // i < MAX_TOTAL_SHARDS = 32768: fits u16.
            table.extend_from_slice(&shard_hash(stream, i as u16, shard));
        }
        // The chunk size depends on the proof depth, which depends on the chunk count: try each
        // depth and take the first consistent one.
        let mut chosen = None;
        for depth in 0..=MAX_PROOF_DEPTH {
            let room = payload_budget.saturating_sub(FIXED_LEN + HASH_LEN * depth);
            let chunk_size =
                (room / HASH_LEN * HASH_LEN).min(usize::from(u16::MAX) / HASH_LEN * HASH_LEN);
            if chunk_size == 0 {
                break;
            }
            let km = table.len().div_ceil(chunk_size);
            let rm = MANIFEST_REPAIR.repair_count(km);
            if depth_for(km + rm) <= depth && km + rm <= MAX_MANIFEST_CHUNKS {
                chosen = Some((chunk_size, km, rm));
                break;
            }
        }
        let (chunk_size, km, rm) = chosen.ok_or(IntegrityError::BadField("payload budget"))?;
        let table_fec = FecParams::new(table.len(), chunk_size, km, rm)?;
        let chunks = Encoded::encode_with(&table, table_fec)?;
        let meta = ManifestMeta {
            origin: public_key(key),
            stream,
            fec,
            // Bounded above: chunk_size <= 65535, km + rm <= 1024.
            chunk_size: chunk_size as u16,
            chunk_count: km as u16,
            chunk_repair: rm as u16,
        };
        let depth = depth_for(km + rm);
        let mut level: Vec<Hash> = chunks
            .shards()
            .enumerate()
            .map(|(i, c)| leaf_hash(i as u16, c))
            .collect();
        level.resize(1 << depth, [0u8; HASH_LEN]);
        let mut tree = vec![level];
        while tree.last().map_or(0, Vec::len) > 1 {
            let next = tree
                .last()
                .map(|l| l.chunks_exact(2).map(|p| node_hash(&p[0], &p[1])).collect())
                .unwrap_or_default();
            tree.push(next);
        }
        let root = tree
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or([0; HASH_LEN]);
        let sig = key.sign(&meta.signed_message(&root));
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(sig.as_ref());
        Ok(SignedManifest {
            meta,
            signature,
            chunks,
            tree,
        })
    }

    /// The signed metadata.
    pub fn meta(&self) -> &ManifestMeta {
        &self.meta
    }

    /// [`ManifestMeta::manifest_hash`] of this manifest.
    pub fn manifest_hash(&self) -> [u8; 32] {
        self.meta.manifest_hash(&self.root())
    }

    /// The Merkle root that was signed.
    pub fn root(&self) -> Hash {
        self.tree
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or([0; HASH_LEN])
    }

    /// Manifest fragments: `Km + Rm`. Fragments `0..Km` carry the table, the rest its repair.
    pub fn fragment_count(&self) -> usize {
        self.meta.chunks_total()
    }

    /// Bytes of each fragment payload.
    pub fn fragment_len(&self) -> usize {
        self.meta.fragment_len()
    }

    /// Writes fragment `index`'s payload into `out`; returns its length.
    pub fn emit_fragment(&self, index: usize, out: &mut [u8]) -> Result<usize, IntegrityError> {
        let len = self.fragment_len();
        if out.len() < len {
            return Err(IntegrityError::BufferTooSmall {
                need: len,
                got: out.len(),
            });
        }
        let chunk = self
            .chunks
            .shard(index)
            .ok_or(IntegrityError::BadField("chunk index"))?;
        let mut proof = Vec::with_capacity(HASH_LEN * self.meta.depth());
        let mut i = index;
        for level in &self.tree[..self.tree.len() - 1] {
            proof.extend_from_slice(&level[i ^ 1]);
            i >>= 1;
        }
        let repr = ManifestFragmentRepr {
            meta: self.meta,
            signature: self.signature,
            chunk_index: index as u16,
            proof: &proof,
            chunk,
        };
        repr.emit(out)
    }
}

/// The 32-byte public key of an Ed25519 key pair.
pub fn public_key(key: &Ed25519KeyPair) -> [u8; PUBLIC_KEY_LEN] {
    use ring::signature::KeyPair;
    let mut pk = [0u8; PUBLIC_KEY_LEN];
    pk.copy_from_slice(key.public_key().as_ref());
    pk
}

/// A zero-copy view of a manifest fragment payload. After [`ManifestFragment::new_checked`] no
/// accessor panics.
#[derive(Debug, Clone, Copy)]
pub struct ManifestFragment<T: AsRef<[u8]>> {
    buffer: T,
}

fn be16(b: &[u8], r: core::ops::Range<usize>) -> u16 {
    u16::from_be_bytes([b[r.start], b[r.start + 1]])
}

impl<T: AsRef<[u8]>> ManifestFragment<T> {
    /// Wraps a buffer without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        ManifestFragment { buffer }
    }

    /// Wraps a buffer after [`ManifestFragment::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, IntegrityError> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// Checks that the buffer is exactly as long as its metadata says (fixed part, proof of the
    /// depth `Km + Rm` implies, chunk), with `Km + Rm` bounded.
    pub fn check_len(&self) -> Result<(), IntegrityError> {
        let b = self.buffer.as_ref();
        if b.len() < FIXED_LEN {
            return Err(IntegrityError::BadLength {
                got: b.len(),
                expected: FIXED_LEN,
            });
        }
        let total = usize::from(be16(b, field::KM)) + usize::from(be16(b, field::RM));
        if total == 0 || total > MAX_MANIFEST_CHUNKS {
            return Err(IntegrityError::BadField("chunk count"));
        }
        let expected =
            FIXED_LEN + HASH_LEN * depth_for(total) + usize::from(be16(b, field::CHUNK_SIZE));
        if b.len() != expected {
            return Err(IntegrityError::BadLength {
                got: b.len(),
                expected,
            });
        }
        Ok(())
    }

    /// Metadata as written (not validated; see [`ManifestFragmentRepr::parse`]).
    pub fn meta_raw(&self) -> (u64, u32, [u16; 6]) {
        let b = self.buffer.as_ref();
        let mut s = [0u8; 8];
        s.copy_from_slice(&b[field::STREAM]);
        let mut l = [0u8; 4];
        l.copy_from_slice(&b[field::BLOCK_LEN]);
        (
            u64::from_be_bytes(s),
            u32::from_be_bytes(l),
            [
                field::SHARD_SIZE,
                field::K,
                field::R,
                field::CHUNK_SIZE,
                field::KM,
                field::RM,
            ]
            .map(|r| be16(b, r)),
        )
    }

    /// The origin's public key.
    pub fn origin(&self) -> &[u8] {
        &self.buffer.as_ref()[field::ORIGIN]
    }

    /// The signature.
    pub fn signature(&self) -> &[u8] {
        &self.buffer.as_ref()[field::SIGNATURE]
    }

    /// The chunk index.
    pub fn chunk_index(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHUNK_INDEX)
    }

    fn chunks_total(&self) -> usize {
        let b = self.buffer.as_ref();
        usize::from(be16(b, field::KM)) + usize::from(be16(b, field::RM))
    }

    /// The Merkle proof, `16 * depth` bytes.
    pub fn proof(&self) -> &[u8] {
        let end = field::PROOF + HASH_LEN * depth_for(self.chunks_total());
        &self.buffer.as_ref()[field::PROOF..end]
    }

    /// The chunk.
    pub fn chunk(&self) -> &[u8] {
        let start = field::PROOF + HASH_LEN * depth_for(self.chunks_total());
        &self.buffer.as_ref()[start..]
    }
}

/// A parsed, validated manifest fragment (borrowing proof and chunk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestFragmentRepr<'a> {
    /// Signed metadata.
    pub meta: ManifestMeta,
    /// Ed25519 signature over domain || metadata || root.
    pub signature: [u8; SIGNATURE_LEN],
    /// Chunk index `0..Km+Rm`.
    pub chunk_index: u16,
    /// Merkle proof, leaf sibling first.
    pub proof: &'a [u8],
    /// The chunk: a slice of the hash table, or a repair chunk of it.
    pub chunk: &'a [u8],
}

impl<'a> ManifestFragmentRepr<'a> {
    /// Parses and validates a fragment payload (no signature check: see [`Self::root`] and
    /// [`Self::verify`]).
    pub fn parse(payload: &'a [u8]) -> Result<Self, IntegrityError> {
        let f = ManifestFragment::new_checked(payload)?;
        let (stream, block_len, [shard_size, k, r, chunk_size, km, rm]) = f.meta_raw();
        let fec = FecParams::new(
            block_len as usize,
            usize::from(shard_size),
            usize::from(k),
            usize::from(r),
        )?;
        let mut origin = [0u8; PUBLIC_KEY_LEN];
        origin.copy_from_slice(f.origin());
        let meta = ManifestMeta {
            origin,
            stream,
            fec,
            chunk_size,
            chunk_count: km,
            chunk_repair: rm,
        };
        meta.validate()?;
        if usize::from(f.chunk_index()) >= meta.chunks_total() {
            return Err(IntegrityError::BadField("chunk index"));
        }
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(f.signature());
        let proof_end = field::PROOF + HASH_LEN * meta.depth();
        Ok(ManifestFragmentRepr {
            meta,
            signature,
            chunk_index: f.chunk_index(),
            proof: &payload[field::PROOF..proof_end],
            chunk: &payload[proof_end..],
        })
    }

    /// Bytes [`Self::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        FIXED_LEN + self.proof.len() + self.chunk.len()
    }

    /// Writes the fragment payload; returns its length.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, IntegrityError> {
        let len = self.buffer_len();
        if out.len() < len {
            return Err(IntegrityError::BufferTooSmall {
                need: len,
                got: out.len(),
            });
        }
        if self.proof.len() != HASH_LEN * self.meta.depth()
            || self.chunk.len() != usize::from(self.meta.chunk_size)
        {
            return Err(IntegrityError::BadLength {
                got: len,
                expected: self.meta.fragment_len(),
            });
        }
        self.meta.emit(&mut out[field::META]);
        out[field::SIGNATURE].copy_from_slice(&self.signature);
        out[field::CHUNK_INDEX].copy_from_slice(&self.chunk_index.to_be_bytes());
        out[field::PROOF..field::PROOF + self.proof.len()].copy_from_slice(self.proof);
        out[field::PROOF + self.proof.len()..len].copy_from_slice(self.chunk);
        Ok(len)
    }

    /// The Merkle root this fragment's chunk and proof lead to.
    pub fn root(&self) -> Hash {
        let mut h = leaf_hash(self.chunk_index, self.chunk);
        let mut i = usize::from(self.chunk_index);
        for sibling in self.proof.chunks_exact(HASH_LEN) {
            let mut s = [0u8; HASH_LEN];
            s.copy_from_slice(sibling);
            h = if i & 1 == 0 {
                node_hash(&h, &s)
            } else {
                node_hash(&s, &h)
            };
            i >>= 1;
        }
        h
    }

    /// Verifies the signature over metadata and `root` under the fragment's origin key.
    pub fn verify(&self, root: &Hash) -> Result<(), IntegrityError> {
        let key = signature::UnparsedPublicKey::new(&signature::ED25519, &self.meta.origin);
        key.verify(&self.meta.signed_message(root), &self.signature)
            .map_err(|_| IntegrityError::BadSignature)
    }
}

/// The receiver's side of one stream's manifest (§4.1.4): binds to the first fragment whose
/// signature verifies, then accepts further fragments of the same manifest by their Merkle proof
/// alone, and answers the hash of each shard as soon as the chunk holding it is known.
#[derive(Debug, Clone)]
pub struct ManifestCollector {
    meta: ManifestMeta,
    root: Hash,
    chunks: fec::Decoder,
    /// The whole table once `Km` chunks are in.
    table: Option<Vec<u8>>,
}

/// What [`ManifestCollector::insert`] did with a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// A new chunk; the range of shard indices whose hash became known (may be empty).
    New {
        newly_known: core::ops::Range<usize>,
    },
    /// A chunk already held.
    Duplicate,
}

impl ManifestCollector {
    /// Starts from a first fragment: verifies its signature (one Ed25519 check per block) under
    /// its origin key, which must satisfy `trusted`.
    pub fn new(
        first: &ManifestFragmentRepr<'_>,
        trusted: impl Fn(&[u8; 32]) -> bool,
    ) -> Result<(Self, Inserted), IntegrityError> {
        if !trusted(&first.meta.origin) {
            return Err(IntegrityError::UntrustedOrigin);
        }
        if !is_stream_of(first.meta.stream, &first.meta.origin) {
            return Err(IntegrityError::ForeignStream);
        }
        let root = first.root();
        first.verify(&root)?;
        let mut c = ManifestCollector {
            meta: first.meta,
            root,
            chunks: fec::Decoder::new(first.meta.table_fec()?),
            table: None,
        };
        let ins = c.insert(first)?;
        Ok((c, ins))
    }

    /// The verified metadata.
    pub fn meta(&self) -> &ManifestMeta {
        &self.meta
    }

    /// Adds a fragment of this manifest. Checked by its Merkle proof against the verified root;
    /// a fragment of another manifest is [`IntegrityError::Conflict`].
    pub fn insert(&mut self, f: &ManifestFragmentRepr<'_>) -> Result<Inserted, IntegrityError> {
        if f.meta != self.meta || f.root() != self.root {
            return Err(IntegrityError::Conflict);
        }
        let index = usize::from(f.chunk_index);
        if self.table.is_some() || !self.chunks.insert(index, f.chunk)? {
            return Ok(Inserted::Duplicate);
        }
        let km = usize::from(self.meta.chunk_count);
        if self.chunks.can_decode() {
            self.table = Some(self.chunks.decode()?);
            return Ok(Inserted::New {
                newly_known: 0..self.meta.fec.total(),
            });
        }
        if index < km {
            let per = usize::from(self.meta.chunk_size) / HASH_LEN;
            let start = index * per;
            let end = ((index + 1) * per).min(self.meta.fec.total());
            return Ok(Inserted::New {
                newly_known: start.min(end)..end,
            });
        }
        Ok(Inserted::New { newly_known: 0..0 })
    }

    /// [`ManifestMeta::manifest_hash`] of the verified manifest.
    pub fn manifest_hash(&self) -> [u8; 32] {
        self.meta.manifest_hash(&self.root)
    }

    /// Whether the whole hash table is known.
    pub fn is_complete(&self) -> bool {
        self.table.is_some()
    }

    /// Manifest chunk indices not yet held (empty once complete).
    pub fn missing_chunks(&self) -> Vec<u16> {
        if self.table.is_some() {
            return Vec::new();
        }
        self.chunks.missing().map(|i| i as u16).collect()
    }

    /// The hash of shard `index`, if the chunk holding it is known.
    pub fn shard_hash(&self, index: usize) -> Option<Hash> {
        if index >= self.meta.fec.total() {
            return None;
        }
        let off = index * HASH_LEN;
        let bytes = match &self.table {
            Some(t) => t.get(off..off + HASH_LEN)?,
            None => {
                let cs = usize::from(self.meta.chunk_size);
                let chunk = off / cs;
                if !self.chunks.has(chunk) {
                    return None;
                }
                self.chunks
                    .shard_bytes(chunk)?
                    .get(off % cs..off % cs + HASH_LEN)?
            }
        };
        let mut h = [0u8; HASH_LEN];
        h.copy_from_slice(bytes);
        Some(h)
    }

    /// Checks a shard against its manifest hash. `Ok(false)` if its hash is not known yet.
    pub fn check_shard(&self, index: u16, shard: &[u8]) -> Result<bool, IntegrityError> {
        match self.shard_hash(usize::from(index)) {
            None => Ok(false),
            Some(h) if h == shard_hash(self.meta.stream, index, shard) => Ok(true),
            Some(_) => Err(IntegrityError::ShardMismatch { index }),
        }
    }
}

#[cfg(feature = "fuzzing")]
/// Fuzz entry (`fuzz/fuzz_targets/manifest.rs`, replayed by
/// `protocol/tests/fuzz_corpus_transport.rs`): parses any bytes as a manifest fragment payload;
/// what parses must emit back to the same bytes and parse to the same `Repr`; root and signature
/// checks must return, not panic; a collector must either bind or reject it.
pub fn fuzz_manifest(data: &[u8]) {
    let Ok(view) = ManifestFragment::new_checked(data) else {
        return;
    };
    let _ = (
        view.origin(),
        view.signature(),
        view.chunk_index(),
        view.proof(),
        view.chunk(),
        view.meta_raw(),
    );
    let Ok(repr) = ManifestFragmentRepr::parse(data) else {
        return;
    };
    let mut out = vec![0u8; repr.buffer_len()];
    let n = repr.emit(&mut out).expect("a parsed fragment re-emits");
    assert_eq!(&out[..n], data, "emit(parse(x)) == x");
    assert_eq!(
        ManifestFragmentRepr::parse(&out[..]).expect("emitted fragment parses"),
        repr
    );
    let root = repr.root();
    let verified = repr.verify(&root).is_ok();
    match ManifestCollector::new(&repr, |_| true) {
        Ok((c, _)) => {
            assert!(verified);
            for i in 0..c.meta().fec.total().min(64) {
                let _ = c.shard_hash(i);
            }
        }
        Err(e) => assert!(
            !verified
                || repr.meta.table_fec().is_err()
                || (e == IntegrityError::ForeignStream
                    && !is_stream_of(repr.meta.stream, &repr.meta.origin))
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    fn key(seed: u8) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap()
    }

    #[test]
    fn shard_hash_is_domain_separated() {
        let a = shard_hash(1, 0, b"x");
        assert_ne!(a, shard_hash(2, 0, b"x"));
        assert_ne!(a, shard_hash(1, 1, b"x"));
        assert_ne!(a, shard_hash(1, 0, b"y"));
        assert_eq!(a, shard_hash(1, 0, b"x"));
    }

    #[test]
    fn every_fragment_verifies_alone_and_rebuilds_the_table() {
        let _ = SystemRandom::new();
        let block: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let enc = Encoded::encode(&block, 1196, &RepairPolicy::DEFAULT).unwrap();
        let k = key(1);
        let m = SignedManifest::build(own_stream_id(&k, 9), &enc, &k, 1196).unwrap();
        assert!(m.fragment_len() <= 1196);
        let mut frags = Vec::new();
        for i in 0..m.fragment_count() {
            let mut buf = vec![0u8; 1196];
            let n = m.emit_fragment(i, &mut buf).unwrap();
            buf.truncate(n);
            frags.push(buf);
        }
        // Start from a repair fragment, then take only repair + a few sources: any Km rebuild.
        let km = usize::from(m.meta().chunk_count);
        let order: Vec<usize> = (km..m.fragment_count()).chain(0..km).collect();
        let first = ManifestFragmentRepr::parse(&frags[order[0]]).unwrap();
        let (mut c, _) = ManifestCollector::new(&first, |pk| *pk == public_key(&k)).unwrap();
        for &i in &order[1..km] {
            c.insert(&ManifestFragmentRepr::parse(&frags[i]).unwrap())
                .unwrap();
        }
        assert!(c.is_complete());
        for (i, shard) in enc.shards().enumerate() {
            assert_eq!(c.check_shard(i as u16, shard), Ok(true));
        }
        let mut bad = enc.shard(3).unwrap().to_vec();
        bad[0] ^= 1;
        assert_eq!(
            c.check_shard(3, &bad),
            Err(IntegrityError::ShardMismatch { index: 3 })
        );
    }

    #[test]
    fn forged_fragments_are_rejected() {
        let enc = Encoded::encode(&[5u8; 50_000], 1196, &RepairPolicy::DEFAULT).unwrap();
        let k = key(1);
        let m = SignedManifest::build(own_stream_id(&k, 9), &enc, &k, 1196).unwrap();
        let mut buf = vec![0u8; 1196];
        let n = m.emit_fragment(0, &mut buf).unwrap();
        buf.truncate(n);
        // Untrusted origin.
        let r = ManifestFragmentRepr::parse(&buf).unwrap();
        assert_eq!(
            ManifestCollector::new(&r, |_| false).err(),
            Some(IntegrityError::UntrustedOrigin)
        );
        // A flipped chunk byte changes the root: signature fails.
        let mut forged = buf.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let r = ManifestFragmentRepr::parse(&forged).unwrap();
        assert_eq!(
            ManifestCollector::new(&r, |_| true).err(),
            Some(IntegrityError::BadSignature)
        );
        // Signed by another key but claiming k as its origin: its stream carries the other
        // key's prefix, not k's (§4.1.6).
        let other = SignedManifest::build(own_stream_id(&key(2), 9), &enc, &key(2), 1196).unwrap();
        let mut buf2 = vec![0u8; 1196];
        let n2 = other.emit_fragment(0, &mut buf2).unwrap();
        buf2[field::ORIGIN].copy_from_slice(&public_key(&k));
        let r = ManifestFragmentRepr::parse(&buf2[..n2]).unwrap();
        assert_eq!(
            ManifestCollector::new(&r, |_| true).err(),
            Some(IntegrityError::ForeignStream)
        );
        // The same with k's prefix written into its stream: the signature fails.
        buf2[field::STREAM][..4].copy_from_slice(&buf[field::STREAM][..4]);
        let r = ManifestFragmentRepr::parse(&buf2[..n2]).unwrap();
        assert_eq!(
            ManifestCollector::new(&r, |_| true).err(),
            Some(IntegrityError::BadSignature)
        );
        // k's own fragment moved to another stream of k's: the stream is signed.
        let mut moved = buf.clone();
        moved[field::STREAM][7] ^= 1;
        let r = ManifestFragmentRepr::parse(&moved).unwrap();
        assert_eq!(
            ManifestCollector::new(&r, |_| true).err(),
            Some(IntegrityError::BadSignature)
        );
        // A block of k's built under another origin's stream id is refused at the source.
        assert_eq!(
            SignedManifest::build(own_stream_id(&key(2), 9), &enc, &k, 1196).err(),
            Some(IntegrityError::ForeignStream)
        );
        // After binding, a fragment with a forged chunk conflicts.
        let good = ManifestFragmentRepr::parse(&buf).unwrap();
        let (mut c, _) = ManifestCollector::new(&good, |_| true).unwrap();
        let mut b1 = vec![0u8; 1196];
        let n1 = m.emit_fragment(1, &mut b1).unwrap();
        b1[n1 - 1] ^= 1;
        let r = ManifestFragmentRepr::parse(&b1[..n1]).unwrap();
        assert_eq!(c.insert(&r), Err(IntegrityError::Conflict));
    }

    #[test]
    fn golden_fragment_layout() {
        // One 2-byte-shard block: layout checked field by field.
        let enc = Encoded::encode(
            &[0xab, 0xcd, 0xef],
            2,
            &RepairPolicy {
                overhead_permille: 0,
                min_repair: 1,
            },
        )
        .unwrap();
        let k = key(7);
        let m = SignedManifest::build(own_stream_id(&k, 0x0506_0708), &enc, &k, 250).unwrap();
        let mut buf = vec![0u8; 250];
        let n = m.emit_fragment(0, &mut buf).unwrap();
        // 3 shards * 16 = 48-byte table in one 96-byte chunk; Km = 1, Rm = 2, depth 2.
        assert_eq!(
            (
                m.meta().chunk_count,
                m.meta().chunk_repair,
                m.meta().chunk_size
            ),
            (1, 2, 96)
        );
        assert_eq!(n, FIXED_LEN + 2 * HASH_LEN + 96);
        // The prefix of key(7)'s streams, as Python's hashlib and `cryptography` compute it:
        // sha256(b"photon/v1/stream-prefix\0" + pk)[:4].
        assert_eq!(&buf[field::STREAM], &[0x2a, 0x37, 0x65, 0x58, 5, 6, 7, 8]);
        assert_eq!(
            &buf[40..56],
            &[0, 0, 0, 3, 0, 2, 0, 2, 0, 1, 0, 96, 0, 1, 0, 2]
        );
        assert_eq!(&buf[field::CHUNK_INDEX], &[0, 0]);
        assert_eq!(
            &buf[n - 96..n - 48],
            &[
                shard_hash(own_stream_id(&k, 0x0506_0708), 0, &[0xab, 0xcd]),
                shard_hash(own_stream_id(&k, 0x0506_0708), 1, &[0xef, 0]),
                shard_hash(own_stream_id(&k, 0x0506_0708), 2, enc.shard(2).unwrap())
            ]
            .concat()[..]
        );
        fuzz_manifest(&buf[..n]);
    }
}
