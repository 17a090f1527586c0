//! Segment files: naming, creation and recovery on open.
//!
//! A segment is named after the position of its first record, zero-padded to
//! 20 digits (`00000000000000000001.wal`), so sorting names sorts the log.
//! The newest segment is the active one, appended to by the writer; older
//! ones are sealed and never change until they are deleted.

use std::path::{Path, PathBuf};

use tracing::warn;

use crate::record::{self, Defect, SEGMENT_HEADER_LEN};
use crate::replay::{CheckedSegment, Skip, Skipped};
use crate::storage::{Storage, StorageFile};
use crate::{CorruptionPolicy, Error, Result, WalPosition};

const SUFFIX: &str = ".wal";
const DIGITS: usize = 20;

/// The file name of the segment whose first record is `first`.
pub(crate) fn file_name(first: WalPosition) -> String {
    format!("{:0DIGITS$}{SUFFIX}", first.get())
}

/// The first position encoded in a segment file name; `None` for other files.
pub(crate) fn parse_file_name(name: &str) -> Option<WalPosition> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&n| n > 0).map(WalPosition)
}

/// A segment file of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentMeta {
    pub first: WalPosition,
    pub path: PathBuf,
}

/// The segment the writer appends to.
pub(crate) struct ActiveSegment {
    pub file: Box<dyn StorageFile>,
    pub path: PathBuf,
    /// Bytes in the file.
    pub len: u64,
    /// The salt of its group checksums.
    pub salt: u64,
}

