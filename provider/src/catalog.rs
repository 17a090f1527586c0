//! The set of tables of one node: creating, opening, dropping, WAL replay,
//! the committers and WAL truncation.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::Schema;
use deltalake::{DeltaTable, TableProperty};
use futures::{StreamExt, TryStreamExt};
use parking_lot::RwLock;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};
use url::Url;
use weir_wal::{Wal, WalConfig, WalPosition, WalRecord};

use crate::budget::TailBudget;
use crate::local_store::LocalStore;
use crate::streams::{StreamMark, StreamName};
use crate::table::{Table, TableConfig, app_id};
use crate::{Error, Result, entry, schema};

/// The longest wait between two tries of a failing commit.
const MAX_COMMIT_BACKOFF: std::time::Duration = std::time::Duration::from_secs(30);

/// How often a failed WAL is checked for repair.
const WAL_HEAL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

/// What replaying the WAL found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Records put back into a table's tail.
    pub restored: usize,
    /// Records Delta already holds (at or below the table's `txn`).
    pub already_committed: usize,
    /// Records of tables that no longer exist.
    pub orphaned: usize,
    /// Commits made during replay because the tails reached their budgets.
    pub commits: usize,
    /// Record positions lost to corruption the WAL skipped (only with
    /// `CorruptionPolicy::SkipCorrupt`).
    pub skipped: u64,
}

/// The tables of a node.
#[derive(Debug)]
pub struct Catalog {
    root: Url,
    node_id: String,
    wal: Arc<Wal>,
    config: TableConfig,
    budget: Arc<TailBudget>,
    tables: RwLock<BTreeMap<String, Arc<Table>>>,
    stop: watch::Sender<bool>,
    committers: parking_lot::Mutex<Vec<JoinHandle<()>>>,
    /// CREATE and DROP run one at a time.
    ddl: tokio::sync::Mutex<()>,
}

impl Catalog {
    /// Opens every table under `root`, then the WAL in `wal_dir`, and puts
    /// the WAL records that Delta does not have yet back into the tables'
    /// tails, in WAL order.
    ///
    /// - A directory with a Delta log that does not load is an error naming
    ///   the table ([`Error::TableUnreadable`]): its acknowledged rows not yet
    ///   in Delta are in the WAL, and starting without the table would let
    ///   WAL truncation delete them.
    /// - The WAL's positions continue above every table's `txn` watermark
    ///   (a new log starts after the highest one; an older log is refused),
    ///   so a position is never used twice.
    /// - Replay stays within the tail budgets: when a tail (or all of them)
    ///   reaches its budget, the tails are committed to Delta before replay
    ///   goes on, so a WAL of any size replays in bounded memory.
    pub async fn open(
        root: Url,
        node_id: String,
        wal_dir: &std::path::Path,
        wal_config: WalConfig,
        config: TableConfig,
    ) -> Result<(Arc<Self>, ReplayStats)> {
        let root = directory_url(root)?;
        if root.scheme() == "file" {
            let path = local_path(&root)?;
            std::fs::create_dir_all(&path).map_err(|e| Error::InvalidStorage {
                location: root.to_string(),
                reason: e.to_string(),
            })?;
        }
        let mut loaded = Vec::new();
        for name in list_table_dirs(&root).await? {
            let url = table_url(&root, &name)?;
            if !has_delta_log(&url).await? {
                warn!(table = %name, "skipping a directory that holds no Delta table");
                continue;
            }
            let (delta, committed) =
                load(url, &node_id, &name)
                    .await
                    .map_err(|source| Error::TableUnreadable {
                        table: name.clone(),
                        source: Box::new(source),
                    })?;
            loaded.push((name, delta, committed));
        }
        let consumed = loaded
            .iter()
            .map(|(_, _, committed)| *committed)
            .max()
            .unwrap_or(WalPosition::ZERO);
        let wal_config = WalConfig {
            positions_after: consumed,
            ..wal_config
        };
        let (wal, replay) = Wal::open(wal_dir, wal_config)?;
        let catalog = Arc::new(Self {
            root,
            node_id,
            wal: Arc::new(wal),
            budget: Arc::new(TailBudget::new(config.all_tails_budget_bytes)),
            config,
            tables: RwLock::new(BTreeMap::new()),
            stop: watch::channel(false).0,
            committers: parking_lot::Mutex::new(Vec::new()),
            ddl: tokio::sync::Mutex::new(()),
        });
        for (name, delta, committed) in loaded {
            let table = Arc::new(catalog.table_from_delta(&name, delta, committed)?);
            catalog.tables.write().insert(name, table);
        }
        let skipped = replay.skipped();
        if skipped.regions > 0 {
            warn!(
                regions = skipped.regions,
                bytes = skipped.bytes,
                records = skipped.positions,
                "the WAL skipped corrupt records: their rows are lost, unless they were already committed to Delta"
            );
        }
        let mut stats = catalog.replay(replay).await?;
        stats.skipped = skipped.positions;
        if stats.commits > 0 {
            catalog.truncate_wal();
        }
        Ok((catalog, stats))
    }

