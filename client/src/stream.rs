//! Streams: offsets, the in-flight buffer and acks.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::utils::batches_to_flight_data;
use arrow_flight::{FlightData, FlightDescriptor};
use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::{Error, Result};

/// A connection to a weir server.
#[derive(Debug, Clone)]
pub struct Client {
    flight: FlightServiceClient<Channel>,
}

/// How a stream buffers.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Most batches sent but not yet acknowledged; `send` waits beyond it.
    pub max_in_flight: usize,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self { max_in_flight: 64 }
    }
}

/// The server's cumulative ack: batches `0..=offset` (`records` rows in
/// all) are durable. `offset` is -1 before the first batch is acked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub offset: i64,
    pub records: i64,
}

#[derive(Debug, Clone)]
struct AckState {
    ack: Ack,
    /// Set when the server ended the stream with an error.
    failed: Option<Arc<tonic::Status>>,
    /// Set when the ack stream ended.
    ended: bool,
}

#[derive(Deserialize)]
struct AckJson {
    ack_up_to_offset: i64,
    ack_up_to_records: i64,
}

/// One request of a stream, kept until it is acknowledged.
#[derive(Debug, Clone)]
pub enum Request {
    /// An Arrow batch.
    Batch(RecordBatch),
    /// Encoded records (see [`Client::open_records_stream`]).
    Records(Bytes),
}

/// One ordered stream of requests into a table.
#[derive(Debug)]
pub struct Stream {
    outgoing: Option<mpsc::Sender<FlightData>>,
    acks: watch::Receiver<AckState>,
    in_flight: Arc<Mutex<VecDeque<(i64, Request)>>>,
    next_offset: i64,
    options: StreamOptions,
    records: bool,
}

impl Client {
    /// Connects to `address`, e.g. `http://127.0.0.1:50051`.
    pub async fn connect(address: &str) -> Result<Self> {
        let connect_error = |reason: String| Error::Connect {
            address: address.to_string(),
            reason,
        };
        let channel = Endpoint::from_shared(address.to_string())
            .map_err(|e| connect_error(e.to_string()))?
            .connect()
            .await
            .map_err(|e| connect_error(e.to_string()))?;
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
        self.open(first, options, false).await
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
        self.open(first, options, true).await
    }

    async fn open(
        &self,
        first: FlightData,
        options: StreamOptions,
        records: bool,
    ) -> Result<Stream> {
        let (outgoing, rx) = mpsc::channel(options.max_in_flight.max(1));
        outgoing
            .send(first)
            .await
            .expect("the receiver is alive until the call starts");
        let mut flight = self.flight.clone();
        let mut responses = flight.do_put(ReceiverStream::new(rx)).await?.into_inner();
        let ready = responses
            .next()
            .await
            .ok_or_else(|| Error::Protocol("the stream ended before the ready ack".into()))??;
        let ready = parse_ack(&ready.app_metadata)?;
        if ready.offset != -1 {
            return Err(Error::Protocol(format!(
                "expected the ready ack -1, got {}",
                ready.offset
            )));
        }

        let (state, acks) = watch::channel(AckState {
            ack: ready,
            failed: None,
            ended: false,
        });
        let in_flight = Arc::new(Mutex::new(VecDeque::<(i64, Request)>::new()));
        let buffer = Arc::clone(&in_flight);
        tokio::spawn(async move {
            while let Some(response) = responses.next().await {
                let parsed = response.map_err(Arc::new).and_then(|r| {
                    parse_ack(&r.app_metadata)
                        .map_err(|e| Arc::new(tonic::Status::internal(e.to_string())))
                });
                match parsed {
                    Ok(ack) => {
                        buffer.lock().retain(|(offset, _)| *offset > ack.offset);
                        state.send_modify(|s| s.ack = ack);
                    }
                    Err(status) => {
                        state.send_modify(|s| s.failed = Some(status));
                        break;
                    }
                }
            }
            state.send_modify(|s| s.ended = true);
        });
        Ok(Stream {
            outgoing: Some(outgoing),
            acks,
            in_flight,
            next_offset: 0,
            options,
            records,
        })
    }
}

