//! The record format: positions, the segment header and record framing.
//!
//! Pure and sans-IO: encoders append to a `Vec<u8>`, decoders read a `&[u8]`.
//! A decoder tells three outcomes apart: a clean end of the data, a torn tail
//! (the data stops in the middle of a header or record, as a crash during a
//! write leaves it) and corruption (bad magic, bad checksum, an insane
//! length, a position that does not follow its predecessor).

use std::fmt;
use std::ops::Range;

use bytes::Bytes;

use crate::storage::DIRECT_BLOCK;

/// Position of a record in the log: 1 for the first record ever written,
/// strictly increasing, never reused, also across restarts and after segment
/// deletion. [`WalPosition::ZERO`] means "before any record".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct WalPosition(pub u64);

impl WalPosition {
    /// Before any record.
    pub const ZERO: WalPosition = WalPosition(0);

    /// The position as a number.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The position right after this one.
    pub fn next(self) -> WalPosition {
        WalPosition(self.0 + 1)
    }
}

impl fmt::Display for WalPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One record of the log, as a [`Replay`](crate::Replay) yields it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalRecord {
    /// Where the record sits in the log.
    pub position: WalPosition,
    /// The bytes the caller appended, unchanged.
    pub payload: Bytes,
}

/// First bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"WEIRWAL\0";
/// Version of the segment and record layout below. Bump it on any change.
pub(crate) const FORMAT_VERSION: u32 = 2;
/// The older layout, still read: records back to back, without group
/// frames. A log of it is appended to in a new segment of the current one.
pub(crate) const UNGROUPED_VERSION: u32 = 1;
/// Length of the segment header (version 2: with the salt).
pub(crate) const SEGMENT_HEADER_LEN: usize = 8 + 4 + 8 + 8;
/// Length of a version 1 segment header (no salt).
const UNGROUPED_HEADER_LEN: usize = 8 + 4 + 8;
/// Length of the frame in front of each payload.
pub(crate) const RECORD_HEADER_LEN: usize = 4 + 4 + 8;
/// First bytes of every group frame.
pub(crate) const GROUP_MAGIC: [u8; 4] = *b"WGRP";
/// Length of the frame in front of each group of records.
pub(crate) const GROUP_HEADER_LEN: usize = 4 + 4 + 4 + 4 + 8;
/// Largest payload a record may carry (1 GiB). A larger length field is
/// corruption; a larger payload is refused by `enqueue`.
pub const MAX_PAYLOAD_LEN: usize = 1 << 30;

/// What is wrong with the bytes at some offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Defect {
    /// The data ends in the middle of a header or record (or the header is
    /// all zeros, which is what a crash leaves when a file's size reached the
    /// disk but its data did not).
    Torn(String),
    /// The bytes are all there but wrong.
    Corrupt(String),
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Defect::Torn(reason) => write!(f, "torn: {reason}"),
            Defect::Corrupt(reason) => write!(f, "corrupt: {reason}"),
        }
    }
}

/// A record found by [`decode_record`]: where its payload is and where the
/// next record starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decoded {
    pub position: WalPosition,
    pub payload: Range<usize>,
    pub end: usize,
}

