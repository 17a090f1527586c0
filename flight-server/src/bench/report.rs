//! What `weir bench` prints: a line per run, and the runs beside their
//! baselines.

/// The `p`-quantile of sorted microseconds, in milliseconds.
pub(super) fn percentile(sorted_us: &[u64], p: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let at = ((sorted_us.len() - 1) as f64 * p).round() as usize;
    Some(sorted_us[at] as f64 / 1e3)
}

/// The runs and their baselines as one table, with weir's share of each.
pub(super) fn print_side_by_side(runs: &[serde_json::Value], baselines: &[serde_json::Value]) {
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
                    "disk{}, sync every {} MiB",
                    if baseline["direct_io"] == true {
                        ", direct"
                    } else {
                        ""
                    },
                    baseline["sync_every_bytes"].as_u64().unwrap_or(0) >> 20
                ),
                Some("deltalake") => format!(
                    "Python deltalake, ~{} s batches",
                    baseline["freshness_target_s"].as_f64().unwrap_or(1.0)
                ),
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

pub(super) fn print_report(report: &serde_json::Value) {
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

pub(super) fn unix_seconds(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
