//! JSON records to Arrow, in a table's schema.
//!
//! [`decode_json`] accepts either newline-delimited JSON objects (any
//! whitespace between them will do) or one JSON array of objects, and
//! returns one [`RecordBatch`] of exactly the table's schema, decoded by
//! `arrow-json`. Each object is one row: keys are column names, a key the
//! table lacks is rejected, a missing or `null` value is null (an error for
//! a non-nullable column). Nested objects, arrays and maps fill `Struct`,
//! `List` and `Map` columns; timestamps may be RFC 3339 strings or numbers
//! in the column's unit.
//!
//! Errors name the record (its index from 0) and, where Arrow says so, the
//! column. Before anything is decoded, the input is split into records
//! without recursion, refusing a record nested deeper than
//! [`Limits::max_json_depth`], and the record count and a high estimate of
//! the decoded size are checked against the [`Limits`]. The fast path decodes the whole input at once; only when that
//! fails are the records decoded one by one to find the first bad one.
//!
//! ```
//! use std::sync::Arc;
//! use arrow::datatypes::{DataType, Field, Schema};
//! use weir_codec::json::decode_json;
//!
//! let table = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
//! let limits = weir_codec::Limits::default();
//! let batch = decode_json(b"{\"id\": 1}\n{\"id\": 2}\n", Arc::clone(&table), &limits)?;
//! assert_eq!(batch.num_rows(), 2);
//! let err = decode_json(b"[{\"id\": 1}, {\"id\": 2, \"x\": 0}]", table, &limits).unwrap_err();
//! assert_eq!(err.to_string(), "record 1: unknown field \"x\"");
//! # Ok::<(), weir_codec::Error>(())
//! ```

use std::sync::Arc;

use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use arrow_json::ReaderBuilder;

use crate::error::{Error, RecordProblem, Result};
use crate::{Limits, RowWidths};

/// Decodes newline-delimited JSON objects, or one JSON array of objects,
/// into one batch in `table`'s schema. No partial output on error.
pub fn decode_json(bytes: &[u8], table: SchemaRef, limits: &Limits) -> Result<RecordBatch> {
    let records = split_records(bytes, limits)?;
    if records.is_empty() {
        return Ok(RecordBatch::new_empty(table));
    }
    limits.check_records(records.len(), bytes.len(), &RowWidths::of(&table))?;
    match decode_records(&records, &table) {
        Ok(batch) => Ok(batch),
        Err(err) => Err(find_bad_record(&records, &table).unwrap_or(Error::Arrow(err))),
    }
}

/// Decodes records given one by one (each exactly one JSON value: an
/// object, or the error names the record), into one batch in `table`'s
/// schema. No partial output on error.
pub fn decode_json_records<R: AsRef<[u8]>>(
    records: &[R],
    table: SchemaRef,
    limits: &Limits,
) -> Result<RecordBatch> {
    limits.check_rows(records.len() as u64)?;
    let mut values = Vec::with_capacity(records.len());
    let mut bytes = 0;
    for (index, record) in records.iter().enumerate() {
        let record = record.as_ref();
        let start = skip_ws(record, 0);
        let end = nonempty_value_end(record, start, index, limits.max_json_depth)?;
        if skip_ws(record, end) != record.len() {
            return Err(syntax(index, "a record must be exactly one JSON object"));
        }
        bytes += record.len();
        values.push(&record[start..end]);
    }
    if values.is_empty() {
        return Ok(RecordBatch::new_empty(table));
    }
    limits.check_records(values.len(), bytes, &RowWidths::of(&table))?;
    match decode_records(&values, &table) {
        Ok(batch) => Ok(batch),
        Err(err) => Err(find_bad_record(&values, &table).unwrap_or(Error::Arrow(err))),
    }
}

