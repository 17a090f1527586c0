//! Recovery: segment naming, torn tails, corruption and the policy.

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::*;
use crate::record::{GROUP_HEADER_LEN, RECORD_HEADER_LEN};
use crate::{Replay, Wal, WalConfig, WalRecord};

pub(super) fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

/// Through the page cache, so that a segment's file ends where its log
/// does and the tests can cut and flip bytes at offsets of the log; the
/// direct I/O tests are at the end.
fn config(corruption: CorruptionPolicy) -> WalConfig {
    WalConfig {
        corruption,
        direct_io: false,
        ..WalConfig::for_tests()
    }
}

fn open(dir: &Path, corruption: CorruptionPolicy) -> Result<(Wal, Replay)> {
    Wal::open(dir, config(corruption))
}

/// Appends `payloads` one at a time (one group each) and closes the log.
fn append_all(dir: &Path, payloads: &[Bytes]) {
    let (wal, _) = open(dir, CorruptionPolicy::Fail).unwrap();
    for payload in payloads {
        block_on(wal.append(payload.clone())).unwrap();
    }
    wal.close().unwrap();
}

fn payloads(n: usize, len: usize) -> Vec<Bytes> {
    (0..n).map(|i| Bytes::from(format!("{i:0len$}"))).collect()
}

pub(super) fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .collect();
    files.sort();
    files
}

/// Byte offset of the `k`-th group (0-based) of a segment holding
/// `payloads`, one record per group.
fn group_offset(payloads: &[Bytes], k: usize) -> u64 {
    let frames: usize = payloads[..k]
        .iter()
        .map(|p| GROUP_HEADER_LEN + RECORD_HEADER_LEN + p.len())
        .sum();
    (SEGMENT_HEADER_LEN + frames) as u64
}

fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = fs::read(path).unwrap();
    f(&mut bytes);
    fs::write(path, bytes).unwrap();
}

/// Replays every record as (position, payload).
pub(super) fn replayed(replay: Replay) -> Vec<(u64, Bytes)> {
    let records: Vec<WalRecord> = replay.collect_all().unwrap();
    records
        .into_iter()
        .map(|r| (r.position.get(), r.payload))
        .collect()
}

pub(super) fn numbered(first: u64, payloads: &[Bytes]) -> Vec<(u64, Bytes)> {
    (first..).zip(payloads.iter().cloned()).collect()
}

/// Checks that `open` itself failed with `Error::Corrupt`.
fn expect_corrupt(result: Result<(Wal, Replay)>) -> (PathBuf, u64, String) {
    match result {
        Err(Error::Corrupt {
            segment,
            offset,
            reason,
        }) => (segment, offset, reason),
        Err(other) => panic!("expected Error::Corrupt, got {other}"),
        Ok(_) => panic!("expected Error::Corrupt, the log opened"),
    }
}

#[test]
fn file_names_sort_like_positions() {
    assert_eq!(file_name(WalPosition(1)), "00000000000000000001.wal");
    assert_eq!(file_name(WalPosition(u64::MAX)), "18446744073709551615.wal");
    for n in [1, 9, 10, 12345, u64::MAX] {
        assert_eq!(
            parse_file_name(&file_name(WalPosition(n))),
            Some(WalPosition(n))
        );
    }
    for junk in [
        "1.wal",
        "00000000000000000000.wal",
        "00000000000000000001.wal.tmp",
        "0000000000000000000a.wal",
        "99999999999999999999.wal",
        "README",
    ] {
        assert_eq!(parse_file_name(junk), None, "{junk}");
    }
    let positions = [3, 1_000_000, 20, 1, 999];
    let mut by_name: Vec<_> = positions
        .iter()
        .map(|&n| file_name(WalPosition(n)))
        .collect();
    by_name.sort();
    let mut by_position = positions;
    by_position.sort();
    let expected: Vec<_> = by_position
        .iter()
        .map(|&n| file_name(WalPosition(n)))
        .collect();
    assert_eq!(by_name, expected);
}

#[test]
fn foreign_files_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("README"), "not a segment").unwrap();
    fs::write(dir.path().join("00000000000000000007.wal.tmp"), "junk").unwrap();
    let (wal, records) = open(dir.path(), CorruptionPolicy::Fail).unwrap();
    assert!(records.is_empty());
    assert_eq!(
        block_on(wal.append(Bytes::from_static(b"x"))).unwrap(),
        WalPosition(1)
    );
}

