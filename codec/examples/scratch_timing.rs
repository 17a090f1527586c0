use prost::Message as _;
use prost_reflect::{DynamicMessage, Kind, Value};
use std::sync::Arc;
use std::time::Instant;
use weir_codec::protobuf::*;

fn main() {
    let desc =
        descriptor_from_proto_source(include_str!("../benches/data/neowise.proto"), "NeowiseRow")
            .unwrap();
    let mut x = 42u64;
    let mut next = || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        x >> 11
    };
    let records: Vec<Vec<u8>> = (0..10_000)
        .map(|_| {
            let mut m = DynamicMessage::new(desc.clone());
            for f in desc.fields() {
                let v = match f.kind() {
                    Kind::Double => Value::F64((next() % 36_000_000) as f64 / 99_991.0),
                    Kind::Int64 => Value::I64((next() % (1 << 30)) as i64),
                    _ => Value::String("abcdefgh".into()),
                };
                m.set_field(&f, v);
            }
            m.encode_to_vec()
        })
        .collect();
    let bytes: usize = records.iter().map(Vec::len).sum();
    let d = ProtoDecoder::new(desc.clone(), Arc::new(arrow_schema_for(&desc).unwrap())).unwrap();
    for _ in 0..3 {
        let t = Instant::now();
        let mut n = 0;
        for _ in 0..10 {
            n += d
                .decode(records.iter().map(Vec::as_slice))
                .unwrap()
                .num_rows();
        }
        let e = t.elapsed();
        println!(
            "weir: {n} rows {:.1} MB/s",
            (bytes * 10) as f64 / e.as_secs_f64() / 1e6
        );
    }
    // machine speed: sum of bytes
    let t = Instant::now();
    let mut s = 0u64;
    for _ in 0..10 {
        for r in &records {
            for &b in r {
                s = s.wrapping_add(b as u64);
            }
        }
    }
    println!(
        "byte-sum {s}: {:.1} MB/s",
        (bytes * 10) as f64 / t.elapsed().as_secs_f64() / 1e6
    );
}
