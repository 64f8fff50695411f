"""Throughput of the real example API server under concurrent load, SQLite and PostgreSQL.

    python -m benchmarks.server_throughput [--quick] [--clients 1,16] [--seconds S]
                                           [--rounds R] [--users N] [--out PATH] [--json PATH]

Three servers run at once, each a ``python -m example_api serve`` subprocess
(production mode, asyncio debug off) listening on loopback:

* ``SQLite, 1 worker``: a temporary SQLite file;
* ``PostgreSQL, 1 worker`` and ``PostgreSQL, 2 workers``: one private
  PostgreSQL database created for the run and dropped after it (skipped with
  ``GQLBATCH_BENCH_NO_POSTGRES=1``).

Both databases are seeded alike (``--users``, 500 by default). Each
measurement sends one server a typical nested query, the four-level

    users(limit: 10, offset: O) { id name posts(limit: 5) { id title
        comments(limit: 5) { id author { id name } } tags { name } } }

(``O`` cycling through the seeded users, so requests read different rows) from
``C`` concurrent clients for a fixed time (each client its own httpx
connection, sending its next request when the previous one is answered), and
records every answer's latency. Requests still in flight at the deadline are
awaited but not counted. Every answer is checked (HTTP 200, no errors, 10
users); failures are counted and reported.

CPU time (Linux ``/proc``): over each measurement, from the first request sent
to the last answer received, the server's CPU time (user + system, every
process of it: with several workers, each worker and the supervisor) divided
by the answers it sent, in ms per request; the same as cores (CPU seconds per
second), for the whole server and for each worker; this process's CPU time per
answer (the load generator's cost); and the cores the whole machine was busy.
Requests/s depend on the cores the server could get, which on a shared or
small machine the clients, PostgreSQL and anything else running take from it;
CPU per request does not, and the cores show who had them.

Interleaving: each round measures every (server, clients) pair once, in an
order rotated from round to round, after one untimed warm-up per server.
Figures are medians over rounds of requests/s and of each round's p50 and p95
latency; the ratios are medians of per-round ratios to ``SQLite, 1 worker`` at
the same client count.

The load generator runs in this process, on the same machine as the servers
and PostgreSQL: on a small machine they compete for the same cores, which the
page states next to the figures. uvicorn's workers share one listening socket,
so the first to wake may accept most of the clients' connections, which then
stay with it: the per-worker cores show how the load was spread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks._env import (
    ExampleServer,
    machine_busy,
    postgres_enabled,
    prepare_database,
    private_postgres,
    process_cpu,
    running_example_server,
)
from example_api.settings import normalize_database_url

QUERY = """query Feed($offset: Int!) { users(limit: 10, offset: $offset) { id name
  posts(limit: 5) { id title comments(limit: 5) { id author { id name } } tags { name } } } }"""
PAGE = 10
REQUEST_TIMEOUT = 30.0
"""Seconds one request may take before it counts as failed."""


@dataclass(frozen=True)
class Preset:
    """How much one run measures."""

    clients: tuple[int, ...]
    seconds: float
    rounds: int
    users: int
    warmup: float


FULL = Preset(clients=(1, 16), seconds=6.0, rounds=3, users=500, warmup=2.0)
QUICK = Preset(clients=(4,), seconds=1.0, rounds=1, users=50, warmup=0.5)


@dataclass(frozen=True)
class Config:
    name: str
    url: str
    workers: int


@dataclass
class Cell:
    """One measurement: a server under ``clients`` concurrent clients for ``seconds``.

    The CPU figures cover ``elapsed`` (the whole measurement, answers awaited
    after the deadline included) and every answer in it (``answers``); they are
    None where ``/proc`` could not be read.
    """

    latencies: list[float]
    failures: int
    seconds: float
    answers: int = 0
    elapsed: float = 0.0
    server_cpu: float | None = None
    worker_cpu: list[float] = field(default_factory=list)  # largest first
    client_cpu: float = 0.0
    machine_cpu: float | None = None

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds

    @property
    def server_cpu_ms(self) -> float | None:
        """Server CPU time per answer, ms."""
        if self.server_cpu is None or not self.answers:
            return None
        return self.server_cpu / self.answers * 1000

    @property
    def client_cpu_ms(self) -> float | None:
        """This process's (the load generator's) CPU time per answer, ms."""
        return self.client_cpu / self.answers * 1000 if self.answers else None

    def cores(self, cpu: float | None) -> float | None:
        """``cpu`` seconds over the measurement, as busy cores."""
        return None if cpu is None or not self.elapsed else cpu / self.elapsed

    def percentile(self, q: float) -> float:
        """The ``q`` quantile (0-1) of the latencies in ms, nearest rank."""
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))] * 1000


async def load(server: ExampleServer, clients: int, seconds: float, users: int) -> Cell:
    """``clients`` clients send the query to ``server`` until ``seconds`` have passed."""
    base = server.base
    latencies: list[float] = []
    failures = 0
    answers = 0  # every answer, late ones included: the CPU time is theirs too
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    offsets = max(1, users - PAGE + 1)
    server_before = process_cpu(server.pid)
    machine_before = machine_busy()
    client_before = time.process_time()
    started = time.perf_counter()
    deadline = started + seconds

    async def client(index: int) -> None:
        nonlocal failures, answers
        n = index * 7
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT, limits=limits) as http:
            while time.perf_counter() < deadline:
                n += 1
                body = {"query": QUERY, "variables": {"offset": (n * 37) % offsets}}
                sent = time.perf_counter()
                try:
                    response = await http.post(f"{base}/graphql", json=body)
                    answer = response.json()
                    ok = (
                        response.status_code == 200
                        and not answer.get("errors")
                        and len(answer["data"]["users"]) == PAGE
                    )
                except (httpx.HTTPError, ValueError, KeyError, TypeError):
                    ok = False
                answers += 1
                answered = time.perf_counter()
                if answered > deadline:
                    break  # in flight at the deadline: not counted
                if ok:
                    latencies.append(answered - sent)
                else:
                    failures += 1

    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    client_cpu = time.process_time() - client_before
    machine_after = machine_busy()
    server_after = process_cpu(server.pid)
    used = {pid: cpu - server_before.get(pid, 0.0) for pid, cpu in server_after.items()}
    return Cell(
        latencies,
        failures,
        seconds,
        answers=answers,
        elapsed=elapsed,
        server_cpu=sum(used.values()) if used else None,
        worker_cpu=sorted(used.values(), reverse=True),
        client_cpu=client_cpu,
        machine_cpu=(
            None
            if machine_before is None or machine_after is None
            else machine_after - machine_before
        ),
    )


def _measure(
    configs: list[Config],
    servers: dict[str, ExampleServer],
    clients: tuple[int, ...],
    seconds: float,
    rounds: int,
    warmup: float,
    users: int,
) -> dict[tuple[str, int], list[Cell]]:
    cells: dict[tuple[str, int], list[Cell]] = {}
    pairs = [(c.name, n) for n in clients for c in configs]
    with asyncio.Runner(debug=False) as runner:
        for config in configs:
            runner.run(load(servers[config.name], max(clients), warmup, users))
        for round_ in range(rounds):
            shift = round_ % len(pairs)
            for name, n in pairs[shift:] + pairs[:shift]:
                cell = runner.run(load(servers[name], n, seconds, users))
                cells.setdefault((name, n), []).append(cell)
            print(f"round {round_ + 1}/{rounds} done", file=sys.stderr, flush=True)
    return cells


def _median(values: Any) -> float | None:
    """The median of the values that are not None, or None when there is none."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _worker_cores(runs: list[Cell], workers: int) -> list[float]:
    """Per worker, busiest first, the median over runs of the cores it used.

    The server's busiest ``workers`` processes are its workers (the supervisor
    of several workers and its helper barely run).
    """
    if workers < 2:
        return []
    per_run = [[cpu / c.elapsed for cpu in c.worker_cpu[:workers]] for c in runs if c.elapsed]
    per_run = [cores for cores in per_run if len(cores) == workers]
    return [statistics.median(column) for column in zip(*per_run, strict=True)]


