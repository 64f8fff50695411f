"""Batched vs naive: SQL statements and latency per request of the example API.

Starts two real servers on the same seeded database: the normal one (every
relation through gqlbatch loaders) and ``--naive`` (each relation field runs
its own SELECT). For each page size it sends the four-level query

    users(limit: N) { id name posts(limit: 5) { id title
        comments(limit: 5) { id author { id name } } tags { name } } }

to both, alternating which goes first in each round, and reports the median
statements and latency of the rounds. ``make bench`` runs it; ``make test``
runs only its ``--quick`` form (through ``tests/test_benchmarks.py``)::

    python -m benchmarks.example_api_compare                # SQLite, 1000 users, ~3 minutes
    python -m benchmarks.example_api_compare --quick        # 100 users, seconds
    python -m benchmarks.example_api_compare --rounds 7 --page-sizes 10,100
    python -m benchmarks.example_api_compare --database-url postgresql://postgres@127.0.0.1/bench
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from example_api import migrations
from example_api.db import create_engine
from example_api.seed import SeedPlan, seed
from example_api.settings import normalize_database_url

ROOT = Path(__file__).resolve().parent.parent

QUERY = """{ users(limit: %d) { id name posts(limit: 5) { id title
  comments(limit: 5) { id author { id name } } tags { name } } } }"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _server(url: str, naive: bool, max_page: int, log_dir: Path) -> Iterator[str]:
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "PYTHONASYNCIODEBUG": "",  # empty: off (any non-empty value, even "0", turns it on)
        "EXAMPLE_API_MAX_PAGE_SIZE": str(max_page),
        "EXAMPLE_API_MAX_TOKENS": "100000",
    }
    command = [sys.executable, "-m", "example_api", "serve", "--debug", "--no-migrate"]
    command += ["--port", str(port), "--log-level", "warning"] + (["--naive"] if naive else [])
    log = log_dir / f"{'naive' if naive else 'batched'}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not start:\n{log.read_text()}")
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(60)


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


async def _prepare(url: str, users: int, seed_value: int) -> None:
    engine = create_engine(url)
    try:
        await migrations.downgrade(engine, "base")
        await migrations.upgrade(engine)
        await seed(engine, SeedPlan(users=users, seed=seed_value))
    finally:
        await engine.dispose()


def _report(results: list[dict[str, Any]], pages: list[int], url: str, users: int) -> str:
    backend = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    rounds = results[0]["rounds"]
    lines = [
        f"Example API, {backend}, {users} users; medians of {rounds} interleaved rounds; "
        f"Python {sys.version.split()[0]}.",
        "",
        "| page size | mode | SQL statements | latency ms |",
        "|--:|---|--:|--:|",
    ]
    for row in results:
        lines.append(
            f"| {row['page_size']} | {row['mode']} | {row['statements']:.0f} | "
            f"{row['latency_ms']:.1f} |"
        )
    lines += ["", "| page size | naive / batched statements | naive / batched latency |"]
    lines.append("|--:|--:|--:|")
    for page in pages:
        b = next(r for r in results if r["page_size"] == page and r["mode"] == "batched")
        n = next(r for r in results if r["page_size"] == page and r["mode"] == "naive")
        lines.append(
            f"| {page} | {n['statements'] / b['statements']:.0f}x | "
            f"{n['latency_ms'] / b['latency_ms']:.1f}x |"
        )
    return "\n".join(lines) + "\n"


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
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    users = args.users or (100 if args.quick else 1000)
    rounds = args.rounds or (1 if args.quick else 5)
    pages = [
        int(p) for p in (args.page_sizes or ("10,100" if args.quick else "10,100,1000")).split(",")
    ]
    if max(pages) > users:
        parser.error(f"page size {max(pages)} needs at least as many users (--users {users})")
    with tempfile.TemporaryDirectory() as tmp:
        url = normalize_database_url(args.database_url or f"sqlite:///{tmp}/bench.db")
        print(f"seeding {users} users (seed {args.seed}) ...", file=sys.stderr, flush=True)
        asyncio.run(_prepare(url, users, args.seed))
        results: list[dict[str, Any]] = []
        with (
            _server(url, False, max(pages), Path(tmp)) as batched,
            _server(url, True, max(pages), Path(tmp)) as naive,
            httpx.Client(timeout=600) as client,
        ):
            servers = {"batched": batched, "naive": naive}
            for page in pages:
                samples: dict[str, list[tuple[int, float]]] = {"batched": [], "naive": []}
                for base in servers.values():  # warm-up: imports, caches, pools
                    _request(client, base, page)
                for round_ in range(rounds):
                    order = ["batched", "naive"] if round_ % 2 == 0 else ["naive", "batched"]
                    for mode in order:
                        samples[mode].append(_request(client, servers[mode], page))
                for mode, got in samples.items():
                    results.append(
                        {
                            "page_size": page,
                            "mode": mode,
                            "statements": statistics.median(s for s, _ in got),
                            "latency_ms": statistics.median(t for _, t in got) * 1000,
                            "rounds": rounds,
                        }
                    )
    report = _report(results, pages, url, users)
    print(report, end="")
    if args.out:
        args.out.write_text(report, encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
