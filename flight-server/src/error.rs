//! The server's error type, and the one place errors become gRPC statuses.
//!
//! The rules, in [`code_of`]: a status that came from upstream (the
//! client's cancel, a transport failure) keeps its code; a configured limit
//! is `RESOURCE_EXHAUSTED`; anything the caller's data or SQL caused is
//! `INVALID_ARGUMENT` (or `NOT_FOUND`, `OUT_OF_RANGE`, ...); what is left is
//! `INTERNAL` and logged with its cause. Every message is cut to
//! [`MAX_STATUS_MESSAGE_BYTES`] so that it fits any client's trailer limit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use weir_codec::EchoText;

/// The most bytes of an error message sent in a status (gRPC clients
/// commonly refuse trailers over 8 or 16 KiB).
pub const MAX_STATUS_MESSAGE_BYTES: usize = 2048;

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
    /// Input that the codec refused: malformed, not fitting the table, or
    /// over a limit.
    #[error(transparent)]
    Input(#[from] weir_codec::Error),
    /// A status from the transport or the client (a cancel, a broken
    /// connection), passed on with its code.
    #[error("{}", EchoText(.0.message()))]
    Upstream(Status),
    /// A gRPC message larger than `limits.max_request_bytes`.
    #[error(
        "too large: {}; the limit is limits.max_request_bytes (split the request)",
        EchoText(.0)
    )]
    MessageTooLarge(String),
    /// More ingest streams than `limits.max_streams` at once.
    #[error(
        "too many open streams: {open} are open, the limit is {limit} (limits.max_streams); \
         close idle streams or retry later"
    )]
    TooManyStreams { open: usize, limit: usize },
    /// A broken invariant inside weir.
    #[error("internal error: {0}")]
    Internal(String),
    /// A negative `offset_id`, or a stream at the last offset there is.
    #[error("offset_id {0} is out of range: offsets count 0, 1, 2, ... up to 2^63 - 1")]
    BadOffset(i64),
    /// A request's `offset_id` is not the next one of its stream.
    #[error("offset_id {got} is out of order: this stream expects {expected} next")]
    OutOfOrder { expected: i64, got: i64 },
    /// The server is shutting down.
    #[error("the server is shutting down; reconnect and resend what was not acknowledged")]
    ShuttingDown,
    /// A newer connection opened the same named stream.
    #[error(
        "stream {} was taken over by a newer connection under the same name",
        EchoText(.stream)
    )]
    TakenOver { stream: String },
    /// The connection a new one takes over did not finish in time.
    #[error(
        "stream {} is still held by an earlier connection that is finishing; retry",
        EchoText(.stream)
    )]
    StreamBusy { stream: String },
    /// No valid credentials.
    #[error("unauthenticated: {}", EchoText(.0))]
    Unauthenticated(String),
    /// Valid credentials that do not cover the request.
    #[error("permission denied: {}", EchoText(.0))]
    PermissionDenied(String),
    /// A persistent stream id that names no stream weir can resume.
    #[error("no stream {}: {reason}", EchoText(.stream))]
    StreamNotFound {
        stream: String,
        reason: &'static str,
    },
    /// A query was cancelled (`CancelFlightInfo`).
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// A query ran past `limits.query_timeout_ms`.
    #[error(
        "the query ran past {0} ms (limits.query_timeout_ms) and was stopped; narrow it, or \
         raise the limit"
    )]
    QueryTimeout(u64),
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

    /// An error read from the request stream: tonic's own size limit
    /// becomes [`Error::MessageTooLarge`], any other status is passed on.
    pub(crate) fn from_input(status: Status) -> Self {
        if status.code() == Code::OutOfRange
            && status
                .message()
                .starts_with("Error, decoded message length too large")
        {
            let detail = status
                .message()
                .trim_start_matches("Error, decoded message length too large: ");
            return Error::MessageTooLarge(format!("a message of {detail}"));
        }
        // tonic reports a message that does not decode (bad protobuf, a
        // stream cut inside a message) as INTERNAL: the client's fault.
        if status.code() == Code::Internal {
            return Error::BadRequest(format!("malformed request message: {}", status.message()));
        }
        Error::Upstream(status)
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = code_of(&e);
        if code == Code::Internal {
            tracing::error!(error = %e, "internal error");
        }
        if let Error::Upstream(status) = e {
            return status;
        }
        let message = cut(e.to_string());
        match schema_cause(&e) {
            // The detail the Zerobus SDKs turn into a typed schema error.
            Some(cause) => Status::with_error_details(
                code,
                message,
                ErrorDetails::with_error_info(
                    SCHEMA_VALIDATION_REASON,
                    SCHEMA_VALIDATION_DOMAIN,
                    HashMap::from([("causes".to_string(), cause.to_string())]),
                ),
            ),
            None => Status::new(code, message),
        }
    }
}

/// The `google.rpc.ErrorInfo` of a schema mismatch, as the Zerobus
/// protocol defines it.
pub const SCHEMA_VALIDATION_REASON: &str = "SCHEMA_VALIDATION_FAILED";
pub const SCHEMA_VALIDATION_DOMAIN: &str = "zerobus.databricks.com";

