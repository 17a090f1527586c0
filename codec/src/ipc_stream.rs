//! Arrow IPC messages from a producer, decoded only after they are checked.
//!
//! An Arrow Flight `DoPut` carries an Arrow IPC stream split into messages:
//! each `FlightData` holds one IPC message header (`data_header`, a
//! flatbuffer) and its body (`data_body`). [`IpcStreamDecoder`] decodes such
//! messages one at a time: first a schema, then dictionary batches and
//! record batches.
//!
//! Arrow's own reader trusts the header: it slices the body where the
//! header says (and panics if the body is shorter), and allocates a
//! compressed buffer's declared uncompressed length before decompressing.
//! So before a message reaches it, this decoder checks what the header
//! declares against the body and the [`Limits`]:
//!
//! - the message's body length, and every buffer's offset and length, lie
//!   within the body that arrived (else [`Error::InvalidIpc`]);
//! - the row count (of a batch, or of a dictionary's values) is within
//!   `max_request_rows`;
//! - a compressed body's declared uncompressed sizes add up to at most
//!   `max_request_bytes` (ZSTD, which never writes past the declared size;
//!   LZ4 frames, which arrow decompresses into a growing buffer, are
//!   refused);
//! - delta dictionaries, which would grow a stream's state without bound,
//!   are refused.
//!
//! A batch that passes still goes through [`conform`](crate::conform),
//! which bounds what casting it to the table's schema allocates. Arrow's
//! reader also has `unwrap`s on malformed flatbuffers; a panic inside it is
//! caught and reported as [`Error::InvalidIpc`], so no message can take the
//! process down.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::buffer::Buffer;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::{self, MessageHeader};
use bytes::Bytes;

use crate::{Error, Limits, Result};

/// What one message held.
#[derive(Debug)]
pub enum IpcMessage {
    /// The stream's schema (the first message).
    Schema(SchemaRef),
    /// A record batch in the stream's schema.
    Batch(RecordBatch),
    /// A dictionary, kept for the batches that follow.
    Dictionary,
    /// A message with no IPC header (Flight allows metadata-only messages).
    None,
}

/// Decodes one producer's IPC messages, checking each before decoding it.
#[derive(Debug)]
pub struct IpcStreamDecoder {
    limits: Limits,
    schema: Option<SchemaRef>,
    dictionaries: HashMap<i64, ArrayRef>,
}

