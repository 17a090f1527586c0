//! Test support: rich descriptors, random messages built with prost-reflect
//! (the independent implementation), and a comparison of a decoded Arrow
//! row against the `DynamicMessage` it came from.

use std::sync::Arc;

use arrow::array::{
    Array, AsArray, BinaryArray, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array,
    StringArray, StructArray, TimestampMicrosecondArray,
};
use arrow::record_batch::RecordBatch;
use prost::Message as _;
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage, Value,
};

use crate::protobuf::fuzz::{DEEP, RICH_PROTO2, RICH_PROTO3, SCHEMAS};
use crate::protobuf::schema::{WellKnown, well_known};
use crate::protobuf::{ProtoDecoder, arrow_schema_for, descriptor_from_proto_source};

/// The rich descriptors with their root message names.
pub fn rich_descriptors() -> Vec<MessageDescriptor> {
    [
        (RICH_PROTO3, "Everything"),
        (RICH_PROTO2, "Record"),
        (DEEP, "Root"),
        (NEOWISE, "NeowiseRow"),
    ]
    .into_iter()
    .map(|(src, name)| descriptor_from_proto_source(src, name).unwrap())
    .collect()
}

/// The benchmark schema.
pub const NEOWISE: &str = include_str!("../../../benches/data/neowise.proto");

/// A decoder into the natural schema of `message`.
pub fn natural_decoder(message: &MessageDescriptor) -> ProtoDecoder {
    let schema = Arc::new(arrow_schema_for(message).unwrap());
    ProtoDecoder::new(message.clone(), schema).unwrap()
}

/// Compiles `source` and returns a decoder into the natural schema of `name`.
pub fn decoder(source: &str, name: &str) -> ProtoDecoder {
    natural_decoder(&descriptor_from_proto_source(source, name).unwrap())
}

/// Encodes a message built by setting `fields` by name.
pub fn encode(message: &MessageDescriptor, fields: &[(&str, Value)]) -> Vec<u8> {
    let mut m = DynamicMessage::new(message.clone());
    for (name, value) in fields {
        m.set_field_by_name(name, value.clone());
    }
    m.encode_to_vec()
}

/// SplitMix64: a tiny deterministic generator, so a proptest seed
/// reproduces a whole message.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// Integers biased towards edge cases.
    pub fn int(&mut self) -> u64 {
        match self.below(6) {
            0 => 0,
            1 => u64::MAX - self.below(3),
            2 => self.below(128),
            3 => 1 << self.below(64),
            _ => self.next(),
        }
    }
}

/// A random message of `desc`. `presence` is the chance (percent) that an
/// optional field is set; lists and maps get up to `max_len` entries.
pub fn random_message(
    desc: &MessageDescriptor,
    rng: &mut Rng,
    presence: u64,
    max_len: u64,
    depth: usize,
) -> DynamicMessage {
    let mut m = DynamicMessage::new(desc.clone());
    for f in desc.fields() {
        let set = f.is_required() || rng.chance(presence);
        if !set || (depth > 3 && matches!(f.kind(), Kind::Message(_))) {
            continue;
        }
        let value = if f.is_map() {
            let Kind::Message(entry) = f.kind() else {
                unreachable!()
            };
            let (kf, vf) = (entry.map_entry_key_field(), entry.map_entry_value_field());
            let n = rng.below(max_len + 1);
            let map = (0..n)
                .map(|_| {
                    let key = random_value(&kf.kind(), rng, presence, max_len, depth + 1);
                    (
                        map_key(key),
                        random_value(&vf.kind(), rng, presence, max_len, depth + 1),
                    )
                })
                .collect();
            Value::Map(map)
        } else if f.is_list() {
            let n = rng.below(max_len + 1);
            Value::List(
                (0..n)
                    .map(|_| random_value(&f.kind(), rng, presence, max_len, depth + 1))
                    .collect(),
            )
        } else {
            random_value(&f.kind(), rng, presence, max_len, depth + 1)
        };
        m.set_field(&f, value);
    }
    m
}

fn map_key(v: Value) -> MapKey {
    match v {
        Value::Bool(b) => MapKey::Bool(b),
        Value::I32(i) => MapKey::I32(i),
        Value::I64(i) => MapKey::I64(i),
        Value::U32(i) => MapKey::U32(i),
        Value::U64(i) => MapKey::U64(i),
        Value::String(s) => MapKey::String(s),
        other => panic!("not a map key: {other:?}"),
    }
}

