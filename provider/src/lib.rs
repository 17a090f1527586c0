//! weir's tables: the Delta committer and the DataFusion provider that
//! unions committed Delta files with the not-yet-committed WAL tail.
//!
//! - [`Catalog`]: the tables of a node. Creates and drops Delta tables under
//!   a storage root, replays the WAL into the tables on start, runs one
//!   committer per table and deletes WAL segments no table needs.
//! - [`Table`]: one table. Ingest calls [`Table::conform`] and
//!   [`Table::enqueue_unsynced`]; queries call [`Table::cut`]; the committer
//!   calls [`Table::commit`].
//! - [`TableScanProvider`]: the DataFusion `TableProvider` over a table.
//! - [`TailBudget`]: the byte budget all tables' tails share.
//! - [`entry`]: the payload a table writes into the WAL.
//! - [`schema`]: SQL and Delta types and their canonical Arrow form.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use arrow::array::{Int64Array, RecordBatch};
//! use arrow::datatypes::{DataType, Field, Schema};
//! use weir_provider::{Catalog, TableConfig};
//! use weir_wal::WalConfig;
//!
//! let dir = tempfile::tempdir()?;
//! let root = url::Url::from_directory_path(dir.path().join("tables")).unwrap();
//! let wal = dir.path().join("wal");
//! let (catalog, _) =
//!     Catalog::open(root, "node-1".into(), &wal, WalConfig::for_tests(), TableConfig::for_tests())
//!         .await?;
//!
//! let columns = Schema::new(vec![Field::new("id", DataType::Int64, false)]);
//! let table = catalog.create_table("sensors", &columns, false).await?;
//! let rows = RecordBatch::try_new(
//!     Arc::clone(table.schema()),
//!     vec![Arc::new(Int64Array::from(vec![1, 2, 3]))],
//! )?;
//! let rows = table.conform(&rows, &weir_codec::Limits::default())?;
//! table.enqueue_unsynced(None, 0, rows, 0, None).await?.await?; // durable and visible
//! assert_eq!(table.cut().tail.len(), 1);
//!
//! let commit = table.commit().await?.expect("rows to commit");
//! assert_eq!(commit.rows, 3);
//! assert!(table.cut().tail.is_empty());
//! catalog.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod budget;
mod catalog;
mod commit;
pub mod entry;
mod error;
mod local_store;
mod scan;
pub mod schema;
mod streams;
mod table;

pub use budget::TailBudget;
pub use catalog::{Catalog, ReplayStats, validate_name};
pub use commit::CommitOutcome;
pub use error::{Error, Result};
pub use scan::TableScanProvider;
pub use streams::{InvalidStreamName, MAX_STREAM_NAME_LEN, StreamName};
pub use table::{Cut, FloatColumns, ParquetCompression, Table, TableConfig, TableStats};
