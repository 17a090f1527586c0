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
//! and the disk (the same bytes written sequentially next to the WAL as
//! the WAL writes them, with direct I/O where the file system has it and a
//! sync every `--disk-sync-bytes`); with `--python` (a Python with the
//! `deltalake` package, `scripts/bench-setup`), what a user would do
//! without weir: appending the same rows in micro-batches of about a
//! second, and of about a tenth of one. `--rate` paces the producers, to
//! measure ack latency below the maximum load.
//!
//! Progress goes to stderr (a bar on a terminal, else a line a second),
//! the report to stdout; `--json PATH` writes a JSON report with the
//! timelines of throughput and ack latency, `--svg PATH` a plot of them
//! ([`plot`]).
//!
//! `--query` measures queries instead (see [`query`]).
//!
//! Here: the runs and their producers. The rows are in [`neowise`], the
//! servers and scratch directories in [`server`], the disk and deltalake
//! baselines in [`baselines`], what is printed in [`report`], the plot in
//! [`plot`], the query benchmark in [`query`].

mod baselines;
mod neowise;
mod plot;
mod query;
mod report;
mod server;

use std::collections::{BTreeMap, VecDeque};
use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use bytes::Bytes;
use serde_json::json;
use weir_client::{Client, ConnectOptions, SqlClient, StreamOptions};

use baselines::{DELTALAKE_FRESHNESS_S, deltalake_baseline, disk_baseline};
use neowise::{Rng, Rows};
use report::{percentile, print_report, print_side_by_side, unix_seconds};
use server::{DataDir, OwnServer};

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
    /// Where to write the plot of throughput and latency over time (SVG).
    pub svg: Option<PathBuf>,
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
    /// Measure queries instead of ingest (see [`query`]).
    pub query: bool,
    /// Rows the query benchmark loads.
    pub query_rows: usize,
    /// Times each query runs per contender.
    pub query_runs: usize,
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
    if options.query {
        return query::run(&options, &rows).await;
    }
    let started = std::time::SystemTime::now();
    let (server, url) = match &options.connect {
        Some(url) => (None, url.clone()),
        None => {
            let server = OwnServer::start(options.data_dir.clone(), false, None)?;
            let url = server.url.clone();
            (Some(server), url)
        }
    };
    // The transport baseline: the same server binary as a sink, which
    // decodes and acknowledges requests and writes nothing.
    let sink = match (&server, options.baselines) {
        (Some(_), true) => Some(OwnServer::start(None, true, None)?),
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
        for freshness in DELTALAKE_FRESHNESS_S {
            let baseline =
                deltalake_baseline(python, &dir.path, &rows, &options, bytes_per_row, freshness);
            baselines.push(baseline.await?);
        }
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
    if let Some(path) = &options.svg {
        std::fs::write(path, plot::svg(&report))
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
    let mut sql = connect_sql(url).await?;
    run_sql(&mut sql, &format!("DROP TABLE IF EXISTS {table}")).await?;
    run_sql(&mut sql, &create_table(&table, rows)).await?;

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
            let mut requests = Vec::new();
            for body in &bodies {
                let batch = rows.batch(body)?;
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
    // Progress once a second (a bar on a terminal), and what was acked
    // when the window opens and closes.
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
    let bar = std::io::stderr().is_terminal();
    let length = (stop - begin).as_secs_f64();
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
        let line = format!(
            "{} {t:5.1} s {rate:8.1} MB/s {rows:>12} rows acked",
            input.name()
        );
        if bar {
            // Twenty cells of the run's length, redrawn in place.
            let done = ((t / length).clamp(0.0, 1.0) * 20.0).round() as usize;
            eprint!(
                "\r\x1b[2K[{}{}] {line}",
                "#".repeat(done),
                ".".repeat(20 - done)
            );
            let _ = std::io::stderr().flush();
        } else {
            eprintln!("{line}");
        }
    };
    if bar {
        eprintln!();
    }
    let at_warm = at_warm.unwrap_or_default();
    let committed = server.map(|s| s.committed(&table));

    // Ack latencies in the window, and by the second they were sent.
    let mut latencies = Vec::new();
    let mut by_second: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut total_rows = 0;
    for producer in producers {
        let done = producer
            .await
            .map_err(|e| format!("a producer stopped: {e}"))??;
        for (sent, latency_us) in done.latencies {
            if sent >= warm && sent < stop {
                latencies.push(latency_us);
            }
            by_second
                .entry((sent - begin).as_secs())
                .or_default()
                .push(latency_us);
        }
        total_rows += done.rows;
    }
    let latency_timeline: Vec<serde_json::Value> = by_second
        .into_iter()
        .map(|(second, mut samples)| {
            samples.sort_unstable();
            json!({
                "t_s": second + 1,
                "p50": percentile(&samples, 0.5),
                "p99": percentile(&samples, 0.99),
                "samples": samples.len(),
            })
        })
        .collect();
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
        "latency_timeline": latency_timeline,
    }))
}

/// What one producer did.
struct Produced {
    rows: u64,
    /// Each request's send and its ack latency in microseconds.
    latencies: Vec<(Instant, u64)>,
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
        latencies: Vec::new(),
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
            let latency_us = u64::try_from((now - sent).as_micros()).unwrap_or(u64::MAX);
            produced.latencies.push((sent, latency_us));
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
    let mut sql = connect_sql(&url).await?;
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

/// A FlightSQL connection to `url`.
async fn connect_sql(url: &str) -> Result<SqlClient, String> {
    SqlClient::connect(url, &ConnectOptions::default())
        .await
        .map_err(|e| e.to_string())
}

/// Runs `statement` and gathers its result.
async fn run_sql(sql: &mut SqlClient, statement: &str) -> Result<Vec<RecordBatch>, String> {
    sql.query(statement)
        .await
        .map_err(|e| e.to_string())?
        .collect()
        .await
        .map_err(|e| e.to_string())
}

async fn count(sql: &mut SqlClient, table: &str) -> Result<u64, String> {
    let batches = run_sql(sql, &format!("SELECT count(*) FROM {table}")).await?;
    let column = batches
        .first()
        .map(|b| Arc::clone(b.column(0)))
        .ok_or("count(*) answered no rows")?;
    let column = arrow::compute::cast(&column, &DataType::UInt64).map_err(|e| e.to_string())?;
    Ok(arrow::array::AsArray::as_primitive::<arrow::datatypes::UInt64Type>(&column).value(0))
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
