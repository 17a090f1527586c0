//! Table schemas: from SQL to Delta, and from Delta to the Arrow schema
//! that ingest and queries use.
//!
//! The Delta table is the source of truth. Its Arrow form is *canonical*:
//! plain `Utf8`/`Binary` (never views or large variants) and timestamps in
//! microseconds, because that is what Delta stores. SQL types map as:
//!
//! | SQL                                   | Delta          | Arrow                         |
//! |---------------------------------------|----------------|-------------------------------|
//! | `BOOLEAN`                             | boolean        | `Boolean`                     |
//! | `TINYINT` / `SMALLINT` / `INT` / `BIGINT` | byte / short / integer / long | `Int8` / `Int16` / `Int32` / `Int64` |
//! | `FLOAT` / `REAL`, `DOUBLE`            | float, double  | `Float32`, `Float64`          |
//! | `DECIMAL(p, s)`                       | decimal(p, s)  | `Decimal128(p, s)`            |
//! | `VARCHAR`, `TEXT`, `STRING`           | string         | `Utf8`                        |
//! | `BYTEA`, `BLOB`, `VARBINARY`          | binary         | `Binary`                      |
//! | `DATE`                                | date           | `Date32`                      |
//! | `TIMESTAMP` (with or without zone)    | timestamp      | `Timestamp(µs, "UTC")`        |
//!
//! `TIMESTAMP` follows Delta and Spark: an instant, stored in UTC. Unsigned
//! integers have no Delta type and are rejected, naming the column.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};

use crate::{Error, Result};

/// The Delta schema for a table declared with `columns` (from SQL).
pub fn delta_schema_for(columns: &Schema) -> Result<StructType> {
    let fields: Vec<Field> = columns
        .fields()
        .iter()
        .map(|f| {
            let data_type = declared_type(f.name(), f.data_type())?;
            Ok(Field::new(f.name(), data_type, f.is_nullable()))
        })
        .collect::<Result<_>>()?;
    let schema = Schema::new(fields);
    for field in schema.fields() {
        let _: deltalake::kernel::DataType =
            field
                .data_type()
                .try_into_kernel()
                .map_err(|_| Error::UnsupportedType {
                    column: field.name().clone(),
                    data_type: field.data_type().to_string(),
                })?;
    }
    (&schema)
        .try_into_kernel()
        .map_err(|e| Error::UnsupportedType {
            column: String::new(),
            data_type: e.to_string(),
        })
}

/// The canonical Arrow schema of a Delta table.
pub fn arrow_schema_of(delta: &StructType) -> Result<SchemaRef> {
    let schema: Schema = delta.try_into_arrow().map_err(|e| Error::UnsupportedType {
        column: String::new(),
        data_type: e.to_string(),
    })?;
    let fields: Fields = schema
        .fields()
        .iter()
        .map(|f| Arc::new(canonical_field(f)))
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

/// Maps a type written in SQL to the type the table stores.
fn declared_type(column: &str, data_type: &DataType) -> Result<DataType> {
    let unsupported = || Error::UnsupportedType {
        column: column.to_string(),
        data_type: data_type.to_string(),
    };
    Ok(match data_type {
        DataType::Timestamp(_, _) => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => DataType::Binary,
        DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float16
        | DataType::Null
        | DataType::Time32(_)
        | DataType::Time64(_)
        | DataType::Duration(_)
        | DataType::Interval(_) => return Err(unsupported()),
        other => other.clone(),
    })
}

fn canonical_field(field: &Field) -> Field {
    Field::new(
        field.name(),
        canonical_type(field.data_type()),
        field.is_nullable(),
    )
    .with_metadata(field.metadata().clone())
}

fn canonical_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::Struct(fields) => DataType::Struct(
            fields
                .iter()
                .map(|f| Arc::new(canonical_field(f)))
                .collect(),
        ),
        DataType::List(item) | DataType::LargeList(item) | DataType::ListView(item) => {
            DataType::List(Arc::new(canonical_field(item)))
        }
        DataType::Map(entries, sorted) => {
            DataType::Map(Arc::new(canonical_field(entries)), *sorted)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_types_become_canonical_delta_types() {
        let sql = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
            Field::new("site", DataType::Utf8View, true),
        ]);
        let delta = delta_schema_for(&sql).unwrap();
        let arrow = arrow_schema_of(&delta).unwrap();
        assert_eq!(
            arrow.as_ref(),
            &Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new(
                    "ts",
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    true
                ),
                Field::new("site", DataType::Utf8, true),
            ])
        );
    }

    #[test]
    fn unsigned_types_are_rejected_by_name() {
        let sql = Schema::new(vec![Field::new("n", DataType::UInt32, true)]);
        let err = delta_schema_for(&sql).unwrap_err().to_string();
        assert_eq!(
            err,
            "column \"n\": type UInt32 is not supported by Delta tables"
        );
    }
}
