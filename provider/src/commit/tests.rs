//! Commits that hang, before writing and after landing: they time out, the
//! rows stay in the tail, and nothing is written twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use async_trait::async_trait;
use deltalake::DeltaResult;
use deltalake::logstore::LogStoreRef;
use deltalake::operations::CustomExecuteHandler;
use uuid::Uuid;
use weir_wal::WalConfig;

use super::WriteHook;
use crate::{Catalog, ParquetCompression, Table, TableConfig};

/// Stalls a Delta write before it writes anything, or after its commit
/// landed: a store that stops answering.
struct Stall {
    before: bool,
}

#[async_trait]
impl CustomExecuteHandler for Stall {
    async fn pre_execute(&self, _: &LogStoreRef, _: Uuid) -> DeltaResult<()> {
        if self.before {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Ok(())
    }

    async fn post_execute(&self, _: &LogStoreRef, _: Uuid) -> DeltaResult<()> {
        if !self.before {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Ok(())
    }

    async fn before_post_commit_hook(&self, _: &LogStoreRef, _: bool, _: Uuid) -> DeltaResult<()> {
        Ok(())
    }

    async fn after_post_commit_hook(&self, _: &LogStoreRef, _: bool, _: Uuid) -> DeltaResult<()> {
        Ok(())
    }
}

/// Only the test commits; a commit taking 2 s times out.
fn test_config() -> TableConfig {
    TableConfig {
        commit_timeout: Duration::from_secs(2),
        commit_interval: Duration::from_secs(3600),
        ..TableConfig::for_tests()
    }
}

async fn table(dir: &std::path::Path) -> (Arc<Catalog>, Arc<Table>) {
    table_with(dir, test_config()).await
}

async fn table_with(dir: &std::path::Path, config: TableConfig) -> (Arc<Catalog>, Arc<Table>) {
    let columns = Schema::new(vec![Field::new("id", DataType::Int64, false)]);
    table_of(dir, config, &columns).await
}

/// Table `t` of `columns` in a catalog in `dir`.
async fn table_of(
    dir: &std::path::Path,
    config: TableConfig,
    columns: &Schema,
) -> (Arc<Catalog>, Arc<Table>) {
    let root = url::Url::from_directory_path(dir.join("tables")).unwrap();
    let (catalog, _) = Catalog::open(
        root,
        "node".into(),
        &dir.join("wal"),
        WalConfig::for_tests(),
        config,
    )
    .await
    .unwrap();
    let table = catalog.create_table("t", columns, false).await.unwrap();
    (catalog, table)
}

async fn push(table: &Table, ids: std::ops::Range<i64>) {
    let ids: arrow::array::ArrayRef = Arc::new(Int64Array::from_iter_values(ids));
    push_columns(table, vec![ids]).await;
}

/// Writes one batch of `columns` and waits for it to be durable.
async fn push_columns(table: &Table, columns: Vec<arrow::array::ArrayRef>) {
    let rows = RecordBatch::try_new(Arc::clone(table.schema()), columns).unwrap();
    table
        .enqueue_unsynced(None, 0, rows, 0, None)
        .await
        .unwrap()
        .await
        .unwrap();
}

/// Rows in the Delta table, read from its log and Parquet files.
async fn delta_rows(dir: &std::path::Path) -> i64 {
    let url = url::Url::from_directory_path(dir.join("tables/t")).unwrap();
    let delta = deltalake::open_table(url).await.unwrap();
    delta
        .get_file_uris()
        .unwrap()
        .map(|uri| {
            let path = match url::Url::parse(&uri) {
                Ok(url) => url.to_file_path().unwrap(),
                Err(_) => std::path::PathBuf::from(uri),
            };
            let file = std::fs::File::open(path).unwrap();
            let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
            parquet::file::reader::FileReader::metadata(&reader)
                .file_metadata()
                .num_rows()
        })
        .sum()
}

fn stall(table: &Table, before: bool) {
    *table.write_hook.lock() = Some(WriteHook(Arc::new(Stall { before })));
}

fn tail_rows(table: &Table) -> usize {
    table.stats().tail_rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_hangs_before_writing_times_out_and_the_rows_wait() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, table) = table(dir.path()).await;
    push(&table, 0..10).await;
    stall(&table, true);
    let started = Instant::now();
    let err = table.commit().await.unwrap_err().to_string();
    assert!(err.contains("took longer than 2000 ms"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(tail_rows(&table), 10, "the rows wait in the tail");

    *table.write_hook.lock() = None;
    push(&table, 10..20).await;
    let done = table.commit().await.unwrap().unwrap();
    assert_eq!(done.rows, 20);
    assert_eq!(delta_rows(dir.path()).await, 20);
    catalog.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_lands_and_then_hangs_is_not_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, table) = table(dir.path()).await;
    push(&table, 0..10).await;
    table.commit().await.unwrap();
    push(&table, 10..20).await;
    stall(&table, false);
    // It timed out, but its log entry landed: the check finds it, and the
    // commit counts as done.
    let done = table.commit().await.unwrap().unwrap();
    assert_eq!(done.rows, 10);
    assert_eq!(tail_rows(&table), 0);

    *table.write_hook.lock() = None;
    push(&table, 20..30).await;
    table.commit().await.unwrap();
    assert_eq!(delta_rows(dir.path()).await, 30, "no row written twice");
    catalog.shutdown().await.unwrap();
}

/// After a commit lands, moves the table's Parquet files aside: the sync
/// that follows cannot find them, as a failing disk would refuse them.
struct HideFiles {
    dir: std::path::PathBuf,
}

#[async_trait]
impl CustomExecuteHandler for HideFiles {
    async fn pre_execute(&self, _: &LogStoreRef, _: Uuid) -> DeltaResult<()> {
        Ok(())
    }

    async fn post_execute(&self, _: &LogStoreRef, _: Uuid) -> DeltaResult<()> {
        for file in parquet_files(&self.dir) {
            std::fs::rename(&file, file.with_extension("away")).unwrap();
        }
        Ok(())
    }

    async fn before_post_commit_hook(&self, _: &LogStoreRef, _: bool, _: Uuid) -> DeltaResult<()> {
        Ok(())
    }

    async fn after_post_commit_hook(&self, _: &LogStoreRef, _: bool, _: Uuid) -> DeltaResult<()> {
        Ok(())
    }
}

fn parquet_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_landed_commit_whose_files_cannot_be_synced_keeps_its_rows_in_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, table) = table(dir.path()).await;
    let root = dir.path().join("tables/t");
    push(&table, 0..10).await;
    let needed = table.wal_needed_after();
    *table.write_hook.lock() = Some(WriteHook(Arc::new(HideFiles { dir: root.clone() })));
    let err = table.commit().await.unwrap_err().to_string();
    assert!(
        err.contains("cannot make") && err.contains(".parquet"),
        "{err}"
    );
    assert_eq!(tail_rows(&table), 10, "the rows stay in the tail");
    assert_eq!(table.wal_needed_after(), needed, "and in the WAL");
    // The next attempt syncs the landed version first: still failing, the
    // rows still wait.
    *table.write_hook.lock() = None;
    assert!(table.commit().await.is_err());
    assert_eq!(tail_rows(&table), 10);