/// Decodes all records as one batch.
fn decode_records(records: &[&[u8]], table: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let reading = reading_schema(table);
    let mut decoder = ReaderBuilder::new(Arc::clone(&reading))
        .with_batch_size(records.len())
        .with_strict_mode(true)
        .build_decoder()?;
    for record in records {
        decoder.decode(record)?;
        // Separate values even where the input had none (`[{..},{..}]`).
        decoder.decode(b"\n")?;
    }
    let batch = decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(&reading)));
    if Arc::ptr_eq(&reading, table) {
        return Ok(batch);
    }
    // Back to the table's spelling of UTC (a metadata-only cast).
    let columns = batch
        .columns()
        .iter()
        .zip(table.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(Arc::clone(c))
            } else {
                cast(c, f.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(Arc::clone(table), columns)
}

/// The schema arrow-json reads with: the table's, with UTC time zones
/// spelled as the offset `+00:00`. (arrow-json resolves named zones only
/// with arrow's `chrono-tz` feature, which the workspace does not enable;
/// Delta tables name their zone `UTC`.)
fn reading_schema(table: &SchemaRef) -> SchemaRef {
    fn utc_offset(dt: &DataType) -> Option<DataType> {
        match dt {
            DataType::Timestamp(unit, Some(tz))
                if matches!(
                    tz.as_ref(),
                    "UTC" | "utc" | "Etc/UTC" | "Z" | "GMT" | "Etc/GMT"
                ) =>
            {
                Some(DataType::Timestamp(*unit, Some("+00:00".into())))
            }
            DataType::Struct(fields) => {
                let changed: Vec<Option<Field>> = fields.iter().map(|f| field(f)).collect();
                changed.iter().any(Option::is_some).then(|| {
                    DataType::Struct(
                        fields
                            .iter()
                            .zip(changed)
                            .map(|(f, c)| c.unwrap_or_else(|| f.as_ref().clone()))
                            .collect(),
                    )
                })
            }
            DataType::List(f) => field(f).map(|f| DataType::List(Arc::new(f))),
            DataType::LargeList(f) => field(f).map(|f| DataType::LargeList(Arc::new(f))),
            DataType::Map(f, sorted) => field(f).map(|f| DataType::Map(Arc::new(f), *sorted)),
            _ => None,
        }
    }
    fn field(f: &Field) -> Option<Field> {
        utc_offset(f.data_type()).map(|dt| f.clone().with_data_type(dt))
    }
    let changed: Vec<Option<Field>> = table.fields().iter().map(|f| field(f)).collect();
    if changed.iter().all(Option::is_none) {
        return Arc::clone(table);
    }
    let fields: Vec<Field> = table
        .fields()
        .iter()
        .zip(changed)
        .map(|(f, c)| c.unwrap_or_else(|| f.as_ref().clone()))
        .collect();
    Arc::new(Schema::new_with_metadata(fields, table.metadata().clone()))
}

/// Decodes the records one at a time and returns the first one's error.
#[cold]
fn find_bad_record(records: &[&[u8]], table: &SchemaRef) -> Option<Error> {
    records.iter().enumerate().find_map(|(record, bytes)| {
        let err = decode_records(&[bytes], table).err()?;
        Some(classify(record, err))
    })
}

/// Turns arrow-json's message for one record into an [`Error::Record`].
fn classify(record: usize, err: ArrowError) -> Error {
    let message = match err {
        ArrowError::JsonError(m) => m,
        other => other.to_string(),
    };
    if let Some(field) = between(&message, "column '", "' missing from schema") {
        return bad(record, RecordProblem::UnknownField(field.to_owned()));
    }
    if message.contains("unmasked nulls in non-nullable") {
        // "... StructArray child: Field { \"id\": Int64 }" (arrow-schema's Display).
        let column = between(&message, "Field { \"", "\":")
            .unwrap_or("")
            .to_owned();
        return bad(record, RecordProblem::MissingValue { column });
    }
    if let Some(rest) = message.strip_prefix("whilst decoding field '")
        && let Some((column, detail)) = rest.split_once("': ")
    {
        return bad(
            record,
            RecordProblem::BadValue {
                column: column.to_owned(),
                message: detail.to_owned(),
            },
        );
    }
    bad(record, RecordProblem::BadJson(message))
}

fn bad(record: usize, problem: RecordProblem) -> Error {
    Error::Record { record, problem }
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = s.find(start)? + start.len();
    let len = s[from..].find(end)?;
    Some(&s[from..from + len])
}

/// Splits the input into top-level JSON values without parsing them: a
/// whitespace-separated stream, or the elements of one top-level array.
/// Only brackets, braces and strings (with escapes) are tracked; a value
/// nested deeper than `max_depth` is an error.
fn split_records<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Vec<&'a [u8]>> {
    let max_depth = limits.max_json_depth;
    let mut records = Vec::new();
    // Stops one record past the limit, before the list grows further.
    let push = |records: &mut Vec<&'a [u8]>, record: &'a [u8]| {
        records.push(record);
        limits.check_rows(records.len() as u64)
    };
    let mut pos = skip_ws(bytes, 0);
    if bytes.get(pos) == Some(&b'[') {
        pos = skip_ws(bytes, pos + 1);
        if bytes.get(pos) == Some(&b']') {
            return trailing(bytes, pos + 1, 0).map(|()| records);
        }
        loop {
            let end = nonempty_value_end(bytes, pos, records.len(), max_depth)?;
            push(&mut records, &bytes[pos..end])?;
            pos = skip_ws(bytes, end);
            match bytes.get(pos) {
                Some(b',') => pos = skip_ws(bytes, pos + 1),
                Some(b']') => return trailing(bytes, pos + 1, records.len()).map(|()| records),
                _ => {
                    return Err(syntax(
                        records.len(),
                        "expected ',' or ']' after an array element",
                    ));
                }
            }
        }
    }
    while pos < bytes.len() {
        let end = nonempty_value_end(bytes, pos, records.len(), max_depth)?;
        push(&mut records, &bytes[pos..end])?;
        pos = skip_ws(bytes, end);
    }
    Ok(records)
}

