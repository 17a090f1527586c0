//! Server configuration: flags for the common settings, a TOML file for
//! the rest. Every setting has a default, so `weir serve` needs neither.
//!
//! ```toml
//! listen = "127.0.0.1:50051"
//! data_dir = "./weir-data"
//! storage = "./weir-data/tables"   # or file:///..., or an object store URL
//!
//! [wal]
//! segment_bytes = 67108864
//!
//! [commit]
//! interval_ms = 10000
//! target_bytes = 134217728
//! tail_budget_bytes = 1073741824
//! checkpoint_interval = 20
//! zstd_level = 3
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;
use weir_provider::TableConfig;
use weir_wal::WalConfig;

use crate::{Error, Result};

/// Everything the server needs to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The gRPC address for every protocol.
    pub listen: SocketAddr,
    /// Where the WAL, the node id and (by default) the tables live.
    pub data_dir: PathBuf,
    /// Where the Delta tables live: a local path or a URL. Default
    /// `<data_dir>/tables`.
    pub storage: Option<String>,
    /// Write-ahead log settings.
    pub wal: WalSection,
    /// Committer settings.
    pub commit: CommitSection,
}

/// `[wal]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WalSection {
    /// Start a new segment when the current one reaches this size.
    pub segment_bytes: u64,
}

/// `[commit]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommitSection {
    /// Commit a non-empty tail at least this often.
    pub interval_ms: u64,
    /// Commit as soon as a tail holds this many bytes.
    pub target_bytes: usize,
    /// Stop reading from producers while a tail holds this many bytes.
    pub tail_budget_bytes: usize,
    /// Write a Delta checkpoint every this many commits.
    pub checkpoint_interval: u64,
    /// zstd level of the Parquet files.
    pub zstd_level: i32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            data_dir: PathBuf::from("weir-data"),
            storage: None,
            wal: WalSection::default(),
            commit: CommitSection::default(),
        }
    }
}

impl Default for WalSection {
    fn default() -> Self {
        Self {
            segment_bytes: WalConfig::default().segment_target_bytes,
        }
    }
}

impl Default for CommitSection {
    fn default() -> Self {
        Self::from(&TableConfig::default())
    }
}

impl From<&TableConfig> for CommitSection {
    fn from(t: &TableConfig) -> Self {
        Self {
            interval_ms: u64::try_from(t.commit_interval.as_millis()).unwrap_or(u64::MAX),
            target_bytes: t.commit_target_bytes,
            tail_budget_bytes: t.tail_budget_bytes,
            checkpoint_interval: t.checkpoint_interval,
            zstd_level: t.zstd_level,
        }
    }
}

impl Config {
    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// A config for tests: a loopback ephemeral port, small limits, short
    /// intervals.
    pub fn for_tests(data_dir: &Path) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.to_path_buf(),
            storage: None,
            wal: WalSection {
                segment_bytes: 256 << 10,
            },
            commit: CommitSection::from(&TableConfig::for_tests()),
        }
    }

    /// The storage root of the tables, as a URL.
    pub fn storage_url(&self) -> Result<Url> {
        let location = match &self.storage {
            Some(s) if s.contains("://") => {
                return Url::parse(s)
                    .map_err(|e| Error::Config(format!("invalid storage URL {s:?}: {e}")));
            }
            Some(path) => PathBuf::from(path),
            None => self.data_dir.join("tables"),
        };
        let absolute = std::path::absolute(&location).map_err(|e| {
            Error::Config(format!("invalid storage path {}: {e}", location.display()))
        })?;
        Url::from_directory_path(&absolute)
            .map_err(|()| Error::Config(format!("invalid storage path {}", absolute.display())))
    }

    pub(crate) fn wal_config(&self) -> WalConfig {
        WalConfig {
            segment_target_bytes: self.wal.segment_bytes,
            ..WalConfig::default()
        }
    }

    pub(crate) fn table_config(&self) -> TableConfig {
        TableConfig {
            commit_interval: Duration::from_millis(self.commit.interval_ms),
            commit_target_bytes: self.commit.target_bytes,
            tail_budget_bytes: self.commit.tail_budget_bytes,
            checkpoint_interval: self.commit.checkpoint_interval,
            zstd_level: self.commit.zstd_level,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_file() {
        let config = Config::default();
        assert_eq!(config.listen.to_string(), "127.0.0.1:50051");
        let url = config.storage_url().unwrap();
        assert!(url.as_str().ends_with("/weir-data/tables/"), "{url}");
    }

    #[test]
    fn file_overrides_and_rejects_unknown_keys() {
        let config: Config = toml::from_str(
            "listen = \"127.0.0.1:6000\"\nstorage = \"memory:///\"\n[commit]\ninterval_ms = 500\n",
        )
        .unwrap();
        assert_eq!(config.listen.port(), 6000);
        assert_eq!(
            config.table_config().commit_interval,
            Duration::from_millis(500)
        );
        assert_eq!(config.storage_url().unwrap().as_str(), "memory:///");
        let err = toml::from_str::<Config>("[commit]\nintervl_ms = 5\n").unwrap_err();
        assert!(err.to_string().contains("intervl_ms"), "{err}");
    }
}
