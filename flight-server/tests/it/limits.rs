//! No request can kill or bloat the server: each crafted request below is
//! sent to a `weir serve` whose address space is capped, and must be
//! refused with the right code and a message naming the problem, while the
//! server stays up, nothing of the request lands, and a normal stream
//! afterwards still pushes and is acked.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    ArrayRef, DictionaryArray, Int8Array, Int64Array, NullArray, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Int8Type, Schema};
use arrow::ipc::CompressionType;
use arrow::ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions};
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{FlightData, FlightDescriptor};
use futures::StreamExt;
use tonic::Code;
use tonic::transport::Channel;
use weir_client::{Client, StreamOptions};

use crate::process::*;

/// The cap on the server's address space in these tests.
const ADDRESS_SPACE: u64 = 8 << 30;

const TABLE_DDL: &str = "CREATE TABLE t (id BIGINT, temp DOUBLE, site VARCHAR, \
     a BIGINT, b BIGINT, c BIGINT, d BIGINT, e DOUBLE, f DOUBLE, g DOUBLE, h DOUBLE)";

struct Capped {
    _dir: tempfile::TempDir,
    server: WeirProcess,
}

/// A capped server with table `t` (nullable columns, so that nulls may be
/// filled in) and the given `[limits]` lines.
async fn capped(limits: &str) -> Capped {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n[commit]\ninterval_ms = 200\n[limits]\n\
             query_memory_bytes = 536870912\nquery_memory_per_query_bytes = 268435456\n{limits}"
        ),
    )
    .unwrap();
    let server = spawn_with(&dir.path().join("data"), &config, Some(ADDRESS_SPACE));
    sql(&server.url, TABLE_DDL).await;
    Capped { _dir: dir, server }
}

impl Capped {
    /// The server is up, `t` holds `rows` rows, and a normal stream pushes
    /// and is acked.
    async fn assert_healthy(&mut self, rows: i64) {
        assert!(self.server.is_alive(), "the server died");
        assert_eq!(
            scalar(&self.server.url, "SELECT count(*) FROM t").await,
            rows
        );
        let client = Client::connect(&self.server.url).await.unwrap();
        let mut stream = client
            .open_stream("t", ids_schema_t(), StreamOptions::default())
            .await
            .unwrap();
        stream.send(ids_batch_t(1000, 5)).await.unwrap();
        let ack = stream.close().await.unwrap();
        assert_eq!(ack.records, 5);
        assert_eq!(
            scalar(&self.server.url, "SELECT count(*) FROM t").await,
            rows + 5
        );
    }
}

fn ids_schema_t() -> Arc<Schema> {
    Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]))
}

fn ids_batch_t(first: i64, rows: i64) -> RecordBatch {
    RecordBatch::try_new(
        ids_schema_t(),
        vec![Arc::new(Int64Array::from_iter_values(first..first + rows))],
    )
    .unwrap()
}

/// What a raw `DoPut` got back: the acks' JSON, then how the stream ended.
struct Outcome {
    acks: Vec<serde_json::Value>,
    end: Result<(), tonic::Status>,
}

impl Outcome {
    fn status(&self) -> &tonic::Status {
        match &self.end {
            Err(status) => status,
            Ok(()) => panic!("the stream ended with OK after acks {:?}", self.acks),
        }
    }

    fn assert_refused(&self, code: Code, needle: &str) {
        let status = self.status();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(
            status.message().contains(needle),
            "{:?} lacks {needle:?}",
            status.message()
        );
    }
}

/// Sends `messages` as one `DoPut` to table `t` and collects the reply.
async fn raw_do_put(url: &str, mut messages: Vec<FlightData>) -> Outcome {
    let channel = Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightServiceClient::new(channel).max_encoding_message_size(usize::MAX);
    messages[0].flight_descriptor = Some(FlightDescriptor::new_path(vec!["t".into()]));
    let (tx, rx) = tokio::sync::mpsc::channel(messages.len());
    for m in messages {
        tx.send(m).await.unwrap();
    }
    // Keep the request open until the server has answered: a producer that
    // half-closes would mask an OK end.
    let request = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut acks = Vec::new();
    let end = match client.do_put(request).await {
        Err(status) => Err(status),
        Ok(response) => {
            let mut replies = response.into_inner();
            loop {
                match tokio::time::timeout(Duration::from_secs(60), replies.next()).await {
                    Err(_) => panic!("no reply within 60 s after acks {acks:?}"),
                    Ok(None) => break Ok(()),
                    Ok(Some(Err(status))) => break Err(status),
                    Ok(Some(Ok(put))) => {
                        acks.push(serde_json::from_slice(&put.app_metadata).unwrap());
                    }
                }
            }
        }
    };
    drop(tx);
    Outcome { acks, end }
}

