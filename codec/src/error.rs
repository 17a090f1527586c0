//! The crate's one error type.
//!
//! Every variant is the caller's fault (bad input) except [`Error::Arrow`],
//! which reports a failure inside Arrow itself on input that passed our
//! checks, and so points at a broken invariant.

use arrow::error::ArrowError;

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
    /// Arrow failed on input that passed the checks above.
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
}