#[test]
fn torn_tail_is_truncated_and_appends_continue() {
    let written = payloads(10, 20);
    let last = group_offset(&written, 9);
    let full = group_offset(&written, 10);
    for cut in [full - 3, last + 5, last + 1] {
        let dir = tempfile::tempdir().unwrap();
        append_all(dir.path(), &written);
        let [segment] = &segment_files(dir.path())[..] else {
            panic!("expected one segment");
        };
        assert_eq!(fs::metadata(segment).unwrap().len(), full);
        edit(segment, |bytes| bytes.truncate(cut as usize));

        let (wal, records) = open(dir.path(), CorruptionPolicy::TruncateTornTail).unwrap();
        assert_eq!(
            replayed(records),
            numbered(1, &written[..9]),
            "cut at {cut}"
        );
        assert_eq!(
            fs::metadata(segment).unwrap().len(),
            last,
            "the torn record is cut off"
        );
        assert_eq!(wal.durable_position(), WalPosition(9));
        let new = Bytes::from_static(b"after the tear");
        assert_eq!(block_on(wal.append(new.clone())).unwrap(), WalPosition(10));
        wal.close().unwrap();

        let (_wal, records) = open(dir.path(), CorruptionPolicy::Fail).unwrap();
        let mut expected = numbered(1, &written[..9]);
        expected.push((10, new));
        assert_eq!(replayed(records), expected);
    }
}

#[test]
fn torn_tail_with_policy_fail_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let written = payloads(10, 20);
    append_all(dir.path(), &written);
    let segment = &segment_files(dir.path())[0];
    edit(segment, |bytes| bytes.truncate(bytes.len() - 3));
    let len = fs::metadata(segment).unwrap().len();

    let (path, offset, reason) = expect_corrupt(open(dir.path(), CorruptionPolicy::Fail));
    assert_eq!(&path, segment);
    assert_eq!(offset, group_offset(&written, 9));
    assert!(reason.contains("torn"), "{reason}");
    assert_eq!(
        fs::metadata(segment).unwrap().len(),
        len,
        "Fail repairs nothing"
    );
}

#[test]
fn zero_filled_tail_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let written = payloads(5, 10);
    append_all(dir.path(), &written);
    let segment = &segment_files(dir.path())[0];
    let len = fs::metadata(segment).unwrap().len();
    edit(segment, |bytes| bytes.resize(bytes.len() + 100, 0));

    expect_corrupt(open(dir.path(), CorruptionPolicy::Fail));
    let (wal, records) = open(dir.path(), CorruptionPolicy::TruncateTornTail).unwrap();
    assert_eq!(replayed(records), numbered(1, &written));
    assert_eq!(fs::metadata(segment).unwrap().len(), len);
    assert_eq!(block_on(wal.append(Bytes::new())).unwrap(), WalPosition(6));
}

#[test]
fn flipped_byte_in_the_last_record_follows_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let written = payloads(10, 20);
    append_all(dir.path(), &written);
    let segment = &segment_files(dir.path())[0];
    edit(segment, |bytes| *bytes.last_mut().unwrap() ^= 0x01);

    let (path, offset, reason) = expect_corrupt(open(dir.path(), CorruptionPolicy::Fail));
    assert_eq!(&path, segment);
    assert_eq!(offset, group_offset(&written, 9));
    assert!(reason.contains("checksum"), "{reason}");

    let (wal, records) = open(dir.path(), CorruptionPolicy::TruncateTornTail).unwrap();
    assert_eq!(replayed(records), numbered(1, &written[..9]));
    assert_eq!(block_on(wal.append(Bytes::new())).unwrap(), WalPosition(10));
}

#[test]
fn flipped_byte_before_intact_records_is_corrupt_under_every_policy() {
    let dir = tempfile::tempdir().unwrap();
    let written = payloads(10, 20);
    append_all(dir.path(), &written);
    let segment = &segment_files(dir.path())[0];
    let fifth = group_offset(&written, 4);
    edit(segment, |bytes| {
        bytes[fifth as usize + GROUP_HEADER_LEN + RECORD_HEADER_LEN + 3] ^= 0x01
    });
    let len = fs::metadata(segment).unwrap().len();

    for policy in [CorruptionPolicy::TruncateTornTail, CorruptionPolicy::Fail] {
        let (path, offset, reason) = expect_corrupt(open(dir.path(), policy));
        assert_eq!(&path, segment);
        assert_eq!(offset, fifth);
        assert!(reason.contains("checksum"), "{reason}");
    }
    let (_, _, reason) = expect_corrupt(open(dir.path(), CorruptionPolicy::TruncateTornTail));
    assert!(reason.contains("intact group follows"), "{reason}");
    assert_eq!(
        fs::metadata(segment).unwrap().len(),
        len,
        "acked records must not be cut"
    );
}

