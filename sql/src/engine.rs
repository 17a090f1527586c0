//! Running SQL over a node's tables.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ParamValues, ScalarValue, TableReference};
use datafusion::error::Result as DFResult;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{DdlStatement, DmlStatement, LogicalPlan, WriteOp};
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
    /// It adds rows to this table (`INSERT`).
    Write(&'a str),
    /// It creates or drops a table.
    Ddl,
}

/// A statement planned, checked and not run: planning never changes
/// anything, so a statement runs exactly once, when it is executed.
pub enum Prepared {
    /// A query: run it with [`SqlEngine::execute`].
    Query {
        plan: LogicalPlan,
        context: SessionContext,
    },
    /// `CREATE TABLE` or `DROP TABLE`: run it with [`SqlEngine::apply`].
    Ddl(DdlStatement),
    /// `INSERT INTO table ...`: `plan` makes the rows, already cast to the
    /// table's columns; the caller writes them (through the WAL, like any
    /// other rows).
    Insert {
        table: String,
        plan: LogicalPlan,
        context: SessionContext,
    },
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Prepared::Query { plan, .. } => f.debug_struct("Query").field("plan", plan).finish(),
            Prepared::Ddl(ddl) => f.debug_tuple("Ddl").field(&ddl.name()).finish(),
            Prepared::Insert { table, plan, .. } => f
                .debug_struct("Insert")
                .field("table", table)
                .field("plan", plan)
                .finish(),
        }
    }
}

/// The column of an `INSERT`'s result: the rows it added.
pub const INSERT_COUNT: &str = "count";

impl Prepared {
    /// The schema of the statement's result: a query's columns, an
    /// `INSERT`'s row count ([`INSERT_COUNT`]), nothing for DDL.
    pub fn result_schema(&self) -> SchemaRef {
        match self {
            Prepared::Query { plan, .. } => Arc::clone(plan.schema().inner()),
            Prepared::Insert { .. } => Arc::new(Schema::new(vec![Field::new(
                INSERT_COUNT,
                DataType::UInt64,
                false,
            )])),
            Prepared::Ddl(_) => Arc::new(Schema::empty()),
        }
    }

    /// The statement's parameters (`$1`, `$2`, ... or `$name`), in order,
    /// with the type each must have where the statement says it (a
    /// parameter compared with a column, or inserted into one); `Null`
    /// where it does not.
    pub fn parameter_schema(&self) -> Result<SchemaRef> {
        let plan = match self {
            Prepared::Query { plan, .. } | Prepared::Insert { plan, .. } => plan,
            Prepared::Ddl(_) => return Ok(Arc::new(Schema::empty())),
        };
        let mut parameters: Vec<(String, Option<DataType>)> =
            plan.get_parameter_types()?.into_iter().collect();
        // `$2` after `$1`, `$10` after `$9`; names after numbers.
        parameters.sort_by_key(|(name, _)| {
            let number = name.trim_start_matches('$').parse::<u64>().ok();
            (number.is_none(), number, name.clone())
        });
        Ok(Arc::new(Schema::new(
            parameters
                .into_iter()
                .map(|(name, data_type)| {
                    Field::new(name, data_type.unwrap_or(DataType::Null), true)
                })
                .collect::<Vec<_>>(),
        )))
    }

