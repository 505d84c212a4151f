//! The compressed block encoding (docs/protocol.md §6.3): parse and emit.
//!
//! ```text
//! u8      version (1)
//! u8      chain id (0 = Bitcoin)
//! varint  header length, then the header bytes
//! varint  tx count n (all transactions of the block)
//! varint  whole count w, then w positions of whole transactions, ascending:
//!         the first as is, each next one as (position - previous - 1)
//! varint  group count g, then g ID groups, ascending and not touching:
//!         the first: varint first ID; each next: varint (first - previous end - 1);
//!         each: varint (len - 1)
//! refs    n - w references, in block order of the known transactions, each the index of its
//!         short ID in the groups laid end to end, in `width = ceil(log2(window))` bits
//!         (window = sum of group lengths; width 0 when window <= 1), MSB first, zero padded
//! whole   for each whole transaction, in block order: varint length, then its chain encoding
//! ```
//!
//! Every value has one encoding (shortest varints, zero padding, gaps and lengths minus one),
//! so a parsed block emits back to the same bytes. The decoder trusts no count: each is
//! checked against the bytes left and the chain's transaction limit before anything is
//! allocated for it.

use std::collections::HashSet;

use super::bits::{self, BitReader, BitWriter};
use super::varint::{self, VarintError};
use crate::shortid::ShortId;

/// Version byte of the encoding described above.
pub const VERSION: u8 = 1;

/// A run of consecutive short IDs `first .. first + len` that a block's references index into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdGroup {
    pub first: u32,
    /// At least 1; `first + len <= 2^32`.
    pub len: u32,
}

impl IdGroup {
    fn end(&self) -> u64 {
        u64::from(self.first) + u64::from(self.len)
    }
}

/// Bits per reference for a window of `window` IDs.
pub fn ref_width(window: u64) -> u32 {
    if window <= 1 {
        0
    } else {
        64 - (window - 1).leading_zeros()
    }
}

/// Why a compressed block does not parse (or a hand-built one does not emit).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("compressed block truncated: {what} at byte {offset} needs {needed} more bytes")]
    Truncated {
        what: &'static str,
        offset: usize,
        needed: usize,
    },
    #[error("compressed block: {what} at byte {offset}: {error}")]
    Varint {
        what: &'static str,
        offset: usize,
        error: VarintError,
    },
    #[error("compressed block version {0} is not supported (this decoder speaks {VERSION})")]
    UnknownVersion(u8),
    #[error("compressed block: {what} is {value}, more than {max}")]
    TooLarge {
        what: &'static str,
        value: u64,
        max: u64,
    },
    #[error("compressed block: whole transaction position {position} is out of order or not below the tx count {tx_count}")]
    BadWholePosition { position: u64, tx_count: u32 },
    #[error("compressed block: ID group {index} runs past the 32-bit ID space")]
    GroupOutOfSpace { index: usize },
    #[error("compressed block: reference {index} of {window} is outside the ID groups")]
    RefOutOfWindow { index: u64, window: u64 },
    #[error("compressed block: short ID {0} is referenced twice")]
    DuplicateRef(ShortId),
    #[error("compressed block: padding bits after the references are not zero")]
    BadPadding,
    #[error("compressed block: {0} bytes after the last transaction")]
    TrailingBytes(usize),
    #[error("compressed block: reference count {refs} plus whole count {whole} is not the tx count {tx_count}")]
    CountMismatch {
        refs: usize,
        whole: usize,
        tx_count: u32,
    },
    #[error("compressed block: ID groups are empty, overlapping or out of order")]
    BadGroups,
}

