//! An in-memory [`Storage`] for tests: injects write and fsync failures,
//! delays or holds fsyncs, and simulates a crash by keeping only what was
//! fsynced. Files opened for direct I/O refuse writes that are not aligned
//! to [`DIRECT_BLOCK`], as the kernel does.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::storage::{DIRECT_BLOCK, Storage, StorageFile};

/// Faults to inject.
#[derive(Debug, Clone, Default)]
pub(crate) struct Faults {
    pub fail_writes: bool,
    /// Writes fail as on a full disk (`ENOSPC`).
    pub disk_full: bool,
    pub fail_syncs: bool,
    /// How long each file fsync takes.
    pub sync_delay: Duration,
}

#[derive(Debug, Clone, Default)]
struct MemFile {
    data: Vec<u8>,
    /// `data` as of the last fsync: what survives a crash.
    durable: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<PathBuf, MemFile>,
    faults: Faults,
    /// While set, file fsyncs block.
    syncs_held: bool,
    /// Every file read, in order.
    reads: Vec<PathBuf>,
    /// Every directory fsync, in order.
    dir_syncs: Vec<PathBuf>,
    /// Files open as if on a file system without direct I/O.
    no_direct_io: bool,
}

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<State>,
    syncs_released: Condvar,
}

/// Cheap to clone; clones share the files.
#[derive(Debug, Clone, Default)]
pub(crate) struct MemStorage {
    inner: Arc<Inner>,
}

impl MemStorage {
    pub fn set_faults(&self, faults: Faults) {
        self.inner.state.lock().faults = faults;
    }

    /// Whether files opened from now on take direct I/O when asked for it;
    /// without, they are written as through the page cache, as on a file
    /// system that has no direct I/O.
    pub fn set_direct_io(&self, available: bool) {
        self.inner.state.lock().no_direct_io = !available;
    }

    /// While `held`, every file fsync blocks (an fsync "in flight").
    pub fn hold_syncs(&self, held: bool) {
        self.inner.state.lock().syncs_held = held;
        self.inner.syncs_released.notify_all();
    }

    /// A separate storage with what a machine crash would leave now: every
    /// file cut back to its last fsynced content.
    pub fn crash_copy(&self) -> MemStorage {
        let state = self.inner.state.lock();
        let files = state
            .files
            .iter()
            .map(|(path, file)| {
                let durable = file.durable.clone();
                let file = MemFile {
                    data: durable.clone(),
                    durable,
                };
                (path.clone(), file)
            })
            .collect();
        let copy = MemStorage::default();
        copy.inner.state.lock().files = files;
        copy
    }

    /// As [`MemStorage::crash_copy`], for a crash in the middle of writing
    /// back what was not fsynced: of each file's unsynced bytes, a random
    /// prefix reached the file's length, and of that, random 512-byte
    /// sectors reached the disk (the others read as zeros), as a disk that
    /// writes pages back out of order leaves them.
    pub fn torn_copy(&self, seed: u64) -> MemStorage {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let copy = self.crash_copy();
        let state = self.inner.state.lock();
        let mut copied = copy.inner.state.lock();
        for (path, file) in &state.files {
            let durable = file.durable.len().min(file.data.len());
            let unsynced = &file.data[durable..];
            if unsynced.is_empty() {
                continue;
            }
            let reached = rng.random_range(0..=unsynced.len());
            let mut tail = unsynced[..reached].to_vec();
            for sector in tail.chunks_mut(512) {
                if rng.random_bool(0.5) {
                    sector.fill(0);
                }
            }
            let torn = copied.files.get_mut(path).expect("copied");
            torn.data.extend_from_slice(&tail);
            torn.durable = torn.data.clone();
        }
        drop(copied);
        copy
    }

    /// The paths of every [`Storage::read`] so far, in order.
    pub fn dir_syncs(&self) -> Vec<PathBuf> {
        self.inner.state.lock().dir_syncs.clone()
    }

    pub fn reads(&self) -> Vec<PathBuf> {
        self.inner.state.lock().reads.clone()
    }

