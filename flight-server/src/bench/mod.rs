//! `weir bench`: many producers pushing NEOWISE rows into one table, as a
//! user would measure weir.
//!
//! It starts its own server (this binary's `weir serve`, on a scratch data
//! directory) or targets `--connect URL`, creates a table, and runs N
//! concurrent streams of protobuf records or of Arrow batches (the same
//! rows), generated before the clock starts, for a duration. While they
//! run, a query loop counts the table's rows. It reports, for the time
//! after the warm-up:
//!
//! - throughput: MB/s of request bodies and rows/s acknowledged;
//! - ack latency p50 / p99 / p99.9: from a request's send to the
//!   producer seeing its ack (the producer looks after each send, so this
//!   is an upper bound by at most one send);
//! - freshness: every row acknowledged before a count query started must
//!   be in its count; the query's latency p50 / p99 bounds how long after
//!   its ack a row is counted, and any count short of the acks is reported;
//! - commits: Parquet bytes and Delta versions written during the run;
//! - the server's peak RSS and CPU seconds per GB (own server only);
//! - a check that the table holds exactly the rows acknowledged.
//!
//! With its own server it also measures, side by side, what bounds weir:
//! the transport (the same producers against a second `weir serve
//! --sink`, which decodes and acknowledges requests and writes nothing)
//! and the disk (the same bytes written sequentially next to the WAL with
//! a sync every `--disk-sync-bytes`); with `--python` (a Python with the
//! `deltalake` package, `scripts/bench-setup`), what a user would do
//! without weir: appending the same rows in micro-batches of about a
//! second. `--rate` paces the producers, to measure ack latency below the
//! maximum load.
//!
//! A line of progress a second goes to stderr, the report to stdout, and
//! with `--json PATH` a JSON report with the timeline.

mod neowise;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use bytes::Bytes;
use serde_json::json;
use weir_client::{Client, ConnectOptions, SqlClient, StreamOptions};

use neowise::{Rng, Rows};

/// What the producers send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Protobuf,
    Arrow,
}

impl Input {
    fn name(self) -> &'static str {
        match self {
            Input::Protobuf => "protobuf",
            Input::Arrow => "arrow",
        }
    }
}

/// `weir bench`'s options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Concurrent producer streams.
    pub streams: usize,
    /// How long the producers send.
    pub duration: Duration,
    /// The first part of the run, left out of the figures.
    pub warmup: Duration,
    /// Rows a request.
    pub rows_per_request: usize,
    /// Requests a stream has in flight.
    pub in_flight: usize,
    /// Which inputs to run, one after another.
    pub inputs: Vec<Input>,
    /// A running server; `None` starts one.
    pub connect: Option<String>,
    /// The data directory of the server it starts (default: a scratch
    /// directory under the system's temporary directory, removed after).
    pub data_dir: Option<PathBuf>,
    pub seed: u64,
    /// Where to write the JSON report.
    pub json: Option<PathBuf>,
    /// Also measure the disk and the transport alone (own server only).
    pub baselines: bool,
    /// The disk baseline's bytes between two syncs.
    pub disk_sync_bytes: u64,
    /// A Python with the `deltalake` package (`scripts/bench-setup`), for
    /// the baseline of doing without weir.
    pub python: Option<PathBuf>,
    /// Pace the producers to this many MB/s in all (`None`: as fast as
    /// the server acks).
    pub rate_mb_per_s: Option<f64>,
}

