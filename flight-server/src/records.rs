//! Protobuf and JSON records over `DoPut`.
//!
//! A producer that has records rather than Arrow batches opens a `DoPut`
//! whose first message carries the descriptor path (`["sensors"]`, or the
//! table header) and, in its `app_metadata`, a JSON *records header*:
//!
//! ```json
//! {"format": "protobuf", "descriptor_proto": "<base64 DescriptorProto>"}
//! {"format": "protobuf", "file_descriptor_set": "<base64>", "message": "pkg.Reading"}
//! {"format": "protobuf", "proto": "syntax = \"proto3\"; message Reading { ... }", "message": "Reading"}
//! {"format": "json"}
//! ```
//!
//! That first message has no body. Every later message is one request: its
//! `app_metadata` is `{"offset_id": n}` as for Arrow batches, and its
//! `data_body` holds the records:
//!
//! - protobuf: records back to back, each preceded by its length as a
//!   varint (protobuf's standard *delimited* framing);
//! - JSON: newline-delimited objects, or one array of objects.
//!
//! Records are decoded and checked against the table before anything is
//! written: a bad record rejects its whole request with an error naming
//! the record index and the field, and nothing of it lands. The WAL stores
//! the decoded Arrow batch. Acks are the same as for Arrow batches.

use std::sync::Arc;

use arrow::array::RecordBatch;
use base64::Engine as _;
use serde::Deserialize;
use weir_codec::json::{decode_json, decode_json_records};
use weir_codec::protobuf::{
    MessageDescriptor, ProtoDecoder, descriptor_from_descriptor_proto,
    descriptor_from_file_descriptor_set, descriptor_from_proto_source,
};
use weir_codec::{Limits, RowWidths};
use weir_provider::Table;

use crate::{Error, Result};

/// The JSON header of a records stream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsHeader {
    /// `protobuf` or `json`.
    pub format: Format,
    /// Base64 of a serialized, self-contained `DescriptorProto`.
    pub descriptor_proto: Option<String>,
    /// Base64 of a serialized `FileDescriptorSet`; needs `message`.
    pub file_descriptor_set: Option<String>,
    /// `.proto` source text; needs `message`.
    pub proto: Option<String>,
    /// The full name of the record's message type.
    pub message: Option<String>,
}

/// Record encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Protobuf,
    Json,
}

/// Turns request bodies into batches of the table's schema, within the
/// request limits.
#[derive(Debug)]
pub struct RecordDecoder {
    format: Decoder,
    limits: Limits,
    widths: RowWidths,
}

#[derive(Debug)]
enum Decoder {
    Protobuf(Box<ProtoDecoder>),
    Json(arrow::datatypes::SchemaRef),
}

impl RecordsHeader {
    /// Parses a first message's `app_metadata`; `None` if it is not a
    /// records header (an Arrow stream's schema message has none).
    pub fn parse(app_metadata: &[u8]) -> Result<Option<Self>> {
        if app_metadata.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(app_metadata)
            .map(Some)
            .map_err(|e| Error::BadRequest(format!("invalid records header: {e}")))
    }

    /// Builds the decoder for `table`, checking the descriptor against it.
    pub fn decoder(&self, table: &Table, limits: Limits) -> Result<RecordDecoder> {
        match self.format {
            Format::Json => Ok(RecordDecoder::json(table, limits)),
            Format::Protobuf => RecordDecoder::protobuf(table, self.descriptor(table)?, limits),
        }
    }

    fn descriptor(&self, table: &Table) -> Result<MessageDescriptor> {
        match (
            &self.descriptor_proto,
            &self.file_descriptor_set,
            &self.proto,
            &self.message,
        ) {
            (Some(bytes), None, None, _) => {
                descriptor_from_descriptor_proto(&base64_field("descriptor_proto", bytes)?)
            }
            (None, Some(bytes), None, Some(message)) => descriptor_from_file_descriptor_set(
                &base64_field("file_descriptor_set", bytes)?,
                message,
            ),
            (None, None, Some(source), Some(message)) => {
                descriptor_from_proto_source(source, message)
            }
            _ => {
                return Err(Error::BadRequest(
                    "a protobuf records header needs exactly one of descriptor_proto, \
                     file_descriptor_set + message, or proto + message"
                        .into(),
                ));
            }
        }
        .map_err(|e| decode_error(table, e))
    }
}

impl RecordDecoder {
    /// A decoder of JSON objects into `table`'s rows.
    pub fn json(table: &Table, limits: Limits) -> Self {
        let schema = Arc::clone(table.schema());
        Self {
            widths: RowWidths::of(&schema),
            format: Decoder::Json(schema),
            limits,
        }
    }

