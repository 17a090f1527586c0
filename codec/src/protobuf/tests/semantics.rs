//! Protobuf decoding rules, checked on hand-built and prost-reflect-built
//! records.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int32Type, Int64Type};
use prost_reflect::Value;

use super::support::{Rec, check_one, decoder, encode};
use crate::protobuf::descriptor_from_proto_source;

const SIMPLE: &str = r#"
syntax = "proto3";
enum Level { LOW = 0; HIGH = 1; }
message Meta { int64 ts = 1; string host = 2; optional int32 port = 3; }
message Simple {
  int32 a = 1; string s = 2; optional int64 o = 3; Meta meta = 4; repeated int32 xs = 5;
  Level level = 6; bool flag = 7; double d = 8; repeated Meta metas = 9; map<string, int64> counts = 10;
  sint32 z32 = 11; sint64 z64 = 12;
  oneof pick { int32 p_int = 13; string p_str = 14; Meta p_meta = 15; }
}
"#;

const PROTO2: &str = r#"
syntax = "proto2";
message P2 { optional int32 a = 1 [default = 5]; optional string s = 2; required int64 id = 3; }
"#;

#[test]
fn implicit_presence_scalars_absent_are_defaults_not_null() {
    let d = decoder(SIMPLE, "Simple");
    let batch = d.decode([&[][..]]).unwrap();
    assert_eq!(batch.num_rows(), 1);
    assert_eq!(
        batch
            .column_by_name("a")
            .unwrap()
            .as_primitive::<Int32Type>()
            .value(0),
        0
    );
    assert_eq!(
        batch
            .column_by_name("s")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        ""
    );
    assert_eq!(
        batch
            .column_by_name("level")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        "LOW"
    );
    assert!(!batch.column_by_name("flag").unwrap().as_boolean().value(0));
    assert_eq!(
        batch
            .column_by_name("d")
            .unwrap()
            .as_primitive::<Float64Type>()
            .value(0),
        0.0
    );
    for name in ["a", "s", "level", "flag", "d", "xs", "counts"] {
        assert_eq!(
            batch.column_by_name(name).unwrap().null_count(),
            0,
            "{name}"
        );
    }
    // Explicit presence: null.
    for name in ["o", "meta", "p_int", "p_str", "p_meta"] {
        assert!(batch.column_by_name(name).unwrap().is_null(0), "{name}");
    }
    assert_eq!(
        batch
            .column_by_name("xs")
            .unwrap()
            .as_list::<i32>()
            .value_length(0),
        0
    );
}

#[test]
fn proto2_optional_absent_is_null_even_with_a_default() {
    let d = decoder(PROTO2, "P2");
    let batch = d.decode([Rec::new().varint(3, 9).build()]).unwrap();
    assert!(batch.column_by_name("a").unwrap().is_null(0));
    assert!(batch.column_by_name("s").unwrap().is_null(0));
    assert_eq!(
        batch
            .column_by_name("id")
            .unwrap()
            .as_primitive::<Int64Type>()
            .value(0),
        9
    );
}

#[test]
fn last_value_wins_for_singular_scalars() {
    let d = decoder(SIMPLE, "Simple");
    let rec = Rec::new()
        .varint(1, 1)
        .bytes(2, b"first, longer")
        .varint(3, 10)
        .varint(1, 2)
        .bytes(2, b"second")
        .varint(3, 20);
    let batch = d
        .decode([rec.build(), Rec::new().bytes(2, b"next row").build()])
        .unwrap();
    assert_eq!(
        batch
            .column_by_name("a")
            .unwrap()
            .as_primitive::<Int32Type>()
            .value(0),
        2
    );
    let s = batch.column_by_name("s").unwrap().as_string::<i32>();
    assert_eq!((s.value(0), s.value(1)), ("second", "next row"));
    assert_eq!(
        batch
            .column_by_name("o")
            .unwrap()
            .as_primitive::<Int64Type>()
            .value(0),
        20
    );
    check_one(&d, rec.build());
}

