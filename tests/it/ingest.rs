//! Push, ack, query, commit, restart.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch};
use arrow_flight::{FlightClient, FlightDescriptor, PutResult};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use weir_client::StreamOptions;

use crate::support::*;

const STREAMS: i64 = 4;
const BATCHES: i64 = 25;
const ROWS: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_are_acked_visible_committed_and_survive_restart() {
    let mut server = TestServer::start().await;
    server.sql(SENSORS_DDL).await;
    let client = server.client().await;

    let producers = (0..STREAMS).map(|s| {
        let client = client.clone();
        tokio::spawn(async move {
            let mut stream = client
                .open_stream("sensors", sensors_schema(), StreamOptions::default())
                .await
                .unwrap();
            for b in 0..BATCHES {
                let first = (s * BATCHES + b) * ROWS as i64;
                stream.send(sensor_batch(first, ROWS)).await.unwrap();
            }
            stream.close().await.unwrap()
        })
    });
    let acks = futures::future::join_all(producers).await;
    for ack in acks {
        let ack = ack.unwrap();
        assert_eq!(ack.offset, BATCHES - 1);
        assert_eq!(ack.records, BATCHES * ROWS as i64);
    }
    let total = STREAMS * BATCHES * ROWS as i64;
    // Acked means visible: no commit has to happen first.
    assert_eq!(server.count("sensors").await, total);

    server.server().catalog().commit_all().await.unwrap();
    let table = server.server().catalog().table("sensors").unwrap();
    assert_eq!(table.stats().tail_rows, 0, "the commit emptied the tail");
    assert_eq!(server.count("sensors").await, total);
    assert_eq!(
        server
            .scalar("SELECT count(DISTINCT id) FROM sensors")
            .await,
        total
    );
    assert_eq!(delta_row_count(&server, "sensors").await, total as usize);

    server.restart().await;
    assert_eq!(server.count("sensors").await, total);
    assert_eq!(
        server
            .scalar("SELECT count(DISTINCT id) FROM sensors")
            .await,
        total
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_ack_makes_its_rows_visible_before_any_commit() {
    let server = TestServer::start().await;
    server.sql(SENSORS_DDL).await;
    let mut stream = server.sensors_stream().await;
    for b in 0..5i64 {
        let offset = stream.send(sensor_batch(b * 10, 10)).await.unwrap();
        stream.wait_for(offset).await.unwrap();
        assert_eq!(
            server.count("sensors").await,
            (b + 1) * 10,
            "read-your-writes"
        );
    }
    stream.close().await.unwrap();
    // The committer may have run meanwhile; either way each row counts once.
    assert_eq!(
        server
            .scalar("SELECT count(DISTINCT id) FROM sensors")
            .await,
        50
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_committer_writes_delta_with_a_txn_watermark() {
    let server = TestServer::start().await;
    server.sql(SENSORS_DDL).await;
    let mut stream = server.sensors_stream().await;
    stream.send(sensor_batch(0, 100)).await.unwrap();
    stream.close().await.unwrap();

    // Config::for_tests commits every 200 ms.
    let mut rows = 0;
    for _ in 0..100 {
        rows = delta_row_count(&server, "sensors").await;
        if rows == 100 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(rows, 100, "the committer did not commit within 5 s");

    let delta = deltalake::open_table(server.table_url("sensors"))
        .await
        .unwrap();
    let snapshot = delta.snapshot().unwrap();
    let mut txns = Vec::new();
    let node = std::fs::read_to_string(server.dir.path().join("node.json")).unwrap();
    let node: serde_json::Value = serde_json::from_str(&node).unwrap();
    let app_id = format!("weir/{}/sensors", node["node_id"].as_str().unwrap());
    if let Some(v) = snapshot
        .transaction_version(delta.log_store().as_ref(), &app_id)
        .await
        .unwrap()
    {
        txns.push(v);
    }
    assert_eq!(
        txns.len(),
        1,
        "the commit carries a txn action for {app_id}"
    );
    assert!(txns[0] >= 1);
}

/// The wire convention, spoken with a plain Flight client as pyarrow would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_flight_do_put_gets_ready_and_cumulative_acks() {
    let server = TestServer::start().await;
    server.sql(SENSORS_DDL).await;
    let channel = tonic::transport::Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut flight = FlightClient::new(channel);
    flight.metadata_mut().insert(
        weir_flight_server::doput::TABLE_HEADER,
        "main.default.sensors".parse().unwrap(),
    );

    let batches: Vec<RecordBatch> = (0..3).map(|b| sensor_batch(b * 5, 5)).collect();
    let mut messages =
        arrow_flight::utils::batches_to_flight_data(&sensors_schema(), batches).unwrap();
    messages[0] = messages[0]
        .clone()
        .with_descriptor(FlightDescriptor::new_cmd(Vec::<u8>::new()));
    for (offset, message) in messages.iter_mut().skip(1).enumerate() {
        *message = message
            .clone()
            .with_app_metadata(format!("{{\"offset_id\": {offset}}}").into_bytes());
    }
    let input = futures::stream::iter(messages.into_iter().map(Ok));
    let acks: Vec<PutResult> = flight
        .do_put(input)
        .await
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
        .await;
    let acks: Vec<serde_json::Value> = acks
        .iter()
        .map(|a| serde_json::from_slice(&a.app_metadata).unwrap())
        .collect();
    assert_eq!(
        acks,
        vec![
            serde_json::json!({"ack_up_to_offset": -1, "ack_up_to_records": 0}),
            serde_json::json!({"ack_up_to_offset": 0, "ack_up_to_records": 5}),
            serde_json::json!({"ack_up_to_offset": 1, "ack_up_to_records": 10}),
            serde_json::json!({"ack_up_to_offset": 2, "ack_up_to_records": 15}),
        ]
    );
    assert_eq!(server.count("sensors").await, 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_tail_pushes_back_until_the_committer_makes_room() {
    let server = TestServer::start().await;
    server.sql(SENSORS_DDL).await;
    let mut stream = server.sensors_stream().await;
    // Config::for_tests budgets 4 MiB of tail; send several times that.
    let batch = sensor_batch(0, 20_000);
    let batch_bytes = batch.get_array_memory_size();
    let batches = (12 << 20) / batch_bytes + 1;
    let table = server.server().catalog().table("sensors").unwrap();
    let mut peak = 0;
    for b in 0..batches as i64 {
        let ids = Int64Array::from_iter_values((0..20_000).map(|i| b * 20_000 + i));
        let mut columns = batch.columns().to_vec();
        columns[0] = Arc::new(ids);
        stream
            .send(RecordBatch::try_new(sensors_schema(), columns).unwrap())
            .await
            .unwrap();
        peak = peak.max(table.stats().tail_bytes);
    }
    let ack = stream.close().await.unwrap();
    assert_eq!(ack.records, batches as i64 * 20_000);
    assert!(
        peak <= (4 << 20) + 2 * batch_bytes,
        "tail peaked at {peak} bytes, budget 4 MiB"
    );
    assert_eq!(server.count("sensors").await, batches as i64 * 20_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_write_checkpoints_and_free_wal_segments() {
    let server = TestServer::start().await;
    server.sql(SENSORS_DDL).await;
    let wal_dir = server.dir.path().join("wal");
    let segment_names = || -> Vec<String> {
        std::fs::read_dir(&wal_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let mut seen = std::collections::BTreeSet::new();
    // Config::for_tests: 256 KiB segments, a checkpoint every 5 commits.
    for round in 0..6i64 {
        let mut stream = server.sensors_stream().await;
        for b in 0..4 {
            stream
                .send(sensor_batch((round * 4 + b) * 5_000, 5_000))
                .await
                .unwrap();
        }
        stream.close().await.unwrap();
        seen.extend(segment_names());
        server.server().catalog().commit_all().await.unwrap();
    }
    let left = segment_names();
    assert!(seen.len() > 4, "the test wrote several segments: {seen:?}");
    assert!(
        left.len() <= 2,
        "committed segments were deleted: {left:?} left"
    );
    let log = server.dir.path().join("tables/sensors/_delta_log");
    let checkpoints: Vec<_> = std::fs::read_dir(&log)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".checkpoint."))
        .collect();
    assert!(!checkpoints.is_empty(), "no checkpoint in {log:?}");
    assert_eq!(server.count("sensors").await, 6 * 4 * 5_000);
    assert_eq!(delta_row_count(&server, "sensors").await, 6 * 4 * 5_000);
}

/// Rows in the Delta table, read with deltalake and DataFusion, not weir.
pub async fn delta_row_count(server: &TestServer, table: &str) -> usize {
    let delta = deltalake::open_table(server.table_url(table))
        .await
        .unwrap();
    let ctx = SessionContext::new();
    delta.update_datafusion_session(&ctx.state()).unwrap();
    let provider = delta.table_provider().build().await.unwrap();
    ctx.register_table("t", Arc::new(provider)).unwrap();
    let batches = ctx
        .sql("SELECT count(*) FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0) as usize
}

/// A producer may send a request of about a megabyte in one HTTP/2 frame
/// (HTTP/2's default is 16 KiB): the server's SETTINGS say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_takes_http2_frames_of_a_megabyte() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = TestServer::start().await;
    let settings = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut socket = tokio::net::TcpStream::connect(server.server().addr())
            .await
            .unwrap();
        // The client's preface, then an empty SETTINGS frame.
        socket
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        socket
            .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
            .await
            .unwrap();
        // The server's first frame is its SETTINGS: 6-byte entries of an
        // identifier and a value.
        let mut header = [0u8; 9];
        socket.read_exact(&mut header).await.unwrap();
        assert_eq!(header[3], 4, "not a SETTINGS frame: {header:?}");
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut payload = vec![0u8; len];
        socket.read_exact(&mut payload).await.unwrap();
        payload
            .chunks_exact(6)
            .map(|e| {
                let id = u16::from_be_bytes([e[0], e[1]]);
                (id, u32::from_be_bytes([e[2], e[3], e[4], e[5]]))
            })
            .collect::<std::collections::HashMap<_, _>>()
    })
    .await
    .expect("the server sent its SETTINGS");
    const MAX_FRAME_SIZE: u16 = 5;
    assert_eq!(
        settings.get(&MAX_FRAME_SIZE),
        Some(&(1 << 20)),
        "{settings:?}"
    );
}