/// Raw IPC messages for `batch`: schema, dictionaries, the batch, each with
/// `offset_id` metadata on the batch.
fn raw_ipc(batch: &RecordBatch, compression: Option<CompressionType>) -> Vec<FlightData> {
    let generator = IpcDataGenerator::default();
    let options = IpcWriteOptions::default()
        .try_with_compression(compression)
        .unwrap();
    let mut tracker = DictionaryTracker::new(false);
    let schema =
        generator.schema_to_bytes_with_dictionary_tracker(&batch.schema(), &mut tracker, &options);
    let (dictionaries, encoded) = generator
        .encode(
            batch,
            &mut tracker,
            &options,
            &mut IpcWriteContext::default(),
        )
        .unwrap();
    let mut messages = vec![FlightData::from(schema)];
    messages.extend(dictionaries.into_iter().map(FlightData::from));
    messages.push(FlightData::from(encoded).with_app_metadata(&b"{\"offset_id\": 0}"[..]));
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrow_batches_that_decode_to_more_than_the_limits_are_refused() {
    let mut capped = capped("").await;
    let url = capped.server.url.clone();

    // Two billion Null rows: no buffers, a few hundred bytes on the wire.
    let nulls = RecordBatch::try_from_iter([(
        "temp",
        Arc::new(NullArray::new(i32::MAX as usize)) as ArrayRef,
    )])
    .unwrap();
    let raw = raw_ipc(&nulls, None);
    assert!(raw.iter().map(|m| m.data_body.len()).sum::<usize>() < 1024);
    raw_do_put(&url, raw)
        .await
        .assert_refused(Code::ResourceExhausted, "limits.max_request_rows");
    // The same batch through arrow-flight's encoder, as a client sends it.
    let client = Client::connect(&url).await.unwrap();
    let mut stream = client
        .open_stream("t", nulls.schema(), StreamOptions::default())
        .await
        .unwrap();
    stream.send(nulls).await.unwrap();
    let err = stream.wait_for(0).await.unwrap_err().to_string();
    assert!(err.contains("limits.max_request_rows"), "{err}");

    // 1,000 rows that all reference one 1 MiB dictionary value: 1 GB once
    // unpacked.
    let long = "x".repeat(1 << 20);
    let keys = Int8Array::from(vec![0i8; 1000]);
    let values = StringArray::from(vec![long.as_str()]);
    let sites = DictionaryArray::<Int8Type>::try_new(keys, Arc::new(values)).unwrap();
    let batch = RecordBatch::try_from_iter([("site", Arc::new(sites) as ArrayRef)]).unwrap();
    raw_do_put(&url, raw_ipc(&batch, None))
        .await
        .assert_refused(Code::ResourceExhausted, "limits.max_request_bytes");

    // A compressed buffer that claims 1 TiB once decompressed.
    let ids = RecordBatch::try_from_iter([(
        "id",
        Arc::new(Int64Array::from_iter_values(0..1000)) as ArrayRef,
    )])
    .unwrap();
    let mut raw = raw_ipc(&ids, Some(CompressionType::ZSTD));
    let last = raw.last_mut().unwrap();
    let mut body = last.data_body.to_vec();
    body[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    last.data_body = body.into();
    raw_do_put(&url, raw)
        .await
        .assert_refused(Code::ResourceExhausted, "limits.max_request_bytes");

    capped.assert_healthy(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_body_shorter_than_its_header_is_invalid_after_the_good_ones_are_acked() {
    let mut capped = capped("").await;
    let good = ids_batch_t(0, 10);
    let mut messages = raw_ipc(&good, None);
    let mut bad = messages.last().unwrap().clone();
    let half = bad.data_body.len() / 2;
    bad.data_body = bad.data_body.slice(..half);
    bad.app_metadata = b"{\"offset_id\": 1}"[..].into();
    messages.push(bad);
    let outcome = raw_do_put(&capped.server.url, messages).await;
    outcome.assert_refused(
        Code::InvalidArgument,
        "batch offset_id 1: invalid Arrow IPC data",
    );
    assert_eq!(
        outcome.acks.last().unwrap()["ack_up_to_offset"],
        0,
        "the good batch was acked first: {:?}",
        outcome.acks
    );
    capped.assert_healthy(10).await;
}

fn records_header(format: &str) -> FlightData {
    let header = match format {
        "json" => serde_json::json!({"format": "json"}),
        _ => serde_json::json!({
            "format": "protobuf",
            "proto": "syntax = \"proto3\"; message R { int64 id = 1; double temp = 2; string site = 3; \
                      int64 a = 4; int64 b = 5; int64 c = 6; int64 d = 7; double e = 8; double f = 9; \
                      double g = 10; double h = 11; }",
            "message": "R",
        }),
    };
    FlightData::new().with_app_metadata(header.to_string().into_bytes())
}

fn request(body: Vec<u8>) -> FlightData {
    FlightData::new()
        .with_app_metadata(&b"{\"offset_id\": 0}"[..])
        .with_data_body(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_decode_to_more_than_the_limits_are_refused() {
    let mut capped = capped("").await;
    let url = capped.server.url.clone();

    // Two million empty protobuf records in 2 MiB: each is a full row.
    let outcome = raw_do_put(
        &url,
        vec![records_header("protobuf"), request(vec![0u8; 2 << 20])],
    )
    .await;
    outcome.assert_refused(Code::ResourceExhausted, "limits.max_request_rows");
    // Under the row limit, over the bytes limit: a million empty records
    // of a 95-byte row.
    let outcome = raw_do_put(
        &url,
        vec![records_header("protobuf"), request(vec![0u8; 1_000_000])],
    )
    .await;
    outcome.assert_refused(Code::ResourceExhausted, "limits.max_request_bytes");

    // JSON nested a million levels deep.
    let deep = format!(
        "{{\"site\": {}{}}}",
        "[".repeat(1_000_000),
        "]".repeat(1_000_000)
    );
    let outcome = raw_do_put(
        &url,
        vec![records_header("json"), request(deep.into_bytes())],
    )
    .await;
    outcome.assert_refused(Code::InvalidArgument, "nested deeper than 64 levels");
    // Two million `{}`: each a full row.
    let outcome = raw_do_put(
        &url,
        vec![
            records_header("json"),
            request("{}".repeat(2 << 20).into_bytes()),
        ],
    )
    .await;
    outcome.assert_refused(Code::ResourceExhausted, "limits.max_request_rows");

    capped.assert_healthy(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_that_echo_input_fit_any_trailer_limit() {
    let mut capped = capped("").await;
    let name = "n".repeat(100_000);
    let client = Client::connect(&capped.server.url).await.unwrap();
    let err = client
        .open_stream(&name, ids_schema_t(), StreamOptions::default())
        .await
        .unwrap_err();
    let weir_client::Error::Server(status) = err else {
        panic!("{err:?}")
    };
    // The real error, not "metadata too large".
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("not found"), "{status:?}");
    assert!(status.message().len() < 500, "{}", status.message().len());
    // A column name of 100 KB.
    let schema = Arc::new(Schema::new(vec![Field::new(&name, DataType::Int64, true)]));
    let err = client
        .open_stream("t", schema, StreamOptions::default())
        .await
        .unwrap_err();
    let weir_client::Error::Server(status) = err else {
        panic!("{err:?}")
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("unknown column"), "{status:?}");
    assert!(status.message().len() < 500, "{}", status.message().len());
    capped.assert_healthy(0).await;
}

/// Runs a query over FlightSQL, keeping the status of a failure.
async fn query_status(url: &str, sql: &str) -> Result<Vec<RecordBatch>, tonic::Status> {
    use arrow_flight::error::FlightError;
    use futures::TryStreamExt;
    let status = |e: FlightError| match e {
        FlightError::Tonic(status) => *status,
        other => tonic::Status::unknown(other.to_string()),
    };
    let channel = Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(status)?;
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let stream = client
            .do_get(endpoint.ticket.unwrap())
            .await
            .map_err(status)?;
        batches.extend(stream.try_collect::<Vec<_>>().await.map_err(status)?);
    }
    Ok(batches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_its_memory_limit_fails_and_ingest_goes_on() {
    let mut capped = capped("").await;
    let status = query_status(
        &capped.server.url,
        "SELECT length(string_agg(repeat('x', 100000), '')) FROM \
         generate_series(1, 100000) AS t(v)",
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("limits.query_memory_per_query_bytes"),
        "{status:?}"
    );
    capped.assert_healthy(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_cap_are_refused_until_one_closes() {
    let mut capped = capped("max_streams = 3\n").await;
    let client = Client::connect(&capped.server.url).await.unwrap();
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(
            client
                .open_stream("t", ids_schema_t(), StreamOptions::default())
                .await
                .unwrap(),
        );
    }
    let err = client
        .open_stream("t", ids_schema_t(), StreamOptions::default())
        .await
        .unwrap_err();
    let weir_client::Error::Server(status) = err else {
        panic!("{err:?}")
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("limits.max_streams"),
        "{status:?}"
    );
    open.pop().unwrap().close().await.unwrap();
    // The slot is given back once the stream's task has ended.
    tokio::time::sleep(Duration::from_millis(200)).await;
    capped.assert_healthy(0).await;
}
