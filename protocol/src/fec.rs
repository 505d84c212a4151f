//! Forward error correction of a block (`docs/protocol.md` §3).
//!
//! A block (already compressed and sealed: opaque bytes here) is cut into K equal source shards,
//! the last one zero-padded, and a systematic Reed-Solomon code over GF(2^16)
//! (`reed-solomon-simd`) adds R repair shards: any K of the K + R shards rebuild the block. The
//! original length travels in the signed manifest (§4.1), so the padding is cut off after
//! decoding. One code covers the whole block (no 32:32 batches as in Solana), so a loss anywhere
//! is repaired by a repair shard from anywhere: the decoding threshold is exactly K.
//!
//! - [`FecParams`] says how a block is cut: length, shard size, K and R. [`RepairPolicy`] picks
//!   R from K.
//! - [`Encoded`] holds the K + R shards of a block in one contiguous buffer.
//! - [`Decoder`] takes shards in any order (after integrity checks, §4.1) and rebuilds the block.
//!
//! Shard indices are one space: `0..K` are source shards, `K..K+R` repair shards.

use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

/// Most shards (K + R) in one block's code (§3.1). `reed-solomon-simd` supports more in some
/// K:R shapes; this bound holds for every shape and keeps a shard index in a `u16`.
pub const MAX_TOTAL_SHARDS: usize = 32768;

/// Largest block one code carries: [`MAX_TOTAL_SHARDS`] is far above any Bitcoin block
/// (4 MB weight limit), this cap keeps a hostile length field from asking for gigabytes.
pub const MAX_BLOCK_LEN: usize = 16 * 1024 * 1024;

/// Why a block cannot be encoded or decoded. Typed, never a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FecError {
    /// An empty block has nothing to protect.
    #[error("empty block")]
    EmptyBlock,
    /// The block is longer than [`MAX_BLOCK_LEN`].
    #[error("block of {len} bytes exceeds the maximum of {max}")]
    BlockTooLong { len: usize, max: usize },
    /// Shard size is zero or odd (the GF(2^16) code works on 2-byte symbols).
    #[error("shard size {0} must be even and non-zero")]
    BadShardSize(usize),
    /// K + R exceeds [`MAX_TOTAL_SHARDS`] (or the codec does not support this K:R).
    #[error("{source_count} source + {repair_count} repair shards: too many for one code")]
    TooManyShards {
        source_count: usize,
        repair_count: usize,
    },
    /// Parameters that do not describe a block: K inconsistent with length and shard size.
    #[error("inconsistent parameters: K = {source_count} for {block_len} bytes in {shard_size}-byte shards")]
    Inconsistent {
        block_len: usize,
        shard_size: usize,
        source_count: usize,
    },
    /// A shard index at or above K + R.
    #[error("shard index {index} out of range (K + R = {total})")]
    IndexOutOfRange { index: usize, total: usize },
    /// A shard whose length is not the block's shard size.
    #[error("shard of {got} bytes, expected {expected}")]
    WrongShardLen { got: usize, expected: usize },
    /// Fewer than K distinct shards: cannot decode yet.
    #[error("need {need} shards, have {have}")]
    NotEnoughShards { need: usize, have: usize },
    /// The codec failed (should not happen with validated parameters; reported, not panicked).
    #[error("reed-solomon codec error")]
    Codec,
}

/// How many repair shards a block of K source shards gets (§3.3):
/// `R = max(min_repair, ceil(K * overhead_permille / 1000))`, capped so K + R fits one code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairPolicy {
    /// Repair overhead in thousandths of K (50 = 5 %).
    pub overhead_permille: u32,
    /// Floor on R, so small blocks still survive a loss or two.
    pub min_repair: u32,
}

impl RepairPolicy {
    /// The default, chosen from the loss simulation of §3.4 (`examples/fec_loss_table.rs`,
    /// 20,000 trials per cell): 5 % repair rebuilds a 1 MB block with no retransmission in every
    /// trial at 1 % and at 2 % i.i.d. loss (3 % is the least that meets 99.9 % at 1 %; 5 % keeps
    /// a margin), and in 42 % of trials at 5 % loss, where one repair round is needed.
    pub const DEFAULT: RepairPolicy = RepairPolicy {
        overhead_permille: 50,
        min_repair: 4,
    };

    /// R for `source_count` source shards.
    pub fn repair_count(&self, source_count: usize) -> usize {
        let ratio = (source_count as u64)
            .saturating_mul(u64::from(self.overhead_permille))
            .div_ceil(1000);
        let r = usize::try_from(ratio)
            .unwrap_or(usize::MAX)
            .max(self.min_repair as usize);
        r.min(MAX_TOTAL_SHARDS.saturating_sub(source_count))
    }
}

