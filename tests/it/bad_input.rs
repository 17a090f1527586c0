//! Every rejection names the problem, uses the fitting code, and changes
//! nothing; other streams go on.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use tonic::Code;
use weir_client::{Error, StreamOptions};

use crate::support::*;

async fn server_with_sensors() -> TestServer {
    let server = TestServer::start().await;
    server.sql(SENSORS_DDL).await;
    server
}

fn status(result: Result<impl std::fmt::Debug, Error>) -> tonic::Status {
    match result {
        Err(Error::Server(status)) => status,
        other => panic!("expected a server error, got {other:?}"),
    }
}

fn assert_status(status: &tonic::Status, code: Code, needle: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(needle),
        "{:?} lacks {needle:?}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_table_is_not_found() {
    let server = server_with_sensors().await;
    let client = server.client().await;
    let result = client
        .open_stream("nope", sensors_schema(), StreamOptions::default())
        .await;
    assert_status(&status(result), Code::NotFound, "\"nope\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_mismatches_are_rejected_at_open_naming_the_column() {
    let server = server_with_sensors().await;
    let client = server.client().await;
    let cases = [
        (
            Schema::new(vec![Field::new("temp", DataType::Float64, true)]),
            "missing column \"id\"",
        ),
        (
            Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("temp", DataType::Utf8, true),
            ]),
            "column \"temp\" has type Utf8, which cannot be stored losslessly as Float64",
        ),
        (
            Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("humidity", DataType::Float64, true),
            ]),
            "unknown column \"humidity\"",
        ),
    ];
    for (schema, needle) in cases {
        let result = client
            .open_stream("sensors", Arc::new(schema), StreamOptions::default())
            .await;
        assert_status(&status(result), Code::InvalidArgument, needle);
    }
    assert_eq!(server.count("sensors").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_batch_ends_its_stream_after_acking_the_good_ones() {
    let server = server_with_sensors().await;
    let client = server.client().await;
    // Nullable id in the producer's schema: the schema is fine, a null is not.
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("site", DataType::Utf8, true),
    ]));
    let batch = |ids: Vec<Option<i64>>| {
        let sites: Vec<&str> = ids.iter().map(|_| "x").collect();
        RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(sites)),
            ],
        )
        .unwrap()
    };
    let mut stream = client
        .open_stream("sensors", Arc::clone(&schema), StreamOptions::default())
        .await
        .unwrap();
    stream.send(batch(vec![Some(1), Some(2)])).await.unwrap();
    stream.send(batch(vec![Some(3), None])).await.unwrap();
    let failure = stream.wait_for(1).await;
    assert_status(
        &status(failure),
        Code::InvalidArgument,
        "batch offset_id 1: table \"sensors\": column \"id\" is NOT NULL but 1 of 2 values are null",
    );
    assert_eq!(
        stream.acked().offset,
        0,
        "the good batch before it was acked"
    );
    assert_eq!(
        server.count("sensors").await,
        2,
        "nothing of the bad batch landed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_gap_is_out_of_range_and_other_streams_go_on() {
    let server = server_with_sensors().await;
    let channel = tonic::transport::Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut flight = arrow_flight::FlightClient::new(channel);
    let batches = vec![sensor_batch(0, 3), sensor_batch(3, 3)];
    let mut messages =
        arrow_flight::utils::batches_to_flight_data(&sensors_schema(), batches).unwrap();
    messages[0] = messages[0]
        .clone()
        .with_descriptor(arrow_flight::FlightDescriptor::new_path(vec![
            "sensors".into(),
        ]));
    messages[1] = messages[1]
        .clone()
        .with_app_metadata(&b"{\"offset_id\": 0}"[..]);
    messages[2] = messages[2]
        .clone()
        .with_app_metadata(&b"{\"offset_id\": 2}"[..]);

    // A healthy stream alongside.
    let mut healthy = server.sensors_stream().await;

    let input = futures::stream::iter(messages.into_iter().map(Ok));
    let mut acks = flight.do_put(input).await.unwrap();
    use futures::StreamExt;
    let mut seen = Vec::new();
    let error = loop {
        match acks.next().await {
            Some(Ok(ack)) => seen.push(String::from_utf8(ack.app_metadata.to_vec()).unwrap()),
            Some(Err(e)) => break e,
            None => panic!("the stream ended without an error"),
        }
    };
    let status = match error {
        arrow_flight::error::FlightError::Tonic(status) => *status,
        other => panic!("{other:?}"),
    };
    assert_status(
        &status,
        Code::OutOfRange,
        "offset_id 2 is out of order: this stream expects 1 next",
    );
    assert_eq!(
        seen.len(),
        2,
        "the ready ack and the ack of offset 0: {seen:?}"
    );

    healthy.send(sensor_batch(100, 7)).await.unwrap();
    healthy.close().await.unwrap();
    assert_eq!(server.count("sensors").await, 3 + 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ddl_is_a_clear_error() {
    let server = server_with_sensors().await;
    let cases = [
        (
            SENSORS_DDL,
            Code::AlreadyExists,
            "table \"sensors\" already exists",
        ),
        (
            "CREATE TABLE t (x FOOTYPE)",
            Code::InvalidArgument,
            "FOOTYPE",
        ),
        (
            "CREATE TABLE t (x INT UNSIGNED)",
            Code::InvalidArgument,
            "column \"x\": type UInt32 is not supported by Delta tables",
        ),
        (
            "CREATE TABLE \"Bad-Name\" (x INT)",
            Code::InvalidArgument,
            "invalid table name \"Bad-Name\"",
        ),
        (
            "DROP TABLE missing",
            Code::NotFound,
            "table \"missing\" not found",
        ),
        (
            "DELETE FROM sensors",
            Code::InvalidArgument,
            "DELETE is not supported: weir appends rows",
        ),
    ];
    for (sql, code, needle) in cases {
        let status = server.try_sql(sql).await.expect_err(sql);
        assert_status(&status, code, needle);
    }
    assert_eq!(
        server
            .sql_text("SHOW TABLES")
            .await
            .matches("sensors")
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_table_ends_its_streams() {
    let server = server_with_sensors().await;
    let mut stream = server.sensors_stream().await;
    stream.send(sensor_batch(0, 5)).await.unwrap();
    stream.flush().await.unwrap();
    server.sql("DROP TABLE sensors").await;
    assert!(!server.table_url("sensors").to_file_path().unwrap().exists());
    stream.send(sensor_batch(5, 5)).await.ok();
    let status = status(stream.wait_for(1).await);
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    // A new table of the same name starts empty.
    server.sql(SENSORS_DDL).await;
    assert_eq!(server.count("sensors").await, 0);
}