impl Stream {
    /// Sends `batch` as the stream's next offset and returns that offset.
    /// Waits while `max_in_flight` requests are unacknowledged.
    pub async fn send(&mut self, batch: RecordBatch) -> Result<i64> {
        if self.records {
            return Err(Error::Protocol(
                "this is a records stream: use send_records".into(),
            ));
        }
        let mut messages = batches_to_flight_data(&batch.schema(), vec![batch.clone()])?;
        messages.remove(0); // the schema, sent when the stream opened
        self.send_request(messages, Request::Batch(batch)).await
    }

    /// Sends encoded records (length-delimited protobuf, or JSON) as the
    /// stream's next offset and returns that offset.
    pub async fn send_records(&mut self, body: impl Into<Bytes>) -> Result<i64> {
        if !self.records {
            return Err(Error::Protocol("this is an Arrow stream: use send".into()));
        }
        let body = body.into();
        let message = FlightData::new().with_data_body(body.clone());
        self.send_request(vec![message], Request::Records(body))
            .await
    }

    /// Sends the messages of one request, the last carrying its offset.
    async fn send_request(
        &mut self,
        mut messages: Vec<FlightData>,
        request: Request,
    ) -> Result<i64> {
        let offset = self.next_offset;
        let oldest_allowed = offset - self.options.max_in_flight as i64;
        if oldest_allowed >= 0 {
            self.wait_for(oldest_allowed).await?;
        }
        self.check_failed()?;
        if let Some(last) = messages.pop() {
            let metadata = format!("{{\"offset_id\":{offset}}}");
            messages.push(last.with_app_metadata(metadata.into_bytes()));
        }
        let outgoing = self
            .outgoing
            .as_ref()
            .ok_or_else(|| Error::Unacknowledged {
                first: offset,
                last: offset,
            })?;
        self.in_flight.lock().push_back((offset, request));
        for message in messages {
            if outgoing.send(message).await.is_err() {
                self.check_failed()?;
                return Err(Error::Protocol("the server closed the stream".into()));
            }
        }
        self.next_offset += 1;
        Ok(offset)
    }

    /// Waits until batch `offset` (and so every earlier one) is acked.
    pub async fn wait_for(&self, offset: i64) -> Result<Ack> {
        let mut acks = self.acks.clone();
        let state = acks
            .wait_for(|s| s.ack.offset >= offset || s.failed.is_some() || s.ended)
            .await
            .map_err(|_| Error::Protocol("the ack reader stopped".into()))?
            .clone();
        if state.ack.offset >= offset {
            return Ok(state.ack);
        }
        if let Some(status) = state.failed {
            return Err(Error::Server(status.as_ref().clone()));
        }
        Err(Error::Unacknowledged {
            first: state.ack.offset + 1,
            last: offset,
        })
    }

    /// Waits until every batch sent so far is acked.
    pub async fn flush(&self) -> Result<Ack> {
        self.wait_for(self.next_offset - 1).await
    }

    /// The latest ack.
    pub fn acked(&self) -> Ack {
        self.acks.borrow().ack
    }

    /// Requests sent but not yet acknowledged, oldest first: what to send
    /// again on a new stream after a failure.
    pub fn unacknowledged(&self) -> Vec<(i64, Request)> {
        self.in_flight.lock().iter().cloned().collect()
    }

    /// Flushes, then ends the stream. Returns the final ack.
    pub async fn close(mut self) -> Result<Ack> {
        let ack = self.flush().await?;
        self.outgoing = None;
        Ok(ack)
    }

    fn check_failed(&self) -> Result<()> {
        match &self.acks.borrow().failed {
            Some(status) => Err(Error::Server(status.as_ref().clone())),
            None => Ok(()),
        }
    }
}

fn parse_ack(metadata: &[u8]) -> Result<Ack> {
    let json: AckJson = serde_json::from_slice(metadata)
        .map_err(|e| Error::Protocol(format!("{e}: {}", String::from_utf8_lossy(metadata))))?;
    Ok(Ack {
        offset: json.ack_up_to_offset,
        records: json.ack_up_to_records,
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
