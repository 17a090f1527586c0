//! A load generator: pushes sensor rows into a running weir server and
//! reports throughput and ack latency.
//!
//! ```sh
//! weir sql -c "CREATE TABLE bench (id BIGINT NOT NULL, ts TIMESTAMP, temp DOUBLE, site VARCHAR)"
//! cargo run --release -p weir-client --example push -- http://127.0.0.1:50051 bench 4 200 10000
//! ```
//!
//! Arguments: server, table, streams, batches per stream, rows per batch.
//! Two phases run one after the other:
//! - throughput: every stream sends its batches pipelined (up to 64 in
//!   flight) and waits for the last ack;
//! - latency: one stream sends 200 batches of 100 rows, each waiting for its
//!   ack before the next, and reports the median and 99th percentile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use weir_client::{Client, StreamOptions};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("temp", DataType::Float64, true),
        Field::new("site", DataType::Utf8, true),
    ]))
}

fn batch(first: i64, rows: usize) -> RecordBatch {
    let ids: Vec<i64> = (first..first + rows as i64).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(
                TimestampMicrosecondArray::from(
                    ids.iter()
                        .map(|i| 1_700_000_000_000_000 + i)
                        .collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(Float64Array::from(
                ids.iter()
                    .map(|i| (*i % 400) as f64 / 10.0)
                    .collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                ids.iter()
                    .map(|i| ["north-ridge", "south-field", "east-tower"][(*i % 3) as usize])
                    .collect::<Vec<_>>(),
            )),
        ],
    )
    .expect("a valid batch")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    let server = arg(0, "http://127.0.0.1:50051");
    let table = arg(1, "bench");
    let streams: i64 = arg(2, "4").parse()?;
    let batches: i64 = arg(3, "200").parse()?;
    let rows: usize = arg(4, "10000").parse()?;

    let client = Client::connect(&server).await?;
    let sample = batch(0, rows);
    let ipc_bytes = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &sample.schema())
        .and_then(|mut w| {
            w.write(&sample)?;
            w.into_inner()
        })?
        .len();

    let started = Instant::now();
    let producers = (0..streams).map(|s| {
        let client = client.clone();
        let table = table.clone();
        tokio::spawn(async move {
            let mut stream = client
                .open_stream(&table, schema(), StreamOptions::default())
                .await?;
            for b in 0..batches {
                let first = (s * batches + b) * rows as i64;
                stream.send(batch(first, rows)).await?;
            }
            stream.close().await
        })
    });
    let mut total_rows = 0;
    for result in futures::future::join_all(producers).await {
        total_rows += result??.records;
    }
    let elapsed = started.elapsed();
    let mb = (streams * batches) as f64 * ipc_bytes as f64 / 1e6;
    println!(
        "throughput: {total_rows} rows in {:.2} s = {:.0} rows/s, {:.1} MB/s of Arrow IPC ({streams} streams x {batches} batches x {rows} rows)",
        elapsed.as_secs_f64(),
        total_rows as f64 / elapsed.as_secs_f64(),
        mb / elapsed.as_secs_f64(),
    );

    let mut stream = client
        .open_stream(&table, schema(), StreamOptions::default())
        .await?;
    let mut latencies: Vec<Duration> = Vec::with_capacity(200);
    for b in 0..200i64 {
        let sent = Instant::now();
        let offset = stream.send(batch(1_000_000_000 + b * 100, 100)).await?;
        stream.wait_for(offset).await?;
        latencies.push(sent.elapsed());
    }
    stream.close().await?;
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    println!(
        "ack latency (send to durable ack, 100-row batches, one at a time): p50 {:.2} ms, p99 {:.2} ms",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3
    );
    Ok(())
}
