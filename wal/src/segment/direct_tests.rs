//! Segments written with direct I/O: whole blocks, zero padding after the
//! log, and recovery that tells that padding from a torn tail.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::tests::{block_on, numbered, replayed, segment_files};
use super::*;
use crate::mem_storage::MemStorage;
use crate::storage::FsStorage;
use crate::{Wal, WalConfig};

fn config(corruption: CorruptionPolicy) -> WalConfig {
    WalConfig {
        corruption,
        ..WalConfig::for_tests()
    }
}

/// Payloads of 1 to 900 bytes, none of them zero (so that a file's zeros
/// after its last payload byte are padding).
fn payloads(range: std::ops::Range<usize>) -> Vec<Bytes> {
    range
        .map(|i| Bytes::from(vec![b'a' + (i % 26) as u8; 1 + i * 37 % 900]))
        .collect()
}

fn append_all(wal: &Wal, payloads: &[Bytes]) {
    for payload in payloads {
        block_on(wal.append(payload.clone())).unwrap();
    }
}

/// Whether files in `dir` get direct I/O (not on every file system).
fn direct_in(dir: &Path) -> bool {
    let probe = dir.join("probe");
    let alignment = FsStorage.create_new(&probe, true).unwrap().alignment();
    fs::remove_file(probe).unwrap();
    alignment == DIRECT_BLOCK
}

/// Zero bytes at the end of a file.
fn trailing_zeros(bytes: &[u8]) -> usize {
    bytes.iter().rev().take_while(|&&b| b == 0).count()
}

#[test]
fn direct_writes_fill_whole_blocks_and_the_log_reopens_past_the_padding() {
    let dir = tempfile::tempdir().unwrap();
    let direct = direct_in(dir.path());
    let written = payloads(0..60);
    let (wal, replay) = Wal::open(dir.path(), config(CorruptionPolicy::Fail)).unwrap();
    assert!(replay.is_empty());
    append_all(&wal, &written[..30]);
    wal.close().unwrap();

    let files = segment_files(dir.path());
    assert!(files.len() > 3, "4 KiB segments rotate: {files:?}");
    let mut padded = 0;
    for file in &files {
        let bytes = fs::read(file).unwrap();
        let zeros = trailing_zeros(&bytes);
        if direct {
            assert_eq!(bytes.len() % DIRECT_BLOCK, 0, "{}", file.display());
            assert!(zeros < DIRECT_BLOCK, "{}", file.display());
            padded += usize::from(zeros > 0);
        } else {
            assert_eq!(zeros, 0, "{}", file.display());
        }
    }
    assert!(!direct || padded > 0, "no segment ends inside a block");

    // Padding is a clean end, also of sealed segments under "fail".
    let (wal, replay) = Wal::open(dir.path(), config(CorruptionPolicy::Fail)).unwrap();
    assert_eq!(replayed(replay), numbered(1, &written[..30]));
    append_all(&wal, &written[30..]);
    wal.close().unwrap();
    let (_wal, replay) = Wal::open(dir.path(), config(CorruptionPolicy::Fail)).unwrap();
    assert_eq!(replayed(replay), numbered(1, &written));
}

#[test]
fn a_block_of_zeros_after_the_log_is_a_torn_tail_not_padding() {
    let dir = tempfile::tempdir().unwrap();
    let written = payloads(0..3);
    let (wal, _) = Wal::open(dir.path(), config(CorruptionPolicy::Fail)).unwrap();
    append_all(&wal, &written);
    wal.close().unwrap();
    let newest = segment_files(dir.path()).pop().unwrap();
    let bytes = fs::read(&newest).unwrap();
    let log_end = bytes.len() - trailing_zeros(&bytes);
    // A crash can leave a file's new length on disk without its data.
    let mut torn = bytes.clone();
    torn.resize(log_end.next_multiple_of(DIRECT_BLOCK) + DIRECT_BLOCK, 0);
    fs::write(&newest, &torn).unwrap();

    match Wal::open(dir.path(), config(CorruptionPolicy::Fail)) {
        Err(Error::Corrupt { segment, .. }) => assert_eq!(segment, newest),
        Err(other) => panic!("expected Error::Corrupt, got {other}"),
        Ok(_) => panic!("a block of zeros passed for padding"),
    }
    let (wal, replay) = Wal::open(dir.path(), config(CorruptionPolicy::TruncateTornTail)).unwrap();
    assert_eq!(replayed(replay), numbered(1, &written));
    assert_eq!(fs::metadata(&newest).unwrap().len(), log_end as u64);
    let more = payloads(3..8);
    append_all(&wal, &more);
    wal.close().unwrap();
    let (_wal, replay) = Wal::open(dir.path(), config(CorruptionPolicy::Fail)).unwrap();
    let all: Vec<Bytes> = written.iter().chain(&more).cloned().collect();
    assert_eq!(replayed(replay), numbered(1, &all));
}

#[test]
fn padding_is_short_zeros_up_to_a_block_boundary() {
    let mut bytes = vec![7u8; 100];
    bytes.resize(DIRECT_BLOCK, 0);
    assert!(record::is_padding(&bytes, 100));
    assert!(
        !record::is_padding(&bytes, 99),
        "a byte of log is not padding"
    );
    bytes.truncate(DIRECT_BLOCK - 1);
    assert!(
        !record::is_padding(&bytes, 100),
        "the file does not end on a block"
    );
    bytes.resize(2 * DIRECT_BLOCK, 0);
    assert!(!record::is_padding(&bytes, 100), "a whole block of zeros");
}

#[test]
fn a_log_written_directly_goes_on_through_the_page_cache_and_back() {
    let storage = MemStorage::default();
    let dir = Path::new("/wal");
    let written = payloads(0..45);
    let open = || {
        Wal::open_with_storage(
            dir,
            config(CorruptionPolicy::Fail),
            Arc::new(storage.clone()),
        )
        .unwrap()
    };
    let (wal, _) = open();
    append_all(&wal, &written[..15]);
    wal.close().unwrap();
    let lengths = |storage: &MemStorage| -> Vec<usize> {
        let mut names = storage.list(dir).unwrap();
        names.sort();
        names
            .iter()
            .map(|name| storage.read(&dir.join(name)).unwrap().len())
            .collect()
    };
    assert!(lengths(&storage).iter().all(|len| len % DIRECT_BLOCK == 0));

    storage.set_direct_io(false);
    let (wal, replay) = open();
    assert_eq!(replayed(replay), numbered(1, &written[..15]));
    append_all(&wal, &written[15..30]);
    wal.close().unwrap();
    let newest = *lengths(&storage).last().unwrap();
    assert_ne!(newest % DIRECT_BLOCK, 0, "written through the page cache");

    storage.set_direct_io(true);
    let (wal, replay) = open();
    assert_eq!(replayed(replay), numbered(1, &written[..30]));
    append_all(&wal, &written[30..]);
    wal.close().unwrap();
    let (_wal, replay) = open();
    assert_eq!(replayed(replay), numbered(1, &written));
}

#[test]
fn a_direct_file_refuses_unaligned_writes() {
    let storage = MemStorage::default();
    let mut file = storage.create_new(Path::new("/wal/x"), true).unwrap();
    let error = file.write_at(&[1, 2, 3], 0).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    let mut file = storage.create_new(Path::new("/wal/y"), false).unwrap();
    file.write_at(&[1, 2, 3], 5).unwrap();
    assert_eq!(
        storage.read(Path::new("/wal/y")).unwrap(),
        [0, 0, 0, 0, 0, 1, 2, 3]
    );
}
