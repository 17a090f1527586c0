//! `weir bench --query`: the same queries over NEOWISE rows while they are
//! in the tail, once they are committed to Parquet, and by DataFusion
//! reading those Parquet files directly, side by side.
//!
//! The server it starts holds commits off while it loads the rows, so
//! that every row is in the tail; it then stops (committing the tail) and
//! starts again on the same data directory, where every row is in Delta.
//! DataFusion, in this process, reads the Parquet files of the Delta
//! table's latest version (from its log) with its default settings. Each
//! query runs `--query-runs` times per contender; the medians are
//! compared, every run must give its contender's first answer, and the
//! three contenders the same one. A server that does not stop cleanly
//! (its tail perhaps not committed) ends the benchmark with an error.

use std::path::Path;
use std::time::Instant;

use arrow::array::RecordBatch;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use serde_json::json;
use weir_client::{Client, StreamOptions};

use super::neowise::{Rng, Rows};
use super::server::{DataDir, OwnServer};
use super::{Options, connect_sql, create_table, rows_header, run_sql};

/// The table the rows go to.
const TABLE: &str = "neowise_query";

/// What is measured: a count, a grouped aggregate over a string column,
/// and a filtered aggregate. Floating-point results are rounded so that
/// the order rows are summed in does not show.
const QUERIES: [(&str, &str); 3] = [
    ("count", "SELECT count(*) AS n FROM {t}"),
    (
        "group by",
        "SELECT ph_qual, count(*) AS n, round(avg(w1mpro), 6) AS w1, round(avg(w2mpro), 6) AS w2 \
         FROM {t} GROUP BY ph_qual ORDER BY ph_qual",
    ),
    (
        "filter",
        "SELECT count(*) AS n, round(avg(w1snr), 6) AS snr FROM {t} \
         WHERE ra BETWEEN 100 AND 200 AND w1mpro < 15",
    ),
];

/// Loading holds commits off (and the tails' budgets out of the way), so
/// every row is in the tail.
const HOLD_COMMITS: &str = "[commit]\n\
    interval_ms = 86400000\n\
    target_bytes = 68719476736\n\
    [limits]\n\
    tail_budget_bytes = 68719476736\n\
    all_tails_budget_bytes = 68719476736\n";

/// Producer streams that load the rows.
const LOADERS: usize = 4;

/// Runs the query benchmark; false if the contenders' answers differ.
pub(super) async fn run(options: &Options, rows: &Rows) -> Result<bool, String> {
    if options.connect.is_some() {
        return Err("--query starts its own server; leave out --connect".into());
    }
    let total = options.query_rows;
    if total == 0 || options.query_runs == 0 {
        return Err("--query-rows and --query-runs must be at least 1".into());
    }
    let config_dir = DataDir::scratch("query-config")?;
    let config = config_dir.path.join("hold-commits.toml");
    std::fs::write(&config, HOLD_COMMITS).map_err(|e| e.to_string())?;

    let server = OwnServer::start(options.data_dir.clone(), false, Some(&config))?;
    load(&server.url, rows, options, total).await?;
    let committed = server.committed(TABLE);
    if committed["parquet_bytes"].as_u64() != Some(0) {
        return Err(format!("rows were committed while loading: {committed}"));
    }
    let tail = time_queries(&server.url, options.query_runs).await?;
    eprintln!("queries over the tail done; committing the rows and restarting");
    let (stopped, dir) = server.stop()?;
    // A commit that failed on the way down would leave the rows to the
    // WAL, and the "Parquet" figures would be the tail's again.
    if stopped["clean_exit"] != true {
        return Err(format!(
            "the server did not stop cleanly, so its tail may not be committed: {stopped}"
        ));
    }

    let server = OwnServer::start(Some(dir.path.clone()), false, None)?;
    let parquet = time_queries(&server.url, options.query_runs).await?;
    let files = delta_files(&dir.path.join("tables").join(TABLE))?;
    let direct = time_datafusion(&files, options.query_runs).await?;
    drop(server.stop()?);
    drop(dir);

    let mut same = true;
    let mut results = Vec::new();
    println!();
    println!(
        "{:<10} {:>12} {:>14} {:>16} {:>13} {:>18}",
        "query", "tail ms", "Parquet ms", "DataFusion ms", "tail/Parquet", "Parquet/DataFusion"
    );
    for (i, (name, _)) in QUERIES.iter().enumerate() {
        let (t, p, d) = (&tail[i], &parquet[i], &direct[i]);
        let agree = t.answer == p.answer && p.answer == d.answer;
        same &= agree;
        println!(
            "{name:<10} {:>12.1} {:>14.1} {:>16.1} {:>13.2} {:>18.2}{}",
            t.median_ms,
            p.median_ms,
            d.median_ms,
            t.median_ms / p.median_ms,
            p.median_ms / d.median_ms,
            if agree { "" } else { "   ANSWERS DIFFER" }
        );
        results.push(json!({
            "query": name,
            "sql": QUERIES[i].1.replace("{t}", TABLE),
            "tail_ms": t.runs_ms,
            "parquet_ms": p.runs_ms,
            "datafusion_ms": d.runs_ms,
            "tail_median_ms": t.median_ms,
            "parquet_median_ms": p.median_ms,
            "datafusion_median_ms": d.median_ms,
            "answers_agree": agree,
            "answer": t.answer,
        }));
    }
    let report = json!({
        "rows": total,
        "runs": options.query_runs,
        "parquet_files": files.len(),
        "queries": results,
    });
    if let Some(path) = &options.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&report).unwrap_or_default(),
        )
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(same)
}

