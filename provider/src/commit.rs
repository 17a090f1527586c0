//! The committer: tail -> Parquet -> one Delta commit with a `txn` action.
//!
//! A commit takes the durable part of the tail, writes it as zstd Parquet
//! files and commits them to Delta together with
//! `txn { appId: "weir/<node>/<table>", version: <WAL position> }` in the
//! same atomic log entry. The version says: every record of this table at or
//! below this WAL position is in Delta. On restart the replay skips those
//! records, so each row lands exactly once.

use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use weir_wal::WalPosition;

use crate::table::Table;
use crate::{Error, Result};

/// What one commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitOutcome {
    /// The new Delta version.
    pub version: u64,
    /// Rows committed.
    pub rows: usize,
    /// The `txn` version written.
    pub through: WalPosition,
    /// Time spent writing and committing.
    pub elapsed: Duration,
}

impl Table {
    /// Commits the durable tail to Delta. `None` if there was nothing to
    /// commit. One commit runs at a time per table; ingest and queries go on
    /// meanwhile.
    pub async fn commit(&self) -> Result<Option<CommitOutcome>> {
        self.commit_upto(self.wal.durable_position()).await
    }

    /// Commits the tail's records at or below `through`, with `through` as
    /// the `txn` version: the caller guarantees that every record of this
    /// table at or below it is durable and in the tail (true of the WAL's
    /// durable position, and of the last record replayed on start).
    pub(crate) async fn commit_upto(&self, through: WalPosition) -> Result<Option<CommitOutcome>> {
        let _one_at_a_time = self.commit_lock.lock().await;
        let (delta, batches) = {
            let state = self.state.lock();
            let batches = state.durable_tail(through);
            if batches.is_empty() {
                return Ok(None);
            }
            (state.delta.clone(), batches)
        };
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        let started = Instant::now();
        let level = ZstdLevel::try_new(self.config.zstd_level).unwrap_or_default();
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .build();
        let version = i64::try_from(through.get()).unwrap_or(i64::MAX);
        let txn = Transaction::new(&self.app_id, version);
        let committed = delta
            .write(batches)
            .with_save_mode(SaveMode::Append)
            .with_writer_properties(properties)
            .with_commit_properties(CommitProperties::default().with_application_transaction(txn))
            .await
            .map_err(|e| Error::delta(&self.name, e))?;
        let version = committed.version().unwrap_or_default();
        self.finish_commit(committed, through);
        Ok(Some(CommitOutcome {
            version,
            rows,
            through,
            elapsed: started.elapsed(),
        }))
    }
}
