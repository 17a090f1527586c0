//! SIGKILL during ingest, at random moments: after every restart each
//! acknowledged row is present exactly once.

use std::time::Duration;

use rand::Rng;
use weir_client::{Client, StreamOptions};

use crate::process::*;

const ROUNDS: i64 = 20;
const ROWS_PER_BATCH: i64 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_rows_survive_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut rng = rand::rng();
    // acked[r] = rows of round r acknowledged before the kill.
    let mut acked = Vec::new();

    let first = spawn(&data);
    sql(
        &first.url,
        "CREATE TABLE events (id BIGINT NOT NULL, round BIGINT NOT NULL)",
    )
    .await;
    let mut server = first;
    for round in 0..ROUNDS {
        let client = Client::connect(&server.url).await.unwrap();
        let mut stream = client
            .open_stream(
                "events",
                ids_schema(),
                StreamOptions {
                    max_in_flight: 8,
                    ..StreamOptions::default()
                },
            )
            .await
            .unwrap();
        let kill_after = Duration::from_millis(rng.random_range(50..400));
        let producer = async {
            let mut batch = 0i64;
            loop {
                let first_id = round * 1_000_000 + batch * ROWS_PER_BATCH;
                if stream
                    .send(ids_batch(first_id, ROWS_PER_BATCH, round))
                    .await
                    .is_err()
                {
                    break;
                }
                batch += 1;
            }
        };
        let _ = tokio::time::timeout(kill_after, producer).await;
        // Whatever was acked before the kill must survive it.
        let acked_rows = stream.acked().records;
        server.kill();
        drop(stream);
        acked.push(acked_rows);

        server = spawn(&data);
        let total = scalar(&server.url, "SELECT count(*) FROM events").await;
        let distinct = scalar(&server.url, "SELECT count(DISTINCT id) FROM events").await;
        assert_eq!(total, distinct, "round {round}: a row is present twice");
        for (r, rows) in acked.iter().enumerate() {
            let r = r as i64;
            let present = scalar(
                &server.url,
                &format!(
                    "SELECT count(*) FROM events WHERE round = {r} AND id < {}",
                    r * 1_000_000 + rows
                ),
            )
            .await;
            assert_eq!(
                present, *rows,
                "round {r}: acked rows missing after restart {round}"
            );
        }
    }
    assert!(
        acked.iter().filter(|rows| **rows > 0).count() >= ROUNDS as usize / 2,
        "most rounds acked something before the kill: {acked:?}"
    );
    let status = server.terminate();
    assert!(status.success(), "clean shutdown exits 0: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_commits_the_tail_and_a_second_server_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = spawn(&data);

    let second = std::process::Command::new(WEIR)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("is in use by another weir process"),
        "{stderr}"
    );

    sql(
        &server.url,
        "CREATE TABLE events (id BIGINT NOT NULL, round BIGINT NOT NULL)",
    )
    .await;
    let client = Client::connect(&server.url).await.unwrap();
    let mut stream = client
        .open_stream("events", ids_schema(), StreamOptions::default())
        .await
        .unwrap();
    stream.send(ids_batch(0, 500, 0)).await.unwrap();
    stream.close().await.unwrap();
    let status = server.terminate();
    assert!(status.success(), "{status:?}");

    // Delta alone now holds every row: read the table's log directly.
    let table = url::Url::from_directory_path(data.join("tables/events")).unwrap();
    let delta = deltalake::open_table(table).await.unwrap();
    let files: Vec<_> = delta.get_file_uris().unwrap().collect();
    assert!(!files.is_empty(), "the tail was committed on shutdown");
    let ctx = datafusion::prelude::SessionContext::new();
    delta.update_datafusion_session(&ctx.state()).unwrap();
    ctx.register_table(
        "t",
        std::sync::Arc::new(delta.table_provider().build().await.unwrap()),
    )
    .unwrap();
    let rows = ctx
        .sql("SELECT count(*) FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let count = rows[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(count, 500);
}
