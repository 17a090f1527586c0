//! The natural Arrow schema of a protobuf message, and the well-known types
//! that map to Arrow scalars rather than structs.
//!
//! | protobuf                                   | Arrow (natural)                  |
//! |--------------------------------------------|----------------------------------|
//! | `int32`, `sint32`, `sfixed32`              | `Int32`                          |
//! | `int64`, `sint64`, `sfixed64`              | `Int64`                          |
//! | `uint32`, `fixed32`, `uint64`, `fixed64`   | `Int64` (Delta has no unsigned)  |
//! | `float` / `double`                         | `Float32` / `Float64`            |
//! | `bool`                                     | `Boolean`                        |
//! | `string` / `bytes`                         | `Utf8` / `Binary`                |
//! | enum                                       | `Utf8` (the value's name)        |
//! | message                                    | `Struct`                         |
//! | `google.protobuf.Timestamp`                | `Timestamp(Microsecond, "UTC")`  |
//! | `google.protobuf.*Value` wrappers          | the wrapped scalar, nullable     |
//! | `repeated T`                               | `List<T>` (element `element`)    |
//! | `map<K, V>`                                | `Map<K, V>` (`key_value`, `key`, `value`) |
//!
//! A column is nullable when its field has presence (proto2 `optional`,
//! proto3 `optional`, oneof members, messages, wrappers); proto3
//! implicit-presence scalars, proto2 `required` fields, lists and maps are not.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, TimeUnit};
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};

use crate::error::{Error, Result};

/// Name of list elements in the natural schema (as Delta and Parquet name them).
pub const LIST_ELEMENT: &str = "element";
/// Name of the map entries struct in the natural schema.
pub const MAP_ENTRIES: &str = "key_value";

/// A message type that maps to an Arrow scalar instead of a struct.
#[derive(Debug, Clone)]
pub(crate) enum WellKnown {
    /// `google.protobuf.Timestamp { int64 seconds = 1; int32 nanos = 2; }`.
    Timestamp,
    /// `google.protobuf.Int64Value` and friends: `{ T value = 1; }`.
    Wrapper(FieldDescriptor),
}

/// Recognises `google.protobuf.Timestamp` and the nine wrapper types.
pub(crate) fn well_known(message: &MessageDescriptor) -> Option<WellKnown> {
    match message.full_name() {
        "google.protobuf.Timestamp" => Some(WellKnown::Timestamp),
        "google.protobuf.DoubleValue"
        | "google.protobuf.FloatValue"
        | "google.protobuf.Int64Value"
        | "google.protobuf.UInt64Value"
        | "google.protobuf.Int32Value"
        | "google.protobuf.UInt32Value"
        | "google.protobuf.BoolValue"
        | "google.protobuf.StringValue"
        | "google.protobuf.BytesValue" => message.get_field(1).map(WellKnown::Wrapper),
        _ => None,
    }
}

/// The natural Arrow schema of a message: one column per field, in field
/// declaration order, typed as in the module table. Fails on recursive
/// message types and groups, which have no finite Arrow schema.
pub fn arrow_schema_for(message: &MessageDescriptor) -> Result<Schema> {
    let mut stack = vec![message.full_name().to_owned()];
    Ok(Schema::new(message_fields(message, "", &mut stack)?))
}

fn message_fields(
    message: &MessageDescriptor,
    prefix: &str,
    stack: &mut Vec<String>,
) -> Result<Fields> {
    message
        .fields()
        .map(|f| {
            let path = format!("{prefix}.{}", f.name());
            let data_type = field_type(&f, &path, stack)?;
            let nullable =
                !f.is_list() && !f.is_map() && (f.supports_presence() && !f.is_required());
            Ok(Field::new(f.name(), data_type, nullable))
        })
        .collect()
}

