//! The protobuf wire format, read straight off a byte slice.
//!
//! A serialized message is a sequence of fields, each a tag then a payload:
//!
//! ```text
//! field   := tag payload
//! tag     := varint( field_number << 3 | wire_type )     field_number in 1..=2^29-1
//! payload := varint                     wire type 0 (VARINT): int32/64, uint32/64, sint32/64, bool, enum
//!          | 8 bytes little-endian      wire type 1 (I64):    fixed64, sfixed64, double
//!          | varint(len) len bytes      wire type 2 (LEN):    string, bytes, messages, packed repeated
//!          | (group start/end)          wire types 3, 4:      proto2 groups, rejected here
//!          | 4 bytes little-endian      wire type 5 (I32):    fixed32, sfixed32, float
//! varint  := 1 to 10 bytes, 7 bits each, least significant group first; the
//!            high bit of each byte says "more follows"; the 10th byte may
//!            carry only the 64th bit (so its value is 0 or 1)
//! ```
//!
//! `int32` values are sign-extended to 64 bits before encoding, so a negative
//! `int32` takes all 10 bytes; readers keep the low 32 bits. `sint32`/`sint64`
//! use zigzag (`(n << 1) ^ (n >> 63)`) so that small negatives stay short.
//! Repeated scalars may arrive unpacked (one tag per element) or packed (one
//! LEN field whose payload is the elements back to back, without tags).
//!
//! All readers take `&mut &[u8]` and advance it past what they consumed. On
//! error the slice is left unspecified; the caller abandons the record.

use std::fmt;

use super::error::DecodeErrorKind;

/// The largest legal field number, 2^29 - 1.
pub const MAX_FIELD_NUMBER: u64 = (1 << 29) - 1;

/// The six wire types of protobuf (3 and 4, the group markers, are only
/// recognised in order to reject them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum WireType {
    /// 0: a varint.
    Varint = 0,
    /// 1: eight little-endian bytes.
    I64 = 1,
    /// 2: a varint length, then that many bytes.
    Len = 2,
    /// 3: start of a proto2 group.
    StartGroup = 3,
    /// 4: end of a proto2 group.
    EndGroup = 4,
    /// 5: four little-endian bytes.
    I32 = 5,
}

impl WireType {
    /// The wire type in the low three bits of a tag; `None` for 6 and 7.
    #[inline(always)]
    pub fn from_tag(tag: u64) -> Option<WireType> {
        match tag & 7 {
            0 => Some(WireType::Varint),
            1 => Some(WireType::I64),
            2 => Some(WireType::Len),
            3 => Some(WireType::StartGroup),
            4 => Some(WireType::EndGroup),
            5 => Some(WireType::I32),
            _ => None,
        }
    }
}

impl fmt::Display for WireType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            WireType::Varint => "VARINT",
            WireType::I64 => "I64",
            WireType::Len => "LEN",
            WireType::StartGroup => "SGROUP",
            WireType::EndGroup => "EGROUP",
            WireType::I32 => "I32",
        };
        f.write_str(name)
    }
}

/// Reads one varint. Varints of one or two bytes (tags, small integers,
/// booleans, enum numbers, short lengths) take the inlined fast path.
#[inline(always)]
pub fn read_varint(buf: &mut &[u8]) -> Result<u64, DecodeErrorKind> {
    match **buf {
        [b0, ref rest @ ..] if b0 < 0x80 => {
            *buf = rest;
            Ok(u64::from(b0))
        }
        [b0, b1, ref rest @ ..] if b1 < 0x80 => {
            *buf = rest;
            Ok(u64::from(b0 & 0x7f) | (u64::from(b1) << 7))
        }
        [] => Err(DecodeErrorKind::TruncatedVarint),
        _ => {
            // Not `&mut buf`: passing its address out of line would keep the
            // caller's cursor in memory instead of a register.
            let (value, len) = read_varint_slow(buf)?;
            *buf = &buf[len..];
            Ok(value)
        }
    }
}

/// Reads one varint, all of it inlined: for the decode loop's hottest
/// fields, where a call would cost more than the work.
#[inline(always)]
pub fn read_varint_inline(buf: &mut &[u8]) -> Result<u64, DecodeErrorKind> {
    if let [b0, ref rest @ ..] = **buf
        && b0 < 0x80
    {
        *buf = rest;
        return Ok(u64::from(b0));
    }
    let (value, len) = match varint_in_word(buf) {
        Some(found) => found,
        None => read_varint_bytewise(buf)?,
    };
    *buf = &buf[len..];
    Ok(value)
}