/// A panic-free cursor over untrusted bytes (shared with the other encodings of §6.8).
pub(super) struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(input: &'a [u8]) -> Self {
        Reader { input, pos: 0 }
    }

    /// Bytes read so far.
    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    pub(super) fn remaining(&self) -> usize {
        self.input.len() - self.pos
    }

    pub(super) fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FormatError> {
        if n > self.remaining() {
            return Err(FormatError::Truncated {
                what,
                offset: self.pos,
                needed: n - self.remaining(),
            });
        }
        let out = &self.input[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(super) fn u8(&mut self, what: &'static str) -> Result<u8, FormatError> {
        Ok(self.bytes(1, what)?[0])
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, FormatError> {
        let (value, used) =
            varint::read(&self.input[self.pos..]).map_err(|error| FormatError::Varint {
                what,
                offset: self.pos,
                error,
            })?;
        self.pos += used;
        Ok(value)
    }

    /// A varint that must be at most `max`.
    pub(super) fn varint_max(&mut self, what: &'static str, max: u64) -> Result<u64, FormatError> {
        let value = self.varint(what)?;
        if value > max {
            return Err(FormatError::TooLarge { what, value, max });
        }
        Ok(value)
    }
}

/// What every block payload with references starts with (§6.3; §6.8 reuses it): format byte,
/// chain id, header, transaction count, positions of the whole transactions.
pub(super) struct Prefix<'a> {
    pub chain_id: u8,
    pub header: &'a [u8],
    pub tx_count: u32,
    pub whole_positions: Vec<u32>,
}

impl<'a> Prefix<'a> {
    /// Parses the prefix of a payload whose first byte must be `format` (`what`: its name in
    /// errors); `max_txs` is the chain's limit.
    pub(super) fn parse(
        r: &mut Reader<'a>,
        format: u8,
        what: &'static str,
        max_txs: usize,
    ) -> Result<Self, FormatError> {
        let found = r.u8(what)?;
        if found != format {
            return Err(FormatError::UnknownVersion(found));
        }
        let chain_id = r.u8("chain id")?;
        let header_len = r.varint_max("header length", r.remaining() as u64)?;
        let header = r.bytes(header_len as usize, "header")?;
        let tx_count = r.varint_max("tx count", max_txs.min(u32::MAX as usize) as u64)? as u32;
        // Each position takes at least one byte.
        let whole_max = u64::from(tx_count).min(r.remaining() as u64);
        let whole_count = r.varint_max("whole count", whole_max)? as usize;
        let mut whole_positions = Vec::with_capacity(whole_count);
        let mut next_min = 0u64;
        for _ in 0..whole_count {
            let delta = r.varint("whole position")?;
            let position = next_min.saturating_add(delta);
            if position >= u64::from(tx_count) {
                return Err(FormatError::BadWholePosition { position, tx_count });
            }
            whole_positions.push(position as u32);
            next_min = position + 1;
        }
        Ok(Prefix {
            chain_id,
            header,
            tx_count,
            whole_positions,
        })
    }

    /// Bytes [`write_prefix`] writes.
    pub(super) fn len(header: &[u8], tx_count: u32, whole_positions: &[u32]) -> usize {
        let mut n = 2 + varint::len(header.len() as u64) + header.len();
        n += varint::len(u64::from(tx_count));
        n += varint::len(whole_positions.len() as u64);
        let mut next_min = 0u64;
        for &p in whole_positions {
            n += varint::len(u64::from(p).saturating_sub(next_min));
            next_min = u64::from(p) + 1;
        }
        n
    }
}

/// Writes a prefix (positions checked ascending beforehand by [`check_common`]).
pub(super) fn write_prefix(
    out: &mut Vec<u8>,
    format: u8,
    chain_id: u8,
    header: &[u8],
    tx_count: u32,
    whole_positions: &[u32],
) {
    out.push(format);
    out.push(chain_id);
    varint::write(out, header.len() as u64);
    out.extend_from_slice(header);
    varint::write(out, u64::from(tx_count));
    varint::write(out, whole_positions.len() as u64);
    let mut next_min = 0u64;
    for &p in whole_positions {
        varint::write(out, u64::from(p) - next_min);
        next_min = u64::from(p) + 1;
    }
}

/// The whole transactions that end a payload (length-prefixed), and nothing after them.
pub(super) fn parse_whole_txs<'a>(
    r: &mut Reader<'a>,
    count: usize,
) -> Result<Vec<&'a [u8]>, FormatError> {
    let mut whole_txs = Vec::with_capacity(count);
    for _ in 0..count {
        let len = r.varint_max("whole tx length", r.remaining() as u64)?;
        whole_txs.push(r.bytes(len as usize, "whole tx")?);
    }
    if r.remaining() != 0 {
        return Err(FormatError::TrailingBytes(r.remaining()));
    }
    Ok(whole_txs)
}

/// Bytes [`write_whole_txs`] writes.
pub(super) fn whole_txs_len(whole_txs: &[&[u8]]) -> usize {
    whole_txs
        .iter()
        .map(|tx| varint::len(tx.len() as u64) + tx.len())
        .sum()
}

pub(super) fn write_whole_txs(out: &mut Vec<u8>, whole_txs: &[&[u8]]) {
    for tx in whole_txs {
        varint::write(out, tx.len() as u64);
        out.extend_from_slice(tx);
    }
}

