//! Arrow Flight `DoPut` ingest: an adapter over [`crate::ingest`].
//!
//! The convention (shared with the Zerobus SDKs' Arrow path, so those SDKs
//! and plain `pyarrow.flight` both work):
//!
//! 1. The table is named by the `x-databricks-zerobus-table-name` header or
//!    by the descriptor path (`FlightDescriptor::new_path(["sensors"])`); the
//!    Zerobus SDKs send no descriptor at all. A dotted name
//!    (`catalog.schema.table`) resolves by [`crate::ingest::table_name`].
//! 2. The first message carries the batch schema. It is checked against the
//!    table at once; then the server sends the ready ack
//!    `{"ack_up_to_offset": -1, "ack_up_to_records": 0}`.
//! 3. Each batch carries `app_metadata` `{"offset_id": n}`, numbered 0, 1, 2,
//!    ... per stream. A batch without it gets the next number. Any other
//!    number is OUT_OF_RANGE.
//! 4. Once a batch is in the WAL and fsynced, the server acks it with
//!    `{"ack_up_to_offset": n, "ack_up_to_records": r}`: every batch up to
//!    `n` (and `r` rows in all, on this connection) is durable and visible
//!    to SQL.
//! 5. A stream may be named with the `x-weir-stream-name` header. Its
//!    offsets then go on across connections: the ready ack carries the
//!    stream's last durable offset instead of -1, batches at or below it
//!    are acked again without being written, and the next one must follow
//!    it (see [`crate::session`]). An anonymous stream starts at 0 on every
//!    connection, so a resend after a failure is at-least-once.
//!
//! Protobuf and JSON records use the same stream with a records header in
//! the first message instead of a schema: see [`crate::records`].
//!
//! 6. When the server shuts down it repeats the last ack with
//!    `"close_stream_duration_ms": n` added: the stream ends `n` ms later
//!    (acking what it receives until then) with UNAVAILABLE, and the
//!    producer moves to a new stream.
//!
//! Sequencing, all-or-nothing requests, acks, back-pressure and the ways a
//! stream ends are the ingest layer's: see [`crate::ingest`].

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow_flight::PutResult;
use arrow_flight::sql::CommandStatementIngest;
use arrow_flight::sql::server::PeekableFlightDataStream;
use futures::StreamExt;
use tonic::Request;
use weir_codec::Limits;
use weir_codec::flight::{AckMetadata, RequestMetadata};
use weir_codec::ipc_stream::{IpcMessage, IpcStreamDecoder};
use weir_provider::schema::{arrow_schema_of, delta_schema_for};
use weir_provider::{StreamName, Table};

use crate::auth::Principal;
use crate::ingest::{Incoming, Ingest, Protocol, Replies, Requests, Rows, StreamSlot, table_name};
use crate::metadata::{CATALOG, SCHEMA};
use crate::records::{RecordDecoder, RecordsHeader};
use crate::{Error, Result};

pub use weir_codec::flight::{STREAM_NAME_HEADER, TABLE_HEADER};

/// The response stream of `DoPut`.
pub type AckStream = Replies<PutResult>;