fn random_value(kind: &Kind, rng: &mut Rng, presence: u64, max_len: u64, depth: usize) -> Value {
    let strings = [
        "",
        "a",
        "héllo",
        "日本語",
        "emoji 🚀",
        "tab\there",
        "long string with some words in it",
    ];
    match kind {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(rng.int() as i32),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(rng.int() as i64),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(rng.int() as u32),
        // Natural schemas store these in Int64: stay in range.
        Kind::Uint64 | Kind::Fixed64 => Value::U64(rng.int() >> 1),
        Kind::Float => Value::F32(f32::from_bits(rng.next() as u32)),
        Kind::Double => Value::F64(f64::from_bits(rng.next())),
        Kind::Bool => Value::Bool(rng.chance(50)),
        Kind::String => Value::String(strings[rng.below(strings.len() as u64) as usize].to_owned()),
        Kind::Bytes => Value::Bytes(
            (0..rng.below(6))
                .map(|_| rng.next() as u8)
                .collect::<Vec<u8>>()
                .into(),
        ),
        Kind::Enum(e) => {
            let values: Vec<i32> = e.values().map(|v| v.number()).collect();
            Value::EnumNumber(values[rng.below(values.len() as u64) as usize])
        }
        Kind::Message(m) => match well_known(m) {
            Some(WellKnown::Timestamp) => {
                let mut ts = DynamicMessage::new(m.clone());
                ts.set_field_by_number(
                    1,
                    Value::I64(rng.below(20_000_000_000) as i64 - 10_000_000_000),
                );
                ts.set_field_by_number(2, Value::I32(rng.below(1_000_000_000) as i32));
                Value::Message(ts)
            }
            _ => Value::Message(random_message(m, rng, presence, max_len, depth)),
        },
    }
}

/// Asserts that row `row` of `batch` (natural schema) holds `msg`.
pub fn assert_row(msg: &DynamicMessage, batch: &RecordBatch, row: usize) {
    let columns: Vec<(String, &dyn Array)> = batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| (f.name().clone(), c.as_ref()))
        .collect();
    assert_fields(msg, &columns, row, "");
}

fn assert_fields(msg: &DynamicMessage, columns: &[(String, &dyn Array)], row: usize, prefix: &str) {
    for f in msg.descriptor().fields() {
        let path = format!("{prefix}.{}", f.name());
        let (_, array) = columns
            .iter()
            .find(|(n, _)| n == f.name())
            .unwrap_or_else(|| panic!("no column {path}"));
        assert_field(msg, &f, *array, row, &path);
    }
}

fn assert_field(
    msg: &DynamicMessage,
    f: &FieldDescriptor,
    array: &dyn Array,
    row: usize,
    path: &str,
) {
    if f.is_map() {
        let Kind::Message(entry) = f.kind() else {
            unreachable!()
        };
        let vf = entry.map_entry_value_field();
        let map = array.as_map();
        let entries = map.value(row);
        let Value::Map(expected) = msg.get_field(f).into_owned() else {
            panic!("{path}: not a map")
        };
        // The natural schema stores unsigned keys as Int64.
        let expected: std::collections::HashMap<MapKey, Value> = expected
            .into_iter()
            .map(|(k, v)| match k {
                MapKey::U32(u) => (MapKey::I64(i64::from(u)), v),
                MapKey::U64(u) => (MapKey::I64(u as i64), v),
                k => (k, v),
            })
            .collect();
        assert_eq!(
            entries.len(),
            expected.len(),
            "{path}: map length in row {row}"
        );
        let (keys, values) = (entries.column(0), entries.column(1));
        for i in 0..entries.len() {
            let key = arrow_key(keys.as_ref(), i);
            let value = expected
                .get(&key)
                .unwrap_or_else(|| panic!("{path}: unexpected key {key:?}"));
            assert_value(&vf.kind(), value, values.as_ref(), i, path);
        }
    } else if f.is_list() {
        let list = array.as_list::<i32>();
        let items = list.value(row);
        let Value::List(expected) = msg.get_field(f).into_owned() else {
            panic!("{path}: not a list")
        };
        assert_eq!(
            items.len(),
            expected.len(),
            "{path}: list length in row {row}"
        );
        for (i, v) in expected.iter().enumerate() {
            assert_value(&f.kind(), v, items.as_ref(), i, path);
        }
    } else if f.supports_presence() && !msg.has_field(f) {
        assert!(array.is_null(row), "{path}: expected null in row {row}");
    } else {
        assert!(array.is_valid(row), "{path}: unexpected null in row {row}");
        assert_value(&f.kind(), &msg.get_field(f), array, row, path);
    }
}

