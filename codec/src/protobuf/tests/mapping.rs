//! Protobuf types into each Arrow column type a table may have, and the
//! descriptors a table rejects.

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{
    DataType, Date32Type, Field, Fields, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    Schema, SchemaRef, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, UInt32Type,
    UInt64Type,
};
use prost_reflect::MessageDescriptor;

use super::support::Rec;
use crate::Error;
use crate::protobuf::{ProtoDecoder, descriptor_from_proto_source};

const TYPES: &str = r#"
syntax = "proto3";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";
enum E { ZERO = 0; ONE = 1; }
message T {
  int32 i32 = 1; uint32 u32 = 2; uint64 u64 = 3; float f = 4; E e = 5; int32 day = 6; int64 micros = 7;
  google.protobuf.Timestamp ts = 8; sint32 small = 9; fixed32 fx32 = 10; fixed64 fx64 = 11;
  google.protobuf.Int64Value w = 12; google.protobuf.Timestamp ts_ms = 13; int32 tiny = 14;
}
"#;

fn message() -> MessageDescriptor {
    descriptor_from_proto_source(TYPES, "T").unwrap()
}

fn table(fields: Vec<Field>) -> SchemaRef {
    Arc::new(Schema::new(fields))
}

fn wide_table() -> SchemaRef {
    let ts = |unit, tz: Option<&str>| DataType::Timestamp(unit, tz.map(Into::into));
    table(vec![
        Field::new("i32", DataType::Int64, false),
        Field::new("u32", DataType::UInt32, false),
        Field::new("u64", DataType::UInt64, false),
        Field::new("f", DataType::Float64, false),
        Field::new("e", DataType::Int32, false),
        Field::new("day", DataType::Date32, false),
        Field::new("micros", ts(TimeUnit::Microsecond, None), false),
        Field::new("ts", ts(TimeUnit::Microsecond, Some("UTC")), true),
        Field::new("small", DataType::Int16, false),
        Field::new("fx32", DataType::Int64, false),
        Field::new("fx64", DataType::UInt64, false),
        Field::new("w", DataType::Int64, true),
        Field::new("ts_ms", ts(TimeUnit::Millisecond, None), true),
        Field::new("tiny", DataType::Int8, false),
        Field::new("extra", DataType::Utf8, true),
    ])
}

#[test]
fn widened_and_alternative_column_types() {
    let d = ProtoDecoder::new(message(), wide_table()).unwrap();
    let ts = Rec::new().varint(1, 1_700_000_000).varint(2, 123_456_789);
    let rec = Rec::new()
        .varint(1, -7i64 as u64)
        .varint(2, u64::from(u32::MAX))
        .varint(3, u64::MAX)
        .fixed32(4, 1.5f32.to_bits())
        .varint(5, 1)
        .varint(6, 19_000)
        .varint(7, 1_700_000_000_000_000)
        .bytes(8, ts.build())
        .varint(9, 5) // zigzag -3
        .fixed32(10, u32::MAX)
        .fixed64(11, u64::MAX)
        .bytes(12, &[])
        .bytes(13, ts.build())
        .varint(14, 127);
    let b = d.decode([rec.build()]).unwrap();
    let col = |n: &str| Arc::clone(b.column_by_name(n).unwrap());
    assert_eq!(col("i32").as_primitive::<Int64Type>().value(0), -7);
    assert_eq!(col("u32").as_primitive::<UInt32Type>().value(0), u32::MAX);
    assert_eq!(col("u64").as_primitive::<UInt64Type>().value(0), u64::MAX);
    assert_eq!(col("f").as_primitive::<Float64Type>().value(0), 1.5);
    assert_eq!(col("e").as_primitive::<Int32Type>().value(0), 1);
    assert_eq!(col("day").as_primitive::<Date32Type>().value(0), 19_000);
    assert_eq!(
        col("micros")
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        1_700_000_000_000_000
    );
    assert_eq!(
        col("ts")
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        1_700_000_000_123_456
    );
    assert_eq!(
        col("ts_ms")
            .as_primitive::<TimestampMillisecondType>()
            .value(0),
        1_700_000_000_123
    );
    assert_eq!(col("small").as_primitive::<Int16Type>().value(0), -3);
    assert_eq!(
        col("fx32").as_primitive::<Int64Type>().value(0),
        i64::from(u32::MAX)
    );
    assert_eq!(col("fx64").as_primitive::<UInt64Type>().value(0), u64::MAX);
    assert_eq!(
        col("w").as_primitive::<Int64Type>().value(0),
        0,
        "empty wrapper is 0, not null"
    );
    assert_eq!(col("tiny").as_primitive::<Int8Type>().value(0), 127);
    assert!(col("extra").is_null(0));
    assert_eq!(b.schema(), wide_table());

    // Absent wrapper and timestamp: null.
    let b = d.decode([&[][..]]).unwrap();
    assert!(b.column_by_name("w").unwrap().is_null(0));
    assert!(b.column_by_name("ts").unwrap().is_null(0));
}

