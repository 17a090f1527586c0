//! Configuration of the log.

use crate::WalPosition;

/// What [`Wal::open`](crate::Wal::open) does with a bad header or record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CorruptionPolicy {
    /// A torn or corrupt record at the tail of the newest segment (no intact
    /// record follows it) is what a crash during a write leaves: it is
    /// truncated away, with a `warn!` log. The same goes for a short or
    /// all-zero header of the newest segment, which is rewritten. Corruption
    /// anywhere else (in a sealed segment, or followed by intact records) is
    /// [`Error::Corrupt`](crate::Error::Corrupt).
    #[default]
    TruncateTornTail,
    /// Any bad header or record is [`Error::Corrupt`](crate::Error::Corrupt);
    /// nothing is repaired.
    Fail,
    /// As [`CorruptionPolicy::TruncateTornTail`], and corruption elsewhere
    /// is skipped: from the bad bytes to the next intact group (or the end
    /// of a sealed segment), and a gap between segments. The records there
    /// are lost; each skip is logged with its segment, offset and size, and
    /// counted in [`Replay::skipped`](crate::Replay::skipped). Format 1
    /// segments (no group frames) are not skipped in: their corruption is
    /// still an error.
    SkipCorrupt,
}

/// Limits and policies of a [`Wal`](crate::Wal).
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// After a group commit leaves the active segment at or above this size,
    /// the writer starts a new segment. A segment can exceed it by up to one
    /// group. Default 64 MiB.
    pub segment_target_bytes: u64,
    /// Most payload bytes written per fsync group (a single larger record
    /// still forms a group of its own). Default 32 MiB; at most 1 GiB.
    pub max_group_bytes: u64,
    /// What to do with bad data found on open.
    pub corruption: CorruptionPolicy,
    /// Write segments with direct I/O (`O_DIRECT`, Linux) where the file
    /// system has it: no copy into the page cache, and fsyncs with no dirty
    /// pages to write back. Default true. Where it is refused the writer
    /// goes through the page cache on its own.
    pub direct_io: bool,
    /// The highest position the log's readers have already consumed for
    /// good (for weir, the highest `txn` watermark of any table). A new log
    /// starts right after it, so that no position is used twice; an
    /// existing log that ends below it is refused ([`Error::Behind`]).
    ///
    /// [`Error::Behind`]: crate::Error::Behind
    pub positions_after: WalPosition,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_target_bytes: 64 << 20,
            max_group_bytes: 32 << 20,
            corruption: CorruptionPolicy::default(),
            direct_io: true,
            positions_after: WalPosition::ZERO,
        }
    }
}

impl WalConfig {
    /// Small limits so that tests rotate segments after a few records:
    /// 4 KiB segments, 16 KiB groups.
    pub fn for_tests() -> Self {
        WalConfig {
            segment_target_bytes: 4 << 10,
            max_group_bytes: 16 << 10,
            corruption: CorruptionPolicy::default(),
            direct_io: true,
            positions_after: WalPosition::ZERO,
        }
    }
}
