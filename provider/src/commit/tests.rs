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
use crate::{Catalog, Table, TableConfig};

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

async fn table(dir: &std::path::Path) -> (Arc<Catalog>, Arc<Table>) {
    let root = url::Url::from_directory_path(dir.join("tables")).unwrap();
    // Only the test commits.
    let config = TableConfig {
        commit_timeout: Duration::from_secs(2),
        commit_interval: Duration::from_secs(3600),
        ..TableConfig::for_tests()
    };
    let (catalog, _) = Catalog::open(
        root,
        "node".into(),
        &dir.join("wal"),
        WalConfig::for_tests(),
        config,
    )
    .await
    .unwrap();
    let columns = Schema::new(vec![Field::new("id", DataType::Int64, false)]);
    let table = catalog.create_table("t", &columns, false).await.unwrap();
    (catalog, table)
}

async fn push(table: &Table, ids: std::ops::Range<i64>) {
    let rows = RecordBatch::try_new(
        Arc::clone(table.schema()),
        vec![Arc::new(Int64Array::from_iter_values(ids))],
    )
    .unwrap();
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
