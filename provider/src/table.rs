//! One weir table: its Delta table, its in-memory tail, and the lock that
//! keeps the two a consistent cut.
//!
//! Every accepted batch goes to the WAL and, in the same critical section,
//! to the table's *tail*: the rows that are in the WAL but not yet in Delta.
//! A query or a commit reads, under that same lock, the Delta snapshot, its
//! `txn` watermark and the tail entries at or below the WAL's durable
//! position. Because an entry is placed in the tail under the lock in which
//! its WAL position is assigned, every entry at or below a durable position
//! read under the lock is already in the tail: nothing durable is missed,
//! and nothing not yet durable is shown.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use deltalake::DeltaTable;
use parking_lot::Mutex;
use tokio::sync::Notify;
use weir_wal::{PendingAppend, Wal, WalPosition};

use crate::budget::TailBudget;
use crate::streams::{self, StreamMark, StreamName, StreamOffsets};
use crate::{Error, Result, entry};

/// How a table buffers and commits. `Default` is for production,
/// [`TableConfig::for_tests`] for fast tests.
#[derive(Debug, Clone)]
pub struct TableConfig {
    /// Commit at least this often when the tail is not empty.
    pub commit_interval: Duration,
    /// Commit as soon as the tail holds this many bytes of Arrow data.
    pub commit_target_bytes: usize,
    /// Stop reading from producers while the tail holds this many bytes.
    pub tail_budget_bytes: usize,
    /// Stop reading from producers while all tables' tails together hold
    /// this many bytes (see [`TailBudget`]).
    pub all_tails_budget_bytes: usize,
    /// Write a Delta checkpoint every this many commits.
    pub checkpoint_interval: u64,
    /// A commit that takes longer fails (its outcome is then found out
    /// before the next try: it may have landed).
    pub commit_timeout: Duration,
    /// How the Parquet files are compressed.
    pub compression: ParquetCompression,
    /// zstd level of the Parquet files, with [`ParquetCompression::Zstd`].
    pub zstd_level: i32,
    /// How floating-point columns are written.
    pub float_columns: FloatColumns,
}

/// The codec of the Parquet files a commit writes (of all their columns
/// but the floating-point ones, unless [`FloatColumns::Plain`]).
///
/// zstd makes the smallest files; LZ4 takes less CPU for larger files
/// (NEOWISE rows, when it also compressed the doubles: files a quarter
/// larger, 13% more ingest at 64 streams, 8% fewer CPU seconds a GB,
/// BENCHMARKS.md) and needs a reader of Parquet's `LZ4_RAW` (Spark 3.3 or
/// later, DuckDB, pyarrow, delta-rs).
///
/// Named in the config file as `"zstd"`, `"lz4"`, `"snappy"` or `"none"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ParquetCompression {
    #[default]
    Zstd,
    Lz4,
    Snappy,
    #[serde(rename = "none")]
    Uncompressed,
}

/// How a commit writes its floating-point columns (`Float32`, `Float64`;
/// those inside a struct or list keep the plain layout).
///
/// Measurements are doubles whose low bytes look random: zstd spends most
/// of a commit's compression time on them and saves about a fifth.
/// Parquet's `BYTE_STREAM_SPLIT` encoding stores each byte position of the
/// values as a stream of its own, so that signs and exponents sit together
/// and compress well while the mantissas' noise is left as it is; LZ4 then
/// compresses as tightly as zstd at less CPU. On NEOWISE rows (99 of 144
/// columns doubles) that made files 12% smaller and ingest 7% faster
/// (BENCHMARKS.md).
///
/// Named in the config file as `"split-lz4"` or `"plain"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FloatColumns {
    /// `BYTE_STREAM_SPLIT` encoding compressed with `LZ4_RAW`, whatever
    /// the table's codec. Readers need both (Spark 3.3 or later, DuckDB,
    /// pyarrow, DataFusion, delta-rs).
    #[default]
    SplitLz4,
    /// Plain encoding with the table's codec, for older readers.
    Plain,
}