impl Default for RepairPolicy {
    fn default() -> Self {
        RepairPolicy::DEFAULT
    }
}

/// Largest usable shard size for a per-datagram payload budget: the budget minus per-shard
/// integrity bytes, rounded down to even (§3.2). Version 1 carries no per-shard integrity bytes
/// (the manifest holds the shard hashes, §4.1), so a shard fills a fragment: 1196 bytes.
pub fn shard_size_for(
    payload_budget: usize,
    per_shard_integrity: usize,
) -> Result<usize, FecError> {
    let size = payload_budget.saturating_sub(per_shard_integrity) & !1;
    if size == 0 {
        return Err(FecError::BadShardSize(size));
    }
    Ok(size)
}

/// How a block is cut into shards (§3.2). Every field is carried in the signed manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FecParams {
    /// Bytes of the block before padding.
    pub block_len: u32,
    /// Bytes per shard (even).
    pub shard_size: u16,
    /// K: source shards.
    pub source_count: u16,
    /// R: repair shards.
    pub repair_count: u16,
}

impl FecParams {
    /// Parameters for a block of `block_len` bytes in `shard_size`-byte shards with R from `policy`.
    pub fn for_block(
        block_len: usize,
        shard_size: usize,
        policy: &RepairPolicy,
    ) -> Result<Self, FecError> {
        // `new` validates everything; only the division below needs a guard of its own.
        if shard_size == 0 {
            return Err(FecError::BadShardSize(shard_size));
        }
        let k = block_len.div_ceil(shard_size);
        let r = policy.repair_count(k);
        Self::new(block_len, shard_size, k, r)
    }

    /// Parameters from explicit values (e.g. parsed from a manifest), validated.
    pub fn new(
        block_len: usize,
        shard_size: usize,
        source_count: usize,
        repair_count: usize,
    ) -> Result<Self, FecError> {
        if block_len == 0 {
            return Err(FecError::EmptyBlock);
        }
        if block_len > MAX_BLOCK_LEN {
            return Err(FecError::BlockTooLong {
                len: block_len,
                max: MAX_BLOCK_LEN,
            });
        }
        if shard_size == 0 || shard_size & 1 != 0 || shard_size > usize::from(u16::MAX) {
            return Err(FecError::BadShardSize(shard_size));
        }
        if source_count + repair_count > MAX_TOTAL_SHARDS
            || source_count == 0
            || (repair_count > 0 && !ReedSolomonEncoder::supports(source_count, repair_count))
        {
            return Err(FecError::TooManyShards {
                source_count,
                repair_count,
            });
        }
        if block_len.div_ceil(shard_size) != source_count {
            return Err(FecError::Inconsistent {
                block_len,
                shard_size,
                source_count,
            });
        }
        // All four fit their fields: checked above (block_len <= 16 MiB, counts <= 32768).
        Ok(FecParams {
            block_len: block_len as u32,
            shard_size: shard_size as u16,
            source_count: source_count as u16,
            repair_count: repair_count as u16,
        })
    }

    /// K.
    pub fn k(&self) -> usize {
        usize::from(self.source_count)
    }

    /// R.
    pub fn r(&self) -> usize {
        usize::from(self.repair_count)
    }

    /// K + R.
    pub fn total(&self) -> usize {
        self.k() + self.r()
    }

    /// Bytes per shard.
    pub fn shard_len(&self) -> usize {
        usize::from(self.shard_size)
    }

    /// Bytes of the block.
    pub fn block_len(&self) -> usize {
        self.block_len as usize
    }
}

/// The K + R shards of one block, in one contiguous buffer: shard `i` is bytes
/// `i * shard_size .. (i + 1) * shard_size`.
#[derive(Debug, Clone)]
pub struct Encoded {
    params: FecParams,
    shards: Vec<u8>,
}

impl Encoded {
    /// Cuts `block` into K source shards (zero-padded) and computes R repair shards.
    pub fn encode(
        block: &[u8],
        shard_size: usize,
        policy: &RepairPolicy,
    ) -> Result<Self, FecError> {
        let params = FecParams::for_block(block.len(), shard_size, policy)?;
        Self::encode_with(block, params)
    }

