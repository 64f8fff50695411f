"""Batched vs naive: SQL statements and latency per request of the example API.

On each backend (a temporary SQLite file, and a private PostgreSQL database
created for the run and dropped after it unless ``GQLBATCH_BENCH_NO_POSTGRES=1``
or ``--database-url`` names one database), starts two real servers on the
same seeded database: the normal one (every relation through gqlbatch loaders)
and :mod:`benchmarks._naive` (``serve --factory benchmarks._naive:create_app``:
each relation field runs its own SELECT). For each page size
it sends the four-level query

    users(limit: N) { id name posts(limit: 5) { id title
        comments(limit: 5) { id author { id name } } tags { name } } }

to both, alternating which goes first in each round, and reports the median
statements and latency of the rounds. ``make bench`` runs it; ``make test``
runs only its ``--quick`` form (through ``tests/benchmarks/test_benchmarks.py``)::

    python -m benchmarks.example_api_compare                # 1000 users, ~3 minutes a backend
    python -m benchmarks.example_api_compare --quick        # 100 users, seconds
    python -m benchmarks.example_api_compare --rounds 7 --page-sizes 10,100
    python -m benchmarks.example_api_compare --database-url postgresql://postgres@127.0.0.1/bench
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from benchmarks._env import (
    add_report_options,
    example_server,
    postgres_enabled,
    prepare_database,
    private_postgres,
    publish,
)
from example_api.settings import normalize_database_url

NAIVE_FACTORY = "benchmarks._naive:create_app"
"""The app factory of the naive server: the same app with per-field queries."""

QUERY = """{ users(limit: %d) { id name posts(limit: 5) { id title
  comments(limit: 5) { id author { id name } } tags { name } } } }"""


def _request(client: httpx.Client, base: str, page: int) -> tuple[int, float]:
    start = time.perf_counter()
    response = client.post(f"{base}/graphql", json={"query": QUERY % page})
    elapsed = time.perf_counter() - start
    body: dict[str, Any] = response.json()
    if response.status_code != 200 or body.get("errors"):
        raise SystemExit(f"request failed: {response.status_code} {response.text[:500]}")
    users = body["data"]["users"]
    if len(users) != page:
        raise SystemExit(f"asked for {page} users, got {len(users)}: seed more (--users)")
    return int(body["extensions"]["gqlbatch"]["sql_statements"]), elapsed


def _backend(url: str) -> str:
    return "PostgreSQL" if url.startswith("postgresql") else "SQLite"


def _table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| backend | page size | statements, batched | statements, naive "
        "| latency ms, batched | latency ms, naive | naive / batched statements "
        "| naive / batched latency |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for backend in dict.fromkeys(r["backend"] for r in results):
        for page in dict.fromkeys(r["page_size"] for r in results if r["backend"] == backend):
            b, n = (
                next(
                    r
                    for r in results
                    if r["backend"] == backend and r["page_size"] == page and r["mode"] == mode
                )
                for mode in ("batched", "naive")
            )
            lines.append(
                f"| {backend} | {page:,} | {b['statements']:,.0f} | {n['statements']:,.0f} "
                f"| {b['latency_ms']:,.1f} | {n['latency_ms']:,.1f} "
                f"| {n['statements'] / b['statements']:,.0f}x | {n['latency_ratio']:.1f}x |"
            )
    return lines


def _report(results: list[dict[str, Any]], users: int) -> str:
    rounds = results[0]["rounds"]
    lines = [
        f"Example API, {users} users; medians of {rounds} interleaved rounds; "
        f"Python {sys.version.split()[0]}.",
        "",
        *_table(results),
    ]
    return "\n".join(lines) + "\n"


def chart(results: list[dict[str, Any]], path: Path) -> None:
    """Statements (left) and latency (right) per request against page size, log-log."""
    from benchmarks._env import pyplot, save

    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"batched": "-o", "naive": "--s"}
    colors = {"SQLite": "#1f77b4", "PostgreSQL": "#2ca02c"}
    for backend in dict.fromkeys(r["backend"] for r in results):
        for mode, style in styles.items():
            rows = [r for r in results if r["backend"] == backend and r["mode"] == mode]
            pages = [r["page_size"] for r in rows]
            label = f"{backend}, {mode}"
            color = colors.get(backend)
            left.plot(pages, [r["statements"] for r in rows], style, color=color, label=label)
            right.plot(pages, [r["latency_ms"] for r in rows], style, color=color, label=label)
    for axis, ylabel in (
        (left, "SQL statements per request"),
        (right, "latency per request, ms (median)"),
    ):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("page size (users in the four-level query)")
        axis.set_ylabel(ylabel)
    left.legend()
    figure.suptitle("Example API: batched (gqlbatch loaders) vs naive (a SELECT per field)")
    save(figure, path)


def render(data: dict[str, Any], img_dir: Path, img_link: str) -> str:
    """The report page's section: method, chart, table."""
    results = data["results"]
    chart(results, img_dir / "bench-example-api.png")
    lines = [
        "## Example API: statements and latency per request, batched vs naive",
        "",
        "`benchmarks/example_api_compare.py`: on each backend, two real servers (uvicorn "
        "subprocesses on loopback, one worker each, debug mode, which reports each request's SQL "
        "statement count) "
        f"share one database seeded with {data['users']:,} users: the example API as it is, "
        "every relation read through gqlbatch loaders, and `benchmarks/_naive.py`, where each "
        "relation resolver runs its own `SELECT` for its one parent. Each request is the "
        "four-level query "
        "`users(limit: N) { posts(limit: 5) { comments(limit: 5) { author } tags } }`; "
        "both servers answer it once to warm up, then in each of "
        f"{data['rounds']} rounds both answer it, alternating which goes first. Figures are "
        "medians; the latency ratio is the median of per-round ratios.",
        "",
        f"![Statements and latency per request]({img_link}bench-example-api.png)",
        "",
        *_table(results),
        "",
    ]
    return "\n".join(lines)


