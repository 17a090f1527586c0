//! Named streams: resume after the last durable offset, resends acked
//! without being written, gaps refused, takeover by a newer connection, and
//! the Rust client's automatic reconnect and resend.

use arrow::array::RecordBatch;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::utils::batches_to_flight_data;
use arrow_flight::{FlightData, FlightDescriptor, PutResult};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use weir_client::{STREAM_NAME_HEADER, StreamOptions};

use crate::support::*;

async fn server_with_sensors() -> TestServer {
    let server = TestServer::start().await;
    server.sql(SENSORS_DDL).await;
    server
}

/// One `DoPut` call of a named stream; requests go in through the sender.
struct Call {
    requests: mpsc::Sender<FlightData>,
    responses: tonic::Streaming<PutResult>,
    ready: i64,
}

impl Call {
    async fn open(server: &TestServer, name: &str) -> Result<Call, tonic::Status> {
        // The smallest HTTP/2 windows, so that a producer that does not
        // read its acks fills them soon.
        let channel = tonic::transport::Channel::from_shared(server.url())
            .unwrap()
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535)
            .connect()
            .await
            .unwrap();
        let (requests, rx) = mpsc::channel(16);
        let schema = batches_to_flight_data(&sensors_schema(), vec![])
            .unwrap()
            .remove(0)
            .with_descriptor(FlightDescriptor::new_path(vec!["sensors".into()]));
        requests.send(schema).await.unwrap();
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        request
            .metadata_mut()
            .insert(STREAM_NAME_HEADER, name.parse().unwrap());
        let mut responses = FlightServiceClient::new(channel)
            .do_put(request)
            .await?
            .into_inner();
        let ready = ack_offset(&responses.next().await.expect("a ready ack")?);
        Ok(Call {
            requests,
            responses,
            ready,
        })
    }

    async fn send(&self, offset: i64, batch: RecordBatch) {
        let mut messages = batches_to_flight_data(&batch.schema(), vec![batch]).unwrap();
        let last = messages.pop().unwrap();
        let metadata = format!("{{\"offset_id\":{offset}}}");
        for message in messages.into_iter().skip(1) {
            self.requests.send(message).await.unwrap();
        }
        self.requests
            .send(last.with_app_metadata(metadata.into_bytes()))
            .await
            .unwrap();
    }

    /// The next ack's offset, or the status the call ended with.
    async fn ack(&mut self) -> Result<i64, tonic::Status> {
        match self.responses.next().await {
            Some(Ok(ack)) => Ok(ack_offset(&ack)),
            Some(Err(status)) => Err(status),
            None => Err(tonic::Status::ok("the call ended")),
        }
    }

    /// Half-closes and checks that the call ends with OK.
    async fn finish(mut self) {
        drop(self.requests);
        while let Some(response) = self.responses.next().await {
            response.expect("the call ends cleanly");
        }
    }
}

fn ack_offset(ack: &PutResult) -> i64 {
    let json: serde_json::Value = serde_json::from_slice(&ack.app_metadata).unwrap();
    json["ack_up_to_offset"].as_i64().unwrap()
}