    /// Encodes with explicit parameters (`params.block_len` must equal `block.len()`).
    pub fn encode_with(block: &[u8], params: FecParams) -> Result<Self, FecError> {
        if block.len() != params.block_len() {
            return Err(FecError::Inconsistent {
                block_len: block.len(),
                shard_size: params.shard_len(),
                source_count: params.k(),
            });
        }
        let s = params.shard_len();
        let mut shards = vec![0u8; params.total() * s];
        shards[..block.len()].copy_from_slice(block);
        if params.r() > 0 {
            let mut enc =
                ReedSolomonEncoder::new(params.k(), params.r(), s).map_err(|_| FecError::Codec)?;
            for shard in shards[..params.k() * s].chunks_exact(s) {
                enc.add_original_shard(shard).map_err(|_| FecError::Codec)?;
            }
            let result = enc.encode().map_err(|_| FecError::Codec)?;
            let repair_area = &mut shards[params.k() * s..];
            for (dst, src) in repair_area.chunks_exact_mut(s).zip(result.recovery_iter()) {
                dst.copy_from_slice(src);
            }
        }
        Ok(Encoded { params, shards })
    }

    /// The parameters the block was cut with.
    pub fn params(&self) -> &FecParams {
        &self.params
    }

    /// Shard `index` (`0..K+R`), or `None` out of range.
    pub fn shard(&self, index: usize) -> Option<&[u8]> {
        let s = self.params.shard_len();
        self.shards.get(index * s..(index + 1) * s)
    }

    /// Every shard, in index order.
    pub fn shards(&self) -> impl ExactSizeIterator<Item = &[u8]> {
        self.shards.chunks_exact(self.params.shard_len())
    }
}

/// Rebuilds a block from any K of its K + R shards. Memory: (K + R) * shard size, allocated once.
#[derive(Debug, Clone)]
pub struct Decoder {
    params: FecParams,
    shards: Vec<u8>,
    present: Vec<bool>,
    have_source: usize,
    have_repair: usize,
}

impl Decoder {
    /// A decoder for a block cut with `params`.
    pub fn new(params: FecParams) -> Self {
        Decoder {
            params,
            shards: vec![0u8; params.total() * params.shard_len()],
            present: vec![false; params.total()],
            have_source: 0,
            have_repair: 0,
        }
    }

    /// The parameters.
    pub fn params(&self) -> &FecParams {
        &self.params
    }

    /// Stores shard `index`. Returns `Ok(false)` for a duplicate (ignored), `Ok(true)` if new.
    pub fn insert(&mut self, index: usize, shard: &[u8]) -> Result<bool, FecError> {
        let total = self.params.total();
        if index >= total {
            return Err(FecError::IndexOutOfRange { index, total });
        }
        let s = self.params.shard_len();
        if shard.len() != s {
            return Err(FecError::WrongShardLen {
                got: shard.len(),
                expected: s,
            });
        }
        if self.present[index] {
            return Ok(false);
        }
        self.shards[index * s..(index + 1) * s].copy_from_slice(shard);
        self.present[index] = true;
        if index < self.params.k() {
            self.have_source += 1;
        } else {
            self.have_repair += 1;
        }
        Ok(true)
    }

    /// Whether shard `index` is held.
    pub fn has(&self, index: usize) -> bool {
        self.present.get(index).copied().unwrap_or(false)
    }

    /// The bytes of shard `index` if held.
    pub fn shard_bytes(&self, index: usize) -> Option<&[u8]> {
        if !self.has(index) {
            return None;
        }
        let s = self.params.shard_len();
        self.shards.get(index * s..(index + 1) * s)
    }

    /// Distinct shards held.
    pub fn received(&self) -> usize {
        self.have_source + self.have_repair
    }

    /// Whether K distinct shards are held (the code is MDS: that is enough).
    pub fn can_decode(&self) -> bool {
        self.received() >= self.params.k()
    }

