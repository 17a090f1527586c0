//! The writer thread: the only code that writes segment files.
//!
//! It loops: take a group from the [`GroupBuffer`](crate::group::GroupBuffer),
//! encode it, write it with one write, `sync_data`, advance the durable
//! position, answer every appender, and start a new segment when the active
//! one reached its target size. A dedicated OS thread rather than a tokio
//! task, because `write` and `fsync` block.
//!
//! On any I/O error it poisons the log, fails the group and everything
//! queued, and stops. It never retries an fsync.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use tracing::{debug, error};

use crate::group::Pending;
use crate::record;
use crate::segment::{self, ActiveSegment, SegmentMeta};
use crate::storage::Storage;
use crate::wal::Shared;
use crate::{Error, Result, WalConfig, WalPosition};

pub(crate) struct Writer {
    pub storage: Arc<dyn Storage>,
    pub dir: PathBuf,
    pub config: WalConfig,
    pub shared: Arc<Shared>,
    pub active: ActiveSegment,
    /// Position of the next record to write.
    pub next: WalPosition,
}

impl Writer {
    /// Starts the writer thread.
    pub fn spawn(self) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("weir-wal-writer".into())
            .spawn(move || self.run())
    }

    fn run(mut self) {
        let _guard = FailQueuedOnPanic(Arc::clone(&self.shared));
        let mut buf = Vec::new();
        while let Some(group) = self.shared.group.take_group(self.config.max_group_bytes) {
            if let Err(error) = self.write_group(&group, &mut buf) {
                self.poison(&error, group);
                return;
            }
            let durable = self.next.get() - 1;
            for pending in group {
                let position = pending.position;
                pending.answer(Ok(position));
            }
            if self.active.len >= self.config.segment_target_bytes
                && let Err(error) = self.rotate()
            {
                self.poison(&error, Vec::new());
                return;
            }
            debug!(durable, "WAL group committed");
        }
    }

    /// Writes and fsyncs one group, then advances the durable position.
    fn write_group(&mut self, group: &[Pending], buf: &mut Vec<u8>) -> Result<()> {
        buf.clear();
        for pending in group {
            debug_assert_eq!(pending.position, self.next);
            record::encode_record(pending.position, &pending.payload, buf);
            self.next = self.next.next();
        }
        let path = &self.active.path;
        self.active
            .file
            .write_all(buf)
            .map_err(|e| Error::io("write segment", path, e))?;
        self.active.len += buf.len() as u64;
        self.active
            .file
            .sync_data()
            .map_err(|e| Error::io("fsync segment", path, e))?;
        let shared = &self.shared;
        shared
            .appends
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        shared.fsyncs.fetch_add(1, Ordering::Relaxed);
        shared
            .bytes_written
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        shared.durable.store(self.next.get() - 1, Ordering::Release);
        Ok(())
    }

    /// Seals the active segment and starts a new one at the next position.
    fn rotate(&mut self) -> Result<()> {
        let first = self.next;
        let active = segment::create(&*self.storage, &self.dir, first)?;
        let path = active.path.clone();
        self.active = active;
        self.shared
            .segments
            .lock()
            .push(SegmentMeta { first, path });
        debug!(first = %first, "WAL segment rotated");
        Ok(())
    }

    fn poison(&self, error: &Error, group: Vec<Pending>) {
        let reason = error.to_string();
        error!(%reason, "WAL write failed; the log accepts no more writes until restarted");
        let rest = self.shared.group.poison(reason.clone());
        for pending in group.into_iter().chain(rest) {
            pending.answer(Err(Error::Failed(reason.clone())));
        }
    }
}

/// If the writer thread panics, nobody would ever answer the queued records
/// and later appends would wait forever: poison the log instead.
struct FailQueuedOnPanic(Arc<Shared>);

impl Drop for FailQueuedOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let reason = "the WAL writer thread panicked".to_string();
            for pending in self.0.group.poison(reason.clone()) {
                pending.answer(Err(Error::Failed(reason.clone())));
            }
        }
    }
}