impl Default for TableConfig {
    fn default() -> Self {
        Self {
            commit_interval: Duration::from_secs(10),
            commit_target_bytes: 128 << 20,
            tail_budget_bytes: 1 << 30,
            all_tails_budget_bytes: 2 << 30,
            checkpoint_interval: 20,
            commit_timeout: Duration::from_secs(120),
            compression: ParquetCompression::Zstd,
            // Level 1 acked 14% more than level 3, for files 0.8% larger
            // (NEOWISE rows, 64 streams, BENCHMARKS.md).
            zstd_level: 1,
            float_columns: FloatColumns::SplitLz4,
        }
    }
}

impl TableConfig {
    /// Small limits and short intervals for tests.
    pub fn for_tests() -> Self {
        Self {
            commit_interval: Duration::from_millis(200),
            commit_target_bytes: 256 << 10,
            tail_budget_bytes: 4 << 20,
            all_tails_budget_bytes: 16 << 20,
            checkpoint_interval: 5,
            commit_timeout: Duration::from_secs(30),
            compression: ParquetCompression::Zstd,
            zstd_level: 1,
            float_columns: FloatColumns::SplitLz4,
        }
    }
}

/// A table: shared by ingest streams, queries and its committer.
#[derive(Debug)]
pub struct Table {
    pub(crate) name: String,
    pub(crate) id: String,
    pub(crate) app_id: String,
    pub(crate) schema: SchemaRef,
    pub(crate) wal: Arc<Wal>,
    pub(crate) config: TableConfig,
    /// The budget of all tables' tails together.
    pub(crate) budget: Arc<TailBudget>,
    pub(crate) state: Mutex<State>,
    /// Signalled whenever the tail shrinks (or the table is dropped).
    room: Notify,
    /// Signalled when the tail reaches the commit target.
    pub(crate) commit_wanted: Notify,
    /// One commit at a time.
    pub(crate) commit_lock: tokio::sync::Mutex<()>,
    /// Set when a commit failed in a way that may have landed it; the next
    /// commit first finds out.
    pub(crate) outcome_unknown: std::sync::atomic::AtomicBool,
    /// The durable offset of each named stream seen since start (see
    /// [`crate::streams`]).
    streams: Mutex<StreamOffsets>,
    /// Runs around every Delta write, to stall it in tests.
    #[cfg(test)]
    pub(crate) write_hook: Mutex<Option<crate::commit::WriteHook>>,
}

#[derive(Debug)]
pub(crate) struct State {
    /// The Delta snapshot queries read, shared so that a cut takes it
    /// without copying under the lock.
    pub(crate) delta: Arc<DeltaTable>,
    /// The `txn` version of `delta`: every record of this table at or below
    /// it is in Delta.
    pub(crate) committed_through: WalPosition,
    pub(crate) tail: VecDeque<TailEntry>,
    pub(crate) tail_bytes: usize,
    /// The bytes of the tail's front that a running commit is writing:
    /// they do not count toward the next commit's target.
    pub(crate) committing_bytes: usize,
    pub(crate) dropped: bool,
}

#[derive(Debug)]
pub(crate) struct TailEntry {
    pub(crate) position: WalPosition,
    /// Shared, so that a cut takes it under the lock with one reference
    /// count rather than one per column.
    pub(crate) batch: Arc<RecordBatch>,
    pub(crate) bytes: usize,
    /// The named stream and offset of the request, if it had a name.
    pub(crate) stream: Option<StreamMark>,
}

impl State {
    fn push(
        &mut self,
        position: WalPosition,
        batch: RecordBatch,
        bytes: usize,
        stream: Option<StreamMark>,
    ) {
        self.tail.push_back(TailEntry {
            position,
            batch: Arc::new(batch),
            bytes,
            stream,
        });
        self.tail_bytes += bytes;
    }

    /// Drops the tail's entries above `durable` (writes the WAL refused);
    /// returns the bytes they held.
    pub(crate) fn discard_above(&mut self, durable: WalPosition) -> usize {
        let mut freed = 0;
        while self.tail.back().is_some_and(|e| e.position > durable) {
            let entry = self.tail.pop_back().expect("back exists");
            self.tail_bytes -= entry.bytes;
            freed += entry.bytes;
        }
        freed
    }

