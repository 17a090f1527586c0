//! Memory that grows with the number of streams or the size of the WAL is
//! bounded: many idle streams cost a bounded amount each, and a restart
//! replays a WAL tail larger than the tail budget without holding it.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use weir_client::{Client, StreamOptions};

use crate::process::*;

fn config(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("listen = \"127.0.0.1:0\"\n{text}")).unwrap();
    path
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("pad", DataType::Utf8, true),
    ]))
}

/// `rows` rows of about 1 KB each, ids from `first`.
fn padded(first: i64, rows: i64) -> RecordBatch {
    let pad = "p".repeat(1000);
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(first..first + rows)),
            Arc::new(StringArray::from_iter_values(
                (0..rows).map(|_| pad.as_str()),
            )),
        ],
    )
    .unwrap()
}

/// Idle streams this test holds open at once.
const IDLE_STREAMS: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_streams_cost_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let file = config(dir.path(), "weir.toml", "[limits]\nmax_streams = 20000\n");
    let mut server = spawn_with(&dir.path().join("data"), &file, Some(8 << 30));
    sql(
        &server.url,
        "CREATE TABLE idle (id BIGINT NOT NULL, pad VARCHAR)",
    )
    .await;
    // Ten connections, as many producers would open.
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(Client::connect(&server.url).await.unwrap());
    }
    let options = StreamOptions {
        max_in_flight: 1,
        ..StreamOptions::default()
    };
    let mut warm = clients[0]
        .open_stream("idle", schema(), options.clone())
        .await
        .unwrap();
    warm.send(padded(0, 1)).await.unwrap();
    warm.flush().await.unwrap();
    let before = server.memory("VmRSS");

    let mut streams = Vec::with_capacity(IDLE_STREAMS);
    for chunk in 0..IDLE_STREAMS / 500 {
        let opening = (0..500).map(|i| {
            let client = &clients[(chunk * 500 + i) % clients.len()];
            client.open_stream("idle", schema(), options.clone())
        });
        for stream in futures::future::join_all(opening).await {
            streams.push(stream.unwrap());
        }
    }
    let after = server.memory("VmRSS");
    let per_stream = after.saturating_sub(before) / IDLE_STREAMS as u64;
    eprintln!(
        "{IDLE_STREAMS} idle streams: RSS {} -> {} MiB, {per_stream} bytes per stream",
        before >> 20,
        after >> 20
    );
    // The README documents this bound.
    assert!(per_stream < 48 << 10, "{per_stream} bytes per idle stream");
    assert!(server.is_alive());

    // Every one of them still works.
    let last = streams.last_mut().unwrap();
    last.send(padded(1, 1)).await.unwrap();
    last.flush().await.unwrap();
    drop(streams);
    warm.close().await.unwrap();
    assert_eq!(scalar(&server.url, "SELECT count(*) FROM idle").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_tail_larger_than_the_budget_replays_within_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // While pushing: nothing is committed and the budget is large.
    let roomy = config(
        dir.path(),
        "roomy.toml",
        "[wal]\nsegment_bytes = 4194304\n[commit]\ninterval_ms = 3600000\n\
         target_bytes = 1073741824\n[limits]\ntail_budget_bytes = 1073741824\n",
    );
    // After the restart: budgets of a small part of the WAL tail.
    let tight = config(
        dir.path(),
        "tight.toml",
        "[wal]\nsegment_bytes = 4194304\n[commit]\ninterval_ms = 3600000\n\
         target_bytes = 1073741824\n[limits]\ntail_budget_bytes = 12582912\n\
         all_tails_budget_bytes = 16777216\n",
    );

    let empty = spawn_with(&dir.path().join("empty"), &tight, None);
    let baseline = empty.memory("VmHWM");
    empty.kill();

    let server = spawn_with(&data, &roomy, None);
    sql(
        &server.url,
        "CREATE TABLE big (id BIGINT NOT NULL, pad VARCHAR)",
    )
    .await;
    let client = Client::connect(&server.url).await.unwrap();
    let mut stream = client
        .open_stream("big", schema(), StreamOptions::default())
        .await
        .unwrap();
    const BATCHES: i64 = 100;
    const ROWS: i64 = 2000;
    for batch in 0..BATCHES {
        stream.send(padded(batch * ROWS, ROWS)).await.unwrap();
    }
    let ack = stream.flush().await.unwrap();
    assert_eq!(ack.records, BATCHES * ROWS);
    server.kill(); // about 200 MB in the WAL, none of it in Delta

    let restarted = spawn_with(&data, &tight, None);
    let peak = restarted.memory("VmHWM");
    let log = restarted.log.lock().unwrap().clone();
    assert!(log.contains("committed during replay"), "{log}");
    assert_eq!(
        scalar(&restarted.url, "SELECT count(*) FROM big").await,
        BATCHES * ROWS
    );
    assert_eq!(
        scalar(&restarted.url, "SELECT count(DISTINCT id) FROM big").await,
        BATCHES * ROWS
    );
    eprintln!(
        "replay of ~200 MB of WAL: peak RSS {} MiB, an empty server's {} MiB",
        peak >> 20,
        baseline >> 20
    );
    // Holding the WAL tail would take more than 200 MB (and twice that
    // with the decoded rows); replay within the budgets needs the budgets,
    // one segment and a commit's buffers, whatever the WAL's size (about
    // 75 MiB over an empty server here, for 100 MB and for 200 MB of WAL;
    // 76-87 MiB since commits sync their files, once 129 MiB with the
    // machine busy: the blocking threads' allocator arenas).
    assert!(
        peak < baseline + (160 << 20),
        "peak RSS {} MiB during replay, baseline {} MiB",
        peak >> 20,
        baseline >> 20
    );
}
