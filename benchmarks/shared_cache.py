"""Two server processes with and without a shared Redis cache, on a hot-entity mix.

    python -m benchmarks.shared_cache [--quick] [--clients C] [--seconds S]
                                      [--users N] [--out PATH] [--json PATH]

Two ``python -m example_api serve`` processes (production mode, one worker
each) on one private PostgreSQL database, the load generator spreading its
requests over both (client ``i`` talks to server ``i % 2``), in three set-ups:

* ``no shared cache``: ``EXAMPLE_API_REDIS_URL`` unset (per-request loaders only);
* ``Redis``: both servers share the cache on the Redis at ``GQLBATCH_REDIS_URL``
  (default ``redis://127.0.0.1:6379/0``), in a namespace of this run, deleted after;
* ``Redis stalled``: ``EXAMPLE_API_REDIS_URL`` names a loopback port that
  accepts connections and never answers (a black-holed Redis): every cache
  call waits ``EXAMPLE_API_CACHE_TIMEOUT_MS`` (50 ms) until the circuit opens.

The mix has hot entities: 80% of requests ask for one of the 20 hottest posts
(its author, its first five comments and their authors), 20% for any post. Per
set-up: database statements per request (from both servers' ``/metrics``),
requests/s, p50 and p99 latency, and the shared cache's hit rate, after an
untimed warm-up that fills the caches.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks._env import (
    ExampleServer,
    add_report_options,
    benchmark_parser,
    percentile_ms,
    prepare_database,
    private_postgres,
    publish,
    pyplot,
    running_example_server,
    save,
)

QUERY = """query Hot($id: ID!) { post(id: $id) { id title viewCount author { id name }
  comments(limit: 5) { id author { id name } } } }"""
HOT = 20
REDIS_URL = os.environ.get("GQLBATCH_REDIS_URL", "redis://127.0.0.1:6379/0")
SETUPS = ("no shared cache", "Redis", "Redis stalled")


@dataclass(frozen=True)
class Preset:
    clients: int
    seconds: float
    users: int
    warmup: float


FULL = Preset(clients=16, seconds=8.0, users=300, warmup=2.0)
QUICK = Preset(clients=4, seconds=1.0, users=40, warmup=0.5)


@contextmanager
def black_hole() -> Iterator[int]:
    """A loopback port whose connections are accepted by the kernel and never answered."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(512)
        yield int(sock.getsockname()[1])


def _metric(text: str, name: str) -> float:
    """The sum of every sample of ``name`` in a Prometheus text page."""
    pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", re.M)
    return sum(float(value) for value in pattern.findall(text))


def _scrape(servers: list[ExampleServer]) -> dict[str, float]:
    pages = [httpx.get(f"{s.base}/metrics", timeout=30).text for s in servers]
    names = (
        "example_api_sql_statements_per_request_sum",
        "example_api_sql_statements_per_request_count",
        "example_api_shared_cache_hits_total",
        "example_api_shared_cache_misses_total",
    )
    return {name: sum(_metric(page, name) for page in pages) for name in names}


async def _load(
    servers: list[ExampleServer], clients: int, seconds: float, posts: int
) -> dict[str, Any]:
    """``clients`` clients ask the mix of both servers until ``seconds`` have passed."""
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async def client(index: int) -> None:
        nonlocal failures
        rng = random.Random(index)
        base = servers[index % len(servers)].base
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            while time.perf_counter() < deadline:
                hot = rng.random() < 0.8
                post = rng.randint(1, min(HOT, posts)) if hot else rng.randint(1, posts)
                sent = time.perf_counter()
                try:
                    response = await http.post(
                        f"{base}/graphql", json={"query": QUERY, "variables": {"id": str(post)}}
                    )
                    body = response.json()
                    ok = response.status_code == 200 and not body.get("errors")
                except (httpx.HTTPError, ValueError):
                    ok = False
                answered = time.perf_counter()
                if answered > deadline:
                    break
                if ok:
                    latencies.append(answered - sent)
                else:
                    failures += 1

    await asyncio.gather(*(client(i) for i in range(clients)))
    return {
        "answered": len(latencies),
        "failures": failures,
        "rps": len(latencies) / seconds,
        "p50_ms": percentile_ms(latencies, 0.5),
        "p99_ms": percentile_ms(latencies, 0.99),
    }


def _posts_of(url: str) -> int:
    async def count() -> int:
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                return int(await connection.scalar(text("SELECT count(*) FROM posts")) or 0)
        finally:
            await engine.dispose()

    return asyncio.run(count())


