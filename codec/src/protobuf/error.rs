//! What can be wrong with a protobuf record ([`DecodeErrorKind`]); the
//! crate's [`Error::Record`](crate::Error::Record) adds the record index
//! and the field path.

use std::fmt;

use super::wire::WireType;

/// What is wrong with a record, without the record index and field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// The input ended inside a varint.
    TruncatedVarint,
    /// A varint ran past 10 bytes or past 64 bits.
    VarintOverflow,
    /// A fixed-width value or a length-delimited payload runs past the end of
    /// its enclosing message.
    Truncated {
        /// Bytes the value needs.
        needed: u64,
        /// Bytes left in the enclosing message.
        available: usize,
    },
    /// A tag carries field number 0 or one above 2^29 - 1.
    InvalidFieldNumber(u64),
    /// A tag carries wire type 6 or 7.
    InvalidWireType(u8),
    /// A proto2 group (wire types 3 and 4); weir does not support groups.
    Group,
    /// A known field arrived with a wire type its declared type cannot have.
    WrongWireType {
        /// The wire type of the declared type.
        expected: WireType,
        /// The wire type in the record.
        found: WireType,
    },
    /// A `string` field is not valid UTF-8.
    InvalidUtf8,
    /// An unsigned 64-bit value does not fit a signed 64-bit column.
    Int64Overflow(u64),
    /// An integer does not fit a narrow (8 or 16 bit) column.
    OutOfRange {
        /// The value on the wire.
        value: i64,
        /// Arrow type of the column.
        column: &'static str,
    },
    /// An enum number that the enum does not define, for a string column.
    UnknownEnumValue(i32),
    /// A `google.protobuf.Timestamp` with `nanos` outside 0..=999,999,999.
    TimestampNanos(i32),
    /// A `google.protobuf.Timestamp` that does not fit the column's unit.
    TimestampOverflow,
    /// A proto2 `required` field is missing.
    MissingRequired,
    /// A field is absent but its column is not nullable.
    MissingNonNullable,
    /// Messages nested deeper than the limit.
    TooDeep(usize),
    /// The batch holds more than 2 GiB of one column's strings, or more than
    /// 2^31 list elements in one column, or more records than the records'
    /// iterator said it held.
    BatchTooLarge,
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use DecodeErrorKind::*;
        match self {
            TruncatedVarint => write!(f, "truncated varint"),
            VarintOverflow => write!(f, "varint longer than 10 bytes"),
            Truncated { needed, available } => write!(
                f,
                "length {needed} past end of message ({available} bytes left)"
            ),
            InvalidFieldNumber(n) => write!(f, "invalid field number {n}"),
            InvalidWireType(w) => write!(f, "invalid wire type {w}"),
            Group => write!(f, "groups (wire types 3 and 4) are not supported"),
            WrongWireType { expected, found } => {
                write!(f, "wrong wire type: expected {expected}, found {found}")
            }
            InvalidUtf8 => write!(f, "invalid UTF-8 in string"),
            Int64Overflow(v) => write!(f, "value {v} overflows a signed 64-bit column"),
            OutOfRange { value, column } => {
                write!(f, "value {value} out of range for a {column} column")
            }
            UnknownEnumValue(v) => write!(f, "enum value {v} is not defined"),
            TimestampNanos(n) => write!(f, "timestamp nanos {n} outside 0..=999999999"),
            TimestampOverflow => write!(f, "timestamp out of range for the column's unit"),
            MissingRequired => write!(f, "missing required field"),
            MissingNonNullable => write!(f, "missing value for a non-nullable column"),
            TooDeep(limit) => write!(f, "messages nested deeper than {limit}"),
            BatchTooLarge => write!(f, "batch too large for 32-bit Arrow offsets"),
        }
    }
}
