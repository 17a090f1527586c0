//! NEOWISE rows for the benchmark: the 144 columns of
//! `bench/neowise.proto` with values shaped like the catalogue's (sky
//! coordinates, magnitudes and their errors, flags, identifiers),
//! deterministic from a seed, encoded as protobuf records.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use bytes::Bytes;
use weir_codec::protobuf::{ProtoDecoder, arrow_schema_for, descriptor_from_proto_source};

/// The schema, as a producer sends it in the records header.
pub const PROTO: &str = include_str!("../../../codec/benches/data/neowise.proto");
/// The message of [`PROTO`] a row is.
pub const MESSAGE: &str = "weir.bench.NeowiseRow";

/// SplitMix64: fast, and the same rows for the same seed everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high)`.
    fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The kind of value a column holds, from its name.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// Right ascension or a longitude, degrees.
    Longitude,
    /// Declination or a latitude, degrees.
    Latitude,
    /// A magnitude (mpro, mag, 2MASS J/H/K).
    Magnitude,
    /// An uncertainty: small and positive.
    Sigma,
    /// A pixel position on the detector.
    Pixel,
    /// A flux, signal to noise or sky level.
    Flux,
    /// A position angle, degrees.
    Angle,
    /// Modified Julian date of the exposure.
    Mjd,
    /// A unit-sphere coordinate.
    Unit,
    /// Any other real number.
    Real,
    /// A bit or small flag field.
    Flag,
    /// A catalogue key or counter: large.
    Key,
    /// The producer's clock.
    ClientTs,
    /// Other integers.
    Count,
    /// The source identifier, like `1234m567_ab12-012345`.
    SourceId,
    /// A scan identifier, like `01234a`.
    ScanId,
    /// A short code string (quality, flags).
    Code,
}

fn shape(name: &str, data_type: &DataType) -> Shape {
    let has = |part: &str| name.contains(part);
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 => match name {
            "source_id" => Shape::SourceId,
            "scan_id" => Shape::ScanId,
            _ => Shape::Code,
        },
        DataType::Int64 | DataType::Int32 => match name {
            "client_ts_ms" => Shape::ClientTs,
            "cntr" | "tmass_key" | "allwise_cntr" | "htm20" | "spt_ind" | "frame_num" => Shape::Key,
            _ if has("flg") || has("bit") || has("map") || has("qual") => Shape::Flag,
            _ => Shape::Count,
        },
        _ if name == "mjd" => Shape::Mjd,
        _ if matches!(name, "x" | "y" | "z") => Shape::Unit,
        _ if matches!(name, "ra" | "glon" | "elon") => Shape::Longitude,
        _ if matches!(name, "dec" | "glat" | "elat") => Shape::Latitude,
        _ if has("sig") => Shape::Sigma,
        _ if has("mpro") || has("mag") || name.ends_with("_m_2mass") => Shape::Magnitude,
        _ if name.starts_with("pa_") => Shape::Angle,
        _ if name.ends_with('x') || name.ends_with('y') => Shape::Pixel,
        _ if has("flux") || has("snr") || has("sky") => Shape::Flux,
        _ => Shape::Real,
    }
}

enum Value {
    Int(i64),
    Real(f64),
    Text(String),
}

fn value(shape: Shape, rng: &mut Rng, row: u64) -> Value {
    match shape {
        Shape::Longitude => Value::Real(rng.uniform(0.0, 360.0)),
        Shape::Latitude => Value::Real(rng.uniform(-90.0, 90.0)),
        Shape::Magnitude => Value::Real(rng.uniform(6.0, 17.5)),
        Shape::Sigma => Value::Real(rng.uniform(0.005, 0.35)),
        Shape::Pixel => Value::Real(rng.uniform(0.0, 1016.0)),
        Shape::Flux => Value::Real(rng.uniform(1.0, 25_000.0)),
        Shape::Angle => Value::Real(rng.uniform(0.0, 360.0)),
        Shape::Mjd => Value::Real(rng.uniform(56_639.0, 60_300.0)),
        Shape::Unit => Value::Real(rng.uniform(-1.0, 1.0)),
        Shape::Real => Value::Real(rng.uniform(0.0, 100.0)),
        Shape::Flag => Value::Int(rng.below(64) as i64),
        Shape::Key => Value::Int(1_000_000_000 + (row * 7_919 + rng.below(7_919)) as i64),
        Shape::ClientTs => Value::Int(1_767_225_600_000 + row as i64),
        Shape::Count => Value::Int(rng.below(1_000) as i64),
        Shape::SourceId => Value::Text(format!(
            "{:04}{}{:03}_ab{:02}-{:06}",
            rng.below(3_600),
            if rng.below(2) == 0 { 'p' } else { 'm' },
            rng.below(900),
            rng.below(100),
            rng.below(1_000_000)
        )),
        Shape::ScanId => Value::Text(format!(
            "{:05}{}",
            rng.below(100_000),
            (b'a' + rng.below(26) as u8) as char
        )),
        Shape::Code => {
            let len = 2 + rng.below(6) as usize;
            Value::Text(
                (0..len)
                    .map(|_| b"0ABCDHSUX"[rng.below(9) as usize] as char)
                    .collect(),
            )
        }
    }
}