    /// Indices not yet held, in order.
    pub fn missing(&self) -> impl Iterator<Item = usize> + '_ {
        self.present
            .iter()
            .enumerate()
            .filter(|(_, p)| !**p)
            .map(|(i, _)| i)
    }

    /// Rebuilds the block (padding cut off). Without loss of source shards no Reed-Solomon work
    /// is done; otherwise K of the held shards go to the decoder.
    pub fn decode(&self) -> Result<Vec<u8>, FecError> {
        let (k, r, s) = (self.params.k(), self.params.r(), self.params.shard_len());
        if !self.can_decode() {
            return Err(FecError::NotEnoughShards {
                need: k,
                have: self.received(),
            });
        }
        let mut block = self.shards[..k * s].to_vec();
        if self.have_source < k {
            let mut dec = ReedSolomonDecoder::new(k, r, s).map_err(|_| FecError::Codec)?;
            for i in (0..k).filter(|&i| self.present[i]) {
                dec.add_original_shard(i, &self.shards[i * s..(i + 1) * s])
                    .map_err(|_| FecError::Codec)?;
            }
            let need = k - self.have_source;
            for i in (k..k + r).filter(|&i| self.present[i]).take(need) {
                dec.add_recovery_shard(i - k, &self.shards[i * s..(i + 1) * s])
                    .map_err(|_| FecError::Codec)?;
            }
            let result = dec.decode().map_err(|_| FecError::Codec)?;
            for (i, shard) in result.restored_original_iter() {
                if let Some(dst) = block.get_mut(i * s..(i + 1) * s) {
                    dst.copy_from_slice(shard);
                }
            }
        }
        block.truncate(self.params.block_len());
        Ok(block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repair_policy_rounds_up_and_floors() {
        let p = RepairPolicy {
            overhead_permille: 50,
            min_repair: 4,
        };
        assert_eq!(p.repair_count(1), 4);
        assert_eq!(p.repair_count(837), 42);
        assert_eq!(p.repair_count(1000), 50);
        assert_eq!(p.repair_count(32767), 1);
    }

    #[test]
    fn shard_size_is_even() {
        assert_eq!(shard_size_for(1196, 0), Ok(1196));
        assert_eq!(shard_size_for(1197, 0), Ok(1196));
        assert_eq!(shard_size_for(1196, 16), Ok(1180));
        assert_eq!(shard_size_for(1, 0), Err(FecError::BadShardSize(0)));
    }

    #[test]
    fn bad_params_are_errors() {
        let p = RepairPolicy::DEFAULT;
        assert_eq!(FecParams::for_block(0, 1196, &p), Err(FecError::EmptyBlock));
        assert_eq!(
            FecParams::for_block(10, 7, &p),
            Err(FecError::BadShardSize(7))
        );
        // 40,000 two-byte shards: more than one code holds.
        assert!(matches!(
            FecParams::for_block(80_000, 2, &p),
            Err(FecError::TooManyShards { .. })
        ));
        assert!(matches!(
            FecParams::new(100, 10, 3, 1),
            Err(FecError::Inconsistent { .. })
        ));
        assert!(matches!(
            FecParams::new(MAX_BLOCK_LEN + 1, 1196, 1, 1),
            Err(FecError::BlockTooLong { .. })
        ));
        // for_block leaves validation to new: huge and odd inputs still give typed errors.
        assert!(matches!(
            FecParams::for_block(usize::MAX, 2, &p),
            Err(FecError::BlockTooLong { .. })
        ));
        assert!(matches!(
            FecParams::for_block(1000, 0, &p),
            Err(FecError::BadShardSize(0))
        ));
        assert!(matches!(
            FecParams::for_block(1000, 7, &p),
            Err(FecError::BadShardSize(7))
        ));
        assert!(matches!(
            FecParams::for_block(0, 1196, &p),
            Err(FecError::EmptyBlock)
        ));
    }

    #[test]
    fn decoder_rejects_bad_shards() {
        let enc = Encoded::encode(&[7u8; 100], 10, &RepairPolicy::DEFAULT).unwrap();
        let mut dec = Decoder::new(*enc.params());
        assert_eq!(
            dec.insert(99, &[0; 10]),
            Err(FecError::IndexOutOfRange {
                index: 99,
                total: 14
            })
        );
        assert_eq!(
            dec.insert(0, &[0; 9]),
            Err(FecError::WrongShardLen {
                got: 9,
                expected: 10
            })
        );
        assert_eq!(
            dec.decode(),
            Err(FecError::NotEnoughShards { need: 10, have: 0 })
        );
        assert_eq!(dec.insert(3, enc.shard(3).unwrap()), Ok(true));
        assert_eq!(dec.insert(3, enc.shard(3).unwrap()), Ok(false));
    }

    #[test]
    fn source_only_and_repair_only() {
        let block: Vec<u8> = (0..1001u32).map(|i| (i * 7 + 3) as u8).collect();
        let enc = Encoded::encode(
            &block,
            100,
            &RepairPolicy {
                overhead_permille: 1000,
                min_repair: 0,
            },
        )
        .unwrap();
        assert_eq!((enc.params().k(), enc.params().r()), (11, 11));
        let mut a = Decoder::new(*enc.params());
        let mut b = Decoder::new(*enc.params());
        for i in 0..11 {
            a.insert(i, enc.shard(i).unwrap()).unwrap();
            b.insert(11 + i, enc.shard(11 + i).unwrap()).unwrap();
        }
        assert_eq!(a.decode().unwrap(), block);
        assert_eq!(b.decode().unwrap(), block);
    }
}
