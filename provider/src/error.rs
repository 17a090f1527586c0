//! The crate's one error type.
//!
//! [`Error::is_caller_fault`] separates what a user did (bad name, unknown
//! table, rows that do not fit) from what went wrong underneath (storage,
//! Delta, the WAL).

use weir_codec::Echo;
use weir_wal::WalPosition;

/// A `Result` with [`Error`] as its default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong with tables.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A table name that weir does not accept.
    #[error("invalid table name {}: {reason}", Echo(.name))]
    InvalidTableName { name: String, reason: &'static str },
    /// No table of that name.
    #[error("table {} not found", Echo(.name))]
    TableNotFound { name: String },
    /// CREATE TABLE for a name that exists.
    #[error("table {} already exists", Echo(.name))]
    TableExists { name: String },
    /// A column type that a Delta table cannot hold.
    #[error(
        "column {}: type {data_type} is not supported by Delta tables",
        Echo(.column)
    )]
    UnsupportedType { column: String, data_type: String },
    /// Rows that do not fit the table.
    #[error("table {}: {source}", Echo(.table))]
    Rows {
        table: String,
        #[source]
        source: weir_codec::Error,
    },
    /// A table directory with a Delta log that does not load at start.
    #[error(
        "table {} cannot be loaded: {source}. Its acknowledged rows that are not yet in Delta \
         are kept in the WAL, so weir does not start without it: repair the Delta table, or \
         move its directory out of the storage root to drop the table and those rows, then \
         start again",
        Echo(.table)
    )]
    TableUnreadable {
        table: String,
        #[source]
        source: Box<Error>,
    },
    /// The write-ahead log failed.
    #[error("write-ahead log: {0}")]
    Wal(#[from] weir_wal::Error),
    /// A WAL record that does not decode although its checksum held: a bug.
    #[error("WAL record at {position} is malformed: {reason}")]
    MalformedEntry {
        position: WalPosition,
        reason: String,
    },
    /// The Delta table or its storage failed.
    #[error("delta table {}: {source}", Echo(.table))]
    Delta {
        table: String,
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },
    /// Listing or deleting objects in the storage root failed.
    #[error("storage: {0}")]
    Storage(#[from] object_store::Error),

    /// A committed file that could not be made durable (fsync); the rows
    /// stay in the WAL until it can.
    #[error("table {}: cannot make {} durable: {source}", Echo(.table), .path.display())]
    Sync {
        table: String,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// A storage location that is not a usable URL.
    #[error("invalid storage location {location:?}: {reason}")]
    InvalidStorage { location: String, reason: String },
    /// The server is shutting down.
    #[error("shutting down")]
    ShuttingDown,
}

impl Error {
    /// True if the request was wrong, false if weir or its storage failed.
    pub fn is_caller_fault(&self) -> bool {
        match self {
            Error::InvalidTableName { .. }
            | Error::TableNotFound { .. }
            | Error::TableExists { .. }
            | Error::UnsupportedType { .. } => true,
            Error::Rows { source, .. } => source.is_caller_fault(),
            Error::TableUnreadable { .. }
            | Error::Wal(_)
            | Error::MalformedEntry { .. }
            | Error::Delta { .. }
            | Error::Storage(_)
            | Error::Sync { .. }
            | Error::InvalidStorage { .. }
            | Error::ShuttingDown => false,
        }
    }

    pub(crate) fn delta(table: &str, source: deltalake::DeltaTableError) -> Self {
        Error::Delta {
            table: table.to_string(),
            source: Box::new(source),
        }
    }
}
