//! [`Replay`]: the records of the log as it was at open, read back one
//! segment at a time.
//!
//! [`Wal::open`](crate::Wal::open) checks every segment, reading one at a time
//! and keeping none, and hands the list of checked segments to a `Replay`.
//! Iterating reads them again, oldest first: a segment's file is read whole
//! when its first record is due, its records are decoded from that buffer one
//! by one, and the buffer is dropped before the next segment is read. So a
//! replay holds at most one segment (at most `segment_target_bytes` plus one
//! group), plus whatever records the caller keeps: a record's payload shares
//! its segment's buffer.

use std::collections::VecDeque;
use std::fmt;
use std::iter::FusedIterator;
use std::sync::Arc;

use bytes::Bytes;

use crate::record;
use crate::segment::{self, SegmentMeta};
use crate::storage::Storage;
use crate::{Error, Result, WalPosition, WalRecord};

/// A segment as [`Wal::open`](crate::Wal::open) checked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckedSegment {
    pub meta: SegmentMeta,
    /// Position after its last record.
    pub end: WalPosition,
    /// Bytes checked, header included. The newest segment may have grown
    /// since (the writer appends to it); replay stops here.
    pub len: u64,
    /// Corrupt regions skipped (see [`CorruptionPolicy::SkipCorrupt`]).
    ///
    /// [`CorruptionPolicy::SkipCorrupt`]: crate::CorruptionPolicy::SkipCorrupt
    pub skips: Vec<Skip>,
}

/// A corrupt region of a segment that replay jumps over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Skip {
    /// Where the bad bytes start.
    pub at: usize,
    /// Where the next intact group starts.
    pub resume: usize,
    /// That group's first position.
    pub next: WalPosition,
    /// Positions lost in between.
    pub lost: u64,
}

/// What [`Wal::open`](crate::Wal::open) skipped under
/// [`CorruptionPolicy::SkipCorrupt`](crate::CorruptionPolicy::SkipCorrupt).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Corrupt regions and gaps between segments skipped.
    pub regions: u64,
    /// Bytes skipped.
    pub bytes: u64,
    /// Record positions lost.
    pub positions: u64,
}

impl CheckedSegment {
    fn records(&self) -> u64 {
        let lost: u64 = self.skips.iter().map(|skip| skip.lost).sum();
        self.end.get() - self.meta.first.get() - lost
    }
}

/// The records retained in the log when it was opened, in position order, as
/// returned by [`Wal::open`](crate::Wal::open).
///
/// An iterator that reads one segment file at a time: the file is read when
/// its first record is due and its buffer is dropped before the next segment
/// is read, so a replay holds at most one segment in memory. Records of one
/// segment share that segment's buffer, so a record the caller keeps keeps
/// its segment's buffer alive.
///
/// `open` has already checked every segment, so a corrupt log fails `open`
/// before anything is replayed. If a segment changed on disk or cannot be read
/// between `open` and its turn here (e.g. [`Wal::truncate_through`] deleted
/// it), the iterator yields that error ([`Error::Io`] or [`Error::Corrupt`])
/// and then ends. Truncate only after the replay is done.
///
/// Records appended after `open` are not part of the replay.
///
/// [`Wal::truncate_through`]: crate::Wal::truncate_through
pub struct Replay {
    storage: Arc<dyn Storage>,
    /// Segments not yet read, oldest first. Only segments with records.
    pending: VecDeque<CheckedSegment>,
    /// The segment whose records are being yielded.
    current: Option<Current>,
    /// Records not yet yielded.
    remaining: u64,
    skipped: Skipped,
}

/// A segment in memory, with where the next record starts.
struct Current {
    segment: CheckedSegment,
    /// The segment's bytes, cut to [`CheckedSegment::len`].
    bytes: Bytes,
    offset: usize,
    next: WalPosition,
    /// Whether its records are in group frames (see [`crate::record`]).
    grouped: bool,
    /// Records of the current group not yet yielded.
    group_left: u32,
    /// The segment's salt, which seeds its group checksums.
    salt: u64,
}

