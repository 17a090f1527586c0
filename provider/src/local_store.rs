//! The object store under tables on the local disk.
//!
//! delta-rs writes each Parquet file of a commit as a multipart upload in
//! 5 MiB parts. object_store's `LocalFileSystem` writes the parts into a
//! staging file and renames it into place, syncing nothing: the commit's
//! data then sits in the page cache until the commit syncs it
//! ([`durable`](crate::commit::durable)), and reaches the disk in one flush
//! of the whole commit (100 MB and more under load). The WAL's next
//! `fdatasync` queues behind that flush, and acks wait 20-40 ms for it.
//!
//! [`LocalStore`] is `LocalFileSystem` except for multipart uploads: each
//! part is written and then synced, so the disk takes a commit's data a
//! part at a time, interleaved with the WAL's syncs, and the sync of the
//! whole file when the commit lands finds nothing left to write. Uploads
//! are staged as `LocalFileSystem` stages them (`<file>#<n>` beside the
//! destination, left out of listings) and renamed into place when complete.
//! Everything else is `LocalFileSystem`'s.
//!
//! A part whose offset and length are whole 4 KiB blocks (every part of
//! delta-rs's but a file's last) is written with direct I/O where the file
//! system has it, as the WAL writes ([`weir_wal::Storage`]): copied once
//! into an aligned buffer and from there to the disk, with no copy into
//! the page cache and nothing for its sync to write back. Measured alone,
//! writes with a sync after each cost a tenth of the CPU that way. A query
//! reads a new file from the disk rather than from the page cache.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::FutureExt;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result, UploadPart,
};
use parking_lot::Mutex;
use weir_wal::{FsStorage, Storage, StorageFile, aligned_start};

const STORE: &str = "LocalStore";

/// The local file system, with multipart uploads synced part by part.
#[derive(Debug)]
pub(crate) struct LocalStore {
    inner: LocalFileSystem,
}

impl LocalStore {
    pub(crate) fn new() -> Self {
        LocalStore {
            inner: LocalFileSystem::new(),
        }
    }
}

impl fmt::Display for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        if !opts.attributes.is_empty() {
            // Refused by the inner store, with its own error.
            return self.inner.put_multipart_opts(location, opts).await;
        }
        let dest = self.inner.path_to_filesystem(location)?;
        let staged = blocking(move || SyncedUpload::create(dest)).await?;
        Ok(Box::new(staged))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

/// A multipart upload into a staging file beside its destination.
#[derive(Debug)]
struct SyncedUpload {
    staging: Arc<StagingFile>,
    /// Where the next part goes.
    offset: u64,
    /// Completed or aborted: the staging file is gone (renamed or removed).
    finished: bool,
    dest: PathBuf,
}

struct StagingFile {
    file: File,
    /// The file again, with direct I/O if the file system has it, for the
    /// parts that are whole blocks; and the aligned buffer they are copied
    /// into, kept from one part to the next.
    direct: Mutex<(Box<dyn StorageFile>, Vec<u8>)>,
    path: PathBuf,
    /// Held while a part seeks and writes `file`; its sync runs without it.
    writing: Mutex<()>,
}

impl fmt::Debug for StagingFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StagingFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl StagingFile {
    /// Writes `data` at `offset`: directly if both are whole blocks and the
    /// file takes direct I/O, else through the page cache.
    fn write_part(&self, data: &PutPayload, offset: u64) -> io::Result<()> {
        let len = data.content_length();
        let mut direct = self.direct.lock();
        let (file, buf) = &mut *direct;
        let align = file.alignment();
        if align > 1 && offset.is_multiple_of(align as u64) && len.is_multiple_of(align) {
            let lead = aligned_start(buf, align, len);
            data.iter().for_each(|chunk| buf.extend_from_slice(chunk));
            return file.write_at(&buf[lead..], offset);
        }
        drop(direct);
        let _writing = self.writing.lock();
        let mut file = &self.file;
        file.seek(SeekFrom::Start(offset))?;
        data.iter().try_for_each(|chunk| file.write_all(chunk))
    }
}

impl SyncedUpload {
    /// Creates the staging file `<dest>#<n>` (the first free `n`), and the
    /// destination's directories if missing.
    fn create(dest: PathBuf) -> io::Result<Self> {
        let mut n = 1u64;
        loop {
            let mut staging = dest.clone().into_os_string();
            staging.push(format!("#{n}"));
            let staging = PathBuf::from(staging);
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&staging)
            {
                Ok(file) => {
                    let direct = match FsStorage.open(&staging, true) {
                        Ok(direct) => direct,
                        Err(e) => {
                            // No upload owns the file yet: nothing else
                            // would remove it.
                            let _ = std::fs::remove_file(&staging);
                            return Err(naming(&staging, e));
                        }
                    };
                    return Ok(SyncedUpload {
                        staging: Arc::new(StagingFile {
                            file,
                            direct: Mutex::new((direct, Vec::new())),
                            path: staging,
                            writing: Mutex::new(()),
                        }),
                        offset: 0,
                        finished: false,
                        dest,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => n += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => match staging.parent() {
                    Some(dir) if !dir.exists() => {
                        std::fs::create_dir_all(dir).map_err(|e| naming(dir, e))?;
                    }
                    _ => return Err(naming(&staging, e)),
                },
                Err(e) => return Err(naming(&staging, e)),
            }
        }
    }

    /// Marks the upload completed or aborted; an error if it already was.
    fn finish(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.finished, true) {
            return Err(generic(io::Error::other(format!(
                "the upload to {} was already completed or aborted",
                self.dest.display()
            ))));
        }
        Ok(())
    }
}

#[async_trait]
impl MultipartUpload for SyncedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let offset = self.offset;
        self.offset += data.content_length() as u64;
        let staging = Arc::clone(&self.staging);
        blocking(move || {
            staging
                .write_part(&data, offset)
                .and_then(|()| staging.file.sync_data())
                .map_err(|e| naming(&staging.path, e))
        })
        .boxed()
    }

    async fn complete(&mut self) -> Result<PutResult> {
        self.finish()?;
        let (staging, dest) = (Arc::clone(&self.staging), self.dest.clone());
        blocking(move || {
            // Every part's sync has returned (the caller awaited them all);
            // this one covers the file's length.
            let landed = staging
                .file
                .sync_data()
                .and_then(|()| std::fs::rename(&staging.path, &dest));
            if landed.is_err() {
                // Nothing half-written stays behind under either name.
                let _ = std::fs::remove_file(&staging.path);
            }
            landed.map_err(|e| naming(&dest, e))
        })
        .await?;
        Ok(PutResult {
            e_tag: None,
            version: None,
        })
    }

    async fn abort(&mut self) -> Result<()> {
        self.finish()?;
        let staging = self.staging.path.clone();
        blocking(move || std::fs::remove_file(&staging).map_err(|e| naming(&staging, e))).await
    }
}