    // The files back: the version is synced and counted as committed,
    // nothing is written twice.
    for file in std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()) {
        if file.extension().is_some_and(|e| e == "away") {
            std::fs::rename(&file, file.with_extension("parquet")).unwrap();
        }
    }
    assert_eq!(table.commit().await.unwrap(), None);
    assert_eq!(tail_rows(&table), 0);
    assert!(table.wal_needed_after() > needed);
    assert_eq!(delta_rows(dir.path()).await, 10);
    catalog.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parquet_files_are_written_with_the_configured_codec() {
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::reader::{FileReader, SerializedFileReader};
    for (compression, expected) in [
        (
            ParquetCompression::Zstd,
            Compression::ZSTD(ZstdLevel::try_new(1).unwrap()),
        ),
        (ParquetCompression::Lz4, Compression::LZ4_RAW),
        (ParquetCompression::Uncompressed, Compression::UNCOMPRESSED),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = TableConfig {
            compression,
            ..test_config()
        };
        let (catalog, table) = table_with(dir.path(), config).await;
        push(&table, 0..1000).await;
        table.commit().await.unwrap().unwrap();
        let files = parquet_files(&dir.path().join("tables/t"));
        assert_eq!(files.len(), 1, "{files:?}");
        let reader = SerializedFileReader::new(std::fs::File::open(&files[0]).unwrap()).unwrap();
        let chunk = reader.metadata().row_group(0).column(0).compression();
        // The level is not stored in the file: ZSTD is ZSTD.
        assert_eq!(
            std::mem::discriminant(&chunk),
            std::mem::discriminant(&expected),
            "{compression:?}: {chunk:?}"
        );
        assert_eq!(delta_rows(dir.path()).await, 1000);
        catalog.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_of_many_parts_lands_whole_with_its_floats_split_and_exact() {
    use arrow::array::{Array, Float64Array};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::basic::{Compression, Encoding};

    let dir = tempfile::tempdir().unwrap();
    let config = TableConfig {
        tail_budget_bytes: 64 << 20,
        all_tails_budget_bytes: 64 << 20,
        ..test_config()
    };
    let columns = Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("mag", DataType::Float64, true),
    ]);
    let (catalog, table) = table_of(dir.path(), config, &columns).await;
    // Noisy doubles (they barely compress) and the values that trip up a
    // float layout: more than 5 MiB of Parquet, written in parts.
    let rows = 1_000_000i64;
    let special = [f64::NAN, -0.0, f64::INFINITY, f64::MIN_POSITIVE, f64::MAX];
    let mags: Float64Array = (0..rows)
        .map(|i| match i % 1000 {
            7 => None,
            j if (j as usize) < special.len() => Some(special[j as usize]),
            _ => Some(f64::from_bits(0x3ff0_0000_0000_0000 | mix(i as u64) >> 12)),
        })
        .collect();
    push_columns(
        &table,
        vec![
            Arc::new(Int64Array::from_iter_values(0..rows)),
            Arc::new(mags.clone()),
        ],
    )
    .await;
    table.commit().await.unwrap().unwrap();

    let table_dir = dir.path().join("tables/t");
    let names: Vec<String> = std::fs::read_dir(&table_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| !n.contains('#')),
        "staging files left: {names:?}"
    );
    let files = parquet_files(&table_dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let size = std::fs::metadata(&files[0]).unwrap().len();
    assert!(size > 5 << 20, "{size} bytes: more than one 5 MiB part");
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&files[0]).unwrap()).unwrap();
    let chunk = builder.metadata().row_group(0).column(1);
    assert_eq!(chunk.compression(), Compression::LZ4_RAW);
    assert!(
        chunk.encodings().any(|e| e == Encoding::BYTE_STREAM_SPLIT),
        "{:?}",
        chunk.encodings().collect::<Vec<_>>()
    );
    // Rows may come back in another order: match them by id.
    let mut read = vec![None; rows as usize];
    for batch in builder.build().unwrap() {
        let batch = batch.unwrap();
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        let values = batch
            .column(1)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        for (id, value) in ids.iter().zip(values.iter()) {
            let slot = &mut read[id.unwrap() as usize];
            assert!(slot.is_none(), "row {id:?} read twice");
            *slot = Some(value.map(f64::to_bits));
        }
    }
    for (id, (read, written)) in read.iter().zip(mags.iter()).enumerate() {
        assert_eq!(
            *read,
            Some(written.map(f64::to_bits)),
            "row {id}: the double read back differs"
        );
    }
    assert_eq!(mags.null_count(), 1000);
    catalog.shutdown().await.unwrap();
}

