//! The writer thread: the only code that writes segment files.
//!
//! It loops: take a group from the [`GroupBuffer`](crate::group::GroupBuffer),
//! encode it, write it with one write, `sync_data`, advance the durable
//! position, answer every appender, and start a new segment when the active
//! one reached its target size. It writes with direct I/O where it can
//! ([`WalConfig::direct_io`]): the group is encoded straight into a
//! block-aligned buffer, behind the segment's last partial block. A dedicated OS thread rather than a tokio
//! task, because `write` and `fsync` block.
//!
//! On an I/O error it poisons the log and fails the group and everything
//! queued (with [`Error::Full`] when the disk is full). Then it repairs:
//! it cuts the segment back to its last durable length (retrying with a
//! backoff until that works) and waits for [`Wal::resume`], which the
//! log's user calls once it has dropped what was not durable; writing then
//! goes on from the position after the last durable record. It never
//! retries an fsync: after a failed one it starts over from the durable
//! length.
//!
//! [`Wal::resume`]: crate::Wal::resume

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{debug, error, info, warn};

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
        // A group frame's length is a u32: at most 1 GiB of payload plus
        // one record of at most 1 GiB keeps it well below 4 GiB.
        let max_group_bytes = self.config.max_group_bytes.min(1 << 30);
        while let Some(group) = self.shared.group.take_group(max_group_bytes) {
            if let Err(error) = self.write_group(&group, &mut buf) {
                self.poison(&error, group);
                if !self.repair() {
                    return;
                }
                continue;
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
                if !self.repair() {
                    return;
                }
                continue;
            }
            debug!(durable, "WAL group committed");
        }
    }

    /// Cuts the active segment back to its durable length and fsyncs it,
    /// retrying with a backoff, then lets [`Wal::resume`](crate::Wal::resume)
    /// restart writing. False if the log was closed meanwhile.
    fn repair(&mut self) -> bool {
        let mut backoff = Duration::from_millis(50);
        loop {
            if self.shared.group.is_closed() {
                return false;
            }
            match self.cut_back() {
                Ok(()) => break,
                Err(e) => {
                    warn!(error = %e, "cannot repair the WAL segment yet; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        self.next = WalPosition(self.shared.durable.load(Ordering::Acquire) + 1);
        self.shared.group.mark_repaired();
        info!(next = %self.next, "WAL repaired; writes resume once the tables dropped what was not durable");
        true
    }

    /// Removes what a failed write or rotation left: bytes past the
    /// segment's durable length, and a half-made next segment.
    fn cut_back(&mut self) -> Result<()> {
        let path = self.active.path.clone();
        let mut file = self
            .storage
            .open(&path, self.config.direct_io)
            .map_err(|e| Error::io("open segment", &path, e))?;
        file.set_len(self.active.len)
            .map_err(|e| Error::io("truncate segment", &path, e))?;
        file.sync_data()
            .map_err(|e| Error::io("fsync segment", &path, e))?;
        self.active.file = file;
        let next = WalPosition(self.shared.durable.load(Ordering::Acquire) + 1);
        let stray = self.dir.join(segment::file_name(next));
        if stray != path {
            match self.storage.remove(&stray) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("delete segment", &stray, e)),
            }
        }
        Ok(())
    }

    /// Writes and fsyncs one group, then advances the durable position.
    fn write_group(&mut self, group: &[Pending], buf: &mut Vec<u8>) -> Result<()> {
        let first = self.next;
        let bytes = group
            .iter()
            .map(|pending| record::RECORD_HEADER_LEN + pending.payload.len())
            .sum::<usize>();
        let staged = self.active.stage(buf, record::GROUP_HEADER_LEN + bytes);
        let start = record::begin_group(buf);
        for pending in group {
            debug_assert_eq!(pending.position, self.next);
            record::encode_record(pending.position, &pending.payload, buf);
            self.next = self.next.next();
        }
        let count = u32::try_from(group.len()).unwrap_or(u32::MAX);
        record::finish_group(buf, start, first, count, self.active.salt);
        if crate::crash::due("wal-mid-group") {
            let half = (buf.len() - staged.new_bytes()) / 2;
            let _ = self.active.write_part(buf, &staged, half);
            crate::crash::crash("wal-mid-group");
        }
        let active = &mut self.active;
        active
            .write(buf, &staged)
            .map_err(|e| Error::io("write segment", &active.path, e))?;
        active
            .file
            .sync_data()
            .map_err(|e| Error::io("fsync segment", &active.path, e))?;
        // Only now: a repair cuts the segment back to its length.
        self.active.advance(buf, &staged);
        let shared = &self.shared;
        shared
            .appends
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        shared.fsyncs.fetch_add(1, Ordering::Relaxed);
        shared
            .bytes_written
            .fetch_add((buf.len() - staged.new_bytes()) as u64, Ordering::Relaxed);
        shared.durable.store(self.next.get() - 1, Ordering::Release);
        Ok(())
    }

    /// Seals the active segment and starts a new one at the next position.
    fn rotate(&mut self) -> Result<()> {
        let first = self.next;
        let active = segment::create(&*self.storage, &self.dir, first, self.config.direct_io)?;
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
        let full = matches!(
            error,
            Error::Io { source, .. }
                if matches!(source.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
        );
        error!(%reason, full, "WAL write failed; the records not yet durable are refused and the log repairs itself");
        let rest = self.shared.group.poison(reason.clone(), full);
        let failure = || {
            if full {
                Error::Full(reason.clone())
            } else {
                Error::Failed(reason.clone())
            }
        };
        for pending in group.into_iter().chain(rest) {
            pending.answer(Err(failure()));
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
            for pending in self.0.group.poison(reason.clone(), false) {
                pending.answer(Err(Error::Failed(reason.clone())));
            }
        }
    }
}