impl Drop for SyncedUpload {
    fn drop(&mut self) {
        // Neither completed nor aborted: the staging file is litter.
        if !self.finished {
            let staging = self.staging.path.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(move || std::fs::remove_file(staging))),
                Err(_) => drop(std::fs::remove_file(staging)),
            }
        }
    }
}

/// Runs blocking file I/O off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => done.map_err(generic),
        Err(stopped) => Err(generic(io::Error::other(stopped))),
    }
}

fn generic(source: io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source: Box::new(source),
    }
}

/// `e`, with the file it is about in its message.
fn naming(path: &std::path::Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;

    use super::*;

    /// Where `name` in `dir` is in the store.
    fn location(dir: &tempfile::TempDir, name: &str) -> Path {
        let root = dir.path().to_str().unwrap().trim_start_matches('/');
        Path::from(format!("{root}/{name}"))
    }

    /// An upload to `location` with one part of `len` bytes written.
    async fn one_part(store: &LocalStore, location: &Path, len: usize) -> Box<dyn MultipartUpload> {
        let mut upload = store.put_multipart(location).await.unwrap();
        upload
            .put_part(PutPayload::from(vec![7u8; len]))
            .await
            .unwrap();
        upload
    }

    #[tokio::test]
    async fn a_multipart_upload_lands_whole_under_its_name_and_its_staging_file_is_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new();
        let file = location(&dir, "part/file.parquet");
        let mut upload = store.put_multipart(&file).await.unwrap();
        // Two parts of whole blocks (written directly where the disk takes
        // it), the first in two chunks, and a last part that is not.
        let first = upload.put_part(PutPayload::from_iter([
            Bytes::from(vec![1u8; 4000]),
            Bytes::from(vec![4u8; 96]),
        ]));
        let second = upload.put_part(PutPayload::from(vec![6u8; 8192]));
        let last = upload.put_part(PutPayload::from_iter([
            Bytes::from(vec![2u8; 10]),
            Bytes::from(vec![3u8; 5]),
        ]));
        // Parts may finish in any order; each goes at its own offset.
        last.await.unwrap();
        first.await.unwrap();
        second.await.unwrap();
        assert_eq!(file_names(&dir.path().join("part")), ["file.parquet#1"]);
        let listed: Vec<ObjectMeta> = store
            .list(Some(&location(&dir, "part")))
            .try_collect()
            .await
            .unwrap();
        assert!(listed.is_empty(), "{listed:?}");

        upload.complete().await.unwrap();
        let bytes = store.get(&file).await.unwrap().bytes().await.unwrap();
        let mut expected = vec![1u8; 4000];
        expected.extend([4u8; 96]);
        expected.extend([6u8; 8192]);
        expected.extend([2u8; 10]);
        expected.extend([3u8; 5]);
        assert_eq!(bytes.as_ref(), expected.as_slice());
        assert_eq!(file_names(&dir.path().join("part")), ["file.parquet"]);
        assert!(upload.complete().await.is_err(), "completed twice");
    }

    #[tokio::test]
    async fn an_aborted_or_dropped_upload_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new();
        let location = location(&dir, "a.parquet");
        let mut upload = one_part(&store, &location, 100).await;
        // A second upload to the same name stages beside the first.
        let other = store.put_multipart(&location).await.unwrap();
        assert!(dir.path().join("a.parquet#2").exists());
        upload.abort().await.unwrap();
        drop(other);
        // A dropped upload's staging file goes in the background.
        for _ in 0..100 {
            if file_names(dir.path()).is_empty() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("left behind: {:?}", file_names(dir.path()));
    }

    #[tokio::test]
    async fn an_upload_that_cannot_land_leaves_no_staging_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new();
        let mut upload = one_part(&store, &location(&dir, "taken"), 10).await;
        // A directory that is not empty holds the name: the rename fails.
        std::fs::create_dir_all(dir.path().join("taken/inside")).unwrap();
        let error = upload.complete().await.unwrap_err().to_string();
        assert!(
            error.contains("LocalStore") && error.contains("taken"),
            "{error}"
        );
        assert_eq!(file_names(dir.path()), ["taken"]);
    }

    fn file_names(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }
}