/// Writes records of 4100 bytes with 4 KiB segments: every record fills a
/// segment, so each append rotates and the newest segment is empty.
fn one_record_per_segment(dir: &Path, n: usize) -> Vec<Bytes> {
    let written = payloads(n, 4100);
    append_all(dir, &written);
    assert_eq!(segment_files(dir).len(), n + 1);
    written
}

#[test]
fn corruption_in_a_sealed_segment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    one_record_per_segment(dir.path(), 3);
    let files = segment_files(dir.path());
    // The tail of a sealed segment is no torn tail: it was fsynced before the
    // next segment existed.
    edit(&files[1], |bytes| bytes.truncate(bytes.len() - 1));
    let (path, offset, _) = expect_corrupt(open(dir.path(), CorruptionPolicy::TruncateTornTail));
    assert_eq!(path, files[1]);
    assert_eq!(offset, SEGMENT_HEADER_LEN as u64);
}

#[test]
fn torn_header_of_the_newest_segment_is_rewritten() {
    for len in [0, 7, SEGMENT_HEADER_LEN - 1] {
        let dir = tempfile::tempdir().unwrap();
        let written = one_record_per_segment(dir.path(), 3);
        let newest = segment_files(dir.path()).pop().unwrap();
        assert!(newest.ends_with("00000000000000000004.wal"));
        edit(&newest, |bytes| bytes.truncate(len));

        let (path, offset, _) = expect_corrupt(open(dir.path(), CorruptionPolicy::Fail));
        assert_eq!((path, offset), (newest.clone(), 0));

        let (wal, records) = open(dir.path(), CorruptionPolicy::TruncateTornTail).unwrap();
        assert_eq!(replayed(records), numbered(1, &written));
        assert_eq!(
            block_on(wal.append(Bytes::from_static(b"4"))).unwrap(),
            WalPosition(4)
        );
        wal.close().unwrap();
        let (_wal, records) = open(dir.path(), CorruptionPolicy::Fail).unwrap();
        assert_eq!(records.len(), 4, "header length {len}");
    }
}

#[test]
fn all_zero_header_of_the_newest_segment_is_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    one_record_per_segment(dir.path(), 2);
    let newest = segment_files(dir.path()).pop().unwrap();
    edit(&newest, |bytes| bytes.iter_mut().for_each(|b| *b = 0));
    let (wal, records) = open(dir.path(), CorruptionPolicy::TruncateTornTail).unwrap();
    assert_eq!(replayed(records).len(), 2);
    assert_eq!(block_on(wal.append(Bytes::new())).unwrap(), WalPosition(3));
}

#[test]
fn bad_magic_is_never_repaired() {
    let dir = tempfile::tempdir().unwrap();
    one_record_per_segment(dir.path(), 2);
    let newest = segment_files(dir.path()).pop().unwrap();
    edit(&newest, |bytes| bytes[0] = b'X');
    let (path, offset, reason) =
        expect_corrupt(open(dir.path(), CorruptionPolicy::TruncateTornTail));
    assert_eq!((path, offset), (newest, 0));
    assert!(reason.contains("magic"), "{reason}");
}

#[test]
fn header_must_match_the_file_name() {
    let dir = tempfile::tempdir().unwrap();
    one_record_per_segment(dir.path(), 2);
    let first = &segment_files(dir.path())[0];
    edit(first, |bytes| bytes[12] = 9);
    let (path, _, reason) = expect_corrupt(open(dir.path(), CorruptionPolicy::TruncateTornTail));
    assert_eq!(&path, first);
    assert!(reason.contains("header says first position 9"), "{reason}");
}