/// SplitMix64's finalizer: noise for the low bytes of a double.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Whether a commit is wanted now (takes the wake-up if there is one).
async fn commit_wanted(table: &Table) -> bool {
    let wanted = table.commit_wanted.notified();
    tokio::time::timeout(Duration::from_millis(100), wanted)
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_a_commit_is_writing_do_not_count_toward_the_next_one() {
    // The bytes of one push of 1,000 ids, from a table of its own.
    let bytes = {
        let dir = tempfile::tempdir().unwrap();
        let (catalog, table) = table(dir.path()).await;
        push(&table, 0..1000).await;
        catalog.stop_committers();
        table.tail_bytes()
    };
    let dir = tempfile::tempdir().unwrap();
    let config = TableConfig {
        commit_target_bytes: bytes + bytes / 2,
        ..test_config()
    };
    let (catalog, table) = table_with(dir.path(), config).await;
    catalog.stop_committers();
    push(&table, 0..1000).await;
    assert!(!commit_wanted(&table).await, "below the target");
    push(&table, 1000..2000).await;
    assert!(commit_wanted(&table).await, "at the target");

    // A commit of those two pushes, stalled before it writes.
    stall(&table, true);
    let committing = {
        let table = Arc::clone(&table);
        tokio::spawn(async move { table.commit().await })
    };
    while table.state.lock().committing_bytes == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    push(&table, 2000..3000).await;
    assert!(
        !commit_wanted(&table).await,
        "the tail is past the target only with the rows being committed"
    );
    push(&table, 3000..4000).await;
    assert!(commit_wanted(&table).await, "past the target without them");

    // The commit times out: its rows count again.
    assert!(committing.await.unwrap().is_err());
    assert_eq!(table.state.lock().committing_bytes, 0);
    push(&table, 4000..4001).await;
    assert!(commit_wanted(&table).await);
    *table.write_hook.lock() = None;
    catalog.shutdown().await.unwrap();
}