/// Sends `total` distinct rows over a few streams and waits for their acks.
async fn load(url: &str, rows: &Rows, options: &Options, total: usize) -> Result<(), String> {
    run_sql(&mut connect_sql(url).await?, &create_table(TABLE, rows)).await?;
    let client = Client::connect(url).await.map_err(|e| e.to_string())?;
    let each = options.rows_per_request.min(total);
    let requests = total.div_ceil(each);
    let started = Instant::now();
    let loaders = (0..LOADERS.min(requests)).map(|loader| {
        let client = &client;
        async move {
            let mut stream = client
                .open_records_stream(TABLE, &rows_header(), StreamOptions::default())
                .await
                .map_err(|e| e.to_string())?;
            let mut rng = Rng::new(options.seed ^ loader as u64);
            for request in (loader..requests).step_by(LOADERS) {
                let first = request * each;
                let count = each.min(total - first);
                let body = rows.request(&mut rng, first as u64, count);
                stream.send_records(body).await.map_err(|e| e.to_string())?;
            }
            stream.flush().await.map_err(|e| e.to_string())?;
            stream.close().await.map_err(|e| e.to_string())
        }
    });
    futures::future::try_join_all(loaders).await?;
    eprintln!(
        "loaded {total} rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One query's times and answer.
struct Timed {
    runs_ms: Vec<f64>,
    median_ms: f64,
    /// The result, printed.
    answer: String,
}

impl Timed {
    fn new(mut runs_ms: Vec<f64>, answer: String) -> Self {
        runs_ms.sort_by(f64::total_cmp);
        let median_ms = runs_ms[runs_ms.len() / 2];
        Self {
            runs_ms,
            median_ms,
            answer,
        }
    }
}

/// The queries through weir's FlightSQL, each `runs` times.
async fn time_queries(url: &str, runs: usize) -> Result<Vec<Timed>, String> {
    let mut sql = connect_sql(url).await?;
    time_each(runs, async |query| run_sql(&mut sql, query).await).await
}

/// The queries by DataFusion over `files`, each `runs` times.
async fn time_datafusion(files: &[String], runs: usize) -> Result<Vec<Timed>, String> {
    let ctx = SessionContext::new();
    let table = ctx
        .read_parquet(files.to_vec(), ParquetReadOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    ctx.register_table(TABLE, table.into_view())
        .map_err(|e| e.to_string())?;
    time_each(runs, async |query| {
        ctx.sql(query)
            .await
            .map_err(|e| e.to_string())?
            .collect()
            .await
            .map_err(|e| e.to_string())
    })
    .await
}

/// Each of [`QUERIES`] `runs` times through `run`, timed, with its answer.
async fn time_each(
    runs: usize,
    mut run: impl AsyncFnMut(&str) -> Result<Vec<RecordBatch>, String>,
) -> Result<Vec<Timed>, String> {
    let mut timed = Vec::new();
    for (_, query) in QUERIES {
        let query = query.replace("{t}", TABLE);
        let mut times = Vec::new();
        let mut answer = String::new();
        for i in 0..runs {
            let started = Instant::now();
            let batches = run(&query).await?;
            times.push(started.elapsed().as_secs_f64() * 1e3);
            let printed = printed(&batches)?;
            if i > 0 && printed != answer {
                return Err(format!(
                    "{query}: run {} answered\n{printed}\nand the first\n{answer}",
                    i + 1
                ));
            }
            answer = printed;
        }
        timed.push(Timed::new(times, answer));
    }
    Ok(timed)
}

fn printed(batches: &[RecordBatch]) -> Result<String, String> {
    arrow::util::pretty::pretty_format_batches(batches)
        .map(|table| table.to_string())
        .map_err(|e| e.to_string())
}

/// The data files of the Delta table at `table_dir`'s latest version, from
/// its log: the files its commits added and did not remove (a file a
/// failed commit left behind is not the table's).
fn delta_files(table_dir: &Path) -> Result<Vec<String>, String> {
    let log = table_dir.join("_delta_log");
    let mut commits: Vec<_> = std::fs::read_dir(&log)
        .map_err(|e| format!("{}: {e}", log.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    if commits
        .iter()
        .any(|p| p.to_string_lossy().ends_with(".checkpoint.parquet"))
    {
        return Err(format!(
            "{} has a checkpoint, which this reader does not read",
            log.display()
        ));
    }
    commits.retain(|p| p.extension().is_some_and(|x| x == "json"));
    commits.sort();
    let mut files = std::collections::BTreeSet::new();
    for commit in commits {
        let text =
            std::fs::read_to_string(&commit).map_err(|e| format!("{}: {e}", commit.display()))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let action: serde_json::Value =
                serde_json::from_str(line).map_err(|e| format!("{}: {e}", commit.display()))?;
            if let Some(path) = action["add"]["path"].as_str() {
                files.insert(path.to_string());
            } else if let Some(path) = action["remove"]["path"].as_str() {
                files.remove(path);
            }
        }
    }
    if files.is_empty() {
        return Err(format!(
            "the Delta table at {} has no files",
            table_dir.display()
        ));
    }
    Ok(files
        .into_iter()
        .map(|path| table_dir.join(path).display().to_string())
        .collect())
}
