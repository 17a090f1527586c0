//! The Zerobus Ingest service (`databricks.zerobus.Zerobus`), on weir's
//! gRPC port next to Arrow Flight, so that the public Zerobus SDKs work
//! against weir unchanged. An adapter over [`crate::ingest`]; the wire
//! format is weir's own `proto/zerobus.proto`.
//!
//! `EphemeralStream`:
//! 1. The response headers go out at once; the client waits for them
//!    before it sends its first message.
//! 2. The first message is `create_stream`: the table (`catalog.schema.table`
//!    maps onto a weir table by [`crate::ingest::table_name`]), the record
//!    type (`PROTO` with a serialized `DescriptorProto`, or `JSON`). The
//!    descriptor is checked against the table at once; a mismatch is
//!    INVALID_ARGUMENT with the `google.rpc.ErrorInfo` the SDKs read
//!    (`SCHEMA_VALIDATION_FAILED`). The server answers with a `stream_id`.
//! 3. Then `ingest_record` (one record) and `ingest_record_batch` (many,
//!    all or nothing) requests, one `offset_id` each, from 0 on every call.
//! 4. Acks are `durability_ack_up_to_offset`: every request up to it is in
//!    the WAL, fsynced, and visible to SQL.
//! 5. On the client's half-close the server acks everything and ends with
//!    OK. On shutdown it sends `close_stream_signal`, acks for the grace
//!    period, and ends with UNAVAILABLE; the SDK reconnects and resends.
//!
//! `PersistentStream` is the same with offsets that go on across
//! connections and restarts: `create_stream` mints a stream id
//! (`<table>/<uuid>`), `resume_stream` by that id answers
//! `last_committed_offset`, the last offset durable (absent when none is),
//! and resends at or below it are acked without being written. It is a
//! named stream of [`crate::session`], so exactly once holds on every path
//! the named streams have. `RetireStream` retires the name for good (see
//! [`crate::session::Sessions::retire`]): its open connection ends and no
//! protocol can resume it.

use std::future::{Future, ready};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use weir_codec::Limits;
use weir_codec::protobuf::descriptor_from_descriptor_proto;
use weir_provider::{StreamName, Table};

use crate::auth::Principal;
use crate::ingest::{Incoming, Ingest, Protocol, Replies, Requests, Rows, StreamSlot};
use crate::records::RecordDecoder;
use crate::{Error, Result};

/// The generated messages and service of `proto/zerobus.proto`.
#[allow(missing_docs, clippy::all, clippy::clone_on_ref_ptr)]
pub mod proto {
    tonic::include_proto!("databricks.zerobus");
}

use proto::zerobus_server::{Zerobus, ZerobusServer};
use proto::{
    CloseStreamSignal, CreateIngestStreamRequest, CreateIngestStreamResponse,
    EphemeralStreamRequest, EphemeralStreamResponse, IngestRecordBatchRequest, IngestRecordRequest,
    IngestRecordResponse, PersistentStreamRequest, PersistentStreamResponse, RecordType,
    ResumeIngestStreamRequest, ResumeIngestStreamResponse, RetireStreamRequest,
    RetireStreamResponse, ephemeral_stream_request, ephemeral_stream_response,
    ingest_record_batch_request, ingest_record_request, persistent_stream_request,
    persistent_stream_response, resume_ingest_stream_request, retire_stream_request,
};

/// weir's Zerobus service.
#[derive(Debug, Clone)]
pub struct ZerobusService {
    ingest: Ingest,
}

impl ZerobusService {
    pub fn new(ingest: Ingest) -> Self {
        Self { ingest }
    }

    /// The gRPC service, taking messages of up to `max_message_bytes`.
    pub fn into_server(self, max_message_bytes: usize) -> ZerobusServer<Self> {
        ZerobusServer::new(self).max_decoding_message_size(max_message_bytes)
    }

    fn open(&self) -> Result<(Ingest, StreamSlot), Status> {
        Ok((self.ingest.clone(), self.ingest.open_slot()?))
    }
}

#[tonic::async_trait]
impl Zerobus for ZerobusService {
    type EphemeralStreamStream = Replies<EphemeralStreamResponse>;
    type PersistentStreamStream = Replies<PersistentStreamResponse>;

    async fn ephemeral_stream(
        &self,
        request: Request<Streaming<EphemeralStreamRequest>>,
    ) -> Result<Response<Self::EphemeralStreamStream>, Status> {
        let principal = self.ingest.principal(request.metadata())?;
        let (ingest, slot) = self.open()?;
        let input = request.into_inner();
        Ok(Response::new(after_headers(ephemeral(
            ingest, slot, input, principal,
        ))))
    }