/// Creates a segment whose first record will be `first`: creates the file,
/// writes the header and fsyncs the file and the directory.
pub(crate) fn create(
    storage: &dyn Storage,
    dir: &Path,
    first: WalPosition,
) -> Result<ActiveSegment> {
    let path = dir.join(file_name(first));
    let mut file = storage
        .create_new(&path)
        .map_err(|e| Error::io("create segment", &path, e))?;
    let mut header = Vec::with_capacity(SEGMENT_HEADER_LEN);
    record::encode_segment_header(first, &mut header);
    file.write_all(&header)
        .map_err(|e| Error::io("write segment header", &path, e))?;
    file.sync_data()
        .map_err(|e| Error::io("fsync segment", &path, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| Error::io("fsync directory", dir, e))?;
    Ok(ActiveSegment {
        file,
        path,
        len: header.len() as u64,
        salt: record::segment_salt(&header),
    })
}

/// What [`recover`] found.
pub(crate) struct Recovered {
    /// All segments, oldest first; the last is active.
    pub segments: Vec<SegmentMeta>,
    /// The checked segments, oldest first, for [`Replay`](crate::Replay).
    pub checked: Vec<CheckedSegment>,
    /// Position of the next record to append.
    pub next: WalPosition,
    pub active: ActiveSegment,
    /// What [`CorruptionPolicy::SkipCorrupt`] skipped.
    pub skipped: Skipped,
}

/// Opens the log in `dir` (creating it if needed): reads and checks every
/// segment in order, one at a time (headers, checksums, position continuity),
/// repairs a torn tail of the newest segment if `policy` allows, and opens the
/// newest segment for appending. No segment's bytes are kept: the records are
/// read again by the [`Replay`](crate::Replay).
pub(crate) fn recover(
    storage: &dyn Storage,
    dir: &Path,
    policy: CorruptionPolicy,
    after: WalPosition,
) -> Result<Recovered> {
    storage
        .create_dir_all(dir)
        .map_err(|e| Error::io("create directory", dir, e))?;
    // A directory just created is durable only once its parent is synced.
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        storage
            .sync_dir(parent)
            .map_err(|e| Error::io("fsync directory", parent, e))?;
    }
    let names = storage
        .list(dir)
        .map_err(|e| Error::io("list directory", dir, e))?;
    let mut segments: Vec<SegmentMeta> = names
        .iter()
        .filter_map(|name| {
            parse_file_name(name).map(|first| SegmentMeta {
                first,
                path: dir.join(name),
            })
        })
        .collect();
    segments.sort_by_key(|segment| segment.first);

    let Some(newest) = segments.last().cloned() else {
        let first = after.next();
        let active = create(storage, dir, first)?;
        let path = active.path.clone();
        return Ok(Recovered {
            segments: vec![SegmentMeta { first, path }],
            checked: Vec::new(),
            next: first,
            active,
            skipped: Skipped::default(),
        });
    };

    let mut checked = Vec::with_capacity(segments.len());
    let mut next: Option<WalPosition> = None;
    let mut active_len = 0;
    let mut active_version = record::FORMAT_VERSION;
    let mut active_salt = 0;
    let mut skipped = Skipped::default();
    let skip = policy == CorruptionPolicy::SkipCorrupt;
    for segment in &segments {
        let is_newest = segment.first == newest.first;
        if let Some(expected) = next
            && skip
            && segment.first > expected
        {
            let lost = segment.first.get() - expected.get();
            warn!(segment = %segment.path.display(), from = %expected, positions = lost, "skipping a gap in the WAL: the records before this segment are lost");
            skipped.regions += 1;
            skipped.positions += lost;
        } else if let Some(expected) = next
            && segment.first != expected
        {
            return Err(corrupt(
                segment,
                0,
                format!(
                    "the segment starts at position {}, but the previous one ends before {expected}",
                    segment.first
                ),
            ));
        }
        let repair = is_newest && policy != CorruptionPolicy::Fail;
        // Dropped at the end of this iteration: one segment in memory at a time.
        let bytes = storage
            .read(&segment.path)
            .map_err(|e| Error::io("read segment", &segment.path, e))?;
        let end = check_segment(storage, segment, &bytes, repair, skip)?;
        next = Some(end.next);
        active_len = end.len;
        active_version = end.version;
        active_salt = end.salt;
        for region in &end.skips {
            skipped.regions += 1;
            skipped.bytes += (region.resume - region.at) as u64;
            skipped.positions += region.lost;
        }
        checked.push(CheckedSegment {
            meta: segment.clone(),
            end: end.next,
            len: end.len,
            skips: end.skips,
        });
    }
    let next = next.unwrap_or(newest.first);
    if next.get() - 1 < after.get() {
        return Err(Error::Behind {
            dir: dir.to_path_buf(),
            ends: next.get() - 1,
            consumed: after.get(),
        });
    }
    if active_version != record::FORMAT_VERSION {
        // An older layout is only read: appends go to a new segment (or,
        // if the old one holds no record, over its header).
        if next == newest.first {
            let mut header = Vec::with_capacity(SEGMENT_HEADER_LEN);
            record::encode_segment_header(newest.first, &mut header);
            rewrite(storage, &newest.path, 0, &header)?;
            active_len = header.len() as u64;
            active_salt = record::segment_salt(&header);
            if let Some(last) = checked.last_mut() {
                last.len = active_len;
            }
        } else {
            let active = create(storage, dir, next)?;
            segments.push(SegmentMeta {
                first: next,
                path: active.path.clone(),
            });
            return Ok(Recovered {
                next,
                active,
                segments,
                checked,
                skipped,
            });
        }
    }
    let file = storage
        .open_append(&newest.path)
        .map_err(|e| Error::io("open segment", &newest.path, e))?;
    Ok(Recovered {
        next,
        active: ActiveSegment {
            file,
            path: newest.path.clone(),
            len: active_len,
            salt: active_salt,
        },
        segments,
        checked,
        skipped,
    })
}

/// Where a segment ends after checking (and maybe repairing) it.
struct SegmentEnd {
    /// Position after its last record.
    next: WalPosition,
    /// Its length in bytes.
    len: u64,
    /// Its layout version.
    version: u32,
    /// Its salt.
    salt: u64,
    /// The corrupt regions skipped, in order.
    skips: Vec<Skip>,
}

