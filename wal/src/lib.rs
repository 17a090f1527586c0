//! weir's write-ahead log: every record a producer sends is in this log, and
//! fsynced, before weir acknowledges it.
//!
//! The log is a directory of segment files holding checksummed records. A
//! record is an opaque payload (this crate knows nothing of Arrow or Delta) at
//! a [`WalPosition`]: 1 for the first record ever written, then strictly
//! increasing and never reused, across restarts and segment deletion.
//!
//! # Parts
//!
//! Three layers, as in InfluxDB 3's `influxdb3_wal`:
//!
//! - `record`: the on-disk format, pure and sans-IO: segment header, record
//!   framing, CRC-32C. Encodes into a `Vec<u8>`, decodes from a `&[u8]`, and
//!   tells a clean end, a torn tail and corruption apart.
//! - `group`: the synchronous group-commit buffer. Assigns positions and
//!   queues records with the channels their replies go to.
//! - `writer`: a dedicated OS thread doing the file I/O: one write and one
//!   fsync per group, then it answers the group; it rotates segments and
//!   poisons the log on an I/O error.
//!
//! Around them: `segment` names segment files and checks the log on open,
//! [`Replay`] reads the records back one segment at a time, [`Storage`] is
//! the file-system access (a trait, so tests inject faults and crashes), and
//! [`Wal`] is the handle.
//!
//! Names say when something is durable: [`Wal::append`] waits for the fsync;
//! [`Wal::enqueue`] returns at once with a [`PendingAppend`] that resolves
//! after the fsync. `docs/WAL.md` describes the byte layout, recovery,
//! truncation and the [`CorruptionPolicy`].
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use weir_wal::{Wal, WalConfig, WalPosition};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let runtime = tokio::runtime::Builder::new_current_thread().build()?;
//!
//! let (wal, replayed) = Wal::open(dir.path(), WalConfig::default())?;
//! assert!(replayed.is_empty());
//! let first = runtime.block_on(wal.append(Bytes::from_static(b"hello")))?;
//! assert_eq!(first, WalPosition(1));
//! // Durable once `append` returned.
//! assert!(wal.durable_position() >= first);
//!
//! // enqueue returns at once; the position is already known.
//! let pending = wal.enqueue(Bytes::from_static(b"world"))?;
//! assert_eq!(pending.position(), WalPosition(2));
//! runtime.block_on(pending)?;
//! wal.close()?;
//!
//! // Reopening checks the log, replays every record, one segment in memory
//! // at a time, and continues the positions.
//! let (wal, replayed) = Wal::open(dir.path(), WalConfig::default())?;
//! assert_eq!(replayed.len(), 2);
//! let mut payloads = Vec::new();
//! for record in replayed {
//!     payloads.push(record?.payload);
//! }
//! assert_eq!(payloads, ["hello", "world"]);
//! assert_eq!(runtime.block_on(wal.append(Bytes::from_static(b"!")))?, WalPosition(3));
//! # Ok(())
//! # }
//! ```

mod config;
pub mod crash;
mod error;
mod group;
mod record;
mod replay;
mod segment;
mod storage;
mod wal;
mod writer;

#[cfg(test)]
mod mem_storage;
#[cfg(test)]
mod model_tests;

pub use bytes::Bytes;
pub use config::{CorruptionPolicy, WalConfig};
pub use error::{Error, Result};
pub use record::{MAX_PAYLOAD_LEN, WalPosition, WalRecord};
pub use replay::{Replay, Skipped};
pub use storage::{DIRECT_BLOCK, FsStorage, Storage, StorageFile, aligned_start};
pub use wal::{PendingAppend, Wal, WalStats};
