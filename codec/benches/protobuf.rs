//! Protobuf decode throughput (bytes of serialized records per second), on
//! the same bytes, side by side:
//!
//! * `weir`: [`ProtoDecoder::decode`], records into one Arrow `RecordBatch`;
//! * `prost`: compile-time-generated prost structs (`data/generated.rs` and
//!   the structs below), one `decode` per record;
//! * `prost_reflect`: `DynamicMessage::decode` per record;
//! * `zeroparser`: the Zerobus SDK's dynamic zero-copy parser,
//!   `ParsedMessage::parse` per record (only with `--features zeroparser`,
//!   which builds the SDK). It parses into its field table and stops;
//!   values are not copied anywhere, so it does less work than the others.
//!
//! Data sets, 10,000 records a batch: (a) NEOWISE rows (144 optional
//! fields, ~1.2 KB), (b) a small sensor reading (~35 B), (c) a 100-field
//! wide row, (d) nested telemetry with repeated messages, a map and packed
//! lists.
//!
//! Two groups: `protobuf_decode` measures wall-clock time; `protobuf_decode_cpu`
//! measures the benchmark thread's CPU time, which gives the per-core rate
//! even while other processes share the machine. Run with
//! `cargo bench -p weir-codec --bench protobuf --features zeroparser`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message as _;
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, Value};
use weir_codec::protobuf::{ProtoDecoder, arrow_schema_for, descriptor_from_proto_source};

#[allow(clippy::all, missing_docs)]
mod generated {
    include!("data/generated.rs");
}

const RECORDS: usize = 10_000;

/// Decodes every record with a prost-generated struct; returns the count.
type TypedDecode = fn(&[Vec<u8>]) -> usize;

const SENSOR: &str = r#"
syntax = "proto3";
message Sensor { string device_id = 1; int64 ts = 2; double temperature = 3; float humidity = 4; int32 status = 5; }
"#;

// Nested types inside the root, as the Zerobus SDKs send a descriptor.
const TELEMETRY: &str = r#"
syntax = "proto3";
message Telemetry {
  message Point { double x = 1; double y = 2; int64 t = 3; }
  message Device { string id = 1; string model = 2; map<string, string> labels = 3; }
  Device device = 1; repeated Point points = 2; map<string, double> metrics = 3;
  repeated int64 counters = 4; repeated string tags = 5; int64 ts = 6;
}
"#;

/// prost structs for the sensor and telemetry messages.
mod typed {
    use std::collections::HashMap;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sensor {
        #[prost(string, tag = "1")]
        pub device_id: String,
        #[prost(int64, tag = "2")]
        pub ts: i64,
        #[prost(double, tag = "3")]
        pub temperature: f64,
        #[prost(float, tag = "4")]
        pub humidity: f32,
        #[prost(int32, tag = "5")]
        pub status: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Point {
        #[prost(double, tag = "1")]
        pub x: f64,
        #[prost(double, tag = "2")]
        pub y: f64,
        #[prost(int64, tag = "3")]
        pub t: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Device {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(string, tag = "2")]
        pub model: String,
        #[prost(map = "string, string", tag = "3")]
        pub labels: HashMap<String, String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Telemetry {
        #[prost(message, optional, tag = "1")]
        pub device: Option<Device>,
        #[prost(message, repeated, tag = "2")]
        pub points: Vec<Point>,
        #[prost(map = "string, double", tag = "3")]
        pub metrics: HashMap<String, f64>,
        #[prost(int64, repeated, tag = "4")]
        pub counters: Vec<i64>,
        #[prost(string, repeated, tag = "5")]
        pub tags: Vec<String>,
        #[prost(int64, tag = "6")]
        pub ts: i64,
    }
}

/// SplitMix64, for reproducible data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn word(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| (b'a' + self.below(26) as u8) as char)
            .collect()
    }
}

/// A value for every field of `desc`, with plausible magnitudes: doubles
/// with full mantissas, integers of a few bytes, short ASCII strings.
fn fill(desc: &MessageDescriptor, rng: &mut Rng) -> DynamicMessage {
    let mut m = DynamicMessage::new(desc.clone());
    for f in desc.fields() {
        let one = |rng: &mut Rng, kind: &Kind| -> Value {
            match kind {
                Kind::Double => Value::F64(rng.below(36_000_000) as f64 / 99_991.0),
                Kind::Float => Value::F32(rng.below(10_000) as f32 / 97.0),
                Kind::Int64 => {
                    let bits = 8 + rng.below(32);
                    Value::I64(rng.below(1 << bits) as i64)
                }
                Kind::Int32 => Value::I32(rng.below(1000) as i32),
                Kind::Bool => Value::Bool(rng.below(2) == 1),
                Kind::String => {
                    let len = 2 + rng.below(12) as usize;
                    Value::String(rng.word(len))
                }
                Kind::Message(inner) => Value::Message(fill(inner, rng)),
                other => panic!("no generator for {other:?}"),
            }
        };
        let value = if f.is_map() {
            let Kind::Message(entry) = f.kind() else {
                unreachable!()
            };
            let value_kind = entry.map_entry_value_field().kind();
            let map = (0..3 + rng.below(4))
                .map(|i| {
                    (
                        prost_reflect::MapKey::String(format!("k{i}")),
                        one(rng, &value_kind),
                    )
                })
                .collect();
            Value::Map(map)
        } else if f.is_list() {
            Value::List((0..2 + rng.below(8)).map(|_| one(rng, &f.kind())).collect())
        } else {
            one(rng, &f.kind())
        };
        m.set_field(&f, value);
    }
    m
}

