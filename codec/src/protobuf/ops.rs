//! Reading one field value off the wire into its column.
//!
//! An [`Op`] is chosen per field when the plan is built (from the protobuf
//! type and the column's Arrow type) and says how to read the value and
//! where to put it. [`Decoding::apply`] runs it: it reads exactly one value
//! (or one length-delimited payload) from the cursor and either appends it
//! to the column (`first`) or overwrites the column's last value (a
//! repeated occurrence of a singular field: last value wins). Root-level
//! 64-bit columns ([`Op::WideF64`], [`Op::WideI64`]) are written at the
//! open row's index instead, which overwrites by itself.

use arrow::datatypes::TimeUnit;

use super::decoder::{Decoding, Fail};
use super::error::DecodeErrorKind;
use super::plan::{NodeId, PathId, unit_scale};
use super::wire::{self, WireType, read_fixed32, read_fixed64, read_len, read_varint};

/// How a 32-bit integer is encoded: `int32` or enum, `sint32`, `sfixed32`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Src32 {
    Var,
    Zig,
    SFixed,
}

/// How a value bound for a 64-bit signed column is encoded.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Src64 {
    VarI32,
    ZigI32,
    SFixed32,
    VarU32,
    Fixed32,
    VarI64,
    ZigI64,
    SFixed64,
    /// `uint64`: fails above `i64::MAX`.
    VarU64,
    /// `fixed64`: fails above `i64::MAX`.
    Fixed64,
}

/// How to read one value and where to store it (column slot numbers index
/// the typed arenas of [`super::columns::Columns`]).
#[derive(Debug)]
pub(crate) enum Op {
    /// Into `Int32`, `Int16`, `Int8` or `Date32`, checked against `lo..=hi`.
    I32 {
        col: u32,
        src: Src32,
        lo: i32,
        hi: i32,
    },
    /// Into `Int64` or `Timestamp` (an `int64` is taken in the column's unit).
    I64 {
        col: u32,
        src: Src64,
    },
    U32 {
        col: u32,
        fixed: bool,
    },
    U64 {
        col: u32,
        fixed: bool,
    },
    F32 {
        col: u32,
    },
    /// `float` widened into a `Float64` column.
    F64FromF32 {
        col: u32,
    },
    F64 {
        col: u32,
    },
    /// `double` into a root-level `Float64` column (see
    /// [`super::plan::Shape::Wide`]).
    WideF64 {
        slot: u32,
    },
    /// Like [`Op::I64`], into a root-level `Int64` or `Timestamp` column.
    WideI64 {
        slot: u32,
        src: Src64,
    },
    Bool {
        col: u32,
    },
    /// `string`, validated as UTF-8.
    Utf8 {
        col: u32,
    },
    Binary {
        col: u32,
    },
    /// Enum number stored as the value's name.
    EnumName {
        col: u32,
        names: u32,
    },
    /// `google.protobuf.Timestamp` into a `Timestamp` column of `unit`.
    Timestamp {
        col: u32,
        slot: u32,
        unit: TimeUnit,
    },
    /// `google.protobuf.*Value`: field 1 of the payload, read by `inner`.
    Wrapper {
        inner: Box<Op>,
        wire: WireType,
    },
    /// A nested message, decoded into the struct level `NodeId`.
    Message(NodeId),
}

