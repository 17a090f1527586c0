//! Arrow Flight `DoPut` ingest.
//!
//! The convention (shared with the Zerobus SDKs' Arrow path, so those SDKs
//! and plain `pyarrow.flight` both work):
//!
//! 1. The table is named by the `x-databricks-zerobus-table-name` header or
//!    by the descriptor path (`FlightDescriptor::new_path(["sensors"])`). A
//!    dotted name (`catalog.schema.table`) resolves to its last part.
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
//! A bad batch ends the stream with an error naming the problem; nothing of
//! it is written, and what came before it is acked first. While a table's
//! tail (or all tails together) is over its memory budget the stream is not
//! read, so gRPC flow control pushes back on the producer.
//!
//! Every request is checked against the [`Limits`] before it is decoded or
//! cast (see [`weir_codec::limits`]), and at most `limits.max_streams`
//! streams are open at once. A stream never ends with OK while a request it
//! sent is unacknowledged: it ends with OK only after the producer finished
//! and everything is acked, and with an error otherwise (even if its task
//! failed unexpectedly).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::RecordBatch;
use arrow_flight::PutResult;
use arrow_flight::sql::server::PeekableFlightDataStream;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};
use tracing::error;
use weir_codec::Limits;
use weir_codec::ipc_stream::{IpcMessage, IpcStreamDecoder};
use weir_provider::{Catalog, StreamName, Table};
use weir_wal::PendingAppend;

use crate::records::{RecordDecoder, RecordsHeader};
use crate::session::{Admit, Durability, Session, Sessions};
use crate::{Error, Result};

/// The header naming the table, as the Zerobus SDKs send it.
pub const TABLE_HEADER: &str = "x-databricks-zerobus-table-name";

/// The header naming a resumable stream.
pub const STREAM_NAME_HEADER: &str = "x-weir-stream-name";

/// Batches accepted but not yet acked, per stream.
const MAX_UNACKED: usize = 1024;

/// The response stream of `DoPut`.
pub type AckStream = Pin<Box<dyn Stream<Item = Result<PutResult, Status>> + Send + 'static>>;

/// What every ingest stream shares: the tables, the limits and the count of
/// open streams.
#[derive(Debug, Clone)]
pub struct Ingest {
    catalog: Arc<Catalog>,
    limits: Limits,
    streams: Arc<StreamCount>,
    sessions: Arc<Sessions>,
    shutdown: watch::Receiver<bool>,
}

/// Open streams, against `limits.max_streams`.
#[derive(Debug)]
struct StreamCount {
    open: AtomicUsize,
    limit: usize,
}

