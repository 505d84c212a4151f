//! Unsigned LEB128 varints as used by the compressed block format (docs/protocol.md §6.3):
//! 7 bits a byte, least significant group first, high bit set on every byte but the last.
//! Only the shortest encoding is accepted, so every value has exactly one encoding and a
//! parsed block re-encodes to the same bytes.

/// Longest encoding of a `u64`.
pub const MAX_LEN: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VarintError {
    #[error("varint runs past the end of the input")]
    Truncated,
    #[error("varint does not fit 64 bits")]
    Overflow,
    #[error("varint is not in its shortest form")]
    NonCanonical,
}

/// Bytes `value` takes.
pub fn len(value: u64) -> usize {
    let bits = 64 - value.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

/// Append `value` to `out`.
pub fn write(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Read one varint from the front of `input`: the value and the bytes it took.
pub fn read(input: &[u8]) -> Result<(u64, usize), VarintError> {
    let mut value = 0u64;
    for i in 0..MAX_LEN {
        let byte = *input.get(i).ok_or(VarintError::Truncated)?;
        let group = u64::from(byte & 0x7f);
        if i == MAX_LEN - 1 && group > 1 {
            return Err(VarintError::Overflow);
        }
        value |= group << (7 * i);
        if byte & 0x80 == 0 {
            // A last byte of zero after others means a shorter form existed.
            if i > 0 && byte == 0 {
                return Err(VarintError::NonCanonical);
            }
            return Ok((value, i + 1));
        }
    }
    Err(VarintError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden() {
        let cases: [(u64, &[u8]); 6] = [
            (0, &[0x00]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (u32::MAX as u64, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for (v, bytes) in cases {
            let mut out = Vec::new();
            write(&mut out, v);
            assert_eq!(out, bytes);
            assert_eq!(len(v), bytes.len());
            assert_eq!(read(bytes), Ok((v, bytes.len())));
        }
    }

    #[test]
    fn rejects_bad_forms() {
        assert_eq!(read(&[]), Err(VarintError::Truncated));
        assert_eq!(read(&[0x80]), Err(VarintError::Truncated));
        assert_eq!(read(&[0x80, 0x00]), Err(VarintError::NonCanonical));
        assert_eq!(
            read(&[0xff; 9].iter().chain(&[0x02]).copied().collect::<Vec<_>>()),
            Err(VarintError::Overflow)
        );
        assert_eq!(read(&[0xff; 11]), Err(VarintError::Overflow));
    }
}
