//! The crate's one error type.

use datafusion::error::DataFusionError;

/// A `Result` with [`Error`] as its default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong running SQL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A statement weir does not run (the message says what to do instead).
    #[error("{0}")]
    Unsupported(String),
    /// The caller may not run the statement (see [`crate::Access`]).
    #[error("permission denied: {0}")]
    Denied(String),
    /// Planning or running the statement failed.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    /// Creating, finding or dropping a table failed.
    #[error(transparent)]
    Table(#[from] weir_provider::Error),
}

impl Error {
    /// True if a memory limit stopped the query (see [`crate::memory`]).
    pub fn is_resources_exhausted(&self) -> bool {
        matches!(self, Error::DataFusion(e) if matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)))
    }

    /// True if the statement was wrong, false if weir failed running it.
    pub fn is_caller_fault(&self) -> bool {
        match self {
            Error::Unsupported(_) | Error::Denied(_) => true,
            Error::DataFusion(e) => match e.find_root() {
                DataFusionError::Plan(_)
                | DataFusionError::SQL(..)
                | DataFusionError::SchemaError(..)
                | DataFusionError::NotImplemented(_)
                // Raised by functions and operators on the values of the
                // query (bad arguments, overflow), not by I/O.
                | DataFusionError::Execution(_) => true,
                DataFusionError::ArrowError(e, _) => matches!(
                    e.as_ref(),
                    arrow::error::ArrowError::CastError(_)
                        | arrow::error::ArrowError::ParseError(_)
                        | arrow::error::ArrowError::DivideByZero
                        | arrow::error::ArrowError::ArithmeticOverflow(_)
                        | arrow::error::ArrowError::InvalidArgumentError(_)
                ),
                _ => false,
            },
            Error::Table(e) => e.is_caller_fault(),
        }
    }
}
