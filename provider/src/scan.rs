//! The DataFusion [`TableProvider`] of a weir table.
//!
//! A scan reads one consistent cut of the table (see [`crate::table`]):
//! Delta version `V` and the durable WAL tail above `V`'s `txn` watermark,
//! taken under one lock. The plan is the union of the two:
//!
//! ```text
//! UnionExec
//!   Delta scan of version V   (projection, filters and limit pushed in;
//!                              types cast to the table schema if Delta
//!                              reads them as views)
//!   tail batches in memory    (filters applied, then projection)
//! ```
//!
//! - **Projection** is applied on both sides.
//! - **Filters** are all reported [`Inexact`]: Delta uses them to skip files
//!   and row groups, the tail applies them to its rows, and DataFusion
//!   re-applies them above the union.
//! - **Limit** is passed to the Delta scan as a hint; DataFusion applies it.
//!
//! What a query sees: every row acknowledged before the scan was planned
//! (read-your-writes), each exactly once, also while a commit is running.
//! Rows acknowledged after planning are not seen by that query: a scan is a
//! snapshot, taken when it is planned.
//!
//! [`Inexact`]: TableProviderFilterPushDown::Inexact

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, DataFusionError, Result as DFResult, project_schema};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;

use crate::table::Table;

/// Exposes a [`Table`] to DataFusion. Cheap to create: build one per query
/// or keep one; every scan takes a fresh cut.
#[derive(Debug)]
pub struct TableScanProvider {
    table: Arc<Table>,
}

impl TableScanProvider {
    /// A provider over `table`.
    pub fn new(table: Arc<Table>) -> Self {
        Self { table }
    }
}

#[async_trait]
impl TableProvider for TableScanProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(self.table.schema())
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DFResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let cut = self.table.cut();
        let schema = self.schema();
        let projected = project_schema(&schema, projection)?;

        cut.delta
            .update_datafusion_session(state)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let delta = cut.delta.table_provider().build().await?;
        let delta_plan = delta.scan(state, projection, filters, limit).await?;
        let mut plans = vec![cast_to(delta_plan, &projected)?];

        if !cut.tail.is_empty() {
            let mut tail: Arc<dyn ExecutionPlan> =
                MemorySourceConfig::try_new_exec(&[cut.tail], Arc::clone(&schema), None)?;
            if let Some(predicate) = conjunction(filters.iter().cloned()) {
                let df_schema = DFSchema::try_from(Arc::clone(&schema))?;
                let predicate = state.create_physical_expr(predicate, &df_schema)?;
                tail = Arc::new(FilterExec::try_new(predicate, tail)?);
            }
            if let Some(projection) = projection {
                let columns = projection.iter().map(|&i| {
                    let name = schema.field(i).name().clone();
                    (
                        Arc::new(Column::new(&name, i)) as Arc<dyn PhysicalExpr>,
                        name,
                    )
                });
                tail = Arc::new(ProjectionExec::try_new(columns, tail)?);
            }
            plans.push(tail);
        }
        UnionExec::try_new(plans)
    }
}

/// Casts `plan`'s columns to `schema`'s types where they differ (Delta's
/// reader may produce `Utf8View` for `Utf8`, for example).
fn cast_to(plan: Arc<dyn ExecutionPlan>, schema: &SchemaRef) -> DFResult<Arc<dyn ExecutionPlan>> {
    let input = plan.schema();
    if input.fields().len() != schema.fields().len() {
        return Err(DataFusionError::Internal(format!(
            "delta scan returned {} columns, expected {}",
            input.fields().len(),
            schema.fields().len()
        )));
    }
    let same = input
        .fields()
        .iter()
        .zip(schema.fields())
        .all(|(a, b)| a.data_type() == b.data_type());
    if same {
        return Ok(plan);
    }
    let exprs = schema.fields().iter().enumerate().map(|(i, field)| {
        let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(field.name(), i));
        let expr: Arc<dyn PhysicalExpr> = if input.field(i).data_type() == field.data_type() {
            column
        } else {
            Arc::new(CastExpr::new(column, field.data_type().clone(), None))
        };
        (expr, field.name().clone())
    });
    Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
}
