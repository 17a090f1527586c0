//! The crash matrix: a `weir serve` child killed at random moments and at
//! named points inside the commit and the WAL, with named and anonymous
//! producers writing at once. The named producers live through every
//! crash: `weir-client` reconnects to the restarted server and resends what
//! was not acknowledged. After every restart each acked row is present,
//! each named stream holds exactly a prefix of its rows, each once, and
//! the Delta table read directly (not through weir) holds no row twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use rand::Rng;
use weir_client::{Client, StreamOptions};

use crate::process::*;

const ROUNDS: i64 = 50;
const ROWS_PER_BATCH: i64 = 5;
/// Producers pace themselves, so that the table stays small enough to
/// check every round.
const PACE: Duration = Duration::from_millis(4);
const NAMED: i64 = 2;
const ANONYMOUS: i64 = 2;
/// Ids of producer `p` start at `p * PRODUCER_IDS`.
const PRODUCER_IDS: i64 = 1 << 40;
/// Ids of an anonymous producer's round `r` start `r * ROUND_IDS` after it.
const ROUND_IDS: i64 = 1 << 24;

/// How a round ends.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// SIGKILL after a random time.
    Random,
    /// The server aborts at a crash point (`WEIR_CRASH_AT`).
    At,
    /// The table's Delta log is unwritable, so commits write their Parquet
    /// files and fail before the log entry; then SIGKILL.
    BeforeDeltaCommit,
}

fn kill_of(round: i64, rng: &mut impl Rng) -> (Kill, String) {
    match round % 5 {
        0 | 1 => (Kill::Random, String::new()),
        2 => (Kill::At, "after-commit".into()),
        3 => {
            let nth = rng.random_range(3..30);
            (Kill::At, format!("wal-mid-group:{nth}"))
        }
        _ => (Kill::BeforeDeltaCommit, String::new()),
    }
}

/// The first id of a request: named streams number their rows by offset
/// across rounds, the anonymous ones start afresh each round.
fn first_id(producer: i64, round: i64, offset: i64) -> i64 {
    let round_base = if producer >= NAMED {
        round * ROUND_IDS
    } else {
        0
    };
    producer * PRODUCER_IDS + round_base + offset * ROWS_PER_BATCH
}

/// An anonymous producer: sends batches until the server goes away;
/// `acked` follows the highest acked offset.
async fn produce_anonymous(url: String, producer: i64, round: i64, acked: Arc<AtomicI64>) {
    let options = StreamOptions {
        max_in_flight: 8,
        reconnect_attempts: 0,
        ..StreamOptions::default()
    };
    let Ok(client) = Client::connect(&url).await else {
        return;
    };
    let Ok(mut stream) = client.open_stream("events", ids_schema(), options).await else {
        return;
    };
    loop {
        let first = first_id(producer, round, stream.next_offset());
        let sent = stream
            .send(ids_batch(first, ROWS_PER_BATCH, producer))
            .await;
        acked.store(stream.acked().offset, Ordering::Release);
        if sent.is_err() {
            return;
        }
        tokio::time::sleep(PACE).await;
    }
}