/// The rules every payload with references obeys: counts add up, whole positions ascend
/// inside the block, no short ID is referenced twice.
pub(super) fn check_common(
    tx_count: u32,
    whole_positions: &[u32],
    whole: usize,
    refs: &[ShortId],
) -> Result<(), FormatError> {
    if whole != whole_positions.len() || refs.len() + whole != tx_count as usize {
        return Err(FormatError::CountMismatch {
            refs: refs.len(),
            whole,
            tx_count,
        });
    }
    let mut next_min = 0u64;
    for &p in whole_positions {
        if u64::from(p) < next_min || p >= tx_count {
            return Err(FormatError::BadWholePosition {
                position: u64::from(p),
                tx_count,
            });
        }
        next_min = u64::from(p) + 1;
    }
    let mut seen = HashSet::with_capacity(refs.len());
    if let Some(&dup) = refs.iter().find(|&&id| !seen.insert(id)) {
        return Err(FormatError::DuplicateRef(dup));
    }
    Ok(())
}

/// A parsed compressed block: borrowed header and whole transactions, decoded references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressedBlockRepr<'a> {
    pub chain_id: u8,
    pub header: &'a [u8],
    /// All transactions of the block: `refs.len() + whole_txs.len()`.
    pub tx_count: u32,
    /// Block positions of the whole transactions, ascending.
    pub whole_positions: Vec<u32>,
    pub groups: Vec<IdGroup>,
    /// Short IDs of the known transactions, in block order.
    pub refs: Vec<ShortId>,
    /// Chain encodings of the whole transactions, in block order.
    pub whole_txs: Vec<&'a [u8]>,
}

impl<'a> CompressedBlockRepr<'a> {
    /// Parse a whole compressed block. `max_txs` is the chain's limit
    /// ([`crate::chain::ChainAdapter::MAX_TXS_PER_BLOCK`]).
    pub fn parse(input: &'a [u8], max_txs: usize) -> Result<Self, FormatError> {
        let mut r = Reader::new(input);
        let Prefix {
            chain_id,
            header,
            tx_count,
            whole_positions,
        } = Prefix::parse(&mut r, VERSION, "version", max_txs)?;
        let whole_count = whole_positions.len();

        // Each group takes at least two bytes.
        let group_count = r.varint_max("group count", (r.remaining() / 2) as u64)? as usize;
        let mut groups = Vec::with_capacity(group_count);
        let mut window = 0u64;
        let mut prev_end: Option<u64> = None;
        for index in 0..group_count {
            let first = match prev_end {
                None => r.varint("group first ID")?,
                Some(end) => end.saturating_add(1).saturating_add(r.varint("group gap")?),
            };
            let len = r.varint("group length")?.saturating_add(1);
            if first.saturating_add(len) > 1 << 32 || len > u64::from(u32::MAX) {
                return Err(FormatError::GroupOutOfSpace { index });
            }
            groups.push(IdGroup {
                first: first as u32,
                len: len as u32,
            });
            window += len;
            prev_end = Some(first + len);
        }

        let known = tx_count as usize - whole_count;
        let width = ref_width(window);
        let ref_bytes = bits::packed_len(known, width);
        if ref_bytes > r.remaining() {
            return Err(FormatError::Truncated {
                what: "references",
                offset: r.pos,
                needed: ref_bytes - r.remaining(),
            });
        }
        // known <= tx_count <= max_txs: bounded by the chain, not by the input.
        let mut bits = BitReader::new(r.bytes(ref_bytes, "references")?);
        let mut refs = Vec::with_capacity(known);
        let mut seen = HashSet::with_capacity(known);
        for _ in 0..known {
            let index = u64::from(bits.read(width).ok_or(FormatError::BadPadding)?);
            let id = id_at(&groups, index).ok_or(FormatError::RefOutOfWindow { index, window })?;
            if !seen.insert(id) {
                return Err(FormatError::DuplicateRef(id));
            }
            refs.push(id);
        }
        if !bits.at_clean_end() {
            return Err(FormatError::BadPadding);
        }

        let whole_txs = parse_whole_txs(&mut r, whole_count)?;
        Ok(CompressedBlockRepr {
            chain_id,
            header,
            tx_count,
            whole_positions,
            groups,
            refs,
            whole_txs,
        })
    }

    /// Total of the group lengths: the number of IDs a reference chooses from.
    pub fn window(&self) -> u64 {
        self.groups.iter().map(|g| u64::from(g.len)).sum()
    }