    /// The tail's batches at or below `durable`, in WAL order. Call with the
    /// lock held and `durable` read under it (see the module docs); turn
    /// them into batches with [`unshared`] after it is released.
    pub(crate) fn durable_tail(&self, durable: WalPosition) -> Vec<Arc<RecordBatch>> {
        self.tail
            .iter()
            .take_while(|e| e.position <= durable)
            .map(|e| Arc::clone(&e.batch))
            .collect()
    }

    /// The bytes of the tail's entries at or below `through`.
    pub(crate) fn bytes_through(&self, through: WalPosition) -> usize {
        self.tail
            .iter()
            .take_while(|e| e.position <= through)
            .map(|e| e.bytes)
            .sum()
    }

    /// The highest offset of each named stream among the tail's entries at
    /// or below `through`: what a commit through it records in Delta.
    pub(crate) fn stream_marks(&self, through: WalPosition) -> Vec<StreamMark> {
        streams::latest(
            self.tail
                .iter()
                .take_while(|e| e.position <= through)
                .filter_map(|e| e.stream.as_ref()),
        )
    }
}

/// What a query reads: one consistent cut.
#[derive(Debug)]
pub struct Cut {
    /// The Delta snapshot.
    pub delta: DeltaTable,
    /// Its `txn` watermark.
    pub committed_through: WalPosition,
    /// Durable rows above the watermark, in WAL order.
    pub tail: Vec<RecordBatch>,
}

/// Sizes, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableStats {
    pub tail_batches: usize,
    pub tail_rows: usize,
    pub tail_bytes: usize,
    pub delta_version: Option<u64>,
    pub committed_through: WalPosition,
}

