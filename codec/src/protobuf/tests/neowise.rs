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

/// The root's doubles and int64s are slices of one shared buffer (see
/// `columns::Wide`): sparse rows get their nulls in the right places, and
/// the batch encodes to, and decodes from, Arrow IPC like any other, with a
/// size hint that covers the encoding without counting the shared buffer
/// once per column.
#[test]
fn shared_buffer_columns_hold_nulls_and_round_trip_through_ipc() {
    let d = decoder(NEOWISE, "NeowiseRow");
    let mut rng = Rng(11);
    let mut rows: Vec<DynamicMessage> = (0..40).map(|_| row(&mut rng, &d)).collect();
    // Every third row loses a field, a different one each time.
    let fields: Vec<_> = d.message().fields().collect();
    for (i, m) in rows.iter_mut().enumerate().step_by(3) {
        m.clear_field(&fields[(i * 7) % fields.len()]);
    }
    let bytes: Vec<Vec<u8>> = rows.iter().map(|m| m.encode_to_vec()).collect();
    let batch = d.decode(bytes.iter().map(Vec::as_slice)).unwrap();
    for (i, m) in rows.iter().enumerate() {
        assert_row(m, &batch, i);
    }
    let nulls: usize = batch.columns().iter().map(|c| c.null_count()).sum();
    assert_eq!(nulls, rows.len().div_ceil(3));

    let encoded = crate::ipc::encode(&batch).unwrap();
    assert_eq!(crate::ipc::decode(&encoded).unwrap(), batch);
    let hint = crate::ipc::encoded_size_hint(&batch);
    assert!(
        encoded.len() <= hint && hint < 2 * encoded.len(),
        "size hint {hint} for {} encoded bytes",
        encoded.len()
    );
}

/// An iterator that yields more records than its length said is refused,
/// not decoded past the end of the shared buffer.
#[test]
fn more_records_than_announced_are_refused() {
    struct Lying<'a>(std::vec::IntoIter<&'a [u8]>);
    impl<'a> Iterator for Lying<'a> {
        type Item = &'a [u8];
        fn next(&mut self) -> Option<&'a [u8]> {
            self.0.next()
        }
    }
    impl ExactSizeIterator for Lying<'_> {
        fn len(&self) -> usize {
            0
        }
    }
    let d = decoder(NEOWISE, "NeowiseRow");
    // Empty records: every field absent, so nothing is written by index.
    let records: Vec<&[u8]> = vec![&[], &[]];
    assert!(d.decode(Lying(records.into_iter())).is_err());
}
