//! weir's SQL engine over a node's tables. (The `weir sql` client is in
//! the `weir` binary, on `weir-client`'s FlightSQL API.)
//!
//! - [`SqlEngine`]: plans and runs SQL against a [`Catalog`]. Planning
//!   ([`SqlEngine::prepare`]) changes nothing and gives a [`Prepared`]
//!   statement, with its result and parameter schemas: a query runs on
//!   DataFusion over each table's [`TableScanProvider`]; `CREATE TABLE` and
//!   `DROP TABLE` create and delete Delta tables when applied; an `INSERT`
//!   plans its rows, which the server writes through the WAL. `SHOW
//!   TABLES` and `DESCRIBE` come from DataFusion's information schema.
//!   Each query runs in a bounded memory pool ([`memory`]).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # use std::sync::Arc;
//! # let dir = tempfile::tempdir()?;
//! # let root = url::Url::from_directory_path(dir.path().join("tables")).unwrap();
//! # let (catalog, _) = weir_provider::Catalog::open(
//! #     root, "n".into(), &dir.path().join("wal"), weir_wal::WalConfig::for_tests(),
//! #     weir_provider::TableConfig::for_tests()).await?;
//! use weir_sql::{Outcome, QueryConfig, SqlEngine};
//!
//! let engine = SqlEngine::new(catalog, QueryConfig::for_tests())?;
//! engine.run("CREATE TABLE sensors (id BIGINT NOT NULL, site VARCHAR)").await?;
//! let Outcome::Rows(batches) = engine.run("SELECT count(*) AS n FROM sensors").await? else {
//!     unreachable!()
//! };
//! assert_eq!(arrow::util::pretty::pretty_format_batches(&batches)?.to_string(),
//!     "+---+\n| n |\n+---+\n| 0 |\n+---+");
//! # Ok(())
//! # }
//! ```
//!
//! [`Catalog`]: weir_provider::Catalog
//! [`TableScanProvider`]: weir_provider::TableScanProvider

mod engine;
mod error;
pub mod memory;

pub use engine::{Access, INSERT_COUNT, Outcome, Prepared, QueryConfig, SqlEngine};
pub use error::{Error, Result};
