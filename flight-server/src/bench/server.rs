//! The servers `weir bench` starts, and its scratch directories: both
//! cleaned up however the benchmark ends.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::json;

/// A `weir serve` this benchmark started; killed, and its scratch data
/// directory removed, if the benchmark ends without stopping it.
pub(super) struct OwnServer {
    child: Child,
    pub(super) url: String,
    data_dir: PathBuf,
    /// Remove the data directory at the end.
    scratch: bool,
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        // Exited already after `stop`, when this does nothing.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.scratch {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

impl OwnServer {
    /// Starts `weir serve` on `data_dir` (default: a scratch directory),
    /// as a sink or with the config file `config`.
    pub(super) fn start(
        data_dir: Option<PathBuf>,
        sink: bool,
        config: Option<&Path>,
    ) -> Result<Self, String> {
        let scratch = data_dir.is_none();
        let data_dir = data_dir.unwrap_or_else(|| {
            let kind = if sink { "sink" } else { "data" };
            std::env::temp_dir().join(format!("weir-bench-{}-{kind}", std::process::id()))
        });
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .args(sink.then_some("--sink"))
            .args(
                config
                    .iter()
                    .flat_map(|c| [std::ffi::OsStr::new("--config"), c.as_os_str()]),
            )
            .env("RUST_LOG", "warn,weir_flight_server::server=info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start weir serve: {e}"))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let mut addr = None;
        for line in lines.by_ref() {
            let line = line.map_err(|e| e.to_string())?;
            if let Some(rest) = line.split(" listening addr=").nth(1) {
                addr = rest.split_whitespace().next().map(str::to_string);
                break;
            }
        }
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("weir serve did not start".into());
        };
        // Keep reading its log so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if line.contains("ERROR") || line.contains("WARN") {
                    eprintln!("server: {line}");
                }
            }
        });
        Ok(Self {
            child,
            url: format!("http://{addr}"),
            data_dir,
            scratch,
        })
    }

    /// Parquet bytes and Delta versions of `table` so far.
    pub(super) fn committed(&self, table: &str) -> serde_json::Value {
        let dir = self.data_dir.join("tables").join(table);
        let parquet = dir_bytes(&dir, "parquet");
        let versions = std::fs::read_dir(dir.join("_delta_log"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .count()
            })
            .unwrap_or(0);
        json!({"parquet_bytes": parquet, "delta_versions": versions})
    }

    /// The server's peak RSS and CPU time, then stops it cleanly; its data
    /// directory stays until [`DataDir::remove`].
    pub(super) fn stop(mut self) -> Result<(serde_json::Value, DataDir), String> {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let peak_kib: Option<u64> = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok());
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis; utime and stime
        // are the 14th and 15th of the line, in clock ticks (100 a second).
        let cpu_s = stat.rsplit_once(") ").and_then(|(_, rest)| {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
            Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
        });
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let exit = self.child.wait().map_err(|e| e.to_string())?;
        let figures = json!({
            "peak_rss_mib": peak_kib.map(|k| k as f64 / 1024.0),
            "cpu_s": cpu_s,
            "clean_exit": exit.success(),
        });
        // The directory is the caller's to remove now.
        let dir = DataDir {
            path: self.data_dir.clone(),
            scratch: std::mem::take(&mut self.scratch),
        };
        Ok((figures, dir))
    }
}

/// A directory of the benchmark's; a scratch one is removed when dropped.
pub(super) struct DataDir {
    pub(super) path: PathBuf,
    /// Made by this benchmark: removed at the end.
    scratch: bool,
}

impl DataDir {
    /// A new scratch directory named for this process and `kind`.
    pub(super) fn scratch(kind: &str) -> Result<Self, String> {
        let path = std::env::temp_dir().join(format!("weir-bench-{}-{kind}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self {
            path,
            scratch: true,
        })
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if self.scratch {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn dir_bytes(dir: &Path, extension: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                dir_bytes(&path, extension)
            } else if path.extension().is_some_and(|x| x == extension) {
                e.metadata().map_or(0, |m| m.len())
            } else {
                0
            }
        })
        .sum()
}