impl IpcStreamDecoder {
    /// A decoder for a new stream.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            schema: None,
            dictionaries: HashMap::new(),
        }
    }

    /// The stream's schema, once its schema message arrived.
    pub fn schema(&self) -> Option<&SchemaRef> {
        self.schema.as_ref()
    }

    /// Checks and decodes one message: its IPC header and its body. The
    /// batch's arrays share the body's memory where it is aligned.
    pub fn decode(&mut self, header: &[u8], body: Bytes) -> Result<IpcMessage> {
        if header.is_empty() {
            return Ok(IpcMessage::None);
        }
        let message = ipc::root_as_message(header)
            .map_err(|e| Error::InvalidIpc(format!("the message header does not parse: {e}")))?;
        let declared = message.bodyLength();
        if declared < 0 || declared as u64 > body.len() as u64 {
            return Err(Error::InvalidIpc(format!(
                "the message header declares a body of {declared} bytes, but {} arrived",
                body.len()
            )));
        }
        match message.header_type() {
            MessageHeader::NONE => Ok(IpcMessage::None),
            MessageHeader::Schema => {
                if self.schema.is_some() {
                    return Err(Error::InvalidIpc(
                        "a second schema message: open a new stream for a new schema".into(),
                    ));
                }
                let fb = message
                    .header_as_schema()
                    .ok_or_else(|| Error::InvalidIpc("a schema message without a schema".into()))?;
                if fb.fields().is_none() {
                    return Err(Error::InvalidIpc("a schema without fields".into()));
                }
                let schema: Schema = guarded(|| Ok(ipc::convert::fb_to_schema(fb)))?;
                let schema = Arc::new(schema);
                self.schema = Some(Arc::clone(&schema));
                Ok(IpcMessage::Schema(schema))
            }
            MessageHeader::RecordBatch => {
                let schema = self.require_schema("a record batch")?;
                let batch = message.header_as_record_batch().ok_or_else(|| {
                    Error::InvalidIpc("a record batch message without a batch".into())
                })?;
                self.check_batch(&batch, &body)?;
                let version = message.version();
                let buffer = aligned(body);
                let dictionaries = &self.dictionaries;
                let batch = guarded(|| {
                    ipc::reader::read_record_batch(
                        &buffer,
                        batch,
                        schema,
                        dictionaries,
                        None,
                        &version,
                    )
                })?;
                Ok(IpcMessage::Batch(batch))
            }
            MessageHeader::DictionaryBatch => {
                let schema = self.require_schema("a dictionary batch")?;
                let dictionary = message.header_as_dictionary_batch().ok_or_else(|| {
                    Error::InvalidIpc("a dictionary message without a dictionary".into())
                })?;
                if dictionary.isDelta() {
                    return Err(Error::InvalidIpc(
                        "delta dictionaries are not supported: send each dictionary whole".into(),
                    ));
                }
                let values = dictionary.data().ok_or_else(|| {
                    Error::InvalidIpc("a dictionary message without values".into())
                })?;
                self.check_batch(&values, &body)?;
                let version = message.version();
                let buffer = aligned(body);
                let dictionaries = &mut self.dictionaries;
                guarded(|| {
                    ipc::reader::read_dictionary(
                        &buffer,
                        dictionary,
                        &schema,
                        dictionaries,
                        &version,
                    )
                })?;
                Ok(IpcMessage::Dictionary)
            }
            other => Err(Error::InvalidIpc(format!(
                "unexpected {} message in a record batch stream",
                other.variant_name().unwrap_or("unknown")
            ))),
        }
    }

    /// Whether `header` is a record batch message (a request of the
    /// stream, as opposed to a schema or dictionary message). Parses only
    /// the header.
    pub fn is_record_batch(header: &[u8]) -> bool {
        ipc::root_as_message(header).is_ok_and(|m| m.header_type() == MessageHeader::RecordBatch)
    }

    fn require_schema(&self, what: &str) -> Result<SchemaRef> {
        self.schema
            .clone()
            .ok_or_else(|| Error::InvalidIpc(format!("{what} before the schema")))
    }

    /// What a batch header declares, checked against the body and the
    /// limits before Arrow reads it.
    fn check_batch(&self, batch: &ipc::RecordBatch<'_>, body: &[u8]) -> Result<()> {
        let rows = batch.length();
        if rows < 0 {
            return Err(Error::InvalidIpc(format!("a negative row count {rows}")));
        }
        self.limits.check_rows(rows as u64)?;
        let buffers = batch
            .buffers()
            .ok_or_else(|| Error::InvalidIpc("a batch header without buffers".into()))?;
        if batch.nodes().is_none() {
            return Err(Error::InvalidIpc(
                "a batch header without field nodes".into(),
            ));
        }
        let compressed = match batch.compression().map(|c| c.codec()) {
            None => false,
            Some(ipc::CompressionType::ZSTD) => true,
            // LZ4 frames are decompressed into a growing buffer whatever
            // size they declare: a small body could expand without bound.
            Some(ipc::CompressionType::LZ4_FRAME) => {
                return Err(Error::InvalidIpc(
                    "LZ4-compressed batches are not accepted: send them uncompressed or with ZSTD"
                        .into(),
                ));
            }
            Some(other) => {
                return Err(Error::InvalidIpc(format!(
                    "unknown batch compression {}",
                    other.0
                )));
            }
        };
        let mut decompressed = 0u64;
        for (index, buffer) in buffers.iter().enumerate() {
            let (offset, length) = (buffer.offset(), buffer.length());
            let end = offset.checked_add(length);
            let within = offset >= 0
                && length >= 0
                && end.is_some_and(|end| end as u64 <= body.len() as u64);
            if !within {
                return Err(Error::InvalidIpc(format!(
                    "buffer {index} is declared at bytes {offset}..{} of a body of {} bytes",
                    end.map_or_else(|| "overflow".to_string(), |e| e.to_string()),
                    body.len()
                )));
            }
            if compressed && length > 0 {
                let start = offset as usize;
                let prefix = match body.get(start..start + 8) {
                    Some(prefix) if length >= 8 => prefix,
                    _ => {
                        return Err(Error::InvalidIpc(format!(
                            "compressed buffer {index} is shorter than its 8-byte length prefix"
                        )));
                    }
                };
                let size = i64::from_le_bytes(prefix.try_into().expect("8 bytes"));
                // -1: stored uncompressed, after the prefix.
                decompressed = decompressed.saturating_add(match size {
                    -1 => length as u64 - 8,
                    n if n < 0 => {
                        return Err(Error::InvalidIpc(format!(
                            "compressed buffer {index} declares a length of {n}"
                        )));
                    }
                    n => n as u64,
                });
            }
        }
        if compressed {
            self.limits.check_bytes(decompressed)?;
        }
        Ok(())
    }
}