/// Runs the benchmark; false if a check failed.
pub async fn run(options: Options) -> Result<bool, String> {
    if !(1..=1024).contains(&options.streams) {
        return Err(format!("--streams {}: use 1 to 1,024", options.streams));
    }
    if options.rows_per_request == 0 || options.in_flight == 0 {
        return Err("--rows-per-request and --in-flight must be at least 1".into());
    }
    if options.duration.is_zero() {
        return Err("--duration must be more than 0 s".into());
    }
    if let Some(rate) = options.rate_mb_per_s
        && !(rate.is_finite() && (0.001..=1e6).contains(&rate))
    {
        return Err(format!("--rate {rate}: use 0.001 to 1,000,000 MB/s"));
    }
    let rows = Rows::new()?;
    let started = std::time::SystemTime::now();
    let (server, url) = match &options.connect {
        Some(url) => (None, url.clone()),
        None => {
            let server = OwnServer::start(options.data_dir.clone(), false)?;
            let url = server.url.clone();
            (Some(server), url)
        }
    };
    // The transport baseline: the same server binary as a sink, which
    // decodes and acknowledges requests and writes nothing.
    let sink = match (&server, options.baselines) {
        (Some(_), true) => Some(OwnServer::start(None, true)?),
        _ => None,
    };
    let mut reports = Vec::new();
    let mut baselines = Vec::new();
    // The transport first, while weir's server is idle.
    if let Some(sink) = &sink {
        for &input in &options.inputs {
            let transport = Target {
                url: &sink.url,
                server: Some(sink),
                sink: true,
            };
            let report = run_one(&options, &rows, input, transport).await?;
            print_report(&report);
            baselines.push(report);
        }
    }
    let mut ok = true;
    for &input in &options.inputs {
        let weir = Target {
            url: &url,
            server: server.as_ref(),
            sink: false,
        };
        let report = run_one(&options, &rows, input, weir).await?;
        ok &= report["check"]["passed"].as_bool().unwrap_or(false)
            && report["freshness"]["short_counts"].as_u64() == Some(0);
        print_report(&report);
        reports.push(report);
    }
    if let Some(sink) = sink {
        drop(sink.stop()?);
    }
    // Stopped (it commits every tail as it stops) before the baselines
    // that write to its disk.
    let (mut server_figures, scratch) = match server {
        Some(server) => {
            let (figures, dir) = server.stop()?;
            (Some(figures), Some(dir))
        }
        None => (None, None),
    };
    // The disk: the protobuf run's bytes, written sequentially where the
    // WAL was, with a sync per group.
    if let Some(dir) = scratch.as_ref().filter(|_| options.baselines) {
        let bytes = reports
            .iter()
            .filter_map(|r| r["acked_bytes"].as_u64())
            .max()
            .unwrap_or(0)
            .clamp(64 << 20, 4 << 30);
        let mut rng = Rng::new(options.seed);
        let body = rows.request(&mut rng, 0, options.rows_per_request);
        let (dir, group) = (dir.path.clone(), options.disk_sync_bytes);
        let disk = tokio::task::spawn_blocking(move || disk_baseline(&dir, &body, bytes, group))
            .await
            .map_err(|e| e.to_string())??;
        baselines.push(disk);
    }
    if let Some(python) = &options.python {
        // A directory of its own, on the same disk as the default data
        // directory, removed after.
        let dir = DataDir::scratch("deltalake")?;
        let bytes_per_row = reports
            .iter()
            .find(|r| r["input"] == "protobuf")
            .and_then(|r| r["bytes_per_row"].as_f64())
            .unwrap_or(0.0);
        baselines
            .push(deltalake_baseline(python, &dir.path, &rows, &options, bytes_per_row).await?);
    }
    drop(scratch);
    print_side_by_side(&reports, &baselines);
    let acked_gb: f64 = reports
        .iter()
        .filter_map(|r| r["acked_bytes"].as_f64())
        .sum::<f64>()
        / 1e9;
    if let Some(figures) = &mut server_figures
        && let Some(cpu_s) = figures["cpu_s"].as_f64()
        && acked_gb > 0.0
    {
        figures["cpu_s_per_gb"] = json!(cpu_s / acked_gb);
    }
    let report = json!({
        "started_unix_s": unix_seconds(started),
        "streams": options.streams,
        "rows_per_request": options.rows_per_request,
        "in_flight": options.in_flight,
        "duration_s": options.duration.as_secs_f64(),
        "rate_mb_per_s": options.rate_mb_per_s,
        "warmup_s": options.warmup.as_secs_f64(),
        "seed": options.seed,
        "server": server_figures,
        "runs": reports,
        "baselines": baselines,
    });
    if let Some(path) = &options.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&report).unwrap_or_default(),
        )
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(ok)
}

