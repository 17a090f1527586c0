//! The fuzz target's logic, as a library function so that any crash found
//! by `cargo fuzz` (target `protobuf_decode` in `codec/fuzz/`) reproduces as
//! a plain unit test: `decode_arbitrary(&crash_bytes)`.
//!
//! Input layout: byte 0 picks one of [`SCHEMAS`]; byte 1 gives the number
//! of records (1 to 4); then each record but the last is a length byte and
//! that many bytes, and the last record is the rest.

use std::sync::{Arc, OnceLock};

use prost_reflect::DynamicMessage;

use super::{ProtoDecoder, arrow_schema_for, descriptor_from_proto_source};

/// A proto3 message with every scalar type, presence flavour, list, map key
/// type, oneof, nested messages, timestamps, wrappers and sparse numbers.
pub const RICH_PROTO3: &str = r#"
syntax = "proto3";
package rich.v3;
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";
enum Color { COLOR_UNSPECIFIED = 0; RED = 1; GREEN = 2; BLUE = -3; }
message Leaf { string name = 1; sint64 delta = 2; repeated int32 codes = 3; optional bool flag = 4; }
message Mid { Leaf leaf = 1; repeated Leaf leaves = 2; map<string, Leaf> by_name = 3; google.protobuf.Timestamp at = 4; }
message Everything {
  int32 i32 = 1; int64 i64 = 2; uint32 u32 = 3; uint64 u64 = 4; sint32 s32 = 5; sint64 s64 = 6;
  fixed32 fx32 = 7; fixed64 fx64 = 8; sfixed32 sf32 = 9; sfixed64 sf64 = 10; float fl = 11; double db = 12;
  bool b = 13; string s = 14; bytes by = 15; Color color = 16;
  optional int32 opt_i32 = 17; optional string opt_s = 18; optional Color opt_color = 19;
  repeated int32 r_i32 = 20; repeated sint64 r_s64 = 21; repeated double r_db = 22; repeated string r_s = 23;
  repeated bytes r_by = 24; repeated Color r_color = 25; repeated bool r_b = 26; repeated fixed32 r_fx32 = 27;
  Mid mid = 30; repeated Mid mids = 31;
  map<int32, string> m_i32 = 32; map<int64, double> m_i64 = 33; map<uint32, Leaf> m_u32 = 34;
  map<bool, int32> m_b = 35; map<string, Color> m_s = 36; map<sint64, bytes> m_s64 = 37; map<fixed64, float> m_fx64 = 38;
  oneof choice { int64 c_int = 40; string c_str = 41; Leaf c_leaf = 42; }
  google.protobuf.Timestamp ts = 50; repeated google.protobuf.Timestamp r_ts = 51;
  google.protobuf.Int64Value w_i64 = 52; google.protobuf.StringValue w_s = 53; google.protobuf.BoolValue w_b = 54;
  google.protobuf.DoubleValue w_d = 55; google.protobuf.UInt32Value w_u32 = 56; google.protobuf.BytesValue w_by = 57;
  google.protobuf.FloatValue w_f = 58; google.protobuf.Int32Value w_i32 = 59; google.protobuf.UInt64Value w_u64 = 60;
  repeated google.protobuf.StringValue r_w_s = 61;
  int32 far = 5000;
  int64 last = 536870911;
}
"#;

/// A proto2 message: required fields, defaults, closed enums, packed and
/// unpacked lists, a oneof with a message member.
pub const RICH_PROTO2: &str = r#"
syntax = "proto2";
package rich.v2;
message Inner { required int32 id = 1; optional string label = 2 [default = "x"]; repeated int64 vals = 3 [packed = true]; }
message Record {
  required string key = 1; optional int32 a = 2 [default = 7]; optional double d = 3; optional bool flag = 4;
  optional bytes blob = 5; optional Inner inner = 6; repeated Inner inners = 7; repeated int32 unpacked = 8;
  repeated sint32 packed = 9 [packed = true];
  enum Kind { A = 1; B = 2; }
  optional Kind kind = 10; map<string, Inner> by_key = 11;
  oneof pick { int32 p_int = 12; Inner p_inner = 13; string p_str = 16; }
  optional uint64 u64 = 14; optional fixed64 fx64 = 15;
}
"#;