#[test]
fn a_missing_segment_is_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    one_record_per_segment(dir.path(), 3);
    let files = segment_files(dir.path());
    fs::remove_file(&files[1]).unwrap();
    let (path, offset, reason) =
        expect_corrupt(open(dir.path(), CorruptionPolicy::TruncateTornTail));
    assert_eq!((path, offset), (files[2].clone(), 0));
    assert!(reason.contains("starts at position 3"), "{reason}");
}

/// A segment file written by hand: `groups` of payloads from position 1,
/// in group frames (version 2) or, for version 1, records back to back.
/// Returns the bytes and where each group starts.
fn hand_made_segment(version: u32, groups: &[&[Bytes]]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = Vec::new();
    record::encode_segment_header(WalPosition(1), &mut bytes);
    bytes[8..12].copy_from_slice(&version.to_le_bytes());
    if version == 1 {
        bytes.truncate(20); // no salt
    }
    let salt = record::segment_salt(&bytes);
    let mut starts = Vec::new();
    let mut position = WalPosition(1);
    for group in groups {
        starts.push(bytes.len());
        let first = position;
        let start = (version == 2).then(|| record::begin_group(&mut bytes));
        for payload in group.iter() {
            record::encode_record(position, payload, &mut bytes);
            position = position.next();
        }
        if let Some(start) = start {
            record::finish_group(&mut bytes, start, first, group.len() as u32, salt);
        }
    }
    (bytes, starts)
}

#[test]
fn a_torn_last_group_with_intact_records_after_the_damage_is_cut_off() {
    // A power loss while the last group was written: its pages reached the
    // disk out of order, so a record in its middle is zeros and the records
    // after it are intact. None of them was acked (the fsync never ended).
    let written = payloads(8, 100);
    let (mut bytes, starts) = hand_made_segment(2, &[&written[..3], &written[3..]]);
    let last_group = starts[1];
    let fifth = last_group + GROUP_HEADER_LEN + RECORD_HEADER_LEN + 100;
    bytes[fifth..fifth + RECORD_HEADER_LEN + 100].fill(0);
    let dir = tempfile::tempdir().unwrap();
    let segment = dir.path().join(file_name(WalPosition(1)));
    fs::write(&segment, &bytes).unwrap();

    let (path, offset, reason) = expect_corrupt(open(dir.path(), CorruptionPolicy::Fail));
    assert_eq!((path, offset), (segment.clone(), last_group as u64));
    assert!(reason.contains("checksum"), "{reason}");

    let (wal, records) = open(dir.path(), CorruptionPolicy::TruncateTornTail).unwrap();
    assert_eq!(replayed(records), numbered(1, &written[..3]));
    assert_eq!(fs::metadata(&segment).unwrap().len(), last_group as u64);
    assert_eq!(block_on(wal.append(Bytes::new())).unwrap(), WalPosition(4));
}

#[test]
fn damage_before_an_intact_group_is_corrupt_under_every_policy() {
    let written = payloads(8, 100);
    let (mut bytes, starts) = hand_made_segment(2, &[&written[..3], &written[3..]]);
    bytes[starts[0] + GROUP_HEADER_LEN + RECORD_HEADER_LEN + 5] ^= 1;
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(file_name(WalPosition(1))), &bytes).unwrap();
    for policy in [CorruptionPolicy::TruncateTornTail, CorruptionPolicy::Fail] {
        let (_, offset, reason) = expect_corrupt(open(dir.path(), policy));
        assert_eq!(offset, starts[0] as u64);
        assert!(reason.contains("intact group follows"), "{reason}");
    }
}

#[test]
fn a_group_whose_checksum_holds_but_whose_records_do_not_fit_is_corrupt() {
    let written = payloads(3, 10);
    let (mut bytes, starts) = hand_made_segment(2, &[&written]);
    // Claim one record more than the group holds, with a valid checksum.
    let start = starts[0];
    let first = WalPosition(1);
    bytes.truncate(start + GROUP_HEADER_LEN + 3 * (RECORD_HEADER_LEN + 10));
    let salt = record::segment_salt(&bytes);
    record::finish_group(&mut bytes, start, first, 4, salt);
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(file_name(first)), &bytes).unwrap();
    let (_, _, reason) = expect_corrupt(open(dir.path(), CorruptionPolicy::TruncateTornTail));
    assert!(reason.contains("ends before its last record"), "{reason}");
}