/// Checks one segment's header and records. With `repair`, a defect that no
/// intact record follows is a torn tail and is cut off (a torn header is
/// rewritten); any other defect is [`Error::Corrupt`].
fn check_segment(
    storage: &dyn Storage,
    segment: &SegmentMeta,
    bytes: &[u8],
    repair: bool,
    skip: bool,
) -> Result<SegmentEnd> {
    match record::decode_segment_header(bytes) {
        Ok(first) if first == segment.first => {}
        Ok(first) => {
            return Err(corrupt(
                segment,
                0,
                format!(
                    "the header says first position {first}, the file name {}",
                    segment.first
                ),
            ));
        }
        // Only a short or all-zero header is torn: a bad magic or an unknown
        // version may be another program's file or a newer format, never ours
        // to overwrite.
        Err(Defect::Torn(reason))
            if repair && record::find_intact_record(bytes, 0, segment.first).is_none() =>
        {
            warn!(segment = %segment.path.display(), %reason, "rewriting the torn header of the newest WAL segment");
            let mut header = Vec::with_capacity(SEGMENT_HEADER_LEN);
            record::encode_segment_header(segment.first, &mut header);
            rewrite(storage, &segment.path, 0, &header)?;
            return Ok(SegmentEnd {
                next: segment.first,
                len: header.len() as u64,
                version: record::FORMAT_VERSION,
                salt: record::segment_salt(&header),
                skips: Vec::new(),
            });
        }
        Err(defect) => return Err(corrupt(segment, 0, defect.to_string())),
    }

    let version = record::segment_version(bytes);
    let mut skips = Vec::new();
    let (offset, expected) = if version == record::UNGROUPED_VERSION {
        check_ungrouped(storage, segment, bytes, repair)?
    } else {
        let skips = skip.then_some(&mut skips);
        check_groups(storage, segment, bytes, repair, skips)?
    };
    Ok(SegmentEnd {
        next: expected,
        len: offset as u64,
        version,
        salt: record::segment_salt(bytes),
        skips,
    })
}

/// Checks the groups of a segment (see [`crate::record`]); returns where the
/// checked bytes end and the position after the last record. With `skips`,
/// corruption is skipped (and the skipped regions pushed there) instead of
/// failing.
fn check_groups(
    storage: &dyn Storage,
    segment: &SegmentMeta,
    bytes: &[u8],
    repair: bool,
    mut skips: Option<&mut Vec<Skip>>,
) -> Result<(usize, WalPosition)> {
    let salt = record::segment_salt(bytes);
    let mut offset = record::data_start(bytes);
    let mut expected = segment.first;
    loop {
        match record::decode_group(bytes, offset, expected, salt) {
            Ok(Some(group)) => {
                // The checksum held: anything wrong inside is corruption,
                // never a torn write.
                expected = check_group_records(bytes, &group)
                    .map_err(|(at, reason)| corrupt(segment, at as u64, reason))?;
                offset = group.end;
            }
            Ok(None) => return Ok((offset, expected)),
            Err(defect) => {
                let follows = record::find_intact_group(bytes, offset + 1, expected, salt);
                let torn = follows.is_none() && repair;
                if let Some(skips) = skips.as_deref_mut().filter(|_| !torn) {
                    // Skip to the intact group, or to the end of a sealed
                    // segment.
                    let (resume, next) = match follows {
                        Some(at) => (at, record::group_first(bytes, at)),
                        None => (bytes.len(), expected),
                    };
                    warn!(
                        segment = %segment.path.display(),
                        offset,
                        bytes = resume - offset,
                        from = %expected,
                        lost = next.get() - expected.get(),
                        %defect,
                        "skipping corrupt WAL bytes (wal.corruption = \"skip\"): their records are lost"
                    );
                    skips.push(Skip {
                        at: offset,
                        resume,
                        next,
                        lost: next.get() - expected.get(),
                    });
                    if follows.is_none() {
                        return Ok((offset, expected));
                    }
                    offset = resume;
                    expected = next;
                    continue;
                }
                let end = TornOrCorrupt {
                    offset,
                    defect,
                    follows,
                    unit: "group",
                };
                return end
                    .settle(storage, segment, bytes, repair)
                    .map(|()| (offset, expected));
            }
        }
    }
}

