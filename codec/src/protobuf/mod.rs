//! Protobuf records to Arrow, with the message schema given at run time.
//!
//! A producer describes its records with a protobuf descriptor (see
//! [`descriptor_from_descriptor_proto`] and friends); the server binds that
//! descriptor to the target table's Arrow schema once per stream
//! ([`ProtoDecoder::new`], which rejects a descriptor that does not fit,
//! naming the field) and then decodes batches of serialized records into
//! [`RecordBatch`]es of exactly the table's schema ([`ProtoDecoder::decode`]).
//!
//! Decoding is one pass over the wire bytes straight into Arrow buffers: no
//! intermediate message objects and no allocation per record; strings and
//! bytes are copied once, from the record into the column's value buffer.
//! A bad record fails the whole batch with its index and field path.
//!
//! The parts, in the order data flows:
//!
//! * [`descriptor`]: descriptors from a `DescriptorProto`, a
//!   `FileDescriptorSet` or `.proto` source;
//! * [`schema`]: the natural Arrow schema of a message ([`arrow_schema_for`]);
//! * `plan`: the descriptor bound to the table (type checks, column slots,
//!   dense field-number tables);
//! * `wire`: varints, tags and lengths, with the byte layout documented;
//! * `decoder`, `ops`, `rows`: the decode loop, per-field operations, and
//!   row bookkeeping (defaults, nulls, last-value-wins, oneofs, maps);
//! * `columns`, `finish`: builders and their conversion to arrays;
//! * [`fuzz`]: the fuzz target's logic, callable from unit tests.
//!
//! The type mapping is documented in `docs/PROTOBUF.md`.
//!
//! ```
//! use std::sync::Arc;
//! use weir_codec::protobuf::{ProtoDecoder, arrow_schema_for, descriptor_from_proto_source};
//!
//! let source = r#"syntax = "proto3"; message Reading { string sensor = 1; double value = 2; }"#;
//! let message = descriptor_from_proto_source(source, "Reading")?;
//! let table = Arc::new(arrow_schema_for(&message)?);
//! let decoder = ProtoDecoder::new(message, table)?;
//!
//! // sensor = "t1", value = 21.5
//! let record: &[u8] = &[0x0a, 2, b't', b'1', 0x11, 0, 0, 0, 0, 0, 0x80, 0x35, 0x40];
//! let batch = decoder.decode([record])?;
//! assert_eq!(batch.num_rows(), 1);
//! # Ok::<(), weir_codec::Error>(())
//! ```

mod columns;
mod decoder;
pub mod descriptor;
mod error;
mod finish;
pub mod fuzz;
mod ops;
mod plan;
mod rows;
pub mod schema;
mod wire;

#[cfg(test)]
mod tests;

use arrow::datatypes::SchemaRef;

use crate::error::Result;
use arrow::record_batch::RecordBatch;
pub use prost_reflect::MessageDescriptor;

pub use descriptor::{
    descriptor_from_descriptor_proto, descriptor_from_file_descriptor_set,
    descriptor_from_proto_source,
};
pub use error::DecodeErrorKind;
pub use plan::{MAX_DEPTH, NO_SUCH_COLUMN, NO_SUCH_FIELD};
pub use schema::arrow_schema_for;
pub use wire::WireType;

use decoder::Decoding;
use plan::Plan;

/// Decodes serialized protobuf records of one message type into batches of
/// one table's schema. Built once per stream; `Send + Sync`, so one decoder
/// may serve concurrent calls.
#[derive(Debug)]
pub struct ProtoDecoder {
    message: MessageDescriptor,
    schema: SchemaRef,
    plan: Plan,
}

impl ProtoDecoder {
    /// Binds `message` (the records' descriptor) to `table` (the target
    /// table's schema). Every descriptor field must have a table column of
    /// the same name (exact, else equal ignoring ASCII case) and a
    /// compatible type; table columns the descriptor lacks must be nullable.
    /// The error names the offending field.
    pub fn new(message: MessageDescriptor, table: SchemaRef) -> Result<Self> {
        let plan = Plan::new(&message, table.fields())?;
        Ok(ProtoDecoder {
            message,
            schema: table,
            plan,
        })
    }

    /// The schema of the batches [`decode`](Self::decode) returns: the table's.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The descriptor of the records.
    pub fn message(&self) -> &MessageDescriptor {
        &self.message
    }

    /// Decodes records, each one full serialized message, into one batch.
    ///
    /// On the first bad record, returns an error naming the record's index
    /// and the field path (`record 3: field .meta.ts: truncated varint`);
    /// nothing of the batch is returned then.
    ///
    /// The iterator's length sizes the root's columns; a batch of more
    /// records than it said fails.
    pub fn decode<'a, I>(&self, records: I) -> Result<RecordBatch>
    where
        I: IntoIterator<Item = &'a [u8]>,
        I::IntoIter: ExactSizeIterator,
    {
        let records = records.into_iter();
        let mut decoding = Decoding::new(&self.plan, records.len());
        for (index, record) in records.enumerate() {
            decoding.record(index, record)?;
        }
        decoding.finish(&self.schema)
    }
}

#[cfg(test)]
mod api_tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn decoder_is_send_and_sync() {
        assert_send_sync::<ProtoDecoder>();
    }
}
