//! Fixed-width bit packing of short ID references (docs/protocol.md §6.3): each value takes
//! `width` bits (0 to 32), most significant bit first, values back to back, the last byte
//! padded with zero bits.

/// Bytes that `count` values of `width` bits take.
pub fn packed_len(count: usize, width: u32) -> usize {
    ((count as u128 * u128::from(width)).div_ceil(8)) as usize
}

/// Packs values MSB first into a byte vector.
#[derive(Debug, Default)]
pub struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    nbits: u32,
}

impl BitWriter {
    pub fn with_capacity(bytes: usize) -> Self {
        BitWriter {
            out: Vec::with_capacity(bytes),
            acc: 0,
            nbits: 0,
        }
    }

    /// Append the low `width` bits of `value` (`width` <= 32; higher bits are ignored).
    pub fn write(&mut self, value: u32, width: u32) {
        debug_assert!(width <= 32);
        if width == 0 {
            return;
        }
        let masked = u64::from(value) & ((1u64 << width) - 1);
        self.acc = (self.acc << width) | masked;
        self.nbits += width;
        while self.nbits >= 8 {
            self.nbits -= 8;
            self.out.push((self.acc >> self.nbits) as u8);
        }
        self.acc &= (1u64 << self.nbits) - 1;
    }

    /// The packed bytes, the last one padded with zeros.
    pub fn finish(mut self) -> Vec<u8> {
        if self.nbits > 0 {
            self.out.push((self.acc << (8 - self.nbits)) as u8);
        }
        self.out
    }
}

/// Reads values MSB first; never reads past its slice.
#[derive(Debug)]
pub struct BitReader<'a> {
    input: &'a [u8],
    pos: usize,
    acc: u64,
    nbits: u32,
}

impl<'a> BitReader<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        BitReader {
            input,
            pos: 0,
            acc: 0,
            nbits: 0,
        }
    }

    /// The next `width` bits (`width` <= 32), or `None` past the end.
    pub fn read(&mut self, width: u32) -> Option<u32> {
        if width == 0 {
            return Some(0);
        }
        if width > 32 {
            return None;
        }
        while self.nbits < width {
            let byte = *self.input.get(self.pos)?;
            self.pos += 1;
            self.acc = (self.acc << 8) | u64::from(byte);
            self.nbits += 8;
        }
        self.nbits -= width;
        let value = (self.acc >> self.nbits) & ((1u64 << width) - 1);
        self.acc &= (1u64 << self.nbits) - 1;
        Some(value as u32)
    }

    /// True when the bits not yet read of the current byte are all zero (canonical padding)
    /// and no whole byte is left.
    pub fn at_clean_end(&self) -> bool {
        self.acc == 0 && self.nbits < 8 && self.pos == self.input.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_13_bit() {
        let mut w = BitWriter::default();
        w.write(0x1abc, 13);
        w.write(0x0001, 13);
        let bytes = w.finish();
        // 1101010111100 0000000000001 + 6 zero bits
        assert_eq!(bytes, [0b1101_0101, 0b1110_0000, 0b0000_0000, 0b0100_0000]);
        assert_eq!(packed_len(2, 13), 4);
        let mut r = BitReader::new(&bytes);
        assert_eq!(r.read(13), Some(0x1abc));
        assert_eq!(r.read(13), Some(1));
        assert!(r.at_clean_end());
        assert_eq!(r.read(13), None);
    }
}
