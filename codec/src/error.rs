//! The crate's one error type.
//!
//! Every variant is the caller's fault (bad input: a batch, a descriptor, a
//! record) except [`Error::Arrow`], which reports a failure inside Arrow
//! itself on input that passed our checks, and so points at a broken
//! invariant. [`Error::is_caller_fault`] tells them apart.

use std::fmt;

use arrow::error::ArrowError;

pub use crate::protobuf::DecodeErrorKind;

/// Most bytes of one input value (a name, a field path, a message from a
/// parser) that an error message repeats; the rest is cut, so that every
/// error fits the trailer limits of gRPC clients.
pub const MAX_ECHO_BYTES: usize = 200;

/// Shows a string from the input in an error message, quoted and cut to
/// [`MAX_ECHO_BYTES`] (at a character boundary) with the full length noted.
///
/// ```
/// use weir_codec::Echo;
/// assert_eq!(Echo("site").to_string(), "\"site\"");
/// let long = "x".repeat(100_000);
/// let shown = Echo(&long).to_string();
/// assert!(shown.len() < 300 && shown.ends_with("... (100000 bytes)"), "{shown}");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Echo<'a>(pub &'a str);

impl fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match cut(self.0) {
            None => write!(f, "{:?}", self.0),
            Some(shown) => write!(f, "{shown:?}... ({} bytes)", self.0.len()),
        }
    }
}

/// The first [`MAX_ECHO_BYTES`] of `text` (at a character boundary), or
/// `None` if it is no longer than that.
fn cut(text: &str) -> Option<&str> {
    (text.len() > MAX_ECHO_BYTES).then(|| prefix(text, MAX_ECHO_BYTES))
}

/// The longest prefix of `text` of at most `max` bytes that ends at a
/// character boundary.
pub fn prefix(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// [`Echo`] without the quotes, for text that is a message rather than a
/// name.
#[derive(Debug, Clone, Copy)]
pub struct EchoText<'a>(pub &'a str);

impl fmt::Display for EchoText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match cut(self.0) {
            None => f.write_str(self.0),
            Some(shown) => write!(f, "{shown}... ({} bytes)", self.0.len()),
        }
    }
}

/// A `Result` with [`Error`] as its default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why input could not be turned into rows of a table.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input has a column the table does not have.
    #[error("unknown column {}: the table has no such column", Echo(.column))]
    UnknownColumn { column: String },
    /// A non-nullable table column is absent from the input.
    #[error("missing column {}: it is NOT NULL in the table", Echo(.column))]
    MissingColumn { column: String },
    /// A column appears twice in the input.
    #[error("column {} appears more than once", Echo(.column))]
    DuplicateColumn { column: String },
    /// A column's type cannot be cast to the table's type without loss.
    #[error(
        "column {} has type {}, which cannot be stored losslessly as {expected}",
        Echo(.column),
        EchoText(.found)
    )]
    IncompatibleType {
        column: String,
        found: String,
        expected: String,
    },
    /// A NOT NULL column holds nulls.
    #[error(
        "column {} is NOT NULL but {nulls} of {rows} values are null",
        Echo(.column)
    )]
    NullsInNonNullable {
        column: String,
        nulls: usize,
        rows: usize,
    },
    /// A value does not fit the table's type (overflow, or precision lost).
    #[error("column {}: {}", Echo(.column), EchoText(.reason))]
    ValueLoss { column: String, reason: String },
    /// Arrow IPC bytes that do not decode.
    #[error("invalid Arrow IPC data: {}", EchoText(.0))]
    InvalidIpc(String),
    /// Protobuf descriptor bytes or `.proto` source that do not parse or link.
    #[error("invalid protobuf descriptor: {}", EchoText(.0))]
    Descriptor(String),
    /// The descriptor does not define the requested message.
    #[error("message {} not found in the descriptor", Echo(.0))]
    MessageNotFound(String),
    /// A descriptor field (or a table column) does not fit the table.
    #[error("field {}: {}", EchoText(.path), EchoText(.reason))]
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
    /// A request larger than a configured limit (see [`crate::limits`]).
    #[error("too large: {value} {what}, over the limit of {limit} ({setting})")]
    LimitExceeded {
        /// What was counted.
        what: &'static str,
        /// What the request declares (or an estimate from it).
        value: u64,
        /// The configured limit.
        limit: u64,
        /// The setting that holds the limit.
        setting: &'static str,
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
            | Error::Record { .. }
            | Error::LimitExceeded { .. } => true,
            Error::Arrow(_) => false,
        }
    }

    /// True when a configured limit refused the input (the caller should
    /// be told `RESOURCE_EXHAUSTED`).
    pub fn is_limit(&self) -> bool {
        matches!(self, Error::LimitExceeded { .. })
    }

    /// The kind of schema mismatch, as the Zerobus protocol names it
    /// (`FIELD_NOT_IN_TABLE`, `MISSING_REQUIRED_COLUMN`,
    /// `TYPE_INCOMPATIBLE`); `None` for errors that are not about the
    /// schema.
    pub fn schema_cause(&self) -> Option<&'static str> {
        match self {
            Error::UnknownColumn { .. } => Some("FIELD_NOT_IN_TABLE"),
            Error::MissingColumn { .. } => Some("MISSING_REQUIRED_COLUMN"),
            Error::IncompatibleType { .. } => Some("TYPE_INCOMPATIBLE"),
            Error::IncompatibleField { reason, .. } => {
                Some(if reason == crate::protobuf::NO_SUCH_COLUMN {
                    "FIELD_NOT_IN_TABLE"
                } else if reason == crate::protobuf::NO_SUCH_FIELD {
                    "MISSING_REQUIRED_COLUMN"
                } else {
                    "TYPE_INCOMPATIBLE"
                })
            }
            _ => None,
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
            RecordProblem::Protobuf { path, kind } => {
                write!(f, "field {}: {kind}", EchoText(path))
            }
            RecordProblem::MalformedJson(message) => {
                write!(f, "malformed JSON: {}", EchoText(message))
            }
            RecordProblem::UnknownField(field) => write!(f, "unknown field {}", Echo(field)),
            RecordProblem::MissingValue { column } => {
                write!(
                    f,
                    "column {}: missing value for a non-nullable column",
                    Echo(column)
                )
            }
            RecordProblem::BadValue { column, message } => {
                write!(f, "column {}: {}", Echo(column), EchoText(message))
            }
            RecordProblem::BadJson(message) => EchoText(message).fmt(f),
        }
    }
}
