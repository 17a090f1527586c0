//! Every decode error, with its message: record index, field path, cause.

use super::support::{Rec, decoder};
use crate::protobuf::ProtoDecoder;

const MSG: &str = r#"
syntax = "proto3";
import "google/protobuf/timestamp.proto";
enum E { ZERO = 0; ONE = 1; }
message Meta { google.protobuf.Timestamp ts = 1; string host = 2; }
message M { int64 n = 1; string s = 2; Meta meta = 3; repeated int32 xs = 4; E e = 5; uint64 u = 6; double d = 7; }
"#;

fn error(d: &ProtoDecoder, records: &[&[u8]]) -> String {
    let err = d.decode(records.iter().copied()).unwrap_err();
    assert!(err.is_caller_fault());
    err.to_string()
}

fn first_ok() -> Rec {
    Rec::new().varint(1, 1)
}

#[test]
fn truncated_varint() {
    let d = decoder(MSG, "M");
    let bad = Rec::new().raw(&[0x08, 0x80]);
    assert_eq!(
        error(&d, &[first_ok().build(), bad.build()]),
        "record 1: field .n: truncated varint"
    );
    // Inside a nested message, in the tag.
    let meta = Rec::new().bytes(3, &[0x80]);
    assert_eq!(
        error(&d, &[meta.build()]),
        "record 0: field .meta: truncated varint"
    );
    // Deeper: the timestamp's seconds.
    let ts = Rec::new().raw(&[0x08, 0xff]);
    let meta = Rec::new().bytes(1, ts.build());
    let rec = Rec::new().bytes(3, meta.build());
    assert_eq!(
        error(&d, &[rec.build()]),
        "record 0: field .meta.ts: truncated varint"
    );
    // The top-level tag itself.
    assert_eq!(error(&d, &[&[0x80][..]]), "record 0: truncated varint");
}

#[test]
fn varint_too_long() {
    let d = decoder(MSG, "M");
    let rec = Rec::new().raw(&[0x08]).raw(&[0xff; 10]).raw(&[0x01]);
    assert_eq!(
        error(&d, &[rec.build()]),
        "record 0: field .n: varint longer than 10 bytes"
    );
}

#[test]
fn length_past_end() {
    let d = decoder(MSG, "M");
    let rec = Rec::new().raw(&[0x12, 10, b'a']);
    assert_eq!(
        error(&d, &[rec.build()]),
        "record 0: field .s: length 10 past end of message (1 bytes left)"
    );
    let rec = Rec::new().raw(&[0x39, 1, 2]);
    assert_eq!(
        error(&d, &[rec.build()]),
        "record 0: field .d: length 8 past end of message (2 bytes left)"
    );
    // An unknown field's length.
    let rec = Rec::new().raw(&[0xa2, 0x06, 5]);
    assert_eq!(
        error(&d, &[rec.build()]),
        "record 0: length 5 past end of message (0 bytes left)"
    );
}

#[test]
fn wrong_wire_type() {
    let d = decoder(MSG, "M");
    let rec = Rec::new().fixed32(1, 5);
    assert_eq!(
        error(&d, &[rec.build()]),
        "record 0: field .n: wrong wire type: expected VARINT, found I32"
    );
    let rec = Rec::new().varint(3, 5);
    assert_eq!(
        error(&d, &[rec.build()]),
        "record 0: field .meta: wrong wire type: expected LEN, found VARINT"
    );
    let rec = Rec::new().fixed64(4, 5);
    assert_eq!(
        error(&d, &[rec.build()]),
        "record 0: field .xs: wrong wire type: expected VARINT, found I64"
    );
}

#[test]
fn invalid_utf8() {
    let d = decoder(MSG, "M");
    let rec = Rec::new().bytes(2, &[b'o', 0xff, b'k']);
    assert_eq!(
        error(&d, &[rec.build()]),
        "record 0: field .s: invalid UTF-8 in string"
    );
    let meta = Rec::new().bytes(2, &[0xc3]);
    let rec = Rec::new().bytes(3, meta.build());
    assert_eq!(
        error(&d, &[first_ok().build(), rec.build()]),
        "record 1: field .meta.host: invalid UTF-8 in string"
    );
}

#[test]
fn groups_are_rejected() {
    let d = decoder(MSG, "M");
    let rec = Rec::new().raw(&[0x0b, 0x0c]);
    assert_eq!(
        error(&d, &[rec.build()]),
        "record 0: field .n: groups (wire types 3 and 4) are not supported"
    );
    let rec = Rec::new().raw(&[0xa3, 0x06, 0xa4, 0x06]);
    assert_eq!(
        error(&d, &[rec.build()]),
        "record 0: groups (wire types 3 and 4) are not supported"
    );
    let rec = Rec::new().raw(&[0x1b]);
    assert_eq!(
        error(&d, &[rec.build()]),
        "record 0: field .meta: groups (wire types 3 and 4) are not supported"
    );
}

#[test]
fn bad_tags() {
    let d = decoder(MSG, "M");
    assert_eq!(
        error(&d, &[&[0x00][..]]),
        "record 0: invalid field number 0"
    );
    assert_eq!(error(&d, &[&[0x0f][..]]), "record 0: invalid wire type 7");
}

#[test]
fn unknown_enum_value_for_a_string_column() {
    let d = decoder(MSG, "M");
    let rec = Rec::new().varint(5, 7);
    assert_eq!(
        error(&d, &[rec.build()]),
        "record 0: field .e: enum value 7 is not defined"
    );
}

#[test]
fn uint64_overflowing_int64() {
    let d = decoder(MSG, "M");
    let rec = Rec::new().varint(6, u64::MAX);
    assert_eq!(
        error(&d, &[rec.build()]),
        "record 0: field .u: value 18446744073709551615 overflows a signed 64-bit column"
    );
}

#[test]
fn timestamp_errors() {
    let d = decoder(MSG, "M");
    let ts = Rec::new().varint(1, 1).varint(2, 1_000_000_000);
    let rec = Rec::new().bytes(3, Rec::new().bytes(1, ts.build()).build());
    assert_eq!(
        error(&d, &[rec.build()]),
        "record 0: field .meta.ts: timestamp nanos 1000000000 outside 0..=999999999"
    );
    let ts = Rec::new().varint(1, i64::MAX as u64);
    let rec = Rec::new().bytes(3, Rec::new().bytes(1, ts.build()).build());
    assert_eq!(
        error(&d, &[rec.build()]),
        "record 0: field .meta.ts: timestamp out of range for the column's unit"
    );
}

#[test]
fn no_partial_output_and_record_index() {
    let d = decoder(MSG, "M");
    let good = first_ok();
    let bad = Rec::new().raw(&[0x12, 3]);
    let err = d
        .decode([good.build(), good.build(), good.build(), bad.build()])
        .unwrap_err();
    assert_eq!(err.record_index(), Some(3));
}