/// A named producer that lives through every crash: it reconnects and
/// resends on its own until `stop`, then flushes. `acked` follows the
/// highest acked offset. Returns the last offset sent.
async fn produce_named(
    url: String,
    producer: i64,
    acked: Arc<AtomicI64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> i64 {
    let options = StreamOptions {
        max_in_flight: 8,
        name: Some(format!("named-{producer}")),
        reconnect_attempts: 200,
        reconnect_backoff: Duration::from_millis(10),
    };
    let client = Client::connect(&url).await.unwrap();
    let mut stream = client
        .open_stream("events", ids_schema(), options)
        .await
        .unwrap();
    while !stop.load(Ordering::Acquire) {
        let first = first_id(producer, 0, stream.next_offset());
        stream
            .send(ids_batch(first, ROWS_PER_BATCH, producer))
            .await
            .unwrap_or_else(|e| panic!("named-{producer} gave up: {e}"));
        acked.store(stream.acked().offset, Ordering::Release);
        tokio::time::sleep(PACE).await;
    }
    let last = stream.next_offset() - 1;
    let ack = stream.close().await.unwrap();
    assert_eq!(ack.offset, last);
    acked.store(last, Ordering::Release);
    last
}

/// Rows, distinct ids and the highest id per producer and round (0 for
/// the named producers, whose ids do not depend on the round), as weir
/// serves them: one query.
async fn rows_by_producer(url: &str) -> std::collections::HashMap<(i64, i64), (i64, i64, i64)> {
    let query = format!(
        "SELECT round, (id % {PRODUCER_IDS}) / {ROUND_IDS}, count(*), count(DISTINCT id), max(id) \
         FROM events GROUP BY 1, 2"
    );
    let mut rows = std::collections::HashMap::new();
    for batch in sql(url, &query).await {
        let column = |i: usize| {
            batch
                .column(i)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap()
                .clone()
        };
        let (p, r, n, distinct, max) = (column(0), column(1), column(2), column(3), column(4));
        for i in 0..batch.num_rows() {
            let key = (p.value(i), r.value(i));
            rows.insert(key, (n.value(i), distinct.value(i), max.value(i)));
        }
    }
    rows
}

/// Rows and distinct ids of the Delta table, read with the deltalake crate.
async fn delta_rows(data: &std::path::Path) -> (i64, i64) {
    let table = url::Url::from_directory_path(data.join("tables/events")).unwrap();
    let delta = deltalake::open_table(table).await.unwrap();
    let ctx = datafusion::prelude::SessionContext::new();
    delta.update_datafusion_session(&ctx.state()).unwrap();
    ctx.register_table("t", Arc::new(delta.table_provider().build().await.unwrap()))
        .unwrap();
    let rows = ctx
        .sql("SELECT count(*), count(DISTINCT id) FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let column = |i: usize| {
        rows[0]
            .column(i)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap()
            .value(0)
    };
    (column(0), column(1))
}

fn parquet_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "parquet")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crash_matrix_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut rng = rand::rng();
    // Rows acked per anonymous producer and round.
    let mut anonymous_acked: Vec<(i64, i64, i64)> = Vec::new();
    let mut crashed_itself = 0;
    let mut orphaned_files = 0;

    // One address for every server, so the named producers find it again.
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let first = spawn_env(&data, &listen, &[]);
    sql(
        &first.url,
        "CREATE TABLE events (id BIGINT NOT NULL, round BIGINT NOT NULL)",
    )
    .await;
    let url = first.url.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let named_acked: Vec<Arc<AtomicI64>> =
        (0..NAMED).map(|_| Arc::new(AtomicI64::new(-1))).collect();
    let named: Vec<_> = (0..NAMED)
        .map(|p| {
            tokio::spawn(produce_named(
                url.clone(),
                p,
                Arc::clone(&named_acked[p as usize]),
                Arc::clone(&stop),
            ))
        })
        .collect();
    let mut server = first;
    for round in 0..ROUNDS {
        let started = std::time::Instant::now();
        let (kill, crash_at) = kill_of(round, &mut rng);
        if !crash_at.is_empty() {
            server.kill();
            server = spawn_env(&data, &listen, &[("WEIR_CRASH_AT", &crash_at)]);
        }
        let acked: Vec<Arc<AtomicI64>> = (0..ANONYMOUS)
            .map(|_| Arc::new(AtomicI64::new(-1)))
            .collect();
        let producers: Vec<_> = (0..ANONYMOUS)
            .map(|a| {
                tokio::spawn(produce_anonymous(
                    server.url.clone(),
                    NAMED + a,
                    round,
                    Arc::clone(&acked[a as usize]),
                ))
            })
            .collect();
        let table = data.join("tables/events");
        match kill {
            Kill::Random => {
                tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
                server.kill();
            }
            Kill::At => {
                if server.crash_or_kill(Duration::from_secs(10)).await {
                    crashed_itself += 1;
                }
            }
            Kill::BeforeDeltaCommit => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let log = table.join("_delta_log");
                let away = table.join("log-away");
                std::fs::rename(&log, &away).unwrap();
                std::fs::write(&log, b"not a directory").unwrap();
                let before = parquet_files(&table);
                tokio::time::sleep(Duration::from_millis(500)).await;
                server.kill();
                orphaned_files += parquet_files(&table) - before;
                std::fs::remove_file(&log).unwrap();
                std::fs::rename(&away, &log).unwrap();
            }
        }
        // What was acked before the kill must survive it.
        let acked_before: Vec<i64> = named_acked
            .iter()
            .map(|a| a.load(Ordering::Acquire))
            .collect();
        for producer in producers {
            tokio::time::timeout(Duration::from_secs(30), producer)
                .await
                .expect("a producer stops once its server is gone")
                .unwrap();
        }
        for a in 0..ANONYMOUS {
            let offset = acked[a as usize].load(Ordering::Acquire);
            anonymous_acked.push((NAMED + a, round, (offset + 1) * ROWS_PER_BATCH));
        }
        let killed = started.elapsed();
        server = spawn_env(&data, &listen, &[]);
        let restarted = started.elapsed();
        let context = format!("round {round} ({kill:?} {crash_at})");
        // Delta first: the named producers go on writing, so weir, read
        // after it, holds at least what it holds.
        let (delta_total, delta_distinct) = delta_rows(&data).await;
        let rows = rows_by_producer(&server.url).await;
        let total: i64 = rows.values().map(|r| r.0).sum();
        let distinct: i64 = rows.values().map(|r| r.1).sum();
        assert_eq!(total, distinct, "{context}: a row is present twice");
        for p in 0..NAMED {
            // Exactly a prefix of the stream's offsets, each once, and at
            // least every acked one.
            let (n, distinct, max) = rows.get(&(p, 0)).copied().unwrap_or((0, 0, -1));
            assert_eq!(n, distinct, "{context}: named-{p} has a row twice");
            let prefix = if n == 0 {
                0
            } else {
                max + 1 - p * PRODUCER_IDS
            };
            assert_eq!(n, prefix, "{context}: named-{p} has a gap");
            assert!(
                n >= (acked_before[p as usize] + 1) * ROWS_PER_BATCH,
                "{context}: named-{p} lost acked rows"
            );
        }
        for &(p, r, acked_rows) in &anonymous_acked {
            let (present, _, _) = rows.get(&(p, r)).copied().unwrap_or_default();
            assert!(
                present >= acked_rows,
                "{context}: anonymous {p} lost acked rows of round {r}: {present} < {acked_rows}"
            );
        }
        assert_eq!(
            delta_total, delta_distinct,
            "{context}: Delta holds a row twice"
        );
        assert!(
            delta_total <= total,
            "{context}: Delta holds rows weir does not"
        );
        eprintln!(
            "{context}: {total} rows, {delta_total} in Delta; killed after {killed:?}, \
             restarted after {restarted:?}, checked after {:?}",
            started.elapsed()
        );
    }
    assert!(
        crashed_itself >= (ROUNDS / 5) as usize,
        "most crash-point rounds reached their point: {crashed_itself}"
    );
    assert!(
        orphaned_files > 0,
        "commits wrote Parquet files that no commit holds"
    );

    // The named producers finish on the last server: each holds exactly the
    // rows of the offsets it sent, each once.
    stop.store(true, Ordering::Release);
    let mut last_offsets = Vec::new();
    for producer in named {
        last_offsets.push(producer.await.unwrap());
    }
    let rows = rows_by_producer(&server.url).await;
    for (p, last) in last_offsets.iter().enumerate() {
        assert!(*last > 10, "named-{p} made progress: {last}");
        let expected = (last + 1) * ROWS_PER_BATCH;
        assert_eq!(rows[&(p as i64, 0)].0, expected, "named-{p}");
        assert_eq!(rows[&(p as i64, 0)].1, expected, "named-{p}");
    }

    // A clean stop commits everything: Delta alone then agrees with weir.
    let total = scalar(&server.url, "SELECT count(*) FROM events").await;
    assert!(server.terminate().success());
    assert_eq!(delta_rows(&data).await, (total, total));
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
    assert_eq!(delta_rows(&data).await.0, 500);
}