fn arrow_key(keys: &dyn Array, i: usize) -> MapKey {
    if let Some(a) = keys.as_any().downcast_ref::<Int32Array>() {
        MapKey::I32(a.value(i))
    } else if let Some(a) = keys.as_any().downcast_ref::<Int64Array>() {
        MapKey::I64(a.value(i))
    } else if let Some(a) = keys.as_any().downcast_ref::<BooleanArray>() {
        MapKey::Bool(a.value(i))
    } else {
        MapKey::String(keys.as_string::<i32>().value(i).to_owned())
    }
}

/// Compares one value against element `i` of `array`.
fn assert_value(kind: &Kind, value: &Value, array: &dyn Array, i: usize, path: &str) {
    let any = array.as_any();
    match (kind, value) {
        (_, Value::I32(v)) => assert_eq!(
            any.downcast_ref::<Int32Array>().unwrap().value(i),
            *v,
            "{path}"
        ),
        (_, Value::I64(v)) => assert_eq!(
            any.downcast_ref::<Int64Array>().unwrap().value(i),
            *v,
            "{path}"
        ),
        (_, Value::U32(v)) => assert_eq!(
            any.downcast_ref::<Int64Array>().unwrap().value(i),
            i64::from(*v),
            "{path}"
        ),
        (_, Value::U64(v)) => assert_eq!(
            any.downcast_ref::<Int64Array>().unwrap().value(i) as u64,
            *v,
            "{path}"
        ),
        (_, Value::F32(v)) => {
            assert_eq!(
                any.downcast_ref::<Float32Array>()
                    .unwrap()
                    .value(i)
                    .to_bits(),
                v.to_bits(),
                "{path}"
            )
        }
        (_, Value::F64(v)) => {
            assert_eq!(
                any.downcast_ref::<Float64Array>()
                    .unwrap()
                    .value(i)
                    .to_bits(),
                v.to_bits(),
                "{path}"
            )
        }
        (_, Value::Bool(v)) => assert_eq!(
            any.downcast_ref::<BooleanArray>().unwrap().value(i),
            *v,
            "{path}"
        ),
        (_, Value::String(v)) => assert_eq!(
            any.downcast_ref::<StringArray>().unwrap().value(i),
            v,
            "{path}"
        ),
        (_, Value::Bytes(v)) => assert_eq!(
            any.downcast_ref::<BinaryArray>().unwrap().value(i),
            v.as_ref(),
            "{path}"
        ),
        (Kind::Enum(e), Value::EnumNumber(n)) => {
            let name = e
                .get_value(*n)
                .map(|v| v.name().to_owned())
                .unwrap_or_default();
            assert_eq!(
                any.downcast_ref::<StringArray>().unwrap().value(i),
                name,
                "{path}"
            );
        }
        (Kind::Message(m), Value::Message(inner)) => match well_known(m) {
            Some(WellKnown::Timestamp) => {
                let secs = inner
                    .get_field_by_number(1)
                    .and_then(|v| v.as_i64())
                    .unwrap_or(0);
                let nanos = inner
                    .get_field_by_number(2)
                    .and_then(|v| v.as_i32())
                    .unwrap_or(0);
                let ts = any.downcast_ref::<TimestampMicrosecondArray>().unwrap();
                assert_eq!(
                    ts.value(i),
                    secs * 1_000_000 + i64::from(nanos) / 1000,
                    "{path}"
                );
            }
            Some(WellKnown::Wrapper(inner_field)) => {
                let v = inner.get_field(&inner_field);
                assert_value(&inner_field.kind(), &v, array, i, path);
            }
            None => {
                let s = any.downcast_ref::<StructArray>().unwrap();
                let columns: Vec<(String, &dyn Array)> = s
                    .fields()
                    .iter()
                    .zip(s.columns())
                    .map(|(f, c)| (f.name().clone(), c.as_ref()))
                    .collect();
                assert_fields(inner, &columns, i, path);
            }
        },
        (kind, value) => panic!("{path}: unexpected {value:?} for {kind:?}"),
    }
}

