//! [`Wal`], the handle that ties the layers together.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tracing::{debug, info};

use crate::group::GroupBuffer;
use crate::record::MAX_PAYLOAD_LEN;
use crate::replay::Replay;
use crate::segment::{self, SegmentMeta};
use crate::storage::{FsStorage, Storage};
use crate::writer::Writer;
use crate::{Error, Result, WalConfig, WalPosition};

/// State shared by the [`Wal`] handle and its writer thread.
#[derive(Debug)]
pub(crate) struct Shared {
    pub group: GroupBuffer,
    /// Highest fsynced position.
    pub durable: AtomicU64,
    /// Segments on disk, oldest first; the last is active.
    pub segments: Mutex<Vec<SegmentMeta>>,
    pub appends: AtomicU64,
    pub fsyncs: AtomicU64,
    pub bytes_written: AtomicU64,
}

/// Counters of a [`Wal`] since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Records written and fsynced.
    pub appends: u64,
    /// Group commits: one write and one fsync each (the fsyncs of a new
    /// segment's header and of the directory are not counted).
    pub fsyncs: u64,
    /// Bytes of records (frames and payloads) written.
    pub bytes_written: u64,
    /// Segment files in the log now, the active one included.
    pub segments: u64,
}

/// The write-ahead log. `Send + Sync`; share it as `Arc<Wal>`.
///
/// Records get positions in the order they are enqueued and become durable
/// in that order: when a record's append resolves, every record before it is
/// durable too.
pub struct Wal {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Wal {
    /// Opens (creating if needed) the log in `dir`: checks every segment, one
    /// at a time, and repairs a torn tail per [`WalConfig::corruption`], so a
    /// corrupt log fails here with [`Error::Corrupt`]. Returns the log plus a
    /// [`Replay`] of every retained record in position order, from which the
    /// caller rebuilds its in-memory state. The replay reads the segments
    /// again, one at a time, and never holds more than one in memory;
    /// replayed payloads share one buffer per segment.
    pub fn open(dir: &Path, config: WalConfig) -> Result<(Wal, Replay)> {
        Wal::open_with_storage(dir, config, Arc::new(FsStorage))
    }

    /// [`Wal::open`] on another [`Storage`], e.g. one that injects faults.
    pub fn open_with_storage(
        dir: &Path,
        config: WalConfig,
        storage: Arc<dyn Storage>,
    ) -> Result<(Wal, Replay)> {
        let recovered = segment::recover(
            &*storage,
            dir,
            config.corruption,
            config.positions_after,
            config.direct_io,
        )?;
        let next = recovered.next;
        let replay = Replay::new(Arc::clone(&storage), recovered.checked, recovered.skipped);
        info!(
            dir = %dir.display(),
            records = replay.len(),
            segments = recovered.segments.len(),
            next = %next,
            "WAL opened"
        );
        let shared = Arc::new(Shared {
            group: GroupBuffer::new(next),
            durable: AtomicU64::new(next.get() - 1),
            segments: Mutex::new(recovered.segments),
            appends: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
        });
        let writer = Writer {
            storage: Arc::clone(&storage),
            dir: dir.to_path_buf(),
            config,
            shared: Arc::clone(&shared),
            active: recovered.active,
            next,
        }
        .spawn()
        .map_err(|e| Error::io("spawn the writer thread for", dir, e))?;
        let wal = Wal {
            dir: dir.to_path_buf(),
            storage,
            shared,
            writer: Mutex::new(Some(writer)),
        };
        Ok((wal, replay))
    }

    /// Assigns the next position synchronously (so callers that enqueue in
    /// order get increasing positions) and queues the record for the next
    /// group commit. Returns at once; the record is durable when the returned
    /// [`PendingAppend`] resolves. Dropping it does not cancel the write.
    pub fn enqueue(&self, payload: Bytes) -> Result<PendingAppend> {
        self.push(payload, None)
    }

    /// How many times a write failed since the log was opened. A writer
    /// whose records must have no hole (an ordered stream) reads it when it
    /// starts and enqueues with [`Wal::enqueue_in_epoch`].
    pub fn epoch(&self) -> u64 {
        self.shared.group.epoch()
    }

    /// [`Wal::enqueue`], refused with [`Error::Failed`] if a write failed
    /// since [`Wal::epoch`] was `epoch`: after a failed record, a later one
    /// of the same writer must not become durable (the failed one would be
    /// a hole before it), even once the log has repaired itself.
    pub fn enqueue_in_epoch(&self, payload: Bytes, epoch: u64) -> Result<PendingAppend> {
        self.push(payload, Some(epoch))
    }