    /// The write-ahead log.
    pub fn wal(&self) -> &Arc<Wal> {
        &self.wal
    }

    /// The budget all tails share.
    pub fn budget(&self) -> &Arc<TailBudget> {
        &self.budget
    }

    /// The storage root the tables live under.
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// The table called `name`.
    pub fn table(&self, name: &str) -> Result<Arc<Table>> {
        self.tables
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::TableNotFound {
                name: name.to_string(),
            })
    }

    /// The names of all tables, sorted.
    pub fn table_names(&self) -> Vec<String> {
        self.tables.read().keys().cloned().collect()
    }

    /// Creates a Delta table `name` with `columns` (see [`crate::schema`]
    /// for the type mapping) and starts its committer.
    pub async fn create_table(
        self: &Arc<Self>,
        name: &str,
        columns: &Schema,
        if_not_exists: bool,
    ) -> Result<Arc<Table>> {
        validate_name(name)?;
        let _one_at_a_time = self.ddl.lock().await;
        if let Ok(table) = self.table(name) {
            return if if_not_exists {
                Ok(table)
            } else {
                Err(Error::TableExists {
                    name: name.to_string(),
                })
            };
        }
        let delta_schema = schema::delta_schema_for(columns)?;
        let url = self.table_url(name)?;
        if url.scheme() == "file" {
            let path = local_path(&url)?;
            if path.join("_delta_log").exists() {
                return Err(Error::TableExists {
                    name: name.to_string(),
                });
            }
            std::fs::create_dir_all(&path).map_err(|e| Error::InvalidStorage {
                location: url.to_string(),
                reason: e.to_string(),
            })?;
        }
        // Built without loading: loading a location with no table yet makes
        // the Delta kernel log an error, and there is nothing to load.
        let delta = delta_builder(url)
            .and_then(|builder| builder.build())
            .map_err(|e| Error::delta(name, e))?
            .create()
            .with_table_name(name)
            .with_columns(delta_schema.fields().cloned())
            .with_configuration_property(
                TableProperty::CheckpointInterval,
                Some(self.config.checkpoint_interval.to_string()),
            )
            .await
            .map_err(|e| Error::delta(name, e))?;
        // Its first commit's rows leave the WAL once that commit is synced:
        // by then the table itself must be on the disk too.
        crate::commit::sync_versions(name, &delta, 0..=0).await?;
        let table = Arc::new(self.table_from_delta(name, delta, WalPosition::ZERO)?);
        self.tables
            .write()
            .insert(name.to_string(), Arc::clone(&table));
        self.spawn_committer(Arc::clone(&table));
        info!(table = name, "created table");
        Ok(table)
    }

    /// Drops table `name`: deletes its Delta table. Streams writing to it
    /// fail with "not found"; its records left in the WAL are ignored.
    pub async fn drop_table(&self, name: &str, if_exists: bool) -> Result<()> {
        let _one_at_a_time = self.ddl.lock().await;
        let removed = self.tables.write().remove(name);
        let Some(table) = removed else {
            return if if_exists {
                Ok(())
            } else {
                Err(Error::TableNotFound {
                    name: name.to_string(),
                })
            };
        };
        table.mark_dropped();
        let _no_commit_running = table.commit_lock.lock().await;
        let url = self.table_url(name)?;
        if url.scheme() == "file" {
            let path = local_path(&url)?;
            if let Err(e) = std::fs::remove_dir_all(&path) {
                warn!(table = name, error = %e, "could not remove the table's directory");
            }
        } else {
            let (store, prefix) = object_store::parse_url(&url)?;
            let locations = store.list(Some(&prefix)).map_ok(|m| m.location).boxed();
            store
                .delete_stream(locations)
                .try_collect::<Vec<_>>()
                .await?;
        }
        info!(table = name, "dropped table");
        Ok(())
    }

    /// Starts the background committers of all tables, and the task that
    /// brings the WAL back after a failed write.
    pub fn start_committers(self: &Arc<Self>) {
        let tables: Vec<_> = self.tables.read().values().cloned().collect();
        for table in tables {
            self.spawn_committer(table);
        }
        let catalog = Arc::downgrade(self);
        let mut stop = self.stop.subscribe();
        let handle = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(WAL_HEAL_INTERVAL) => {}
                    _ = stop.wait_for(|stopped| *stopped) => return,
                }
                let Some(catalog) = catalog.upgrade() else {
                    return;
                };
                if catalog.wal.failure().is_some() {
                    catalog.heal_wal();
                }
            }
        });
        self.committers.lock().push(handle);
    }

    /// After a failed WAL write: drops from every tail the rows the WAL
    /// refused (their streams were told, nothing acked them) and lets the
    /// WAL take writes again, once it has repaired its segment. Returns
    /// whether writes resumed.
    pub fn heal_wal(&self) -> bool {
        // No table is created, and no row enqueued, while this runs.
        let tables = self.tables.read();
        let mut states: Vec<_> = tables.values().map(|t| (t, t.state.lock())).collect();
        let durable = self.wal.durable_position();
        let mut freed = 0;
        for (table, state) in &mut states {
            let bytes = state.discard_above(durable);
            if bytes > 0 {
                table.budget.release(bytes);
                freed += bytes;
            }
        }
        let resumed = self.wal.resume();
        drop(states);
        if resumed {
            info!(%durable, dropped_bytes = freed, "the WAL takes writes again");
        }
        resumed
    }

    /// Stops the committers without committing (what a crash does).
    pub fn stop_committers(&self) {
        self.stop.send_replace(true);
    }

    /// Stops the committers, commits every tail to Delta, truncates the WAL
    /// and closes it. Ingest must have stopped first.
    pub async fn shutdown(&self) -> Result<()> {
        self.stop.send_replace(true);
        let handles: Vec<_> = std::mem::take(&mut *self.committers.lock());
        for handle in handles {
            let _ = handle.await;
        }
        let tables: Vec<_> = self.tables.read().values().cloned().collect();
        let mut first_error = None;
        for table in tables {
            match table.commit().await {
                Ok(Some(done)) => {
                    info!(
                        table = table.name(),
                        version = done.version,
                        rows = done.rows,
                        "committed the tail on shutdown"
                    );
                }
                Ok(None) => {}
                Err(e) => {
                    error!(table = table.name(), error = %e, "commit on shutdown failed; the rows stay in the WAL");
                    first_error.get_or_insert(e);
                }
            }
        }
        self.truncate_wal();
        self.wal.close()?;
        first_error.map_or(Ok(()), Err)
    }

    /// Commits every table's tail now (used by tests and by shutdown).
    pub async fn commit_all(&self) -> Result<usize> {
        let tables: Vec<_> = self.tables.read().values().cloned().collect();
        let mut commits = 0;
        for table in tables {
            if table.commit().await?.is_some() {
                commits += 1;
            }
        }
        self.truncate_wal();
        Ok(commits)
    }

    fn spawn_committer(self: &Arc<Self>, table: Arc<Table>) {
        let catalog = Arc::downgrade(self);
        let mut stop = self.stop.subscribe();
        let interval = self.config.commit_interval;
        let budget = Arc::clone(&self.budget);
        let handle = tokio::spawn(async move {
            // Consecutive failed commits: each waits twice as long as the
            // one before (up to MAX_COMMIT_BACKOFF) before the next try.
            let mut failures = 0u32;
            loop {
                if failures > 0 {
                    let backoff = interval
                        .saturating_mul(1 << failures.min(16))
                        .min(MAX_COMMIT_BACKOFF);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.wait_for(|stopped| *stopped) => return,
                    }
                } else {
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        _ = table.commit_wanted.notified() => {}
                        _ = budget.full.notified() => {}
                        _ = stop.wait_for(|stopped| *stopped) => return,
                    }
                }
                if table.is_dropped() {
                    return;
                }
                match table.commit().await {
                    Err(e) => {
                        failures += 1;
                        let behind = table.stats();
                        error!(
                            table = table.name(),
                            error = %e,
                            attempt = failures,
                            tail_rows = behind.tail_rows,
                            tail_bytes = behind.tail_bytes,
                            committed_through = %behind.committed_through,
                            "commit failed; the rows stay in the WAL and visible, and the commit is retried"
                        );
                    }
                    Ok(Some(done)) => {
                        failures = 0;
                        info!(
                            table = table.name(),
                            version = done.version,
                            rows = done.rows,
                            through = %done.through,
                            ms = done.elapsed.as_millis() as u64,
                            "committed to Delta"
                        );
                        weir_wal::crash::point("after-commit");
                        match catalog.upgrade() {
                            Some(catalog) => catalog.truncate_wal(),
                            None => return,
                        }
                    }
                    Ok(None) => failures = 0,
                }
            }
        });
        self.committers.lock().push(handle);
    }

    /// Deletes the WAL segments no table needs any more.
    fn truncate_wal(&self) {
        let needed_after = self
            .tables
            .read()
            .values()
            .map(|t| t.wal_needed_after())
            .min()
            .unwrap_or_else(|| self.wal.durable_position());
        match self.wal.truncate_through(needed_after) {
            Ok(0) => {}
            Ok(n) => info!(segments = n, through = %needed_after, "deleted WAL segments"),
            Err(e) => warn!(error = %e, "could not delete WAL segments"),
        }
    }

    async fn replay(
        &self,
        records: impl IntoIterator<Item = weir_wal::Result<WalRecord>>,
    ) -> Result<ReplayStats> {
        let by_id: HashMap<String, Arc<Table>> = self
            .tables
            .read()
            .values()
            .map(|t| (t.id.clone(), Arc::clone(t)))
            .collect();
        let mut stats = ReplayStats::default();
        for record in records {
            let record = record?;
            let malformed = |reason| Error::MalformedEntry {
                position: record.position,
                reason,
            };
            let table_id = entry::table_id(&record.payload).map_err(malformed)?;
            let Some(table) = by_id.get(table_id) else {
                stats.orphaned += 1;
                continue;
            };
            if record.position <= table.state.lock().committed_through {
                stats.already_committed += 1;
                continue;
            }
            let entry = entry::decode(&record.payload).map_err(malformed)?;
            let stream = match entry.stream.as_str() {
                "" => None,
                name => Some(StreamMark {
                    name: StreamName::parse(name).map_err(|e| malformed(e.to_string()))?,
                    offset: entry.offset_id,
                }),
            };
            table.restore(record.position, entry.batch, record.payload.len(), stream);
            stats.restored += 1;
            // Every record of every table up to this one is restored, so a
            // commit through this position is exact.
            let over_own = table.tail_bytes() >= self.config.tail_budget_bytes;
            if over_own || !self.budget.has_room() {
                let full: Vec<&Arc<Table>> = if over_own {
                    vec![table]
                } else {
                    by_id.values().collect()
                };
                for table in full {
                    if let Some(done) = table.commit_upto(record.position).await? {
                        info!(
                            table = table.name(),
                            version = done.version,
                            rows = done.rows,
                            through = %done.through,
                            "committed during replay: the replayed tail reached its budget"
                        );
                        stats.commits += 1;
                    }
                }
            }
        }
        Ok(stats)
    }

    fn table_from_delta(
        &self,
        name: &str,
        delta: DeltaTable,
        committed: WalPosition,
    ) -> Result<Table> {
        let snapshot = delta.snapshot().map_err(|e| Error::delta(name, e))?;
        let delta_schema = snapshot.schema();
        let arrow = schema::arrow_schema_of(delta_schema.as_ref())?;
        Table::new(
            name.to_string(),
            delta,
            committed,
            arrow,
            &self.node_id,
            Arc::clone(&self.wal),
            self.config.clone(),
            Arc::clone(&self.budget),
        )
    }

    fn table_url(&self, name: &str) -> Result<Url> {
        table_url(&self.root, name)
    }
}