// Segment header, at offset 0 of every segment file (28 bytes, integers
// little-endian):
//
//   0               8               12                    20             28
//   +---------------+---------------+---------------------+--------------+
//   | magic         | version u32   | first position u64  | salt u64     |
//   | "WEIRWAL\0"   | (2)           | (as in the file name)| (random)     |
//   +---------------+---------------+---------------------+--------------+
//
// (Version 1 headers end at byte 20, without the salt.) The salt is drawn
// when the segment is created and seeds every group checksum in it, so that
// bytes a producer sent (payloads are stored verbatim) can never pass for a
// group frame: they cannot know the salt.
//
// then groups back to back until the end of the file, or until zero padding:
// a segment written with direct I/O ends in fewer than DIRECT_BLOCK zero
// bytes that fill its last block (the next write puts that block down again
// with its new bytes). A group is what the writer wrote with one write and
// one fsync; it is framed (version 2):
//
//   0           4           8           12          16                24
//   +-----------+-----------+-----------+-----------+------------------+---------+
//   | "WGRP"    | len u32   | crc32c u32| count u32 | first position   | records |
//   |           |           |           |           | u64              | (len)   |
//   +-----------+-----------+-----------+-----------+------------------+---------+
//
// `len` is the bytes of its records, `crc32c` covers the segment's salt, then
// bytes 12..24+len (count, first position and the records). Only the last group can be torn by a crash:
// a group is written only after the one before it is durable. So bad bytes
// with no intact group after them are a torn tail, and bad bytes with an
// intact group after them are corruption, even where the torn group's pages
// reached the disk out of order and some of its records are intact.
//
// In a group, `count` records back to back (version 1 has only these, with no
// group frames), each:
//
//   0           4           8                  16                 16+len
//   +-----------+-----------+------------------+------------------+
//   | len u32   | crc32c u32| position u64     | payload          |
//   +-----------+-----------+------------------+------------------+
//
// `len` is the payload length (at most MAX_PAYLOAD_LEN). `crc32c` (Castagnoli)
// covers bytes 8..16+len, position then payload. The first record of a segment
// has the segment's first position, and each later one the position after its
// predecessor's.

/// Appends a segment header for a segment whose first record is `first`,
/// with a new random salt.
pub(crate) fn encode_segment_header(first: WalPosition, out: &mut Vec<u8>) {
    use std::hash::{BuildHasher, Hasher};
    // SipHash with random keys: a random number without another crate.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(first.get());
    let salt = hasher.finish();
    out.extend_from_slice(&SEGMENT_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&first.get().to_le_bytes());
    out.extend_from_slice(&salt.to_le_bytes());
}

/// The salt of a segment whose header [`decode_segment_header`] accepted
/// (0 for version 1, which has no groups).
pub(crate) fn segment_salt(header: &[u8]) -> u64 {
    match segment_version(header) {
        UNGROUPED_VERSION => 0,
        _ => u64_at(header, 20),
    }
}

/// Where a segment's records (or groups) start.
pub(crate) fn data_start(header: &[u8]) -> usize {
    match segment_version(header) {
        UNGROUPED_VERSION => UNGROUPED_HEADER_LEN,
        _ => SEGMENT_HEADER_LEN,
    }
}

fn salted_crc(salt: u64, bytes: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&salt.to_le_bytes()), bytes)
}

/// Appends one framed record. The caller keeps `payload.len()` at or below
/// [`MAX_PAYLOAD_LEN`].
pub(crate) fn encode_record(position: WalPosition, payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!(payload.len() <= MAX_PAYLOAD_LEN);
    let position = position.get().to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&position), payload);
    out.reserve(RECORD_HEADER_LEN + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&position);
    out.extend_from_slice(payload);
}

/// Reserves a group frame at the end of `out`; returns where it starts, for
/// [`finish_group`] once the group's records are appended.
pub(crate) fn begin_group(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; GROUP_HEADER_LEN]);
    start
}

/// Fills in the frame reserved at `start` for the `count` records appended
/// after it, the first at position `first`, in a segment salted `salt`.
pub(crate) fn finish_group(
    out: &mut [u8],
    start: usize,
    first: WalPosition,
    count: u32,
    salt: u64,
) {
    let len = out.len() - start - GROUP_HEADER_LEN;
    // At most a group of `max_group_bytes` plus one record of at most 1 GiB.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out[start + 12..start + 16].copy_from_slice(&count.to_le_bytes());
    out[start + 16..start + 24].copy_from_slice(&first.get().to_le_bytes());
    let crc = salted_crc(salt, &out[start + 12..]);
    out[start..start + 4].copy_from_slice(&GROUP_MAGIC);
    out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

/// A group found by [`decode_group`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Group {
    pub first: WalPosition,
    pub count: u32,
    /// Where its first record starts.
    pub records: usize,
    /// Where the next group starts.
    pub end: usize,
}