#[test]
fn narrow_columns_are_range_checked() {
    let d = ProtoDecoder::new(message(), wide_table()).unwrap();
    let err = d.decode([Rec::new().varint(14, 128).build()]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "record 0: field .tiny: value 128 out of range for a Int8 column"
    );
    let err = d
        .decode([Rec::new().varint(9, 70_000).build()])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "record 0: field .small: value 35000 out of range for a Int16 column"
    );
}

#[test]
fn timestamp_occurring_twice_is_merged() {
    let d = ProtoDecoder::new(message(), wide_table()).unwrap();
    let rec = Rec::new()
        .bytes(8, Rec::new().varint(1, 10).build())
        .bytes(8, Rec::new().varint(2, 5000).build());
    let b = d.decode([rec.build()]).unwrap();
    assert_eq!(
        b.column_by_name("ts")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        10_000_005
    );
}

fn incompatible(table: SchemaRef) -> String {
    let err = ProtoDecoder::new(message(), table).unwrap_err();
    assert!(matches!(err, Error::IncompatibleField { .. }), "{err}");
    assert!(err.is_caller_fault());
    err.to_string()
}

fn replace(name: &str, field: Option<Field>) -> SchemaRef {
    let fields: Vec<Field> = wide_table()
        .fields()
        .iter()
        .filter_map(|f| {
            if f.name() == name {
                field.clone()
            } else {
                Some(f.as_ref().clone())
            }
        })
        .collect();
    table(fields)
}

#[test]
fn incompatible_descriptors_name_the_field() {
    assert_eq!(
        incompatible(replace(
            "i32",
            Some(Field::new("i32", DataType::Utf8, false))
        )),
        "field .i32: protobuf int32 cannot be stored in a column of type Utf8"
    );
    assert_eq!(
        incompatible(replace(
            "u64",
            Some(Field::new("u64", DataType::Int32, false))
        )),
        "field .u64: protobuf uint64 cannot be stored in a column of type Int32"
    );
    assert_eq!(
        incompatible(replace("f", None)),
        "field .f: the table has no column of this name"
    );
    assert_eq!(
        incompatible(replace(
            "extra",
            Some(Field::new("extra", DataType::Utf8, false))
        )),
        "field .extra: column is not nullable but the descriptor has no such field"
    );
    assert_eq!(
        incompatible(replace("ts", Some(Field::new("ts", DataType::Int64, true)))),
        "field .ts: protobuf google.protobuf.Timestamp cannot be stored in a column of type Int64"
    );
}

#[test]
fn nested_incompatibility_names_the_path() {
    let source = r#"
        syntax = "proto3";
        message Inner { bool ok = 1; }
        message Outer { Inner inner = 1; repeated Inner list = 2; }
    "#;
    let desc = descriptor_from_proto_source(source, "Outer").unwrap();
    let inner = |ty| DataType::Struct(Fields::from(vec![Field::new("ok", ty, false)]));
    let t = table(vec![
        Field::new("inner", inner(DataType::Int32), true),
        Field::new(
            "list",
            DataType::List(Arc::new(Field::new("item", inner(DataType::Boolean), true))),
            false,
        ),
    ]);
    let err = ProtoDecoder::new(desc.clone(), t).unwrap_err();
    assert_eq!(
        err.to_string(),
        "field .inner.ok: protobuf bool cannot be stored in a column of type Int32"
    );
    let t = table(vec![
        Field::new("inner", inner(DataType::Boolean), true),
        Field::new("list", inner(DataType::Boolean), false),
    ]);
    let err = ProtoDecoder::new(desc, t).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("field .list: protobuf repeated Inner cannot be stored"),
        "{err}"
    );
}

