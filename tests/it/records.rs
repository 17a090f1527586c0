//! Protobuf and JSON records over DoPut, read back with SQL.

use arrow_flight::{FlightClient, FlightData, FlightDescriptor};
use base64::Engine as _;
use futures::StreamExt;
use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor, Value};
use tonic::Code;

use crate::support::*;

const READING_PROTO: &str = r#"
syntax = "proto3";
package telemetry;
import "google/protobuf/timestamp.proto";
message Reading {
  int64 id = 1;
  google.protobuf.Timestamp ts = 2;
  optional double temp = 3;
  string site = 4;
}
"#;

const NESTED_PROTO: &str = r#"
syntax = "proto3";
message Probe {
  int64 id = 1;
  message Position { double ra = 1; double dec = 2; }
  Position pos = 2;
  repeated int32 counts = 3;
  map<string, double> flags = 4;
  optional string note = 5;
}
"#;

/// Sends `header` then one request per body; returns the acks and the final error.
async fn push_records(
    server: &TestServer,
    table: &str,
    header: serde_json::Value,
    bodies: Vec<Vec<u8>>,
) -> (Vec<serde_json::Value>, Option<tonic::Status>) {
    let channel = tonic::transport::Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightClient::new(channel);
    let mut messages = vec![
        FlightData::new()
            .with_descriptor(FlightDescriptor::new_path(vec![table.to_string()]))
            .with_app_metadata(header.to_string().into_bytes()),
    ];
    for (offset, body) in bodies.into_iter().enumerate() {
        messages.push(
            FlightData::new()
                .with_app_metadata(format!("{{\"offset_id\": {offset}}}").into_bytes())
                .with_data_body(body),
        );
    }
    let mut acks = Vec::new();
    let responses = client
        .do_put(futures::stream::iter(messages.into_iter().map(Ok)))
        .await;
    let mut responses = match responses {
        Ok(responses) => responses,
        Err(e) => return (acks, Some(to_status(e))),
    };
    while let Some(response) = responses.next().await {
        match response {
            Ok(ack) => acks.push(serde_json::from_slice(&ack.app_metadata).unwrap()),
            Err(e) => return (acks, Some(to_status(e))),
        }
    }
    (acks, None)
}

fn delimited(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for record in records {
        prost::encoding::encode_varint(record.len() as u64, &mut out);
        out.extend_from_slice(record);
    }
    out
}

fn reading(descriptor: &MessageDescriptor, id: i64, temp: Option<f64>, site: &str) -> Vec<u8> {
    let mut message = DynamicMessage::new(descriptor.clone());
    message.set_field_by_name("id", Value::I64(id));
    let ts_descriptor = descriptor.get_field_by_name("ts").unwrap();
    let prost_reflect::Kind::Message(ts_type) = ts_descriptor.kind() else {
        unreachable!()
    };
    let mut ts = DynamicMessage::new(ts_type);
    ts.set_field_by_name("seconds", Value::I64(1_700_000_000 + id));
    ts.set_field_by_name("nanos", Value::I32(250_000));
    message.set_field_by_name("ts", Value::Message(ts));
    if let Some(temp) = temp {
        message.set_field_by_name("temp", Value::F64(temp));
    }
    message.set_field_by_name("site", Value::String(site.into()));
    message.encode_to_vec()
}

