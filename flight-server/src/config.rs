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
//! checkpoint_interval = 20
//! timeout_ms = 120000
//! compression = "zstd"
//! zstd_level = 1
//! float_columns = "split-lz4"    # or "plain"
//!
//! [limits]
//! max_request_bytes = 67108864
//! max_request_rows = 1048576
//! max_json_depth = 64
//! max_streams = 10000
//! tail_budget_bytes = 1073741824
//! all_tails_budget_bytes = 2147483648
//! query_memory_bytes = 10307921510   # default: 40% of physical memory
//! query_memory_per_query_bytes = 5153960755   # default: half of the above
//!
//! [auth]                     # with no clients, weir runs open (loopback only)
//! token_listen = "127.0.0.1:50052"   # default: the gRPC port + 1
//! token_ttl_secs = 3600
//! # signing_key_file = "./weir-data/token-signing-key"   # the default; made on first start
//! # allow_unauthenticated = false
//!
//! [[auth.clients]]
//! id = "producer-1"
//! secret_sha256 = "..."      # weir hash-secret <secret>
//! write = ["sensors"]        # or "main.telemetry.sensors", or "*"
//! read = ["*"]
//! ddl = false
//!
//! [tls]
//! cert_file = "server.pem"
//! key_file = "server.key"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;
use weir_codec::Limits;
use weir_provider::{FloatColumns, ParquetCompression, TableConfig};
use weir_sql::QueryConfig;
use weir_wal::WalConfig;

use crate::auth::AuthSection;
use crate::tls::TlsSection;
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
    /// What requests, streams, tails and queries may cost.
    pub limits: LimitsSection,
    /// Clients, tokens and the token endpoint (see [`crate::auth`]).
    pub auth: AuthSection,
    /// TLS for the gRPC port and the token endpoint.
    pub tls: TlsSection,
    /// Decode and check ingest requests, then acknowledge and discard
    /// them, writing nothing (`weir serve --sink`): the transport baseline
    /// of `weir bench`. Not settable in the file.
    #[serde(skip)]
    pub sink: bool,
}

/// `[wal]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WalSection {
    /// Start a new segment when the current one reaches this size.
    pub segment_bytes: u64,
    /// What opening the WAL does with damage: `"repair-torn-tail"` (cut a
    /// torn last write, refuse to start on anything else), `"fail"` (refuse
    /// on any damage) or `"skip"` (also skip corrupt records, which are
    /// lost, logged and counted).
    pub corruption: Corruption,
    /// Write segments with direct I/O where the file system has it (Linux):
    /// no copy into the page cache, and fsyncs with nothing to write back.
    pub direct_io: bool,
}

/// `wal.corruption` in the config file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Corruption {
    #[default]
    RepairTornTail,
    Fail,
    Skip,
}

impl From<Corruption> for weir_wal::CorruptionPolicy {
    fn from(c: Corruption) -> Self {
        match c {
            Corruption::RepairTornTail => weir_wal::CorruptionPolicy::TruncateTornTail,
            Corruption::Fail => weir_wal::CorruptionPolicy::Fail,
            Corruption::Skip => weir_wal::CorruptionPolicy::SkipCorrupt,
        }
    }
}

/// `[commit]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommitSection {
    /// Commit a non-empty tail at least this often.
    pub interval_ms: u64,
    /// Commit as soon as a tail holds this many bytes.
    pub target_bytes: usize,
    /// Write a Delta checkpoint every this many commits.
    pub checkpoint_interval: u64,
    /// A commit that takes longer fails and is retried.
    pub timeout_ms: u64,
    /// The codec of the Parquet files.
    pub compression: ParquetCompression,
    /// zstd level of the Parquet files.
    pub zstd_level: i32,
    /// How floating-point columns are written.
    pub float_columns: FloatColumns,
}