#[test]
fn singular_messages_occurring_twice_are_merged() {
    let d = decoder(SIMPLE, "Simple");
    let meta1 = Rec::new().varint(1, 100).bytes(2, b"h1");
    let meta2 = Rec::new().varint(3, 8080).bytes(2, b"h2");
    let rec = Rec::new()
        .bytes(4, meta1.build())
        .varint(1, 7)
        .bytes(4, meta2.build());
    let batch = d.decode([rec.build()]).unwrap();
    let meta = batch.column_by_name("meta").unwrap().as_struct();
    assert_eq!(
        meta.column_by_name("ts")
            .unwrap()
            .as_primitive::<Int64Type>()
            .value(0),
        100
    );
    assert_eq!(
        meta.column_by_name("host")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        "h2"
    );
    assert_eq!(
        meta.column_by_name("port")
            .unwrap()
            .as_primitive::<Int32Type>()
            .value(0),
        8080
    );
    check_one(&d, rec.build());
}

#[test]
fn packed_and_unpacked_lists_are_both_accepted() {
    let d = decoder(SIMPLE, "Simple");
    let mut packed = Vec::new();
    for v in [3u64, 4, 300] {
        prost::encoding::encode_varint(v, &mut packed);
    }
    let rec = Rec::new()
        .varint(5, 1)
        .varint(5, 2)
        .bytes(5, &packed)
        .varint(5, 5);
    let batch = d.decode([rec.build()]).unwrap();
    let xs = batch
        .column_by_name("xs")
        .unwrap()
        .as_list::<i32>()
        .value(0);
    assert_eq!(
        xs.as_primitive::<Int32Type>().values(),
        &[1, 2, 3, 4, 300, 5]
    );
    check_one(&d, rec.build());
}

#[test]
fn unknown_fields_of_every_wire_type_are_skipped() {
    let d = decoder(SIMPLE, "Simple");
    let rec = Rec::new()
        .varint(100, u64::MAX)
        .fixed64(101, 1)
        .bytes(102, b"ignored")
        .fixed32(103, 1)
        .varint(1, 42)
        .bytes(20_000, &[0xff; 3]);
    let batch = d.decode([rec.build()]).unwrap();
    assert_eq!(
        batch
            .column_by_name("a")
            .unwrap()
            .as_primitive::<Int32Type>()
            .value(0),
        42
    );
    check_one(&d, rec.build());
}

#[test]
fn negative_int32_is_a_ten_byte_varint_and_sint_uses_zigzag() {
    let d = decoder(SIMPLE, "Simple");
    let desc = d.message().clone();
    let bytes = encode(
        &desc,
        &[
            ("a", Value::I32(-5)),
            ("z32", Value::I32(-3)),
            ("z64", Value::I64(i64::MIN)),
        ],
    );
    // a = -5: tag + 10 bytes.
    assert_eq!(&bytes[..2], &[0x08, 0xfb]);
    let batch = d.decode([bytes.as_slice()]).unwrap();
    assert_eq!(
        batch
            .column_by_name("a")
            .unwrap()
            .as_primitive::<Int32Type>()
            .value(0),
        -5
    );
    assert_eq!(
        batch
            .column_by_name("z32")
            .unwrap()
            .as_primitive::<Int32Type>()
            .value(0),
        -3
    );
    assert_eq!(
        batch
            .column_by_name("z64")
            .unwrap()
            .as_primitive::<Int64Type>()
            .value(0),
        i64::MIN
    );
    // Raw zigzag: 3 -> -2.
    let batch = d.decode([Rec::new().varint(11, 3).build()]).unwrap();
    assert_eq!(
        batch
            .column_by_name("z32")
            .unwrap()
            .as_primitive::<Int32Type>()
            .value(0),
        -2
    );
}

