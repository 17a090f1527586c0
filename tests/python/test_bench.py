"""`weir bench --python`: the baseline of doing without weir, the Python
deltalake package appending the same rows at two freshnesses, runs beside
weir and lands in the report."""

import json
import subprocess
import sys

import deltalake  # noqa: F401  (the baseline needs it in this Python)

from conftest import WEIR


def test_bench_runs_the_deltalake_baseline_at_two_freshnesses(tmp_path):
    report = tmp_path / "report.json"
    done = subprocess.run(
        [
            WEIR,
            "bench",
            "--streams", "2",
            "--duration", "1",
            "--warmup", "0.5",
            "--rows-per-request", "200",
            "--input", "protobuf",
            "--python", sys.executable,
            "--json", str(report),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    baselines = json.loads(report.read_text())["baselines"]
    deltalake = [b for b in baselines if b["target"] == "deltalake"]
    assert [b["freshness_target_s"] for b in deltalake] == [1.0, 0.1]
    for b in deltalake:
        assert b["appends"] >= 1 and b["rows_per_append"] >= 1, b
        assert b["mb_per_s"] > 0, b
    # Smaller micro-batches for the fresher one.
    assert deltalake[1]["rows_per_append"] <= deltalake[0]["rows_per_append"]
    assert "Python deltalake, ~0.1 s batches" in done.stdout, done.stdout