fn trailing(bytes: &[u8], pos: usize, record: usize) -> Result<()> {
    if skip_ws(bytes, pos) == bytes.len() {
        Ok(())
    } else {
        Err(syntax(record, "unexpected data after the top-level array"))
    }
}

fn skip_ws(bytes: &[u8], mut pos: usize) -> usize {
    while pos < bytes.len() && matches!(bytes[pos], b' ' | b'\t' | b'\n' | b'\r') {
        pos += 1;
    }
    pos
}

/// The end (exclusive) of the JSON value starting at `start`; `start`
/// itself if a delimiter stands there.
fn value_end(bytes: &[u8], start: usize, record: usize, max_depth: usize) -> Result<usize> {
    let mut depth = 0usize;
    let mut pos = start;
    while pos < bytes.len() {
        match bytes[pos] {
            b'"' => {
                pos = string_end(bytes, pos).ok_or_else(|| syntax(record, "unterminated string"))?
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > max_depth {
                    return Err(bad(
                        record,
                        RecordProblem::MalformedJson(format!(
                            "nested deeper than {max_depth} levels (limits.max_json_depth)"
                        )),
                    ));
                }
                pos += 1;
            }
            b'}' | b']' => {
                if depth == 0 {
                    return Ok(pos);
                }
                depth -= 1;
                pos += 1;
            }
            b',' | b' ' | b'\t' | b'\n' | b'\r' if depth == 0 => return Ok(pos),
            _ => pos += 1,
        }
        if depth == 0 && pos > start && matches!(bytes[pos - 1], b'}' | b']' | b'"') {
            return Ok(pos);
        }
    }
    if depth == 0 {
        Ok(pos)
    } else {
        Err(syntax(record, "unterminated object or array"))
    }
}

/// Like [`value_end`], but an empty value (a stray `,`, `]` or `}`) is an error.
fn nonempty_value_end(
    bytes: &[u8],
    start: usize,
    record: usize,
    max_depth: usize,
) -> Result<usize> {
    match value_end(bytes, start, record, max_depth)? {
        end if end == start => Err(syntax(record, "expected a JSON value")),
        end => Ok(end),
    }
}

/// The position after the string starting with the quote at `start`.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut pos = start + 1;
    while pos < bytes.len() {
        match bytes[pos] {
            b'\\' => pos += 2,
            b'"' => return Some(pos + 1),
            _ => pos += 1,
        }
    }
    None
}