/// One open stream; gives its place back when dropped.
#[derive(Debug)]
struct StreamSlot(Arc<StreamCount>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Ingest {
    /// Ingest into `catalog`; streams end when `shutdown` turns true.
    pub fn new(
        catalog: Arc<Catalog>,
        limits: Limits,
        max_streams: usize,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            catalog,
            limits,
            streams: Arc::new(StreamCount {
                open: AtomicUsize::new(0),
                limit: max_streams,
            }),
            sessions: Arc::new(Sessions::default()),
            shutdown,
        }
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.streams.open.load(Ordering::Acquire)
    }

    fn open_slot(&self) -> Result<StreamSlot> {
        let limit = self.streams.limit;
        self.streams
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < limit).then_some(open + 1)
            })
            .map(|_| StreamSlot(Arc::clone(&self.streams)))
            .map_err(|open| Error::TooManyStreams { open, limit })
    }

    /// Serves one `DoPut` stream.
    pub async fn do_put(&self, request: Request<PeekableFlightDataStream>) -> Result<AckStream> {
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
        let name = name.rsplit('.').next().unwrap_or(&name).to_string();
        let table = self.catalog.table(&name)?;

        let first_metadata = match input.peek().await {
            Some(Ok(first)) => first.app_metadata.clone(),
            _ => bytes::Bytes::new(),
        };
        let source = match RecordsHeader::parse(&first_metadata)? {
            Some(header) => {
                let decoder = header.decoder(&table, self.limits)?;
                let _header_message = input.next().await;
                Source::Records { input, decoder }
            }
            None => {
                let mut decoder = IpcStreamDecoder::new(self.limits);
                let first = match input.next().await {
                    Some(Ok(first)) => first,
                    Some(Err(status)) => return Err(Error::from_input(status)),
                    None => return Err(Error::BadRequest("empty DoPut stream".into())),
                };
                match decoder.decode(&first.data_header, first.data_body)? {
                    IpcMessage::Schema(schema) => {
                        table.conform(&RecordBatch::new_empty(schema), &self.limits)?;
                    }
                    _ => {
                        return Err(Error::BadRequest(
                            "the first DoPut message must carry the schema or a records header"
                                .into(),
                        ));
                    }
                }
                Source::Arrow { input, decoder }
            }
        };

        let session = self.sessions.open(table, stream_name).await?;
        let (acks, ack_rx) = mpsc::channel(64);
        acks.send(Ok(ack(session.resumed_at(), 0)))
            .await
            .map_err(|_| Error::ShuttingDown)?;
        let last_words = acks.clone();
        // How the stream ends when its final status could not go through
        // `acks` (a taken-over stream stops waiting for its reader): after
        // the acks, never an OK in its place.
        let (ending, ending_rx) = oneshot::channel::<Status>();
        let task = tokio::spawn(ingest(
            session,
            source,
            (acks, ending),
            self.shutdown.clone(),
            self.limits,
            slot,
        ));
        // A task that fails unexpectedly must not end the stream with OK:
        // the producer would take that as "all done".
        tokio::spawn(async move {
            if let Err(e) = task.await {
                error!(error = %e, "an ingest stream's task failed");
                let _ = last_words
                    .send(Err(Status::internal(
                        "the stream failed inside the server; reconnect and resend what was not \
                         acknowledged",
                    )))
                    .await;
            }
        });
        let ending =
            futures::stream::once(ending_rx).filter_map(|ending| async { ending.ok().map(Err) });
        Ok(Box::pin(ReceiverStream::new(ack_rx).chain(ending)))
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

impl Source {
    /// The next request's `app_metadata` and payload; `None` at the end.
    async fn next(&mut self) -> Result<Option<(bytes::Bytes, Payload)>> {
        match self {
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
                return Ok(Some((data.app_metadata, payload)));
            },
            Source::Records { input, .. } => match input.next().await {
                None => Ok(None),
                Some(Err(status)) => Err(Error::from_input(status)),
                Some(Ok(data)) => Ok(Some((data.app_metadata, Payload::Records(data.data_body)))),
            },
        }
    }

    /// Turns a payload into rows of the table's schema.
    fn rows(&self, table: &Table, limits: &Limits, payload: Payload) -> Result<RecordBatch> {
        match (self, payload) {
            (_, Payload::Batch { batch, .. }) => Ok(table.conform(&batch, limits)?),
            (_, Payload::Refused(e)) => Err(e),
            (Source::Records { decoder, .. }, Payload::Records(body)) => {
                decoder.decode(table, &body)
            }
            (Source::Arrow { .. }, Payload::Records(_)) => Err(Error::Internal(
                "an Arrow stream produced a records payload".into(),
            )),
        }
    }
}

enum Step {
    Append {
        pending: PendingAppend,
        offset: i64,
        records: i64,
    },
    /// A resend of a named stream, already durable.
    Duplicate {
        offset: i64,
        records: i64,
    },
    Fail(Status),
}