fn reading_descriptor() -> MessageDescriptor {
    weir_codec::protobuf::descriptor_from_proto_source(READING_PROTO, "telemetry.Reading").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_records_with_each_kind_of_descriptor() {
    let server = TestServer::start().await;
    server.sql(SENSORS_DDL).await;
    let descriptor = reading_descriptor();
    let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(bytes);
    let headers = [
        serde_json::json!({"format": "protobuf", "proto": READING_PROTO, "message": "telemetry.Reading"}),
        serde_json::json!({
            "format": "protobuf",
            "descriptor_proto": b64(descriptor.descriptor_proto().encode_to_vec()),
        }),
        serde_json::json!({
            "format": "protobuf",
            "file_descriptor_set": b64(descriptor.parent_pool().encode_to_vec()),
            "message": "telemetry.Reading",
        }),
    ];
    let mut expected = 0;
    for (i, header) in headers.into_iter().enumerate() {
        let id = i as i64 * 10;
        let body = delimited(&[
            reading(&descriptor, id, Some(20.5), "north"),
            reading(&descriptor, id + 1, None, "south"),
        ]);
        let (acks, error) = push_records(&server, "sensors", header.clone(), vec![body]).await;
        assert!(error.is_none(), "header {header}: {error:?}");
        assert_eq!(acks.last().unwrap()["ack_up_to_records"], 2);
        expected += 2;
    }
    assert_eq!(server.count("sensors").await, expected);
    insta::assert_snapshot!(
        server.sql_text("SELECT id, ts, temp, site FROM sensors ORDER BY id").await,
        @"
    +----+-----------------------------+------+-------+
    | id | ts                          | temp | site  |
    +----+-----------------------------+------+-------+
    | 0  | 2023-11-14T22:13:20.000250Z | 20.5 | north |
    | 1  | 2023-11-14T22:13:21.000250Z |      | south |
    | 10 | 2023-11-14T22:13:30.000250Z | 20.5 | north |
    | 11 | 2023-11-14T22:13:31.000250Z |      | south |
    | 20 | 2023-11-14T22:13:40.000250Z | 20.5 | north |
    | 21 | 2023-11-14T22:13:41.000250Z |      | south |
    +----+-----------------------------+------+-------+
    "
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_repeated_and_map_columns() {
    let server = TestServer::start().await;
    let descriptor =
        weir_codec::protobuf::descriptor_from_proto_source(NESTED_PROTO, "Probe").unwrap();
    let schema = weir_codec::protobuf::arrow_schema_for(&descriptor).unwrap();
    server
        .server()
        .catalog()
        .create_table("probes", &schema, false)
        .await
        .unwrap();
    let mut records = Vec::new();
    for id in 0..3i64 {
        let mut probe = DynamicMessage::new(descriptor.clone());
        probe.set_field_by_name("id", Value::I64(id));
        let prost_reflect::Kind::Message(pos_type) =
            descriptor.get_field_by_name("pos").unwrap().kind()
        else {
            unreachable!()
        };
        let mut pos = DynamicMessage::new(pos_type);
        pos.set_field_by_name("ra", Value::F64(10.0 + id as f64));
        pos.set_field_by_name("dec", Value::F64(-5.0));
        probe.set_field_by_name("pos", Value::Message(pos));
        probe.set_field_by_name(
            "counts",
            Value::List((0..id as i32).map(Value::I32).collect()),
        );
        let mut flags = std::collections::HashMap::new();
        if id > 0 {
            flags.insert(
                prost_reflect::MapKey::String("gain".into()),
                Value::F64(id as f64 / 2.0),
            );
        }
        probe.set_field_by_name("flags", Value::Map(flags));
        if id == 2 {
            probe.set_field_by_name("note", Value::String("bright".into()));
        }
        records.push(probe.encode_to_vec());
    }
    let header =
        serde_json::json!({"format": "protobuf", "proto": NESTED_PROTO, "message": "Probe"});
    let (_, error) = push_records(&server, "probes", header, vec![delimited(&records)]).await;
    assert!(error.is_none(), "{error:?}");
    insta::assert_snapshot!(
        server
            .sql_text("SELECT id, pos['ra'] AS ra, counts, flags, note FROM probes ORDER BY id")
            .await,
        @"
    +----+------+--------+-------------+--------+
    | id | ra   | counts | flags       | note   |
    +----+------+--------+-------------+--------+
    | 0  | 10.0 | []     | {}          |        |
    | 1  | 11.0 | [0]    | {gain: 0.5} |        |
    | 2  | 12.0 | [0, 1] | {gain: 1.0} | bright |
    +----+------+--------+-------------+--------+
    "
    );
    server.server().catalog().commit_all().await.unwrap();
    insta::assert_snapshot!(
        server
            .sql_text("SELECT id, pos['dec'] AS dec, cardinality(counts) AS n, note IS NULL AS no_note FROM probes ORDER BY id")
            .await,
        @"
    +----+------+---+---------+
    | id | dec  | n | no_note |
    +----+------+---+---------+
    | 0  | -5.0 | 0 | true    |
    | 1  | -5.0 | 1 | true    |
    | 2  | -5.0 | 2 | false   |
    +----+------+---+---------+
    "
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_protobuf_records_name_the_record_and_field_and_change_nothing() {
    let server = TestServer::start().await;
    server.sql(SENSORS_DDL).await;
    let descriptor = reading_descriptor();
    let good = reading(&descriptor, 1, Some(1.0), "x");
    let mut bad = reading(&descriptor, 2, Some(2.0), "y");
    let site_at = bad.len() - 1; // the last byte of the site string
    bad[site_at] = 0xff; // invalid UTF-8
    let header =
        serde_json::json!({"format": "protobuf", "proto": READING_PROTO, "message": "Reading"});
    let (acks, error) = push_records(
        &server,
        "sensors",
        header,
        vec![
            delimited(std::slice::from_ref(&good)),
            delimited(&[good, bad]),
        ],
    )
    .await;
    let status = error.expect("the bad request is refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message()
            == "batch offset_id 1: table \"sensors\": record 1: field .site: invalid UTF-8 in string",
        "{}",
        status.message()
    );
    assert_eq!(acks.len(), 2, "ready ack and the first request: {acks:?}");
    assert_eq!(
        server.count("sensors").await,
        1,
        "nothing of the bad request landed"
    );

    let incompatible = r#"syntax = "proto3"; message R { string id = 1; }"#;
    let header = serde_json::json!({"format": "protobuf", "proto": incompatible, "message": "R"});
    let (_, error) = push_records(&server, "sensors", header, vec![]).await;
    let status = error.expect("an incompatible descriptor is refused at open");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("id"), "{}", status.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_records_ndjson_and_arrays() {
    let server = TestServer::start().await;
    server.sql(SENSORS_DDL).await;
    let header = serde_json::json!({"format": "json"});
    let ndjson = b"{\"id\": 1, \"ts\": \"2023-11-14T22:13:20Z\", \"temp\": 1.5, \"site\": \"north\"}\n{\"id\": 2, \"site\": null}\n".to_vec();
    let array = br#"[{"id": 3, "temp": 3.5}, {"id": 4, "ts": "2023-11-14T22:13:21.5Z"}]"#.to_vec();
    // Through the Rust SDK this time.
    let client = server.client().await;
    let mut stream = client
        .open_records_stream("sensors", &header, Default::default())
        .await
        .unwrap();
    stream.send_records(ndjson).await.unwrap();
    stream.send_records(array).await.unwrap();
    assert_eq!(stream.close().await.unwrap().records, 4);
    insta::assert_snapshot!(
        server.sql_text("SELECT * FROM sensors ORDER BY id").await,
        @"
    +----+--------------------------+------+-------+
    | id | ts                       | temp | site  |
    +----+--------------------------+------+-------+
    | 1  | 2023-11-14T22:13:20Z     | 1.5  | north |
    | 2  |                          |      |       |
    | 3  |                          | 3.5  |       |
    | 4  | 2023-11-14T22:13:21.500Z |      |       |
    +----+--------------------------+------+-------+
    "
    );

    let bad = b"{\"id\": 5}\n{\"id\": 6, \"humidity\": 3}\n".to_vec();
    let (_, error) = push_records(&server, "sensors", header.clone(), vec![bad]).await;
    let status = error.unwrap();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("record 1"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("humidity"),
        "{}",
        status.message()
    );
    let missing = b"{\"temp\": 1.0}".to_vec();
    let (_, error) = push_records(&server, "sensors", header, vec![missing]).await;
    let status = error.unwrap();
    assert!(status.message().contains("\"id\""), "{}", status.message());
    assert_eq!(server.count("sensors").await, 4);
}

/// A query over rows not yet committed returns them in a few Flight
/// messages. The decoder keeps a batch's root doubles in one shared buffer;
/// a Flight encoder that sized each column by its buffer's capacity would
/// count that buffer once per column and cut the rows into many tiny
/// messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_protobuf_rows_come_back_in_few_messages() {
    const COLUMNS: usize = 64;
    const ROWS: i64 = 5_000;
    let server = TestServer::start().await;
    let columns: Vec<String> = (0..COLUMNS).map(|c| format!("c{c} DOUBLE")).collect();
    server
        .sql(&format!("CREATE TABLE wide ({})", columns.join(", ")))
        .await;
    let fields: Vec<String> = (0..COLUMNS)
        .map(|c| format!("double c{c} = {};", c + 1))
        .collect();
    let proto = format!(
        "syntax = \"proto3\"; message Row {{ {} }}",
        fields.join(" ")
    );
    let descriptor = weir_codec::protobuf::descriptor_from_proto_source(&proto, "Row").unwrap();
    let records: Vec<Vec<u8>> = (0..ROWS)
        .map(|r| {
            let mut row = DynamicMessage::new(descriptor.clone());
            for field in descriptor.fields() {
                row.set_field(&field, Value::F64(r as f64 + 0.5));
            }
            row.encode_to_vec()
        })
        .collect();
    let header = serde_json::json!({"format": "protobuf", "proto": proto, "message": "Row"});
    let (_, error) = push_records(&server, "wide", header, vec![delimited(&records)]).await;
    assert!(error.is_none(), "{error:?}");

    let batches = server.sql("SELECT * FROM wide").await;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, ROWS as usize);
    // 5,000 rows of 64 doubles are 2.5 MB: two 2 MiB messages.
    assert!(batches.len() <= 4, "{} messages", batches.len());
    assert_eq!(
        server
            .scalar("SELECT CAST(sum(c63) AS BIGINT) FROM wide")
            .await,
        (0..ROWS).sum::<i64>() + ROWS / 2
    );
}