impl Table {
    #[expect(
        clippy::too_many_arguments,
        reason = "one private constructor, called once, with the catalog's parts"
    )]
    pub(crate) fn new(
        name: String,
        delta: DeltaTable,
        committed_through: WalPosition,
        schema: SchemaRef,
        node_id: &str,
        wal: Arc<Wal>,
        config: TableConfig,
        budget: Arc<TailBudget>,
    ) -> Result<Self> {
        let id = delta
            .snapshot()
            .map_err(|e| Error::delta(&name, e))?
            .metadata()
            .id()
            .to_string();
        Ok(Self {
            app_id: app_id(node_id, &name),
            name,
            id,
            schema,
            wal,
            config,
            budget,
            state: Mutex::new(State {
                delta: Arc::new(delta),
                committed_through,
                tail: VecDeque::new(),
                tail_bytes: 0,
                committing_bytes: 0,
                dropped: false,
            }),
            room: Notify::new(),
            commit_wanted: Notify::new(),
            commit_lock: tokio::sync::Mutex::new(()),
            outcome_unknown: std::sync::atomic::AtomicBool::new(false),
            streams: Mutex::new(StreamOffsets::default()),
            #[cfg(test)]
            write_hook: Mutex::new(None),
        })
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Delta table's metadata id: a table dropped and created again
    /// under the same name has a new one.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The table's Arrow schema (canonical; see [`crate::schema`]).
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Checks rows against the table and casts them into its schema,
    /// within `limits` (see [`weir_codec::conform`]).
    pub fn conform(&self, batch: &RecordBatch, limits: &weir_codec::Limits) -> Result<RecordBatch> {
        weir_codec::conform(batch, &self.schema, limits).map_err(|source| Error::Rows {
            table: self.name.clone(),
            source,
        })
    }

    /// Waits until the tail has room under its own byte budget and all
    /// tails together under theirs. Ingest calls this before reading the
    /// next request from a producer, so a full tail turns into gRPC flow
    /// control instead of unbounded memory.
    pub async fn wait_for_room(&self) -> Result<()> {
        loop {
            let mut table_room = pin!(self.room.notified());
            table_room.as_mut().enable();
            let mut any_room = pin!(self.budget.room.notified());
            any_room.as_mut().enable();
            {
                let state = self.state.lock();
                if state.dropped {
                    return Err(Error::TableNotFound {
                        name: self.name.clone(),
                    });
                }
                let own = state.tail_bytes < self.config.tail_budget_bytes;
                if own && self.budget.has_room() {
                    return Ok(());
                }
                if own {
                    // Another table holds the memory: every committer with
                    // rows commits.
                    self.budget.full.notify_waiters();
                }
            }
            self.commit_wanted.notify_one();
            tokio::select! {
                _ = table_room => {}
                _ = any_room => {}
            }
        }
    }

    /// Writes `batch` (already conformed) to the WAL and the tail, waiting
    /// first for room in the tail budgets (see [`Table::wait_for_room`]):
    /// the tails overshoot their budgets by at most this one request.
    /// Returns once the write is queued, before it is durable: the rows are
    /// durable, visible and ackable when the returned [`PendingAppend`]
    /// resolves.
    ///
    /// `retained` is what the batch's arrays keep alive besides their own
    /// data (an Arrow batch decoded from a request shares the request's
    /// body); the tail budgets are charged the larger of it and the rows'
    /// encoded size.
    ///
    /// A request of a named `stream` is recorded with its `offset_id`; once
    /// it is durable the caller reports that with [`Table::stream_durable`].
    /// With `wal_epoch` (from [`Table::wal_epoch`] when the stream started)
    /// the write is refused if a WAL write failed since: a stream's later
    /// request must not become durable after an earlier one was lost.
    pub async fn enqueue_unsynced(
        &self,
        stream: Option<&StreamName>,
        offset_id: i64,
        batch: RecordBatch,
        retained: usize,
        wal_epoch: Option<u64>,
    ) -> Result<PendingAppend> {
        let name = stream.map_or("", StreamName::as_str);
        let payload =
            entry::encode(&self.id, name, offset_id, &batch).map_err(|source| Error::Rows {
                table: self.name.clone(),
                source,
            })?;
        // The IPC size is the data's size; `get_array_memory_size` would
        // count a buffer shared by several columns once per column.
        let bytes = payload.len().max(retained);
        loop {
            self.wait_for_room().await?;
            let mut state = self.state.lock();
            if state.dropped {
                return Err(Error::TableNotFound {
                    name: self.name.clone(),
                });
            }
            if state.tail_bytes >= self.config.tail_budget_bytes {
                continue;
            }
            if !self.budget.try_admit(bytes) {
                continue;
            }
            let enqueued = match wal_epoch {
                Some(epoch) => self.wal.enqueue_in_epoch(payload, epoch),
                None => self.wal.enqueue(payload),
            };
            let pending = match enqueued {
                Ok(pending) => pending,
                Err(e) => {
                    drop(state);
                    self.budget.release(bytes);
                    return Err(e.into());
                }
            };
            let mark = stream.map(|name| StreamMark {
                name: name.clone(),
                offset: offset_id,
            });
            state.push(pending.position(), batch, bytes, mark);
            // Not counting what a running commit writes: a commit wanted
            // during it would follow it at once with a fraction of a file.
            let uncommitted = state.tail_bytes.saturating_sub(state.committing_bytes);
            let full = uncommitted >= self.config.commit_target_bytes;
            drop(state);
            if full {
                self.commit_wanted.notify_one();
            }
            return Ok(pending);
        }
    }

    /// Puts a replayed WAL record back in the tail (the caller has checked
    /// that Delta does not hold it).
    pub(crate) fn restore(
        &self,
        position: WalPosition,
        batch: RecordBatch,
        bytes: usize,
        stream: Option<StreamMark>,
    ) {
        if let Some(mark) = &stream {
            self.streams.lock().raise(&mark.name, mark.offset);
        }
        self.state.lock().push(position, batch, bytes, stream);
        self.budget.add(bytes);
    }

    /// The highest durable offset of the named stream `name`: -1 if none of
    /// its requests is durable (or the name is new). Exact while no request
    /// of the stream is in flight; the caller serializes a stream's
    /// connections so that this holds.
    pub async fn stream_offset(&self, name: &StreamName) -> Result<i64> {
        if let Some(offset) = self.streams.lock().get(name) {
            return Ok(offset);
        }
        // Not seen since start: its offset, if any, is in Delta.
        let delta = Arc::clone(&self.state.lock().delta);
        let snapshot = delta.snapshot().map_err(|e| Error::delta(&self.name, e))?;
        let committed = snapshot
            .transaction_version(delta.log_store().as_ref(), name.app_id())
            .await
            .map_err(|e| Error::delta(&self.name, e))?
            .unwrap_or(-1);
        let mut streams = self.streams.lock();
        streams.raise(name, committed);
        Ok(streams.get(name).unwrap_or(committed))
    }

    /// The WAL's failure count now; see [`Table::enqueue_unsynced`].
    pub fn wal_epoch(&self) -> u64 {
        self.wal.epoch()
    }

    /// Records that the named stream's request `offset` is durable.
    pub fn stream_durable(&self, name: &StreamName, offset: i64) {
        self.streams.lock().raise(name, offset);
    }

    /// The Delta snapshot and the durable tail above it, read atomically.
    /// The lock that ingest needs is held for one reference count per tail
    /// entry; the copies are made after it.
    pub fn cut(&self) -> Cut {
        let (delta, committed_through, tail) = {
            let state = self.state.lock();
            let tail = state.durable_tail(self.wal.durable_position());
            (Arc::clone(&state.delta), state.committed_through, tail)
        };
        Cut {
            delta: DeltaTable::clone(&delta),
            committed_through,
            tail: unshared(tail),
        }
    }

    /// The highest WAL position this table no longer needs.
    pub(crate) fn wal_needed_after(&self) -> WalPosition {
        let state = self.state.lock();
        match state.tail.front() {
            Some(first) => WalPosition(first.position.get() - 1),
            None => self.wal.durable_position(),
        }
    }

    /// Drops the rows Delta now holds and wakes producers waiting for room.
    pub(crate) fn finish_commit(&self, delta: DeltaTable, through: WalPosition) {
        let mut state = self.state.lock();
        let mut freed = 0;
        while state.tail.front().is_some_and(|e| e.position <= through) {
            let entry = state.tail.pop_front().expect("front exists");
            state.tail_bytes -= entry.bytes;
            freed += entry.bytes;
        }
        state.delta = Arc::new(delta);
        state.committed_through = through;
        drop(state);
        self.budget.release(freed);
        self.room.notify_waiters();
    }

    /// Marks the table dropped and gives its tail's memory back.
    pub(crate) fn mark_dropped(&self) {
        let mut state = self.state.lock();
        state.dropped = true;
        state.tail.clear();
        let freed = std::mem::take(&mut state.tail_bytes);
        drop(state);
        self.budget.release(freed);
        self.room.notify_waiters();
        self.commit_wanted.notify_one();
    }

    pub(crate) fn is_dropped(&self) -> bool {
        self.state.lock().dropped
    }

    /// Bytes in the tail now.
    pub(crate) fn tail_bytes(&self) -> usize {
        self.state.lock().tail_bytes
    }

    /// Current sizes.
    pub fn stats(&self) -> TableStats {
        let state = self.state.lock();
        TableStats {
            tail_batches: state.tail.len(),
            tail_rows: state.tail.iter().map(|e| e.batch.num_rows()).sum(),
            tail_bytes: state.tail_bytes,
            delta_version: state.delta.version(),
            committed_through: state.committed_through,
        }
    }
}

/// Batches of the tail, taken with [`State::durable_tail`], as batches of
/// their own.
pub(crate) fn unshared(batches: Vec<Arc<RecordBatch>>) -> Vec<RecordBatch> {
    batches
        .iter()
        .map(|batch| RecordBatch::clone(batch))
        .collect()
}

/// The Delta `txn` app id of a table on a node.
pub(crate) fn app_id(node_id: &str, table: &str) -> String {
    format!("weir/{node_id}/{table}")
}
