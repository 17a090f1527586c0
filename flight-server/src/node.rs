//! The data directory: its lock and the node's id.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Holds the exclusive lock on a data directory until dropped.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Locks `dir/LOCK`, creating `dir` if needed. Fails at once, with a
    /// clear message, if another process holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let path = dir.join("LOCK");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                return Err(Error::Locked {
                    dir: dir.to_path_buf(),
                    holder: holder.trim().to_string(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        file.set_len(0).map_err(|e| Error::io(&path, e))?;
        write!(file, "pid {}", std::process::id()).map_err(|e| Error::io(&path, e))?;
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// fsyncs a directory, so that entries created or renamed in it survive a
/// power loss.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

#[derive(Debug, Serialize, Deserialize)]
struct NodeFile {
    node_id: String,
}

/// Reads `dir/node.json`, creating it with a new id the first time.
pub fn node_id(dir: &Path) -> Result<String> {
    let path = dir.join("node.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let node: NodeFile = serde_json::from_slice(&bytes).map_err(|e| {
                Error::Config(format!("{} is not a valid node file: {e}", path.display()))
            })?;
            Ok(node.node_id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let node = NodeFile {
                node_id: uuid::Uuid::new_v4().to_string(),
            };
            let tmp = dir.join("node.json.tmp");
            let json = serde_json::to_vec_pretty(&node).expect("a node file serializes");
            std::fs::write(&tmp, json).map_err(|e| Error::io(&tmp, e))?;
            File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
            // The rename is durable only once the directory is: a node
            // that lost node.json would come back under a new id, and
            // replay rows committed under the old one a second time.
            sync_dir(dir)?;
            Ok(node.node_id)
        }
        Err(e) => Err(Error::io(&path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_with_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DataDirLock::acquire(dir.path()).unwrap();
        let err = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("in use by another weir process"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(lock);
        DataDirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn node_id_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let first = node_id(dir.path()).unwrap();
        assert_eq!(node_id(dir.path()).unwrap(), first);
        assert_eq!(first.len(), 36);
    }
}