/// Decodes a varint of up to eight bytes from the first eight bytes of
/// `buf` without a loop; `None` if fewer than eight bytes remain or the
/// varint is longer.
///
/// The stop byte is the first with its high bit clear; the bytes up to it
/// are kept and their 7-bit groups packed together in three steps (pairs of
/// groups into 14 bits, pairs of those into 28, then into 56).
#[inline(always)]
fn varint_in_word(buf: &[u8]) -> Option<(u64, usize)> {
    let word = u64::from_le_bytes(*buf.first_chunk::<8>()?);
    let stops = !word & 0x8080_8080_8080_8080;
    if stops == 0 {
        return None;
    }
    // All bits up to and including the stop byte's high bit.
    let keep = stops ^ (stops - 1);
    let len = (stops.trailing_zeros() as usize + 1) / 8;
    let x = word & keep & 0x7f7f_7f7f_7f7f_7f7f;
    let x = (x & 0x007f_007f_007f_007f) | ((x & 0x7f00_7f00_7f00_7f00) >> 1);
    let x = (x & 0x0000_3fff_0000_3fff) | ((x & 0x3fff_0000_3fff_0000) >> 2);
    let x = (x & 0x0000_0000_0fff_ffff) | ((x & 0x0fff_ffff_0000_0000) >> 4);
    Some((x, len))
}

/// Reads a varint of three or more bytes; returns it and its length.
#[inline(never)]
fn read_varint_slow(buf: &[u8]) -> Result<(u64, usize), DecodeErrorKind> {
    if let Some(found) = varint_in_word(buf) {
        return Ok(found);
    }
    read_varint_bytewise(buf)
}

/// Reads a varint one byte at a time: near the end of the buffer, and for
/// nine- and ten-byte varints (negative `int32` and `int64` values).
#[inline(never)]
fn read_varint_bytewise(buf: &[u8]) -> Result<(u64, usize), DecodeErrorKind> {
    let mut value: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        if i == 9 && b > 1 {
            // The 10th byte holds bit 63 only.
            return Err(DecodeErrorKind::VarintOverflow);
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok((value, i + 1));
        }
    }
    if buf.len() >= 10 {
        Err(DecodeErrorKind::VarintOverflow)
    } else {
        Err(DecodeErrorKind::TruncatedVarint)
    }
}

/// Reads a tag and splits it into field number and wire type, rejecting
/// field number 0, numbers above 2^29 - 1 and wire types 6 and 7.
#[inline(always)]
pub fn read_tag(buf: &mut &[u8]) -> Result<(u32, WireType), DecodeErrorKind> {
    let tag = read_varint(buf)?;
    let number = tag >> 3;
    if number == 0 || number > MAX_FIELD_NUMBER {
        return Err(DecodeErrorKind::InvalidFieldNumber(number));
    }
    let wire = WireType::from_tag(tag).ok_or(DecodeErrorKind::InvalidWireType((tag & 7) as u8))?;
    // `number` fits in 29 bits, checked above.
    Ok((number as u32, wire))
}

/// Reads four little-endian bytes (wire type I32).
#[inline(always)]
pub fn read_fixed32(buf: &mut &[u8]) -> Result<u32, DecodeErrorKind> {
    match buf.split_first_chunk::<4>() {
        Some((bytes, rest)) => {
            *buf = rest;
            Ok(u32::from_le_bytes(*bytes))
        }
        None => Err(truncated(4, buf)),
    }
}

/// Reads eight little-endian bytes (wire type I64).
#[inline(always)]
pub fn read_fixed64(buf: &mut &[u8]) -> Result<u64, DecodeErrorKind> {
    match buf.split_first_chunk::<8>() {
        Some((bytes, rest)) => {
            *buf = rest;
            Ok(u64::from_le_bytes(*bytes))
        }
        None => Err(truncated(8, buf)),
    }
}

/// Reads a length prefix and returns the payload it announces (wire type LEN).
#[inline(always)]
pub fn read_len<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], DecodeErrorKind> {
    let len = read_varint(buf)?;
    let rest: &'a [u8] = buf;
    if len > rest.len() as u64 {
        return Err(DecodeErrorKind::Truncated {
            needed: len,
            available: rest.len(),
        });
    }
    // `len <= rest.len()`, so it fits in usize.
    let (payload, after) = rest.split_at(len as usize);
    *buf = after;
    Ok(payload)
}

/// Skips the payload of an unknown field of the given wire type.
#[inline]
pub fn skip(wire: WireType, buf: &mut &[u8]) -> Result<(), DecodeErrorKind> {
    match wire {
        WireType::Varint => read_varint(buf).map(drop),
        WireType::I64 => read_fixed64(buf).map(drop),
        WireType::Len => read_len(buf).map(drop),
        WireType::I32 => read_fixed32(buf).map(drop),
        WireType::StartGroup | WireType::EndGroup => Err(DecodeErrorKind::Group),
    }
}

