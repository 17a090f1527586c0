//! Making a commit durable on the local disk before its WAL goes.
//!
//! delta-rs writes through `object_store`, whose local file system writes
//! files and renames them into place without fsync. The WAL segments that
//! hold a commit's rows are deleted once its rows leave the tail, so
//! without a sync of the commit's files a power loss after that deletion
//! could lose acknowledged rows, or leave a log entry naming a file that
//! never reached the disk. Each landed version is therefore synced, its
//! data files, its log entry, a checkpoint of it if one was written and
//! the directories that name them up to the one that names the table,
//! before its rows leave the tail; a table's first version (its schema)
//! is synced when it is created. Other object stores are durable once a
//! write returns: nothing to do.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use url::Url;

/// A file or directory that could not be synced.
#[derive(Debug)]
pub(crate) struct SyncError {
    pub(crate) path: PathBuf,
    pub(crate) source: io::Error,
}

/// Syncs Delta version `version` of the table at `table` if it is on the
/// local disk; returns the paths synced (none for another store).
pub(crate) fn sync_version(table: &Url, version: u64) -> Result<Vec<PathBuf>, SyncError> {
    if table.scheme() != "file" {
        return Ok(Vec::new());
    }
    let root = table.to_file_path().map_err(|()| SyncError {
        path: PathBuf::from(table.as_str()),
        source: io::Error::new(io::ErrorKind::InvalidInput, "not a local path"),
    })?;
    let log_dir = root.join("_delta_log");
    let entry = log_dir.join(format!("{version:020}.json"));
    let text = std::fs::read_to_string(&entry).map_err(|source| SyncError {
        path: entry.clone(),
        source,
    })?;
    let mut files = added_files(table, &text).map_err(|reason| SyncError {
        path: entry.clone(),
        source: io::Error::new(io::ErrorKind::InvalidData, reason),
    })?;
    files.push(entry);
    // A checkpoint of this version, written after its entry, if any.
    for checkpoint in [
        log_dir.join(format!("{version:020}.checkpoint.parquet")),
        log_dir.join("_last_checkpoint"),
    ] {
        if checkpoint.exists() {
            files.push(checkpoint);
        }
    }
    // Every directory from each file up to the table's root, and the
    // directory that names the table.
    let mut directories = BTreeSet::new();
    for file in &files {
        let mut dir = file.parent();
        while let Some(d) = dir.filter(|d| d.starts_with(&root) && *d != root) {
            directories.insert(d.to_path_buf());
            dir = d.parent();
        }
    }
    directories.extend(root.parent().map(Path::to_path_buf));
    directories.insert(root);
    for path in files.iter().chain(&directories) {
        File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(|source| SyncError {
                path: path.clone(),
                source,
            })?;
    }
    files.extend(directories);
    Ok(files)
}

/// The local paths of the data files a log entry (JSON lines) adds.
fn added_files(table: &Url, entry: &str) -> Result<Vec<PathBuf>, String> {
    // Paths in the log are relative to the table's root, percent-encoded.
    let mut base = table.clone();
    if !base.path().ends_with('/') {
        base.set_path(&format!("{}/", base.path()));
    }
    let mut files = Vec::new();
    for line in entry.lines().filter(|l| !l.trim().is_empty()) {
        let action: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("a log line is not JSON: {e}"))?;
        let Some(path) = action["add"]["path"].as_str() else {
            continue;
        };
        let url = base
            .join(path)
            .map_err(|e| format!("added path {path:?}: {e}"))?;
        // An absolute path into another store is that store's to keep.
        if url.scheme() != "file" {
            continue;
        }
        files.push(
            url.to_file_path()
                .map_err(|()| format!("added path {path:?} is not a local path"))?,
        );
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_an_entry_adds_are_decoded_from_the_table_root() {
        let dir = tempfile::tempdir().unwrap();
        let table = Url::from_file_path(dir.path().join("t")).unwrap();
        let entry = [
            r#"{"commitInfo":{"operation":"WRITE"}}"#,
            r#"{"txn":{"appId":"weir/n/t","version":7}}"#,
            r#"{"add":{"path":"part-00000-a.zstd.parquet","size":10}}"#,
            r#"{"add":{"path":"day=2026-12-06/part%20b.parquet","size":10}}"#,
            r#"{"remove":{"path":"old.parquet"}}"#,
            r#"{"add":{"path":"s3://bucket/elsewhere.parquet","size":10}}"#,
        ]
        .join("\n");
        let files = added_files(&table, &entry).unwrap();
        assert_eq!(
            files,
            [
                dir.path().join("t/part-00000-a.zstd.parquet"),
                dir.path().join("t/day=2026-12-06/part b.parquet"),
            ]
        );
        assert!(added_files(&table, "not json").is_err());
    }

    #[test]
    fn a_version_syncs_its_files_its_entry_and_their_directories_or_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        std::fs::create_dir_all(root.join("_delta_log")).unwrap();
        std::fs::write(root.join("a.parquet"), b"data").unwrap();
        let entry = root.join("_delta_log/00000000000000000003.json");
        std::fs::write(&entry, r#"{"add":{"path":"a.parquet"}}"#).unwrap();
        let url = Url::from_directory_path(&root).unwrap();
        let synced: BTreeSet<PathBuf> = sync_version(&url, 3).unwrap().into_iter().collect();
        let expected: BTreeSet<PathBuf> = [
            root.join("a.parquet"),
            entry.clone(),
            root.join("_delta_log"),
            root.clone(),
            dir.path().to_path_buf(),
        ]
        .into_iter()
        .collect();
        assert_eq!(synced, expected);
        // A file the entry names that is not there is an error naming it.
        std::fs::remove_file(root.join("a.parquet")).unwrap();
        let error = sync_version(&url, 3).unwrap_err();
        assert_eq!(error.path, root.join("a.parquet"));
        // Another store: nothing to sync.
        let s3 = Url::parse("s3://bucket/t/").unwrap();
        assert!(sync_version(&s3, 3).unwrap().is_empty());
    }
}
