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
//!   tail batches in memory    (projected, in as many partitions as the
//!                              session has threads)
//! ```
//!
//! - **Projection** is applied on both sides.
//! - **Filters** are all reported [`Inexact`]: Delta uses them to skip files,
//!   row groups and pages, and DataFusion applies them to the projected
//!   columns, as a filter over each side of the union once the plan is
//!   optimized (filtering the tail's whole rows first cost more than it
//!   saved).
//! - **Limit** is passed to the Delta scan as a hint; DataFusion applies it.
//!
//! What a query sees: every row acknowledged before the scan was planned
//! (read-your-writes), each exactly once, also while a commit is running.
//! Rows acknowledged after planning are not seen by that query: a scan is a
//! snapshot, taken when it is planned.
//!
//! [`Inexact`]: TableProviderFilterPushDown::Inexact

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, Result as DFResult, project_schema};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::ParquetSource;
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column};
use datafusion::physical_plan::ExecutionPlan;
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
        let delta_plan = without_row_filters(delta_plan)?;
        let mut plans = vec![cast_to(delta_plan, &projected)?];

        if !cut.tail.is_empty() {
            let partitions = partitioned(cut.tail, state.config().target_partitions());
            let tail: Arc<dyn ExecutionPlan> = MemorySourceConfig::try_new_exec(
                &partitions,
                Arc::clone(&schema),
                projection.cloned(),
            )?;
            plans.push(tail);
        }
        UnionExec::try_new(plans)
    }
}

/// Delta's scan has the Parquet reader filter rows while it decodes them,
/// which DataFusion leaves off by default: a filter keeping a fifth of
/// 1 M NEOWISE rows took twice as long that way (BENCHMARKS.md). Turned
/// off here, before the plan is optimized (and with the session's
/// `datafusion.execution.parquet.pushdown_filters` off, as weir's is: its
/// SQL refuses `SET`), the filter runs in a filter over the scan instead;
/// its predicate still skips files, row groups and pages.
fn without_row_filters(plan: Arc<dyn ExecutionPlan>) -> DFResult<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(exec) = node.downcast_ref::<DataSourceExec>() else {
            return Ok(Transformed::no(node));
        };
        let Some((config, parquet)) = exec.downcast_to_file_source::<ParquetSource>() else {
            return Ok(Transformed::no(node));
        };
        let mut config = config.clone();
        config.file_source = Arc::new(parquet.clone().with_pushdown_filters(false));
        let exec: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
        Ok(Transformed::yes(exec))
    })
    .map(|transformed| transformed.data)
}

/// `batches` in at most `parts` runs of consecutive batches with about the
/// same number of rows each, for as many threads to read.
fn partitioned(batches: Vec<RecordBatch>, parts: usize) -> Vec<Vec<RecordBatch>> {
    let parts = parts.max(1);
    let total = batches
        .iter()
        .map(RecordBatch::num_rows)
        .sum::<usize>()
        .max(1);
    let mut partitions: Vec<Vec<RecordBatch>> = vec![Vec::new(); parts];
    let mut start = 0;
    for batch in batches {
        // The part the batch's middle row falls in: never decreasing, so
        // each part holds consecutive batches.
        let rows = batch.num_rows();
        let middle = start + rows / 2;
        partitions[(middle * parts / total).min(parts - 1)].push(batch);
        start += rows;
    }
    partitions.retain(|part| !part.is_empty());
    partitions
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    fn batch(rows: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from_iter_values(0..rows))],
        )
        .unwrap()
    }

    #[test]
    fn the_tail_is_split_by_rows_keeping_its_order() {
        let sizes = [5, 1, 1, 1, 1, 1, 10, 2];
        let batches: Vec<_> = sizes.iter().map(|&n| batch(n)).collect();
        let rows = |part: &Vec<RecordBatch>| part.iter().map(RecordBatch::num_rows).sum::<usize>();
        let parts = partitioned(batches.clone(), 2);
        // 22 rows: the batch of 10 rows starts at row 10 and has its middle
        // in the second half.
        assert_eq!(parts.iter().map(rows).collect::<Vec<_>>(), [10, 12]);
        assert_eq!(parts.concat(), batches);
        assert_eq!(partitioned(batches.clone(), 1), vec![batches.clone()]);
        // More parts than batches: one batch each at most, none empty.
        let many = partitioned(batches.clone(), 100);
        assert_eq!(many.len(), batches.len());
        assert_eq!(many.concat(), batches);
        assert_eq!(partitioned(vec![batch(0), batch(0)], 4).len(), 1);
    }
}
