//! The committer: tail -> Parquet -> one Delta commit with a `txn` action.
//!
//! A commit takes the durable part of the tail, writes it as Parquet files
//! (zstd by default, [`ParquetCompression`]) and commits them to Delta together with
//! `txn { appId: "weir/<node>/<table>", version: <WAL position> }` in the
//! same atomic log entry. The version says: every record of this table at or
//! below this WAL position is in Delta. On restart the replay skips those
//! records, so each row lands exactly once. The same entry carries one
//! `txn` per named stream in the commit (see [`crate::streams`]).
//!
//! A commit that fails may still have landed: delta-rs writes the log entry
//! first and then checkpoints and cleans up, and either can fail. Such an
//! outcome is resolved by reading the table's `txn` watermark again before
//! anything else is written, so a failed commit is never written twice.
//!
//! A landed commit's rows leave the tail (and so the WAL) only once its
//! files are durable on the local disk ([`durable`]).

mod durable;
mod properties;

use std::future::IntoFuture;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use deltalake::DeltaTable;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use tracing::warn;
use weir_wal::WalPosition;

use crate::table::{Table, unshared};
use crate::{Error, Result};

/// While alive, a commit is writing the tail's `committing_bytes`; however
/// the commit ends, they count toward the next one again.
struct Committing<'a>(&'a Table);

impl Drop for Committing<'_> {
    fn drop(&mut self) {
        self.0.state.lock().committing_bytes = 0;
    }
}

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
        if self.outcome_unknown.load(Ordering::Acquire) {
            self.resolve_unknown_outcome().await?;
        }
        let (delta, batches, marks) = {
            let mut state = self.state.lock();
            // DROP TABLE marks the table before it waits for this lock: a
            // commit after that must not write (it would bring the table
            // back half made, or land in a table re-created under the name).
            if state.dropped {
                return Ok(None);
            }
            let batches = state.durable_tail(through);
            if batches.is_empty() {
                return Ok(None);
            }
            let marks = state.stream_marks(through);
            state.committing_bytes = state.bytes_through(through);
            (Arc::clone(&state.delta), batches, marks)
        };
        let _committing = Committing(self);
        let (delta, batches) = (DeltaTable::clone(&delta), unshared(batches));
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        let started = Instant::now();
        let properties = properties::writer_properties(&self.config, &batches);
        let version = i64::try_from(through.get()).unwrap_or(i64::MAX);
        // The node's watermark and each named stream's offset, atomically
        // with the rows they cover.
        let txns = std::iter::once(Transaction::new(&self.app_id, version))
            .chain(
                marks
                    .iter()
                    .map(|mark| Transaction::new(mark.name.app_id(), mark.offset)),
            )
            .collect();
        let write = delta
            .write(batches)
            .with_save_mode(SaveMode::Append)
            .with_writer_properties(properties)
            .with_commit_properties(
                CommitProperties::default().with_application_transactions(txns),
            );
        #[cfg(test)]
        let write = match self.write_hook.lock().clone() {
            Some(hook) => write.with_custom_execute_handler(hook.0),
            None => write,
        };
        let write = write.into_future();
        let written = match tokio::time::timeout(self.config.commit_timeout, write).await {
            Ok(written) => written,
            Err(_) => Err(deltalake::DeltaTableError::Generic(format!(
                "the commit took longer than {} ms",
                self.config.commit_timeout.as_millis()
            ))),
        };
        let version = match written {
            Ok(committed) => {
                let version = committed.version().unwrap_or_default();
                if let Err(e) = sync_versions(&self.name, &committed, version..=version).await {
                    // It landed but might not survive a power loss: the
                    // next commit syncs it before the rows leave the tail.
                    self.outcome_unknown.store(true, Ordering::Release);
                    return Err(e);
                }
                self.finish_commit(committed, through);
                version
            }
            Err(e) => {
                // The log entry may have landed before the error (delta-rs
                // checkpoints and cleans up after committing): find out
                // before anything is written again.
                self.outcome_unknown.store(true, Ordering::Release);
                let error = Error::delta(&self.name, e);
                match self.resolve_unknown_outcome().await {
                    Ok(landed) if landed >= through => {
                        warn!(table = %self.name, %error, "the commit landed, then failed afterwards; its rows are in Delta");
                        self.state.lock().delta.version().unwrap_or_default()
                    }
                    _ => return Err(error),
                }
            }
        };
        Ok(Some(CommitOutcome {
            version,
            rows,
            through,
            elapsed: started.elapsed(),
        }))
    }

    /// After a commit whose outcome is unknown: reads the table's latest
    /// version and its `txn` watermark, and if the commit landed, drops its
    /// rows from the tail as a successful commit would. Returns the
    /// watermark. Call with the commit lock held.
    async fn resolve_unknown_outcome(&self) -> Result<WalPosition> {
        let shared = Arc::clone(&self.state.lock().delta);
        let mut latest = DeltaTable::clone(&shared);
        let read = async {
            latest.update_state().await?;
            let snapshot = latest.snapshot()?;
            snapshot
                .transaction_version(latest.log_store().as_ref(), &self.app_id)
                .await
        };
        // The store that made the commit hang may hang this too.
        let watermark = tokio::time::timeout(self.config.commit_timeout, read)
            .await
            .unwrap_or_else(|_| {
                Err(deltalake::DeltaTableError::Generic(format!(
                    "reading the table's watermark took longer than {} ms",
                    self.config.commit_timeout.as_millis()
                )))
            })
            .map_err(|e| Error::delta(&self.name, e))?
            .map_or(WalPosition::ZERO, |v| WalPosition(v.max(0) as u64));
        let (synced, committed_through) = {
            let state = self.state.lock();
            (state.delta.version(), state.committed_through)
        };
        if watermark > committed_through {
            let versions = synced.map_or(0, |v| v + 1)..=latest.version().unwrap_or_default();
            sync_versions(&self.name, &latest, versions).await?;
            self.finish_commit(latest, watermark);
        }
        self.outcome_unknown.store(false, Ordering::Release);
        Ok(watermark)
    }
}

/// Makes `versions` of the table `name` durable (see [`durable`]).
pub(crate) async fn sync_versions(
    name: &str,
    delta: &DeltaTable,
    versions: RangeInclusive<u64>,
) -> Result<()> {
    let url = delta.table_url().clone();
    let root = std::path::PathBuf::from(url.path());
    let synced = tokio::task::spawn_blocking(move || {
        versions
            .map(|v| durable::sync_version(&url, v))
            .collect::<Result<Vec<_>, _>>()
    })
    .await;
    let error = match synced {
        Ok(Ok(_)) => return Ok(()),
        Ok(Err(e)) => e,
        Err(stopped) => durable::SyncError {
            path: root,
            source: std::io::Error::other(format!("the sync stopped: {stopped}")),
        },
    };
    Err(Error::Sync {
        table: name.to_string(),
        path: error.path,
        source: error.source,
    })
}

/// A hook around the Delta writes of a table, for tests that stall them.
#[cfg(test)]
#[derive(Clone)]
pub(crate) struct WriteHook(pub std::sync::Arc<dyn deltalake::operations::CustomExecuteHandler>);

#[cfg(test)]
impl std::fmt::Debug for WriteHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteHook")
    }
}

#[cfg(test)]
mod tests;
