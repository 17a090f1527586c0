//! The ingest layer every producer protocol shares: Arrow Flight `DoPut`
//! ([`crate::doput`]) and the Zerobus service ([`crate::zerobus`]) are
//! adapters over it.
//!
//! An adapter opens a stream ([`Ingest::open_slot`], a table by
//! [`table_name`], a [`Session`]), then hands the layer its requests (a
//! [`Requests`]) and the way its protocol says things (a [`Protocol`]).
//! [`Ingest::run`] does the rest, the same for every protocol:
//!
//! - **Sequencing.** Each request has an offset, the next one when the
//!   protocol leaves it out; the session admits it (in order, resends of a
//!   named stream acknowledged without being written; see
//!   [`crate::session`]).
//! - **All or nothing.** A request is decoded and checked against the table
//!   before anything of it is written. A bad request ends the stream with
//!   an error naming its offset; nothing of it lands, and what came before
//!   it is acknowledged first.
//! - **Acks.** Once a request is in the WAL and fsynced, the layer acks it:
//!   cumulative, in stream order, never beyond what was received.
//! - **Back-pressure.** While a table's tail (or all tails together) is
//!   over its memory budget the stream is not read, so the transport's flow
//!   control pushes back on the producer; at most [`MAX_UNACKED`] requests
//!   wait for durability per stream.
//! - **Ending.** A stream ends with OK only after the producer finished and
//!   everything is acked, and with an error otherwise, even if its task
//!   failed unexpectedly: a producer takes OK as "all done".
//! - **Drain.** When the server shuts down, each stream is told it will be
//!   closed ([`Protocol::closing`]), keeps being read and acked for
//!   [`DRAIN_GRACE`], and then ends with UNAVAILABLE: the producer moves to
//!   a new stream and resends what was not acknowledged.
//! - **Takeover.** A named stream taken over by a newer connection stops
//!   reading, acks what became durable and ends with ABORTED.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arrow::array::RecordBatch;
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::error;
use weir_codec::Limits;
use weir_provider::{Catalog, StreamName, Table};
use weir_wal::PendingAppend;

use crate::auth::{Auth, Principal};
use crate::session::{Admit, Durability, Offset, Session, Sessions};
use crate::{Error, Result};

/// Requests accepted but not yet acked, per stream.
pub const MAX_UNACKED: usize = 1024;

/// How long a stream is still read and acked after the server said it
/// will close it.
pub const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// The replies of one stream, as its protocol's messages.
pub type Replies<M> = Pin<Box<dyn Stream<Item = Result<M, Status>> + Send + 'static>>;

/// The weir table a producer's table name means: the last part of a
/// dotted name (`catalog.schema.table` is `table`), lower-cased. The same
/// rule on every ingest path.
pub fn table_name(name: &str) -> Result<String> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(Error::BadRequest(format!(
            "table name {:?} is not of the form table, schema.table or catalog.schema.table",
            weir_codec::prefix(name, 300)
        )));
    }
    Ok(parts[parts.len() - 1].to_ascii_lowercase())
}

/// One request of a stream, as its adapter read it.
#[derive(Debug)]
pub struct Incoming<P> {
    /// The offset the producer gave it; `None`: the next.
    pub offset: Option<i64>,
    pub payload: P,
}

/// A request's rows, in the table's schema.
#[derive(Debug)]
pub struct Rows {
    pub batch: RecordBatch,
    /// Bytes of the request that the rows keep alive beyond their own
    /// arrays (an Arrow batch's arrays share the request's body); the tail
    /// is charged for them.
    pub retained: usize,
}

/// A stream's requests, read and decoded by a protocol adapter.
pub trait Requests: Send + 'static {
    /// A request as read, before it is checked against the table.
    type Payload: Send + 'static;

    /// The next request; `None` once the producer finished.
    fn next(&mut self) -> impl Future<Output = Result<Option<Incoming<Self::Payload>>>> + Send;

    /// Turns a payload into rows of `table`, checked against `limits`.
    fn rows(&self, table: &Table, limits: &Limits, payload: Self::Payload) -> Result<Rows>;
}

/// How a protocol says what the layer tells its producer.
pub trait Protocol: Send + Sync + 'static {
    type Message: Send + 'static;

    /// Every request up to `offset` is durable; `records` rows in all on
    /// this connection.
    fn ack(&self, offset: i64, records: i64) -> Self::Message;

    /// The server will end the stream after `grace`: move to a new one.
    /// `offset` and `records` are the last ack's, for protocols that say
    /// it in the same message.
    fn closing(&self, grace: Duration, offset: i64, records: i64) -> Self::Message;
}

/// What every ingest stream shares: the tables, the limits, the named
/// streams' sessions and the count of open streams.
#[derive(Debug, Clone)]
pub struct Ingest {
    catalog: Arc<Catalog>,
    auth: Option<Arc<Auth>>,
    limits: Limits,
    streams: Arc<StreamCount>,
    sessions: Arc<Sessions>,
    shutdown: watch::Receiver<bool>,
    /// Acknowledge decoded requests without writing them (`Config::sink`).
    sink: bool,
}

