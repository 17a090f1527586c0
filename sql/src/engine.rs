//! Running SQL over a node's tables.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::TableReference;
use datafusion::error::Result as DFResult;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use futures::TryStreamExt;
use weir_provider::{Catalog, TableScanProvider};

use crate::{Error, Result};

/// Runs SQL statements against a [`Catalog`].
#[derive(Debug, Clone)]
pub struct SqlEngine {
    catalog: Arc<Catalog>,
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
    /// An engine over `catalog`.
    pub fn new(catalog: Arc<Catalog>) -> Self {
        Self { catalog }
    }

    /// The catalog this engine queries.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// A DataFusion session whose default schema is this node's tables.
    pub fn context(&self) -> SessionContext {
        let config = SessionConfig::new().with_information_schema(true).set_bool(
            "datafusion.execution.parquet.schema_force_view_types",
            false,
        );
        let context = SessionContext::new_with_config(config);
        let schema = Arc::new(WeirSchema {
            catalog: Arc::clone(&self.catalog),
        });
        context
            .catalog("datafusion")
            .expect("the default catalog exists")
            .register_schema("public", schema)
            .expect("the default catalog accepts schemas");
        context
    }

    /// Plans `sql`. DDL runs here, so that a statement with effects runs
    /// exactly once, whatever the client does next.
    pub async fn prepare(&self, sql: &str) -> Result<Prepared> {
        let context = self.context();
        let state = context.state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state.sql_to_statement(sql, &dialect)?;
        let plan = if is_show_tables(&statement) {
            state.create_logical_plan(SHOW_TABLES).await?
        } else {
            state.statement_to_plan(statement).await?
        };
        match plan {
            LogicalPlan::Ddl(ddl) => {
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
