//! Streams: offsets, the in-flight buffer, acks, and reconnecting.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::utils::batches_to_flight_data;
use arrow_flight::{FlightData, FlightDescriptor};
use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use weir_codec::flight::{AckMetadata, RequestMetadata};

use crate::{ConnectOptions, Error, Result};

/// The header naming a resumable stream (weir's ingest convention).
pub use weir_codec::flight::STREAM_NAME_HEADER;

/// A connection to a weir server.
#[derive(Debug, Clone)]
pub struct Client {
    flight: FlightServiceClient<Channel>,
}

/// How a stream buffers, and how it recovers from failures.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Most batches sent but not yet acknowledged; `send` waits beyond it.
    pub max_in_flight: usize,
    /// The stream's name (the `x-weir-stream-name` header), for exactly
    /// once across reconnects and server restarts: its offsets go on from
    /// where the server says the stream is durable, and resent requests
    /// are not written twice. `None`: an anonymous stream, numbered from 0
    /// on every connection, at least once on resend.
    pub name: Option<String>,
    /// How often the stream reconnects after a failure the server or the
    /// network may recover from (UNAVAILABLE, UNKNOWN, INTERNAL, a lost
    /// connection) before it gives up; 0 turns reconnecting off. Each
    /// reconnect resends every unacknowledged request.
    pub reconnect_attempts: u32,
    /// The wait before the first reconnect; it doubles up to 5 s.
    pub reconnect_backoff: Duration,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            max_in_flight: 64,
            name: None,
            reconnect_attempts: 10,
            reconnect_backoff: Duration::from_millis(100),
        }
    }
}

/// The longest wait between two reconnects.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The server's cumulative ack: requests up to `offset` are durable. For
/// an anonymous stream `offset` counts from 0 at the stream's start (across
/// reconnects); for a named stream it is the stream's own offset. `records`
/// is the rows acked on the current connection (a reconnect starts it at
/// 0). `offset` is -1 (or, for a named stream, the offset it resumed
/// after) before the first request is acked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub offset: i64,
    pub records: i64,
}

#[derive(Debug, Clone)]
struct AckState {
    ack: Ack,
    /// Set when the server ended the connection with an error.
    failed: Option<Arc<tonic::Status>>,
    /// Set when the ack stream ended.
    ended: bool,
}

/// One request of a stream, kept until it is acknowledged.
#[derive(Debug, Clone)]
pub enum Request {
    /// An Arrow batch.
    Batch(RecordBatch),
    /// Encoded records (see [`Client::open_records_stream`]).
    Records(Bytes),
}

/// Requests sent and not yet acknowledged, by offset, oldest first.
type InFlight = Arc<Mutex<VecDeque<(i64, Request)>>>;

/// One `DoPut` call of a stream.
#[derive(Debug)]
struct Connection {
    outgoing: mpsc::Sender<FlightData>,
    acks: watch::Receiver<AckState>,
    /// The stream offset of this call's wire offset 0 (0 for a named
    /// stream, whose wire offsets are its own).
    base: i64,
}

/// One ordered stream of requests into a table. It reconnects on its own
/// (see [`StreamOptions::reconnect_attempts`]).
#[derive(Debug)]
pub struct Stream {
    client: Client,
    /// The first message of every call: the schema or the records header,
    /// with the table's descriptor.
    first: FlightData,
    connection: Option<Connection>,
    in_flight: InFlight,
    next_offset: i64,
    /// The named stream's durable offset when it first opened.
    resumed_at: i64,
    /// The latest ack, kept across reconnects.
    acked: Ack,
    /// Why the stream stopped, once it gave up.
    failed: Option<tonic::Status>,
    /// Reconnects since the ack last moved on: a call that reconnects but
    /// then fails again before any ack counts against the same budget.
    reconnects: u32,
    options: StreamOptions,
    records: bool,
}

impl Client {
    /// Connects to `address`, e.g. `http://127.0.0.1:50051`.
    pub async fn connect(address: &str) -> Result<Self> {
        // The channel connects again by itself when a call finds its
        // connection gone, so a stream reconnecting after a server restart
        // needs no new client.
        let channel = crate::query::channel(address, &ConnectOptions::default()).await?;
        let flight = FlightServiceClient::new(channel)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
        Ok(Self { flight })
    }