def summarize(
    configs: list[Config], clients: tuple[int, ...], cells: dict[tuple[str, int], list[Cell]]
) -> list[dict[str, Any]]:
    baseline = configs[0].name
    rows = []
    for n in clients:
        for config in configs:
            runs = cells[(config.name, n)]
            base_runs = cells[(baseline, n)]
            rows.append(
                {
                    "server": config.name,
                    "workers": config.workers,
                    "clients": n,
                    "requests": sum(len(c.latencies) for c in runs),
                    "failures": sum(c.failures for c in runs),
                    "rps": statistics.median(c.rps for c in runs),
                    "rps_min": min(c.rps for c in runs),
                    "rps_max": max(c.rps for c in runs),
                    "p50_ms": statistics.median(c.percentile(0.50) for c in runs),
                    "p95_ms": statistics.median(c.percentile(0.95) for c in runs),
                    "server_cpu_ms": _median(c.server_cpu_ms for c in runs),
                    "server_cores": _median(c.cores(c.server_cpu) for c in runs),
                    "worker_cores": _worker_cores(runs, config.workers),
                    "machine_cores": _median(c.cores(c.machine_cpu) for c in runs),
                    "client_cpu_ms": _median(c.client_cpu_ms for c in runs),
                    "rps_vs_baseline": statistics.median(
                        c.rps / b.rps if b.rps else float("nan")
                        for c, b in zip(runs, base_runs, strict=True)
                    ),
                }
            )
    return rows


