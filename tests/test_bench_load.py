"""Smoke run of the load suite (bench/bench_load.py, ``./dev suite load``).

Tiny numbers, both phases: the suite must run end to end against a real
flower-ops and a real stock Flower, report every endpoint on both sides, and
see no error on ours. Its figures are not judged here (benchmarks print
figures; the test suite never asserts on time).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "bench_load.py"


def test_load_suite_runs_both_sides_with_no_error_on_ours(tmp_path: Path) -> None:
    figures = tmp_path / "load.json"
    command = [sys.executable, str(SCRIPT), "--tasks", "2000", "--max-tasks", "10000",
               "--rate", "100", "--api-clients", "5", "--think-seconds", "0.2",
               "--feed-clients", "20", "--feed-processes", "1", "--duration", "3",
               "--ramp-seconds", "2", "--log-dir", str(tmp_path), "--json", str(figures),
               "--report-only"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=150)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-6000:]
    assert "side by side" in report and "summary: ours 0 errors" in report
    # every row of the table, with its target and a verdict
    for figure in ("API round trip, every endpoint", "feed event -> client", "bytes sent to",
                   "monitor CPU", "preload ingest vs Flower", "RSS vs Flower",
                   "errors, sockets held"):
        assert any(figure in line and ("PASS" in line or "FAIL" in line)
                   for line in report.splitlines()), figure

    summary = json.loads(figures.read_text())["summary"]
    assert summary["ours_errors"] == 0
    for key, row in summary["endpoints"].items():
        assert key in report
        for side in ("ours", "flower"):
            assert row[side]["latency"] and row[side]["latency"]["n"] > 0, (key, side, report)
        assert row["ours"]["error_count"] == 0, (key, row["ours"]["errors"])
    ours, flower = summary["sides"]["ours"], summary["sides"]["flower"]
    assert ours["live"]["held_at_stop"] == 20 and not ours["live"]["errors"]
    # the clients subscribe as the page does: window messages and fresh numbers
    assert ours["live"]["messages"].get("numbers", 0) > 0
    assert flower["live"]["responses"] > 0
    for side in (ours, flower):
        assert side["preload"]["complete"] and side["ingest_lag"] is not None
        assert side["rss"]["peak"] > 0 and side["cpu_percent"] > 0