/// Open streams, against `limits.max_streams`.
#[derive(Debug)]
struct StreamCount {
    open: AtomicUsize,
    limit: usize,
}

/// One open stream; gives its place back when dropped.
#[derive(Debug)]
pub struct StreamSlot(Arc<StreamCount>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Ingest {
    /// Ingest into `catalog`; streams drain when `shutdown` turns true.
    pub fn new(
        catalog: Arc<Catalog>,
        auth: Option<Arc<Auth>>,
        sessions: Sessions,
        (limits, max_streams): (Limits, usize),
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            catalog,
            auth,
            limits,
            streams: Arc::new(StreamCount {
                open: AtomicUsize::new(0),
                limit: max_streams,
            }),
            sessions: Arc::new(sessions),
            shutdown,
            sink: false,
        }
    }

    /// With `sink`, requests are decoded and checked, then acknowledged
    /// and discarded: nothing is written (see [`crate::Config::sink`]).
    pub fn with_sink(mut self, sink: bool) -> Self {
        self.sink = sink;
        self
    }

    /// Whether requests are discarded (see [`Ingest::with_sink`]).
    pub fn is_sink(&self) -> bool {
        self.sink
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.streams.open.load(Ordering::Acquire)
    }

    /// Whether the server is shutting down.
    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// The tables.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Who a call is from (see [`crate::auth`]): UNAUTHENTICATED without
    /// a valid token when authentication is on.
    pub fn principal(&self, metadata: &tonic::metadata::MetadataMap) -> Result<Principal> {
        crate::auth::principal(self.auth.as_deref(), metadata)
    }

    /// The request limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Takes one of the `limits.max_streams` places, for as long as the
    /// slot lives.
    pub fn open_slot(&self) -> Result<StreamSlot> {
        let limit = self.streams.limit;
        self.streams
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < limit).then_some(open + 1)
            })
            .map(|_| StreamSlot(Arc::clone(&self.streams)))
            .map_err(|open| Error::TooManyStreams { open, limit })
    }

    /// The table a producer's name means (see [`table_name`]).
    pub fn table(&self, name: &str) -> Result<Arc<Table>> {
        Ok(self.catalog.table(&table_name(name)?)?)
    }

    /// Retires the named stream `name` for good (see [`Sessions::retire`]).
    pub async fn retire(&self, table: Arc<Table>, name: StreamName) -> Result<()> {
        self.sessions.retire(table, name).await
    }

    /// Opens a session of the stream `name` (anonymous if `None`).
    pub async fn open_session(
        &self,
        table: Arc<Table>,
        name: Option<StreamName>,
    ) -> Result<Session> {
        self.sessions.open(table, name).await
    }

    /// Runs a stream: sends `opening` (the protocol's first replies), then
    /// reads, writes and acks `requests` until the producer finishes or
    /// the stream fails; see the module docs.
    pub async fn run<R: Requests, P: Protocol>(
        &self,
        slot: StreamSlot,
        session: Session,
        requests: R,
        protocol: P,
        opening: Vec<P::Message>,
    ) -> Result<Replies<P::Message>> {
        let (acks, ack_rx) = mpsc::channel(64);
        for message in opening {
            acks.send(Ok(message))
                .await
                .map_err(|_| Error::ShuttingDown)?;
        }
        let last_words = acks.clone();
        // How the stream ends when its final status could not go through
        // `acks` (a taken-over stream stops waiting for its reader): after
        // the acks, never an OK in its place.
        let (ending, ending_rx) = oneshot::channel::<Status>();
        let stream = StreamTask {
            session,
            requests,
            protocol: Arc::new(protocol),
            limits: self.limits,
            shutdown: self.shutdown.clone(),
            sink: self.sink,
            _slot: slot,
        };
        let task = tokio::spawn(stream.run((acks, ending)));
        // A task that fails unexpectedly must not end the stream with OK:
        // the producer would take that as "all done".
        tokio::spawn(async move {
            if let Err(e) = task.await {
                error!(error = %e, "an ingest stream's task failed");
                let _ = last_words.send(Err(failed_inside())).await;
            }
        });
        let ending =
            futures::stream::once(ending_rx).filter_map(|ending| async { ending.ok().map(Err) });
        Ok(Box::pin(ReceiverStream::new(ack_rx).chain(ending)))
    }
}

/// What the acker sends, in stream order.
enum Step {
    Append {
        pending: PendingAppend,
        offset: Offset,
        records: i64,
    },
    /// A request with nothing to wait for: a resend of a named stream,
    /// already durable, or one a sink decoded and dropped.
    Settled {
        offset: Offset,
        records: i64,
    },
    /// The server will end the stream after this long.
    Closing(Duration),
    Fail(Status),
}

type AckSender<M> = (mpsc::Sender<Result<M, Status>>, oneshot::Sender<Status>);

/// The last ack sent: its offset and the rows up to it on this connection.
#[derive(Debug, Clone, Copy)]
struct LastAck {
    offset: Offset,
    records: i64,
}

