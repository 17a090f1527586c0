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
use crate::storage::{DIRECT_BLOCK, Storage, StorageFile, aligned_start};
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
    /// Bytes of log in the file. With direct I/O the file can be longer:
    /// its last block is padded with zeros.
    pub len: u64,
    /// The salt of its group checksums.
    pub salt: u64,
    /// The bytes from the last [`DIRECT_BLOCK`] boundary to `len`: a direct
    /// write starts at that boundary and puts them down again.
    tail: Vec<u8>,
}

/// How [`ActiveSegment::stage`] laid a write out in its buffer: from `lead`
/// (an aligned address), the `head` bytes already in the file, then the
/// new bytes.
pub(crate) struct Staged {
    lead: usize,
    head: usize,
    /// The file offset of the buffer's byte at `lead`.
    offset: u64,
    align: usize,
}

impl Staged {
    /// Where the new bytes start in the buffer.
    pub fn new_bytes(&self) -> usize {
        self.lead + self.head
    }
}

impl ActiveSegment {
    /// Clears `buf` for a write of `additional` new bytes at the end of the
    /// log; the caller then appends exactly those to `buf` and calls
    /// [`ActiveSegment::write`]. Without direct I/O, `buf` then holds just
    /// the new bytes. With it, they follow, at a block-aligned address, the
    /// segment's last partial block, and room is kept for the padding, so
    /// that the write needs no copy.
    pub fn stage(&self, buf: &mut Vec<u8>, additional: usize) -> Staged {
        let align = self.file.alignment();
        let head: &[u8] = if align > 1 { &self.tail } else { &[] };
        // Room for the head, the new bytes and the padding.
        let lead = aligned_start(buf, align, head.len() + additional + align);
        buf.extend_from_slice(head);
        Staged {
            lead,
            head: head.len(),
            offset: self.len - head.len() as u64,
            align,
        }
    }

    /// Writes what [`ActiveSegment::stage`] laid out in `buf`, padded with
    /// zeros to whole blocks. Neither syncs nor moves `len`: see
    /// [`ActiveSegment::advance`].
    pub fn write(&mut self, buf: &mut Vec<u8>, staged: &Staged) -> std::io::Result<()> {
        self.write_part(buf, staged, buf.len() - staged.lead)
    }

    /// Writes the first `bytes` (rounded up to whole blocks) of what
    /// [`ActiveSegment::stage`] laid out: a torn write, for crash tests.
    pub fn write_part(
        &mut self,
        buf: &mut Vec<u8>,
        staged: &Staged,
        bytes: usize,
    ) -> std::io::Result<()> {
        let end = buf.len();
        let padded = bytes.next_multiple_of(staged.align);
        buf.resize(end.max(staged.lead + padded), 0);
        let result = match &buf[staged.lead..staged.lead + padded] {
            laid if laid.as_ptr().addr() % staged.align != 0 => Err(std::io::Error::other(
                "the WAL's write buffer moved after it was laid out (more bytes than announced)",
            )),
            laid => self.file.write_at(laid, staged.offset),
        };
        buf.truncate(end);
        result
    }

    /// Moves the end of the log past the new bytes of `buf`, once they are
    /// durable.
    pub fn advance(&mut self, buf: &[u8], staged: &Staged) {
        let written = &buf[staged.lead..];
        let end = staged.offset + written.len() as u64;
        let block = end - end % DIRECT_BLOCK as u64;
        if block >= staged.offset {
            self.tail.clear();
            self.tail
                .extend_from_slice(&written[(block - staged.offset) as usize..]);
        } else {
            // Still in the tail's block (and written without the head).
            self.tail.extend_from_slice(&written[staged.head..]);
        }
        self.len = end;
    }
}

/// The bytes of `bytes` (a segment's first `len`) from the last
/// [`DIRECT_BLOCK`] boundary before `len` to `len`.
fn last_block(bytes: &[u8], len: usize) -> Vec<u8> {
    bytes[len - len % DIRECT_BLOCK..len].to_vec()
}

/// Creates a segment whose first record will be `first`: creates the file
/// (with direct I/O if `direct`), writes the header and fsyncs the file and
/// the directory.
pub(crate) fn create(
    storage: &dyn Storage,
    dir: &Path,
    first: WalPosition,
    direct: bool,
) -> Result<ActiveSegment> {
    let path = dir.join(file_name(first));
    let file = storage
        .create_new(&path, direct)
        .map_err(|e| Error::io("create segment", &path, e))?;
    let mut active = ActiveSegment {
        file,
        path,
        len: 0,
        salt: 0,
        tail: Vec::new(),
    };
    let mut buf = Vec::new();
    let staged = active.stage(&mut buf, SEGMENT_HEADER_LEN);
    record::encode_segment_header(first, &mut buf);
    active.salt = record::segment_salt(&buf[staged.new_bytes()..]);
    active
        .write(&mut buf, &staged)
        .map_err(|e| Error::io("write segment header", &active.path, e))?;
    active
        .file
        .sync_data()
        .map_err(|e| Error::io("fsync segment", &active.path, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| Error::io("fsync directory", dir, e))?;
    active.advance(&buf, &staged);
    Ok(active)
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
    direct: bool,
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
        let active = create(storage, dir, first, direct)?;
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
    let mut active_tail = Vec::new();
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
        active_tail = end.tail;
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
            active_tail = header;
            if let Some(last) = checked.last_mut() {
                last.len = active_len;
            }
        } else {
            let active = create(storage, dir, next, direct)?;
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
        .open(&newest.path, direct)
        .map_err(|e| Error::io("open segment", &newest.path, e))?;
    Ok(Recovered {
        next,
        active: ActiveSegment {
            file,
            path: newest.path.clone(),
            len: active_len,
            salt: active_salt,
            tail: active_tail,
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
    /// Its bytes from the last block boundary to `len`.
    tail: Vec<u8>,
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
                tail: header,
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
        tail: last_block(bytes, offset),
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
            Err(_) if record::is_padding(bytes, offset) => return Ok((offset, expected)),
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
        .open(path, false)
        .map_err(|e| Error::io("open segment", path, e))?;
    file.set_len(len)
        .map_err(|e| Error::io("truncate segment", path, e))?;
    if !tail.is_empty() {
        file.write_at(tail, len)
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
mod direct_tests;
#[cfg(test)]
mod tests;