/// Opens the Delta table at `url` and reads the node's `txn` watermark.
async fn load(url: Url, node_id: &str, name: &str) -> Result<(DeltaTable, WalPosition)> {
    let started = Instant::now();
    let delta = delta_builder(url)
        .map_err(|e| Error::delta(name, e))?
        .load()
        .await
        .map_err(|e| Error::delta(name, e))?;
    // The last commit before a crash may have landed without its sync.
    if let Some(version) = delta.version() {
        crate::commit::sync_versions(name, &delta, version..=version).await?;
    }
    let snapshot = delta.snapshot().map_err(|e| Error::delta(name, e))?;
    let committed = snapshot
        .transaction_version(delta.log_store().as_ref(), app_id(node_id, name))
        .await
        .map_err(|e| Error::delta(name, e))?
        .map_or(WalPosition::ZERO, |v| WalPosition(v.max(0) as u64));
    info!(
        table = name,
        version = ?delta.version(),
        committed_through = %committed,
        ms = started.elapsed().as_millis() as u64,
        "loaded table"
    );
    Ok((delta, committed))
}

/// The names of the directories under `root` that may be tables.
async fn list_table_dirs(root: &Url) -> Result<Vec<String>> {
    let (store, prefix) = object_store::parse_url(root)?;
    let listing = store.list_with_delimiter(Some(&prefix)).await?;
    let mut names: Vec<String> = listing
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(str::to_string))
        .filter(|name| validate_name(name).is_ok())
        .collect();
    names.sort();
    Ok(names)
}

