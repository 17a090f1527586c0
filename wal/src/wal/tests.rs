//! The `Wal` handle: group commit, acks after fsync, recovery, truncation,
//! closing and injected faults.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::*;
use crate::WalRecord;
use crate::mem_storage::{Faults, MemStorage};

const MEM_DIR: &str = "/wal";

/// Opens the log on `storage` and replays it whole.
fn open_mem(storage: &MemStorage, config: WalConfig) -> (Wal, Vec<WalRecord>) {
    let (wal, replay) =
        Wal::open_with_storage(Path::new(MEM_DIR), config, Arc::new(storage.clone())).unwrap();
    (wal, replay.collect_all().unwrap())
}

/// Opens the log in `dir` and replays it whole.
fn open_dir(dir: &Path, config: WalConfig) -> (Wal, Vec<WalRecord>) {
    let (wal, replay) = Wal::open(dir, config).unwrap();
    (wal, replay.collect_all().unwrap())
}

fn payload(i: u64) -> Bytes {
    Bytes::from(format!("record {i}"))
}

fn positions(records: &[WalRecord]) -> Vec<u64> {
    records.iter().map(|r| r.position.get()).collect()
}

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(future)
}

#[test]
fn wal_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Wal>();
    assert_send_sync::<PendingAppend>();
    assert_send_sync::<Replay>();
}

#[test]
fn a_new_log_starts_at_one() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, replay) = Wal::open(dir.path(), WalConfig::default()).unwrap();
    assert!(replay.is_empty());
    assert_eq!(replay.len(), 0);
    assert_eq!(replay.count(), 0);
    assert_eq!(wal.durable_position(), WalPosition::ZERO);
    assert!(dir.path().join("00000000000000000001.wal").is_file());
    assert_eq!(
        wal.stats(),
        WalStats {
            segments: 1,
            ..WalStats::default()
        }
    );

    assert_eq!(
        block_on(wal.append(Bytes::from_static(b"abc"))).unwrap(),
        WalPosition(1)
    );
    assert_eq!(block_on(wal.append(Bytes::new())).unwrap(), WalPosition(2));
    assert_eq!(wal.durable_position(), WalPosition(2));
    let expected = WalStats {
        appends: 2,
        fsyncs: 2,
        bytes_written: (24 + 16 + 3) + (24 + 16),
        segments: 1,
    };
    assert_eq!(wal.stats(), expected);
}

#[test]
fn reopen_replays_every_record_and_continues_positions() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), WalConfig::for_tests()).unwrap();
    let written: Vec<Bytes> = (0..100)
        .map(|i| Bytes::from(vec![i as u8; (i * 37) % 500]))
        .collect();
    for (i, payload) in written.iter().enumerate() {
        let position = block_on(wal.append(payload.clone())).unwrap();
        assert_eq!(position, WalPosition(i as u64 + 1));
    }
    wal.close().unwrap();
    let segments = wal.stats().segments;
    assert!(segments > 3, "4 KiB segments must rotate, got {segments}");

    let (wal, records) = open_dir(dir.path(), WalConfig::for_tests());
    assert_eq!(positions(&records), (1..=100).collect::<Vec<_>>());
    let replayed: Vec<_> = records.iter().map(|r| r.payload.clone()).collect();
    assert_eq!(replayed, written);
    assert_eq!(wal.durable_position(), WalPosition(100));
    assert_eq!(wal.stats().segments, segments);
    assert_eq!(
        block_on(wal.append(payload(101))).unwrap(),
        WalPosition(101)
    );
}