struct StreamTask<R, P> {
    session: Session,
    requests: R,
    protocol: Arc<P>,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
    sink: bool,
    _slot: StreamSlot,
}

impl<R: Requests, P: Protocol> StreamTask<R, P> {
    /// Reads requests, writes them, and hands their durability to the
    /// acker.
    async fn run(mut self, acks: AckSender<P::Message>) {
        let table = Arc::clone(self.session.table());
        let name = self.session.name().cloned();
        let (steps, step_rx) = mpsc::channel(MAX_UNACKED);
        let ready = LastAck {
            offset: self.session.resumed_at(),
            records: 0,
        };
        let last_words = acks.0.clone();
        let acker = tokio::spawn(acknowledge(
            step_rx,
            acks,
            self.session.durability(),
            (Arc::clone(&self.protocol), ready),
        ));
        let taken_over = || Error::TakenOver {
            stream: name.as_ref().map(ToString::to_string).unwrap_or_default(),
        };
        let mut records = 0i64;
        // Once the server shuts down: when the stream ends.
        let mut deadline: Option<Instant> = None;
        let outcome: Result<()> = loop {
            let drained = until(deadline);
            let shutting_down = async {
                if deadline.is_some() {
                    return std::future::pending().await;
                }
                let _ = self.shutdown.wait_for(|stop| *stop).await;
            };
            let request = tokio::select! {
                biased;
                _ = drained => break Err(Error::ShuttingDown),
                _ = shutting_down => {
                    deadline = Some(Instant::now() + DRAIN_GRACE);
                    if steps.send(Step::Closing(DRAIN_GRACE)).await.is_err() {
                        return;
                    }
                    continue;
                }
                _ = self.session.taken_over() => break Err(taken_over()),
                request = async {
                    table.wait_for_room().await?;
                    self.requests.next().await
                } => request,
            };
            let Incoming { offset, payload } = match request {
                Ok(Some(request)) => request,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            let offset = match self.session.admit(offset) {
                Ok(Admit::Write(offset)) => offset,
                Ok(Admit::Duplicate(offset)) => {
                    if steps.send(Step::Settled { offset, records }).await.is_err() {
                        return;
                    }
                    continue;
                }
                Err(e) => break Err(e),
            };
            let appended = match self.requests.rows(&table, &self.limits, payload) {
                Ok(Rows { batch, .. }) if self.sink => {
                    records += batch.num_rows() as i64;
                    if steps.send(Step::Settled { offset, records }).await.is_err() {
                        return;
                    }
                    continue;
                }
                Ok(Rows { batch, retained }) => {
                    let rows = batch.num_rows() as i64;
                    let drained = until(deadline);
                    // Waiting for room in the tail (the committer may be
                    // stuck) ends with the drain: nothing of the request is
                    // written or acked.
                    let enqueued = tokio::select! {
                        biased;
                        _ = drained => break Err(Error::ShuttingDown),
                        _ = self.session.taken_over() => break Err(taken_over()),
                        enqueued = table.enqueue_unsynced(
                            name.as_ref(), offset.get(), batch, retained,
                            Some(self.session.wal_epoch()),
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
                        offset: offset.get(),
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
        // An acker that failed must not leave the stream to end with OK.
        if let Err(e) = acker.await {
            error!(error = %e, "an ingest stream's acker failed");
            let _ = last_words.send(Err(failed_inside())).await;
        }
    }
}

/// How a stream whose task or acker failed unexpectedly ends: never with
/// OK, which the producer would take as "all done".
fn failed_inside() -> Status {
    Status::internal(
        "the stream failed inside the server; reconnect and resend what was not acknowledged",
    )
}

/// Resolves at `deadline`; never without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Awaits durability in stream order, records it, and sends cumulative
/// acks. Once the stream is taken over it still records what becomes
/// durable (the newer connection resumes after it) but stops waiting for
/// the producer to read (it may be gone without the server knowing): the
/// stream then ends with its acks so far and ABORTED, through `ending`.
async fn acknowledge<P: Protocol>(
    mut steps: mpsc::Receiver<Step>,
    (acks, ending): AckSender<P::Message>,
    durability: Durability,
    (protocol, mut last_ack): (Arc<P>, LastAck),
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
                    last_ack = LastAck { offset, records };
                    Ok(protocol.ack(offset.get(), records))
                }
                Err(e) => Err(Status::from(Error::Wal(e))),
            },
            Step::Settled { offset, records } => {
                last_ack = LastAck { offset, records };
                Ok(protocol.ack(offset.get(), records))
            }
            Step::Closing(grace) => {
                Ok(protocol.closing(grace, last_ack.offset.get(), last_ack.records))
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_map_by_their_last_part() {
        assert_eq!(table_name("sensors").unwrap(), "sensors");
        assert_eq!(table_name("main.telemetry.Sensors").unwrap(), "sensors");
        assert_eq!(table_name("telemetry.sensors").unwrap(), "sensors");
        for bad in ["", "a..b", "a.b.c.d", "sensors."] {
            let err = table_name(bad).unwrap_err().to_string();
            assert!(err.contains("catalog.schema.table"), "{bad}: {err}");
        }
    }
}