    async fn persistent_stream(
        &self,
        request: Request<Streaming<PersistentStreamRequest>>,
    ) -> Result<Response<Self::PersistentStreamStream>, Status> {
        let principal = self.ingest.principal(request.metadata())?;
        let (ingest, slot) = self.open()?;
        let input = request.into_inner();
        Ok(Response::new(after_headers(persistent(
            ingest, slot, input, principal,
        ))))
    }

    async fn retire_stream(
        &self,
        request: Request<RetireStreamRequest>,
    ) -> Result<Response<RetireStreamResponse>, Status> {
        let principal = self.ingest.principal(request.metadata())?;
        let request = request.into_inner();
        let Some(retire_stream_request::Identifier::StreamId(id)) = request.identifier else {
            return Err(Error::BadRequest("RetireStream needs a stream_id".into()).into());
        };
        let (table, name) = persistent_id(&self.ingest, &id)?;
        principal.check_write(table.name())?;
        self.ingest.retire(table, name).await?;
        Ok(Response::new(RetireStreamResponse {}))
    }
}

/// A reply stream whose setup runs once the response headers are out:
/// tonic sends them when the handler returns, and the SDKs wait for them
/// before they send their first message.
fn after_headers<M: Send + 'static>(
    setup: impl Future<Output = Result<Replies<M>>> + Send + 'static,
) -> Replies<M> {
    Box::pin(futures::stream::once(setup).flat_map(|setup| match setup {
        Ok(replies) => replies,
        Err(e) => Box::pin(futures::stream::once(ready(Err(Status::from(e))))),
    }))
}

async fn ephemeral(
    ingest: Ingest,
    slot: StreamSlot,
    mut input: Streaming<EphemeralStreamRequest>,
    principal: Principal,
) -> Result<Replies<EphemeralStreamResponse>> {
    use ephemeral_stream_request::Payload;
    let create = match first(&mut input).await?.payload {
        Some(Payload::CreateStream(create)) => create,
        _ => return Err(not_first("create_stream")),
    };
    let table = ingest.table(create.table_name.as_deref().unwrap_or_default())?;
    principal.check_write(table.name())?;
    let decoder = decoder(
        &table,
        create.record_type,
        create.descriptor_proto.as_ref(),
        ingest.limits(),
    )?;
    let session = ingest.open_session(table, None).await?;
    let requests = Records {
        input,
        decoder,
        read: |request: EphemeralStreamRequest| match request.payload {
            Some(Payload::IngestRecord(record)) => one(record),
            Some(Payload::IngestRecordBatch(batch)) => many(batch),
            Some(Payload::CreateStream(_)) | None => Err(not_first("create_stream")),
        },
    };
    let created = EphemeralStreamResponse {
        payload: Some(ephemeral_stream_response::Payload::CreateStreamResponse(
            CreateIngestStreamResponse {
                stream_id: Some(uuid::Uuid::new_v4().to_string()),
            },
        )),
    };
    ingest
        .run(slot, session, requests, Ephemeral, vec![created])
        .await
}