    /// Changes a file's content in place (as of its last fsync too).
    pub fn edit(&self, path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
        let mut state = self.inner.state.lock();
        let file = state.files.get_mut(path).expect("no such file");
        f(&mut file.data);
        file.durable = file.data.clone();
    }

    fn handle(&self, path: &Path, direct: bool) -> Box<dyn StorageFile> {
        let direct = direct && !self.inner.state.lock().no_direct_io;
        Box::new(MemHandle {
            storage: self.clone(),
            path: path.to_path_buf(),
            alignment: if direct { DIRECT_BLOCK } else { 1 },
        })
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, path.display().to_string())
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected {what} failure"))
}

impl Storage for MemStorage {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.inner.state.lock();
        Ok(state
            .files
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| Some(path.file_name()?.to_str()?.to_string()))
            .collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut state = self.inner.state.lock();
        state.reads.push(path.to_path_buf());
        let file = state.files.get(path).ok_or_else(|| not_found(path))?;
        Ok(file.data.clone())
    }

    fn create_new(&self, path: &Path, direct: bool) -> io::Result<Box<dyn StorageFile>> {
        let mut state = self.inner.state.lock();
        if state.files.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                path.display().to_string(),
            ));
        }
        state.files.insert(path.to_path_buf(), MemFile::default());
        drop(state);
        Ok(self.handle(path, direct))
    }

    fn open(&self, path: &Path, direct: bool) -> io::Result<Box<dyn StorageFile>> {
        if !self.inner.state.lock().files.contains_key(path) {
            return Err(not_found(path));
        }
        Ok(self.handle(path, direct))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.inner.state.lock();
        state
            .files
            .remove(path)
            .map(drop)
            .ok_or_else(|| not_found(path))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.inner.state.lock();
        if state.faults.fail_syncs {
            return Err(injected("directory fsync"));
        }
        state.dir_syncs.push(dir.to_path_buf());
        Ok(())
    }
}

struct MemHandle {
    storage: MemStorage,
    path: PathBuf,
    alignment: usize,
}

impl MemHandle {
    fn with_file<T>(&self, f: impl FnOnce(&mut MemFile) -> T) -> io::Result<T> {
        let mut state = self.storage.inner.state.lock();
        let file = state
            .files
            .get_mut(&self.path)
            .ok_or_else(|| not_found(&self.path))?;
        Ok(f(file))
    }
}

impl StorageFile for MemHandle {
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let align = self.alignment;
        if !offset.is_multiple_of(align as u64)
            || !buf.len().is_multiple_of(align)
            || !buf.as_ptr().addr().is_multiple_of(align)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "direct write of {} bytes at {offset} from {:p} is not aligned to {align}",
                    buf.len(),
                    buf.as_ptr()
                ),
            ));
        }
        if self.storage.inner.state.lock().faults.disk_full {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "injected: no space left on device",
            ));
        }
        if self.storage.inner.state.lock().faults.fail_writes {
            return Err(injected("write"));
        }
        let offset = offset as usize;
        self.with_file(|file| {
            if file.data.len() < offset + buf.len() {
                file.data.resize(offset + buf.len(), 0);
            }
            file.data[offset..offset + buf.len()].copy_from_slice(buf);
        })
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let delay = self.storage.inner.state.lock().faults.sync_delay;
        std::thread::sleep(delay);
        let inner = &self.storage.inner;
        let mut state = inner.state.lock();
        // Bounded, so that a failing test cannot hang on a held fsync.
        let deadline = Instant::now() + Duration::from_secs(10);
        while state.syncs_held {
            if inner
                .syncs_released
                .wait_until(&mut state, deadline)
                .timed_out()
            {
                return Err(injected("held fsync (timed out)"));
            }
        }
        if state.faults.fail_syncs {
            return Err(injected("fsync"));
        }
        drop(state);
        self.with_file(|file| file.durable = file.data.clone())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.with_file(|file| file.data.resize(len as usize, 0))
    }

    fn alignment(&self) -> usize {
        self.alignment
    }
}