def measure(setup: str, url: str, env: dict[str, str], preset: Preset, tmp: Path) -> dict[str, Any]:
    """Two servers of one set-up under the mix; the figures of one row."""
    posts = _posts_of(url)
    with ExitStack() as stack:
        servers = [
            stack.enter_context(
                running_example_server(
                    url, tmp / f"{setup.replace(' ', '-')}-{i}.log", args=["--production"], env=env
                )
            )
            for i in range(2)
        ]
        with asyncio.Runner(debug=False) as runner:
            runner.run(_load(servers, preset.clients, preset.warmup, posts))
            before = _scrape(servers)
            row = runner.run(_load(servers, preset.clients, preset.seconds, posts))
        after = _scrape(servers)
    delta = {name: after[name] - before[name] for name in after}
    requests = delta["example_api_sql_statements_per_request_count"]
    looked = (
        delta["example_api_shared_cache_hits_total"]
        + delta["example_api_shared_cache_misses_total"]
    )
    row["setup"] = setup
    row["statements"] = (
        delta["example_api_sql_statements_per_request_sum"] / requests if requests else None
    )
    row["hit_rate"] = delta["example_api_shared_cache_hits_total"] / looked if looked else None
    return row


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None or value != value else f"{value:,.{digits}f}"


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| set-up | statements / request | req/s | p50 ms | p99 ms | hit rate | answered "
        "| failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        hit = "-" if row["hit_rate"] is None else f"{row['hit_rate']:.0%}"
        lines.append(
            f"| {row['setup']} | {_number(row['statements'], 2)} | {_number(row['rps'], 1)} "
            f"| {_number(row['p50_ms'], 1)} | {_number(row['p99_ms'], 1)} | {hit} "
            f"| {row['answered']:,} | {row['failures']} |"
        )
    return lines


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(8, 3))
    names = [row["setup"] for row in rows]
    left.bar(names, [row["statements"] or 0 for row in rows], color="#4c72b0")
    left.set_title("database statements per request")
    right.bar(names, [row["rps"] for row in rows], color="#55a868")
    right.set_title("requests/s (two servers)")
    for axis in (left, right):
        axis.tick_params(axis="x", labelsize=8)
    save(figure, path)
    plt.close(figure)


def render(data: dict[str, Any], img_dir: Path, img_link: str) -> str:
    """The section of ``docs/benchmarks.md``."""
    chart(data["rows"], img_dir / "bench-shared-cache.png")
    return "\n".join(
        [
            "## Two servers sharing a Redis cache",
            "",
            f"Two example API processes on one PostgreSQL database, {data['clients']} clients "
            f"spread over both for {data['seconds']:g} s, 80% of requests on the "
            f"{HOT} hottest posts (`benchmarks/shared_cache.py`). *Redis stalled*: the "
            "servers' Redis accepts connections and never answers; each cache call gives up "
            "after 50 ms until the circuit opens, and the database answers (fail open).",
            "",
            *table(data["rows"]),
            "",
            f"![statements and requests/s]({img_link}bench-shared-cache.png)",
            "",
        ]
    )


def _delete_namespace(namespace: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    """Run the three set-ups; print (and with ``--out``, write) a markdown report."""
    parser = benchmark_parser("shared_cache", __doc__)
    parser.add_argument("--clients", type=int, help="concurrent clients (default 16)")
    parser.add_argument("--seconds", type=float, help="per set-up (default 8)")
    parser.add_argument("--users", type=int, help="users to seed (default 300)")
    add_report_options(parser)
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    preset = Preset(
        clients=args.clients or base.clients,
        seconds=args.seconds or base.seconds,
        users=args.users or base.users,
        warmup=base.warmup,
    )
    if not 0 < preset.seconds <= 120:
        parser.error(f"--seconds must be in (0, 120], got {preset.seconds}")
    if not 1 <= preset.clients <= 256:
        parser.error(f"--clients must be between 1 and 256, got {preset.clients}")
    namespace = f"gqlbatch-bench-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    rows = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        private_postgres("shared") as url,
        black_hole() as port,
    ):
        print(f"seeding {preset.users} users ...", file=sys.stderr, flush=True)
        asyncio.run(prepare_database(url, preset.users))
        common = {"EXAMPLE_API_REDIS_NAMESPACE": namespace}
        envs = {
            "no shared cache": {"EXAMPLE_API_REDIS_URL": ""},
            "Redis": {**common, "EXAMPLE_API_REDIS_URL": REDIS_URL},
            "Redis stalled": {**common, "EXAMPLE_API_REDIS_URL": f"redis://127.0.0.1:{port}/0"},
        }
        try:
            for setup in SETUPS:
                rows.append(measure(setup, url, envs[setup], preset, Path(tmp)))
                print(f"{setup}: done", file=sys.stderr, flush=True)
        finally:
            _delete_namespace(namespace)
    report = "\n".join(
        [
            f"Two servers sharing a Redis cache: {preset.users} users, {preset.clients} clients, "
            f"{preset.seconds:g} s per set-up; Python {sys.version.split()[0]}.",
            "",
            *table(rows),
            "",
        ]
    )
    data = {
        "users": preset.users,
        "clients": preset.clients,
        "seconds": preset.seconds,
        "rows": rows,
    }
    publish(report, data, args.out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