/// Re-encodes each set field of `msg` on its own and concatenates them in
/// a shuffled order: the same message, fields out of order.
pub fn encode_shuffled(msg: &DynamicMessage, rng: &mut Rng) -> Vec<u8> {
    let mut parts: Vec<Vec<u8>> = msg
        .fields()
        .map(|(f, v)| {
            let mut one = DynamicMessage::new(msg.descriptor());
            one.set_field(&f, v.clone());
            one.encode_to_vec()
        })
        .collect();
    for i in (1..parts.len()).rev() {
        parts.swap(i, rng.below(i as u64 + 1) as usize);
    }
    parts.concat()
}

/// Decodes `bytes` with prost-reflect.
pub fn reference_decode(desc: &MessageDescriptor, bytes: &[u8]) -> Option<DynamicMessage> {
    DynamicMessage::decode(desc.clone(), bytes).ok()
}

/// Decodes one record with `decoder` and checks it against the reference.
pub fn check_one(decoder: &ProtoDecoder, bytes: &[u8]) {
    let expected = reference_decode(decoder.message(), bytes).expect("reference decodes");
    let batch = decoder.decode([bytes]).expect("weir decodes");
    assert_row(&expected, &batch, 0);
}

/// Builds records by hand, field by field, for wire-level tests.
#[derive(Debug, Default, Clone)]
pub struct Rec(pub Vec<u8>);

impl Rec {
    pub fn new() -> Self {
        Rec(Vec::new())
    }
    fn tag(mut self, number: u32, wire: u8) -> Self {
        prost::encoding::encode_varint(u64::from(number) << 3 | u64::from(wire), &mut self.0);
        self
    }
    pub fn varint(self, number: u32, v: u64) -> Self {
        let mut r = self.tag(number, 0);
        prost::encoding::encode_varint(v, &mut r.0);
        r
    }
    pub fn fixed64(self, number: u32, v: u64) -> Self {
        let mut r = self.tag(number, 1);
        r.0.extend_from_slice(&v.to_le_bytes());
        r
    }
    pub fn fixed32(self, number: u32, v: u32) -> Self {
        let mut r = self.tag(number, 5);
        r.0.extend_from_slice(&v.to_le_bytes());
        r
    }
    pub fn bytes(self, number: u32, v: &[u8]) -> Self {
        let mut r = self.tag(number, 2);
        prost::encoding::encode_varint(v.len() as u64, &mut r.0);
        r.0.extend_from_slice(v);
        r
    }
    pub fn raw(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
    pub fn build(&self) -> &[u8] {
        &self.0
    }
}

/// Fuzz inputs (see `fuzz::split_input`) made of valid records of the fuzz
/// schemas with a few bytes flipped and some cut short.
pub fn mutated_inputs(n: u64) -> Vec<Vec<u8>> {
    let descriptors: Vec<MessageDescriptor> = SCHEMAS
        .iter()
        .map(|(src, name)| descriptor_from_proto_source(src, name).unwrap())
        .collect();
    (0..n)
        .map(|i| {
            let choice = (i % SCHEMAS.len() as u64) as u8;
            let mut rng = Rng(i);
            let desc = &descriptors[usize::from(choice)];
            let mut first = random_message(desc, &mut rng, 60, 3, 0).encode_to_vec();
            let mut second = random_message(desc, &mut rng, 60, 3, 0).encode_to_vec();
            for bytes in [&mut first, &mut second] {
                for _ in 0..rng.below(3) {
                    if !bytes.is_empty() {
                        let at = rng.below(bytes.len() as u64) as usize;
                        bytes[at] ^= rng.next() as u8;
                    }
                }
                if rng.chance(30) {
                    bytes.truncate(rng.below(bytes.len() as u64 + 1) as usize);
                }
            }
            first.truncate(255);
            let mut input = vec![choice, 1, first.len() as u8];
            input.extend(first);
            input.extend(second);
            input
        })
        .collect()
}
