"""The benchmarks run to the end and report every row; their figures are never asserted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKLOADS = (
    "distinct keys, one tick",
    "max_batch_size=100",
    "cache hits",
    "fan-out 1 → 100 (load_many)",
    "fan-out, 0-3 awaits first",
)
IMPLEMENTATIONS = ("floor", "gqlbatch", "aiodataloader", "strawberry")


def run_benchmarks(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONASYNCIODEBUG": ""}  # any non-empty value turns debug on
    return subprocess.run(
        [sys.executable, "-W", "error", "-m", "benchmarks", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=150,
    )


def rows_of(report: str) -> set[tuple[str, str]]:
    rows = set()
    for line in report.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 2:
            rows.add((cells[0], cells[1].strip("*")))
    return rows


def test_quick_run_reports_every_workload_for_every_implementation(tmp_path: Path) -> None:
    result = run_benchmarks("--quick", "--out-dir", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    expected = {(w, i) for w in WORKLOADS for i in IMPLEMENTATIONS}
    assert expected <= rows_of(result.stdout), result.stdout
    written = (tmp_path / "loader_overhead.md").read_text(encoding="utf-8")
    assert expected <= rows_of(written)
    for fact in ("machine:", "Python", "aiodataloader 0.4.3", "strawberry-graphql"):
        assert fact in written


def test_the_runner_lists_the_benchmark_modules() -> None:
    result = run_benchmarks("--list")
    assert result.returncode == 0, result.stderr
    assert "loader_overhead" in result.stdout.split()


def test_the_runner_rejects_an_unknown_benchmark_by_name() -> None:
    result = run_benchmarks("no_such_benchmark")
    assert result.returncode == 2
    assert re.search(r"unknown benchmark\(s\) \['no_such_benchmark'\]", result.stderr)
