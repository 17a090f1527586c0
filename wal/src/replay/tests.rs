//! Replay: one segment in memory at a time, the records written, and what
//! happens when a segment changes between open and replay.

use std::fs;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng, rngs::StdRng};

use super::*;
use crate::mem_storage::MemStorage;
use crate::record::{GROUP_HEADER_LEN, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::{Wal, WalConfig};

const MEM_DIR: &str = "/wal";

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

fn open_mem(storage: &MemStorage) -> (Wal, Replay) {
    Wal::open_with_storage(
        Path::new(MEM_DIR),
        WalConfig::for_tests(),
        Arc::new(storage.clone()),
    )
    .unwrap()
}

/// Appends `payloads` one at a time (one group each).
fn append_all(wal: &Wal, payloads: &[Bytes]) {
    for payload in payloads {
        block_on(wal.append(payload.clone())).unwrap();
    }
}

/// `n` payloads of `len` bytes, numbered from `from`.
fn payloads(from: usize, n: usize, len: usize) -> Vec<Bytes> {
    (from..from + n)
        .map(|i| Bytes::from(format!("{i:0len$}")))
        .collect()
}

/// Segment files, oldest first, with their first positions.
fn segments(storage: &MemStorage) -> Vec<(u64, PathBuf)> {
    let dir = Path::new(MEM_DIR);
    let mut segments: Vec<_> = storage
        .list(dir)
        .unwrap()
        .iter()
        .filter_map(|name| Some((segment::parse_file_name(name)?.get(), dir.join(name))))
        .collect();
    segments.sort();
    segments
}

/// Writes `payloads` and closes the log, so the last rotation is done.
fn write_log(storage: &MemStorage, payloads: &[Bytes]) {
    let (wal, _) = open_mem(storage);
    append_all(&wal, payloads);
    wal.close().unwrap();
}

fn expect_corrupt(item: Option<Result<WalRecord>>) -> (PathBuf, u64, String) {
    match item {
        Some(Err(Error::Corrupt {
            segment,
            offset,
            reason,
        })) => (segment, offset, reason),
        Some(Err(other)) => panic!("expected Error::Corrupt, got {other}"),
        Some(Ok(record)) => panic!("expected Error::Corrupt, got record {}", record.position),
        None => panic!("expected Error::Corrupt, the replay ended"),
    }
}

/// Yields records until position `through`, checking them against
/// `written` (position 1 first).
fn replay_through(replay: &mut Replay, through: u64, written: &[Bytes]) {
    for position in 1..=through {
        let record = replay.next().unwrap().unwrap();
        assert_eq!(record.position, WalPosition(position));
        assert_eq!(record.payload, written[position as usize - 1]);
    }
}

#[test]
fn replay_reads_one_segment_at_a_time() {
    let storage = MemStorage::default();
    let written = payloads(0, 60, 300);
    write_log(&storage, &written);
    let files = segments(&storage);
    assert!(files.len() >= 4, "{files:?}");

    let (_wal, mut replay) = open_mem(&storage);
    // Open read each segment once, in order, to check it.
    let checked: Vec<_> = files.iter().map(|(_, path)| path.clone()).collect();
    assert_eq!(storage.reads(), checked);
    assert_eq!(replay.len(), 60);
    assert!(!replay.is_empty());

    let mut position = 0;
    while let Some(record) = replay.next() {
        let record = record.unwrap();
        position += 1;
        assert_eq!(record.position, WalPosition(position));
        assert_eq!(record.payload, written[position as usize - 1]);
        assert_eq!(replay.len(), 60 - position as usize);
        // The record's segment was read last, and it was the only read since
        // the previous segment's records: one segment at a time, in order.
        let k = files
            .iter()
            .rposition(|&(first, _)| first <= position)
            .unwrap();
        let reads = storage.reads();
        assert_eq!(reads.len(), files.len() + k + 1, "at position {position}");
        assert_eq!(reads.last(), Some(&files[k].1));
    }
    assert_eq!(position, 60);
    assert!(replay.is_empty());
    // Ending reads nothing more.
    let reads = storage.reads().len();
    assert!(replay.next().is_none());
    assert_eq!(storage.reads().len(), reads);
}

#[test]
fn nothing_is_read_before_the_first_record_is_due() {
    let storage = MemStorage::default();
    write_log(&storage, &payloads(0, 30, 300));
    let files = segments(&storage).len();
    let (_wal, replay) = open_mem(&storage);
    assert_eq!(replay.len(), 30);
    drop(replay);
    assert_eq!(storage.reads().len(), files);
}

#[test]
fn replay_across_restarts_yields_what_was_written() {
    let storage = MemStorage::default();
    let mut rng = StdRng::seed_from_u64(7);
    let mut written: Vec<Bytes> = Vec::new();
    for round in 0..4 {
        let (wal, replay) = open_mem(&storage);
        assert_eq!(replay.len(), written.len(), "round {round}");
        let records = replay.collect_all().unwrap();
        let positions: Vec<_> = records.iter().map(|r| r.position.get()).collect();
        assert_eq!(positions, (1..=written.len() as u64).collect::<Vec<_>>());
        let payloads: Vec<_> = records.into_iter().map(|r| r.payload).collect();
        assert_eq!(payloads, written, "round {round}");

        let batch: Vec<Bytes> = (0..rng.random_range(20..60))
            .map(|_| {
                let mut payload = vec![0; rng.random_range(0..900)];
                rng.fill(&mut payload[..]);
                Bytes::from(payload)
            })
            .collect();
        append_all(&wal, &batch);
        written.extend(batch);
        wal.close().unwrap();
    }
    assert!(segments(&storage).len() > 5);
}

#[test]
fn records_of_one_segment_share_its_buffer() {
    let storage = MemStorage::default();
    write_log(&storage, &payloads(0, 3, 10));
    let (_wal, replay) = open_mem(&storage);
    let records = replay.collect_all().unwrap();
    let [a, b, c] = &records[..] else {
        panic!("expected 3 records, got {}", records.len());
    };
    // Payloads are slices of one segment buffer, back to back with their
    // group and record headers in between (one record per group).
    let gap = GROUP_HEADER_LEN + RECORD_HEADER_LEN + 10;
    assert_eq!(
        b.payload.as_ptr() as usize - a.payload.as_ptr() as usize,
        gap
    );
    assert_eq!(
        c.payload.as_ptr() as usize - b.payload.as_ptr() as usize,
        gap
    );
}

#[test]
fn records_appended_after_open_are_not_replayed() {
    let storage = MemStorage::default();
    let before = payloads(0, 30, 300);
    let (wal, _) = open_mem(&storage);
    // Not closed: the newest segment has records, and grows after the reopen.
    append_all(&wal, &before);
    drop(wal);

    let (wal, replay) = open_mem(&storage);
    let after = payloads(30, 30, 300);
    append_all(&wal, &after);
    let records = replay.collect_all().unwrap();
    let payloads: Vec<_> = records.into_iter().map(|r| r.payload).collect();
    assert_eq!(payloads, before);
    wal.close().unwrap();

    let (_wal, replay) = open_mem(&storage);
    assert_eq!(replay.len(), 60);
}

/// With a real directory: a sealed segment deleted between open and its
/// turn is an `Error::Io` for that segment, after the earlier segments'
/// records, and the replay ends.
#[test]
fn a_segment_deleted_after_open_ends_the_replay_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let written = payloads(0, 60, 300);
    let (wal, _) = Wal::open(dir.path(), WalConfig::for_tests()).unwrap();
    append_all(&wal, &written);
    wal.close().unwrap();

    let (_wal, mut replay) = Wal::open(dir.path(), WalConfig::for_tests()).unwrap();
    let mut files: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    let second_first = segment::parse_file_name(files[1].file_name().unwrap().to_str().unwrap())
        .unwrap()
        .get();
    // All of the first segment, and then the second is gone.
    replay_through(&mut replay, second_first - 1, &written);
    fs::remove_file(&files[1]).unwrap();
    match replay.next() {
        Some(Err(Error::Io { path, source, .. })) => {
            assert_eq!(path, files[1]);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
    assert!(replay.is_empty());
    assert_eq!(replay.size_hint(), (0, Some(0)));
    assert!(replay.next().is_none(), "the replay ends after an error");
}

#[test]
fn a_segment_changed_after_open_is_corrupt() {
    let storage = MemStorage::default();
    let written = payloads(0, 60, 300);
    write_log(&storage, &written);
    let files = segments(&storage);
    let (third_first, third) = files[2].clone();
    let frame = (GROUP_HEADER_LEN + RECORD_HEADER_LEN + 300) as u64;

    let (_wal, mut replay) = open_mem(&storage);
    // Flip a payload byte of the third segment's second record (and group).
    let second = SEGMENT_HEADER_LEN as u64 + frame;
    storage.edit(&third, |bytes| {
        bytes[second as usize + GROUP_HEADER_LEN + RECORD_HEADER_LEN] ^= 1
    });
    replay_through(&mut replay, third_first, &written);
    let (path, offset, reason) = expect_corrupt(replay.next());
    assert_eq!((path, offset), (third, second));
    assert!(
        reason.contains("changed since the WAL was opened"),
        "{reason}"
    );
    assert!(reason.contains("checksum"), "{reason}");
    assert!(replay.next().is_none());
}

#[test]
fn a_segment_cut_after_open_is_corrupt() {
    let storage = MemStorage::default();
    let written = payloads(0, 60, 300);
    write_log(&storage, &written);
    let files = segments(&storage);
    let (second_first, second) = files[1].clone();

    let (_wal, mut replay) = open_mem(&storage);
    // Its last byte of log (the zero padding of direct I/O follows it).
    storage.edit(&second, |bytes| {
        let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
        bytes.truncate(end - 1);
    });
    replay_through(&mut replay, second_first - 1, &written);
    let (path, _, reason) = expect_corrupt(replay.next());
    assert_eq!(path, second);
    assert!(reason.contains("were checked at open"), "{reason}");
    assert!(replay.next().is_none());
}

#[test]
fn a_segment_renumbered_after_open_is_corrupt() {
    let storage = MemStorage::default();
    let written = payloads(0, 60, 300);
    write_log(&storage, &written);
    let files = segments(&storage);
    let (second_first, second) = files[1].clone();

    let (_wal, mut replay) = open_mem(&storage);
    storage.edit(&second, |bytes| bytes[12] ^= 0x40);
    replay_through(&mut replay, second_first - 1, &written);
    let (path, offset, reason) = expect_corrupt(replay.next());
    assert_eq!((path, offset), (second, 0));
    assert!(
        reason.contains("the header says first position"),
        "{reason}"
    );
}

#[test]
fn debug_shows_progress() {
    let storage = MemStorage::default();
    write_log(&storage, &payloads(0, 5, 10));
    let (_wal, mut replay) = open_mem(&storage);
    assert_eq!(
        format!("{replay:?}"),
        "Replay { remaining: 5, next: Some(WalPosition(1)), segments_left: 1, .. }"
    );
    replay.next().unwrap().unwrap();
    assert_eq!(
        format!("{replay:?}"),
        "Replay { remaining: 4, next: Some(WalPosition(2)), segments_left: 1, .. }"
    );
}