    fn check(&self) -> Result<(), FormatError> {
        check_common(
            self.tx_count,
            &self.whole_positions,
            self.whole_txs.len(),
            &self.refs,
        )?;
        let mut prev_end: Option<u64> = None;
        for (index, g) in self.groups.iter().enumerate() {
            if g.len == 0 || prev_end.is_some_and(|e| u64::from(g.first) <= e) {
                return Err(FormatError::BadGroups);
            }
            if g.end() > 1 << 32 {
                return Err(FormatError::GroupOutOfSpace { index });
            }
            prev_end = Some(g.end());
        }
        Ok(())
    }

    /// Bytes [`Self::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        let mut n = Prefix::len(self.header, self.tx_count, &self.whole_positions);
        n += varint::len(self.groups.len() as u64);
        let mut prev_end: Option<u64> = None;
        for g in &self.groups {
            n += match prev_end {
                None => varint::len(u64::from(g.first)),
                Some(end) => varint::len(u64::from(g.first).saturating_sub(end + 1)),
            };
            n += varint::len(u64::from(g.len.saturating_sub(1)));
            prev_end = Some(g.end());
        }
        n += bits::packed_len(self.refs.len(), ref_width(self.window()));
        n + whole_txs_len(&self.whole_txs)
    }

    /// Append the encoding to `out`. Fails only for a hand-built repr that breaks the rules
    /// above (a parsed one always emits, to the bytes it was parsed from).
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), FormatError> {
        self.check()?;
        out.reserve(self.buffer_len());
        write_prefix(
            out,
            VERSION,
            self.chain_id,
            self.header,
            self.tx_count,
            &self.whole_positions,
        );
        varint::write(out, self.groups.len() as u64);
        let mut prev_end: Option<u64> = None;
        for g in &self.groups {
            match prev_end {
                None => varint::write(out, u64::from(g.first)),
                Some(end) => varint::write(out, u64::from(g.first) - end - 1),
            }
            varint::write(out, u64::from(g.len) - 1);
            prev_end = Some(g.end());
        }
        let window = self.window();
        let width = ref_width(window);
        let starts = group_starts(&self.groups);
        let mut w = BitWriter::with_capacity(bits::packed_len(self.refs.len(), width));
        for &id in &self.refs {
            let index = index_of(&self.groups, &starts, id).ok_or(FormatError::RefOutOfWindow {
                index: u64::from(id.0),
                window,
            })?;
            w.write(index as u32, width);
        }
        out.extend_from_slice(&w.finish());
        write_whole_txs(out, &self.whole_txs);
        Ok(())
    }
}

/// The short ID at `index` of the groups laid end to end.
fn id_at(groups: &[IdGroup], mut index: u64) -> Option<ShortId> {
    for g in groups {
        if index < u64::from(g.len) {
            return Some(ShortId((u64::from(g.first) + index) as u32));
        }
        index -= u64::from(g.len);
    }
    None
}

/// Where each group starts in the groups laid end to end.
fn group_starts(groups: &[IdGroup]) -> Vec<u64> {
    let mut acc = 0;
    groups
        .iter()
        .map(|g| {
            let start = acc;
            acc += u64::from(g.len);
            start
        })
        .collect()
}

/// The index of `id` in the groups laid end to end (groups ascending, `starts` from
/// [`group_starts`]): O(log g).
fn index_of(groups: &[IdGroup], starts: &[u64], id: ShortId) -> Option<u64> {
    let pos = groups.partition_point(|g| g.first <= id.0).checked_sub(1)?;
    let g = groups.get(pos)?;
    let offset = u64::from(id.0 - g.first);
    if offset >= u64::from(g.len) {
        return None;
    }
    Some(starts.get(pos)? + offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_index_mapping() {
        let groups = [
            IdGroup { first: 10, len: 3 },
            IdGroup { first: 100, len: 2 },
        ];
        let starts = group_starts(&groups);
        assert_eq!(id_at(&groups, 0), Some(ShortId(10)));
        assert_eq!(id_at(&groups, 3), Some(ShortId(100)));
        assert_eq!(id_at(&groups, 5), None);
        assert_eq!(index_of(&groups, &starts, ShortId(12)), Some(2));
        assert_eq!(index_of(&groups, &starts, ShortId(101)), Some(4));
        assert_eq!(index_of(&groups, &starts, ShortId(13)), None);
        assert_eq!(index_of(&groups, &starts, ShortId(9)), None);
        assert_eq!(ref_width(0), 0);
        assert_eq!(ref_width(1), 0);
        assert_eq!(ref_width(2), 1);
        assert_eq!(ref_width(8192), 13);
        assert_eq!(ref_width(8193), 14);
        assert_eq!(ref_width(1 << 32), 32);
    }
}
