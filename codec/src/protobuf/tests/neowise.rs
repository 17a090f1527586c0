//! The NEOWISE benchmark schema: 144 optional fields, about 1.2 KB a row.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use prost::Message as _;
use prost_reflect::{DynamicMessage, Value};

use super::support::{NEOWISE, Rng, assert_row, decoder};

/// A NEOWISE-like row: every field set, realistic magnitudes.
fn row(rng: &mut Rng, d: &crate::protobuf::ProtoDecoder) -> DynamicMessage {
    let desc = d.message();
    let mut m = DynamicMessage::new(desc.clone());
    for f in desc.fields() {
        let v = match f.kind() {
            prost_reflect::Kind::Double => {
                Value::F64((rng.next() % 1_000_000) as f64 / 997.0 - 300.0)
            }
            prost_reflect::Kind::Int64 => Value::I64((rng.next() % 10_000_000_000) as i64),
            _ => Value::String(format!(
                "{:08x}p{:03}_ab{}",
                rng.next() as u32,
                rng.below(1000),
                rng.below(99)
            )),
        };
        m.set_field(&f, v);
    }
    m
}

#[test]
fn neowise_rows_decode() {
    let d = decoder(NEOWISE, "NeowiseRow");
    assert_eq!(d.schema().fields().len(), 144);
    assert!(d.schema().fields().iter().all(|f| f.is_nullable()));
    let mut rng = Rng(7);
    let rows: Vec<DynamicMessage> = (0..50).map(|_| row(&mut rng, &d)).collect();
    let bytes: Vec<Vec<u8>> = rows.iter().map(|m| m.encode_to_vec()).collect();
    let avg = bytes.iter().map(Vec::len).sum::<usize>() / bytes.len();
    assert!((1000..1600).contains(&avg), "row size {avg}");
    let batch = d.decode(bytes.iter().map(Vec::as_slice)).unwrap();
    for (i, m) in rows.iter().enumerate() {
        assert_row(m, &batch, i);
    }
    let ra = batch.column_by_name("ra").unwrap();
    assert_eq!(ra.data_type(), &DataType::Float64);
    assert_eq!(ra.as_primitive::<Float64Type>().null_count(), 0);
    assert_eq!(
        batch
            .column_by_name("client_ts_ms")
            .unwrap()
            .as_primitive::<Int64Type>()
            .len(),
        50
    );
}

#[test]
fn neowise_sparse_rows_have_nulls() {
    let d = decoder(NEOWISE, "NeowiseRow");
    let desc = d.message().clone();
    let mut m = DynamicMessage::new(desc);
    m.set_field_by_name("source_id", Value::String("x".into()));
    m.set_field_by_name("client_ts_ms", Value::I64(1));
    let bytes = m.encode_to_vec();
    let batch = d.decode([bytes.as_slice()]).unwrap();
    assert_row(&m, &batch, 0);
    assert!(batch.column_by_name("ra").unwrap().is_null(0));
}
