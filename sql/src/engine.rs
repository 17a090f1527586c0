//! Running SQL over a node's tables.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::TableReference;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result as DFResult;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use futures::TryStreamExt;
use weir_provider::{Catalog, TableScanProvider};

use crate::memory::{QueryPool, SharedPool};
use crate::{Error, Result};

/// How much memory and disk queries may use.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// All queries together (`limits.query_memory_bytes`).
    pub memory_bytes: usize,
    /// One query (`limits.query_memory_per_query_bytes`).
    pub per_query_bytes: usize,
    /// Where queries spill; `None` turns spilling off.
    pub spill_dir: Option<PathBuf>,
}

impl QueryConfig {
    /// 256 MiB for all queries, 128 MiB each, no spilling.
    pub fn for_tests() -> Self {
        Self {
            memory_bytes: 256 << 20,
            per_query_bytes: 128 << 20,
            spill_dir: None,
        }
    }
}

/// Runs SQL statements against a [`Catalog`].
#[derive(Debug, Clone)]
pub struct SqlEngine {
    catalog: Arc<Catalog>,
    pool: Arc<SharedPool>,
    per_query_bytes: usize,
    /// Disk manager and caches shared by every query.
    runtime: Arc<RuntimeEnv>,
}

/// What a statement does, for an access check (see
/// [`SqlEngine::prepare_checked`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<'a> {
    /// It reads this table.
    Read(&'a str),
    /// It creates or drops a table.
    Ddl,
}

/// A statement planned but not run, or a statement already done.
#[expect(
    clippy::large_enum_variant,
    reason = "one per statement, moved once; boxing buys nothing"
)]
pub enum Prepared {
    /// A query: run it with [`SqlEngine::execute`].
    Query {
        plan: LogicalPlan,
        context: SessionContext,
    },
    /// A statement with effects (DDL), already applied.
    Done,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Prepared::Query { plan, .. } => f.debug_struct("Query").field("plan", plan).finish(),
            Prepared::Done => f.write_str("Done"),
        }
    }
}

/// The result of [`SqlEngine::run`].
#[derive(Debug)]
pub enum Outcome {
    /// A query's rows.
    Rows(Vec<RecordBatch>),
    /// A statement with effects was applied.
    Done,
}

