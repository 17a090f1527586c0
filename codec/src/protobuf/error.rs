//! Errors of the protobuf decoder.
//!
//! Two families, told apart by [`ProtoError::is_caller_fault`]:
//!
//! * **The caller's fault** (a gRPC `INVALID_ARGUMENT`): a descriptor that does
//!   not parse or does not fit the table ([`ProtoError::Descriptor`],
//!   [`ProtoError::MessageNotFound`], [`ProtoError::Incompatible`]), and a
//!   record that does not decode ([`ProtoError::Decode`], which names the
//!   record index and the protobuf field path).
//! * **A broken invariant** ([`ProtoError::Arrow`]): the decoder built arrays
//!   that Arrow refused. That is a bug in weir, never in the input.

use std::fmt;

use arrow::error::ArrowError;

use super::wire::WireType;

/// A `Result` whose error is a [`ProtoError`].
pub type Result<T, E = ProtoError> = std::result::Result<T, E>;

/// Everything that can go wrong turning descriptors and records into Arrow.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The descriptor bytes or `.proto` source could not be parsed or linked.
    #[error("invalid protobuf descriptor: {0}")]
    Descriptor(String),
    /// The descriptor does not define the requested message.
    #[error("message {0:?} not found in the descriptor")]
    MessageNotFound(String),
    /// A descriptor field (or a table column) does not fit the table.
    /// `path` is the protobuf field path (`.meta.ts`) or the column name.
    #[error("field {path}: {reason}")]
    Incompatible {
        /// Field path such as `.meta.ts`.
        path: String,
        /// What does not fit.
        reason: String,
    },
    /// A record could not be decoded. Nothing of the batch is returned.
    #[error("record {record}: {}{kind}", field_prefix(path))]
    Decode {
        /// Index of the record in the batch, from 0.
        record: usize,
        /// Field path such as `.meta.ts`; empty when the error is in the
        /// framing of the top-level message itself.
        path: String,
        /// What is wrong.
        kind: DecodeErrorKind,
    },
    /// Arrow refused arrays the decoder built: a bug in weir, not bad input.
    #[error("internal error building Arrow arrays: {0}")]
    Arrow(#[from] ArrowError),
}

fn field_prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("field {path}: ")
    }
}

impl ProtoError {
    /// True when the request (descriptor or record) is at fault and the
    /// caller should be told `INVALID_ARGUMENT`; false for a broken invariant.
    pub fn is_caller_fault(&self) -> bool {
        match self {
            ProtoError::Descriptor(_)
            | ProtoError::MessageNotFound(_)
            | ProtoError::Incompatible { .. }
            | ProtoError::Decode { .. } => true,
            ProtoError::Arrow(_) => false,
        }
    }

    /// The index of the bad record, for decode errors.
    pub fn record_index(&self) -> Option<usize> {
        match self {
            ProtoError::Decode { record, .. } => Some(*record),
            _ => None,
        }
    }

    pub(crate) fn incompatible(path: impl Into<String>, reason: impl Into<String>) -> Self {
        ProtoError::Incompatible {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

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
    /// 2^31 list elements in one column.
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