/// One request, ready to send many times.
#[derive(Clone)]
enum Request {
    Records(Bytes),
    Batch(RecordBatch),
}

/// What the producers have had acknowledged so far.
#[derive(Default)]
struct Acked {
    rows: AtomicU64,
    bytes: AtomicU64,
}

/// Where a run sends its rows.
#[derive(Clone, Copy)]
struct Target<'a> {
    url: &'a str,
    /// The server, when this benchmark started it.
    server: Option<&'a OwnServer>,
    /// It is a sink: it keeps nothing, so there is nothing to count.
    sink: bool,
}

async fn run_one(
    options: &Options,
    rows: &Rows,
    input: Input,
    target: Target<'_>,
) -> Result<serde_json::Value, String> {
    let Target { url, server, sink } = target;
    let table = format!("neowise_{}", input.name());
    let mut sql = SqlClient::connect(url, &ConnectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let ddl = create_table(&table, rows);
    sql.query(&format!("DROP TABLE IF EXISTS {table}"))
        .await
        .map_err(|e| e.to_string())?
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    sql.query(&ddl)
        .await
        .map_err(|e| e.to_string())?
        .collect()
        .await
        .map_err(|e| e.to_string())?;

    // Before the clock: a few distinct requests the streams take turns at.
    let distinct = options.streams.clamp(4, 32);
    let mut rng = Rng::new(options.seed);
    let bodies: Vec<Bytes> = (0..distinct)
        .map(|i| {
            rows.request(
                &mut rng,
                (i * options.rows_per_request) as u64,
                options.rows_per_request,
            )
        })
        .collect();
    let requests: Vec<(Request, u64)> = match input {
        Input::Protobuf => bodies
            .into_iter()
            .map(|b| {
                let bytes = b.len() as u64;
                (Request::Records(b), bytes)
            })
            .collect(),
        Input::Arrow => {
            let decoder = weir_codec::protobuf::ProtoDecoder::new(
                rows.descriptor().clone(),
                Arc::clone(rows.schema()),
            )
            .map_err(|e| e.to_string())?;
            let mut requests = Vec::new();
            for body in &bodies {
                let batch = decoder
                    .decode(neowise::records(body))
                    .map_err(|e| e.to_string())?;
                let bytes = ipc_bytes(&batch)?;
                requests.push((Request::Batch(batch), bytes));
            }
            requests
        }
    };
    let requests = Arc::new(requests);
    let rows_each = options.rows_per_request as u64;
    // Paced to `rate` MB/s in all: each stream sends a request every
    // streams x request bytes / rate.
    let mean_bytes = requests.iter().map(|(_, b)| *b).sum::<u64>() as f64 / requests.len() as f64;
    let pace = options
        .rate_mb_per_s
        .filter(|rate| *rate > 0.0)
        .and_then(|rate| {
            Duration::try_from_secs_f64(options.streams as f64 * mean_bytes / (rate * 1e6)).ok()
        });
    let client = Client::connect(url).await.map_err(|e| e.to_string())?;
    let acked = Arc::new(Acked::default());
    let begin = Instant::now();
    let warm = begin + options.warmup;
    let stop = begin + options.warmup + options.duration;

    let mut producers = Vec::new();
    for index in 0..options.streams {
        let (client, table, requests, acked) = (
            client.clone(),
            table.clone(),
            Arc::clone(&requests),
            Arc::clone(&acked),
        );
        let stream_options = StreamOptions {
            max_in_flight: options.in_flight,
            ..StreamOptions::default()
        };
        let work = Work {
            index,
            requests,
            rows_each,
            acked,
            warm,
            stop,
            pace,
            streams: options.streams,
        };
        producers.push(tokio::spawn(async move {
            produce(client, &table, stream_options, work).await
        }));
    }
    let freshness = (!sink).then(|| {
        tokio::spawn(count_loop(
            url.to_string(),
            table.clone(),
            Arc::clone(&acked),
            warm,
            stop,
        ))
    });
    // Progress once a second, and what was acked when the window opens
    // and closes.
    let snapshot = || {
        (
            acked.bytes.load(Ordering::Relaxed),
            acked.rows.load(Ordering::Relaxed),
        )
    };
    let mut timeline = Vec::new();
    let mut at_warm = None;
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.tick().await;
    let mut last = (0u64, Instant::now());
    let at_stop = loop {
        let now = tokio::select! {
            biased;
            () = tokio::time::sleep_until(stop.into()) => break snapshot(),
            () = tokio::time::sleep_until(warm.into()), if at_warm.is_none() => {
                at_warm = Some(snapshot());
                continue;
            }
            _ = ticks.tick() => Instant::now(),
        };
        let (bytes, rows) = snapshot();
        let rate = (bytes - last.0) as f64 / (now - last.1).as_secs_f64() / 1e6;
        last = (bytes, now);
        let t = (now - begin).as_secs_f64();
        timeline
            .push(json!({"t_s": t, "acked_bytes": bytes, "acked_rows": rows, "mb_per_s": rate}));
        eprintln!(
            "{} {t:5.1} s {rate:8.1} MB/s {rows:>12} rows acked",
            input.name()
        );
    };
    let at_warm = at_warm.unwrap_or_default();
    let committed = server.map(|s| s.committed(&table));

    let mut latencies = Vec::new();
    let mut total_rows = 0;
    for producer in producers {
        let done = producer
            .await
            .map_err(|e| format!("a producer stopped: {e}"))??;
        latencies.extend(done.latencies_us);
        total_rows += done.rows;
    }
    let freshness = match freshness {
        Some(task) => task
            .await
            .map_err(|e| format!("the query loop stopped: {e}"))??,
        None => serde_json::Value::Null,
    };
    let acked_bytes = acked.bytes.load(Ordering::Relaxed);
    let check = if sink {
        json!({"acked_rows": total_rows, "skipped": "a sink keeps nothing"})
    } else {
        let counted = count(&mut sql, &table).await?;
        json!({
            "acked_rows": total_rows,
            "counted_rows": counted,
            "passed": counted == total_rows,
        })
    };

    let window = (stop - warm).as_secs_f64();
    latencies.sort_unstable();
    let mb_per_s = (at_stop.0 - at_warm.0) as f64 / window / 1e6;
    let rows_per_s = (at_stop.1 - at_warm.1) as f64 / window;
    Ok(json!({
        "input": input.name(),
        "target": if sink { "transport" } else { "weir" },
        "table": table,
        "mb_per_s": mb_per_s,
        "rows_per_s": rows_per_s,
        "acked_bytes": acked_bytes,
        "bytes_per_row": requests.iter().map(|(_, b)| b).sum::<u64>() as f64
            / (requests.len() * options.rows_per_request) as f64,
        "ack_latency_ms": {
            "p50": percentile(&latencies, 0.5),
            "p99": percentile(&latencies, 0.99),
            "p999": percentile(&latencies, 0.999),
            "samples": latencies.len(),
        },
        "freshness": freshness,
        "committed": committed,
        "check": check,
        "timeline": timeline,
    }))
}

/// What one producer did.
struct Produced {
    rows: u64,
    /// Ack latencies inside the measured window, in microseconds.
    latencies_us: Vec<u64>,
}

/// One producer's share of a run.
struct Work {
    /// Which stream it is: where it starts among the requests.
    index: usize,
    /// The requests and their bytes on the wire.
    requests: Arc<Vec<(Request, u64)>>,
    /// Rows in each request.
    rows_each: u64,
    acked: Arc<Acked>,
    warm: Instant,
    stop: Instant,
    /// The time between two sends, when the load is paced.
    pace: Option<Duration>,
    /// How many streams share the load.
    streams: usize,
}

async fn produce(
    client: Client,
    table: &str,
    options: StreamOptions,
    work: Work,
) -> Result<Produced, String> {
    let Work {
        index,
        requests,
        rows_each,
        acked,
        warm,
        stop,
        pace,
        streams,
    } = work;
    let mut stream = match &requests[0].0 {
        Request::Records(_) => {
            client
                .open_records_stream(table, &rows_header(), options)
                .await
        }
        Request::Batch(batch) => client.open_stream(table, batch.schema(), options).await,
    }
    .map_err(|e| e.to_string())?;
    let mut pending: VecDeque<(i64, Instant, u64)> = VecDeque::new();
    let mut produced = Produced {
        rows: 0,
        latencies_us: Vec::new(),
    };
    let mut observe = |ack: weir_client::Ack, pending: &mut VecDeque<(i64, Instant, u64)>| {
        let now = Instant::now();
        while let Some(&(offset, sent, bytes)) = pending.front() {
            if offset > ack.offset {
                break;
            }
            pending.pop_front();
            acked.rows.fetch_add(rows_each, Ordering::Relaxed);
            acked.bytes.fetch_add(bytes, Ordering::Relaxed);
            produced.rows += rows_each;
            if sent >= warm && sent < stop {
                produced
                    .latencies_us
                    .push(u64::try_from((now - sent).as_micros()).unwrap_or(u64::MAX));
            }
        }
    };
    // Paced streams start spread over one interval, not all at once.
    if let Some(interval) = pace {
        let streams = u32::try_from(streams).unwrap_or(u32::MAX).max(1);
        let index = u32::try_from(index).unwrap_or(0);
        tokio::time::sleep(interval / streams * index).await;
    }
    let mut turn = index;
    while Instant::now() < stop {
        let (request, bytes) = &requests[turn % requests.len()];
        turn += 1;
        let sent = Instant::now();
        let offset = match request {
            Request::Records(body) => stream.send_records(body.clone()).await,
            Request::Batch(batch) => stream.send(batch.clone()).await,
        }
        .map_err(|e| e.to_string())?;
        pending.push_back((offset, sent, *bytes));
        observe(stream.acked(), &mut pending);
        let Some(interval) = pace else {
            continue;
        };
        // Paced: until the next send is due, take each ack as it comes.
        let next = sent + interval;
        while let Some(&(oldest, ..)) = pending.front() {
            match tokio::time::timeout_at(next.into(), stream.wait_for(oldest)).await {
                Ok(ack) => observe(ack.map_err(|e| e.to_string())?, &mut pending),
                Err(_) => break,
            }
        }
        tokio::time::sleep_until(next.into()).await;
    }
    let last = stream.flush().await.map_err(|e| e.to_string())?;
    observe(last, &mut pending);
    stream.close().await.map_err(|e| e.to_string())?;
    Ok(produced)
}

/// The records header of a NEOWISE stream.
fn rows_header() -> serde_json::Value {
    json!({"format": "protobuf", "proto": neowise::PROTO, "message": neowise::MESSAGE})
}

/// The pause between two count queries: often enough to see freshness,
/// rarely enough that the queries take little of the machine.
const QUERY_INTERVAL: Duration = Duration::from_millis(250);

/// Counts the table's rows in a loop; every row acknowledged before a
/// count started must be in it.
async fn count_loop(
    url: String,
    table: String,
    acked: Arc<Acked>,
    warm: Instant,
    stop: Instant,
) -> Result<serde_json::Value, String> {
    let mut sql = SqlClient::connect(&url, &ConnectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let mut latencies = Vec::new();
    let mut short = 0u64;
    while Instant::now() < stop {
        let before = acked.rows.load(Ordering::Relaxed);
        let started = Instant::now();
        let counted = count(&mut sql, &table).await?;
        if counted < before {
            short += 1;
        }
        if started >= warm {
            latencies.push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        }
        tokio::time::sleep(QUERY_INTERVAL).await;
    }
    latencies.sort_unstable();
    Ok(json!({
        "query_ms": {
            "p50": percentile(&latencies, 0.5),
            "p99": percentile(&latencies, 0.99),
            "samples": latencies.len(),
        },
        "short_counts": short,
    }))
}

async fn count(sql: &mut SqlClient, table: &str) -> Result<u64, String> {
    let batches = sql
        .query(&format!("SELECT count(*) FROM {table}"))
        .await
        .map_err(|e| e.to_string())?
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    let column = batches
        .first()
        .map(|b| Arc::clone(b.column(0)))
        .ok_or("count(*) answered no rows")?;
    let column = arrow::compute::cast(&column, &DataType::UInt64).map_err(|e| e.to_string())?;
    Ok(arrow::array::AsArray::as_primitive::<arrow::datatypes::UInt64Type>(&column).value(0))
}

/// The `p`-quantile of sorted microseconds, in milliseconds.
fn percentile(sorted_us: &[u64], p: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let at = ((sorted_us.len() - 1) as f64 * p).round() as usize;
    Some(sorted_us[at] as f64 / 1e3)
}

fn create_table(table: &str, rows: &Rows) -> String {
    let columns: Vec<String> = rows
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let sql_type = match f.data_type() {
                DataType::Int64 | DataType::Int32 => "BIGINT",
                DataType::Utf8 | DataType::LargeUtf8 => "VARCHAR",
                _ => "DOUBLE",
            };
            format!("{} {sql_type}", f.name())
        })
        .collect();
    format!("CREATE TABLE {table} ({})", columns.join(", "))
}