impl Ingest {
    /// Serves one `DoPut` stream.
    pub async fn do_put(&self, request: Request<PeekableFlightDataStream>) -> Result<AckStream> {
        let principal = self.principal(request.metadata())?;
        let slot = self.open_slot()?;
        let header_value = |name: &str| {
            request
                .metadata()
                .get(name)
                .map(|v| v.to_str().map(str::to_string))
        };
        let header = header_value(TABLE_HEADER).and_then(|v| v.ok());
        let stream_name = match header_value(STREAM_NAME_HEADER) {
            None => None,
            Some(Ok(name)) => {
                Some(StreamName::parse(&name).map_err(|e| Error::BadRequest(e.to_string()))?)
            }
            Some(Err(_)) => {
                return Err(Error::BadRequest(format!(
                    "the {STREAM_NAME_HEADER} header must be printable ASCII"
                )));
            }
        };
        let mut input = request.into_inner();
        let descriptor_path = match input.peek().await {
            Some(Ok(first)) => first
                .flight_descriptor
                .as_ref()
                .and_then(|d| d.path.last().cloned()),
            Some(Err(status)) => return Err(Error::from_input(status.clone())),
            None => return Err(Error::BadRequest("empty DoPut stream".into())),
        };
        let name = header.or(descriptor_path).ok_or_else(|| {
            Error::BadRequest(format!(
                "no table named: set the descriptor path or the {TABLE_HEADER} header"
            ))
        })?;
        let table = self.table(&name)?;
        principal.check_write(table.name())?;

        let first_metadata = match input.peek().await {
            Some(Ok(first)) => first.app_metadata.clone(),
            _ => bytes::Bytes::new(),
        };
        let source = match RecordsHeader::parse(&first_metadata)? {
            Some(header) => {
                let decoder = header.decoder(&table, self.limits())?;
                let _header_message = input.next().await;
                Source::Records { input, decoder }
            }
            None => {
                let (schema, decoder) = self
                    .read_schema(
                        &mut input,
                        "the first DoPut message must carry the schema or a records header",
                    )
                    .await?;
                table.conform(&RecordBatch::new_empty(schema), &self.limits())?;
                Source::Arrow { input, decoder }
            }
        };

        let session = self.open_session(table, stream_name).await?;
        let ready = ack(session.resumed_at().get(), 0);
        self.run(slot, session, source, Flight, vec![ready]).await
    }

    /// Reads an Arrow stream's first message, its schema; `not_schema` is
    /// the error when it is something else. Returns the decoder that reads
    /// the rest.
    async fn read_schema(
        &self,
        input: &mut PeekableFlightDataStream,
        not_schema: &str,
    ) -> Result<(arrow::datatypes::SchemaRef, IpcStreamDecoder)> {
        let mut decoder = IpcStreamDecoder::new(self.limits());
        let first = match input.next().await {
            Some(Ok(first)) => first,
            Some(Err(status)) => return Err(Error::from_input(status)),
            None => return Err(Error::BadRequest("empty DoPut stream".into())),
        };
        match decoder.decode(&first.data_header, first.data_body)? {
            IpcMessage::Schema(schema) => Ok((schema, decoder)),
            _ => Err(Error::BadRequest(not_schema.into())),
        }
    }

    /// FlightSQL bulk ingest (`CommandStatementIngest`, ADBC's
    /// `adbc_ingest`): Arrow batches into a table, created from their
    /// schema if asked, through the same layer as every stream. Returns the
    /// rows once all of them are durable (and visible).
    pub async fn bulk_ingest(
        &self,
        principal: &Principal,
        command: &CommandStatementIngest,
        mut input: PeekableFlightDataStream,
    ) -> Result<i64> {
        use arrow_flight::sql::{TableExistsOption, TableNotExistOption};
        let slot = self.open_slot()?;
        if command.temporary || command.transaction_id.is_some() {
            return Err(Error::BadRequest(
                "temporary tables and transactions are not supported".into(),
            ));
        }
        if self.shutting_down() {
            return Err(Error::ShuttingDown);
        }
        // weir has one catalog and one schema, as GetCatalogs and
        // GetDbSchemas say.
        let elsewhere =
            |given: &Option<String>, ours: &str| given.as_deref().is_some_and(|g| g != ours);
        if elsewhere(&command.catalog, CATALOG) || elsewhere(&command.schema, SCHEMA) {
            return Err(Error::BadRequest(format!(
                "weir has one catalog and schema, {CATALOG}.{SCHEMA}"
            )));
        }
        let (if_not_exist, if_exists) = match command.table_definition_options {
            Some(options) => (
                TableNotExistOption::try_from(options.if_not_exist)
                    .unwrap_or(TableNotExistOption::Unspecified),
                TableExistsOption::try_from(options.if_exists)
                    .unwrap_or(TableExistsOption::Unspecified),
            ),
            None => (
                TableNotExistOption::Unspecified,
                TableExistsOption::Unspecified,
            ),
        };
        if if_not_exist == TableNotExistOption::Unspecified
            || if_exists == TableExistsOption::Unspecified
        {
            return Err(Error::BadRequest(
                "bulk ingest needs table_definition_options: if_not_exist and if_exists".into(),
            ));
        }
        if if_exists == TableExistsOption::Replace {
            return Err(Error::BadRequest(
                "replace is not supported: rows are appended to a table, never rewritten; \
                 drop the table first"
                    .into(),
            ));
        }
        let (schema, decoder) = self
            .read_schema(
                &mut input,
                "the first message of a bulk ingest must carry the schema",
            )
            .await?;
        let name = table_name(&command.table)?;
        principal.check_write(&name)?;
        let empty = RecordBatch::new_empty(Arc::clone(&schema));
        let table = match self.catalog().table(&name) {
            Ok(_) if if_exists == TableExistsOption::Fail => {
                return Err(weir_provider::Error::TableExists { name }.into());
            }
            Ok(table) => table,
            Err(weir_provider::Error::TableNotFound { .. })
                if if_not_exist == TableNotExistOption::Create =>
            {
                principal.check_ddl()?;
                // The data must fit the table it makes, before it is made
                // (a nested large list, say, is stored as a list).
                let stored = arrow_schema_of(&delta_schema_for(&schema)?)?;
                weir_codec::conform(&empty, &stored, &self.limits())?;
                let append = if_exists == TableExistsOption::Append;
                self.catalog().create_table(&name, &schema, append).await?
            }
            Err(e) => return Err(e.into()),
        };
        table.conform(&empty, &self.limits())?;
        let session = self.open_session(table, None).await?;
        let replies = self
            .run(
                slot,
                session,
                Source::Arrow { input, decoder },
                Flight,
                vec![],
            )
            .await?;
        acked_rows(replies).await.map_err(|(status, rows)| {
            // Not atomic: say what of it landed.
            Error::Upstream(tonic::Status::new(
                status.code(),
                format!(
                    "{}; the {rows} rows of the batches before it were written and stay (a bulk \
                     ingest is not atomic: retrying all of it appends them again)",
                    status.message()
                ),
            ))
        })
    }