/// The `txn` version Delta holds for `app_id`, read from the table's log
/// without weir.
async fn delta_txn(server: &TestServer, app_id: &str) -> Option<i64> {
    let delta = deltalake::open_table(server.table_url("sensors"))
        .await
        .unwrap();
    delta
        .snapshot()
        .unwrap()
        .transaction_version(delta.log_store().as_ref(), app_id)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_stream_resumes_after_its_last_durable_offset() {
    let mut server = server_with_sensors().await;
    let mut call = Call::open(&server, "producer-1").await.unwrap();
    assert_eq!(call.ready, -1, "a new name starts before offset 0");
    for offset in 0..5 {
        call.send(offset, sensor_batch(offset * 10, 10)).await;
    }
    for offset in 0..5 {
        assert_eq!(call.ack().await.unwrap(), offset);
    }
    call.finish().await;

    // Resends below and at the watermark are acked, not written; the next
    // offset is written.
    let mut call = Call::open(&server, "producer-1").await.unwrap();
    assert_eq!(call.ready, 4);
    call.send(3, sensor_batch(30, 10)).await;
    call.send(4, sensor_batch(40, 10)).await;
    call.send(5, sensor_batch(50, 10)).await;
    for offset in 3..6 {
        assert_eq!(call.ack().await.unwrap(), offset);
    }
    call.finish().await;
    assert_eq!(server.count("sensors").await, 60);
    assert_eq!(
        server
            .scalar("SELECT count(DISTINCT id) FROM sensors")
            .await,
        60
    );

    // A gap is refused, naming the offset expected.
    let mut call = Call::open(&server, "producer-1").await.unwrap();
    assert_eq!(call.ready, 5);
    call.send(7, sensor_batch(70, 10)).await;
    let status = call.ack().await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("expects 6"), "{status:?}");

    // Offsets must increase within a call, resends included.
    let mut call = Call::open(&server, "producer-1").await.unwrap();
    call.send(6, sensor_batch(60, 10)).await;
    call.send(6, sensor_batch(60, 10)).await;
    assert_eq!(call.ack().await.unwrap(), 6);
    let status = call.ack().await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert_eq!(server.count("sensors").await, 70);

    // Names are per stream: another one starts fresh.
    let other = Call::open(&server, "producer-2").await.unwrap();
    assert_eq!(other.ready, -1);
    other.finish().await;

    // The watermark survives a restart that commits every tail and
    // truncates the WAL: it is in Delta, next to the rows.
    server.restart_on_same_port().await;
    assert_eq!(delta_txn(&server, "weir-stream/producer-1").await, Some(6));
    let call = Call::open(&server, "producer-1").await.unwrap();
    assert_eq!(call.ready, 6);
    call.send(6, sensor_batch(60, 10)).await;
    call.finish().await;
    assert_eq!(server.count("sensors").await, 70);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_connection_takes_a_named_stream_over() {
    let server = server_with_sensors().await;
    let mut old = Call::open(&server, "p").await.unwrap();
    old.send(0, sensor_batch(0, 10)).await;
    assert_eq!(old.ack().await.unwrap(), 0);

    // The producer lost the old connection (the server has not noticed)
    // and opens a new one: it learns where the stream stands.
    let new = Call::open(&server, "p").await.unwrap();
    assert_eq!(new.ready, 0);
    let status = old.ack().await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert!(status.message().contains("taken over"), "{status:?}");
    new.send(1, sensor_batch(10, 10)).await;
    new.finish().await;
    assert_eq!(server.count("sensors").await, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_name_is_checked() {
    let server = server_with_sensors().await;
    let status = Call::open(&server, "has space").await.err().unwrap();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("invalid stream name"),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negative_offset_is_refused_not_taken_for_a_resend() {
    let server = server_with_sensors().await;
    let mut call = Call::open(&server, "p").await.unwrap();
    assert_eq!(call.ready, -1);
    call.send(-1, sensor_batch(0, 10)).await;
    let status = call.ack().await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("offset_id -1 is out of range"),
        "{status:?}"
    );
    assert_eq!(server.count("sensors").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reconnects_and_resends_exactly_once_across_a_restart() {
    let mut server = server_with_sensors().await;
    let client = server.client().await;
    let options = StreamOptions {
        name: Some("resender".into()),
        ..StreamOptions::default()
    };
    let mut stream = client
        .open_stream("sensors", sensors_schema(), options.clone())
        .await
        .unwrap();
    assert_eq!(stream.resumed_at(), -1);
    for i in 0..10 {
        assert_eq!(stream.send(sensor_batch(i * 10, 10)).await.unwrap(), i);
    }
    stream.flush().await.unwrap();

    // The server restarts under the stream: the stream's call fails with
    // UNAVAILABLE; the client reconnects on its own and goes on.
    server.restart_on_same_port().await;
    for i in 10..20 {
        assert_eq!(stream.send(sensor_batch(i * 10, 10)).await.unwrap(), i);
    }
    let ack = stream.close().await.unwrap();
    assert_eq!(ack.offset, 19);
    assert_eq!(server.count("sensors").await, 200);
    assert_eq!(
        server
            .scalar("SELECT count(DISTINCT id) FROM sensors")
            .await,
        200
    );

    // A producer that starts again under the name resumes after offset 19.
    let stream = client
        .open_stream("sensors", sensors_schema(), options)
        .await
        .unwrap();
    assert_eq!(stream.resumed_at(), 19);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_stream_reconnects_and_resends_its_unacked_suffix() {
    let mut server = server_with_sensors().await;
    let mut stream = server.sensors_stream().await;
    for i in 0..5 {
        stream.send(sensor_batch(i * 10, 10)).await.unwrap();
    }
    stream.flush().await.unwrap();
    server.restart_on_same_port().await;
    for i in 5..10 {
        assert_eq!(stream.send(sensor_batch(i * 10, 10)).await.unwrap(), i);
    }
    assert_eq!(stream.close().await.unwrap().offset, 9);
    assert_eq!(server.count("sensors").await, 100);
}

/// Writes ten requests through a proxy that loses their acks, cuts the
/// connection, lets the client reconnect and resend, and returns the rows
/// the table then holds.
async fn resend_after_lost_acks(name: Option<&str>) -> (i64, i64) {
    let server = server_with_sensors().await;
    let proxy = Proxy::start(server.server().addr()).await;
    let client = weir_client::Client::connect(&proxy.url()).await.unwrap();
    let options = StreamOptions {
        name: name.map(str::to_string),
        reconnect_backoff: std::time::Duration::from_millis(20),
        ..StreamOptions::default()
    };
    let mut stream = client
        .open_stream("sensors", sensors_schema(), options)
        .await
        .unwrap();
    proxy.hold_responses();
    for i in 0..10 {
        stream.send(sensor_batch(i * 10, 10)).await.unwrap();
    }
    // Durable on the server, unacknowledged at the client.
    while server.count("sensors").await < 100 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(stream.acked().offset, -1);
    assert_eq!(stream.unacknowledged().len(), 10);
    proxy.cut();
    let ack = stream.close().await.unwrap();
    assert_eq!(ack.offset, 9);
    let rows = server.count("sensors").await;
    let distinct = server
        .scalar("SELECT count(DISTINCT id) FROM sensors")
        .await;
    (rows, distinct)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_acks_are_resent_exactly_once_on_a_named_stream() {
    assert_eq!(resend_after_lost_acks(Some("lossy")).await, (100, 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_acks_are_resent_at_least_once_on_an_anonymous_stream() {
    // What a name adds: without one, the server cannot tell a resend from
    // new rows.
    assert_eq!(resend_after_lost_acks(None).await, (200, 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_over_stream_whose_producer_stopped_reading_ends_with_aborted() {
    let server = server_with_sensors().await;
    let mut old = Call::open(&server, "stuck").await.unwrap();
    // The producer sends on and never reads its acks, until every buffer
    // between it and the server is full.
    let requests = old.requests.clone();
    let sender = tokio::spawn(async move {
        for offset in 0..4000i64 {
            let batch = sensor_batch(offset, 1);
            let mut messages = batches_to_flight_data(&batch.schema(), vec![batch]).unwrap();
            let last = messages.pop().unwrap();
            let metadata = format!("{{\"offset_id\":{offset}}}");
            if requests
                .send(last.with_app_metadata(metadata.into_bytes()))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;

    let new = Call::open(&server, "stuck").await.unwrap();
    let mut last_acked = -1;
    let status = loop {
        match old.ack().await {
            Ok(offset) => last_acked = offset,
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    let resumed = new.ready;
    assert!(resumed >= last_acked, "{resumed} < {last_acked}");
    new.finish().await;
    sender.abort();
    assert_eq!(server.count("sensors").await, resumed + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_finds_its_name_written_by_another_producer_stops() {
    let mut server = server_with_sensors().await;
    let client = server.client().await;
    let options = StreamOptions {
        name: Some("shared".into()),
        reconnect_backoff: std::time::Duration::from_millis(20),
        ..StreamOptions::default()
    };
    let mut first = client
        .open_stream("sensors", sensors_schema(), options.clone())
        .await
        .unwrap();
    for i in 0..5 {
        first.send(sensor_batch(i * 10, 10)).await.unwrap();
    }
    first.flush().await.unwrap();
    server.restart_on_same_port().await;

    // While the first producer is away, a second one writes under its name.
    let mut second = client
        .open_stream("sensors", sensors_schema(), options)
        .await
        .unwrap();
    assert_eq!(second.resumed_at(), 4);
    for i in 5..10 {
        second.send(sensor_batch(i * 10, 10)).await.unwrap();
    }
    second.close().await.unwrap();

    // The first one's reconnect finds offsets it never sent: it must not
    // take them for its own.
    let outcome = match first.send(sensor_batch(1000, 10)).await {
        Ok(offset) => first.wait_for(offset).await.map(|_| ()),
        Err(e) => Err(e),
    };
    let err = outcome.unwrap_err();
    assert!(
        matches!(
            err,
            weir_client::Error::NameInUse {
                durable: 9,
                sent: 5,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(server.count("sensors").await, 100);
}
