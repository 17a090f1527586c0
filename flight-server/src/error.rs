//! The server's error type, and the one place errors become gRPC statuses.

use std::path::{Path, PathBuf};

use tonic::{Code, Status};

/// A `Result` with [`Error`] as its default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong starting, running or serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad flag or config file.
    #[error("configuration: {0}")]
    Config(String),
    /// A file or directory could not be used.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the data directory.
    #[error(
        "data directory {dir} is in use by another weir process ({holder}); stop it or choose another --data-dir"
    )]
    Locked { dir: PathBuf, holder: String },
    /// The write-ahead log failed.
    #[error("write-ahead log: {0}")]
    Wal(#[from] weir_wal::Error),
    /// A table operation failed.
    #[error(transparent)]
    Table(#[from] weir_provider::Error),
    /// A SQL statement failed.
    #[error(transparent)]
    Sql(#[from] weir_sql::Error),
    /// The gRPC server failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A request was malformed (caller's fault).
    #[error("{0}")]
    BadRequest(String),
    /// A broken invariant inside weir.
    #[error("internal error: {0}")]
    Internal(String),
    /// A request's `offset_id` is not the next one of its stream.
    #[error("offset_id {got} is out of order: this stream expects {expected} next")]
    OutOfOrder { expected: i64, got: i64 },
    /// The server is shutting down.
    #[error("the server is shutting down; reconnect and resend what was not acknowledged")]
    ShuttingDown,
    /// One batch of a stream was rejected.
    #[error("batch offset_id {offset}: {source}")]
    Batch {
        offset: i64,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        Status::new(code_of(&e), e.to_string())
    }
}

fn code_of(e: &Error) -> Code {
    match e {
        Error::BadRequest(_) => Code::InvalidArgument,
        Error::OutOfOrder { .. } => Code::OutOfRange,
        Error::ShuttingDown => Code::Unavailable,
        Error::Batch { source, .. } => code_of(source),
        Error::Table(e) => table_code(e),
        Error::Sql(e) => sql_code(e),
        Error::Config(_)
        | Error::Io { .. }
        | Error::Locked { .. }
        | Error::Wal(_)
        | Error::Transport(_)
        | Error::Internal(_) => Code::Internal,
    }
}

fn table_code(e: &weir_provider::Error) -> Code {
    use weir_provider::Error as E;
    match e {
        E::TableNotFound { .. } => Code::NotFound,
        E::TableExists { .. } => Code::AlreadyExists,
        E::InvalidTableName { .. } | E::UnsupportedType { .. } | E::Rows { .. } => {
            Code::InvalidArgument
        }
        E::ShuttingDown => Code::Unavailable,
        E::Wal(_)
        | E::MalformedEntry { .. }
        | E::Delta { .. }
        | E::Storage(_)
        | E::InvalidStorage { .. } => Code::Internal,
    }
}

fn sql_code(e: &weir_sql::Error) -> Code {
    use weir_sql::Error as E;
    match e {
        E::Table(e) => table_code(e),
        E::Unsupported(_) => Code::InvalidArgument,
        E::DataFusion(_) if e.is_caller_fault() => Code::InvalidArgument,
        E::DataFusion(_) | E::Server(_) | E::Io(_) => Code::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let status = Status::from(Error::OutOfOrder {
            expected: 3,
            got: 5,
        });
        assert_eq!(status.code(), Code::OutOfRange);
        assert_eq!(
            status.message(),
            "offset_id 5 is out of order: this stream expects 3 next"
        );
        let missing = Error::Table(weir_provider::Error::TableNotFound { name: "t".into() });
        assert_eq!(Status::from(missing).code(), Code::NotFound);
        let exists = Error::Sql(weir_sql::Error::Table(weir_provider::Error::TableExists {
            name: "t".into(),
        }));
        assert_eq!(Status::from(exists).code(), Code::AlreadyExists);
        assert_eq!(Status::from(Error::ShuttingDown).code(), Code::Unavailable);
        assert_eq!(
            Status::from(Error::BadRequest("x".into())).code(),
            Code::InvalidArgument
        );
    }
}
