//! The public Zerobus Rust SDK (`databricks-zerobus-ingest-sdk`), unchanged,
//! against weir: protobuf, JSON and Arrow streams, recovery across a server
//! restart, persistent streams, big requests and schema errors.

use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use databricks_zerobus_ingest_sdk::databricks::zerobus::zerobus_client::ZerobusClient;
use databricks_zerobus_ingest_sdk::databricks::zerobus::{
    RetireStreamRequest, retire_stream_request,
};
use databricks_zerobus_ingest_sdk::{
    ConnectorFactory, JsonString, ProtoBytes, SchemaValidationCause, ZerobusError, ZerobusSdk,
};
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto};

use crate::support::{SENSORS_DDL, TestServer};

/// The table as a Zerobus producer names it.
const TABLE: &str = "main.telemetry.sensors";

/// A sensor reading as a producer's generated protobuf type would be.
#[derive(Clone, PartialEq, prost::Message)]
struct Reading {
    #[prost(int64, required, tag = "1")]
    id: i64,
    #[prost(double, optional, tag = "3")]
    temp: Option<f64>,
    #[prost(string, optional, tag = "4")]
    site: Option<String>,
}

fn reading(id: i64) -> ProtoBytes {
    ProtoBytes(
        Reading {
            id,
            temp: Some(id as f64 / 2.0),
            site: Some(["north", "south", "east"][(id % 3) as usize].into()),
        }
        .encode_to_vec(),
    )
}

fn reading_descriptor() -> DescriptorProto {
    let field = |name: &str, number, kind: Type, label: Label| FieldDescriptorProto {
        name: Some(name.into()),
        number: Some(number),
        r#type: Some(kind as i32),
        label: Some(label as i32),
        ..Default::default()
    };
    DescriptorProto {
        name: Some("Reading".into()),
        field: vec![
            field("id", 1, Type::Int64, Label::Required),
            field("temp", 3, Type::Double, Label::Optional),
            field("site", 4, Type::String, Label::Optional),
        ],
        ..Default::default()
    }
}

fn json_reading(id: i64) -> JsonString {
    JsonString(format!(
        r#"{{"id": {id}, "temp": {}, "site": "west", "ts": "2026-12-04T01:00:00Z"}}"#,
        id as f64 / 4.0
    ))
}

/// An SDK pointed at `server`, as a user would for a local endpoint:
/// plaintext, and no HTTP proxy from the environment.
fn sdk(server: &TestServer) -> ZerobusSdk {
    let direct: ConnectorFactory = Arc::new(|_host: &str| None);
    ZerobusSdk::builder()
        .endpoint(server.url())
        .no_tls()
        .connector_factory(direct)
        .build()
        .unwrap()
}