/// Bytes of a batch as Arrow IPC on the wire.
fn ipc_bytes(batch: &RecordBatch) -> Result<u64, String> {
    let messages =
        arrow_flight::utils::batches_to_flight_data(&batch.schema(), vec![batch.clone()])
            .map_err(|e| e.to_string())?;
    Ok(messages
        .iter()
        .skip(1)
        .map(|m| (m.data_header.len() + m.data_body.len()) as u64)
        .sum())
}

/// The disk alone: `total` bytes of `body` written sequentially to a file
/// in `dir`, with `sync_data` after every `group` bytes, as the WAL's
/// group commit does.
fn disk_baseline(
    dir: &Path,
    body: &[u8],
    total: u64,
    group: u64,
) -> Result<serde_json::Value, String> {
    use std::io::Write;
    let path = dir.join("bench-disk-baseline");
    let mut file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let started = Instant::now();
    let (mut written, mut unsynced) = (0u64, 0u64);
    while written < total {
        file.write_all(body).map_err(|e| e.to_string())?;
        written += body.len() as u64;
        unsynced += body.len() as u64;
        if unsynced >= group {
            file.sync_data().map_err(|e| e.to_string())?;
            unsynced = 0;
        }
    }
    file.sync_data().map_err(|e| e.to_string())?;
    let elapsed = started.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(json!({
        "target": "disk",
        "bytes": written,
        "sync_every_bytes": group,
        "mb_per_s": written as f64 / elapsed / 1e6,
    }))
}

