//! File-system access, behind a small trait so that tests can swap in an
//! in-memory fake that injects faults and simulates crashes.
//!
//! The log needs little: list, read, create and remove files in one
//! directory, write a file at an offset, fsync a file and the directory,
//! and cut a file short. [`FsStorage`] does it with `std::fs`.
//!
//! The writer asks for direct I/O (`O_DIRECT`): its writes go from its
//! buffer to the disk without a copy into the page cache, and its fsyncs
//! then have no dirty pages to write back. The WAL is read only when it is
//! opened, so the page cache would hold its bytes for nothing. A file system
//! without direct I/O (tmpfs, some network file systems) gets the same
//! writes through the page cache.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;

use tracing::warn;

/// The block of direct I/O: a file written directly takes writes at offsets
/// and of lengths that are multiples of it, from buffers aligned to it.
/// 4 KiB suits every disk with sectors of 512 bytes or 4 KiB.
pub const DIRECT_BLOCK: usize = 4096;

/// Clears `buf` for a direct write: fills it with zeros up to the first
/// index whose address is a multiple of `align`, and returns that index,
/// with room for `capacity` more bytes after it, so that pushing up to
/// that many keeps them where they are. The write then starts at
/// `buf[returned..]`.
pub fn aligned_start(buf: &mut Vec<u8>, align: usize, capacity: usize) -> usize {
    buf.clear();
    buf.reserve(align + capacity);
    let address = buf.as_ptr().addr();
    let lead = address.next_multiple_of(align) - address;
    buf.resize(lead, 0);
    lead
}

/// The file-system operations the log uses. Paths are whole paths (the log
/// directory joined with a segment name).
pub trait Storage: Send + Sync {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the entries in `dir` (names that are not UTF-8 may be left out).
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// The whole content of a file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Creates a file that must not exist yet, open for writing; with
    /// `direct`, written with direct I/O where the file system allows it
    /// (see [`StorageFile::alignment`]).
    fn create_new(&self, path: &Path, direct: bool) -> io::Result<Box<dyn StorageFile>>;
    /// Opens an existing file for writing, as [`Storage::create_new`] does.
    fn open(&self, path: &Path, direct: bool) -> io::Result<Box<dyn StorageFile>>;
    /// Deletes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes creations and deletions of entries in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// A file open for writing.
pub trait StorageFile: Send {
    /// Writes all of `buf` at `offset`. With an [`alignment`] above 1,
    /// `offset`, the length of `buf` and its address are multiples of it.
    ///
    /// [`alignment`]: StorageFile::alignment
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the file's data (and its length) durable: `fdatasync`.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// 1 for a file written through the page cache; [`DIRECT_BLOCK`] for one
    /// written with direct I/O. It can drop to 1 after a write, if the disk
    /// refused a direct one.
    fn alignment(&self) -> usize;
}

/// [`Storage`] on the local file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsStorage;

impl Storage for FsStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn create_new(&self, path: &Path, direct: bool) -> io::Result<Box<dyn StorageFile>> {
        let file = OpenOptions::new().write(true).create_new(true).open(path)?;
        Ok(Box::new(FsFile::new(file, direct)))
    }

    fn open(&self, path: &Path, direct: bool) -> io::Result<Box<dyn StorageFile>> {
        let file = OpenOptions::new().write(true).open(path)?;
        Ok(Box::new(FsFile::new(file, direct)))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    #[cfg(unix)]
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    #[cfg(not(unix))]
    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        // Directories cannot be opened for fsync here; entries are durable
        // once the files in them are.
        Ok(())
    }
}

/// A file of [`FsStorage`].
struct FsFile {
    file: File,
    direct: bool,
}

impl FsFile {
    /// With `direct`, turns direct I/O on if the file system has it.
    fn new(file: File, direct: bool) -> FsFile {
        let direct = direct && set_direct(&file, true).is_ok();
        FsFile { file, direct }
    }
}

impl StorageFile for FsFile {
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        match write_all_at(&self.file, buf, offset) {
            // A disk whose blocks are larger than DIRECT_BLOCK refuses the
            // write before any of it happens: write through the page cache.
            Err(e) if self.direct && e.kind() == io::ErrorKind::InvalidInput => {
                warn!(error = %e, "direct I/O refused; the WAL writes through the page cache");
                set_direct(&self.file, false)?;
                self.direct = false;
                write_all_at(&self.file, buf, offset)
            }
            result => result,
        }
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn alignment(&self) -> usize {
        if self.direct { DIRECT_BLOCK } else { 1 }
    }
}

#[cfg(unix)]
fn write_all_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
}

#[cfg(windows)]
fn write_all_at(file: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_write(buf, offset)? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => {
                buf = &buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

/// Turns direct I/O (`O_DIRECT`) on or off for an open file. Fails where the
/// file system has none.
#[cfg(target_os = "linux")]
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
    let flags = fcntl_getfl(file)?;
    let flags = if on {
        flags | OFlags::DIRECT
    } else {
        flags - OFlags::DIRECT
    };
    Ok(fcntl_setfl(file, flags)?)
}

#[cfg(not(target_os = "linux"))]
fn set_direct(_file: &File, on: bool) -> io::Result<()> {
    if on {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "direct I/O is used on Linux only",
        ))
    } else {
        Ok(())
    }
}