    /// Writes `batch` into table `name` as one request, all or nothing,
    /// and returns its rows once they are durable and visible: the rows of
    /// a SQL `INSERT`, gathered while holding `slot`.
    pub async fn insert(
        &self,
        slot: StreamSlot,
        principal: &Principal,
        name: &str,
        batch: RecordBatch,
    ) -> Result<i64> {
        if self.is_sink() {
            return Err(Error::BadRequest(
                "this server is a --sink: it keeps nothing, so INSERT is refused".into(),
            ));
        }
        let table = self.table(name)?;
        principal.check_write(table.name())?;
        // Checked here, so that a refusal names the column, not the
        // stream's request.
        let batch = table.conform(&batch, &self.limits())?;
        let session = self.open_session(table, None).await?;
        let replies = self
            .run(slot, session, OneBatch(Some(batch)), Flight, vec![])
            .await?;
        acked_rows(replies)
            .await
            .map_err(|(status, _)| Error::Upstream(status))
    }
}

/// Waits for the last ack of a stream the server runs for itself; its
/// rows, or the status it failed with and the rows acked before.
async fn acked_rows(mut replies: AckStream) -> Result<i64, (tonic::Status, i64)> {
    let mut rows = 0;
    while let Some(reply) = replies.next().await {
        let reply = reply.map_err(|status| (status, rows))?;
        let ack = AckMetadata::decode(&reply.app_metadata)
            .map_err(|e| (tonic::Status::internal(e), rows))?;
        rows = ack.ack_up_to_records;
    }
    Ok(rows)
}

/// The one request of an `INSERT`.
struct OneBatch(Option<RecordBatch>);

impl Requests for OneBatch {
    type Payload = RecordBatch;

    async fn next(&mut self) -> Result<Option<Incoming<RecordBatch>>> {
        Ok(self.0.take().map(|batch| Incoming {
            offset: None,
            payload: batch,
        }))
    }

    fn rows(&self, table: &Table, limits: &Limits, batch: RecordBatch) -> Result<Rows> {
        Ok(Rows {
            batch: table.conform(&batch, limits)?,
            retained: 0,
        })
    }
}

/// The `DoPut` acks.
struct Flight;

impl Protocol for Flight {
    type Message = PutResult;

    fn ack(&self, offset: i64, records: i64) -> PutResult {
        ack(offset, records)
    }