def _number(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _cores(row: dict[str, Any]) -> str:
    """The server's cores, with each worker's after it when there are several."""
    total = _number(row.get("server_cores"), 2)
    workers = row.get("worker_cores") or []
    return f"{total} ({' + '.join(f'{w:.2f}' for w in workers)})" if workers else total


def table(rows: list[dict[str, Any]], baseline: str) -> list[str]:
    lines = [
        f"| server | clients | requests/s | min-max | p50 ms | p95 ms | server CPU ms/request "
        f"| server cores (per worker) | machine cores busy | client CPU ms/request "
        f"| vs {baseline} | answered | failed |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['server']} | {r['clients']} | {r['rps']:,.1f} "
            f"| {r['rps_min']:,.1f}-{r['rps_max']:,.1f} | {r['p50_ms']:,.1f} "
            f"| {r['p95_ms']:,.1f} | {_number(r.get('server_cpu_ms'), 1)} | {_cores(r)} "
            f"| {_number(r.get('machine_cores'), 2)} | {_number(r.get('client_cpu_ms'), 1)} "
            f"| {r['rps_vs_baseline']:.2f} | {r['requests']:,} | {r['failures']:,} |"
        )
    return lines


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    """Requests/s (left) and p50/p95 latency (right) per server and client count."""
    from benchmarks._env import pyplot, save

    plt = pyplot()
    servers = list(dict.fromkeys(r["server"] for r in rows))
    clients = list(dict.fromkeys(r["clients"] for r in rows))
    colors = ["#1f77b4", "#2ca02c", "#98df8a"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / len(servers)
    for i, server in enumerate(servers):
        by_clients = {r["clients"]: r for r in rows if r["server"] == server}
        xs = [c - 0.4 + width / 2 + i * width for c in range(len(clients))]
        color = colors[i % len(colors)]
        left.bar(xs, [by_clients[c]["rps"] for c in clients], width, color=color, label=server)
        right.bar(xs, [by_clients[c]["p95_ms"] for c in clients], width, color=color, alpha=0.45)
        right.bar(xs, [by_clients[c]["p50_ms"] for c in clients], width, color=color)
    for axis in (left, right):
        axis.set_xticks(range(len(clients)), [f"{c} client{'s' * (c > 1)}" for c in clients])
    left.set_ylabel("requests per second (median; higher is better)")
    right.set_ylabel("latency ms: p50 (solid), p95 (light)")
    left.set_ylim(top=max(r["rps"] for r in rows) * 1.35)  # room for the legend
    left.legend(loc="upper left")
    figure.suptitle("Example API under concurrent load: the four-level query, 10 users a page")
    save(figure, path)


def render(data: dict[str, Any], img_dir: Path, img_link: str) -> str:
    """The report page's section: method, chart, table."""
    rows = data["rows"]
    chart(rows, img_dir / "bench-throughput.png")
    servers = list(dict.fromkeys(r["server"] for r in rows))
    lines = [
        "## The real server under concurrent load",
        "",
        "`benchmarks/server_throughput.py`: "
        + ", ".join(f"`{s}`" for s in servers)
        + " run at once as `python -m example_api serve` subprocesses (production mode) on "
        f"loopback, on databases seeded with {data['users']:,} users. Each measurement sends "
        f"one server the four-level query (10 users a page, offsets cycling through the "
        f"users) from C concurrent clients for {data['seconds']:g} s, each client sending "
        "its next request when the previous one is answered; answers are checked. "
        f"{data['rounds']} interleaved rounds (order rotated) after a warm-up per server; "
        "requests/s and p50/p95 latency are medians over rounds, the ratio the median of "
        f"per-round ratios to `{servers[0]}` at the same client count. CPU time comes from "
        "`/proc`, over each whole measurement: the server's (every process of it) per answer "
        "and as cores busy, for each worker too; the cores the whole machine was busy; and "
        "the load generator's (this process) per answer. Medians over rounds.",
        "",
        f"![Requests per second and latency]({img_link}bench-throughput.png)",
        "",
        *table(rows, servers[0]),
        "",
        "The clients run in the benchmark's own process on the same machine as the servers "
        "and PostgreSQL, so all of them share its cores (see the top of the page). One worker "
        "can use one core at most: once it does, more clients only queue (latency about "
        "clients / requests/s), and requests/s are bounded by 1000 / server CPU ms per request. A "
        "second worker helps only as far as a second core is free (machine cores busy minus "
        "the server's: the clients, PostgreSQL, anything else running) and only if the "
        "connections are spread: uvicorn's workers share one listening socket, and the "
        "clients' connections, opened at once and kept, may all go to the worker that wakes first "
        "(per-worker cores).",
        "",
    ]
    return "\n".join(lines)


def _parse_clients(raw: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in raw.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--clients must be integers like 1,16, got {raw!r}"
        ) from None
    if not values or min(values) < 1 or max(values) > 256:
        raise argparse.ArgumentTypeError(f"--clients must be between 1 and 256, got {raw!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    """Run the load test; print (and with ``--out``, write) a markdown report."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.server_throughput", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a small, short run")
    parser.add_argument("--clients", type=_parse_clients, help="client counts (default 1,16)")
    parser.add_argument("--seconds", type=float, help="per measurement (default 6)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3)")
    parser.add_argument("--users", type=int, help="users to seed (default 500)")
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    parser.add_argument("--json", type=Path, help="also write the results here (for the page)")
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    clients: tuple[int, ...] = args.clients or preset.clients
    seconds = float(args.seconds or preset.seconds)
    rounds = int(args.rounds or preset.rounds)
    users = int(args.users or preset.users)
    if not 0 < seconds <= 120:
        parser.error(f"--seconds must be in (0, 120], got {seconds}")
    if not 1 <= rounds <= 20:
        parser.error(f"--rounds must be between 1 and 20, got {rounds}")
    if users < PAGE:
        parser.error(f"--users must be at least {PAGE}, got {users}")

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        sqlite = normalize_database_url(f"sqlite:///{tmp}/throughput.db")
        configs = [Config("SQLite, 1 worker", sqlite, 1)]
        if postgres_enabled():
            pg = stack.enter_context(private_postgres("throughput"))
            configs += [
                Config("PostgreSQL, 1 worker", pg, 1),
                Config("PostgreSQL, 2 workers", pg, 2),
            ]
        for url in dict.fromkeys(c.url for c in configs):
            print(f"seeding {users} users ...", file=sys.stderr, flush=True)
            asyncio.run(prepare_database(url, users))
        servers = {}
        for i, config in enumerate(configs):
            servers[config.name] = stack.enter_context(
                running_example_server(
                    config.url,
                    Path(tmp) / f"server-{i}.log",
                    args=["--production", "--workers", str(config.workers)],
                )
            )
        cells = _measure(configs, servers, clients, seconds, rounds, preset.warmup, users)
        rows = summarize(configs, clients, cells)

    report = "\n".join(
        [
            f"Example API under load: {users} users; {rounds} rounds of {seconds:g} s; "
            f"Python {sys.version.split()[0]}.",
            "",
            *table(rows, configs[0].name),
            "",
        ]
    )
    print(report, end="")
    if args.out:
        args.out.write_text(report, encoding="utf-8")
    if args.json:
        data = {"users": users, "rounds": rounds, "seconds": seconds, "rows": rows}
        args.json.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    failed = sum(r["failures"] for r in rows)
    if failed:
        print(f"{failed} requests failed: see the failed column", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