    /// A decoder of protobuf records of type `descriptor` into `table`'s
    /// rows; fails if the message does not fit the table.
    pub fn protobuf(table: &Table, descriptor: MessageDescriptor, limits: Limits) -> Result<Self> {
        let schema = Arc::clone(table.schema());
        let mut widths = RowWidths::of(&schema);
        let decoder = ProtoDecoder::new(descriptor, Arc::clone(&schema))
            .map_err(|e| decode_error(table, e))?;
        // An enum value becomes its name, which the descriptor (the
        // producer's) sets: a short value, or an absent field's default,
        // can stand for a long string.
        let longest = decoder
            .message()
            .parent_pool()
            .all_enums()
            .flat_map(|e| {
                e.values()
                    .map(|v| v.name().len() as u64)
                    .collect::<Vec<_>>()
            })
            .max()
            .unwrap_or(0);
        let strings = schema
            .fields()
            .iter()
            .filter(|f| matches!(f.data_type(), arrow::datatypes::DataType::Utf8))
            .count() as u64;
        widths.row_bytes += longest * strings;
        widths.element_bytes += longest;
        Ok(Self {
            format: Decoder::Protobuf(Box::new(decoder)),
            limits,
            widths,
        })
    }

    /// Whether this decoder takes protobuf records (else JSON).
    pub fn is_protobuf(&self) -> bool {
        matches!(self.format, Decoder::Protobuf(_))
    }

    /// Decodes records given one by one (each a protobuf message or one
    /// JSON object), all or none.
    pub fn decode_each<R: AsRef<[u8]>>(&self, table: &Table, records: &[R]) -> Result<RecordBatch> {
        let body_len = records.iter().map(|r| r.as_ref().len()).sum();
        match &self.format {
            Decoder::Protobuf(decoder) => {
                self.limits
                    .check_records(records.len(), body_len, &self.widths)
                    .map_err(|e| decode_error(table, e))?;
                decoder
                    .decode(records.iter().map(AsRef::as_ref))
                    .map_err(|e| decode_error(table, e))
            }
            Decoder::Json(schema) => decode_json_records(records, Arc::clone(schema), &self.limits)
                .map_err(|e| decode_error(table, e)),
        }
    }

    /// Decodes one request body. The record count and a high estimate of
    /// the decoded size are checked against the limits first.
    pub fn decode(&self, table: &Table, body: &[u8]) -> Result<RecordBatch> {
        match &self.format {
            Decoder::Json(schema) => decode_json(body, Arc::clone(schema), &self.limits)
                .map_err(|e| decode_error(table, e)),
            Decoder::Protobuf(decoder) => {
                let records = split_delimited(body, &self.limits)?;
                self.limits
                    .check_records(records.len(), body.len(), &self.widths)
                    .map_err(|e| decode_error(table, e))?;
                decoder
                    .decode(records.iter().copied())
                    .map_err(|e| decode_error(table, e))
            }
        }
    }
}

/// Splits protobuf's delimited framing: `varint length, bytes`, repeated.
/// Stops with an error past `limits.max_request_rows` records, before the
/// list of them grows further.
pub fn split_delimited<'a>(mut body: &'a [u8], limits: &Limits) -> Result<Vec<&'a [u8]>> {
    let mut records = Vec::new();
    while !body.is_empty() {
        let index = records.len();
        if index == limits.max_request_rows {
            // One more record than allowed: the count names the minimum.
            limits.check_rows(index as u64 + 1).map_err(Error::from)?;
        }
        let (len, prefix) = read_varint(body)
            .ok_or_else(|| Error::BadRequest(format!("record {index}: truncated length prefix")))?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let rest = &body[prefix..];
        if len > rest.len() {
            return Err(Error::BadRequest(format!(
                "record {index}: length prefix {len} runs past the end of the request ({} bytes left)",
                rest.len()
            )));
        }
        records.push(&rest[..len]);
        body = &rest[len..];
    }
    Ok(records)
}

fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn base64_field(name: &str, text: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| Error::BadRequest(format!("{name} is not valid base64: {e}")))
}

/// The caller's bad records or descriptor, a limit, or weir's own failure
/// decoding them; the code follows from the codec error.
fn decode_error(table: &Table, source: weir_codec::Error) -> Error {
    Error::Table(weir_provider::Error::Rows {
        table: table.name().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimited_framing() {
        let body = [2, b'a', b'b', 0, 1, b'c'];
        let limits = Limits::default();
        let records = split_delimited(&body, &limits).unwrap();
        assert_eq!(records, vec![&b"ab"[..], &b""[..], &b"c"[..]]);
        let err = split_delimited(&[5, b'a'], &limits)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "record 0: length prefix 5 runs past the end of the request (1 bytes left)"
        );
        let err = split_delimited(&[1, b'a', 0x80], &limits)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "record 1: truncated length prefix");
        // A million empty records in a megabyte: refused at the limit.
        let empty = vec![0u8; 1 << 20];
        let small = Limits {
            max_request_rows: 1000,
            ..limits
        };
        let err = split_delimited(&empty, &small).unwrap_err();
        assert_eq!(
            err.to_string(),
            "too large: 1001 rows in one request, over the limit of 1000 (limits.max_request_rows)"
        );
    }

    #[test]
    fn headers() {
        assert!(RecordsHeader::parse(b"").unwrap().is_none());
        let header = RecordsHeader::parse(br#"{"format": "json"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(header.format, Format::Json);
        let err = RecordsHeader::parse(br#"{"format": "xml"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `xml`"), "{err}");
    }
}