/// Decodes the records of an intact group: exactly `count` of them, in
/// position order, filling the group. Returns the position after the last,
/// or where and why they do not fit.
fn check_group_records(
    bytes: &[u8],
    group: &record::Group,
) -> std::result::Result<WalPosition, (usize, String)> {
    let records = &bytes[..group.end];
    let mut offset = group.records;
    let mut expected = group.first;
    for _ in 0..group.count {
        match record::decode_record(records, offset, expected) {
            Ok(Some(decoded)) => {
                offset = decoded.end;
                expected = expected.next();
            }
            Ok(None) => return Err((offset, "the group ends before its last record".into())),
            Err(defect) => return Err((offset, format!("in an intact group: {defect}"))),
        }
    }
    if offset != group.end {
        return Err((offset, "the group holds bytes after its last record".into()));
    }
    Ok(expected)
}

/// Checks a version 1 segment: records without group frames.
fn check_ungrouped(
    storage: &dyn Storage,
    segment: &SegmentMeta,
    bytes: &[u8],
    repair: bool,
) -> Result<(usize, WalPosition)> {
    let mut offset = record::data_start(bytes);
    let mut expected = segment.first;
    loop {
        match record::decode_record(bytes, offset, expected) {
            Ok(Some(decoded)) => {
                offset = decoded.end;
                expected = expected.next();
            }
            Ok(None) => return Ok((offset, expected)),
            Err(defect) => {
                let follows = record::find_intact_record(bytes, offset + 1, expected);
                let end = TornOrCorrupt {
                    offset,
                    defect,
                    follows,
                    unit: "record",
                };
                return end
                    .settle(storage, segment, bytes, repair)
                    .map(|()| (offset, expected));
            }
        }
    }
}

/// Bad bytes at `offset` of a segment, and where an intact `unit` (group,
/// or record in version 1) follows them, if one does.
struct TornOrCorrupt {
    offset: usize,
    defect: Defect,
    follows: Option<usize>,
    unit: &'static str,
}

impl TornOrCorrupt {
    /// Cuts the bytes off as a torn tail if `repair` allows and nothing
    /// intact follows; otherwise [`Error::Corrupt`].
    fn settle(
        self,
        storage: &dyn Storage,
        segment: &SegmentMeta,
        bytes: &[u8],
        repair: bool,
    ) -> Result<()> {
        let TornOrCorrupt {
            offset,
            defect,
            follows,
            unit,
        } = self;
        if !repair || follows.is_some() {
            let mut reason = defect.to_string();
            if let Some(at) = follows {
                reason.push_str(&format!(
                    " (an intact {unit} follows at byte {at}, so this is not a torn tail)"
                ));
            }
            return Err(corrupt(segment, offset as u64, reason));
        }
        warn!(
            segment = %segment.path.display(),
            offset,
            cut_bytes = bytes.len() - offset,
            %defect,
            "truncating the torn tail of the newest WAL segment"
        );
        rewrite(storage, &segment.path, offset as u64, &[])
    }
}

/// Cuts the file at `path` to `len` bytes, appends `tail` and fsyncs.
fn rewrite(storage: &dyn Storage, path: &Path, len: u64, tail: &[u8]) -> Result<()> {
    let mut file = storage
        .open_append(path)
        .map_err(|e| Error::io("open segment", path, e))?;
    file.set_len(len)
        .map_err(|e| Error::io("truncate segment", path, e))?;
    if !tail.is_empty() {
        file.write_all(tail)
            .map_err(|e| Error::io("write segment header", path, e))?;
    }
    file.sync_data()
        .map_err(|e| Error::io("fsync segment", path, e))
}

pub(crate) fn corrupt(segment: &SegmentMeta, offset: u64, reason: String) -> Error {
    Error::Corrupt {
        segment: segment.path.clone(),
        offset,
        reason,
    }
}

#[cfg(test)]
mod tests;