async fn server_with_sensors() -> TestServer {
    let server = TestServer::start().await;
    server.sql(SENSORS_DDL).await;
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protobuf_stream_lands_in_a_weir_table() {
    let server = server_with_sensors().await;
    let sdk = sdk(&server);
    let mut stream = sdk
        .stream_builder()
        .table(TABLE)
        .no_auth()
        .compiled_proto(reading_descriptor())
        .build()
        .await
        .unwrap();
    for id in 0..100 {
        assert_eq!(stream.ingest_record_offset(reading(id)).await.unwrap(), id);
    }
    let last = stream
        .ingest_records_offset((100..300).map(reading))
        .await
        .unwrap();
    assert_eq!(last, Some(100));
    stream.wait_for_offset(100).await.unwrap();
    // Acked means queryable.
    assert_eq!(server.count("sensors").await, 300);
    stream.close().await.unwrap();
    assert_eq!(
        server
            .sql_text("SELECT site, count(*) AS n, sum(temp) AS t FROM sensors GROUP BY site ORDER BY site")
            .await,
        "+-------+-----+--------+\n\
         | site  | n   | t      |\n\
         +-------+-----+--------+\n\
         | east  | 100 | 7525.0 |\n\
         | north | 100 | 7425.0 |\n\
         | south | 100 | 7475.0 |\n\
         +-------+-----+--------+"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_stream_lands_in_a_weir_table() {
    let server = server_with_sensors().await;
    let sdk = sdk(&server);
    let mut stream = sdk
        .stream_builder()
        .table(TABLE)
        .no_auth()
        .json()
        .build()
        .await
        .unwrap();
    for id in 0..50 {
        stream.ingest_record_offset(json_reading(id)).await.unwrap();
    }
    stream
        .ingest_records_offset((50..120).map(json_reading))
        .await
        .unwrap();
    stream.flush().await.unwrap();
    assert_eq!(server.count("sensors").await, 120);
    assert_eq!(
        server
            .scalar("SELECT count(*) FROM sensors WHERE site = 'west' AND ts = TIMESTAMP '2026-12-04T01:00:00'")
            .await,
        120
    );
    stream.close().await.unwrap();
}

fn arrow_readings(first: i64, rows: usize, schema: &Arc<Schema>) -> RecordBatch {
    let ids: Vec<i64> = (first..first + rows as i64).collect();
    RecordBatch::try_new(
        Arc::clone(schema),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(Float64Array::from_iter_values(
                ids.iter().map(|i| *i as f64),
            )),
            Arc::new(StringArray::from_iter_values(ids.iter().map(|_| "arrow"))),
        ],
    )
    .unwrap()
}

fn arrow_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("temp", DataType::Float64, true),
        Field::new("site", DataType::Utf8, true),
    ]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_arrow_stream_lands_in_a_weir_table() {
    let server = server_with_sensors().await;
    let sdk = sdk(&server);
    let schema = arrow_schema();
    // The SDK's defaults: ZSTD-compressed IPC, no Flight descriptor, the
    // table in a header.
    let mut stream = sdk
        .stream_builder()
        .table(TABLE)
        .no_auth()
        .arrow(Arc::clone(&schema))
        .build_arrow()
        .await
        .unwrap();
    let mut last = 0;
    for i in 0..10 {
        last = stream
            .ingest_batch(arrow_readings(i * 1000, 1000, &schema))
            .await
            .unwrap();
    }
    stream.wait_for_offset(last).await.unwrap();
    assert_eq!(server.count("sensors").await, 10_000);
    // A batch bigger than one Flight message (2 MiB) goes in pieces.
    let big = arrow_readings(10_000, 200_000, &schema);
    stream.ingest_batch(big).await.unwrap();
    stream.flush().await.unwrap();
    stream.close().await.unwrap();
    assert_eq!(
        server
            .scalar("SELECT count(DISTINCT id) FROM sensors WHERE site = 'arrow'")
            .await,
        210_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_the_table_cannot_hold_is_a_typed_error() {
    let server = server_with_sensors().await;
    let sdk = sdk(&server);
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("humidity", DataType::Float64, true),
    ]));
    let err = sdk
        .stream_builder()
        .table(TABLE)
        .no_auth()
        .arrow(schema)
        .build_arrow()
        .await
        .err()
        .expect("the table has no humidity column");
    match err {
        ZerobusError::InvalidSchema {
            message, causes, ..
        } => {
            assert_eq!(causes, vec![SchemaValidationCause::FieldNotInTable]);
            assert!(message.contains("humidity"), "{message}");
        }
        other => panic!("expected InvalidSchema, got {other:?}"),
    }

    // A descriptor with a field the table lacks: refused at create.
    let mut descriptor = reading_descriptor();
    descriptor.field.push(FieldDescriptorProto {
        name: Some("humidity".into()),
        number: Some(9),
        r#type: Some(Type::Double as i32),
        label: Some(Label::Optional as i32),
        ..Default::default()
    });
    let err = sdk
        .stream_builder()
        .table(TABLE)
        .no_auth()
        .compiled_proto(descriptor)
        .build()
        .await
        .err()
        .expect("the table has no humidity column");
    assert!(!err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("humidity"), "{err}");

    // An unknown table: NOT_FOUND, which the SDK does not retry.
    let err = sdk
        .stream_builder()
        .table("main.telemetry.nope")
        .no_auth()
        .json()
        .build()
        .await
        .err()
        .expect("no such table");
    assert!(!err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("nope"), "{err}");
    assert_eq!(server.count("sensors").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_record_fails_its_request_and_lands_nothing_of_it() {
    let server = server_with_sensors().await;
    let sdk = sdk(&server);
    let stream = sdk
        .stream_builder()
        .table(TABLE)
        .no_auth()
        .compiled_proto(reading_descriptor())
        .recovery(false)
        .build()
        .await
        .unwrap();
    stream
        .ingest_records_offset((0..10).map(reading))
        .await
        .unwrap();
    stream.flush().await.unwrap();
    // The third record of the batch is not a Reading (field 1 as a
    // length-delimited field).
    let bad = vec![reading(10), reading(11), ProtoBytes(vec![0x0a, 0x01, 0x00])];
    stream.ingest_records_offset(bad).await.unwrap();
    let err = stream.flush().await.unwrap_err();
    assert!(!err.is_retryable(), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("offset_id 1") && text.contains("record 2"),
        "{text}"
    );
    assert_eq!(server.count("sensors").await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_of_nine_mib_is_taken() {
    let server = server_with_sensors().await;
    let sdk = sdk(&server);
    let mut stream = sdk
        .stream_builder()
        .table(TABLE)
        .no_auth()
        .json()
        .build()
        .await
        .unwrap();
    let site = "x".repeat(1 << 20);
    let records: Vec<JsonString> = (0..9)
        .map(|id| JsonString(format!(r#"{{"id": {id}, "site": "{site}"}}"#)))
        .collect();
    stream.ingest_records_offset(records).await.unwrap();
    stream.flush().await.unwrap();
    stream.close().await.unwrap();
    assert_eq!(
        server.scalar("SELECT sum(length(site)) FROM sensors").await,
        9 << 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_recovers_across_a_server_restart() {
    let mut server = server_with_sensors().await;
    let sdk = sdk(&server);
    let mut stream = sdk
        .stream_builder()
        .table(TABLE)
        .no_auth()
        .compiled_proto(reading_descriptor())
        .recovery_backoff_ms(100)
        .recovery_retries(50)
        .build()
        .await
        .unwrap();
    for id in 0..500 {
        stream.ingest_record_offset(reading(id)).await.unwrap();
    }
    // The server restarts under the open stream: it says it will close the
    // stream, acks what is durable, and stops; the SDK reconnects and
    // resends what was not acknowledged.
    server.restart_on_same_port().await;
    for id in 500..1000 {
        stream.ingest_record_offset(reading(id)).await.unwrap();
    }
    stream.flush().await.unwrap();
    stream.close().await.unwrap();
    // An ephemeral stream is at least once: every record is there.
    assert_eq!(
        server
            .scalar("SELECT count(DISTINCT id) FROM sensors")
            .await,
        1000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_stream_is_exactly_once_across_restarts() {
    let mut server = server_with_sensors().await;
    let sdk = sdk(&server);
    let mut stream = sdk
        .persistent_stream_builder()
        .table(TABLE)
        .no_auth()
        .json()
        .recovery_backoff_ms(100)
        .recovery_retries(50)
        .build()
        .await
        .unwrap();
    let id = stream.stream_id().unwrap().to_string();
    assert!(id.starts_with("sensors/"), "{id}");
    for i in 0..300 {
        stream.ingest_record_offset(json_reading(i)).await.unwrap();
    }
    // A restart mid-stream: the SDK resumes by id, skips what the server
    // says is durable and resends the rest.
    server.restart_on_same_port().await;
    for i in 300..600 {
        stream.ingest_record_offset(json_reading(i)).await.unwrap();
    }
    stream.flush().await.unwrap();
    stream.close().await.unwrap();
    assert_eq!(server.count("sensors").await, 600);
    assert_eq!(
        server
            .scalar("SELECT count(DISTINCT id) FROM sensors")
            .await,
        600
    );

    // Another process resumes the stream after a restart: it learns where
    // the stream stands and goes on from there.
    server.restart_on_same_port().await;
    let mut resumed = sdk
        .persistent_stream_builder()
        .table(TABLE)
        .no_auth()
        .json()
        .resume(id.clone())
        .await
        .unwrap();
    assert_eq!(resumed.resume_watermark(), Some(599));
    for i in 600..650 {
        assert_eq!(
            resumed.ingest_record_offset(json_reading(i)).await.unwrap(),
            i
        );
    }
    resumed.flush().await.unwrap();
    resumed.close().await.unwrap();
    assert_eq!(server.count("sensors").await, 650);

    // Retired, it cannot be resumed, also after a restart.
    let mut client = ZerobusClient::connect(server.url()).await.unwrap();
    for _ in 0..2 {
        client
            .retire_stream(RetireStreamRequest {
                table_name: Some(TABLE.into()),
                identifier: Some(retire_stream_request::Identifier::StreamId(id.clone())),
            })
            .await
            .unwrap();
    }
    server.restart_on_same_port().await;
    let err = sdk
        .persistent_stream_builder()
        .table(TABLE)
        .no_auth()
        .json()
        .resume(id.clone())
        .await
        .err()
        .expect("a retired stream");
    assert!(!err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("retired"), "{err}");
    // Nor under its name on another protocol.
    let options = weir_client::StreamOptions {
        name: Some(id),
        ..Default::default()
    };
    let err = server
        .client()
        .await
        .open_stream("sensors", crate::support::sensors_schema(), options)
        .await
        .expect_err("a retired name");
    assert!(err.to_string().contains("retired"), "{err}");
    assert_eq!(server.count("sensors").await, 650);
}

/// The wire protocol itself, with the SDK's generated client: what a
/// stream sees when the server shuts down under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_the_close_signal_then_ends_the_stream() {
    use databricks_zerobus_ingest_sdk::databricks::zerobus::{
        CreateIngestStreamRequest, EphemeralStreamRequest, IngestRecordRequest,
        ephemeral_stream_request, ephemeral_stream_response, ingest_record_request,
    };
    let mut server = server_with_sensors().await;
    let mut client = ZerobusClient::connect(server.url()).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut replies = client
        .ephemeral_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let send = |payload| EphemeralStreamRequest {
        payload: Some(payload),
    };
    tx.send(send(ephemeral_stream_request::Payload::CreateStream(
        CreateIngestStreamRequest {
            table_name: Some(TABLE.into()),
            record_type: Some(2), // JSON
            ..Default::default()
        },
    )))
    .await
    .unwrap();
    let reply = replies.message().await.unwrap().unwrap().payload;
    assert!(
        matches!(&reply, Some(ephemeral_stream_response::Payload::CreateStreamResponse(r)) if r.stream_id.is_some()),
        "{reply:?}"
    );
    let record = |offset: i64| {
        send(ephemeral_stream_request::Payload::IngestRecord(
            IngestRecordRequest {
                offset_id: Some(offset),
                record: Some(ingest_record_request::Record::JsonRecord(
                    json_reading(offset).0,
                )),
            },
        ))
    };
    let ack = |reply: Option<ephemeral_stream_response::Payload>| match reply {
        Some(ephemeral_stream_response::Payload::IngestRecordResponse(r)) => {
            r.durability_ack_up_to_offset.unwrap()
        }
        other => panic!("expected an ack, got {other:?}"),
    };
    tx.send(record(0)).await.unwrap();
    assert_eq!(ack(replies.message().await.unwrap().unwrap().payload), 0);

    let server_task = server.server.take().unwrap();
    let stopping = tokio::spawn(server_task.shutdown());
    let reply = replies.message().await.unwrap().unwrap().payload;
    match reply {
        Some(ephemeral_stream_response::Payload::CloseStreamSignal(signal)) => {
            assert_eq!(signal.duration.unwrap().seconds, 1);
        }
        other => panic!("expected the close signal, got {other:?}"),
    }
    // In the grace period the stream is still read and acked.
    tx.send(record(1)).await.unwrap();
    assert_eq!(ack(replies.message().await.unwrap().unwrap().payload), 1);
    let status = replies.message().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    stopping.await.unwrap().unwrap();
    let config = server.config.clone();
    server.server = Some(weir_flight_server::Server::start(config).await.unwrap());
    assert_eq!(server.count("sensors").await, 2);
}