async fn persistent(
    ingest: Ingest,
    slot: StreamSlot,
    mut input: Streaming<PersistentStreamRequest>,
    principal: Principal,
) -> Result<Replies<PersistentStreamResponse>> {
    use persistent_stream_request::Payload;
    let (table, name, decoder, created) = match first(&mut input).await?.payload {
        Some(Payload::CreateStream(create)) => {
            let create: CreateIngestStreamRequest = create.create_stream.unwrap_or_default();
            let table = ingest.table(create.table_name.as_deref().unwrap_or_default())?;
            principal.check_write(table.name())?;
            let decoder = decoder(
                &table,
                create.record_type,
                create.descriptor_proto.as_ref(),
                ingest.limits(),
            )?;
            let id = format!("{}/{}", table.name(), uuid::Uuid::new_v4().simple());
            let name = StreamName::parse(&id).map_err(|e| Error::Internal(e.to_string()))?;
            (table, name, decoder, true)
        }
        Some(Payload::ResumeStream(ResumeIngestStreamRequest {
            identifier,
            descriptor_proto,
            record_type,
        })) => {
            let Some(resume_ingest_stream_request::Identifier::StreamId(id)) = identifier else {
                return Err(Error::BadRequest("resume_stream needs a stream_id".into()));
            };
            let (table, name) = persistent_id(&ingest, &id)?;
            principal.check_write(table.name())?;
            let decoder = decoder(
                &table,
                record_type,
                descriptor_proto.as_ref(),
                ingest.limits(),
            )?;
            (table, name, decoder, false)
        }
        _ => return Err(not_first("create_stream or resume_stream")),
    };
    let session = ingest.open_session(table, Some(name.clone())).await?;
    let opening = if created {
        persistent_stream_response::Payload::CreateStreamResponse(CreateIngestStreamResponse {
            stream_id: Some(name.to_string()),
        })
    } else {
        // Absent when nothing is durable yet, as the protocol defines.
        let at = session.resumed_at().get();
        persistent_stream_response::Payload::ResumeStreamResponse(ResumeIngestStreamResponse {
            last_committed_offset: (at >= 0).then_some(at),
        })
    };
    let requests = Records {
        input,
        decoder,
        read: |request: PersistentStreamRequest| match request.payload {
            Some(Payload::IngestRecord(record)) => one(record),
            Some(Payload::IngestRecordBatch(batch)) => many(batch),
            Some(Payload::CreateStream(_) | Payload::ResumeStream(_)) | None => {
                Err(not_first("create_stream or resume_stream"))
            }
        },
    };
    let opening = PersistentStreamResponse {
        payload: Some(opening),
    };
    ingest
        .run(slot, session, requests, Persistent, vec![opening])
        .await
}

/// The table and stream name of a persistent stream id, `<table>/<uuid>`.
fn persistent_id(ingest: &Ingest, id: &str) -> Result<(Arc<Table>, StreamName)> {
    let not_found = |reason| Error::StreamNotFound {
        stream: id.to_string(),
        reason,
    };
    let (table, _) = id
        .split_once('/')
        .ok_or_else(|| not_found("weir's stream ids are <table>/<id>"))?;
    // Exactly the table's own name: another spelling of the table would
    // be another stream.
    if weir_provider::validate_name(table).is_err() {
        return Err(not_found("weir's stream ids are <table>/<id>"));
    }
    let name = StreamName::parse(id).map_err(|_| not_found("it is not a weir stream id"))?;
    Ok((ingest.table(table)?, name))
}

/// How long a new stream may take to send its first message.
const FIRST_MESSAGE_WAIT: Duration = Duration::from_secs(30);

async fn first<T: prost::Message + Default>(input: &mut Streaming<T>) -> Result<T> {
    let first = tokio::time::timeout(FIRST_MESSAGE_WAIT, input.message())
        .await
        .map_err(|_| {
            Error::BadRequest(format!(
                "no create_stream within {} s of opening the stream",
                FIRST_MESSAGE_WAIT.as_secs()
            ))
        })?;
    match first {
        Ok(Some(message)) => Ok(message),
        Ok(None) => Err(Error::BadRequest(
            "the stream ended before its first message".into(),
        )),
        Err(status) => Err(Error::from_input(status)),
    }
}

fn not_first(expected: &str) -> Error {
    Error::BadRequest(format!(
        "the first message of a stream must be {expected}, and only the first"
    ))
}

/// The decoder a stream's record type and descriptor ask for.
fn decoder(
    table: &Table,
    record_type: Option<i32>,
    descriptor_proto: Option<&Bytes>,
    limits: Limits,
) -> Result<RecordDecoder> {
    // An unset record type means PROTO, as the protocol defines.
    let record_type = record_type.map_or(Ok(RecordType::Proto), RecordType::try_from);
    match record_type {
        Ok(RecordType::Proto) => {
            let descriptor = descriptor_proto
                .ok_or_else(|| Error::BadRequest("a PROTO stream needs descriptor_proto".into()))?;
            let descriptor = descriptor_from_descriptor_proto(descriptor).map_err(|source| {
                Error::Table(weir_provider::Error::Rows {
                    table: table.name().to_string(),
                    source,
                })
            })?;
            RecordDecoder::protobuf(table, descriptor, limits)
        }
        Ok(RecordType::Json) => Ok(RecordDecoder::json(table, limits)),
        Ok(RecordType::Avro) => Err(Error::BadRequest(
            "AVRO records are not supported; use PROTO, JSON or Arrow Flight".into(),
        )),
        Ok(RecordType::Unspecified) | Err(_) => Err(Error::BadRequest(format!(
            "record_type must be PROTO or JSON, not {}",
            record_type.map_or_else(
                |_| "an unknown value".into(),
                |t| t.as_str_name().to_string()
            )
        ))),
    }
}