fn field_type(field: &FieldDescriptor, path: &str, stack: &mut Vec<String>) -> Result<DataType> {
    if field.is_group() {
        return Err(Error::incompatible_field(path, "groups are not supported"));
    }
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return Err(Error::incompatible_field(
                path,
                "map field without an entry message",
            ));
        };
        let key = value_type(&entry.map_entry_key_field().kind(), path, stack)?;
        let value = value_type(&entry.map_entry_value_field().kind(), path, stack)?;
        let entries = Field::new(
            MAP_ENTRIES,
            DataType::Struct(Fields::from(vec![
                Field::new("key", key, false),
                Field::new("value", value, true),
            ])),
            false,
        );
        return Ok(DataType::Map(Arc::new(entries), false));
    }
    let value = value_type(&field.kind(), path, stack)?;
    if field.is_list() {
        Ok(DataType::List(Arc::new(Field::new(
            LIST_ELEMENT,
            value,
            true,
        ))))
    } else {
        Ok(value)
    }
}

fn value_type(kind: &Kind, path: &str, stack: &mut Vec<String>) -> Result<DataType> {
    Ok(match kind {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => DataType::Int32,
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => DataType::Int64,
        Kind::Uint32 | Kind::Fixed32 | Kind::Uint64 | Kind::Fixed64 => DataType::Int64,
        Kind::Float => DataType::Float32,
        Kind::Double => DataType::Float64,
        Kind::Bool => DataType::Boolean,
        Kind::String | Kind::Enum(_) => DataType::Utf8,
        Kind::Bytes => DataType::Binary,
        Kind::Message(message) => match well_known(message) {
            Some(WellKnown::Timestamp) => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
            Some(WellKnown::Wrapper(inner)) => value_type(&inner.kind(), path, stack)?,
            None => {
                let name = message.full_name().to_owned();
                if stack.contains(&name) {
                    return Err(Error::incompatible_field(
                        path,
                        format!("recursive message type {name} has no finite Arrow schema"),
                    ));
                }
                stack.push(name);
                let fields = message_fields(message, path, stack)?;
                stack.pop();
                DataType::Struct(fields)
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protobuf::descriptor_from_proto_source;

    #[test]
    fn natural_schema() {
        let source = r#"
            syntax = "proto3";
            import "google/protobuf/timestamp.proto";
            import "google/protobuf/wrappers.proto";
            enum Color { RED = 0; GREEN = 1; }
            message Inner { sint32 s = 1; }
            message M {
                int32 a = 1;
                optional uint64 b = 2;
                Color c = 3;
                Inner inner = 4;
                repeated string tags = 5;
                map<string, Inner> by_name = 6;
                google.protobuf.Timestamp ts = 7;
                google.protobuf.Int64Value maybe = 8;
                bytes raw = 9;
                float f = 10;
            }
        "#;
        let desc = descriptor_from_proto_source(source, "M").unwrap();
        let schema = arrow_schema_for(&desc).unwrap();
        let expect = [
            ("a", "Int32", false),
            ("b", "Int64", true),
            ("c", "Utf8", false),
            ("inner", "Struct(\"s\": non-null Int32)", true),
            ("tags", "List(Utf8, field: 'element')", false),
            ("ts", "Timestamp(µs, \"UTC\")", true),
            ("maybe", "Int64", true),
            ("raw", "Binary", false),
            ("f", "Float32", false),
        ];
        for (name, ty, nullable) in expect {
            let f = schema.field_with_name(name).unwrap();
            assert_eq!(f.data_type().to_string(), ty, "{name}");
            assert_eq!(f.is_nullable(), nullable, "{name}");
        }
        let map = schema.field_with_name("by_name").unwrap();
        assert!(matches!(map.data_type(), DataType::Map(_, false)));
    }

    #[test]
    fn recursive_messages_are_rejected() {
        let source = "syntax = \"proto3\"; message Node { Node next = 1; }";
        let desc = descriptor_from_proto_source(source, "Node").unwrap();
        let err = arrow_schema_for(&desc).unwrap_err();
        assert_eq!(
            err.to_string(),
            "field .next: recursive message type Node has no finite Arrow schema"
        );
    }
}