#[test]
fn oneof_members_replace_each_other() {
    let d = decoder(SIMPLE, "Simple");
    let meta = Rec::new().varint(1, 5);
    // int, then a message, then a string: only the string survives.
    let rec = Rec::new()
        .varint(13, 1)
        .bytes(15, meta.build())
        .bytes(14, b"s");
    let batch = d.decode([rec.build()]).unwrap();
    assert!(batch.column_by_name("p_int").unwrap().is_null(0));
    assert!(batch.column_by_name("p_meta").unwrap().is_null(0));
    assert_eq!(
        batch
            .column_by_name("p_str")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        "s"
    );
    check_one(&d, rec.build());

    // A message member cleared by another member starts afresh when set again.
    let again = Rec::new().bytes(2, b"h");
    let rec = Rec::new()
        .bytes(15, meta.build())
        .varint(13, 9)
        .bytes(15, again.build());
    let batch = d
        .decode([rec.build(), Rec::new().varint(13, 3).build()])
        .unwrap();
    let p_meta = batch.column_by_name("p_meta").unwrap().as_struct();
    assert!(p_meta.is_valid(0) && p_meta.is_null(1));
    assert_eq!(
        p_meta
            .column_by_name("ts")
            .unwrap()
            .as_primitive::<Int64Type>()
            .value(0),
        0
    );
    assert_eq!(
        p_meta
            .column_by_name("host")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        "h"
    );
    assert!(batch.column_by_name("p_int").unwrap().is_null(0));
    check_one(&d, rec.build());
}

#[test]
fn repeated_messages_and_maps() {
    let d = decoder(SIMPLE, "Simple");
    let m1 = Rec::new().varint(1, 1);
    let m2 = Rec::new().bytes(2, b"x").varint(3, 2);
    let e1 = Rec::new().bytes(1, b"k").varint(2, 1);
    let e2 = Rec::new().bytes(1, b"j").varint(2, 2);
    let e3 = Rec::new().varint(2, 3).bytes(1, b"k"); // same key, later: wins
    let e4 = Rec::new().bytes(1, b"v-missing");
    let rec = Rec::new()
        .bytes(9, m1.build())
        .bytes(10, e1.build())
        .bytes(9, m2.build())
        .bytes(10, e2.build());
    let rec = rec.bytes(10, e3.build()).bytes(10, e4.build());
    let batch = d.decode([rec.build(), &[][..]]).unwrap();
    let metas = batch.column_by_name("metas").unwrap().as_list::<i32>();
    assert_eq!((metas.value_length(0), metas.value_length(1)), (2, 0));
    let counts = batch.column_by_name("counts").unwrap().as_map();
    assert_eq!(counts.value_length(0), 3);
    let entries = counts.value(0);
    let keys = entries.column(0).as_string::<i32>();
    let values = entries.column(1).as_primitive::<Int64Type>();
    let pairs: Vec<(&str, i64)> = (0..3).map(|i| (keys.value(i), values.value(i))).collect();
    assert_eq!(pairs, [("j", 2), ("k", 3), ("v-missing", 0)]);
    check_one(&d, rec.build());
}

#[test]
fn required_fields_are_enforced() {
    let d = decoder(PROTO2, "P2");
    let err = d
        .decode([
            Rec::new().varint(3, 1).build(),
            Rec::new().varint(1, 1).build(),
        ])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "record 1: field .id: missing required field"
    );
    assert_eq!(err.record_index(), Some(1));
}

#[test]
fn empty_batch_and_many_rows() {
    let d = decoder(SIMPLE, "Simple");
    let batch = d.decode(std::iter::empty()).unwrap();
    assert_eq!(batch.num_rows(), 0);
    assert_eq!(batch.schema(), *d.schema());
    let records: Vec<Vec<u8>> = (0..1000u64)
        .map(|i| Rec::new().varint(1, i).bytes(2, b"x").0)
        .collect();
    let batch = d.decode(records.iter().map(Vec::as_slice)).unwrap();
    assert_eq!(batch.num_rows(), 1000);
    assert_eq!(
        batch
            .column_by_name("a")
            .unwrap()
            .as_primitive::<Int32Type>()
            .value(999),
        999
    );
}

#[test]
fn proto2_descriptor_proto_source_decodes_absent_as_null() {
    // What the Zerobus SDKs send: a lone DescriptorProto (decoded as proto2).
    use prost::Message as _;
    let source = "syntax = \"proto3\"; message Meta { int64 ts = 1; string host = 2; }";
    let desc = descriptor_from_proto_source(source, "Meta").unwrap();
    let bytes = desc.descriptor_proto().encode_to_vec();
    let lone = crate::protobuf::descriptor_from_descriptor_proto(&bytes).unwrap();
    let d = super::support::natural_decoder(&lone);
    let batch = d.decode([Rec::new().varint(1, 3).build()]).unwrap();
    assert!(batch.column_by_name("host").unwrap().is_null(0));
}