/// `[limits]` in the config file: what one request, all streams, the
/// tails and the queries may cost. Every limit refuses with
/// `RESOURCE_EXHAUSTED` naming the setting (or, for the tail budgets,
/// pushes back on producers).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Most bytes one request may take once decoded (also the largest
    /// gRPC message accepted).
    pub max_request_bytes: usize,
    /// Most rows or records in one request.
    pub max_request_rows: usize,
    /// Deepest nesting of a JSON record.
    pub max_json_depth: usize,
    /// Most ingest streams open at once.
    pub max_streams: usize,
    /// Stop reading from producers while one table's tail holds this many
    /// bytes.
    pub tail_budget_bytes: usize,
    /// Stop reading from producers while all tails together hold this many
    /// bytes.
    pub all_tails_budget_bytes: usize,
    /// Memory all queries together may reserve. Default: 40% of the
    /// machine's physical memory.
    pub query_memory_bytes: Option<usize>,
    /// Memory one query may reserve. Default: half of `query_memory_bytes`.
    pub query_memory_per_query_bytes: Option<usize>,
    /// A query (or `INSERT`) running longer is stopped with
    /// DEADLINE_EXCEEDED; 0 for no limit.
    pub query_timeout_ms: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self::from_parts(&Limits::default(), &TableConfig::default())
    }
}

impl LimitsSection {
    fn from_parts(limits: &Limits, table: &TableConfig) -> Self {
        Self {
            max_request_bytes: limits.max_request_bytes,
            max_request_rows: limits.max_request_rows,
            max_json_depth: limits.max_json_depth,
            max_streams: 10_000,
            tail_budget_bytes: table.tail_budget_bytes,
            all_tails_budget_bytes: table.all_tails_budget_bytes,
            query_memory_bytes: None,
            query_memory_per_query_bytes: None,
            query_timeout_ms: 15 * 60 * 1000,
        }
    }

    /// `query_timeout_ms`, `None` when it is 0.
    pub fn query_timeout(&self) -> Option<std::time::Duration> {
        (self.query_timeout_ms > 0).then(|| std::time::Duration::from_millis(self.query_timeout_ms))
    }

    /// The per-request limits the decoders check.
    pub fn request_limits(&self) -> Limits {
        Limits {
            max_request_bytes: self.max_request_bytes,
            max_request_rows: self.max_request_rows,
            max_json_depth: self.max_json_depth,
        }
    }

    /// The query pool's size: the setting, or 40% of physical memory.
    pub fn query_memory_bytes(&self) -> usize {
        self.query_memory_bytes
            .unwrap_or_else(|| physical_memory_bytes() / 5 * 2)
    }

    /// One query's limit: the setting, or half the pool.
    pub fn query_memory_per_query_bytes(&self) -> usize {
        self.query_memory_per_query_bytes
            .unwrap_or_else(|| self.query_memory_bytes() / 2)
    }
}

/// The machine's physical memory (`MemTotal` of `/proc/meminfo`); 8 GiB
/// where that cannot be read.
fn physical_memory_bytes() -> usize {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
            kib.checked_mul(1024)
        })
        .unwrap_or(8 << 30)
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            data_dir: PathBuf::from("weir-data"),
            storage: None,
            wal: WalSection::default(),
            commit: CommitSection::default(),
            limits: LimitsSection::default(),
            auth: AuthSection::default(),
            tls: TlsSection::default(),
            sink: false,
        }
    }
}