def _run_backend(
    url: str, users: int, seed_value: int, pages: list[int], rounds: int, log_dir: Path
) -> list[dict[str, Any]]:
    backend = _backend(url)
    print(f"{backend}: seeding {users} users (seed {seed_value}) ...", file=sys.stderr, flush=True)
    asyncio.run(prepare_database(url, users, seed_value))
    results: list[dict[str, Any]] = []
    env = {
        "EXAMPLE_API_MAX_PAGE_SIZE": str(max(pages)),
        "EXAMPLE_API_MAX_TOKENS": "100000",
        # The production guards are not what this compares: the four-level query over
        # 1,000 users costs about 106,000 (the cost limit's units), and the naive server
        # takes longer than the request deadline to answer it.
        "EXAMPLE_API_MAX_COST": str(10**9),
        "EXAMPLE_API_CHEAP_COST": str(10**9),
        "EXAMPLE_API_REQUEST_TIMEOUT_MS": "0",
        "EXAMPLE_API_MAX_RESPONSE_BYTES": str(10**9),
    }
    with (
        example_server(url, log_dir / f"{backend}-batched.log", args=["--debug"], env=env) as b,
        example_server(
            url,
            log_dir / f"{backend}-naive.log",
            args=["--debug", "--factory", NAIVE_FACTORY],
            env=env,
        ) as n,
        httpx.Client(timeout=600) as client,
    ):
        servers = {"batched": b, "naive": n}
        for page in pages:
            samples: dict[str, list[tuple[int, float]]] = {"batched": [], "naive": []}
            for base in servers.values():  # warm-up: imports, caches, pools
                _request(client, base, page)
            for round_ in range(rounds):
                order = ["batched", "naive"] if round_ % 2 == 0 else ["naive", "batched"]
                for mode in order:
                    samples[mode].append(_request(client, servers[mode], page))
            ratio = statistics.median(
                nv[1] / bt[1] for bt, nv in zip(samples["batched"], samples["naive"], strict=True)
            )
            for mode, got in samples.items():
                results.append(
                    {
                        "backend": backend,
                        "page_size": page,
                        "mode": mode,
                        "statements": statistics.median(s for s, _ in got),
                        "latency_ms": statistics.median(t for _, t in got) * 1000,
                        "latency_ratio": ratio,
                        "rounds": rounds,
                    }
                )
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; print (and with ``--out``, write) a markdown report."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.example_api_compare", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--database-url", help="default: a temporary SQLite file")
    parser.add_argument("--users", type=int, help="users to seed (default 1000; --quick 100)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, help="rounds per page size (default 5; --quick 1)")
    parser.add_argument("--page-sizes", help="default 10,100,1000 (--quick: 10,100)")
    parser.add_argument("--quick", action="store_true", help="a small, short run")
    add_report_options(parser, json_help="also write the raw results here")
    args = parser.parse_args(argv)
    users = args.users or (100 if args.quick else 1000)
    rounds = args.rounds or (1 if args.quick else 5)
    pages = [
        int(p) for p in (args.page_sizes or ("10,100" if args.quick else "10,100,1000")).split(",")
    ]
    if max(pages) > users:
        parser.error(f"page size {max(pages)} needs at least as many users (--users {users})")
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        if args.database_url:
            urls = [normalize_database_url(args.database_url)]
        else:
            urls = [normalize_database_url(f"sqlite:///{tmp}/bench.db")]
            if postgres_enabled():
                urls.append(stack.enter_context(private_postgres("compare")))
        results: list[dict[str, Any]] = []
        for url in urls:
            results += _run_backend(url, users, args.seed, pages, rounds, Path(tmp))
    report = _report(results, users)
    publish(report, {"users": users, "rounds": rounds, "results": results}, args.out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