    fn closing(&self, grace: Duration, offset: i64, records: i64) -> PutResult {
        let ack = AckMetadata {
            close_stream_duration_ms: Some(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX)),
            ..AckMetadata::ack(offset, records)
        };
        PutResult {
            app_metadata: ack.encode().into(),
        }
    }
}

/// Where a stream's requests come from.
enum Source {
    /// Arrow IPC messages.
    Arrow {
        input: PeekableFlightDataStream,
        decoder: IpcStreamDecoder,
    },
    /// Protobuf or JSON records in message bodies (see [`crate::records`]).
    Records {
        input: PeekableFlightDataStream,
        decoder: RecordDecoder,
    },
}

/// One request, not yet checked against the table.
enum Payload {
    /// A decoded Arrow batch, and the size of the body its arrays share.
    Batch {
        batch: RecordBatch,
        body_bytes: usize,
    },
    /// A record batch message the decoder refused: the error is reported
    /// as this request's, naming its offset.
    Refused(Error),
    /// Protobuf or JSON records.
    Records(bytes::Bytes),
}

impl Requests for Source {
    type Payload = Payload;

    async fn next(&mut self) -> Result<Option<Incoming<Payload>>> {
        let (app_metadata, payload) = match self {
            Source::Arrow { input, decoder } => loop {
                let data = match input.next().await {
                    None => return Ok(None),
                    Some(Err(status)) => return Err(Error::from_input(status)),
                    Some(Ok(data)) => data,
                };
                let body_bytes = data.data_body.len();
                let payload = match decoder.decode(&data.data_header, data.data_body) {
                    Ok(IpcMessage::Batch(batch)) => Payload::Batch { batch, body_bytes },
                    Ok(IpcMessage::Dictionary | IpcMessage::None) => continue,
                    Ok(IpcMessage::Schema(_)) => {
                        return Err(Error::Internal(
                            "the decoder accepted a second schema".into(),
                        ));
                    }
                    // Only on failure: is this a request (named by its
                    // offset) or a schema or dictionary message?
                    Err(e) if IpcStreamDecoder::is_record_batch(&data.data_header) => {
                        Payload::Refused(e.into())
                    }
                    Err(e) => return Err(e.into()),
                };
                break (data.app_metadata, payload);
            },
            Source::Records { input, .. } => match input.next().await {
                None => return Ok(None),
                Some(Err(status)) => return Err(Error::from_input(status)),
                Some(Ok(data)) => (data.app_metadata, Payload::Records(data.data_body)),
            },
        };
        Ok(Some(Incoming {
            offset: offset_of(&app_metadata)?,
            payload,
        }))
    }

    fn rows(&self, table: &Table, limits: &Limits, payload: Payload) -> Result<Rows> {
        match (self, payload) {
            (_, Payload::Batch { batch, body_bytes }) => Ok(Rows {
                batch: table.conform(&batch, limits)?,
                retained: body_bytes,
            }),
            (_, Payload::Refused(e)) => Err(e),
            (Source::Records { decoder, .. }, Payload::Records(body)) => Ok(Rows {
                batch: decoder.decode(table, &body)?,
                retained: 0,
            }),
            (Source::Arrow { .. }, Payload::Records(_)) => Err(Error::Internal(
                "an Arrow stream produced a records payload".into(),
            )),
        }
    }
}

fn ack(offset: i64, records: i64) -> PutResult {
    PutResult {
        app_metadata: AckMetadata::ack(offset, records).encode().into(),
    }
}

/// The batch's `offset_id`; `None` when it has no metadata.
fn offset_of(app_metadata: &[u8]) -> Result<Option<i64>> {
    RequestMetadata::decode(app_metadata)
        .map(|m| m.map(|m| m.offset_id))
        .map_err(Error::BadRequest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_come_from_metadata_or_count_up() {
        assert_eq!(offset_of(b"").unwrap(), None);
        assert_eq!(offset_of(br#"{"offset_id": 9}"#).unwrap(), Some(9));
        let err = offset_of(b"{}").unwrap_err().to_string();
        assert!(err.contains("offset_id"), "{err}");
    }

    #[test]
    fn acks_are_the_zerobus_json() {
        let ack = ack(3, 120);
        let json: serde_json::Value = serde_json::from_slice(&ack.app_metadata).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"ack_up_to_offset": 3, "ack_up_to_records": 120})
        );
    }
}
