//! The few MessagePack forms the envelope uses, read and written by hand: every malformed input
//! is a typed error, nothing recurses on untrusted nesting, and a payload is found without
//! decoding it (its bytes are kept as they are).

use bytes::BufMut;

use crate::DecodeError;

/// A cursor over one frame's body.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos == self.bytes.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(DecodeError::Truncated { at: self.pos })?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn unexpected(&self, at: usize, expected: &'static str) -> DecodeError {
        DecodeError::Unexpected {
            at,
            expected,
            marker: self.bytes[at],
        }
    }

    /// An array header: the number of elements.
    pub(crate) fn array_len(&mut self) -> Result<usize, DecodeError> {
        let at = self.pos;
        let len = match self.byte()? {
            m @ 0x90..=0x9f => u64::from(m & 0x0f),
            0xdc => self.be(2)?,
            0xdd => self.be(4)?,
            _ => return Err(self.unexpected(at, "an array")),
        };
        usize::try_from(len).map_err(|_| DecodeError::Truncated { at })
    }

    /// A map header: the number of key–value pairs.
    pub(crate) fn map_len(&mut self) -> Result<usize, DecodeError> {
        let at = self.pos;
        let len = match self.byte()? {
            m @ 0x80..=0x8f => u64::from(m & 0x0f),
            0xde => self.be(2)?,
            0xdf => self.be(4)?,
            _ => return Err(self.unexpected(at, "a map")),
        };
        usize::try_from(len).map_err(|_| DecodeError::Truncated { at })
    }

    /// A non-negative integer of any width.
    pub(crate) fn uint(&mut self) -> Result<u64, DecodeError> {
        let at = self.pos;
        match self.byte()? {
            m @ 0x00..=0x7f => Ok(u64::from(m)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            // Signed encodings of non-negative values are accepted: some encoders use them.
            0xd0 => self.signed(1, at),
            0xd1 => self.signed(2, at),
            0xd2 => self.signed(4, at),
            0xd3 => self.signed(8, at),
            _ => Err(self.unexpected(at, "an unsigned integer")),
        }
    }

    fn signed(&mut self, n: usize, at: usize) -> Result<u64, DecodeError> {
        let raw = self.be(n)?;
        let shift = 64 - 8 * n as u32;
        let value = ((raw << shift) as i64) >> shift;
        u64::try_from(value).map_err(|_| DecodeError::OutOfRange {
            at,
            what: "a negative integer where an unsigned one belongs",
        })
    }

    /// An unsigned integer that must fit in `T`.
    pub(crate) fn uint_as<T: TryFrom<u64>>(
        &mut self,
        what: &'static str,
    ) -> Result<T, DecodeError> {
        let at = self.pos;
        T::try_from(self.uint()?).map_err(|_| DecodeError::OutOfRange { at, what })
    }

    /// A UTF-8 string.
    pub(crate) fn str(&mut self) -> Result<&'a str, DecodeError> {
        let at = self.pos;
        let len = match self.byte()? {
            m @ 0xa0..=0xbf => u64::from(m & 0x1f),
            0xd9 => self.be(1)?,
            0xda => self.be(2)?,
            0xdb => self.be(4)?,
            _ => return Err(self.unexpected(at, "a string")),
        };
        let len = usize::try_from(len).map_err(|_| DecodeError::Truncated { at })?;
        std::str::from_utf8(self.take(len)?).map_err(|_| DecodeError::InvalidUtf8 { at })
    }

    /// A binary string (`bin 8/16/32`).
    pub(crate) fn bin(&mut self) -> Result<&'a [u8], DecodeError> {
        let at = self.pos;
        let len = match self.byte()? {
            0xc4 => self.be(1)?,
            0xc5 => self.be(2)?,
            0xc6 => self.be(4)?,
            _ => return Err(self.unexpected(at, "a binary string")),
        };
        let len = usize::try_from(len).map_err(|_| DecodeError::Truncated { at })?;
        self.take(len)
    }

    /// Whether the next value is `nil`.
    pub(crate) fn peek_nil(&self) -> bool {
        self.bytes.get(self.pos) == Some(&0xc0)
    }

    /// A `nil`.
    pub(crate) fn nil(&mut self) -> Result<(), DecodeError> {
        let at = self.pos;
        match self.byte()? {
            0xc0 => Ok(()),
            _ => Err(self.unexpected(at, "nil")),
        }
    }

    /// Skips `n` values.
    pub(crate) fn skip_values(&mut self, n: usize) -> Result<(), DecodeError> {
        (0..n).try_for_each(|_| self.skip_value())
    }

    /// Skips one whole value of any type and returns its bytes.
    pub(crate) fn raw_value(&mut self) -> Result<&'a [u8], DecodeError> {
        let start = self.pos;
        self.skip_value()?;
        Ok(&self.bytes[start..self.pos])
    }

    /// Skips one value without recursion: `pending` counts the values still to skip. Every
    /// value takes at least one byte, so a container claiming more elements than bytes remain
    /// is refused at once, and the work is bounded by the frame's length whatever the nesting.
    fn skip_value(&mut self) -> Result<(), DecodeError> {
        let mut pending: u64 = 1;
        while pending > 0 {
            pending -= 1;
            let at = self.pos;
            let marker = self.byte()?;
            let (skip, children): (u64, u64) = match marker {
                0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
                0x80..=0x8f => (0, 2 * u64::from(marker & 0x0f)),
                0x90..=0x9f => (0, u64::from(marker & 0x0f)),
                0xa0..=0xbf => (u64::from(marker & 0x1f), 0),
                0xc4 | 0xd9 => (self.be(1)?, 0),
                0xc5 | 0xda => (self.be(2)?, 0),
                0xc6 | 0xdb => (self.be(4)?, 0),
                0xc7 => (self.be(1)? + 1, 0),
                0xc8 => (self.be(2)? + 1, 0),
                0xc9 => (self.be(4)? + 1, 0),
                0xca => (4, 0),
                0xcb => (8, 0),
                0xcc | 0xd0 => (1, 0),
                0xcd | 0xd1 => (2, 0),
                0xce | 0xd2 => (4, 0),
                0xcf | 0xd3 => (8, 0),
                0xd4 => (2, 0),
                0xd5 => (3, 0),
                0xd6 => (5, 0),
                0xd7 => (9, 0),
                0xd8 => (17, 0),
                0xdc => (0, self.be(2)?),
                0xdd => (0, self.be(4)?),
                0xde => (0, 2 * self.be(2)?),
                0xdf => (0, 2 * self.be(4)?),
                0xc1 => return Err(self.unexpected(at, "a value (0xc1 is never used)")),
            };
            let skip = usize::try_from(skip).map_err(|_| DecodeError::Truncated { at })?;
            self.take(skip)?;
            pending += children;
            if pending > (self.bytes.len() - self.pos) as u64 {
                return Err(DecodeError::Truncated { at });
            }
        }
        Ok(())
    }
}