    /// The statement with its parameters replaced by `values`, one per
    /// field of [`Prepared::parameter_schema`], in that order. Values are
    /// cast to a parameter's type where it has one; a value that does not
    /// cast, or a count that does not match, is an error naming it.
    pub fn bind(self, values: Vec<ScalarValue>) -> Result<Self> {
        let schema = self.parameter_schema()?;
        if values.len() != schema.fields().len() {
            return Err(Error::Unsupported(format!(
                "the statement has {} parameters and {} values were bound",
                schema.fields().len(),
                values.len()
            )));
        }
        if values.is_empty() {
            return Ok(self);
        }
        let mut cast = Vec::with_capacity(values.len());
        for (value, field) in values.into_iter().zip(schema.fields()) {
            let wanted = field.data_type();
            if *wanted == DataType::Null || value.data_type() == *wanted {
                cast.push(value);
                continue;
            }
            cast.push(value.cast_to(wanted).map_err(|e| {
                Error::Unsupported(format!(
                    "parameter {}: a {} value does not fit {wanted}: {e}",
                    field.name(),
                    value.data_type()
                ))
            })?);
        }
        // `$1`, `$2`, ... are bound by position; any other naming (`$2`
        // alone, `$site`) by name.
        let numbered = schema
            .fields()
            .iter()
            .enumerate()
            .all(|(i, f)| *f.name() == format!("${}", i + 1));
        let values = if numbered {
            ParamValues::from(cast)
        } else {
            ParamValues::from(
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().trim_start_matches('$').to_string())
                    .zip(cast)
                    .collect::<Vec<_>>(),
            )
        };
        Ok(match self {
            Prepared::Query { plan, context } => Prepared::Query {
                plan: plan.with_param_values(values)?,
                context,
            },
            Prepared::Insert {
                table,
                plan,
                context,
            } => Prepared::Insert {
                table,
                plan: plan.with_param_values(values)?,
                context,
            },
            ddl @ Prepared::Ddl(_) => ddl,
        })
    }
}

/// The result of [`SqlEngine::run`].
#[derive(Debug)]
pub enum Outcome {
    /// A query's rows.
    Rows(Vec<RecordBatch>),
    /// A DDL statement was applied.
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

    /// Plans `sql`, changing nothing: DDL runs in [`SqlEngine::apply`],
    /// a query in [`SqlEngine::execute`].
    pub async fn prepare(&self, sql: &str) -> Result<Prepared> {
        self.prepare_checked(sql, &|_| Ok(())).await
    }

