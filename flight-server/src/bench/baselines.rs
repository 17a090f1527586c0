//! What bounds weir, and what a user would do without it, measured on the
//! same rows: the disk alone, and the Python `deltalake` package.

use std::path::Path;
use std::time::Instant;

use serde_json::json;
use weir_wal::{DIRECT_BLOCK, FsStorage, Storage, aligned_start};

use super::Options;
use super::neowise::{Rng, Rows};

/// The disk alone: `total` bytes of `body` written sequentially to a file
/// in `dir` as the WAL writes: in writes of `group` bytes (whole blocks)
/// from an aligned buffer, with direct I/O where the file system has it,
/// each followed by `sync_data`.
pub(super) fn disk_baseline(
    dir: &Path,
    body: &[u8],
    total: u64,
    group: u64,
) -> Result<serde_json::Value, String> {
    if body.is_empty() {
        return Err("the disk baseline needs a request to write".into());
    }
    let path = dir.join("bench-disk-baseline");
    let failed = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut file = FsStorage.create_new(&path, true).map_err(failed)?;
    let group = usize::try_from(group)
        .unwrap_or(usize::MAX)
        .max(1)
        .next_multiple_of(DIRECT_BLOCK);
    let mut buf = Vec::new();
    let lead = aligned_start(&mut buf, DIRECT_BLOCK, group);
    while buf.len() < lead + group {
        let n = body.len().min(lead + group - buf.len());
        buf.extend_from_slice(&body[..n]);
    }
    let started = Instant::now();
    let mut written = 0u64;
    while written < total {
        file.write_at(&buf[lead..], written).map_err(failed)?;
        file.sync_data().map_err(failed)?;
        written += group as u64;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let direct_io = file.alignment() > 1;
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(json!({
        "target": "disk",
        "bytes": written,
        "sync_every_bytes": group,
        "direct_io": direct_io,
        "mb_per_s": written as f64 / elapsed / 1e6,
    }))
}

/// The freshness (seconds) of the deltalake baseline's micro-batches: a
/// second, as such a script would run, and a tenth of one, nearer weir's.
pub(super) const DELTALAKE_FRESHNESS_S: [f64; 2] = [1.0, 0.1];

/// What a user would do without weir: the Python `deltalake` package
/// appending the same rows in micro-batches of about `freshness_s`
/// (`scripts/bench_deltalake.py`, run by `python`).
pub(super) async fn deltalake_baseline(
    python: &Path,
    dir: &Path,
    rows: &Rows,
    options: &Options,
    bytes_per_row: f64,
    freshness_s: f64,
) -> Result<serde_json::Value, String> {
    const SCRIPT: &str = include_str!("../../../scripts/bench_deltalake.py");
    let file = dir.join("bench-rows.arrow");
    let out = std::fs::File::create(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut writer =
        arrow::ipc::writer::FileWriter::try_new(out, rows.schema()).map_err(|e| e.to_string())?;
    let mut rng = Rng::new(options.seed);
    let per = options.rows_per_request;
    for i in 0..8 {
        let body = rows.request(&mut rng, (i * per) as u64, per);
        writer
            .write(&rows.batch(&body)?)
            .map_err(|e| e.to_string())?;
    }
    writer.finish().map_err(|e| e.to_string())?;
    let script = dir.join("bench_deltalake.py");
    std::fs::write(&script, SCRIPT).map_err(|e| e.to_string())?;
    eprintln!(
        "deltalake: appending micro-batches of about {freshness_s} s with {}",
        python.display()
    );
    let output = tokio::process::Command::new(python)
        .arg(&script)
        .arg("--rows")
        .arg(&file)
        .arg("--table")
        .arg(dir.join(format!("deltalake-table-{freshness_s}")))
        .arg("--duration")
        .arg(options.duration.as_secs_f64().to_string())
        .arg("--bytes-per-row")
        .arg(bytes_per_row.to_string())
        .arg("--freshness")
        .arg(freshness_s.to_string())
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !output.status.success() {
        return Err(format!(
            "the deltalake baseline failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).map_err(|e| format!("the deltalake baseline said {last:?}: {e}"))
}