/// Whether the bytes from `offset` to the end are the zero padding a direct
/// write leaves: fewer than [`DIRECT_BLOCK`] zero bytes, up to an end on a
/// block boundary. Longer zeros are not padding: they are what a crash
/// leaves when a file's length reached the disk and its data did not.
pub(crate) fn is_padding(buf: &[u8], offset: usize) -> bool {
    let rest = buf.get(offset..).unwrap_or_default();
    rest.len() < DIRECT_BLOCK
        && buf.len().is_multiple_of(DIRECT_BLOCK)
        && rest.iter().all(|&b| b == 0)
}

/// Decodes the group frame at `offset` and checks its checksum and that its
/// first position is `expected` (its records are not decoded). `Ok(None)`
/// means a clean end.
pub(crate) fn decode_group(
    buf: &[u8],
    offset: usize,
    expected: WalPosition,
    salt: u64,
) -> Result<Option<Group>, Defect> {
    let Some(group) = decode_group_frame(buf, offset, salt)? else {
        return Ok(None);
    };
    if group.first != expected {
        return Err(Defect::Corrupt(format!(
            "group starts at position {}, expected {expected}",
            group.first
        )));
    }
    Ok(Some(group))
}

/// Looks for an intact group (whole, valid checksum, a first position at or
/// after `expected` that the remaining bytes could reach) starting anywhere
/// at or after `from`: after bad bytes, one means corruption, none a torn
/// tail.
pub(crate) fn find_intact_group(
    buf: &[u8],
    from: usize,
    expected: WalPosition,
    salt: u64,
) -> Option<usize> {
    let reachable = (buf.len().saturating_sub(from) / RECORD_HEADER_LEN) as u64;
    let candidates = buf.get(from..)?.windows(4).enumerate();
    candidates
        .filter(|(_, magic)| *magic == GROUP_MAGIC)
        .map(|(i, _)| from + i)
        .find(|&offset| match decode_group_frame(buf, offset, salt) {
            Ok(Some(group)) => {
                let first = group.first.get();
                first >= expected.get() && first - expected.get() <= reachable
            }
            _ => false,
        })
}

/// The first position of the intact group at `offset` (one that
/// [`find_intact_group`] found).
pub(crate) fn group_first(buf: &[u8], offset: usize) -> WalPosition {
    WalPosition(u64_at(buf, offset + 16))
}

fn decode_group_frame(buf: &[u8], offset: usize, salt: u64) -> Result<Option<Group>, Defect> {
    let rest = buf.get(offset..).unwrap_or_default();
    if rest.is_empty() {
        return Ok(None);
    }
    if rest.len() < GROUP_HEADER_LEN {
        return Err(Defect::Torn(format!(
            "{} bytes left, a group header needs {GROUP_HEADER_LEN}",
            rest.len()
        )));
    }
    if rest[..4] != GROUP_MAGIC {
        return Err(Defect::Corrupt(format!(
            "bad group magic {:?}, expected {GROUP_MAGIC:?}",
            &rest[..4]
        )));
    }
    let len = u32_at(rest, 4) as usize;
    let end = GROUP_HEADER_LEN + len;
    if rest.len() < end {
        return Err(Defect::Torn(format!(
            "the group needs {end} bytes, {} left",
            rest.len()
        )));
    }
    let stored = u32_at(rest, 8);
    let computed = salted_crc(salt, &rest[12..end]);
    if stored != computed {
        return Err(Defect::Corrupt(format!(
            "group checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
        )));
    }
    Ok(Some(Group {
        count: u32_at(rest, 12),
        first: WalPosition(u64_at(rest, 16)),
        records: offset + GROUP_HEADER_LEN,
        end: offset + end,
    }))
}

/// The layout version of a segment whose header [`decode_segment_header`]
/// accepted.
pub(crate) fn segment_version(header: &[u8]) -> u32 {
    u32_at(header, 8)
}

