//! A `weir serve` child process and helpers around it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use weir_client::{ConnectOptions, SqlClient};

pub const WEIR: &str = env!("CARGO_BIN_EXE_weir");

/// A running `weir serve`.
pub struct WeirProcess {
    pub child: Child,
    pub url: String,
    /// Everything it logged so far.
    pub log: Arc<std::sync::Mutex<String>>,
}

/// Writes a config with short commit intervals.
pub fn write_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("weir.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\n[wal]\nsegment_bytes = 65536\n[commit]\ninterval_ms = 150\ncheckpoint_interval = 4\n",
    )
    .unwrap();
    path
}

/// Starts `weir serve` on `data_dir` and waits for its address.
pub fn spawn(data_dir: &Path) -> WeirProcess {
    let config = write_config(data_dir.parent().unwrap());
    spawn_with(data_dir, &config, None)
}

/// Starts `weir serve` with the config file `config`, its address space
/// capped at `address_space` bytes if given (`ulimit -v`, so that a runaway
/// allocation aborts the server instead of exhausting the machine).
pub fn spawn_with(data_dir: &Path, config: &Path, address_space: Option<u64>) -> WeirProcess {
    spawn_full(data_dir, config, address_space, &[], &[])
}

/// Starts `weir serve` on `data_dir` listening on `listen` with `env` set,
/// e.g. a crash point (`WEIR_CRASH_AT`).
pub fn spawn_env(data_dir: &Path, listen: &str, env: &[(&str, &str)]) -> WeirProcess {
    let config = write_config(data_dir.parent().unwrap());
    spawn_full(data_dir, &config, None, env, &["--listen", listen])
}

fn spawn_full(
    data_dir: &Path,
    config: &Path,
    address_space: Option<u64>,
    env: &[(&str, &str)],
    args: &[&str],
) -> WeirProcess {
    let ulimit = address_space.map_or_else(|| "unlimited".to_string(), |b| (b >> 10).to_string());
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {ulimit} && exec \"$0\" \"$@\""))
        .arg(WEIR)
        .args(["serve", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let log = Arc::new(std::sync::Mutex::new(String::new()));
    let lines = Arc::clone(&log);
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            {
                let mut log = lines.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
            if !sent
                && line.contains("listening")
                && let Some(addr) = line.split("addr=").nth(1)
            {
                let _ = tx.send(Ok(addr.split_whitespace().next().unwrap().to_string()));
                sent = true;
            }
            if !sent && line.contains("ERROR") {
                let _ = tx.send(Err(line.clone()));
                sent = true;
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("weir serve did not start within 60 s")
        .unwrap_or_else(|line| panic!("weir serve failed: {line}"));
    WeirProcess {
        child,
        url: format!("http://{addr}"),
        log,
    }
}

impl Drop for WeirProcess {
    /// A failing test must not leave a server behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl WeirProcess {
    /// Whether the process is still running.
    pub fn is_alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// A field of `/proc/<pid>/status` in bytes (`VmRSS`, `VmHWM`).
    pub fn memory(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap_or_else(|| panic!("no {field} in {status}"));
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib << 10
    }

    pub fn kill(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    /// Waits up to `timeout` for the process to end on its own (at a crash
    /// point); kills it if it does not. Returns whether it ended itself.
    pub async fn crash_or_kill(mut self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if !self.is_alive() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill();
        false
    }

    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }
}

pub async fn sql(url: &str, sql: &str) -> Vec<RecordBatch> {
    let mut client = SqlClient::connect(url, &ConnectOptions::default())
        .await
        .unwrap();
    let rows = client.query(sql).await;
    let rows = rows.unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

pub async fn scalar(url: &str, query: &str) -> i64 {
    let batches = sql(url, query).await;
    batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0)
}

pub fn ids_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("round", DataType::Int64, false),
    ]))
}

pub fn ids_batch(first: i64, rows: i64, round: i64) -> RecordBatch {
    RecordBatch::try_new(
        ids_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(first..first + rows)),
            Arc::new(Int64Array::from_iter_values((0..rows).map(|_| round))),
        ],
    )
    .unwrap()
}