/// Five levels of nesting with lists and maps on the way down.
pub const DEEP: &str = r#"
syntax = "proto3";
package deep;
message L4 { repeated string tags = 1; optional int64 n = 2; }
message L3 { L4 one = 1; repeated L4 many = 2; }
message L2 { L3 one = 1; map<int32, L3> by_id = 2; }
message L1 { L2 one = 1; repeated L2 many = 2; double x = 3; }
message Root { L1 one = 1; repeated L1 many = 2; string id = 3; }
"#;

/// The schemas the fuzz input chooses from: (source, message name).
pub const SCHEMAS: [(&str, &str); 3] = [
    (RICH_PROTO3, "Everything"),
    (RICH_PROTO2, "Record"),
    (DEEP, "Root"),
];

fn decoders() -> &'static [ProtoDecoder] {
    static DECODERS: OnceLock<Vec<ProtoDecoder>> = OnceLock::new();
    DECODERS.get_or_init(|| {
        SCHEMAS
            .iter()
            .map(|(source, name)| {
                let message =
                    descriptor_from_proto_source(source, name).expect("fuzz schema compiles");
                let table =
                    Arc::new(arrow_schema_for(&message).expect("fuzz schema maps to Arrow"));
                ProtoDecoder::new(message, table).expect("fuzz schema binds")
            })
            .collect()
    })
}

/// Splits fuzz input into a schema choice and records (see the module doc).
pub fn split_input(data: &[u8]) -> Option<(usize, Vec<&[u8]>)> {
    let (&choice, rest) = data.split_first()?;
    let (&count, mut rest) = rest.split_first()?;
    let count = 1 + usize::from(count % 4);
    let mut records = Vec::with_capacity(count);
    for _ in 1..count {
        let Some((&len, tail)) = rest.split_first() else {
            break;
        };
        let len = usize::from(len).min(tail.len());
        records.push(&tail[..len]);
        rest = &tail[len..];
    }
    records.push(rest);
    Some((usize::from(choice) % SCHEMAS.len(), records))
}

/// Decodes arbitrary bytes and checks what must hold whatever they are:
/// no panic; a batch has one row per record and each row equals the record
/// decoded alone; anything accepted is accepted by prost-reflect too; an
/// error names a record that exists, and the records before it decode.
pub fn decode_arbitrary(data: &[u8]) {
    let Some((choice, records)) = split_input(data) else {
        return;
    };
    let decoder = &decoders()[choice];
    match decoder.decode(records.iter().copied()) {
        Ok(batch) => {
            assert_eq!(batch.num_rows(), records.len());
            assert_eq!(&batch.schema(), decoder.schema());
            for (i, record) in records.iter().enumerate() {
                let alone = decoder
                    .decode([*record])
                    .expect("a record of a good batch decodes alone");
                assert_eq!(
                    alone,
                    batch.slice(i, 1),
                    "record {i} decodes differently alone"
                );
                assert!(
                    DynamicMessage::decode(decoder.message().clone(), *record).is_ok(),
                    "record {i} accepted here but rejected by prost-reflect"
                );
            }
        }
        Err(err) => {
            let index = err.record_index().expect("decode errors name the record");
            assert!(index < records.len(), "{err}");
            assert!(err.is_caller_fault(), "{err}");
            assert!(!err.to_string().is_empty());
            decoder
                .decode(records[..index].iter().copied())
                .expect("records before the bad one decode");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protobuf::tests::support::mutated_inputs;

    #[test]
    fn split_input_frames_records() {
        assert_eq!(split_input(&[]), None);
        assert_eq!(split_input(&[4, 0]), Some((1, vec![&[][..]])));
        let (choice, records) = split_input(&[2, 1, 2, 9, 9, 7, 7, 7]).unwrap();
        assert_eq!((choice, records), (2, vec![&[9, 9][..], &[7, 7, 7][..]]));
    }

    #[test]
    fn fuzz_logic_holds_on_mutated_valid_records() {
        for input in mutated_inputs(300) {
            decode_arbitrary(&input);
        }
    }

    #[test]
    fn fuzz_logic_holds_on_noise() {
        let mut state = 1u64;
        for _ in 0..2000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let len = (state >> 56) as usize;
            let data: Vec<u8> = (0..len)
                .map(|i| (state >> (i % 57)) as u8 ^ i as u8)
                .collect();
            decode_arbitrary(&data);
        }
    }
}