#[test]
fn a_log_in_the_older_layout_is_read_and_appended_to_in_a_new_segment() {
    let written = payloads(4, 30);
    let (bytes, _) = hand_made_segment(1, &[&written]);
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join(file_name(WalPosition(1)));
    fs::write(&old, &bytes).unwrap();

    let (wal, records) = open(dir.path(), CorruptionPolicy::Fail).unwrap();
    assert_eq!(replayed(records), numbered(1, &written));
    let new = Bytes::from_static(b"in the new layout");
    assert_eq!(block_on(wal.append(new.clone())).unwrap(), WalPosition(5));
    wal.close().unwrap();
    assert_eq!(
        fs::read(&old).unwrap(),
        bytes,
        "the old segment is only read"
    );
    assert_eq!(segment_files(dir.path()).len(), 2);

    let (_wal, records) = open(dir.path(), CorruptionPolicy::Fail).unwrap();
    let mut expected = numbered(1, &written);
    expected.push((5, new));
    assert_eq!(replayed(records), expected);
}

fn skipping() -> CorruptionPolicy {
    CorruptionPolicy::SkipCorrupt
}

#[test]
fn skip_corrupt_skips_a_damaged_group_and_counts_it() {
    let written = payloads(8, 100);
    let groups: [&[Bytes]; 3] = [&written[..2], &written[2..5], &written[5..]];
    let (mut bytes, starts) = hand_made_segment(2, &groups);
    bytes[starts[1] + GROUP_HEADER_LEN + 7] ^= 1;
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(file_name(WalPosition(1))), &bytes).unwrap();

    let (wal, records) = open(dir.path(), skipping()).unwrap();
    assert_eq!(records.len(), 5);
    assert_eq!(
        records.skipped(),
        crate::Skipped {
            regions: 1,
            bytes: (starts[2] - starts[1]) as u64,
            positions: 3,
        }
    );
    let mut expected = numbered(1, &written[..2]);
    expected.extend(numbered(6, &written[5..]));
    assert_eq!(replayed(records), expected);
    assert_eq!(block_on(wal.append(Bytes::new())).unwrap(), WalPosition(9));
    wal.close().unwrap();

    // The damage stays on disk, and is skipped again on the next open.
    let (_wal, records) = open(dir.path(), skipping()).unwrap();
    assert_eq!(records.skipped().positions, 3);
    assert_eq!(records.len(), 6);
}

#[test]
fn skip_corrupt_skips_a_missing_segment_and_a_damaged_sealed_tail() {
    let dir = tempfile::tempdir().unwrap();
    let written = one_record_per_segment(dir.path(), 6);
    let files = segment_files(dir.path());
    fs::remove_file(&files[2]).unwrap();
    edit(&files[4], |bytes| {
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
    });
    expect_corrupt(open(dir.path(), CorruptionPolicy::TruncateTornTail));

    let (_wal, records) = open(dir.path(), skipping()).unwrap();
    assert_eq!(records.skipped().positions, 2);
    let kept: Vec<u64> = replayed(records).iter().map(|(p, _)| *p).collect();
    let mut expected: Vec<u64> = (1..=written.len() as u64).collect();
    expected.retain(|p| *p != 3 && *p != 5);
    assert_eq!(kept, expected);
}

#[test]
fn a_group_frame_inside_a_payload_never_passes_for_a_group() {
    // A producer's bytes are stored verbatim: one that sends a complete,
    // valid-looking group frame (of a segment with another salt) must not
    // make a torn last group look like corruption.
    let (fake_segment, fake_starts) = hand_made_segment(2, &[&payloads(1, 50)]);
    let fake_group = Bytes::from(fake_segment[fake_starts[0]..].to_vec());
    let written = [payloads(1, 10)[0].clone(), fake_group];
    let (mut bytes, starts) = hand_made_segment(2, &[&written[..1], &written[1..]]);
    // Tear the last group before the fake frame it carries.
    bytes[starts[1] + GROUP_HEADER_LEN + 2] ^= 0xff;
    let dir = tempfile::tempdir().unwrap();
    let segment = dir.path().join(file_name(WalPosition(1)));
    fs::write(&segment, &bytes).unwrap();
    let (_wal, records) = open(dir.path(), CorruptionPolicy::TruncateTornTail).unwrap();
    assert_eq!(replayed(records), numbered(1, &written[..1]));
    assert_eq!(fs::metadata(&segment).unwrap().len(), starts[1] as u64);
}
