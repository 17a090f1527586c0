use std::sync::Arc;

use arrow::array::{
    AsArray, DictionaryArray, Float64Array, Int8Array, Int32Array, Int64Array, LargeStringArray,
    NullArray, StringArray, StringViewArray, TimestampMicrosecondArray, TimestampNanosecondArray,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, Int8Type, Schema, TimeUnit};

use super::*;

fn sensors() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        Field::new("temp", DataType::Float64, true),
        Field::new("site", DataType::Utf8, true),
    ]))
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(columns).unwrap()
}

#[test]
fn exact_schema_passes_through() {
    let table = sensors();
    let input = RecordBatch::try_new(
        Arc::clone(&table),
        vec![
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(TimestampMicrosecondArray::from(vec![Some(5), None])),
            Arc::new(Float64Array::from(vec![1.5, 2.5])),
            Arc::new(StringArray::from(vec!["a", "b"])),
        ],
    )
    .unwrap();
    assert_eq!(conform(&input, &table, &Limits::default()).unwrap(), input);
}

#[test]
fn widens_reorders_and_fills_missing_nullable_columns() {
    let table = sensors();
    let input = batch(vec![
        ("site", Arc::new(LargeStringArray::from(vec!["x", "y"]))),
        ("id", Arc::new(Int32Array::from(vec![7, 8]))),
    ]);
    let out = conform(&input, &table, &Limits::default()).unwrap();
    assert_eq!(out.schema(), table);
    assert_eq!(
        out.column(0).as_primitive::<Int64Type>().values(),
        &[7i64, 8]
    );
    assert_eq!(out.column(1).null_count(), 2);
    assert_eq!(out.column(3).as_string::<i32>().value(1), "y");
}

#[test]
fn accepts_views_dictionaries_and_null_columns() {
    let table = sensors();
    let dict: DictionaryArray<Int8Type> = vec!["n", "s", "n"].into_iter().collect();
    let input = batch(vec![
        ("id", Arc::new(Int64Array::from(vec![1, 2, 3]))),
        ("site", Arc::new(dict)),
        ("temp", Arc::new(NullArray::new(3))),
    ]);
    let out = conform(&input, &table, &Limits::default()).unwrap();
    assert_eq!(out.column(3).as_string::<i32>().value(2), "n");

    let views = batch(vec![
        ("id", Arc::new(Int64Array::from(vec![1]))),
        ("site", Arc::new(StringViewArray::from(vec!["v"]))),
    ]);
    assert_eq!(
        conform(&views, &table, &Limits::default())
            .unwrap()
            .column(3)
            .as_string::<i32>()
            .value(0),
        "v"
    );
}

#[test]
fn nanosecond_timestamps_fit_when_exact() {
    let table = sensors();
    let exact = batch(vec![
        ("id", Arc::new(Int64Array::from(vec![1]))),
        (
            "ts",
            Arc::new(TimestampNanosecondArray::from(vec![1_000_000_000])),
        ),
    ]);
    let out = conform(&exact, &table, &Limits::default()).unwrap();
    let ts = out
        .column(1)
        .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
    assert_eq!(ts.value(0), 1_000_000);

    let lossy = batch(vec![
        ("id", Arc::new(Int64Array::from(vec![1, 2]))),
        (
            "ts",
            Arc::new(TimestampNanosecondArray::from(vec![1_000, 1_001])),
        ),
    ]);
    let err = conform(&lossy, &table, &Limits::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"ts\"") && err.contains("row 1"), "{err}");
}

#[test]
fn rejects_unknown_columns() {
    let input = batch(vec![
        ("id", Arc::new(Int64Array::from(vec![1]))),
        ("humidity", Arc::new(Float64Array::from(vec![0.5]))),
    ]);
    let err = conform(&input, &sensors(), &Limits::default()).unwrap_err();
    assert!(
        matches!(&err, Error::UnknownColumn { column } if column == "humidity"),
        "{err}"
    );
}

#[test]
fn rejects_missing_not_null_column() {
    let input = batch(vec![("temp", Arc::new(Float64Array::from(vec![0.5])))]);
    let err = conform(&input, &sensors(), &Limits::default()).unwrap_err();
    assert!(
        matches!(&err, Error::MissingColumn { column } if column == "id"),
        "{err}"
    );
}

#[test]
fn rejects_nulls_in_not_null_column() {
    let input = batch(vec![(
        "id",
        Arc::new(Int64Array::from(vec![Some(1), None])),
    )]);
    let err = conform(&input, &sensors(), &Limits::default()).unwrap_err();
    assert!(
        matches!(&err, Error::NullsInNonNullable { column, nulls: 1, rows: 2 } if column == "id"),
        "{err}"
    );
}

