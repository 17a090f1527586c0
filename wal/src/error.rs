//! The crate's error type.
//!
//! Whose fault each variant is:
//!
//! - [`Error::PayloadTooLarge`] and [`Error::Closed`] are the caller's: a
//!   payload over the limit, or a write after [`Wal::close`](crate::Wal::close).
//! - [`Error::Io`] and [`Error::Failed`] are the environment's: the disk or
//!   file system failed. After a failed write or fsync the log is poisoned and
//!   only a restart (which recovers from what reached the disk) brings it back;
//!   fsync is never retried, because after a failed fsync the kernel may have
//!   dropped the dirty pages and a second fsync could report success falsely.
//! - [`Error::Corrupt`] means the data on disk is damaged beyond what the
//!   [`CorruptionPolicy`](crate::CorruptionPolicy) repairs.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong in the WAL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system call failed.
    #[error("WAL I/O failed: {op} {}: {source}", .path.display())]
    Io {
        /// What was being done, e.g. "fsync segment".
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The error of the operating system.
        #[source]
        source: io::Error,
    },
    /// A segment holds bytes that are not a valid log.
    #[error(
        "WAL segment {} is corrupt at byte {offset}: {reason}. The log does not open on \
         damage it cannot tell from a torn last write. Either restore the segment from a \
         backup, or set `corruption = \"skip\"` in the [wal] section of the config to skip the \
         damaged records and start (they are lost; each skip is logged and counted), or move \
         the whole WAL directory aside to start a new log (every record not yet committed to \
         the tables is then lost)",
        .segment.display()
    )]
    Corrupt {
        /// The damaged segment file.
        segment: PathBuf,
        /// Byte offset of the first bad header or record in the file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The log ends below a position its readers already consumed: it is
    /// older than they are (restored from a backup, or another node's).
    #[error(
        "the WAL in {} ends at position {ends}, but positions up to {consumed} are already \
         committed to the tables: the WAL is older than the tables (restored from a backup, or \
         another node's). Restore the right WAL, or move this one aside to start a new log after \
         position {consumed} (records only it holds are then lost)",
        .dir.display()
    )]
    Behind {
        /// The log's directory.
        dir: PathBuf,
        /// The position of its last record.
        ends: u64,
        /// What [`WalConfig::positions_after`](crate::WalConfig::positions_after) said.
        consumed: u64,
    },
    /// The log was closed; it accepts no more records.
    #[error("the WAL is closed")]
    Closed,
    /// An earlier write or fsync failed: the log is poisoned and every later
    /// enqueue fails. Records whose append failed may or may not be on disk
    /// after a restart.
    #[error("the WAL failed earlier and accepts no more writes: {0}")]
    Failed(String),
    /// The disk is full: a write failed for lack of space. Like
    /// [`Error::Failed`], the log refuses writes until it has repaired
    /// itself (see [`Wal::resume`](crate::Wal::resume)).
    #[error("the WAL's disk is full; writes resume once there is room: {0}")]
    Full(String),
    /// The payload is larger than [`MAX_PAYLOAD_LEN`](crate::MAX_PAYLOAD_LEN).
    #[error("WAL payload of {len} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// The payload's length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
