//! `weir bench` end to end, small: it starts its own server, runs both
//! inputs, checks its own result and writes a report that holds the
//! figures it promises.

use std::process::Command;

use crate::process::WEIR;

#[test]
fn bench_runs_both_inputs_and_checks_the_table_holds_what_was_acked() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let plot = dir.path().join("report.svg");
    let output = Command::new(WEIR)
        .args([
            "bench",
            "--streams",
            "3",
            "--duration",
            "1.5",
            "--warmup",
            "0.5",
            "--rows-per-request",
            "200",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .arg("--json")
        .arg(&report)
        .arg("--svg")
        .arg(&plot)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("MB/s"), "progress lines: {stderr}");
    // The plot: a throughput line and two latency lines (p50, p99) for
    // each of the four runs, weir's and the transport's of each input.
    let plot = std::fs::read_to_string(&plot).unwrap();
    assert!(plot.starts_with("<svg"), "{plot}");
    assert_eq!(plot.matches("<polyline").count(), 4 * 3, "{plot}");
    for label in ["weir, protobuf", "weir, arrow p99", "transport, arrow p50"] {
        assert!(
            plot.contains(&format!(">{label}</text>")),
            "{label}: {plot}"
        );
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["streams"], 3);
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(
        runs.iter()
            .map(|r| r["input"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["protobuf", "arrow"]
    );
    for run in runs {
        assert!(run["mb_per_s"].as_f64().unwrap() > 0.0, "{run}");
        assert!(run["rows_per_s"].as_f64().unwrap() > 0.0, "{run}");
        let check = &run["check"];
        assert_eq!(check["passed"], true, "{check}");
        assert!(check["acked_rows"].as_u64().unwrap() >= 200, "{check}");
        assert_eq!(check["acked_rows"], check["counted_rows"]);
        let latency = &run["ack_latency_ms"];
        assert!(latency["p50"].as_f64().unwrap() > 0.0, "{latency}");
        assert!(
            latency["p99"].as_f64() >= latency["p50"].as_f64(),
            "{latency}"
        );
        assert_eq!(run["freshness"]["short_counts"], 0, "{run}");
        assert!(!run["timeline"].as_array().unwrap().is_empty());
        // Latency by the second a request was sent, every ack counted.
        let by_second = run["latency_timeline"].as_array().unwrap();
        let samples: u64 = by_second
            .iter()
            .map(|s| s["samples"].as_u64().unwrap())
            .sum();
        assert_eq!(
            samples * 200,
            check["acked_rows"].as_u64().unwrap(),
            "{run}"
        );
        assert!(samples >= latency["samples"].as_u64().unwrap(), "{run}");
        assert!(
            by_second
                .iter()
                .all(|s| s["p99"].as_f64() >= s["p50"].as_f64())
        );
    }
    // The baselines: the transport to a sink for each input, and the disk.
    let baselines = report["baselines"].as_array().unwrap();
    let targets: Vec<_> = baselines
        .iter()
        .map(|b| (b["target"].as_str().unwrap(), b["input"].as_str()))
        .collect();
    assert_eq!(
        targets,
        [
            ("transport", Some("protobuf")),
            ("transport", Some("arrow")),
            ("disk", None)
        ]
    );
    for baseline in baselines {
        assert!(baseline["mb_per_s"].as_f64().unwrap() > 0.0, "{baseline}");
    }
    // The disk is written as the WAL writes: whole blocks, directly where
    // the file system allows.
    let disk = &baselines[2];
    assert!(disk["direct_io"].is_boolean(), "{disk}");
    let group = disk["sync_every_bytes"].as_u64().unwrap();
    assert!(group > 0 && group.is_multiple_of(4096), "{disk}");
    assert!(stdout.contains("side by side"), "{stdout}");
    // A NEOWISE row is about 1.2 KB in protobuf.
    let bytes_per_row = runs[0]["bytes_per_row"].as_f64().unwrap();
    assert!(
        (1_000.0..1_400.0).contains(&bytes_per_row),
        "{bytes_per_row}"
    );
    let server = &report["server"];
    assert_eq!(server["clean_exit"], true, "{server}");
    assert!(server["peak_rss_mib"].as_f64().unwrap() > 1.0, "{server}");
    assert!(server["cpu_s"].as_f64().is_some(), "{server}");
    // The data directory it was given stays.
    assert!(dir.path().join("data").join("tables").exists());
}

#[test]
fn bench_query_compares_the_tail_parquet_and_datafusion_on_the_same_answers() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("query.json");
    let output = Command::new(WEIR)
        .args([
            "bench",
            "--query",
            "--query-rows",
            "3000",
            "--rows-per-request",
            "700",
            "--query-runs",
            "2",
            "--json",
        ])
        .arg(&report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("tail/Parquet"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["rows"], 3000);
    assert!(report["parquet_files"].as_u64().unwrap() >= 1, "{report}");
    let queries = report["queries"].as_array().unwrap();
    assert_eq!(queries.len(), 3);
    for query in queries {
        assert_eq!(query["answers_agree"], true, "{query}");
        for contender in ["tail_ms", "parquet_ms", "datafusion_ms"] {
            let runs = query[contender].as_array().unwrap();
            assert_eq!(runs.len(), 2, "{query}");
            assert!(runs.iter().all(|ms| ms.as_f64().unwrap() > 0.0), "{query}");
        }
    }
    // Every row loaded is counted, in the tail and after the commit.
    assert!(
        queries[0]["answer"].as_str().unwrap().contains("| 3000 |"),
        "{}",
        queries[0]["answer"]
    );
}
