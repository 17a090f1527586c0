//! Fitting an incoming Arrow batch to a table's schema.
//!
//! Producers build batches with whatever types their language gives them:
//! pyarrow makes `int64` and nanosecond timestamps, pandas makes
//! `large_string`, DataFusion makes `Utf8View`. [`conform`] accepts a batch
//! whose columns can be stored in the table *without losing anything* and
//! rejects the rest, naming the column:
//!
//! | input                                  | table column            | rule                                 |
//! |----------------------------------------|-------------------------|--------------------------------------|
//! | same type                              | any                     | kept as is                           |
//! | narrower integer                       | wider integer           | widened                              |
//! | integer of at most 24 / 53 bits        | `Float32` / `Float64`   | converted exactly                    |
//! | `Float16`/`Float32`                    | wider float             | widened                              |
//! | any string type                        | any string type         | re-encoded                           |
//! | any binary type                        | any binary type         | re-encoded                           |
//! | dictionary of `V`                      | a type `V` fits         | unpacked                             |
//! | timestamp, any unit or zone            | timestamp               | finer unit: checked for overflow; coarser unit: checked that no precision is lost; zone-less values are taken as UTC |
//! | decimal                                | decimal with room       | rescaled                             |
//! | all-null column (`Null`)               | nullable column         | nulls                                |
//! | nested (struct, list, map)             | the same shape          | field names re-labelled              |
//!
//! Columns are matched by name; the output has the table's column order.
//! A missing column is all nulls if the table allows nulls, an error if not.
//!
//! Filling nulls and unpacking dictionaries allocate far more than the
//! input holds (a `Null` column has no buffers at all), so [`conform`]
//! first checks [`conformed_size_estimate`] and the row count against the
//! [`Limits`].

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions, new_null_array};
use arrow::compute::kernels::cast::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Int64Type, Schema, SchemaRef, TimeUnit};

use crate::limits::value_bytes;
use crate::{Error, Limits, Result};

/// Checks `batch` against `table` and returns it in the table's schema.
///
/// Fails, naming the column, on an unknown or duplicate column, a missing
/// NOT NULL column, nulls in a NOT NULL column, or a type that cannot be
/// stored without loss (see the module docs for the rules); fails with
/// [`Error::LimitExceeded`] before allocating anything if the batch has
/// more rows than `limits` allow or would take more bytes once conformed.
pub fn conform(batch: &RecordBatch, table: &SchemaRef, limits: &Limits) -> Result<RecordBatch> {
    limits.check_rows(batch.num_rows() as u64)?;
    limits.check_bytes(conformed_size_estimate(batch, table))?;
    let input = batch.schema();
    if input.as_ref() == table.as_ref() {
        check_nulls(batch.columns(), table, batch.num_rows())?;
        return Ok(batch.clone());
    }
    let by_name = index_by_name(&input)?;
    if let Some(unknown) = input
        .fields()
        .iter()
        .find(|f| table.field_with_name(f.name()).is_err())
    {
        return Err(Error::UnknownColumn {
            column: unknown.name().clone(),
        });
    }
    let mut columns = Vec::with_capacity(table.fields().len());
    for field in table.fields() {
        let column = match by_name.get(field.name().as_str()) {
            Some(&i) => fit_column(field.name(), batch.column(i), field.data_type())?,
            None if field.is_nullable() => new_null_array(field.data_type(), batch.num_rows()),
            None => {
                return Err(Error::MissingColumn {
                    column: field.name().clone(),
                });
            }
        };
        columns.push(column);
    }
    check_nulls(&columns, table, batch.num_rows())?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(table),
        columns,
        &options,
    )?)
}

/// A high estimate of the bytes the output of [`conform`] takes: columns
/// kept as they are count what they hold; nulls filled in count a full
/// column of the table's type; dictionaries count every row as their
/// longest value; other casts count the input plus a column of the output
/// type. Cheap: no pass over the rows.
pub fn conformed_size_estimate(batch: &RecordBatch, table: &Schema) -> u64 {
    let rows = batch.num_rows() as u64;
    let input = batch.schema();
    table
        .fields()
        .iter()
        .map(|field| match input.index_of(field.name()) {
            Ok(i) => column_estimate(batch.column(i), field.data_type(), rows),
            Err(_) => rows.saturating_mul(value_bytes(field.data_type())),
        })
        .fold(0u64, u64::saturating_add)
}

fn column_estimate(column: &ArrayRef, to: &DataType, rows: u64) -> u64 {
    let held = held_bytes(column);
    let filled = rows.saturating_mul(value_bytes(to));
    match column.data_type() {
        DataType::Null => filled,
        from if from == to => held,
        DataType::Dictionary(_, values_type) => {
            let values = match column.as_any_dictionary_opt() {
                Some(dictionary) => dictionary.values(),
                None => return filled.saturating_add(held),
            };
            // Unpacking casts the values first, then takes a value per row.
            let values_cast = held_bytes(values);
            let longest = match values_type.as_ref() {
                t if t.is_primitive() || matches!(t, DataType::Boolean) => 0,
                DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Binary
                | DataType::LargeBinary
                | DataType::Utf8View
                | DataType::BinaryView => longest_value(values),
                // Nested values: every row may be the whole dictionary.
                _ => held_bytes(values),
            };
            filled
                .saturating_add(values_cast)
                .saturating_add(rows.saturating_mul(longest))
        }
        _ => filled.saturating_add(held),
    }
}

