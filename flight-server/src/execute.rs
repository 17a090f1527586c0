//! A FlightSQL result onto the wire: types every common client reads,
//! batches that own their buffers, and a query that stops when it is
//! cancelled, runs past its deadline, or its client goes away.
//!
//! - **Types.** `Utf8View` and `BinaryView` (which DataFusion makes, and
//!   which older Arrow readers, such as the Flight SQL JDBC driver's, do
//!   not know) go out as `Utf8` and `Binary`, also inside lists, structs
//!   and maps. The schema in `FlightInfo` and in a prepared statement is
//!   the one sent.
//! - **Streaming.** Batches go out as the query makes them; a result never
//!   needs to fit in memory.
//! - **Stopping.** A `CancelFlightInfo` ends the stream with CANCELLED, the
//!   deadline (`limits.query_timeout_ms`) with DEADLINE_EXCEEDED; either
//!   way, and when the client drops the call, the query's stream is
//!   dropped, which stops DataFusion's work.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    Array, ArrayRef, MutableArrayData, RecordBatch, RecordBatchOptions, make_array,
};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow_flight::FlightData;
use arrow_flight::encode::FlightDataEncoderBuilder;
use datafusion::common::ScalarValue;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use tonic::Status;

use weir_codec::Limits;

use crate::statements::Running;
use crate::{Error, Result};

/// The rows of a `DoGet`.
pub type DataStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// The schema a result with `schema` is sent with.
pub fn wire_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<FieldRef> = schema.fields().iter().map(wire_field).collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn wire_field(field: &FieldRef) -> FieldRef {
    let wire = wire_type(field.data_type());
    if wire == *field.data_type() {
        Arc::clone(field)
    } else {
        Arc::new(field.as_ref().clone().with_data_type(wire))
    }
}

fn wire_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::List(item) => DataType::List(wire_field(item)),
        DataType::LargeList(item) => DataType::LargeList(wire_field(item)),
        DataType::FixedSizeList(item, size) => DataType::FixedSizeList(wire_field(item), *size),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(wire_field).collect()),
        DataType::Map(entries, sorted) => DataType::Map(wire_field(entries), *sorted),
        other => other.clone(),
    }
}