/// Reads requests, writes them, and hands their durability to the acker.
async fn ingest(
    mut session: Session,
    mut source: Source,
    acks: (
        mpsc::Sender<Result<PutResult, Status>>,
        oneshot::Sender<Status>,
    ),
    mut shutdown: watch::Receiver<bool>,
    limits: Limits,
    _slot: StreamSlot,
) {
    let table = Arc::clone(session.table());
    let name = session.name().cloned();
    let (steps, step_rx) = mpsc::channel(MAX_UNACKED);
    let acker = tokio::spawn(acknowledge(step_rx, acks, session.durability()));
    let mut records = 0i64;
    let outcome: Result<()> = loop {
        let taken_over = || Error::TakenOver {
            stream: name.as_ref().map(ToString::to_string).unwrap_or_default(),
        };
        let request = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break Err(Error::ShuttingDown),
            _ = session.taken_over() => break Err(taken_over()),
            request = async {
                table.wait_for_room().await?;
                source.next().await
            } => request,
        };
        let (app_metadata, payload) = match request {
            Ok(Some(request)) => request,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        let offset = match offset_of(&app_metadata).and_then(|o| session.admit(o)) {
            Ok(Admit::Write(offset)) => offset,
            Ok(Admit::Duplicate(offset)) => {
                if steps
                    .send(Step::Duplicate { offset, records })
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            Err(e) => break Err(e),
        };
        // An Arrow batch's arrays share the request's body: the tail is
        // charged for all of it.
        let retained = match &payload {
            Payload::Batch { body_bytes, .. } => *body_bytes,
            Payload::Refused(_) | Payload::Records(_) => 0,
        };
        let appended = match source.rows(&table, &limits, payload) {
            Ok(batch) => {
                let rows = batch.num_rows() as i64;
                let enqueued = tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|stop| *stop) => break Err(Error::ShuttingDown),
                    _ = session.taken_over() => break Err(taken_over()),
                    enqueued = table.enqueue_unsynced(
                        name.as_ref(), offset, batch, retained, Some(session.wal_epoch()),
                    ) => enqueued,
                };
                enqueued.map(|pending| (pending, rows)).map_err(Error::from)
            }
            Err(e) => Err(e),
        };
        let (pending, rows) = match appended {
            Ok(done) => done,
            Err(e) => {
                break Err(Error::Batch {
                    offset,
                    source: Box::new(e),
                });
            }
        };
        records += rows;
        let step = Step::Append {
            pending,
            offset,
            records,
        };
        if steps.send(step).await.is_err() {
            return;
        }
    };
    if let Err(e) = outcome {
        let _ = steps.send(Step::Fail(e.into())).await;
    }
    drop(steps);
    let _ = acker.await;
}

/// Awaits durability in stream order, records it, and sends cumulative
/// acks. Once the stream is taken over it still records what becomes
/// durable (the newer connection resumes after it) but stops waiting for
/// the producer to read (it may be gone without the server knowing): the
/// stream then ends with its acks so far and ABORTED, through `ending`.
async fn acknowledge(
    mut steps: mpsc::Receiver<Step>,
    (acks, ending): (
        mpsc::Sender<Result<PutResult, Status>>,
        oneshot::Sender<Status>,
    ),
    durability: Durability,
) {
    let mut sending = true;
    let mut unsent: Option<Status> = None;
    while let Some(step) = steps.recv().await {
        let reply = match step {
            Step::Append {
                pending,
                offset,
                records,
            } => match pending.await {
                Ok(_) => {
                    durability.durable(offset);
                    Ok(ack(offset, records))
                }
                Err(e) => Err(Status::from(Error::Wal(e))),
            },
            Step::Duplicate { offset, records } => Ok(ack(offset, records)),
            Step::Fail(status) => Err(status),
        };
        let last = reply.is_err();
        if sending {
            let final_status = reply.as_ref().err().cloned();
            sending = tokio::select! {
                biased;
                sent = acks.send(reply) => sent.is_ok(),
                _ = durability.taken_over() => {
                    unsent = Some(final_status.unwrap_or_else(|| Error::TakenOver {
                        stream: durability.name().unwrap_or_default(),
                    }.into()));
                    false
                }
            };
        }
        if last {
            break;
        }
    }
    if let Some(status) = unsent {
        let _ = ending.send(status);
    }
}

fn ack(offset: i64, records: i64) -> PutResult {
    let json = serde_json::json!({
        "ack_up_to_offset": offset,
        "ack_up_to_records": records,
    });
    PutResult {
        app_metadata: json.to_string().into(),
    }
}

#[derive(Deserialize)]
struct BatchMetadata {
    offset_id: i64,
}

/// The batch's `offset_id`; `None` when it has no metadata.
fn offset_of(app_metadata: &[u8]) -> Result<Option<i64>> {
    if app_metadata.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice::<BatchMetadata>(app_metadata)
        .map(|m| Some(m.offset_id))
        .map_err(|e| {
            Error::BadRequest(format!(
                "batch app_metadata must be JSON {{\"offset_id\": n}}: {e}"
            ))
        })
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
