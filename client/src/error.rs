//! The SDK's one error type.

/// A `Result` with [`Error`] as its default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong producing to weir.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server could not be reached.
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
    /// The server rejected the stream or a batch; the status says why
    /// (INVALID_ARGUMENT for rows that do not fit, NOT_FOUND for an unknown
    /// table, OUT_OF_RANGE for a numbering gap, UNAVAILABLE on shutdown).
    #[error("server: {0}")]
    Server(#[from] tonic::Status),
    /// The server sent something this SDK does not understand (an ack,
    /// a catalog answer).
    #[error("malformed answer from the server: {0}")]
    Protocol(String),
    /// The stream ended before every batch was acknowledged.
    #[error("the stream closed with batches {first}..={last} unacknowledged")]
    Unacknowledged { first: i64, last: i64 },
    /// On a reconnect, the server had more of a named stream durable than
    /// this stream ever sent: another producer writes under the same name.
    #[error(
        "stream {name:?}: the server has offset {durable} durable, but this stream sent only up \
         to {sent}; another producer uses the same stream name"
    )]
    NameInUse {
        name: String,
        durable: i64,
        sent: i64,
    },
    /// A batch could not be encoded.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}