/// Makes NEOWISE rows.
pub struct Rows {
    /// The same rows as Arrow, for the Arrow streams and the baselines.
    decoder: ProtoDecoder,
    schema: SchemaRef,
    /// Each field's number, wire form and shape, in field order.
    fields: Vec<(u32, Shape)>,
}

impl Rows {
    pub fn new() -> Result<Self, String> {
        let descriptor = descriptor_from_proto_source(PROTO, MESSAGE).map_err(|e| e.to_string())?;
        let schema = Arc::new(arrow_schema_for(&descriptor).map_err(|e| e.to_string())?);
        let fields = descriptor
            .fields()
            .map(|f| {
                let data_type = schema
                    .field_with_name(f.name())
                    .map(|c| c.data_type().clone())
                    .unwrap_or(DataType::Float64);
                (f.number(), shape(f.name(), &data_type))
            })
            .collect();
        let decoder =
            ProtoDecoder::new(descriptor, Arc::clone(&schema)).map_err(|e| e.to_string())?;
        Ok(Self {
            decoder,
            schema,
            fields,
        })
    }

    /// The table's columns.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The rows of a request body (see [`Rows::request`]) as one batch.
    pub fn batch(&self, body: &[u8]) -> Result<RecordBatch, String> {
        self.decoder
            .decode(records(body))
            .map_err(|e| e.to_string())
    }

    /// `count` rows numbered from `first`, length-delimited, as one
    /// request body.
    pub fn request(&self, rng: &mut Rng, first: u64, count: usize) -> Bytes {
        let mut body = Vec::with_capacity(count * 1_300);
        let mut record = Vec::with_capacity(1_400);
        for row in first..first + count as u64 {
            record.clear();
            for &(number, shape) in &self.fields {
                match value(shape, rng, row) {
                    Value::Int(v) => {
                        varint(&mut record, u64::from(number) << 3);
                        varint(&mut record, v as u64);
                    }
                    Value::Real(v) => {
                        varint(&mut record, (u64::from(number) << 3) | 1);
                        record.extend_from_slice(&v.to_le_bytes());
                    }
                    Value::Text(v) => {
                        varint(&mut record, (u64::from(number) << 3) | 2);
                        varint(&mut record, v.len() as u64);
                        record.extend_from_slice(v.as_bytes());
                    }
                }
            }
            varint(&mut body, record.len() as u64);
            body.extend_from_slice(&record);
        }
        body.into()
    }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The records of a length-delimited body.
fn records(body: &[u8]) -> Vec<&[u8]> {
    let mut records = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let mut len = 0u64;
        let mut shift = 0;
        let mut used = 0;
        for &b in rest {
            used += 1;
            len |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b < 0x80 {
                break;
            }
        }
        let end = used + len as usize;
        records.push(&rest[used..end]);
        rest = &rest[end..];
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_decode_with_the_schema_and_look_like_the_catalogue() {
        let rows = Rows::new().unwrap();
        let body = rows.request(&mut Rng::new(7), 0, 100);
        let per_row = body.len() / 100;
        assert!((1_000..1_400).contains(&per_row), "{per_row} bytes a row");
        let batch = rows.batch(&body).unwrap();
        assert_eq!(batch.num_rows(), 100);
        assert_eq!(batch.num_columns(), 144);
        let nulls: usize = batch.columns().iter().map(|c| c.null_count()).sum();
        assert_eq!(nulls, 0, "every field is set");
        let range = |name: &str| {
            let values = batch.column_by_name(name).unwrap();
            let values =
                arrow::array::AsArray::as_primitive::<arrow::datatypes::Float64Type>(values);
            (
                arrow::compute::min(values).unwrap(),
                arrow::compute::max(values).unwrap(),
            )
        };
        let ra = range("ra");
        assert!(ra.0 >= 0.0 && ra.1 < 360.0, "{ra:?}");
        let dec = range("dec");
        assert!(dec.0 >= -90.0 && dec.1 <= 90.0, "{dec:?}");
        let w1 = range("w1mpro");
        assert!(w1.0 >= 6.0 && w1.1 < 17.5, "{w1:?}");
        // The same seed, the same bytes.
        assert_eq!(body, rows.request(&mut Rng::new(7), 0, 100));
    }
}