/// Whether the table directory at `url` has a `_delta_log`.
async fn has_delta_log(url: &Url) -> Result<bool> {
    let (store, prefix) = object_store::parse_url(url)?;
    let listing = store.list_with_delimiter(Some(&prefix)).await?;
    Ok(listing
        .common_prefixes
        .iter()
        .any(|p| p.filename() == Some("_delta_log")))
}

/// A builder for the Delta table at `url`: on a [`LocalStore`] if the
/// table is on the local disk, so that its commits reach the disk a part
/// at a time.
fn delta_builder(url: Url) -> deltalake::DeltaResult<deltalake::DeltaTableBuilder> {
    let builder = deltalake::DeltaTableBuilder::from_url(url.clone())?;
    Ok(if url.scheme() == "file" {
        builder.with_storage_backend(Arc::new(LocalStore::new()), url)
    } else {
        builder
    })
}

fn table_url(root: &Url, name: &str) -> Result<Url> {
    root.join(&format!("{name}/"))
        .map_err(|e| Error::InvalidStorage {
            location: root.to_string(),
            reason: e.to_string(),
        })
}

/// Table names: a letter or `_`, then letters, digits or `_`; at most 128
/// bytes; stored lower-case, as SQL folds unquoted names.
pub fn validate_name(name: &str) -> Result<()> {
    let invalid = |reason| Error::InvalidTableName {
        name: name.to_string(),
        reason,
    };
    let mut chars = name.chars();
    match chars.next() {
        None => return Err(invalid("it is empty")),
        Some(c) if !(c.is_ascii_lowercase() || c == '_') => {
            return Err(invalid("it must start with a lower-case letter or '_'"));
        }
        Some(_) => {}
    }
    if name.len() > 128 {
        return Err(invalid("it is longer than 128 bytes"));
    }
    if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err(invalid(
            "only lower-case letters, digits and '_' are allowed",
        ));
    }
    Ok(())
}

/// `root` with a trailing slash, so that joining a table name appends.
fn directory_url(mut root: Url) -> Result<Url> {
    if !root.path().ends_with('/') {
        let path = format!("{}/", root.path());
        root.set_path(&path);
    }
    Ok(root)
}

fn local_path(url: &Url) -> Result<std::path::PathBuf> {
    url.to_file_path().map_err(|()| Error::InvalidStorage {
        location: url.to_string(),
        reason: "not a local path".into(),
    })
}