/// Reads the segment header at the start of `buf` and returns the segment's
/// first position.
pub(crate) fn decode_segment_header(buf: &[u8]) -> Result<WalPosition, Defect> {
    let torn = || {
        Defect::Torn(format!(
            "the segment header needs {SEGMENT_HEADER_LEN} bytes, the file has {}",
            buf.len()
        ))
    };
    let header = buf.get(..UNGROUPED_HEADER_LEN).ok_or_else(torn)?;
    if header.iter().all(|&b| b == 0) {
        return Err(Defect::Torn("the segment header is all zeros".into()));
    }
    if header[..8] != SEGMENT_MAGIC {
        return Err(Defect::Corrupt(format!(
            "bad magic {:?}, expected {:?}",
            &header[..8],
            SEGMENT_MAGIC
        )));
    }
    let version = u32_at(header, 8);
    if version != FORMAT_VERSION && version != UNGROUPED_VERSION {
        return Err(Defect::Corrupt(format!(
            "unsupported format version {version}, this build reads versions {UNGROUPED_VERSION} and {FORMAT_VERSION}"
        )));
    }
    if version != UNGROUPED_VERSION && buf.len() < SEGMENT_HEADER_LEN {
        return Err(torn());
    }
    let first = u64_at(header, 12);
    if first == 0 {
        return Err(Defect::Corrupt(
            "first position 0 in the segment header".into(),
        ));
    }
    Ok(WalPosition(first))
}

/// Decodes the record at `offset`, which must have position `expected`.
/// `Ok(None)` means a clean end: `offset` is exactly the end of `buf`.
pub(crate) fn decode_record(
    buf: &[u8],
    offset: usize,
    expected: WalPosition,
) -> Result<Option<Decoded>, Defect> {
    let Some(decoded) = decode_frame(buf, offset)? else {
        return Ok(None);
    };
    if decoded.position != expected {
        return Err(Defect::Corrupt(format!(
            "record has position {}, expected {expected}",
            decoded.position
        )));
    }
    Ok(Some(decoded))
}

/// Looks for an intact record (whole frame, valid checksum, a position at or
/// after `expected` that the remaining bytes could reach) starting anywhere at
/// or after `from`. Recovery uses this to tell a torn tail (nothing intact
/// follows the bad bytes) from corruption in the middle of the data.
pub(crate) fn find_intact_record(buf: &[u8], from: usize, expected: WalPosition) -> Option<usize> {
    let reachable = (buf.len().saturating_sub(from) / RECORD_HEADER_LEN) as u64;
    (from..buf.len()).find(|&offset| match decode_frame(buf, offset) {
        Ok(Some(decoded)) => {
            let position = decoded.position.get();
            position >= expected.get() && position - expected.get() <= reachable
        }
        _ => false,
    })
}