    /// Opens a stream to `table` for batches of `schema`. Returns once the
    /// server has accepted the table and schema (its ready ack).
    pub async fn open_stream(
        &self,
        table: &str,
        schema: SchemaRef,
        options: StreamOptions,
    ) -> Result<Stream> {
        let descriptor = FlightDescriptor::new_path(vec![table.to_string()]);
        let first = batches_to_flight_data(&schema, vec![])?
            .into_iter()
            .next()
            .expect("the schema message")
            .with_descriptor(descriptor);
        Stream::open(self.clone(), first, options, false).await
    }

    /// Opens a stream of protobuf or JSON records to `table`. `header` is
    /// the records header of weir's ingest convention, for example
    /// `{"format": "json"}` or `{"format": "protobuf", "proto": "...",
    /// "message": "Reading"}`; the server checks it against the table
    /// before its ready ack. Send bodies with [`Stream::send_records`].
    pub async fn open_records_stream(
        &self,
        table: &str,
        header: &serde_json::Value,
        options: StreamOptions,
    ) -> Result<Stream> {
        let first = FlightData::new()
            .with_descriptor(FlightDescriptor::new_path(vec![table.to_string()]))
            .with_app_metadata(header.to_string().into_bytes());
        Stream::open(self.clone(), first, options, true).await
    }

    /// Starts one `DoPut` call and waits for its ready ack.
    async fn call(
        &self,
        first: FlightData,
        options: &StreamOptions,
        in_flight: &InFlight,
        base: i64,
    ) -> Result<(Connection, Ack)> {
        let (outgoing, rx) = mpsc::channel(options.max_in_flight.max(1));
        outgoing
            .send(first)
            .await
            .expect("the receiver is alive until the call starts");
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(name) = &options.name {
            let value = name
                .parse()
                .map_err(|_| Error::Protocol(format!("stream name {name:?} is not ASCII")))?;
            request.metadata_mut().insert(STREAM_NAME_HEADER, value);
        }
        let mut flight = self.flight.clone();
        let mut responses = flight.do_put(request).await?.into_inner();
        let ready = responses
            .next()
            .await
            .ok_or_else(|| Error::Protocol("the stream ended before the ready ack".into()))??;
        let ready = parse_ack(&ready.app_metadata)?;
        if options.name.is_none() && ready.offset != -1 {
            return Err(Error::Protocol(format!(
                "expected the ready ack -1, got {}",
                ready.offset
            )));
        }
        let ready = Ack {
            offset: base + ready.offset,
            records: 0,
        };
        let (state, acks) = watch::channel(AckState {
            ack: ready,
            failed: None,
            ended: false,
        });
        let buffer = Arc::clone(in_flight);
        tokio::spawn(async move {
            while let Some(response) = responses.next().await {
                let parsed = response.map_err(Arc::new).and_then(|r| {
                    parse_ack(&r.app_metadata)
                        .map_err(|e| Arc::new(tonic::Status::internal(e.to_string())))
                });
                match parsed {
                    Ok(ack) => {
                        let offset = base + ack.offset;
                        buffer.lock().retain(|(o, _)| *o > offset);
                        state.send_modify(|s| {
                            s.ack = Ack {
                                offset: offset.max(s.ack.offset),
                                records: ack.records,
                            }
                        });
                    }
                    Err(status) => {
                        state.send_modify(|s| s.failed = Some(status));
                        break;
                    }
                }
            }
            state.send_modify(|s| s.ended = true);
        });
        let connection = Connection {
            outgoing,
            acks,
            base,
        };
        Ok((connection, ready))
    }
}

impl Stream {
    async fn open(
        client: Client,
        first: FlightData,
        options: StreamOptions,
        records: bool,
    ) -> Result<Stream> {
        let in_flight = InFlight::default();
        let (connection, ready) = client.call(first.clone(), &options, &in_flight, 0).await?;
        Ok(Stream {
            client,
            first,
            connection: Some(connection),
            in_flight,
            next_offset: ready.offset + 1,
            resumed_at: ready.offset,
            acked: ready,
            failed: None,
            reconnects: 0,
            options,
            records,
        })
    }