/// The bytes `array` uses (not whole shared buffers). For view arrays,
/// the bytes its views point at, counted once per view: that is what a
/// cast to a non-view type copies, however the data buffers are shared.
fn held_bytes(array: &ArrayRef) -> u64 {
    let views = match array.data_type() {
        DataType::Utf8View => array.as_string_view_opt().map(|a| a.views().clone()),
        DataType::BinaryView => array.as_binary_view_opt().map(|a| a.views().clone()),
        _ => None,
    };
    if let Some(views) = views {
        let pointed: u64 = views.iter().map(|view| u64::from(*view as u32)).sum();
        return pointed.saturating_add(16 * views.len() as u64);
    }
    array
        .to_data()
        .get_slice_memory_size()
        .unwrap_or_else(|_| array.get_array_memory_size()) as u64
}

/// The length of the longest string or binary value in `values`.
fn longest_value(values: &ArrayRef) -> u64 {
    let Ok(lengths) = arrow::compute::kernels::length::length(values) else {
        return held_bytes(values);
    };
    let longest = match lengths.data_type() {
        DataType::Int32 => {
            arrow::compute::max(lengths.as_primitive::<arrow::datatypes::Int32Type>())
                .map(i64::from)
        }
        DataType::Int64 => arrow::compute::max(lengths.as_primitive::<Int64Type>()),
        _ => None,
    };
    longest.map_or(0, |n| n.max(0) as u64)
}

fn index_by_name(input: &Schema) -> Result<HashMap<&str, usize>> {
    let mut by_name = HashMap::with_capacity(input.fields().len());
    for (i, field) in input.fields().iter().enumerate() {
        if by_name.insert(field.name().as_str(), i).is_some() {
            return Err(Error::DuplicateColumn {
                column: field.name().clone(),
            });
        }
    }
    Ok(by_name)
}

fn check_nulls(columns: &[ArrayRef], table: &Schema, rows: usize) -> Result<()> {
    for (column, field) in columns.iter().zip(table.fields()) {
        if !field.is_nullable() && column.null_count() > 0 {
            return Err(Error::NullsInNonNullable {
                column: field.name().clone(),
                nulls: column.null_count(),
                rows,
            });
        }
    }
    Ok(())
}

/// Casts one column to `to`, or explains why that would lose information.
fn fit_column(name: &str, column: &ArrayRef, to: &DataType) -> Result<ArrayRef> {
    let from = column.data_type();
    if from == to {
        return Ok(Arc::clone(column));
    }
    if !is_lossless(from, to) {
        return Err(Error::IncompatibleType {
            column: name.to_string(),
            found: from.to_string(),
            expected: to.to_string(),
        });
    }
    if let (DataType::Timestamp(from_unit, _), DataType::Timestamp(to_unit, _)) = (from, to) {
        check_no_precision_lost(name, column, *from_unit, *to_unit)?;
    }
    // `safe: false` turns overflow into an error instead of a silent null.
    let options = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    cast_with_options(column, to, &options).map_err(|e| Error::ValueLoss {
        column: name.to_string(),
        reason: e.to_string(),
    })
}

/// Whether every value of `from` has an exact representation in `to`.
fn is_lossless(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    match (from, to) {
        (Null, _) => true,
        (Dictionary(_, values), to) => values.as_ref() == to || is_lossless(values, to),
        (Int8, Int16 | Int32 | Int64 | Float32 | Float64)
        | (Int16, Int32 | Int64 | Float32 | Float64)
        | (Int32, Int64 | Float64)
        | (UInt8, UInt16 | UInt32 | UInt64 | Int16 | Int32 | Int64 | Float32 | Float64)
        | (UInt16, UInt32 | UInt64 | Int32 | Int64 | Float32 | Float64)
        | (UInt32, UInt64 | Int64 | Float64)
        | (Float16, Float32 | Float64)
        | (Float32, Float64) => true,
        (Utf8 | LargeUtf8 | Utf8View, Utf8 | LargeUtf8 | Utf8View) => true,
        (
            Binary | LargeBinary | BinaryView | FixedSizeBinary(_),
            Binary | LargeBinary | BinaryView,
        ) => true,
        // Zone-less timestamps are taken as UTC, like the Zerobus SDKs do.
        (Timestamp(_, _), Timestamp(_, _)) => true,
        (Date32, Date64) => true,
        (Decimal128(p1, s1), Decimal128(p2, s2)) => {
            s2 >= s1 && i16::from(*p2) - i16::from(*s2) >= i16::from(*p1) - i16::from(*s1)
        }
        (List(_) | LargeList(_) | Struct(_) | Map(_, _), _) => from.equals_datatype(to),
        _ => false,
    }
}

/// A cast to a coarser time unit truncates; refuse it unless it is exact.
fn check_no_precision_lost(
    name: &str,
    column: &ArrayRef,
    from: TimeUnit,
    to: TimeUnit,
) -> Result<()> {
    let factor = units_per_second(from) / units_per_second(to);
    if factor <= 1 {
        return Ok(());
    }
    let raw = cast_with_options(column, &DataType::Int64, &CastOptions::default())?;
    let lost = raw
        .as_primitive::<Int64Type>()
        .iter()
        .flatten()
        .position(|v| v % factor != 0);
    match lost {
        None => Ok(()),
        Some(row) => Err(Error::ValueLoss {
            column: name.to_string(),
            reason: format!(
                "row {row} has sub-{} precision that the table's timestamp cannot hold",
                unit_name(to)
            ),
        }),
    }
}

fn units_per_second(unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    }
}

fn unit_name(unit: TimeUnit) -> &'static str {
    match unit {
        TimeUnit::Second => "second",
        TimeUnit::Millisecond => "millisecond",
        TimeUnit::Microsecond => "microsecond",
        TimeUnit::Nanosecond => "nanosecond",
    }
}

#[cfg(test)]
mod tests;