/// Runs Arrow's reader, turning its errors and any panic on malformed
/// input into [`Error::InvalidIpc`].
/// `body` as an Arrow buffer at an 8-byte aligned address. gRPC delivers a
/// body wherever it lies in the received frame; Arrow copies unaligned
/// buffers of most types, but reads some in place (a union's type ids and
/// offsets), where an unaligned address panics. A body that is unaligned
/// is copied once, which is what Arrow would do buffer by buffer anyway.
fn aligned(body: Bytes) -> Buffer {
    if body.as_ptr().align_offset(8) == 0 {
        Buffer::from(body)
    } else {
        Buffer::from_slice_ref(&body)
    }
}

fn guarded<T>(read: impl FnOnce() -> Result<T, arrow::error::ArrowError>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(read)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Error::InvalidIpc(e.to_string())),
        Err(panic) => {
            let reason = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "malformed message".to_string());
            Err(Error::InvalidIpc(format!(
                "the message does not decode: {reason}"
            )))
        }
    }
}

/// Fuzz-target logic: arbitrary bytes as a stream of IPC messages through
/// the decoder and [`conform`](crate::conform), into a fixed table. Each
/// message is `u32 LE header length, header, u32 LE body length, body`,
/// the two byte strings of one `FlightData`. Must never panic, and no
/// batch it returns may be over the limits.
pub fn fuzz_messages(data: &[u8]) -> usize {
    use arrow::datatypes::{DataType, Field, TimeUnit};
    let table: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("temp", DataType::Float64, true),
        Field::new("site", DataType::Utf8, true),
        Field::new(
            "tags",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
    ]));
    let limits = Limits {
        max_request_bytes: 1 << 20,
        max_request_rows: 10_000,
        ..Limits::default()
    };
    fn take(rest: &mut &[u8]) -> Option<Bytes> {
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let len = len.min(rest.len() - 4);
        let bytes = Bytes::copy_from_slice(&rest[4..4 + len]);
        *rest = &rest[4 + len..];
        Some(bytes)
    }
    let mut decoder = IpcStreamDecoder::new(limits);
    let mut rest = data;
    let mut accepted = 0;
    while let (Some(header), Some(body)) = (take(&mut rest), take(&mut rest)) {
        match decoder.decode(&header, body) {
            Ok(IpcMessage::Batch(batch)) => {
                if let Ok(out) = crate::conform(&batch, &table, &limits) {
                    assert!(out.num_rows() <= limits.max_request_rows);
                    accepted += 1;
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    accepted
}

#[cfg(test)]
mod tests;