    /// For a named stream, the offset the server had durable when the
    /// stream opened (-1 for a new name): the first `send` gets the offset
    /// after it. -1 for an anonymous stream.
    pub fn resumed_at(&self) -> i64 {
        self.resumed_at
    }

    /// The offset the next `send` gets.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// Sends `batch` as the stream's next offset and returns that offset.
    /// Waits while `max_in_flight` requests are unacknowledged.
    pub async fn send(&mut self, batch: RecordBatch) -> Result<i64> {
        if self.records {
            return Err(Error::Protocol(
                "this is a records stream: use send_records".into(),
            ));
        }
        self.send_request(Request::Batch(batch)).await
    }

    /// Sends encoded records (length-delimited protobuf, or JSON) as the
    /// stream's next offset and returns that offset.
    pub async fn send_records(&mut self, body: impl Into<Bytes>) -> Result<i64> {
        if !self.records {
            return Err(Error::Protocol("this is an Arrow stream: use send".into()));
        }
        self.send_request(Request::Records(body.into())).await
    }

    async fn send_request(&mut self, request: Request) -> Result<i64> {
        let offset = self.next_offset;
        let oldest_allowed = offset - self.options.max_in_flight as i64;
        if oldest_allowed > self.resumed_at {
            self.wait_for(oldest_allowed).await?;
        }
        self.in_flight.lock().push_back((offset, request.clone()));
        self.next_offset += 1;
        if self.transmit(offset, &request).await.is_err() {
            // The call broke: the request is buffered, and the next wait
            // reconnects and resends it, or reports why the call ended.
            self.settle().await?;
        }
        Ok(offset)
    }

    /// Sends one request on the current call.
    async fn transmit(&self, offset: i64, request: &Request) -> std::result::Result<(), ()> {
        let connection = self.connection.as_ref().ok_or(())?;
        let mut messages = match request {
            Request::Batch(batch) => {
                let mut messages =
                    batches_to_flight_data(&batch.schema(), vec![batch.clone()]).map_err(|_| ())?;
                messages.remove(0); // the schema, sent when the call opened
                messages
            }
            Request::Records(body) => vec![FlightData::new().with_data_body(body.clone())],
        };
        if let Some(last) = messages.pop() {
            let wire = offset - connection.base;
            let metadata = RequestMetadata { offset_id: wire };
            messages.push(last.with_app_metadata(metadata.encode()));
        }
        for message in messages {
            connection.outgoing.send(message).await.map_err(|_| ())?;
        }
        Ok(())
    }

    /// Waits until request `offset` (and so every earlier one) is acked,
    /// reconnecting and resending if the call fails in a way worth a retry.
    pub async fn wait_for(&mut self, offset: i64) -> Result<Ack> {
        loop {
            let Some(connection) = &self.connection else {
                return Err(self.closed_error(offset));
            };
            let mut acks = connection.acks.clone();
            let state = acks
                .wait_for(|s| s.ack.offset >= offset || s.failed.is_some() || s.ended)
                .await
                .map_err(|_| Error::Protocol("the ack reader stopped".into()))?
                .clone();
            if state.ack.offset > self.acked.offset {
                self.reconnects = 0;
            }
            self.acked = state.ack;
            if state.ack.offset >= offset {
                return Ok(state.ack);
            }
            self.recover(state).await?;
        }
    }

    /// Waits until every request sent so far is acked.
    pub async fn flush(&mut self) -> Result<Ack> {
        self.wait_for(self.next_offset - 1).await
    }

    /// The latest ack.
    pub fn acked(&self) -> Ack {
        match &self.connection {
            Some(connection) => connection.acks.borrow().ack,
            None => self.acked,
        }
    }

    /// Requests sent but not yet acknowledged, oldest first.
    pub fn unacknowledged(&self) -> Vec<(i64, Request)> {
        self.in_flight.lock().iter().cloned().collect()
    }

    /// Flushes, then ends the stream. Returns the final ack.
    pub async fn close(mut self) -> Result<Ack> {
        let ack = self.flush().await?;
        self.connection = None;
        Ok(ack)
    }

    /// Why a stream without a call cannot ack `offset`.
    fn closed_error(&self, offset: i64) -> Error {
        match &self.failed {
            Some(status) => Error::Server(status.clone()),
            None => Error::Unacknowledged {
                first: self.acked.offset + 1,
                last: offset,
            },
        }
    }