#[test]
fn rejects_lossy_types() {
    let narrowing = batch(vec![
        ("id", Arc::new(Int64Array::from(vec![1]))),
        ("temp", Arc::new(StringArray::from(vec!["warm"]))),
    ]);
    let err = conform(&narrowing, &sensors(), &Limits::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "column \"temp\" has type Utf8, which cannot be stored losslessly as Float64"
    );

    let unsigned = batch(vec![("id", Arc::new(UInt64Array::from(vec![1])))]);
    assert!(matches!(
        conform(&unsigned, &sensors(), &Limits::default()).unwrap_err(),
        Error::IncompatibleType { .. }
    ));
}

#[test]
fn rejects_duplicate_columns() {
    let input = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("id", DataType::Int64, false),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(Int64Array::from(vec![2])),
        ],
    )
    .unwrap();
    assert!(matches!(
        conform(&input, &sensors(), &Limits::default()).unwrap_err(),
        Error::DuplicateColumn { .. }
    ));
}

#[test]
fn lossless_table_covers_integer_widening_only_upward() {
    assert!(is_lossless(&DataType::Int32, &DataType::Int64));
    assert!(!is_lossless(&DataType::Int64, &DataType::Int32));
    assert!(!is_lossless(&DataType::Int64, &DataType::Float64));
    assert!(is_lossless(&DataType::UInt32, &DataType::Int64));
    assert!(!is_lossless(&DataType::UInt64, &DataType::Int64));
    assert!(is_lossless(
        &DataType::Timestamp(TimeUnit::Nanosecond, None),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    ));
    assert!(!is_lossless(
        &DataType::Int64,
        &DataType::Timestamp(TimeUnit::Microsecond, None)
    ));
}

#[test]
fn amplifying_input_is_refused_before_anything_is_allocated() {
    let table = sensors();
    let limits = Limits::default();
    // A Null column has no buffers: two billion rows cost nothing on the
    // wire, but 16 GiB as the table's BIGINT.
    let rows = i32::MAX as usize;
    let nulls = batch(vec![("temp", Arc::new(NullArray::new(rows)) as ArrayRef)]);
    let err = conform(&nulls, &table, &limits).unwrap_err();
    assert!(err.is_limit(), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "too large: {rows} rows in one request, over the limit of {} (limits.max_request_rows)",
            limits.max_request_rows
        )
    );

    // Within the row limit, the bytes limit: every row references one
    // 1 MiB dictionary value.
    let long = "x".repeat(1 << 20);
    let keys = Int8Array::from(vec![0i8; 1000]);
    let values = StringArray::from(vec![long.as_str()]);
    let dictionary = DictionaryArray::<Int8Type>::try_new(keys, Arc::new(values)).unwrap();
    let ids = Int64Array::from_iter_values(0..1000);
    let input = batch(vec![
        ("id", Arc::new(ids) as ArrayRef),
        ("site", Arc::new(dictionary) as ArrayRef),
    ]);
    assert!(conformed_size_estimate(&input, &table) > 1000 << 20);
    let err = conform(&input, &table, &limits).unwrap_err();
    assert!(
        err.to_string().contains("limits.max_request_bytes"),
        "{err}"
    );
    // The same rows fit a larger limit and unpack as they should.
    let roomy = Limits {
        max_request_bytes: 2 << 30,
        ..limits
    };
    let out = conform(&input, &table, &roomy).unwrap();
    assert_eq!(out.column(3).as_string::<i32>().value(999).len(), 1 << 20);

    // The estimate is not below what conform allocates for the nulls of
    // missing columns.
    let ids = batch(vec![(
        "id",
        Arc::new(Int64Array::from_iter_values(0..10_000)) as ArrayRef,
    )]);
    let out = conform(&ids, &table, &limits).unwrap();
    let allocated: usize = out
        .columns()
        .iter()
        .map(|c| c.get_array_memory_size())
        .sum();
    assert!(
        conformed_size_estimate(&ids, &table) >= allocated as u64,
        "{} < {allocated}",
        conformed_size_estimate(&ids, &table)
    );
}

#[test]
fn view_strings_count_the_bytes_their_views_point_at() {
    // A thousand views of one shared 1 MiB buffer: 16 KB of views, 1 GB
    // once cast to the table's Utf8.
    let long = "v".repeat(1 << 20);
    let mut builder = arrow::array::StringViewBuilder::new();
    let block = builder.append_block(arrow::buffer::Buffer::from(long.as_bytes()));
    for _ in 0..1000 {
        builder.try_append_view(block, 0, 1 << 20).unwrap();
    }
    let views = batch(vec![("site", Arc::new(builder.finish()) as ArrayRef)]);
    assert!(conformed_size_estimate(&views, &sensors()) > 1000 << 20);
    let err = conform(&views, &sensors(), &Limits::default()).unwrap_err();
    assert!(err.is_limit(), "{err}");
}