/// The fast loop's shortcuts (fields in number order, absent fields stepped
/// over, bulk "seen" marks in a fresh row, the lean variant for levels of
/// only doubles, int64s and strings) against the general rules, on records
/// that leave the fast path in each way: a field skipped and never seen, a
/// skipped field arriving later out of order, a field repeated after an
/// in-order run, and an unknown field in the middle.
#[test]
fn fast_loop_shortcuts_keep_protobuf_semantics() {
    const LEAN: &str = r#"
syntax = "proto2";
message Lean { optional double a = 1; optional int64 b = 2; optional string c = 3; optional double d = 4; optional int64 e = 5; }
"#;
    const MIXED: &str = r#"
syntax = "proto3";
message Mixed { double a = 1; int64 b = 2; string c = 3; double d = 4; int64 e = 5; float f = 6; bool g = 7; bytes h = 8; }
"#;
    let rows = |d: &crate::protobuf::ProtoDecoder, tail: &[u8]| {
        let pi = 3.25f64.to_bits();
        let in_order = Rec::new()
            .fixed64(1, pi)
            .varint(2, 300)
            .bytes(3, b"abc")
            .fixed64(4, pi)
            .varint(5, 1)
            .raw(tail);
        let skipped = Rec::new().fixed64(1, pi).bytes(3, b"no b").fixed64(4, pi);
        let late = Rec::new()
            .fixed64(1, pi)
            .bytes(3, b"b comes last")
            .fixed64(4, pi)
            .varint(5, 1)
            .raw(tail)
            .varint(2, 7);
        let repeated = Rec::new()
            .fixed64(1, pi)
            .varint(2, 1)
            .bytes(3, b"first")
            .varint(2, 2)
            .bytes(3, b"second")
            .fixed64(1, 0);
        let unknown = Rec::new()
            .fixed64(1, pi)
            .varint(99, 5)
            .varint(2, 3)
            .bytes(3, b"x");
        let records = [in_order, skipped, late, repeated, unknown];
        for r in &records {
            check_one(d, r.build());
        }
        let batch = d.decode(records.iter().map(Rec::build)).unwrap();
        for (i, r) in records.iter().enumerate() {
            let one = d.decode([r.build()]).unwrap();
            assert_eq!(one, batch.slice(i, 1), "record {i} alone and in a batch");
        }
        batch
    };

    let lean = decoder(LEAN, "Lean");
    let batch = rows(&lean, &[]);
    let b = batch
        .column_by_name("b")
        .unwrap()
        .as_primitive::<Int64Type>();
    // In order; skipped and absent (proto2: null); arriving late; last wins.
    assert_eq!(b.value(0), 300);
    assert!(b.is_null(1));
    assert_eq!((b.value(2), b.value(3), b.value(4)), (7, 2, 3));
    let c = batch.column_by_name("c").unwrap().as_string::<i32>();
    assert_eq!((c.value(2), c.value(3)), ("b comes last", "second"));
    let a = batch
        .column_by_name("a")
        .unwrap()
        .as_primitive::<Float64Type>();
    assert_eq!((a.value(0), a.value(3)), (3.25, 0.0));

    let mixed = decoder(MIXED, "Mixed");
    let tail = Rec::new()
        .fixed32(6, 1.5f32.to_bits())
        .varint(7, 1)
        .bytes(8, b"\x00\xff");
    let batch = rows(&mixed, tail.build());
    let b = batch
        .column_by_name("b")
        .unwrap()
        .as_primitive::<Int64Type>();
    // proto3: a skipped field that never comes is its default, not null.
    assert_eq!((b.value(1), b.value(2)), (0, 7));
    assert_eq!(b.null_count(), 0);
    let g = batch.column_by_name("g").unwrap().as_boolean();
    assert_eq!((g.value(0), g.value(1), g.value(2)), (true, false, true));
}