#[test]
fn columns_bind_by_name_in_any_order_and_case() {
    let source = "syntax = \"proto3\"; message M { int64 Alpha = 1; string beta = 2; }";
    let desc = descriptor_from_proto_source(source, "M").unwrap();
    let t = table(vec![
        Field::new("BETA", DataType::Utf8, false),
        Field::new("alpha", DataType::Int64, false),
    ]);
    let d = ProtoDecoder::new(desc, t).unwrap();
    let b = d
        .decode([Rec::new().varint(1, 5).bytes(2, b"x").build()])
        .unwrap();
    assert_eq!(b.column(0).as_string::<i32>().value(0), "x");
    assert_eq!(b.column(1).as_primitive::<Int64Type>().value(0), 5);
}

#[test]
fn presence_field_into_non_nullable_column_fails_only_when_absent() {
    let source = "syntax = \"proto2\"; message M { optional int64 a = 1; }";
    let desc = descriptor_from_proto_source(source, "M").unwrap();
    let d = ProtoDecoder::new(desc, table(vec![Field::new("a", DataType::Int64, false)])).unwrap();
    assert_eq!(
        d.decode([Rec::new().varint(1, 1).build()])
            .unwrap()
            .num_rows(),
        1
    );
    let err = d.decode([&[][..]]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "record 0: field .a: missing value for a non-nullable column"
    );
}

#[test]
fn groups_and_too_deep_schemas_are_rejected_at_construction() {
    let source =
        "syntax = \"proto2\"; message M { optional group G = 1 { optional int32 a = 2; } }";
    let desc = descriptor_from_proto_source(source, "M").unwrap();
    let t = table(vec![Field::new(
        "g",
        DataType::Struct(Fields::from(vec![Field::new("a", DataType::Int32, true)])),
        true,
    )]);
    let err = ProtoDecoder::new(desc, t).unwrap_err();
    assert_eq!(err.to_string(), "field .g: groups are not supported");

    let mut source = String::from("syntax = \"proto3\"; message L70 { int32 x = 1; }\n");
    for i in (0..70).rev() {
        source.push_str(&format!("message L{i} {{ L{} next = 1; }}\n", i + 1));
    }
    let desc = descriptor_from_proto_source(&source, "L0").unwrap();
    let schema = Arc::new(crate::protobuf::arrow_schema_for(&desc).unwrap());
    let err = ProtoDecoder::new(desc, schema).unwrap_err();
    assert!(err.to_string().ends_with("nested deeper than 64"), "{err}");
}

#[test]
fn enum_into_int64_and_map_with_unsigned_keys() {
    let source = r#"
        syntax = "proto3";
        enum E { A = 0; B = 5; }
        message M { E e = 1; map<uint32, string> m = 2; }
    "#;
    let desc = descriptor_from_proto_source(source, "M").unwrap();
    let entries = Fields::from(vec![
        Field::new("keys", DataType::UInt32, false),
        Field::new("values", DataType::Utf8, true),
    ]);
    let map = DataType::Map(
        Arc::new(Field::new("entries", DataType::Struct(entries), false)),
        false,
    );
    let t = table(vec![
        Field::new("e", DataType::Int64, false),
        Field::new("m", map, false),
    ]);
    let d = ProtoDecoder::new(desc, t).unwrap();
    let entry = Rec::new().varint(1, u64::from(u32::MAX)).bytes(2, b"v");
    let b = d
        .decode([Rec::new().varint(1, 5).bytes(2, entry.build()).build()])
        .unwrap();
    assert_eq!(b.column(0).as_primitive::<Int64Type>().value(0), 5);
    let m = b.column(1).as_map();
    assert_eq!(m.keys().as_primitive::<UInt32Type>().value(0), u32::MAX);
}