/// A request's records, as they came.
#[derive(Debug)]
enum Batch {
    Proto(Vec<Bytes>),
    Json(Vec<String>),
    Avro,
}

fn one(request: IngestRecordRequest) -> Result<Incoming<Batch>> {
    use ingest_record_request::Record;
    let payload = match request.record {
        Some(Record::ProtoEncodedRecord(bytes)) => Batch::Proto(vec![bytes]),
        Some(Record::JsonRecord(json)) => Batch::Json(vec![json]),
        Some(Record::AvroEncodedRecord(_)) => Batch::Avro,
        None => return Err(Error::BadRequest("ingest_record holds no record".into())),
    };
    Ok(Incoming {
        offset: request.offset_id,
        payload,
    })
}

fn many(request: IngestRecordBatchRequest) -> Result<Incoming<Batch>> {
    use ingest_record_batch_request::Batch as Kind;
    let payload = match request.batch {
        Some(Kind::ProtoEncodedBatch(batch)) => Batch::Proto(batch.records),
        Some(Kind::JsonBatch(batch)) => Batch::Json(batch.records),
        Some(Kind::AvroBatch(_)) => Batch::Avro,
        None => {
            return Err(Error::BadRequest(
                "ingest_record_batch holds no batch".into(),
            ));
        }
    };
    Ok(Incoming {
        offset: request.offset_id,
        payload,
    })
}

/// A Zerobus stream's requests.
struct Records<T, F> {
    input: Streaming<T>,
    decoder: RecordDecoder,
    read: F,
}

impl<T, F> Requests for Records<T, F>
where
    T: prost::Message + Default + Send + 'static,
    F: Fn(T) -> Result<Incoming<Batch>> + Send + 'static,
{
    type Payload = Batch;

    async fn next(&mut self) -> Result<Option<Incoming<Batch>>> {
        match self.input.message().await {
            Ok(Some(request)) => (self.read)(request).map(Some),
            Ok(None) => Ok(None),
            Err(status) => Err(Error::from_input(status)),
        }
    }

    fn rows(&self, table: &Table, _limits: &Limits, payload: Batch) -> Result<Rows> {
        let batch = match (payload, self.decoder.is_protobuf()) {
            (Batch::Proto(records), true) => self.decoder.decode_each(table, &records)?,
            (Batch::Json(records), false) => self.decoder.decode_each(table, &records)?,
            (Batch::Avro, _) => {
                return Err(Error::BadRequest("AVRO records are not supported".into()));
            }
            (Batch::Proto(_), false) => {
                return Err(Error::BadRequest(
                    "this stream was created for JSON records, not PROTO".into(),
                ));
            }
            (Batch::Json(_), true) => {
                return Err(Error::BadRequest(
                    "this stream was created for PROTO records, not JSON".into(),
                ));
            }
        };
        Ok(Rows { batch, retained: 0 })
    }
}

fn durability_ack(offset: i64) -> IngestRecordResponse {
    IngestRecordResponse {
        durability_ack_up_to_offset: Some(offset),
    }
}

fn close_signal(grace: Duration) -> CloseStreamSignal {
    CloseStreamSignal {
        duration: Some(prost_types::Duration {
            seconds: grace.as_secs() as i64,
            nanos: grace.subsec_nanos() as i32,
        }),
    }
}

/// The acks and close signal of a Zerobus stream: the two RPCs say them
/// alike, each in its own response message.
macro_rules! zerobus_protocol {
    ($name:ident, $message:ident, $payload:path) => {
        struct $name;

        impl Protocol for $name {
            type Message = $message;

            fn ack(&self, offset: i64, _records: i64) -> Self::Message {
                use $payload as Payload;
                $message {
                    payload: Some(Payload::IngestRecordResponse(durability_ack(offset))),
                }
            }

            fn closing(&self, grace: Duration, _offset: i64, _records: i64) -> Self::Message {
                use $payload as Payload;
                $message {
                    payload: Some(Payload::CloseStreamSignal(close_signal(grace))),
                }
            }
        }
    };
}

zerobus_protocol!(
    Ephemeral,
    EphemeralStreamResponse,
    ephemeral_stream_response::Payload
);
zerobus_protocol!(
    Persistent,
    PersistentStreamResponse,
    persistent_stream_response::Payload
);