/// `batch` with the columns of `wire` (see [`wire_schema`]), each with
/// buffers of its own.
fn to_wire(batch: RecordBatch, wire: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (column, field) in batch.columns().iter().zip(wire.fields()) {
        let column = if column.data_type() == field.data_type() {
            Arc::clone(column)
        } else {
            arrow::compute::cast(column, field.data_type())?
        };
        columns.push(own_buffers(column)?);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(Arc::clone(wire), columns, &options)
}

/// Gives a column buffers of its own where it shares one with other
/// columns: the protobuf decoder keeps a batch's root-level 64-bit columns
/// in one buffer, and rows not yet committed are queried as decoded. The
/// Flight encoder splits batches into messages by buffer capacity, so it
/// would count a shared buffer once per column and send the rows in many
/// tiny messages. Only primitive columns whose buffers are more than twice
/// what they use are copied.
fn own_buffers(column: ArrayRef) -> Result<ArrayRef, ArrowError> {
    // The decoder shares buffers between primitive columns only.
    let shared = column.data_type().is_primitive()
        && column
            .to_data()
            .get_slice_memory_size()
            .is_ok_and(|used| column.get_buffer_memory_size() > 2 * used + 4096);
    if !shared {
        return Ok(column);
    }
    let data = column.to_data();
    let mut copy = MutableArrayData::new(vec![&data], false, data.len());
    copy.try_extend(0, 0, data.len())?;
    Ok(make_array(copy.freeze()))
}

/// Sends `batches` as a result with `schema` (the statement's, before
/// [`wire_schema`]), until they end, `running` is cancelled or `timeout`
/// passes. The schema goes out first, also when there are no rows.
pub fn send(
    schema: &Schema,
    batches: BoxStream<'static, Result<RecordBatch>>,
    running: Running,
    timeout: Option<Duration>,
) -> DataStream {
    let wire = wire_schema(schema);
    let deadline = timeout.map(|t| (tokio::time::Instant::now() + t, t));
    let stopping = futures::stream::unfold(Some((batches, running)), move |state| async move {
        let (mut batches, mut running) = state?;
        let expired = async {
            match deadline {
                Some((at, _)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let next = tokio::select! {
            biased;
            Ok(_) = running.cancel.wait_for(|cancelled| *cancelled) => {
                Err(Error::Cancelled("the query was cancelled (CancelFlightInfo)".into()))
            }
            () = expired => Err(Error::QueryTimeout(deadline.map_or(0, |(_, t)| {
                u64::try_from(t.as_millis()).unwrap_or(u64::MAX)
            }))),
            next = batches.next() => next?,
        };
        match next {
            Ok(batch) => Some((Ok(batch), Some((batches, running)))),
            // Dropping the query's stream stops its work.
            Err(e) => Some((Err(e), None)),
        }
    });
    let on_wire = Arc::clone(&wire);
    let batches = stopping
        .and_then(move |batch| {
            let wire = Arc::clone(&on_wire);
            async move { to_wire(batch, &wire).map_err(|e| Error::Internal(e.to_string())) }
        })
        .map_err(|e| arrow_flight::error::FlightError::from(Status::from(e)));
    FlightDataEncoderBuilder::new()
        .with_schema(wire)
        .build(batches)
        .map_err(Status::from)
        .boxed()
}

/// The rows of parameters `params` binds: a statement runs once per row,
/// and once when nothing is bound (no batch, or one without columns).
pub fn parameter_row_count(params: Option<&RecordBatch>) -> usize {
    match params.filter(|p| p.num_columns() > 0) {
        Some(params) => params.num_rows(),
        None => 1,
    }
}

/// The values of row `row` of `params`, in column order; none when
/// nothing is bound. One row at a time: the rows of a batch, as values,
/// can take far more memory than the batch.
pub fn parameter_row(params: Option<&RecordBatch>, row: usize) -> Result<Vec<ScalarValue>> {
    let Some(params) = params.filter(|p| p.num_columns() > 0) else {
        return Ok(vec![]);
    };
    params
        .columns()
        .iter()
        .zip(params.schema().fields())
        .map(|(column, field)| value_at(column, field, row))
        .collect()
}

/// The value of `column` at `row`. A union (clients that bind values of
/// any type send each parameter as a dense union) gives the value inside.
fn value_at(column: &ArrayRef, field: &Field, row: usize) -> Result<ScalarValue> {
    let value = ScalarValue::try_from_array(column.as_ref(), row).map_err(|e| {
        Error::BadRequest(format!(
            "parameter {:?} (row {row}): {e}",
            weir_codec::EchoText(field.name())
        ))
    })?;
    Ok(match value {
        ScalarValue::Union(Some((_, inner)), ..) => *inner,
        ScalarValue::Union(None, ..) => ScalarValue::Null,
        other => other,
    })
}

/// Batches gathered into one request (an `INSERT`'s rows, or bound
/// parameters), refused with RESOURCE_EXHAUSTED as soon as they pass the
/// request limits.
pub struct OneRequest {
    what: &'static str,
    limits: Limits,
    batches: Vec<RecordBatch>,
    rows: usize,
    bytes: usize,
}

impl OneRequest {
    /// `what` names the rows in errors.
    pub fn new(what: &'static str, limits: Limits) -> Self {
        Self {
            what,
            limits,
            batches: Vec::new(),
            rows: 0,
            bytes: 0,
        }
    }

    pub fn push(&mut self, batch: RecordBatch) -> Result<()> {
        self.rows += batch.num_rows();
        self.bytes += batch.get_array_memory_size();
        let Limits {
            max_request_rows,
            max_request_bytes,
            ..
        } = self.limits;
        if self.rows > max_request_rows || self.bytes > max_request_bytes {
            return Err(Error::MessageTooLarge(format!(
                "{} of more than {max_request_rows} rows (limits.max_request_rows) or \
                 {max_request_bytes} bytes (limits.max_request_bytes): they are one request, \
                 all or nothing; push larger writes with bulk ingest or DoPut",
                self.what
            )));
        }
        self.batches.push(batch);
        Ok(())
    }

    /// The rows as one batch; `None` if there are none.
    pub fn finish(self) -> Result<Option<RecordBatch>> {
        let Some(first) = self.batches.first() else {
            return Ok(None);
        };
        arrow::compute::concat_batches(&first.schema(), &self.batches)
            .map(Some)
            .map_err(|e| Error::BadRequest(format!("{}: {e}", self.what)))
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, ListArray, StringViewArray};
    use arrow::datatypes::Int32Type;

    use super::*;

    #[test]
    fn columns_sharing_a_buffer_get_their_own_and_others_stay() {
        let big = Int64Array::from_iter_values(0..100_000);
        let slice: ArrayRef = Arc::new(big.slice(500, 10));
        let small: ArrayRef = Arc::new(Int64Array::from_iter_values(0..10));
        let owned = own_buffers(Arc::clone(&slice)).unwrap();
        assert_eq!(owned.as_ref(), slice.as_ref());
        assert!(owned.get_buffer_memory_size() < 1024);
        // Columns that own their buffers are passed on as they are.
        assert!(Arc::ptr_eq(
            &own_buffers(Arc::clone(&small)).unwrap(),
            &small
        ));
    }

    #[test]
    fn view_types_go_out_as_the_types_every_client_reads() {
        let views: ArrayRef = Arc::new(StringViewArray::from_iter_values(
            (0..3).map(|i| format!("a string longer than twelve bytes {i}")),
        ));
        let lists: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1)]),
            None,
            Some(vec![]),
        ]));
        let batch = RecordBatch::try_from_iter([("s", views), ("l", Arc::clone(&lists))]).unwrap();
        let wire = wire_schema(&batch.schema());
        assert_eq!(wire.field(0).data_type(), &DataType::Utf8);
        assert_eq!(wire.field(1), batch.schema().field(1));
        let sent = to_wire(batch, &wire).unwrap();
        assert_eq!(sent.schema(), wire);
        let strings = sent
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::StringArray>();
        assert_eq!(
            strings.unwrap().value(2),
            "a string longer than twelve bytes 2"
        );
        assert!(Arc::ptr_eq(sent.column(1), &lists));

        let nested = DataType::List(Arc::new(Field::new("item", DataType::BinaryView, true)));
        assert_eq!(
            wire_type(&nested),
            DataType::List(Arc::new(Field::new("item", DataType::Binary, true)))
        );
    }

    #[test]
    fn parameter_rows_are_values_per_row_or_one_empty_row() {
        assert_eq!(parameter_row_count(None), 1);
        assert_eq!(parameter_row(None, 0).unwrap(), Vec::<ScalarValue>::new());
        let params = RecordBatch::try_from_iter([
            ("a", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
            (
                "b",
                Arc::new(StringViewArray::from(vec!["x", "y"])) as ArrayRef,
            ),
        ])
        .unwrap();
        assert_eq!(parameter_row_count(Some(&params)), 2);
        let row = parameter_row(Some(&params), 1).unwrap();
        assert_eq!(row[0], ScalarValue::Int64(Some(2)));
        assert_eq!(row[1], ScalarValue::Utf8View(Some("y".into())));
        let empty = RecordBatch::new_empty(params.schema());
        assert_eq!(
            parameter_row_count(Some(&empty)),
            0,
            "bound, no rows: runs no times"
        );

        // A dense union gives the value inside.
        let fields = arrow::datatypes::UnionFields::try_new(
            [0, 1],
            [
                Field::new("int", DataType::Int64, true),
                Field::new("text", DataType::Utf8, true),
            ],
        )
        .unwrap();
        let union = arrow::array::UnionArray::try_new(
            fields,
            vec![1i8, 0].into(),
            Some(vec![0i32, 0].into()),
            vec![
                Arc::new(Int64Array::from(vec![7])) as ArrayRef,
                Arc::new(arrow::array::StringArray::from(vec!["north"])) as ArrayRef,
            ],
        )
        .unwrap();
        let params = RecordBatch::try_from_iter([("p", Arc::new(union) as ArrayRef)]).unwrap();
        assert_eq!(
            (0..2)
                .map(|row| parameter_row(Some(&params), row).unwrap())
                .collect::<Vec<_>>(),
            vec![
                vec![ScalarValue::Utf8(Some("north".into()))],
                vec![ScalarValue::Int64(Some(7))]
            ]
        );
    }
}