/// Writers for the same forms, always in their shortest encoding.
pub(crate) fn write_array_len(dst: &mut impl BufMut, len: u32) {
    match len {
        0..=15 => dst.put_u8(0x90 | len as u8),
        16..=0xffff => {
            dst.put_u8(0xdc);
            dst.put_u16(len as u16);
        }
        _ => {
            dst.put_u8(0xdd);
            dst.put_u32(len);
        }
    }
}

pub(crate) fn write_uint(dst: &mut impl BufMut, value: u64) {
    match value {
        0..=0x7f => dst.put_u8(value as u8),
        0x80..=0xff => {
            dst.put_u8(0xcc);
            dst.put_u8(value as u8);
        }
        0x100..=0xffff => {
            dst.put_u8(0xcd);
            dst.put_u16(value as u16);
        }
        0x1_0000..=0xffff_ffff => {
            dst.put_u8(0xce);
            dst.put_u32(value as u32);
        }
        _ => {
            dst.put_u8(0xcf);
            dst.put_u64(value);
        }
    }
}

pub(crate) fn write_str(dst: &mut impl BufMut, s: &str) {
    let len = s.len();
    match len {
        0..=31 => dst.put_u8(0xa0 | len as u8),
        32..=0xff => {
            dst.put_u8(0xd9);
            dst.put_u8(len as u8);
        }
        0x100..=0xffff => {
            dst.put_u8(0xda);
            dst.put_u16(len as u16);
        }
        _ => {
            dst.put_u8(0xdb);
            dst.put_u32(u32::try_from(len).expect("strings are shorter than a frame"));
        }
    }
    dst.put_slice(s.as_bytes());
}

pub(crate) fn write_bin(dst: &mut impl BufMut, b: &[u8]) {
    write_bin_len(dst, b.len());
    dst.put_slice(b);
}

/// The head of a binary string of `len` bytes, in the shortest form (as any encoder writes it).
pub(crate) fn write_bin_len(dst: &mut impl BufMut, len: usize) {
    match len {
        0..=0xff => {
            dst.put_u8(0xc4);
            dst.put_u8(len as u8);
        }
        0x100..=0xffff => {
            dst.put_u8(0xc5);
            dst.put_u16(len as u16);
        }
        _ => {
            dst.put_u8(0xc6);
            dst.put_u32(u32::try_from(len).expect("binary strings are shorter than a frame"));
        }
    }
}