impl Replay {
    /// A replay of `checked`, oldest first, reading through `storage`.
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        checked: Vec<CheckedSegment>,
        skipped: Skipped,
    ) -> Replay {
        let pending: VecDeque<_> = checked
            .into_iter()
            .filter(|segment| segment.records() > 0)
            .collect();
        let remaining = pending.iter().map(CheckedSegment::records).sum();
        Replay {
            storage,
            pending,
            current: None,
            remaining,
            skipped,
        }
    }

    /// What open skipped as corrupt; all zero unless the policy is
    /// [`CorruptionPolicy::SkipCorrupt`](crate::CorruptionPolicy::SkipCorrupt).
    pub fn skipped(&self) -> Skipped {
        self.skipped
    }

    /// Records not yet yielded: before iterating, every record retained in
    /// the log at open (counted when `open` checked the segments). Saturates
    /// at `usize::MAX`.
    pub fn len(&self) -> usize {
        usize::try_from(self.remaining).unwrap_or(usize::MAX)
    }

    /// Whether no records are left: before iterating, whether the log held
    /// no records at open.
    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }

    /// Reads every remaining record into one `Vec`, for tests and small logs:
    /// this holds the whole log in memory. The first error ends it.
    pub fn collect_all(self) -> Result<Vec<WalRecord>> {
        let mut records = Vec::with_capacity(self.len());
        for record in self {
            records.push(record?);
        }
        Ok(records)
    }

    /// Reads `segment` and checks its header; the records are decoded as
    /// they are yielded.
    fn load(&self, segment: CheckedSegment) -> Result<Current> {
        let path = &segment.meta.path;
        let mut bytes = Bytes::from(
            self.storage
                .read(path)
                .map_err(|e| Error::io("read segment for replay", path, e))?,
        );
        let len = usize::try_from(segment.len).unwrap_or(usize::MAX);
        if bytes.len() < len {
            return Err(changed(
                &segment,
                bytes.len() as u64,
                format!(
                    "the file has {} bytes, {} were checked at open",
                    bytes.len(),
                    segment.len
                ),
            ));
        }
        bytes.truncate(len);
        match record::decode_segment_header(&bytes) {
            Ok(first) if first == segment.meta.first => {}
            Ok(first) => {
                let reason = format!("the header says first position {first}");
                return Err(changed(&segment, 0, reason));
            }
            Err(defect) => return Err(changed(&segment, 0, defect.to_string())),
        }
        Ok(Current {
            next: segment.meta.first,
            grouped: record::segment_version(&bytes) != record::UNGROUPED_VERSION,
            salt: record::segment_salt(&bytes),
            group_left: 0,
            offset: record::data_start(&bytes),
            segment,
            bytes,
        })
    }

    /// Ends the replay: nothing more is yielded.
    fn stop(&mut self) {
        self.pending.clear();
        self.current = None;
        self.remaining = 0;
    }
}

impl Current {
    /// The next record of this segment; `None` once all its checked records
    /// were yielded.
    fn next_record(&mut self) -> Option<Result<WalRecord>> {
        if self.next == self.segment.end {
            return None;
        }
        if self.grouped && self.group_left == 0 {
            if let Some(skip) = self.segment.skips.first()
                && skip.at == self.offset
            {
                self.offset = skip.resume;
                self.next = skip.next;
                self.segment.skips.remove(0);
            }
            let at = self.offset as u64;
            match record::decode_group(&self.bytes, self.offset, self.next, self.salt) {
                Ok(Some(group)) if group.count > 0 => {
                    self.offset = group.records;
                    self.group_left = group.count;
                }
                Ok(_) => {
                    let reason = format!("no group holds position {}", self.next);
                    return Some(Err(changed(&self.segment, at, reason)));
                }
                Err(defect) => return Some(Err(changed(&self.segment, at, defect.to_string()))),
            }
        }
        let at = self.offset as u64;
        let decoded = match record::decode_record(&self.bytes, self.offset, self.next) {
            Ok(Some(decoded)) => decoded,
            Ok(None) => {
                let reason = format!("it ends before position {}", self.next);
                return Some(Err(changed(&self.segment, at, reason)));
            }
            Err(defect) => return Some(Err(changed(&self.segment, at, defect.to_string()))),
        };
        // The last record must end where the checked bytes end. Checked with
        // the last record, so that an error never adds to the records.
        if decoded.position.next() == self.segment.end && decoded.end != self.bytes.len() {
            let reason = format!(
                "its last record ends at byte {}, {} bytes were checked at open",
                decoded.end,
                self.bytes.len()
            );
            return Some(Err(changed(&self.segment, at, reason)));
        }
        self.offset = decoded.end;
        self.next = self.next.next();
        self.group_left = self.group_left.saturating_sub(1);
        Some(Ok(WalRecord {
            position: decoded.position,
            payload: self.bytes.slice(decoded.payload),
        }))
    }
}

impl Iterator for Replay {
    type Item = Result<WalRecord>;

    fn next(&mut self) -> Option<Result<WalRecord>> {
        loop {
            if let Some(current) = &mut self.current {
                match current.next_record() {
                    Some(Ok(record)) => {
                        self.remaining -= 1;
                        return Some(Ok(record));
                    }
                    Some(Err(error)) => {
                        self.stop();
                        return Some(Err(error));
                    }
                    // Drop this segment's buffer before reading the next.
                    None => self.current = None,
                }
            }
            let segment = self.pending.pop_front()?;
            match self.load(segment) {
                Ok(current) => self.current = Some(current),
                Err(error) => {
                    self.stop();
                    return Some(Err(error));
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // An error takes the place of at least one record, so never more
        // items than records; and at least one item while records remain.
        let upper = usize::try_from(self.remaining).ok();
        (usize::from(self.remaining > 0), upper)
    }
}

impl FusedIterator for Replay {}

impl fmt::Debug for Replay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let next = self
            .current
            .as_ref()
            .map(|current| current.next)
            .or_else(|| self.pending.front().map(|segment| segment.meta.first));
        f.debug_struct("Replay")
            .field("remaining", &self.remaining)
            .field("next", &next)
            .field(
                "segments_left",
                &(self.pending.len() + usize::from(self.current.is_some())),
            )
            .finish_non_exhaustive()
    }
}

/// [`Error::Corrupt`] for a segment that no longer is what `open` checked.
fn changed(segment: &CheckedSegment, offset: u64, reason: String) -> Error {
    segment::corrupt(
        &segment.meta,
        offset,
        format!("changed since the WAL was opened: {reason}"),
    )
}

#[cfg(test)]
mod tests;