fn syntax(record: usize, message: &str) -> Error {
    bad(record, RecordProblem::MalformedJson(message.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Fields, Int64Type, TimeUnit, TimestampMicrosecondType};

    fn table() -> SchemaRef {
        let inner = Fields::from(vec![Field::new("host", DataType::Utf8, true)]);
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("meta", DataType::Struct(inner), true),
            Field::new(
                "tags",
                DataType::List(Arc::new(Field::new("element", DataType::Utf8, true))),
                true,
            ),
        ]))
    }

    #[test]
    fn records_one_by_one_are_one_object_each() {
        let limits = Limits::default();
        let records = [r#" {"id": 1} "#, r#"{"id": 2, "name": "b"}"#];
        let batch = decode_json_records(&records, table(), &limits).unwrap();
        assert_eq!(
            batch.column(0).as_primitive::<Int64Type>().values(),
            &[1, 2]
        );
        // Two objects in one record, or none, name the record.
        for bad in [r#"{"id": 2}{"id": 3}"#, "  "] {
            let err = decode_json_records(&[r#"{"id": 1}"#, bad], table(), &limits).unwrap_err();
            assert!(err.to_string().starts_with("record 1:"), "{bad:?}: {err}");
        }
        let err = decode_json_records(&[r#"{"id": "x"}"#], table(), &limits).unwrap_err();
        assert!(err.to_string().starts_with("record 0:"), "{err}");
    }

    #[test]
    fn newline_delimited_objects() {
        let input = br#"{"id": 1, "name": "a", "tags": ["x", "y"]}
{"id": 2, "meta": {"host": "h"}, "ts": "2024-01-01T00:00:00Z"}

  {"id": 3}"#;
        let batch = decode_json(input, table(), &Limits::default()).unwrap();
        assert_eq!(batch.num_rows(), 3);
        assert_eq!(batch.schema(), table());
        assert_eq!(
            batch.column(0).as_primitive::<Int64Type>().values(),
            &[1, 2, 3]
        );
        assert!(batch.column(1).is_null(1));
        assert_eq!(
            batch
                .column(2)
                .as_primitive::<TimestampMicrosecondType>()
                .value(1),
            1_704_067_200_000_000
        );
        assert_eq!(batch.column(4).as_list::<i32>().value_length(0), 2);
    }

    #[test]
    fn one_array_of_objects() {
        let batch = decode_json(
            br#" [ {"id": 1}, {"id": 2, "name": "b,]}"} ] "#,
            table(),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.column(1).as_string::<i32>().value(1), "b,]}");
        assert_eq!(
            decode_json(b"[]", table(), &Limits::default())
                .unwrap()
                .num_rows(),
            0
        );
        assert_eq!(
            decode_json(b"  \n", table(), &Limits::default())
                .unwrap()
                .num_rows(),
            0
        );
        // Objects back to back, no separator.
        assert_eq!(
            decode_json(br#"{"id":1}{"id":2}"#, table(), &Limits::default())
                .unwrap()
                .num_rows(),
            2
        );
    }

    #[test]
    fn unknown_fields_are_rejected_naming_the_field() {
        let err = decode_json(
            b"{\"id\": 1}\n{\"id\": 2, \"color\": \"red\"}",
            table(),
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "record 1: unknown field \"color\"");
        assert!(err.is_caller_fault());
        assert_eq!(err.record_index(), Some(1));
    }

    #[test]
    fn missing_non_nullable_is_an_error() {
        let err = decode_json(
            b"[{\"id\": 1}, {\"id\": 2}, {\"name\": \"x\"}]",
            table(),
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "record 2: column \"id\": missing value for a non-nullable column"
        );
        let err = decode_json(b"{\"id\": null}", table(), &Limits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Record {
                    record: 0,
                    problem: RecordProblem::MissingValue { .. }
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_record_and_column() {
        let err = decode_json(
            b"{\"id\": 1}\n{\"id\": \"seven\"}",
            table(),
            &Limits::default(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::Record { record: 1, problem: RecordProblem::BadValue { column, .. } } if column == "id"),
            "{err}"
        );
        let err = decode_json(
            b"{\"id\": 1}\n{\"id\": 2, \"ts\": \"yesterday\"}",
            table(),
            &Limits::default(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::Record { record: 1, problem: RecordProblem::BadValue { column, .. } } if column == "ts"),
            "{err}"
        );
    }

    #[test]
    fn deep_nesting_and_many_records_are_refused_before_decoding() {
        // A million levels, checked without recursion.
        let deep = format!(
            "{{\"tags\": {}{}}}",
            "[".repeat(1_000_000),
            "]".repeat(1_000_000)
        );
        let err = decode_json(deep.as_bytes(), table(), &Limits::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "record 0: malformed JSON: nested deeper than 64 levels (limits.max_json_depth)"
        );
        let limits = Limits {
            max_json_depth: 2,
            ..Limits::default()
        };
        assert!(decode_json(br#"{"id": 1, "tags": ["a"]}"#, table(), &limits).is_ok());
        assert!(decode_json(br#"{"id": 1, "tags": [["a"]]}"#, table(), &limits).is_err());

        // Every `{}` is a full row of the table.
        let many = "{\"id\": 1}".repeat(2000);
        let limits = Limits {
            max_request_rows: 1000,
            ..Limits::default()
        };
        let err = decode_json(many.as_bytes(), table(), &limits).unwrap_err();
        assert!(err.is_limit(), "{err}");
        assert!(err.to_string().contains("1001 rows"), "{err}");
        let limits = Limits {
            max_request_bytes: 10_000,
            ..Limits::default()
        };
        let err = decode_json(many.as_bytes(), table(), &limits).unwrap_err();
        assert!(
            err.to_string().contains("limits.max_request_bytes"),
            "{err}"
        );
    }

    #[test]
    fn malformed_input() {
        let err = decode_json(
            b"{\"id\": 1}\n{\"id\": \"unterminated}",
            table(),
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "record 1: malformed JSON: unterminated string"
        );
        let err =
            decode_json(b"[{\"id\": 1} {\"id\": 2}]", table(), &Limits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Record {
                    record: 1,
                    problem: RecordProblem::MalformedJson(_)
                }
            ),
            "{err}"
        );
        let err = decode_json(b"[{\"id\": 1}] x", table(), &Limits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Record {
                    problem: RecordProblem::MalformedJson(_),
                    ..
                }
            ),
            "{err}"
        );
        let err = decode_json(b"{\"id\": 1}\n{\"id\" 2}", table(), &Limits::default()).unwrap_err();
        assert_eq!(err.record_index(), Some(1), "{err}");
        let err = decode_json(b"{\"id\": 1}\n42", table(), &Limits::default()).unwrap_err();
        assert_eq!(err.record_index(), Some(1), "{err}");
    }
}