    fn push(&self, payload: Bytes, epoch: Option<u64>) -> Result<PendingAppend> {
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(Error::PayloadTooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD_LEN,
            });
        }
        let (position, reply) = self.shared.group.push(payload, epoch)?;
        Ok(PendingAppend { position, reply })
    }

    /// Appends a record and waits until it is fsynced.
    pub async fn append(&self, payload: Bytes) -> Result<WalPosition> {
        self.enqueue(payload)?.await
    }

    /// Highest position known fsynced: every record at or below it is
    /// durable. After open, the position of the last retained record (or the position
    /// before the next one, if segment deletion left no records);
    /// [`WalPosition::ZERO`] for a new log.
    pub fn durable_position(&self) -> WalPosition {
        WalPosition(self.shared.durable.load(Ordering::Acquire))
    }

    /// Deletes sealed segments all of whose records are at or below
    /// `through`, oldest first. Never deletes the newest (active) segment, so
    /// positions keep increasing after a restart. Returns how many segments
    /// were deleted.
    pub fn truncate_through(&self, through: WalPosition) -> Result<usize> {
        let mut segments = self.shared.segments.lock();
        let mut deleted = 0;
        // A sealed segment ends right before the next one starts.
        while segments.len() > 1 && segments[1].first.get() - 1 <= through.get() {
            let path = &segments[0].path;
            self.storage
                .remove(path)
                .map_err(|e| Error::io("delete segment", path, e))?;
            debug!(segment = %path.display(), "WAL segment deleted");
            segments.remove(0);
            deleted += 1;
        }
        if deleted > 0 {
            self.storage
                .sync_dir(&self.dir)
                .map_err(|e| Error::io("fsync directory", &self.dir, e))?;
        }
        Ok(deleted)
    }

    /// Why the log refuses writes, if it does: an earlier write failed.
    pub fn failure(&self) -> Option<Error> {
        self.shared.group.poisoned().map(|p| p.error())
    }

    /// After a failed write: once the writer has cut the failed records off
    /// the segment, takes writes again, from the position after the last
    /// durable one. Returns whether it did (false while the repair is
    /// still under way, or if nothing failed).
    ///
    /// The records that failed got positions above
    /// [`durable_position`](Self::durable_position); the caller must first
    /// forget everything it holds at those positions, because they are
    /// given out again.
    pub fn resume(&self) -> bool {
        let next = self.durable_position().next();
        let resumed = self.shared.group.resume(next);
        if resumed {
            info!(next = %next, "WAL writes resumed");
        }
        resumed
    }

    /// Counters since open.
    pub fn stats(&self) -> WalStats {
        let shared = &self.shared;
        WalStats {
            appends: shared.appends.load(Ordering::Relaxed),
            fsyncs: shared.fsyncs.load(Ordering::Relaxed),
            bytes_written: shared.bytes_written.load(Ordering::Relaxed),
            segments: shared.segments.lock().len() as u64,
        }
    }

    /// Refuses new records, writes and fsyncs what is queued, and stops the
    /// writer thread. Idempotent. `Err(Error::Failed)` if the log is poisoned
    /// (queued records then failed). Also done on drop, ignoring errors.
    pub fn close(&self) -> Result<()> {
        self.shared.group.close();
        let writer = self.writer.lock().take();
        if let Some(writer) = writer
            && writer.join().is_err()
        {
            return Err(Error::Failed("the WAL writer thread panicked".into()));
        }
        match self.shared.group.poisoned() {
            Some(poison) => Err(poison.error()),
            None => Ok(()),
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl fmt::Debug for Wal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("durable_position", &self.durable_position())
            .finish_non_exhaustive()
    }
}

/// A record queued by [`Wal::enqueue`]. Resolves to its position once the
/// fsync covering it returned, or to the error that stopped it.
#[derive(Debug)]
pub struct PendingAppend {
    position: WalPosition,
    reply: oneshot::Receiver<Result<WalPosition>>,
}

impl PendingAppend {
    /// The position the record got (not yet durable).
    pub fn position(&self) -> WalPosition {
        self.position
    }
}

impl Future for PendingAppend {
    type Output = Result<WalPosition>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.reply).poll(cx).map(|outcome| {
            outcome.unwrap_or_else(|_| {
                Err(Error::Failed(
                    "the WAL writer stopped before writing this record".into(),
                ))
            })
        })
    }
}

#[cfg(test)]
mod tests;