/// 200 appends from 200 tasks. Each fsync takes 2 ms, so records arriving
/// meanwhile must share the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_share_fsyncs() {
    let storage = MemStorage::default();
    let (wal, _) = open_mem(&storage, WalConfig::for_tests());
    storage.set_faults(Faults {
        sync_delay: Duration::from_millis(2),
        ..Faults::default()
    });
    let wal = Arc::new(wal);
    let tasks: Vec<_> = (0..200u64)
        .map(|i| {
            let wal = Arc::clone(&wal);
            tokio::spawn(async move {
                let position = wal.append(payload(i)).await.unwrap();
                assert!(wal.durable_position() >= position);
                (position.get(), i)
            })
        })
        .collect();
    let mut written = BTreeMap::new();
    for task in tasks {
        let (position, i) = task.await.unwrap();
        assert!(
            written.insert(position, i).is_none(),
            "position {position} given twice"
        );
    }
    assert_eq!(
        written.keys().copied().collect::<Vec<_>>(),
        (1..=200).collect::<Vec<_>>()
    );
    let stats = wal.stats();
    assert_eq!(stats.appends, 200);
    assert!(stats.fsyncs < stats.appends, "no group commit: {stats:?}");
    assert_eq!(wal.durable_position(), WalPosition(200));
    wal.close().unwrap();

    let (_wal, records) = open_mem(&storage, WalConfig::for_tests());
    for record in &records {
        assert_eq!(record.payload, payload(written[&record.position.get()]));
    }
    assert_eq!(records.len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), WalConfig::for_tests()).unwrap();
    let wal = Arc::new(wal);
    let tasks: Vec<_> = (0..8u64)
        .map(|task| {
            let wal = Arc::clone(&wal);
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for i in 0..25 {
                    let position = wal.append(payload(task * 100 + i)).await.unwrap();
                    assert!(wal.durable_position() >= position, "acked before durable");
                    // One task's appends are ordered.
                    assert!(mine.last().is_none_or(|&last| last < position.get()));
                    mine.push(position.get());
                }
                mine
            })
        })
        .collect();
    let mut all = BTreeSet::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    assert_eq!(all, (1..=200).collect());
    let stats = wal.stats();
    assert_eq!(stats.appends, 200);
    assert!(stats.fsyncs <= stats.appends);
    wal.close().unwrap();
    let (_wal, records) = open_dir(dir.path(), WalConfig::for_tests());
    assert_eq!(positions(&records), (1..=200).collect::<Vec<_>>());
}

#[test]
fn enqueue_assigns_positions_at_once_in_order() {
    let storage = MemStorage::default();
    let (wal, _) = open_mem(&storage, WalConfig::for_tests());
    storage.hold_syncs(true);
    let pending: Vec<_> = (0..5).map(|i| wal.enqueue(payload(i)).unwrap()).collect();
    let assigned: Vec<_> = pending.iter().map(|p| p.position().get()).collect();
    assert_eq!(assigned, vec![1, 2, 3, 4, 5]);
    storage.hold_syncs(false);
    for p in pending {
        let position = p.position();
        assert_eq!(block_on(p).unwrap(), position);
    }
}

#[test]
fn an_append_resolves_only_after_its_fsync() {
    let storage = MemStorage::default();
    let (wal, _) = open_mem(&storage, WalConfig::for_tests());
    storage.hold_syncs(true);
    let mut pending = wal.enqueue(payload(1)).unwrap();
    let waited =
        block_on(async { tokio::time::timeout(Duration::from_millis(50), &mut pending).await });
    assert!(waited.is_err(), "resolved while the fsync was held");
    assert_eq!(wal.durable_position(), WalPosition::ZERO);
    // A crash now loses the record: it was never acknowledged.
    let (_crashed, records) = open_mem(&storage.crash_copy(), WalConfig::for_tests());
    assert!(records.is_empty());

    storage.hold_syncs(false);
    assert_eq!(block_on(pending).unwrap(), WalPosition(1));
    assert_eq!(wal.durable_position(), WalPosition(1));
    let (_crashed, records) = open_mem(&storage.crash_copy(), WalConfig::for_tests());
    assert_eq!(positions(&records), vec![1]);
}

