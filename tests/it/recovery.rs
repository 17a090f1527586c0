//! Findings of the exactly-once review, each reproduced: a table that does
//! not load at start, `DROP TABLE` against a commit, and WAL positions that
//! would restart below a table's watermark.

use std::time::Duration;

use weir_flight_server::{Config, Server};

use crate::support::*;

/// A config whose tails are not committed on their own: rows stay in the
/// WAL until shutdown.
fn holding(dir: &std::path::Path) -> Config {
    let mut config = Config::for_tests(dir);
    config.commit.interval_ms = 3_600_000;
    config.commit.target_bytes = 1 << 30;
    config
}

/// A server on `dir` with the [`holding`] config.
async fn start_holding(dir: tempfile::TempDir) -> TestServer {
    let config = holding(dir.path());
    let server = Server::start(config.clone()).await.unwrap();
    TestServer {
        server: Some(server),
        dir,
        config,
        token: None,
    }
}

/// Pushes `rows` sensor rows from id `first` and waits for their ack.
async fn push(server: &TestServer, first: i64, rows: usize) {
    let mut stream = server.sensors_stream().await;
    stream.send(sensor_batch(first, rows)).await.unwrap();
    stream.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_does_not_load_keeps_its_wal_rows_and_stops_the_start() {
    let test = start_holding(tempfile::tempdir().unwrap()).await;
    test.sql(SENSORS_DDL).await;
    push(&test, 0, 10).await;
    let TestServer { server, dir, .. } = test;
    drop(server); // a crash: the 10 rows are only in the WAL

    let log = dir.path().join("tables/sensors/_delta_log");
    let first = log.join("00000000000000000000.json");
    let aside = dir.path().join("first-commit.json");
    std::fs::rename(&first, &aside).unwrap();
    let err = Server::start(holding(dir.path()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("table \"sensors\" cannot be loaded"), "{err}");
    assert!(err.contains("kept in the WAL"), "{err}");

    // Repaired, the table comes back with every acknowledged row.
    std::fs::rename(&aside, &first).unwrap();
    let test = start_holding(dir).await;
    assert_eq!(test.count("sensors").await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_after_drop_table_writes_nothing() {
    let test = start_holding(tempfile::tempdir().unwrap()).await;
    test.sql(SENSORS_DDL).await;
    push(&test, 0, 10).await;
    // A handle taken before the drop, as a running committer holds one.
    let stale = test.server().catalog().table("sensors").unwrap();
    test.sql("DROP TABLE sensors").await;
    let path = test.table_url("sensors").to_file_path().unwrap();
    assert_eq!(stale.commit().await.unwrap(), None);
    assert!(!path.exists(), "the commit brought the dropped table back");

    // Nor into a table re-created under the name.
    test.sql(SENSORS_DDL).await;
    assert_eq!(stale.commit().await.unwrap(), None);
    assert_eq!(test.count("sensors").await, 0);
    let delta = deltalake::open_table(test.table_url("sensors"))
        .await
        .unwrap();
    assert_eq!(
        delta.version(),
        Some(0),
        "only the CREATE is in the new table"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_positions_continue_above_the_watermarks_after_the_wal_is_removed() {
    let mut test = start_holding(tempfile::tempdir().unwrap()).await;
    test.sql(SENSORS_DDL).await;
    for i in 0..5 {
        push(&test, i * 10, 10).await;
    }
    // A clean stop commits the 50 rows: the watermark is at their position.
    test.server.take().unwrap().shutdown().await.unwrap();
    std::fs::remove_dir_all(test.dir.path().join("wal")).unwrap();

    test.server = Some(Server::start(holding(test.dir.path())).await.unwrap());
    let segments: Vec<String> = std::fs::read_dir(test.dir.path().join("wal"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
    assert_ne!(
        segments[0], "00000000000000000001.wal",
        "the new log starts at 1"
    );
    assert_eq!(test.count("sensors").await, 50);
    push(&test, 100, 7).await;
    drop(test.server.take()); // a crash: the 7 rows are only in the new WAL
    tokio::time::sleep(Duration::from_millis(50)).await;

    test.server = Some(Server::start(holding(test.dir.path())).await.unwrap());
    assert_eq!(
        test.count("sensors").await,
        57,
        "rows acked after the WAL was removed were skipped as already committed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_fails_after_landing_is_not_written_twice() {
    let test = start_holding(tempfile::tempdir().unwrap()).await;
    test.sql(SENSORS_DDL).await; // version 0; a checkpoint every 5 versions
    let catalog = std::sync::Arc::clone(test.server().catalog());
    for i in 0..3 {
        push(&test, i * 10, 10).await;
        assert_eq!(catalog.commit_all().await.unwrap(), 1);
    }
    // Version 4 lands, then its checkpoint cannot be written: delta-rs
    // reports an error for a commit that is in the log.
    let log = test
        .table_url("sensors")
        .to_file_path()
        .unwrap()
        .join("_delta_log");
    let blocker = log.join("00000000000000000004.checkpoint.parquet");
    std::fs::create_dir_all(&blocker).unwrap();
    push(&test, 30, 10).await;
    assert_eq!(
        catalog.commit_all().await.unwrap(),
        1,
        "the commit that landed counts as done"
    );
    assert!(log.join("00000000000000000004.json").exists());
    assert!(blocker.is_dir(), "the checkpoint was not written");
    std::fs::remove_dir(&blocker).unwrap();

    push(&test, 40, 10).await;
    catalog.commit_all().await.unwrap();
    assert_eq!(test.count("sensors").await, 50);
    assert_eq!(
        test.scalar("SELECT count(DISTINCT id) FROM sensors").await,
        50
    );
    assert_eq!(crate::ingest::delta_row_count(&test, "sensors").await, 50);
    assert!(
        !log.join("00000000000000000006.json").exists(),
        "a commit was written twice"
    );
}

/// A small tmpfs, mounted for a test (CI runs as root) and unmounted after.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        Self(dir.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_then_ingest_resumes_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _disk = SmallDisk::mount(&data, "2m");
    let mut config = holding(&data);
    config.storage = Some(dir.path().join("tables").display().to_string());
    let server = Server::start(config.clone()).await.unwrap();
    let test = TestServer {
        server: Some(server),
        dir,
        config,
        token: None,
    };
    test.sql(SENSORS_DDL).await;

    // Fill the WAL's disk: the stream that hits the wall is refused with
    // RESOURCE_EXHAUSTED, after the batches before it were acked.
    let client = test.client().await;
    let mut stream = client
        .open_stream("sensors", sensors_schema(), Default::default())
        .await
        .unwrap();
    let mut sent = 0;
    let status = loop {
        match stream.send(sensor_batch(sent * 2000, 2000)).await {
            Ok(_) => sent += 1,
            Err(weir_client::Error::Server(status)) => break status,
            Err(other) => panic!("{other}"),
        }
        if let Err(weir_client::Error::Server(status)) = stream.flush().await {
            break status;
        }
        assert!(sent < 1000, "the disk never filled");
    };
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("disk is full"), "{status:?}");
    let acked = stream.acked().records;
    assert!(acked > 0);
    assert_eq!(
        test.count("sensors").await,
        acked,
        "exactly the acked rows are visible"
    );

    // Committing frees WAL segments; the WAL repairs itself and a new
    // stream is acked, with no restart.
    test.server().catalog().commit_all().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut retry = test.sensors_stream().await;
        if retry.send(sensor_batch(1_000_000, 100)).await.is_ok() && retry.close().await.is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ingest did not resume"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(test.count("sensors").await, acked + 100);
    assert_eq!(
        test.scalar("SELECT count(DISTINCT id) FROM sensors").await,
        acked + 100
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_fail_while_the_table_storage_is_broken_and_nothing_is_lost_or_doubled() {
    let test = start_holding(tempfile::tempdir().unwrap()).await;
    test.sql(SENSORS_DDL).await;
    let catalog = std::sync::Arc::clone(test.server().catalog());
    push(&test, 0, 10).await;
    catalog.commit_all().await.unwrap();

    // The table's log becomes unwritable (a file where its directory was).
    let table = test.table_url("sensors").to_file_path().unwrap();
    let log = table.join("_delta_log");
    let away = table.join("log-away");
    std::fs::rename(&log, &away).unwrap();
    std::fs::write(&log, b"not a directory").unwrap();
    push(&test, 10, 10).await;
    assert!(catalog.commit_all().await.is_err());
    assert!(
        catalog.commit_all().await.is_err(),
        "retried, failing again"
    );
    // Acked rows stay visible from the tail meanwhile.
    assert_eq!(test.count("sensors").await, 20);

    std::fs::remove_file(&log).unwrap();
    std::fs::rename(&away, &log).unwrap();
    push(&test, 20, 10).await;
    catalog.commit_all().await.unwrap();
    assert_eq!(test.count("sensors").await, 30);
    assert_eq!(crate::ingest::delta_row_count(&test, "sensors").await, 30);
    assert_eq!(
        test.scalar("SELECT count(DISTINCT id) FROM sensors").await,
        30
    );
}

/// The byte offsets of the groups in a WAL segment (format 2: a 28-byte
/// segment header, then groups of a 24-byte frame starting "WGRP" and `len`
/// bytes, then the zero padding of direct I/O).
fn group_offsets(segment: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 28;
    while at + 24 <= segment.len() && segment[at..at + 4] == *b"WGRP" {
        offsets.push(at);
        let len = u32::from_le_bytes(segment[at + 4..at + 8].try_into().unwrap()) as usize;
        at += 24 + len;
    }
    offsets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_wal_record_stops_the_start_or_is_skipped_and_counted() {
    let test = start_holding(tempfile::tempdir().unwrap()).await;
    test.sql(SENSORS_DDL).await;
    for first in [0, 10, 20] {
        push(&test, first, 10).await;
    }
    let TestServer { server, dir, .. } = test;
    drop(server); // a crash: the rows are only in the WAL

    // Damage the middle group: not a torn write, since an intact group
    // follows it.
    let wal = dir.path().join("wal");
    let mut segments: Vec<_> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    let segment = segments.last().unwrap().clone();
    let mut bytes = std::fs::read(&segment).unwrap();
    let groups = group_offsets(&bytes);
    assert_eq!(groups.len(), 3, "one group per acked request");
    bytes[groups[1] + 100] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();

    let err = Server::start(holding(dir.path()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&segment.display().to_string()), "{err}");
    assert!(
        err.contains(&format!("corrupt at byte {}", groups[1])),
        "{err}"
    );
    assert!(err.contains("corruption = \"skip\""), "{err}");
    assert!(err.contains("move the whole WAL directory aside"), "{err}");

    let mut config = holding(dir.path());
    config.wal.corruption = weir_flight_server::Corruption::Skip;
    let test = TestServer {
        server: Some(Server::start(config.clone()).await.unwrap()),
        dir,
        config,
        token: None,
    };
    assert_eq!(test.count("sensors").await, 20);
    assert_eq!(
        test.scalar("SELECT count(*) FROM sensors WHERE id >= 10 AND id < 20")
            .await,
        0,
        "the damaged request's rows are the ones lost"
    );
    push(&test, 30, 10).await;
    assert_eq!(test.count("sensors").await, 30);
}