/// How the input does not fit the table's schema, if that is the error.
fn schema_cause(e: &Error) -> Option<&'static str> {
    match e {
        Error::Input(e) => e.schema_cause(),
        Error::Table(weir_provider::Error::Rows { source, .. }) => source.schema_cause(),
        Error::Batch { source, .. } => schema_cause(source),
        _ => None,
    }
}

/// `message`, cut to [`MAX_STATUS_MESSAGE_BYTES`] at a character boundary.
fn cut(message: String) -> String {
    if message.len() <= MAX_STATUS_MESSAGE_BYTES {
        return message;
    }
    let shown = weir_codec::prefix(&message, MAX_STATUS_MESSAGE_BYTES - 16);
    format!("{shown}... (cut)")
}

fn code_of(e: &Error) -> Code {
    match e {
        Error::BadRequest(_) => Code::InvalidArgument,
        Error::Input(e) => input_code(e),
        Error::Upstream(status) => status.code(),
        Error::MessageTooLarge(_) | Error::TooManyStreams { .. } => Code::ResourceExhausted,
        Error::OutOfOrder { .. } | Error::BadOffset(_) => Code::OutOfRange,
        Error::ShuttingDown | Error::StreamBusy { .. } => Code::Unavailable,
        Error::TakenOver { .. } => Code::Aborted,
        Error::StreamNotFound { .. } => Code::NotFound,
        Error::Unauthenticated(_) => Code::Unauthenticated,
        Error::PermissionDenied(_) => Code::PermissionDenied,
        Error::Cancelled(_) => Code::Cancelled,
        Error::QueryTimeout(_) => Code::DeadlineExceeded,
        Error::Batch { source, .. } => code_of(source),
        Error::Table(e) => table_code(e),
        Error::Sql(e) => sql_code(e),
        Error::Wal(e) => wal_code(e),
        Error::Config(_)
        | Error::Io { .. }
        | Error::Locked { .. }
        | Error::Transport(_)
        | Error::Internal(_) => Code::Internal,
    }
}

fn table_code(e: &weir_provider::Error) -> Code {
    use weir_provider::Error as E;
    match e {
        E::TableNotFound { .. } => Code::NotFound,
        E::TableExists { .. } => Code::AlreadyExists,
        E::InvalidTableName { .. } | E::UnsupportedType { .. } => Code::InvalidArgument,
        E::Rows { source, .. } => input_code(source),
        E::ShuttingDown => Code::Unavailable,
        E::Wal(e) => wal_code(e),
        E::TableUnreadable { .. }
        | E::MalformedEntry { .. }
        | E::Delta { .. }
        | E::Storage(_)
        | E::Sync { .. }
        | E::InvalidStorage { .. } => Code::Internal,
    }
}

/// A full disk is `RESOURCE_EXHAUSTED`; a failed write `UNAVAILABLE` (the
/// WAL repairs itself: resend); damage on disk `INTERNAL`.
fn wal_code(e: &weir_wal::Error) -> Code {
    use weir_wal::Error as E;
    match e {
        E::Full(_) | E::PayloadTooLarge { .. } => Code::ResourceExhausted,
        E::Failed(_) | E::Io { .. } | E::Closed => Code::Unavailable,
        E::Corrupt { .. } | E::Behind { .. } => Code::Internal,
    }
}

fn input_code(e: &weir_codec::Error) -> Code {
    if e.is_limit() {
        Code::ResourceExhausted
    } else if e.is_caller_fault() {
        Code::InvalidArgument
    } else {
        Code::Internal
    }
}

fn sql_code(e: &weir_sql::Error) -> Code {
    use weir_sql::Error as E;
    match e {
        E::Table(e) => table_code(e),
        E::Unsupported(_) => Code::InvalidArgument,
        E::Denied(_) => Code::PermissionDenied,
        E::DataFusion(_) if e.is_resources_exhausted() => Code::ResourceExhausted,
        E::DataFusion(_) if e.is_caller_fault() => Code::InvalidArgument,
        E::DataFusion(_) => Code::Internal,
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
        let limit = weir_codec::Limits::default()
            .check_rows(u64::MAX)
            .unwrap_err();
        assert_eq!(
            Status::from(Error::Input(limit)).code(),
            Code::ResourceExhausted
        );
        assert_eq!(
            Status::from(Error::TooManyStreams { open: 3, limit: 3 }).code(),
            Code::ResourceExhausted
        );
    }

    #[test]
    fn upstream_statuses_keep_their_code() {
        let cancelled = Error::from_input(Status::cancelled("the client went away"));
        assert_eq!(Status::from(cancelled).code(), Code::Cancelled);
        let tonic_limit = Status::out_of_range(
            "Error, decoded message length too large: found 9000 bytes, the limit is: 100 bytes",
        );
        let status = Status::from(Error::from_input(tonic_limit));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains("found 9000 bytes"), "{status:?}");
        assert!(
            status.message().contains("limits.max_request_bytes"),
            "{status:?}"
        );
    }

    #[test]
    fn messages_fit_any_trailer_limit() {
        let name = "x".repeat(100_000);
        let status = Status::from(Error::Table(weir_provider::Error::TableNotFound { name }));
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().len() < 400, "{}", status.message().len());
        let status = Status::from(Error::BadRequest("y".repeat(100_000)));
        assert!(status.message().len() <= MAX_STATUS_MESSAGE_BYTES);
    }
}