    /// [`SqlEngine::prepare`], asking `allow` first about every table the
    /// statement reads or inserts into and about DDL; an `Err(reason)`
    /// refuses the statement with [`Error::Denied`].
    pub async fn prepare_checked(
        &self,
        sql: &str,
        allow: &(dyn Fn(Access<'_>) -> std::result::Result<(), String> + Sync),
    ) -> Result<Prepared> {
        let context = self.context()?;
        let state = context.state();
        let dialect = state.config().options().sql_parser.dialect;
        let sql = number_question_marks(sql)?;
        let statement = state.sql_to_statement(&sql, &dialect)?;
        // Before planning, whose errors could show a table's columns; the
        // table a CREATE TABLE names is not read.
        if !is_create_table(&statement) {
            let target = insert_target(&statement);
            for table in state.resolve_table_references(&statement)? {
                if target.as_deref() == Some(table.table()) {
                    allow(Access::Write(table.table())).map_err(Error::Denied)?;
                } else {
                    check_read(allow, &table)?;
                }
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
                check_ddl(&ddl)?;
                Ok(Prepared::Ddl(ddl))
            }
            LogicalPlan::Dml(DmlStatement {
                table_name,
                op: WriteOp::Insert(InsertOp::Append),
                input,
                ..
            }) => {
                let table = local_name(&table_name)?.to_string();
                allow(Access::Write(&table)).map_err(Error::Denied)?;
                Ok(Prepared::Insert {
                    table,
                    plan: Arc::unwrap_or_clone(input),
                    context,
                })
            }
            LogicalPlan::Dml(dml) => Err(Error::Unsupported(format!(
                "{} is not supported: weir appends rows (INSERT INTO ... VALUES or SELECT, \
                 DoPut, bulk ingest) and never rewrites them",
                dml.op.name().to_uppercase()
            ))),
            LogicalPlan::Copy(_) => Err(Error::Unsupported(
                "COPY is not supported: push rows with Arrow Flight DoPut or bulk ingest (see \
                 the README)"
                    .into(),
            )),
            plan => {
                refuse_nested_effects(&plan)?;
                Ok(Prepared::Query { plan, context })
            }
        }
    }

    /// Runs a planned DDL statement.
    pub async fn apply(&self, ddl: DdlStatement) -> Result<()> {
        check_ddl(&ddl)?;
        match ddl {
            DdlStatement::CreateMemoryTable(create) => {
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
            other => Err(unsupported_ddl(&other)),
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

    /// Prepares and runs a query or DDL statement, collecting the rows.
    /// (An `INSERT` is the caller's to write: see [`Prepared::Insert`].)
    pub async fn run(&self, sql: &str) -> Result<Outcome> {
        match self.prepare(sql).await? {
            Prepared::Ddl(ddl) => {
                self.apply(ddl).await?;
                Ok(Outcome::Done)
            }
            Prepared::Query { plan, context } => {
                let stream = self.execute(plan, &context).await?;
                Ok(Outcome::Rows(stream.try_collect().await?))
            }
            Prepared::Insert { .. } => Err(Error::Unsupported(
                "INSERT needs a server: it writes through the WAL".into(),
            )),
        }
    }
}

/// `sql` with its `?` placeholders (JDBC's and ODBC's, and many Python
/// drivers') numbered `$1`, `$2`, ... in the order they appear, which is
/// how DataFusion binds by position. Strings, quoted names and comments are
/// left as they are; a statement with both kinds is refused.
fn number_question_marks(sql: &str) -> Result<std::borrow::Cow<'_, str>> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location() else {
        // The parser reports the error.
        return Ok(sql.into());
    };
    let placeholders: Vec<_> = tokens
        .iter()
        .filter_map(|t| match &t.token {
            Token::Placeholder(name) => Some((name.as_str(), t.span.start)),
            _ => None,
        })
        .collect();
    let marks = placeholders.iter().filter(|(name, _)| *name == "?").count();
    if marks == 0 {
        return Ok(sql.into());
    }
    if marks != placeholders.len() {
        return Err(Error::Unsupported(
            "the statement mixes ? with named or numbered parameters: use one kind".into(),
        ));
    }
    // Line and column (in characters, from 1) to byte offsets.
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let mut numbered = String::with_capacity(sql.len() + 2 * marks);
    let mut copied = 0;
    for (n, (_, at)) in placeholders.iter().enumerate() {
        let line = line_starts[usize::try_from(at.line).unwrap_or(1).saturating_sub(1)];
        let column = usize::try_from(at.column).unwrap_or(1).saturating_sub(1);
        let offset = sql[line..]
            .char_indices()
            .nth(column)
            .map_or(sql.len(), |(i, _)| line + i);
        numbered.push_str(&sql[copied..offset]);
        numbered.push_str(&format!("${}", n + 1));
        copied = offset + 1;
    }
    numbered.push_str(&sql[copied..]);
    Ok(numbered.into())
}

/// Refuses a query that holds a statement with effects (`EXPLAIN ANALYZE
/// COPY ...` writes files, `EXPLAIN ANALYZE INSERT ...` would write around
/// the WAL) or changes the session (`SET`): a query only reads.
fn refuse_nested_effects(plan: &LogicalPlan) -> Result<()> {
    let mut found = None;
    plan.apply_with_subqueries(|node| {
        found = match node {
            LogicalPlan::Copy(_) => Some("COPY".to_string()),
            LogicalPlan::Dml(dml) => Some(dml.op.name().to_uppercase()),
            LogicalPlan::Ddl(ddl) => Some(ddl.name().to_string()),
            LogicalPlan::Statement(_) => Some("a session statement".to_string()),
            _ => None,
        };
        Ok(if found.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })?;
    match found {
        Some(what) => Err(Error::Unsupported(format!(
            "{what} is not supported inside a query (EXPLAIN, a subquery): run \
             statements with effects on their own"
        ))),
        None => Ok(()),
    }
}

/// Refuses, at planning, the DDL that [`SqlEngine::apply`] does not run.
fn check_ddl(ddl: &DdlStatement) -> Result<()> {
    match ddl {
        DdlStatement::CreateMemoryTable(create) => {
            if !matches!(create.input.as_ref(), LogicalPlan::EmptyRelation(_)) {
                return Err(Error::Unsupported(
                    "CREATE TABLE ... AS SELECT is not supported: declare the columns, then \
                     INSERT INTO ... SELECT"
                        .into(),
                ));
            }
            if create.or_replace {
                return Err(Error::Unsupported(
                    "CREATE OR REPLACE TABLE is not supported: DROP TABLE first".into(),
                ));
            }
            local_name(&create.name).map(|_| ())
        }
        DdlStatement::DropTable(drop) => local_name(&drop.name).map(|_| ()),
        other => Err(unsupported_ddl(other)),
    }
}

fn unsupported_ddl(ddl: &DdlStatement) -> Error {
    Error::Unsupported(format!(
        "{} is not supported; weir supports CREATE TABLE and DROP TABLE",
        ddl.name()
    ))
}

/// The table an `INSERT` adds to, as table references name it (unquoted
/// names lower-cased).
fn insert_target(statement: &DFStatement) -> Option<String> {
    let DFStatement::Statement(s) = statement else {
        return None;
    };
    let SqlStatement::Insert(insert) = s.as_ref() else {
        return None;
    };
    let datafusion::sql::sqlparser::ast::TableObject::TableName(name) = &insert.table else {
        return None;
    };
    let last = name.0.last()?.as_ident()?;
    Some(match last.quote_style {
        Some(_) => last.value.clone(),
        None => last.value.to_lowercase(),
    })
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

    #[tokio::test]
    async fn planning_ddl_changes_nothing_until_it_is_applied() {
        let (engine, _dir) = engine(QueryConfig::for_tests()).await;
        let Prepared::Ddl(create) = engine.prepare("CREATE TABLE t (a INT)").await.unwrap() else {
            panic!("CREATE TABLE is DDL");
        };
        assert!(
            engine.catalog().table_names().is_empty(),
            "planned, not run"
        );
        engine.apply(create).await.unwrap();
        assert_eq!(engine.catalog().table_names(), ["t"]);

        let Prepared::Ddl(drop) = engine.prepare("DROP TABLE t").await.unwrap() else {
            panic!("DROP TABLE is DDL");
        };
        assert_eq!(engine.catalog().table_names(), ["t"], "planned, not run");
        engine.apply(drop).await.unwrap();
        assert!(engine.catalog().table_names().is_empty());
    }

    #[tokio::test]
    async fn parameters_take_their_column_types_and_bind_by_position() {
        let (engine, _dir) = engine(QueryConfig::for_tests()).await;
        engine
            .run("CREATE TABLE t (id BIGINT NOT NULL, site VARCHAR)")
            .await
            .unwrap();
        let sql = "SELECT $2 AS echo FROM t WHERE id = $1";
        let prepared = engine.prepare(sql).await.unwrap();
        let schema = prepared.parameter_schema().unwrap();
        let fields: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), f.data_type().clone()))
            .collect();
        assert_eq!(
            fields,
            [("$1", DataType::Int64), ("$2", DataType::Null)],
            "$1 is compared with a BIGINT column; $2 has no type of its own"
        );

        // A string that reads as a number is cast to the column's type.
        let bound = prepared
            .bind(vec![ScalarValue::from("7"), ScalarValue::from("x")])
            .unwrap();
        assert_eq!(
            bound.result_schema().field(0).data_type(),
            &DataType::Utf8,
            "$2 took its value's type"
        );

        let err = engine
            .prepare(sql)
            .await
            .unwrap()
            .bind(vec![ScalarValue::from("seven"), ScalarValue::from("x")])
            .unwrap_err();
        assert!(err.to_string().contains("parameter $1"), "{err}");
        let err = engine
            .prepare(sql)
            .await
            .unwrap()
            .bind(vec![ScalarValue::from(1i64)])
            .unwrap_err();
        assert!(
            err.to_string().contains("2 parameters and 1 values"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_insert_plans_its_rows_in_the_tables_columns() {
        let (engine, _dir) = engine(QueryConfig::for_tests()).await;
        engine
            .run("CREATE TABLE t (id BIGINT, site VARCHAR)")
            .await
            .unwrap();
        let prepared = engine
            .prepare("INSERT INTO t (site, id) VALUES ('a', 1), ($1, 2)")
            .await
            .unwrap();
        assert_eq!(prepared.result_schema().field(0).name(), INSERT_COUNT);
        let Prepared::Insert {
            table,
            plan,
            context,
        } = prepared.bind(vec![ScalarValue::from("b")]).unwrap()
        else {
            panic!("INSERT plans as an insert");
        };
        assert_eq!(table, "t");
        let rows: Vec<RecordBatch> = engine
            .execute(plan, &context)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(
            arrow::util::pretty::pretty_format_batches(&rows)
                .unwrap()
                .to_string(),
            "+----+------+\n| id | site |\n+----+------+\n| 1  | a    |\n| 2  | b    |\n+----+------+",
            "in the table's column order"
        );
        let err = engine
            .run("INSERT INTO t VALUES (1, 'a')")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("WAL"), "{err}");
    }

    #[tokio::test]
    async fn statements_weir_does_not_run_are_refused_at_planning() {
        let (engine, _dir) = engine(QueryConfig::for_tests()).await;
        engine.run("CREATE TABLE t (id BIGINT)").await.unwrap();
        for (sql, says) in [
            ("UPDATE t SET id = 1", "never rewrites"),
            ("DELETE FROM t", "never rewrites"),
            ("CREATE TABLE u AS SELECT * FROM t", "AS SELECT"),
            ("CREATE OR REPLACE TABLE t (id BIGINT)", "DROP TABLE first"),
            ("CREATE VIEW v AS SELECT * FROM t", "not supported"),
            ("CREATE TABLE other.u (id BIGINT)", "one schema"),
            (
                "EXPLAIN ANALYZE COPY (SELECT 1) TO '/tmp/weir-never-written.csv'",
                "COPY is not supported inside a query",
            ),
            (
                "EXPLAIN ANALYZE INSERT INTO t VALUES (1)",
                "not supported inside a query",
            ),
            ("EXPLAIN CREATE TABLE u (id BIGINT)", "inside a query"),
            (
                "SET datafusion.execution.batch_size = 1",
                "session statement",
            ),
        ] {
            let err = engine.prepare(sql).await.unwrap_err();
            assert!(err.to_string().contains(says), "{sql}: {err}");
        }
        assert_eq!(engine.catalog().table_names(), ["t"], "nothing was created");
        assert!(!std::path::Path::new("/tmp/weir-never-written.csv").exists());
    }

    #[test]
    fn question_marks_are_numbered_in_order_outside_strings_and_names() {
        let numbered = |sql: &str| number_question_marks(sql).unwrap().into_owned();
        assert_eq!(
            numbered("SELECT * FROM t WHERE a = ? AND b = '?' AND \"c?\" = ?"),
            "SELECT * FROM t WHERE a = $1 AND b = '?' AND \"c?\" = $2"
        );
        assert_eq!(
            numbered("SELECT 'é', ?\n  -- why?\n  , ?"),
            "SELECT 'é', $1\n  -- why?\n  , $2"
        );
        assert_eq!(numbered("SELECT $1, $2"), "SELECT $1, $2");
        let err = number_question_marks("SELECT ?, $2").unwrap_err();
        assert!(err.to_string().contains("one kind"), "{err}");
    }
}
