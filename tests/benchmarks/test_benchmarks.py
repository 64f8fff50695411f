"""The benchmarks run to the end and report every row; their figures are never asserted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

WORKLOADS = (
    "distinct keys, one tick",
    "max_batch_size=100",
    "asyncio.gather, one tick",
    "a task per key (resolver)",
    "cache hits",
    "fan-out 1 → 100 (load_many)",
    "fan-out, 0-3 awaits first",
    "repeated keys, one tick",
)
IMPLEMENTATIONS = ("floor", "batching floor", "gqlbatch", "aiodataloader", "strawberry")


def run_benchmarks(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONASYNCIODEBUG": ""}  # any non-empty value turns debug on
    return subprocess.run(
        [sys.executable, "-W", "error", "-m", "benchmarks", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
    )


def rows_of(report: str) -> set[tuple[str, str]]:
    rows = set()
    for line in report.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 2:
            rows.add((cells[0], cells[1].strip("*")))
    return rows


SERVERS = ("SQLite, 1 worker", "PostgreSQL, 1 worker", "PostgreSQL, 2 workers")
CHARTS = (
    "bench-loader-overhead.png",
    "bench-example-api.png",
    "bench-throughput.png",
    "bench-shared-cache.png",
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One quick run of every benchmark, with its reports and the generated page."""
    out = tmp_path_factory.mktemp("bench")
    result = run_benchmarks(
        "--quick", "--out-dir", str(out), "--report", str(out / "docs" / "benchmarks.md")
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result.stdout


def test_quick_run_reports_every_workload_for_every_implementation(
    quick_run: tuple[Path, str],
) -> None:
    out, stdout = quick_run
    expected = {(w, i) for w in WORKLOADS for i in IMPLEMENTATIONS}
    assert expected <= rows_of(stdout), stdout
    written = (out / "loader_overhead.md").read_text(encoding="utf-8")
    assert expected <= rows_of(written)
    for fact in ("machine:", "Python", "aiodataloader 0.4.3", "strawberry-graphql"):
        assert fact in written
    assert "above batching floor" in written  # each loader's own cost per key


def test_quick_run_resolves_the_request_with_every_variant(quick_run: tuple[Path, str]) -> None:
    out, _ = quick_run
    report = (out / "graphql_e2e.md").read_text(encoding="utf-8")
    rows = {
        tuple(cell.strip().strip("*") for cell in line.strip("|").split("|")[:4])
        for line in report.splitlines()
        if line.startswith("| ")
    }
    for collector in ("default", "gc_tuned()"):
        for variant in ("gqlbatch", "gqlbatch + DocumentCache", "aiodataloader", "strawberry"):
            assert (collector, "10", variant, "4") in rows, rows  # 4 statements each


def test_quick_run_shows_loader_field_and_priming_beside_primed_peers(
    quick_run: tuple[Path, str],
) -> None:
    out, _ = quick_run
    report = (out / "graphql_e2e.md").read_text(encoding="utf-8")
    rows = {
        tuple(cell.strip() for cell in line.strip("|").split("|")[:3])
        for line in report.splitlines()
        if line.startswith("| ")
    }
    for variant in (
        "gqlbatch + DocumentCache + loader_field",
        "gqlbatch + DocumentCache + loader_field, primed",
        "aiodataloader, primed",
        "strawberry, primed",
    ):
        assert ("default", "10", variant) in rows, rows
    assert "Against the peers primed the same way" in report
    for comparison in ("same collector", "each as taught", "peers primed too"):
        assert f"| 10 | {comparison} |" in report, report  # issue 11's goal table


def test_quick_run_compares_batched_and_naive_on_both_backends(
    quick_run: tuple[Path, str],
) -> None:
    out, _ = quick_run
    rows = rows_of((out / "example_api_compare.md").read_text(encoding="utf-8"))
    assert {
        ("SQLite", "10"),
        ("SQLite", "100"),
        ("PostgreSQL", "10"),
        ("PostgreSQL", "100"),
    } <= rows


def test_quick_run_loads_each_server_without_failed_requests(quick_run: tuple[Path, str]) -> None:
    out, _ = quick_run
    report = (out / "server_throughput.md").read_text(encoding="utf-8")
    for server in SERVERS:
        line = next(line for line in report.splitlines() if line.startswith(f"| {server} |"))
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert int(cells[-2].replace(",", "")) > 0, line  # answered
        assert cells[-1] == "0", line  # failed


def test_quick_run_measures_each_shared_cache_setup_without_failed_requests(
    quick_run: tuple[Path, str],
) -> None:
    out, _ = quick_run
    report = (out / "shared_cache.md").read_text(encoding="utf-8")
    for setup in ("no shared cache", "Redis", "Redis stalled"):
        line = next(line for line in report.splitlines() if line.startswith(f"| {setup} |"))
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert int(cells[-2].replace(",", "")) > 0, line  # answered
        assert cells[-1] == "0", line  # failed


def test_the_report_page_is_generated_with_its_charts(quick_run: tuple[Path, str]) -> None:
    out, _ = quick_run
    page = (out / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert page.startswith("# Benchmarks\n")
    assert "Generated by `make bench`" in page
    for fact in ("logical CPUs", "Python", "gqlbatch", "PostgreSQL", "SQLite 3", "matplotlib"):
        assert fact in page
    assert "not reachable" not in page
    for section in (
        "## Loader overhead per key",
        "## A whole GraphQL request, in process",
        "## Example API: statements and latency per request, batched vs naive",
        "## The real server under concurrent load",
        "## Two servers sharing a Redis cache",
    ):
        assert section in page
    for chart in CHARTS:
        assert f"](img/{chart})" in page
        data = (out / "docs" / "img" / chart).read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        assert len(data) > 10_000  # axes, bars and labels, not an empty canvas


def test_the_runner_lists_the_benchmark_modules() -> None:
    result = run_benchmarks("--list")
    assert result.returncode == 0, result.stderr
    assert "loader_overhead" in result.stdout.split()


def test_the_runner_rejects_an_unknown_benchmark_by_name() -> None:
    result = run_benchmarks("no_such_benchmark")
    assert result.returncode == 2
    assert re.search(r"unknown benchmark\(s\) \['no_such_benchmark'\]", result.stderr)