/// Decodes a frame at `offset` without checking its position.
fn decode_frame(buf: &[u8], offset: usize) -> Result<Option<Decoded>, Defect> {
    let rest = buf.get(offset..).unwrap_or_default();
    if rest.is_empty() {
        return Ok(None);
    }
    if rest.len() < RECORD_HEADER_LEN {
        return Err(Defect::Torn(format!(
            "{} bytes left, a record header needs {RECORD_HEADER_LEN}",
            rest.len()
        )));
    }
    let len = u32_at(rest, 0) as usize;
    if len > MAX_PAYLOAD_LEN {
        return Err(Defect::Corrupt(format!(
            "payload length {len} exceeds the limit of {MAX_PAYLOAD_LEN}"
        )));
    }
    let end = RECORD_HEADER_LEN + len;
    if rest.len() < end {
        return Err(Defect::Torn(format!(
            "the record needs {end} bytes, {} left",
            rest.len()
        )));
    }
    let stored = u32_at(rest, 4);
    let computed = crc32c::crc32c(&rest[8..end]);
    if stored != computed {
        return Err(Defect::Corrupt(format!(
            "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
        )));
    }
    Ok(Some(Decoded {
        position: WalPosition(u64_at(rest, 8)),
        payload: offset + RECORD_HEADER_LEN..offset + end,
        end: offset + end,
    }))
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut bytes = [0; 4];
    bytes.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(bytes)
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// Encodes records at positions `first..` with the given payloads.
    fn encode_all(first: u64, payloads: &[Vec<u8>]) -> Vec<u8> {
        let mut buf = Vec::new();
        for (i, payload) in payloads.iter().enumerate() {
            encode_record(WalPosition(first + i as u64), payload, &mut buf);
        }
        buf
    }

    /// Records as (position, payload), then where decoding stopped and why.
    type DecodedAll = (Vec<(u64, Vec<u8>)>, Option<(usize, Defect)>);

    /// Decodes records from `buf` until the end or the first defect.
    fn decode_all(buf: &[u8], first: u64) -> DecodedAll {
        let mut out = Vec::new();
        let (mut offset, mut expected) = (0, WalPosition(first));
        loop {
            match decode_record(buf, offset, expected) {
                Ok(Some(d)) => {
                    out.push((d.position.get(), buf[d.payload].to_vec()));
                    offset = d.end;
                    expected = expected.next();
                }
                Ok(None) => return (out, None),
                Err(defect) => return (out, Some((offset, defect))),
            }
        }
    }

    fn random_payloads(rng: &mut StdRng, n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|_| {
                let mut p = vec![0; rng.random_range(0..200)];
                rng.fill(&mut p[..]);
                p
            })
            .collect()
    }

    #[test]
    fn position_basics() {
        assert_eq!(WalPosition::ZERO, WalPosition::default());
        assert_eq!(WalPosition::ZERO.next(), WalPosition(1));
        assert_eq!(WalPosition(41).next().get(), 42);
        assert!(WalPosition(2) > WalPosition(1));
        assert_eq!(WalPosition(7).to_string(), "7");
    }

    #[test]
    fn header_round_trip_and_layout() {
        let mut buf = Vec::new();
        encode_segment_header(WalPosition(0x0102), &mut buf);
        assert_eq!(buf.len(), SEGMENT_HEADER_LEN);
        assert_eq!(&buf[..8], b"WEIRWAL\0");
        assert_eq!(&buf[8..12], &[2, 0, 0, 0]);
        assert_eq!(&buf[12..20], &[2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decode_segment_header(&buf), Ok(WalPosition(0x0102)));
    }

    #[test]
    fn header_defects() {
        let mut good = Vec::new();
        encode_segment_header(WalPosition(5), &mut good);
        for len in 0..SEGMENT_HEADER_LEN {
            assert!(matches!(
                decode_segment_header(&good[..len]),
                Err(Defect::Torn(_))
            ));
        }
        let zeros = [0; SEGMENT_HEADER_LEN];
        assert!(matches!(
            decode_segment_header(&zeros),
            Err(Defect::Torn(_))
        ));
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        assert!(matches!(
            decode_segment_header(&bad_magic),
            Err(Defect::Corrupt(_))
        ));
        let mut older = good.clone();
        older[8] = 1;
        assert_eq!(decode_segment_header(&older), Ok(WalPosition(5)));
        let mut future = good.clone();
        future[8] = 3;
        let Err(Defect::Corrupt(reason)) = decode_segment_header(&future) else {
            panic!("a future version must be refused");
        };
        assert!(reason.contains("version 3"), "{reason}");
        let mut zero_first = Vec::new();
        encode_segment_header(WalPosition::ZERO, &mut zero_first);
        assert!(matches!(
            decode_segment_header(&zero_first),
            Err(Defect::Corrupt(_))
        ));
    }

    #[test]
    fn record_layout() {
        let mut buf = Vec::new();
        encode_record(WalPosition(3), b"abc", &mut buf);
        assert_eq!(buf.len(), RECORD_HEADER_LEN + 3);
        assert_eq!(&buf[0..4], &[3, 0, 0, 0]);
        let crc = crc32c::crc32c(&[&3u64.to_le_bytes()[..], b"abc"].concat());
        assert_eq!(&buf[4..8], &crc.to_le_bytes());
        assert_eq!(&buf[8..16], &3u64.to_le_bytes());
        assert_eq!(&buf[16..], b"abc");
    }

    #[test]
    fn records_round_trip() {
        let mut rng = StdRng::seed_from_u64(1);
        let payloads = random_payloads(&mut rng, 100);
        let buf = encode_all(17, &payloads);
        let (decoded, defect) = decode_all(&buf, 17);
        assert_eq!(defect, None);
        let expected: Vec<_> = (17..).zip(payloads).collect();
        assert_eq!(decoded, expected);
    }

    #[test]
    fn empty_payload_round_trips() {
        let buf = encode_all(1, &[vec![], vec![], b"x".to_vec()]);
        let (decoded, defect) = decode_all(&buf, 1);
        assert_eq!(defect, None);
        assert_eq!(decoded, vec![(1, vec![]), (2, vec![]), (3, b"x".to_vec())]);
    }

    #[test]
    fn every_cut_of_the_last_record_is_a_torn_tail() {
        let buf = encode_all(1, &[b"first".to_vec(), b"second record".to_vec()]);
        let second = RECORD_HEADER_LEN + 5;
        for cut in second + 1..buf.len() {
            let (decoded, defect) = decode_all(&buf[..cut], 1);
            assert_eq!(decoded.len(), 1, "cut at {cut}");
            let (offset, defect) = defect.expect("a cut record is a defect");
            assert_eq!(offset, second);
            assert!(matches!(defect, Defect::Torn(_)), "cut at {cut}: {defect}");
        }
        // Cutting exactly at a record boundary is a clean end.
        assert_eq!(
            decode_all(&buf[..second], 1),
            (vec![(1, b"first".to_vec())], None)
        );
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let buf = encode_all(1, &[b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
        for at in 0..buf.len() {
            let mut bad = buf.clone();
            bad[at] ^= 0x40;
            let (decoded, defect) = decode_all(&bad, 1);
            assert!(defect.is_some(), "flip at {at} went unnoticed");
            assert!(decoded.len() < 3, "flip at {at}");
        }
    }

    #[test]
    fn corruption_kinds() {
        // Right checksum, wrong position: not consecutive.
        let buf = encode_all(1, &[b"a".to_vec(), b"b".to_vec()]);
        let Err(Defect::Corrupt(reason)) = decode_record(&buf, 0, WalPosition(2)) else {
            panic!("wrong position must be corrupt");
        };
        assert!(reason.contains("expected 2"), "{reason}");
        // Insane length.
        let mut insane = buf.clone();
        insane[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let Err(Defect::Corrupt(reason)) = decode_record(&insane, 0, WalPosition(1)) else {
            panic!("an insane length must be corrupt");
        };
        assert!(reason.contains("exceeds"), "{reason}");
        // Bad checksum.
        let mut flipped = buf.clone();
        flipped[RECORD_HEADER_LEN] ^= 1;
        let Err(Defect::Corrupt(reason)) = decode_record(&flipped, 0, WalPosition(1)) else {
            panic!("a bad checksum must be corrupt");
        };
        assert!(reason.contains("checksum"), "{reason}");
    }

    #[test]
    fn find_intact_record_tells_tails_from_holes() {
        let payloads = [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()];
        let buf = encode_all(1, &payloads);
        let second = RECORD_HEADER_LEN + 3;
        let third = second + RECORD_HEADER_LEN + 3;
        // Damage the second record: the third is still intact, so it is found.
        let mut hole = buf.clone();
        hole[second + RECORD_HEADER_LEN] ^= 1;
        assert_eq!(
            find_intact_record(&hole, second + 1, WalPosition(2)),
            Some(third)
        );
        // Damage the last record: nothing intact follows.
        let mut tail = buf.clone();
        tail[third + RECORD_HEADER_LEN] ^= 1;
        assert_eq!(find_intact_record(&tail, third + 1, WalPosition(3)), None);
        // Zeros after the data are not records.
        let mut zeros = buf[..third].to_vec();
        zeros.resize(third + 100, 0);
        assert_eq!(find_intact_record(&zeros, third, WalPosition(3)), None);
        // A record from before `expected` does not count.
        assert_eq!(find_intact_record(&buf, 0, WalPosition(3)), Some(third));
    }
}