/// What a user would do without weir: the Python `deltalake` package
/// appending the same rows in micro-batches of about a second
/// (`scripts/bench_deltalake.py`, run by `python`).
async fn deltalake_baseline(
    python: &Path,
    dir: &Path,
    rows: &Rows,
    options: &Options,
    bytes_per_row: f64,
) -> Result<serde_json::Value, String> {
    const SCRIPT: &str = include_str!("../../../scripts/bench_deltalake.py");
    let decoder = weir_codec::protobuf::ProtoDecoder::new(
        rows.descriptor().clone(),
        Arc::clone(rows.schema()),
    )
    .map_err(|e| e.to_string())?;
    let file = dir.join("bench-rows.arrow");
    let out = std::fs::File::create(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut writer =
        arrow::ipc::writer::FileWriter::try_new(out, rows.schema()).map_err(|e| e.to_string())?;
    let mut rng = Rng::new(options.seed);
    let per = options.rows_per_request;
    for i in 0..8 {
        let body = rows.request(&mut rng, (i * per) as u64, per);
        let batch = decoder
            .decode(neowise::records(&body))
            .map_err(|e| e.to_string())?;
        writer.write(&batch).map_err(|e| e.to_string())?;
    }
    writer.finish().map_err(|e| e.to_string())?;
    let script = dir.join("bench_deltalake.py");
    std::fs::write(&script, SCRIPT).map_err(|e| e.to_string())?;
    eprintln!(
        "deltalake: appending micro-batches with {}",
        python.display()
    );
    let output = tokio::process::Command::new(python)
        .arg(&script)
        .arg("--rows")
        .arg(&file)
        .arg("--table")
        .arg(dir.join("deltalake-table"))
        .arg("--duration")
        .arg(options.duration.as_secs_f64().to_string())
        .arg("--bytes-per-row")
        .arg(bytes_per_row.to_string())
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

/// The runs and their baselines as one table, with weir's share of each.
fn print_side_by_side(runs: &[serde_json::Value], baselines: &[serde_json::Value]) {
    if baselines.is_empty() {
        return;
    }
    let mb = |v: &serde_json::Value| v["mb_per_s"].as_f64().unwrap_or(0.0);
    println!();
    println!(
        "{:<34} {:>10} {:>16}",
        "side by side", "MB/s", "weir / this"
    );
    for run in runs {
        let input = run["input"].as_str().unwrap_or_default();
        println!(
            "{:<34} {:>10.1} {:>16}",
            format!("weir, {input}"),
            mb(run),
            ""
        );
        // The transport of the same input; the disk and deltalake count
        // protobuf bytes.
        let compared = baselines.iter().filter(|b| match b["input"].as_str() {
            Some(of) => of == input,
            None => input == "protobuf",
        });
        for baseline in compared {
            let name = match baseline["target"].as_str() {
                Some("disk") => format!(
                    "disk, sync every {} MiB",
                    baseline["sync_every_bytes"].as_u64().unwrap_or(0) >> 20
                ),
                Some("deltalake") => "Python deltalake, ~1 s micro-batches".to_string(),
                _ => format!("transport (sink), {input}"),
            };
            let ratio = mb(run) / mb(baseline).max(f64::MIN_POSITIVE);
            println!(
                "{:<34} {:>10.1} {:>15.0}%",
                name,
                mb(baseline),
                ratio * 100.0
            );
        }
    }
}

fn print_report(report: &serde_json::Value) {
    let f = |v: &serde_json::Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.2}"));
    let latency = &report["ack_latency_ms"];
    let query = &report["freshness"]["query_ms"];
    println!(
        "{:<9} {:<9} {:>9} MB/s {:>11} rows/s   ack ms p50 {} p99 {} p99.9 {}   count query ms p50 {} p99 {}   short counts {}   check {} ({} acked, {} counted)",
        report["target"].as_str().unwrap_or_default(),
        report["input"].as_str().unwrap_or_default(),
        f(&report["mb_per_s"]),
        format!("{:.0}", report["rows_per_s"].as_f64().unwrap_or(0.0)),
        f(&latency["p50"]),
        f(&latency["p99"]),
        f(&latency["p999"]),
        f(&query["p50"]),
        f(&query["p99"]),
        report["freshness"]["short_counts"],
        match report["check"]["passed"].as_bool() {
            Some(true) => "passed",
            Some(false) => "FAILED",
            None => "skipped",
        },
        report["check"]["acked_rows"],
        report["check"]["counted_rows"],
    );
}

fn unix_seconds(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A `weir serve` this benchmark started; killed, and its scratch data
/// directory removed, if the benchmark ends without stopping it.
struct OwnServer {
    child: Child,
    url: String,
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
    fn start(data_dir: Option<PathBuf>, sink: bool) -> Result<Self, String> {
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
    fn committed(&self, table: &str) -> serde_json::Value {
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
    fn stop(mut self) -> Result<(serde_json::Value, DataDir), String> {
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
struct DataDir {
    path: PathBuf,
    /// Made by this benchmark: removed at the end.
    scratch: bool,
}

impl DataDir {
    /// A new scratch directory named for this process and `kind`.
    fn scratch(kind: &str) -> Result<Self, String> {
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