impl SqlEngine {
    /// An engine over `catalog` whose queries use at most what `config`
    /// allows. Fails if the spill directory cannot be set up.
    pub fn new(catalog: Arc<Catalog>, config: QueryConfig) -> Result<Self> {
        let mode = match &config.spill_dir {
            Some(dir) => DiskManagerMode::Directories(vec![dir.clone()]),
            None => DiskManagerMode::Disabled,
        };
        let runtime = RuntimeEnvBuilder::new()
            .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(mode))
            .build_arc()?;
        Ok(Self {
            catalog,
            pool: Arc::new(SharedPool::new(config.memory_bytes)),
            per_query_bytes: config.per_query_bytes,
            runtime,
        })
    }

    /// The memory all queries share.
    pub fn pool(&self) -> &Arc<SharedPool> {
        &self.pool
    }

    /// The directories queries spill to (empty if spilling is off).
    pub fn spill_dirs(&self) -> Vec<PathBuf> {
        self.runtime.disk_manager.temp_dir_paths()
    }

    /// The catalog this engine queries.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// A DataFusion session whose default schema is this node's tables,
    /// with a memory pool of its own (see [`crate::memory`]). One per
    /// statement.
    pub fn context(&self) -> Result<SessionContext> {
        let config = SessionConfig::new().with_information_schema(true).set_bool(
            "datafusion.execution.parquet.schema_force_view_types",
            false,
        );
        let pool = QueryPool::new(Arc::clone(&self.pool), self.per_query_bytes);
        let runtime = RuntimeEnvBuilder::from_runtime_env(&self.runtime)
            .with_memory_pool(Arc::new(pool))
            .build_arc()?;
        let context = SessionContext::new_with_config_rt(config, runtime);
        let schema = Arc::new(WeirSchema {
            catalog: Arc::clone(&self.catalog),
        });
        context
            .catalog("datafusion")
            .expect("the default catalog exists")
            .register_schema("public", schema)
            .expect("the default catalog accepts schemas");
        Ok(context)
    }

    /// Plans `sql`. DDL runs here, so that a statement with effects runs
    /// exactly once, whatever the client does next.
    pub async fn prepare(&self, sql: &str) -> Result<Prepared> {
        self.prepare_checked(sql, &|_| Ok(())).await
    }

    /// [`SqlEngine::prepare`], asking `allow` first about every table the
    /// statement reads and about DDL; an `Err(reason)` refuses the
    /// statement with [`Error::Denied`] before anything runs.
    pub async fn prepare_checked(
        &self,
        sql: &str,
        allow: &(dyn Fn(Access<'_>) -> std::result::Result<(), String> + Sync),
    ) -> Result<Prepared> {
        let context = self.context()?;
        let state = context.state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state.sql_to_statement(sql, &dialect)?;
        // Before planning, whose errors could show a table's columns; the
        // table a CREATE TABLE names is not read.
        if !is_create_table(&statement) {
            for table in state.resolve_table_references(&statement)? {
                check_read(allow, &table)?;
            }
        }
        let plan = if is_show_tables(&statement) {
            state.create_logical_plan(SHOW_TABLES).await?
        } else {
            state.statement_to_plan(statement).await?
        };
        // And every table the plan scans, which also covers what the
        // references miss (a recursive CTE named like a table, CTAS).
        let mut denied = None;
        plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node
                && let Err(e) = check_read(allow, &scan.table_name)
            {
                denied = Some(e);
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        if let Some(e) = denied {
            return Err(e);
        }
        match plan {
            LogicalPlan::Ddl(ddl) => {
                allow(Access::Ddl).map_err(Error::Denied)?;
                self.apply_ddl(ddl).await?;
                Ok(Prepared::Done)
            }
            LogicalPlan::Dml(_) | LogicalPlan::Copy(_) => Err(Error::Unsupported(
                "INSERT, UPDATE, DELETE and COPY are not supported: push rows with Arrow Flight \
                 DoPut (see the README)"
                    .into(),
            )),
            plan => Ok(Prepared::Query { plan, context }),
        }
    }

    /// Runs a planned query.
    pub async fn execute(
        &self,
        plan: LogicalPlan,
        context: &SessionContext,
    ) -> Result<SendableRecordBatchStream> {
        let frame = context.execute_logical_plan(plan).await?;
        Ok(frame.execute_stream().await?)
    }

    /// Prepares and runs `sql`, collecting the rows.
    pub async fn run(&self, sql: &str) -> Result<Outcome> {
        match self.prepare(sql).await? {
            Prepared::Done => Ok(Outcome::Done),
            Prepared::Query { plan, context } => {
                let stream = self.execute(plan, &context).await?;
                Ok(Outcome::Rows(stream.try_collect().await?))
            }
        }
    }

    /// The schema a statement's result will have (empty for DDL).
    pub fn result_schema(prepared: &Prepared) -> SchemaRef {
        match prepared {
            Prepared::Query { plan, .. } => Arc::clone(plan.schema().inner()),
            Prepared::Done => Arc::new(Schema::empty()),
        }
    }

    async fn apply_ddl(&self, ddl: DdlStatement) -> Result<()> {
        match ddl {
            DdlStatement::CreateMemoryTable(create) => {
                if !matches!(create.input.as_ref(), LogicalPlan::EmptyRelation(_)) {
                    return Err(Error::Unsupported(
                        "CREATE TABLE ... AS SELECT is not supported: declare the columns".into(),
                    ));
                }
                if create.or_replace {
                    return Err(Error::Unsupported(
                        "CREATE OR REPLACE TABLE is not supported: DROP TABLE first".into(),
                    ));
                }
                let name = local_name(&create.name)?;
                let columns = create.input.schema().as_arrow();
                self.catalog
                    .create_table(name, columns, create.if_not_exists)
                    .await?;
                Ok(())
            }
            DdlStatement::DropTable(drop) => {
                let name = local_name(&drop.name)?;
                self.catalog.drop_table(name, drop.if_exists).await?;
                Ok(())
            }
            other => Err(Error::Unsupported(format!(
                "{} is not supported; weir supports CREATE TABLE and DROP TABLE",
                other.name()
            ))),
        }
    }
}

/// `SHOW TABLES` lists the node's tables only, not DataFusion's
/// information schema views.
const SHOW_TABLES: &str = "SELECT table_name FROM information_schema.tables \
     WHERE table_schema = 'public' ORDER BY table_name";

fn is_create_table(statement: &DFStatement) -> bool {
    matches!(statement, DFStatement::Statement(s) if matches!(s.as_ref(), SqlStatement::CreateTable(_)))
}

/// Asks `allow` about reading `table`. The catalog's own views (table
/// names and schemas) are open to anyone.
fn check_read(
    allow: &(dyn Fn(Access<'_>) -> std::result::Result<(), String> + Sync),
    table: &TableReference,
) -> Result<()> {
    if table.schema() == Some("information_schema") {
        return Ok(());
    }
    allow(Access::Read(table.table())).map_err(Error::Denied)
}

fn is_show_tables(statement: &DFStatement) -> bool {
    matches!(statement, DFStatement::Statement(s) if matches!(s.as_ref(), SqlStatement::ShowTables { .. }))
}

/// The table part of a name, which may be qualified only by the defaults.
fn local_name(name: &TableReference) -> Result<&str> {
    let default_schema = name.schema().is_none_or(|s| s == "public");
    let default_catalog = name.catalog().is_none_or(|c| c == "datafusion");
    if default_schema && default_catalog {
        Ok(name.table())
    } else {
        Err(Error::Unsupported(format!(
            "table {name}: weir has one schema; use the table name alone"
        )))
    }
}

/// The node's tables as DataFusion's default schema.
#[derive(Debug)]
struct WeirSchema {
    catalog: Arc<Catalog>,
}

#[async_trait]
impl SchemaProvider for WeirSchema {
    fn table_names(&self) -> Vec<String> {
        self.catalog.table_names()
    }

    async fn table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        Ok(self
            .catalog
            .table(name)
            .ok()
            .map(|t| Arc::new(TableScanProvider::new(t)) as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.catalog.table(name).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn engine(config: QueryConfig) -> (SqlEngine, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let root = url::Url::from_directory_path(dir.path().join("tables")).unwrap();
        let (catalog, _) = Catalog::open(
            root,
            "n".into(),
            &dir.path().join("wal"),
            weir_wal::WalConfig::for_tests(),
            weir_provider::TableConfig::for_tests(),
        )
        .await
        .unwrap();
        (SqlEngine::new(catalog, config).unwrap(), dir)
    }

    #[tokio::test]
    async fn queries_spill_under_the_given_directory_and_stop_at_their_limit() {
        let spill = tempfile::tempdir().unwrap();
        let (engine, _dir) = engine(QueryConfig {
            memory_bytes: 64 << 20,
            per_query_bytes: 16 << 20,
            spill_dir: Some(spill.path().to_path_buf()),
        })
        .await;
        let dirs = engine.spill_dirs();
        assert!(!dirs.is_empty());
        assert!(dirs.iter().all(|d| d.starts_with(spill.path())), "{dirs:?}");

        let err = engine
            .run(
                "SELECT length(string_agg(repeat('x', 10000), '')) FROM \
                 generate_series(1, 10000) AS t(v)",
            )
            .await
            .unwrap_err();
        assert!(err.is_resources_exhausted(), "{err}");
        assert!(
            err.to_string()
                .contains("limits.query_memory_per_query_bytes"),
            "{err}"
        );
        assert_eq!(
            engine.pool().used(),
            0,
            "the failed query gave its memory back"
        );
        assert!(engine.run("SELECT 1").await.is_ok());
    }
}
