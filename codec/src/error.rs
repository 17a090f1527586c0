//! The crate's one error type.
//!
//! Every variant is the caller's fault (bad input: a batch, a descriptor, a
//! record) except [`Error::Arrow`], which reports a failure inside Arrow
//! itself on input that passed our checks, and so points at a broken
//! invariant. [`Error::is_caller_fault`] tells them apart.

use std::fmt;

use arrow::error::ArrowError;

pub use crate::protobuf::DecodeErrorKind;

/// A `Result` with [`Error`] as its default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why input could not be turned into rows of a table.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input has a column the table does not have.
    #[error("unknown column {column:?}: the table has no such column")]
    UnknownColumn { column: String },
    /// A non-nullable table column is absent from the input.
    #[error("missing column {column:?}: it is NOT NULL in the table")]
    MissingColumn { column: String },
    /// A column appears twice in the input.
    #[error("column {column:?} appears more than once")]
    DuplicateColumn { column: String },
    /// A column's type cannot be cast to the table's type without loss.
    #[error("column {column:?} has type {found}, which cannot be stored losslessly as {expected}")]
    IncompatibleType {
        column: String,
        found: String,
        expected: String,
    },
    /// A NOT NULL column holds nulls.
    #[error("column {column:?} is NOT NULL but {nulls} of {rows} values are null")]
    NullsInNonNullable {
        column: String,
        nulls: usize,
        rows: usize,
    },
    /// A value does not fit the table's type (overflow, or precision lost).
    #[error("column {column:?}: {reason}")]
    ValueLoss { column: String, reason: String },
    /// Arrow IPC bytes that do not decode.
    #[error("invalid Arrow IPC data: {0}")]
    InvalidIpc(String),
    /// Protobuf descriptor bytes or `.proto` source that do not parse or link.
    #[error("invalid protobuf descriptor: {0}")]
    Descriptor(String),
    /// The descriptor does not define the requested message.
    #[error("message {0:?} not found in the descriptor")]
    MessageNotFound(String),
    /// A descriptor field (or a table column) does not fit the table.
    #[error("field {path}: {reason}")]
    IncompatibleField {
        /// Protobuf field path such as `.meta.ts`, or a column name.
        path: String,
        /// What does not fit.
        reason: String,
    },
    /// A protobuf or JSON record that does not decode. Nothing of its batch
    /// is returned.
    #[error("record {record}: {problem}")]
    Record {
        /// Index of the record in the batch, from 0.
        record: usize,
        /// What is wrong, and where in the record.
        problem: RecordProblem,
    },
    /// Arrow failed on input that passed the checks above: a bug in weir.
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
}

impl Error {
    /// True when the input is at fault and the caller should be told
    /// `INVALID_ARGUMENT`; false for a broken invariant.
    pub fn is_caller_fault(&self) -> bool {
        match self {
            Error::UnknownColumn { .. }
            | Error::MissingColumn { .. }
            | Error::DuplicateColumn { .. }
            | Error::IncompatibleType { .. }
            | Error::NullsInNonNullable { .. }
            | Error::ValueLoss { .. }
            | Error::InvalidIpc(_)
            | Error::Descriptor(_)
            | Error::MessageNotFound(_)
            | Error::IncompatibleField { .. }
            | Error::Record { .. } => true,
            Error::Arrow(_) => false,
        }
    }

    /// The index of the bad record, for record errors.
    pub fn record_index(&self) -> Option<usize> {
        match self {
            Error::Record { record, .. } => Some(*record),
            _ => None,
        }
    }

    pub(crate) fn incompatible_field(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::IncompatibleField {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// What is wrong with one record, and where in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordProblem {
    /// A protobuf record: the field path (`.meta.ts`; empty for the framing
    /// of the top-level message) and what is wrong there.
    Protobuf { path: String, kind: DecodeErrorKind },
    /// JSON that is not well formed (an unterminated string or object).
    MalformedJson(String),
    /// A JSON key that is not a column of the table.
    UnknownField(String),
    /// A non-nullable column missing or null in a JSON record.
    MissingValue { column: String },
    /// A JSON value that does not fit its column (type, range, format), as
    /// Arrow reports it; for nested columns, the top-level column.
    BadValue { column: String, message: String },
    /// A JSON record that is wrong in another way Arrow reports (e.g. not
    /// an object).
    BadJson(String),
}

impl fmt::Display for RecordProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordProblem::Protobuf { path, kind } if path.is_empty() => write!(f, "{kind}"),
            RecordProblem::Protobuf { path, kind } => write!(f, "field {path}: {kind}"),
            RecordProblem::MalformedJson(message) => write!(f, "malformed JSON: {message}"),
            RecordProblem::UnknownField(field) => write!(f, "unknown field {field:?}"),
            RecordProblem::MissingValue { column } => {
                write!(
                    f,
                    "column {column:?}: missing value for a non-nullable column"
                )
            }
            RecordProblem::BadValue { column, message } => {
                write!(f, "column {column:?}: {message}")
            }
            RecordProblem::BadJson(message) => f.write_str(message),
        }
    }
}