impl Default for WalSection {
    fn default() -> Self {
        Self {
            segment_bytes: WalConfig::default().segment_target_bytes,
            corruption: Corruption::default(),
            direct_io: WalConfig::default().direct_io,
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
            checkpoint_interval: t.checkpoint_interval,
            timeout_ms: u64::try_from(t.commit_timeout.as_millis()).unwrap_or(u64::MAX),
            compression: t.compression,
            zstd_level: t.zstd_level,
            float_columns: t.float_columns,
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
                ..WalSection::default()
            },
            commit: CommitSection::from(&TableConfig::for_tests()),
            limits: LimitsSection {
                query_memory_bytes: Some(256 << 20),
                query_memory_per_query_bytes: Some(128 << 20),
                ..LimitsSection::from_parts(&Limits::default(), &TableConfig::for_tests())
            },
            auth: AuthSection::default(),
            tls: TlsSection::default(),
            sink: false,
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
            corruption: self.wal.corruption.into(),
            direct_io: self.wal.direct_io,
            ..WalConfig::default()
        }
    }

    pub(crate) fn table_config(&self) -> TableConfig {
        TableConfig {
            commit_interval: Duration::from_millis(self.commit.interval_ms),
            commit_target_bytes: self.commit.target_bytes,
            tail_budget_bytes: self.limits.tail_budget_bytes,
            all_tails_budget_bytes: self.limits.all_tails_budget_bytes,
            checkpoint_interval: self.commit.checkpoint_interval,
            commit_timeout: Duration::from_millis(self.commit.timeout_ms),
            compression: self.commit.compression,
            zstd_level: self.commit.zstd_level,
            float_columns: self.commit.float_columns,
        }
    }

    /// Where queries spill: `<data_dir>/spill`.
    pub fn spill_dir(&self) -> PathBuf {
        self.data_dir.join("spill")
    }

    pub(crate) fn query_config(&self) -> QueryConfig {
        QueryConfig {
            memory_bytes: self.limits.query_memory_bytes(),
            per_query_bytes: self.limits.query_memory_per_query_bytes(),
            spill_dir: Some(self.spill_dir()),
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

    #[test]
    fn the_wal_corruption_policy_is_named() {
        use weir_wal::CorruptionPolicy;
        let policy = |toml: &str| toml::from_str::<Config>(toml).map(|c| c.wal_config().corruption);
        assert_eq!(policy("").unwrap(), CorruptionPolicy::TruncateTornTail);
        let skip = policy("[wal]\ncorruption = \"skip\"\n").unwrap();
        assert_eq!(skip, CorruptionPolicy::SkipCorrupt);
        let fail = policy("[wal]\ncorruption = \"fail\"\n").unwrap();
        assert_eq!(fail, CorruptionPolicy::Fail);
        let err = policy("[wal]\ncorruption = \"ignore\"\n").unwrap_err();
        assert!(err.to_string().contains("repair-torn-tail"), "{err}");
    }

    #[test]
    fn the_parquet_codec_is_named() {
        let codec =
            |toml: &str| toml::from_str::<Config>(toml).map(|c| c.table_config().compression);
        assert_eq!(codec("").unwrap(), ParquetCompression::Zstd);
        let lz4 = codec("[commit]\ncompression = \"lz4\"\n").unwrap();
        assert_eq!(lz4, ParquetCompression::Lz4);
        let none = codec("[commit]\ncompression = \"none\"\n").unwrap();
        assert_eq!(none, ParquetCompression::Uncompressed);
        let err = codec("[commit]\ncompression = \"gzip\"\n").unwrap_err();
        assert!(err.to_string().contains("snappy"), "{err}");
    }

    #[test]
    fn the_float_layout_is_named() {
        let floats =
            |toml: &str| toml::from_str::<Config>(toml).map(|c| c.table_config().float_columns);
        assert_eq!(floats("").unwrap(), FloatColumns::SplitLz4);
        let plain = floats("[commit]\nfloat_columns = \"plain\"\n").unwrap();
        assert_eq!(plain, FloatColumns::Plain);
        let err = floats("[commit]\nfloat_columns = \"gorilla\"\n").unwrap_err();
        assert!(err.to_string().contains("split-lz4"), "{err}");
    }

    #[test]
    fn the_wal_writes_directly_unless_told_not_to() {
        let direct = |toml: &str| toml::from_str::<Config>(toml).map(|c| c.wal_config().direct_io);
        assert!(direct("").unwrap());
        assert!(!direct("[wal]\ndirect_io = false\n").unwrap());
        assert!(direct("[wal]\ndirect_io = \"no\"\n").is_err());
    }

    #[test]
    fn limits_have_defaults_and_can_be_set() {
        let config = Config::default();
        assert_eq!(config.limits.request_limits(), Limits::default());
        let pool = config.limits.query_memory_bytes();
        assert!(pool > 0 && pool < physical_memory_bytes(), "{pool}");
        assert_eq!(config.limits.query_memory_per_query_bytes(), pool / 2);
        let config: Config = toml::from_str(
            "[limits]\nmax_request_rows = 10\nmax_streams = 3\nquery_memory_bytes = 1000\n",
        )
        .unwrap();
        assert_eq!(config.limits.request_limits().max_request_rows, 10);
        assert_eq!(config.limits.max_streams, 3);
        assert_eq!(config.limits.query_memory_per_query_bytes(), 500);
    }
}