    /// After a failed send: waits for the call's outcome and recovers.
    async fn settle(&mut self) -> Result<()> {
        let Some(connection) = &self.connection else {
            return Err(self.closed_error(self.next_offset - 1));
        };
        let mut acks = connection.acks.clone();
        let state = acks
            .wait_for(|s| s.failed.is_some() || s.ended)
            .await
            .map_err(|_| Error::Protocol("the ack reader stopped".into()))?
            .clone();
        self.recover(state).await
    }

    /// The call ended (`state`) with requests unacknowledged: reconnects
    /// and resends them if the failure is worth a retry, else reports it.
    async fn recover(&mut self, state: AckState) -> Result<()> {
        self.connection = None;
        let failure = match &state.failed {
            Some(status) if !retryable(status.code()) => {
                return Err(self.give_up(Error::Server(status.as_ref().clone())));
            }
            Some(status) => Error::Server(status.as_ref().clone()),
            None => Error::Unacknowledged {
                first: state.ack.offset + 1,
                last: self.next_offset - 1,
            },
        };
        let mut last = failure;
        while self.reconnects < self.options.reconnect_attempts {
            let doublings = self.reconnects.min(16);
            let backoff = (self.options.reconnect_backoff * (1 << doublings)).min(MAX_BACKOFF);
            self.reconnects += 1;
            tokio::time::sleep(backoff).await;
            match self.reconnect().await {
                Ok(()) => return Ok(()),
                Err(Error::Server(status)) if !retryable(status.code()) => {
                    return Err(self.give_up(Error::Server(status)));
                }
                Err(e @ Error::NameInUse { .. }) => return Err(self.give_up(e)),
                Err(e) => {
                    self.connection = None;
                    last = e;
                }
            }
        }
        Err(self.give_up(last))
    }

    /// Stops the stream for good with `error`, which later calls report.
    fn give_up(&mut self, error: Error) -> Error {
        self.connection = None;
        if let Error::Server(status) = &error {
            self.failed = Some(status.clone());
        }
        error
    }

    /// Opens a new call and resends every unacknowledged request on it.
    async fn reconnect(&mut self) -> Result<()> {
        // One snapshot: an older call's ack reader may still be trimming
        // the buffer. An anonymous stream's new call numbers from 0 at its
        // first request.
        let mut pending = self.unacknowledged();
        let base = match &self.options.name {
            Some(_) => 0,
            None => pending.first().map_or(self.next_offset, |(o, _)| *o),
        };
        let (connection, ready) = self
            .client
            .call(self.first.clone(), &self.options, &self.in_flight, base)
            .await?;
        if let Some(name) = &self.options.name {
            let sent = self.next_offset - 1;
            if ready.offset > sent {
                // Someone else writes under this name: going on would
                // take their offsets for ours.
                return Err(Error::NameInUse {
                    name: name.clone(),
                    durable: ready.offset,
                    sent,
                });
            }
            // Durable before the call broke, unacked only because the ack
            // was lost: the server has them.
            pending.retain(|(o, _)| *o > ready.offset);
            self.in_flight.lock().retain(|(o, _)| *o > ready.offset);
        }
        self.connection = Some(connection);
        for (offset, request) in pending {
            if self.transmit(offset, &request).await.is_err() {
                return Err(Error::Protocol(
                    "the new call closed during the resend".into(),
                ));
            }
        }
        Ok(())
    }
}

/// Whether a stream that ended with `code` is worth reconnecting.
fn retryable(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal
    )
}

/// An ack; a notice that the server will close the stream is an ack too
/// (the stream reconnects once the server ends it).
fn parse_ack(metadata: &[u8]) -> Result<Ack> {
    let ack = AckMetadata::decode(metadata).map_err(Error::Protocol)?;
    Ok(Ack {
        offset: ack.ack_up_to_offset,
        records: ack.ack_up_to_records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_parse() {
        let ack = parse_ack(br#"{"ack_up_to_offset": 4, "ack_up_to_records": 50}"#).unwrap();
        assert_eq!(
            ack,
            Ack {
                offset: 4,
                records: 50
            }
        );
        assert!(matches!(parse_ack(b"{}"), Err(Error::Protocol(_))));
    }
}