struct DataSet {
    name: &'static str,
    message: MessageDescriptor,
    records: Vec<Vec<u8>>,
}

impl DataSet {
    fn new(name: &'static str, source: &str, message: &str) -> Self {
        let message = descriptor_from_proto_source(source, message).expect("bench schema compiles");
        let mut rng = Rng(42);
        let records = (0..RECORDS)
            .map(|_| fill(&message, &mut rng).encode_to_vec())
            .collect();
        DataSet {
            name,
            message,
            records,
        }
    }

    fn bytes(&self) -> u64 {
        self.records.iter().map(|r| r.len() as u64).sum()
    }

    fn slices(&self) -> impl ExactSizeIterator<Item = &[u8]> {
        self.records.iter().map(Vec::as_slice)
    }
}

fn decode_all<M: prost::Message + Default>(records: &[Vec<u8>]) -> usize {
    let mut n = 0;
    for r in records {
        black_box(M::decode(r.as_slice()).expect("decodes"));
        n += 1;
    }
    n
}

/// CPU time of the benchmarking thread.
struct ThreadCpu;

impl Measurement for ThreadCpu {
    type Intermediate = cpu_time::ThreadTime;
    type Value = Duration;

    fn start(&self) -> Self::Intermediate {
        cpu_time::ThreadTime::now()
    }
    fn end(&self, start: Self::Intermediate) -> Self::Value {
        start.elapsed()
    }
    fn add(&self, a: &Self::Value, b: &Self::Value) -> Self::Value {
        *a + *b
    }
    fn zero(&self) -> Self::Value {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Self::Value) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &Nanos
    }
}

/// Formats nanoseconds of CPU time, and bytes per CPU-second.
struct Nanos;

impl ValueFormatter for Nanos {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (div, unit) = if typical < 1e3 {
            (1.0, "ns")
        } else if typical < 1e6 {
            (1e3, "µs")
        } else if typical < 1e9 {
            (1e6, "ms")
        } else {
            (1e9, "s")
        };
        values.iter_mut().for_each(|v| *v /= div);
        unit
    }
    fn scale_throughputs(
        &self,
        _typical: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let (per_iter, unit) = match *throughput {
            Throughput::Bytes(b)
            | Throughput::BytesDecimal(b)
            | Throughput::ElementsAndBytes { bytes: b, .. } => {
                (b as f64 / (1024.0 * 1024.0), "MiB/s (CPU)")
            }
            Throughput::Elements(e) => (e as f64, "elem/s (CPU)"),
            Throughput::Bits(b) => (b as f64, "bit/s (CPU)"),
        };
        values.iter_mut().for_each(|v| *v = per_iter * 1e9 / *v);
        unit
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn data_sets() -> Vec<DataSet> {
    vec![
        DataSet::new("neowise", include_str!("data/neowise.proto"), "NeowiseRow"),
        DataSet::new("sensor", SENSOR, "Sensor"),
        DataSet::new("wide100", include_str!("data/wide.proto"), "WideRow"),
        DataSet::new("nested", TELEMETRY, "Telemetry"),
    ]
}

fn bench_wall(c: &mut Criterion<WallTime>) {
    run(c, "protobuf_decode");
}

fn bench_cpu(c: &mut Criterion<ThreadCpu>) {
    run(c, "protobuf_decode_cpu");
}

fn run<M: Measurement>(c: &mut Criterion<M>, group_name: &str) {
    let sets = data_sets();
    let mut group = c.benchmark_group(group_name);
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for set in &sets {
        eprintln!(
            "{}: {} records, {} bytes per record",
            set.name,
            RECORDS,
            set.bytes() / RECORDS as u64
        );
        group.throughput(Throughput::Bytes(set.bytes()));
        let table = Arc::new(arrow_schema_for(&set.message).expect("natural schema"));
        let decoder = ProtoDecoder::new(set.message.clone(), table).expect("decoder");
        group.bench_function(BenchmarkId::new("weir_arrow", set.name), |b| {
            b.iter(|| decoder.decode(set.slices()).expect("decodes"))
        });
        group.bench_function(BenchmarkId::new("prost_reflect", set.name), |b| {
            b.iter(|| {
                set.slices()
                    .map(|r| DynamicMessage::decode(set.message.clone(), r).expect("decodes"))
                    .map(black_box)
                    .count()
            })
        });
        let typed: Option<TypedDecode> = match set.name {
            "neowise" => Some(decode_all::<generated::NeowiseRow>),
            "wide100" => Some(decode_all::<generated::WideRow>),
            "sensor" => Some(decode_all::<typed::Sensor>),
            "nested" => Some(decode_all::<typed::Telemetry>),
            _ => None,
        };
        if let Some(decode) = typed {
            group.bench_function(BenchmarkId::new("prost_typed", set.name), |b| {
                b.iter(|| decode(&set.records))
            });
        }
        #[cfg(feature = "zeroparser")]
        {
            use databricks_zerobus_ingest_sdk::zeroparser::MessageRegistry;
            use databricks_zerobus_ingest_sdk::zeroparser::parser::ParsedMessage;
            let registry = MessageRegistry::from_descriptor(set.message.descriptor_proto());
            group.bench_function(BenchmarkId::new("zeroparser", set.name), |b| {
                b.iter(|| {
                    set.slices()
                        .map(|r| ParsedMessage::parse(r, &registry).expect("parses"))
                        .map(black_box)
                        .count()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(wall, bench_wall);
criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = bench_cpu
}
criterion_main!(wall, cpu);