/// A simulated machine crash in the middle of concurrent appends keeps every
/// acknowledged record, and the recovered log is dense and continues.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_keeps_every_acknowledged_record() {
    let storage = MemStorage::default();
    let (wal, _) = open_mem(&storage, WalConfig::for_tests());
    storage.set_faults(Faults {
        sync_delay: Duration::from_millis(1),
        ..Faults::default()
    });
    let wal = Arc::new(wal);
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let tasks: Vec<_> = (0..8u64)
        .map(|task| {
            let wal = Arc::clone(&wal);
            let acked = Arc::clone(&acked);
            tokio::spawn(async move {
                for i in 0..100 {
                    let id = task * 1000 + i;
                    let position = wal.append(payload(id)).await.unwrap();
                    acked.lock().insert(position.get(), id);
                }
            })
        })
        .collect();
    while acked.lock().len() < 50 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let acked_before_crash = acked.lock().clone();
    let crashed = storage.crash_copy();
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        acked_before_crash.len() < 800,
        "crash came too late to test anything"
    );

    let (recovered, records) = open_mem(&crashed, WalConfig::for_tests());
    let n = records.len() as u64;
    assert_eq!(positions(&records), (1..=n).collect::<Vec<_>>());
    for (position, id) in &acked_before_crash {
        let record = records
            .get(*position as usize - 1)
            .expect("an acked record was lost");
        assert_eq!(record.payload, payload(*id));
    }
    assert_eq!(
        block_on_blocking(recovered.append(payload(0))),
        WalPosition(n + 1)
    );
}

/// Runs a future to completion from inside a multi-thread runtime test.
fn block_on_blocking<F: Future<Output = Result<WalPosition>> + Send>(future: F) -> WalPosition {
    tokio::task::block_in_place(|| block_on(future)).unwrap()
}

#[test]
fn truncate_through_deletes_only_sealed_segments_at_or_below() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), WalConfig::for_tests()).unwrap();
    for i in 1..=40 {
        block_on(wal.append(Bytes::from(vec![0; 700 + i]))).unwrap();
    }
    // Rotation happens after the acks: reopen to see every segment.
    wal.close().unwrap();
    let (wal, _) = Wal::open(dir.path(), WalConfig::for_tests()).unwrap();
    let firsts = |dir: &Path| -> Vec<u64> {
        let mut firsts: Vec<u64> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                segment::parse_file_name(e.unwrap().file_name().to_str().unwrap())
                    .unwrap()
                    .get()
            })
            .collect();
        firsts.sort();
        firsts
    };
    let before = firsts(dir.path());
    assert!(before.len() >= 5, "{before:?}");
    assert_eq!(wal.truncate_through(WalPosition::ZERO).unwrap(), 0);

    // Through the middle of the third segment: the first two go.
    let through = before[2] + 1;
    assert_eq!(wal.truncate_through(WalPosition(through)).unwrap(), 2);
    assert_eq!(firsts(dir.path()), before[2..]);
    assert_eq!(wal.stats().segments, before.len() as u64 - 2);
    // Again: nothing more is wholly at or below `through`.
    assert_eq!(wal.truncate_through(WalPosition(through)).unwrap(), 0);
    // Through the last record of the third segment: it goes too.
    assert_eq!(wal.truncate_through(WalPosition(before[3] - 1)).unwrap(), 1);
    wal.close().unwrap();

    let (wal, records) = open_dir(dir.path(), WalConfig::for_tests());
    assert_eq!(positions(&records), (before[3]..=40).collect::<Vec<_>>());
    assert_eq!(wal.durable_position(), WalPosition(40));

    // Everything: all sealed segments go, the active one stays.
    let deleted = wal.truncate_through(WalPosition(u64::MAX)).unwrap();
    assert_eq!(deleted, before.len() - 4);
    assert_eq!(firsts(dir.path()), vec![*before.last().unwrap()]);
    assert_eq!(block_on(wal.append(payload(41))).unwrap(), WalPosition(41));
}

#[test]
fn positions_keep_increasing_when_truncation_leaves_no_records() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), WalConfig::for_tests()).unwrap();
    // Each record fills a 4 KiB segment: every append rotates, so the active
    // segment ends up empty.
    for _ in 0..3 {
        block_on(wal.append(Bytes::from(vec![1; 5000]))).unwrap();
    }
    // Rotation happens after the acks: close to wait for it.
    wal.close().unwrap();
    let (wal, _) = Wal::open(dir.path(), WalConfig::for_tests()).unwrap();
    assert_eq!(wal.stats().segments, 4);
    assert_eq!(wal.truncate_through(WalPosition(3)).unwrap(), 3);
    assert_eq!(wal.stats().segments, 1);
    wal.close().unwrap();

    let (wal, records) = open_dir(dir.path(), WalConfig::for_tests());
    assert!(records.is_empty());
    assert_eq!(wal.durable_position(), WalPosition(3));
    assert_eq!(block_on(wal.append(payload(4))).unwrap(), WalPosition(4));
}