impl Decoding<'_> {
    /// Reads one value of `op` from `buf` into its column.
    #[inline(always)]
    pub(crate) fn apply(
        &mut self,
        op: &Op,
        first: bool,
        buf: &mut &[u8],
        path: PathId,
        depth: usize,
    ) -> Result<(), Fail> {
        let at = |kind| Fail { path, kind };
        let cols = &mut self.cols;
        match *op {
            Op::F64 { col } => {
                let v = f64::from_bits(read_fixed64(buf).map_err(at)?);
                cols.f64s[col as usize].put(v, first);
            }
            Op::I64 { col, src } => {
                let v = read_i64(src, buf).map_err(at)?;
                cols.i64s[col as usize].put(v, first);
            }
            // Stored at the root's open row: a second occurrence overwrites.
            Op::WideF64 { slot } => {
                let bits = read_fixed64(buf).map_err(at)?;
                cols.wide.set(slot, self.nodes[0].rows, bits).map_err(at)?;
            }
            Op::WideI64 { slot, src } => {
                let v = read_i64(src, buf).map_err(at)?;
                cols.wide
                    .set(slot, self.nodes[0].rows, v as u64)
                    .map_err(at)?;
            }
            Op::Utf8 { col } => {
                let v = read_len(buf).map_err(at)?;
                if std::str::from_utf8(v).is_err() {
                    return Err(at(DecodeErrorKind::InvalidUtf8));
                }
                cols.bytes[col as usize].put(v, first).map_err(at)?;
            }
            Op::I32 { col, src, lo, hi } => {
                let v = match src {
                    Src32::Var => read_varint(buf).map_err(at)? as i32,
                    Src32::Zig => wire::zigzag32(read_varint(buf).map_err(at)?),
                    Src32::SFixed => read_fixed32(buf).map_err(at)? as i32,
                };
                if v < lo || v > hi {
                    let column = if lo == i32::from(i8::MIN) {
                        "Int8"
                    } else {
                        "Int16"
                    };
                    return Err(at(DecodeErrorKind::OutOfRange {
                        value: v.into(),
                        column,
                    }));
                }
                cols.i32s[col as usize].put(v, first);
            }
            Op::U32 { col, fixed } => {
                let v = if fixed {
                    read_fixed32(buf).map_err(at)?
                } else {
                    read_varint(buf).map_err(at)? as u32
                };
                cols.u32s[col as usize].put(v, first);
            }
            Op::U64 { col, fixed } => {
                let v = if fixed {
                    read_fixed64(buf)
                } else {
                    read_varint(buf)
                }
                .map_err(at)?;
                cols.u64s[col as usize].put(v, first);
            }
            Op::F32 { col } => {
                let v = f32::from_bits(read_fixed32(buf).map_err(at)?);
                cols.f32s[col as usize].put(v, first);
            }
            Op::F64FromF32 { col } => {
                let v = f32::from_bits(read_fixed32(buf).map_err(at)?);
                cols.f64s[col as usize].put(f64::from(v), first);
            }
            Op::Bool { col } => {
                let v = read_varint(buf).map_err(at)? != 0;
                cols.bools[col as usize].put(v, first);
            }
            Op::Binary { col } => {
                let v = read_len(buf).map_err(at)?;
                cols.bytes[col as usize].put(v, first).map_err(at)?;
            }
            Op::EnumName { col, names } => {
                let n = read_varint(buf).map_err(at)? as i32;
                let name = self.plan.enums[names as usize]
                    .get(n)
                    .ok_or(at(DecodeErrorKind::UnknownEnumValue(n)))?;
                cols.bytes[col as usize]
                    .put(name.as_bytes(), first)
                    .map_err(at)?;
            }
            Op::Timestamp { .. } | Op::Wrapper { .. } | Op::Message(_) => {
                let payload = read_len(buf).map_err(at)?;
                self.apply_nested(op, first, payload, path, depth)?;
            }
        }
        Ok(())
    }

    /// The ops that decode a nested payload, kept out of line: they recurse,
    /// and the hot loop's cursor must not escape to memory.
    #[inline(never)]
    fn apply_nested(
        &mut self,
        op: &Op,
        first: bool,
        mut payload: &[u8],
        path: PathId,
        depth: usize,
    ) -> Result<(), Fail> {
        let at = |kind| Fail { path, kind };
        match *op {
            Op::Timestamp { col, slot, unit } => {
                self.timestamp(col, slot, unit, first, payload)
                    .map_err(at)?;
            }
            Op::Wrapper { ref inner, wire } => {
                if first {
                    self.push_default(inner, path)?;
                }
                while !payload.is_empty() {
                    let (number, found) = wire::read_tag(&mut payload).map_err(at)?;
                    if number != 1 {
                        wire::skip(found, &mut payload).map_err(at)?;
                    } else if found != wire {
                        return Err(at(DecodeErrorKind::WrongWireType {
                            expected: wire,
                            found,
                        }));
                    } else {
                        self.apply(inner, false, &mut payload, path, depth)?;
                    }
                }
            }
            Op::Message(child) => {
                if first {
                    self.open_row(child);
                }
                self.parse_message(child, payload, depth + 1)?;
            }
            // `apply` handles scalar ops itself.
            _ => {}
        }
        Ok(())
    }

    /// Reads a `google.protobuf.Timestamp` payload (`int64 seconds = 1;
    /// int32 nanos = 2;`), merging into the value being built when the field
    /// occurs again, and stores it in `unit`.
    fn timestamp(
        &mut self,
        col: u32,
        slot: u32,
        unit: TimeUnit,
        first: bool,
        mut payload: &[u8],
    ) -> Result<(), DecodeErrorKind> {
        let (mut seconds, mut nanos) = if first {
            (0, 0)
        } else {
            self.cols.timestamps[slot as usize]
        };
        while !payload.is_empty() {
            let (number, found) = wire::read_tag(&mut payload)?;
            match (number, found) {
                (1, WireType::Varint) => seconds = read_varint(&mut payload)? as i64,
                (2, WireType::Varint) => nanos = read_varint(&mut payload)? as i32,
                (1 | 2, found) => {
                    return Err(DecodeErrorKind::WrongWireType {
                        expected: WireType::Varint,
                        found,
                    });
                }
                (_, found) => wire::skip(found, &mut payload)?,
            }
        }
        self.cols.timestamps[slot as usize] = (seconds, nanos);
        if !(0..=999_999_999).contains(&nanos) {
            return Err(DecodeErrorKind::TimestampNanos(nanos));
        }
        let (per_second, per_nano) = unit_scale(unit);
        let v = seconds
            .checked_mul(per_second)
            .and_then(|s| s.checked_add(i64::from(nanos) / per_nano))
            .ok_or(DecodeErrorKind::TimestampOverflow)?;
        self.cols.i64s[col as usize].put(v, first);
        Ok(())
    }

    /// Appends the proto3 default value of `op` (zero, empty, the enum's
    /// default name; an empty message for nested messages).
    pub(crate) fn push_default(&mut self, op: &Op, path: PathId) -> Result<(), Fail> {
        let at = |kind| Fail { path, kind };
        let cols = &mut self.cols;
        match *op {
            Op::I32 { col, .. } => cols.i32s[col as usize].put(0, true),
            Op::I64 { col, .. } | Op::Timestamp { col, .. } => cols.i64s[col as usize].put(0, true),
            Op::U32 { col, .. } => cols.u32s[col as usize].put(0, true),
            Op::U64 { col, .. } => cols.u64s[col as usize].put(0, true),
            Op::F32 { col } => cols.f32s[col as usize].put(0.0, true),
            Op::F64 { col } | Op::F64FromF32 { col } => cols.f64s[col as usize].put(0.0, true),
            // Zero already (see `columns::Wide`): 0.0 and 0 alike.
            Op::WideF64 { .. } | Op::WideI64 { .. } => {}
            Op::Bool { col } => cols.bools[col as usize].put(false, true),
            Op::Utf8 { col } | Op::Binary { col } => {
                cols.bytes[col as usize].put(b"", true).map_err(at)?
            }
            Op::EnumName { col, names } => {
                let name = self.plan.enums[names as usize].default.as_bytes();
                cols.bytes[col as usize].put(name, true).map_err(at)?;
            }
            Op::Wrapper { ref inner, .. } => self.push_default(inner, path)?,
            Op::Message(child) => {
                self.open_row(child);
                self.close_row(child)?;
            }
        }
        Ok(())
    }
}

/// Reads a value bound for a signed 64-bit column.
#[inline(always)]
fn read_i64(src: Src64, buf: &mut &[u8]) -> Result<i64, DecodeErrorKind> {
    Ok(match src {
        Src64::VarI64 => read_varint(buf)? as i64,
        Src64::SFixed64 => read_fixed64(buf)? as i64,
        Src64::ZigI64 => wire::zigzag64(read_varint(buf)?),
        Src64::VarI32 => i64::from(read_varint(buf)? as i32),
        Src64::ZigI32 => i64::from(wire::zigzag32(read_varint(buf)?)),
        Src64::SFixed32 => i64::from(read_fixed32(buf)? as i32),
        Src64::VarU32 => i64::from(read_varint(buf)? as u32),
        Src64::Fixed32 => i64::from(read_fixed32(buf)?),
        Src64::VarU64 => unsigned_to_i64(read_varint(buf)?)?,
        Src64::Fixed64 => unsigned_to_i64(read_fixed64(buf)?)?,
    })
}

#[inline(always)]
fn unsigned_to_i64(v: u64) -> Result<i64, DecodeErrorKind> {
    i64::try_from(v).map_err(|_| DecodeErrorKind::Int64Overflow(v))
}