/// Undoes zigzag encoding of a `sint64`.
#[inline(always)]
pub fn zigzag64(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

/// Undoes zigzag encoding of a `sint32` (the varint carries 32 bits).
#[inline(always)]
pub fn zigzag32(n: u64) -> i32 {
    let n = n as u32;
    ((n >> 1) as i32) ^ -((n & 1) as i32)
}

#[cold]
fn truncated(needed: u64, buf: &[u8]) -> DecodeErrorKind {
    DecodeErrorKind::Truncated {
        needed,
        available: buf.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::encoding::encode_varint;

    fn varint_bytes(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode_varint(v, &mut out);
        out
    }

    #[test]
    fn varints_round_trip() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let bytes = varint_bytes(v);
            let mut buf = bytes.as_slice();
            assert_eq!(read_varint(&mut buf), Ok(v));
            assert!(buf.is_empty());
        }
    }

    /// Every varint length, alone and followed by more bytes (so that both
    /// the word-at-a-time and the bytewise readers run), by both readers.
    #[test]
    fn varints_of_every_length() {
        for bits in 0..64 {
            for v in [1u64 << bits, (1u64 << bits) - 1, (1u64 << bits) | 0x55] {
                let bytes = varint_bytes(v);
                for padding in [0, 1, 8] {
                    let mut padded = bytes.clone();
                    padded.extend(std::iter::repeat_n(0xff, padding));
                    let mut a = padded.as_slice();
                    let mut b = padded.as_slice();
                    assert_eq!(read_varint(&mut a), Ok(v), "{v} + {padding}");
                    assert_eq!(read_varint_inline(&mut b), Ok(v), "{v} + {padding}");
                    assert_eq!((a.len(), b.len()), (padding, padding));
                }
            }
        }
        let mut unterminated = &[0x80u8; 8][..];
        assert_eq!(
            read_varint_inline(&mut unterminated),
            Err(DecodeErrorKind::TruncatedVarint)
        );
    }

    #[test]
    fn negative_int32_is_ten_bytes() {
        let bytes = varint_bytes(-1i32 as i64 as u64);
        assert_eq!(bytes.len(), 10);
        let mut buf = bytes.as_slice();
        assert_eq!(read_varint(&mut buf).map(|v| v as i32), Ok(-1));
    }

    #[test]
    fn bad_varints() {
        assert_eq!(
            read_varint(&mut &[][..]),
            Err(DecodeErrorKind::TruncatedVarint)
        );
        assert_eq!(
            read_varint(&mut &[0x80, 0x80][..]),
            Err(DecodeErrorKind::TruncatedVarint)
        );
        let eleven = [0xff; 11];
        assert_eq!(
            read_varint(&mut &eleven[..]),
            Err(DecodeErrorKind::VarintOverflow)
        );
        let mut tenth_too_big = [0xff; 10];
        tenth_too_big[9] = 0x02;
        assert_eq!(
            read_varint(&mut &tenth_too_big[..]),
            Err(DecodeErrorKind::VarintOverflow)
        );
    }

    #[test]
    fn tags() {
        assert_eq!(read_tag(&mut &[0x08][..]), Ok((1, WireType::Varint)));
        assert_eq!(read_tag(&mut &[0xc2, 0x0c][..]), Ok((200, WireType::Len)));
        assert_eq!(
            read_tag(&mut &[0x00][..]),
            Err(DecodeErrorKind::InvalidFieldNumber(0))
        );
        assert_eq!(
            read_tag(&mut &[0x0e][..]),
            Err(DecodeErrorKind::InvalidWireType(6))
        );
    }

    #[test]
    fn lengths_and_fixed() {
        let mut buf = &[3, b'a', b'b', b'c', 9][..];
        assert_eq!(read_len(&mut buf), Ok(&b"abc"[..]));
        assert_eq!(buf, &[9]);
        assert_eq!(
            read_len(&mut &[5, 1][..]),
            Err(DecodeErrorKind::Truncated {
                needed: 5,
                available: 1
            })
        );
        assert_eq!(
            read_fixed64(&mut &[1, 2, 3][..]),
            Err(DecodeErrorKind::Truncated {
                needed: 8,
                available: 3
            })
        );
        assert_eq!(read_fixed32(&mut &[1, 0, 0, 0][..]), Ok(1));
        assert_eq!(
            skip(WireType::StartGroup, &mut &[][..]),
            Err(DecodeErrorKind::Group)
        );
    }

    #[test]
    fn zigzag() {
        assert_eq!(zigzag64(0), 0);
        assert_eq!(zigzag64(1), -1);
        assert_eq!(zigzag64(2), 1);
        assert_eq!(zigzag64(u64::MAX), i64::MIN);
        assert_eq!(zigzag32(u64::from(u32::MAX)), i32::MIN);
        assert_eq!(zigzag32(3), -2);
    }
}