#[test]
fn close_flushes_queued_records_and_refuses_new_ones() {
    let storage = MemStorage::default();
    let (wal, _) = open_mem(&storage, WalConfig::for_tests());
    storage.set_faults(Faults {
        sync_delay: Duration::from_millis(5),
        ..Faults::default()
    });
    let pending: Vec<_> = (0..10).map(|i| wal.enqueue(payload(i)).unwrap()).collect();
    wal.close().unwrap();
    assert_eq!(wal.durable_position(), WalPosition(10));
    for (i, p) in pending.into_iter().enumerate() {
        assert_eq!(block_on(p).unwrap(), WalPosition(i as u64 + 1));
    }
    assert!(matches!(wal.enqueue(payload(11)), Err(Error::Closed)));
    assert!(matches!(
        block_on(wal.append(payload(11))),
        Err(Error::Closed)
    ));
    wal.close().unwrap();

    let (_wal, records) = open_mem(&storage.crash_copy(), WalConfig::for_tests());
    assert_eq!(positions(&records), (1..=10).collect::<Vec<_>>());
}

#[test]
fn drop_flushes_queued_records() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), WalConfig::for_tests()).unwrap();
    let pending: Vec<_> = (0..5).map(|i| wal.enqueue(payload(i)).unwrap()).collect();
    drop(wal);
    for p in pending {
        block_on(p).unwrap();
    }
    let (_wal, records) = open_dir(dir.path(), WalConfig::for_tests());
    assert_eq!(records.len(), 5);
}

fn expect_failed(result: Result<impl fmt::Debug>) -> String {
    match result {
        Err(Error::Failed(reason)) => reason,
        other => panic!("expected Error::Failed, got {other:?}"),
    }
}

#[test]
fn a_failed_fsync_fails_the_group_and_the_queue_and_poisons_the_log() {
    let storage = MemStorage::default();
    let (wal, _) = open_mem(&storage, WalConfig::for_tests());
    assert_eq!(block_on(wal.append(payload(1))).unwrap(), WalPosition(1));

    // Record 2 is in an fsync that is held; 3 and 4 queue behind it.
    storage.hold_syncs(true);
    let in_flight = wal.enqueue(payload(2)).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let queued: Vec<_> = (3..=4).map(|i| wal.enqueue(payload(i)).unwrap()).collect();
    storage.set_faults(Faults {
        fail_syncs: true,
        ..Faults::default()
    });
    storage.hold_syncs(false);

    let reason = expect_failed(block_on(in_flight));
    assert!(reason.contains("injected fsync failure"), "{reason}");
    for pending in queued {
        expect_failed(block_on(pending));
    }
    assert_eq!(wal.durable_position(), WalPosition(1));
    // Poisoned: nothing is accepted, even once the disk is fine again; fsync is not retried.
    storage.set_faults(Faults::default());
    expect_failed(wal.enqueue(payload(5)));
    expect_failed(block_on(wal.append(payload(5))));
    expect_failed(wal.close());
    expect_failed(wal.close());
    assert_eq!(wal.stats().fsyncs, 1);

    // A restart recovers: record 1 is there, positions continue after
    // whatever reached the disk.
    let (wal, records) = open_mem(&storage, WalConfig::for_tests());
    assert_eq!(records[0].payload, payload(1));
    let n = records.len() as u64;
    assert_eq!(positions(&records), (1..=n).collect::<Vec<_>>());
    assert_eq!(
        block_on(wal.append(payload(6))).unwrap(),
        WalPosition(n + 1)
    );
}

#[test]
fn a_failed_write_poisons_the_log() {
    let storage = MemStorage::default();
    let (wal, _) = open_mem(&storage, WalConfig::for_tests());
    assert_eq!(block_on(wal.append(payload(1))).unwrap(), WalPosition(1));
    storage.set_faults(Faults {
        fail_writes: true,
        ..Faults::default()
    });
    let reason = expect_failed(block_on(wal.append(payload(2))));
    assert!(reason.contains("injected write failure"), "{reason}");
    storage.set_faults(Faults::default());
    expect_failed(wal.enqueue(payload(3)));
    assert_eq!(wal.durable_position(), WalPosition(1));
    drop(wal);

    let (wal, records) = open_mem(&storage, WalConfig::for_tests());
    assert_eq!(positions(&records), vec![1]);
    assert_eq!(block_on(wal.append(payload(2))).unwrap(), WalPosition(2));
}

#[test]
fn a_new_log_starts_after_the_consumed_positions_and_an_older_one_is_refused() {
    let storage = MemStorage::default();
    let config = WalConfig {
        positions_after: WalPosition(41),
        ..WalConfig::for_tests()
    };
    let (wal, records) = open_mem(&storage, config.clone());
    assert!(records.is_empty());
    assert_eq!(wal.durable_position(), WalPosition(41));
    assert_eq!(block_on(wal.append(payload(1))).unwrap(), WalPosition(42));
    wal.close().unwrap();
    // The creation of the log's directory was made durable.
    assert!(
        storage.dir_syncs().contains(&PathBuf::from("/")),
        "{:?}",
        storage.dir_syncs()
    );

    // Reopened with the same watermark: positions go on.
    let (wal, records) = open_mem(&storage, config);
    assert_eq!(positions(&records), [42]);
    assert_eq!(block_on(wal.append(payload(2))).unwrap(), WalPosition(43));
    wal.close().unwrap();

    // A reader that consumed more than this log holds: refused.
    let ahead = WalConfig {
        positions_after: WalPosition(100),
        ..WalConfig::for_tests()
    };
    let err =
        Wal::open_with_storage(Path::new(MEM_DIR), ahead, Arc::new(storage.clone())).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Behind {
                ends: 43,
                consumed: 100,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("move this one aside"), "{err}");
}

/// Calls `resume` until it takes (the writer repairs in the background).
fn resume_soon(wal: &Wal) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !wal.resume() {
        assert!(
            std::time::Instant::now() < deadline,
            "the WAL did not repair"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_full_disk_fails_the_group_then_the_log_repairs_and_goes_on() {
    let storage = MemStorage::default();
    let (wal, _) = open_mem(&storage, WalConfig::for_tests());
    assert_eq!(block_on(wal.append(payload(1))).unwrap(), WalPosition(1));

    storage.set_faults(Faults {
        disk_full: true,
        ..Faults::default()
    });
    let err = block_on(wal.append(payload(2))).unwrap_err();
    assert!(matches!(err, Error::Full(_)), "{err}");
    assert!(matches!(wal.enqueue(payload(3)), Err(Error::Full(_))));
    assert!(matches!(wal.failure(), Some(Error::Full(_))));
    assert_eq!(wal.durable_position(), WalPosition(1));

    // Room again: the failed position is given out again, nothing is lost
    // and the log has no hole.
    storage.set_faults(Faults::default());
    resume_soon(&wal);
    assert!(wal.failure().is_none());
    assert_eq!(block_on(wal.append(payload(4))).unwrap(), WalPosition(2));
    assert_eq!(block_on(wal.append(payload(5))).unwrap(), WalPosition(3));
    let (_wal, records) = open_mem(&storage.crash_copy(), WalConfig::for_tests());
    let payloads: Vec<_> = records.iter().map(|r| r.payload.clone()).collect();
    assert_eq!(payloads, [payload(1), payload(4), payload(5)]);
    assert_eq!(positions(&records), [1, 2, 3]);
}

#[test]
fn after_a_failed_fsync_the_log_starts_over_from_the_durable_length() {
    let storage = MemStorage::default();
    let (wal, _) = open_mem(&storage, WalConfig::for_tests());
    block_on(wal.append(payload(1))).unwrap();
    storage.set_faults(Faults {
        fail_syncs: true,
        ..Faults::default()
    });
    assert!(matches!(
        block_on(wal.append(payload(2))),
        Err(Error::Failed(_))
    ));
    storage.set_faults(Faults::default());
    resume_soon(&wal);
    assert_eq!(block_on(wal.append(payload(3))).unwrap(), WalPosition(2));
    let (_wal, records) = open_mem(&storage.crash_copy(), WalConfig::for_tests());
    let payloads: Vec<_> = records.iter().map(|r| r.payload.clone()).collect();
    assert_eq!(payloads, [payload(1), payload(3)]);
}
