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
``C`` concurrent clients for a fixed time (each client its own kept-alive
HTTP/1.1 connection through a minimal client, a fraction of httpx's CPU,
sending its next request when the previous one is answered), and records every
answer's latency. Requests still in flight at the deadline are awaited but not
counted. Every answer is checked (HTTP 200, no errors, 10
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
page states next to the figures. Each worker listens on its own ``SO_REUSEPORT``
socket (``example_api/workers.py``), so the kernel spreads the clients' kept-alive
connections over the workers; the per-worker cores show how the load was spread,
and for several workers each round's requests/s over the one-worker server's on
the same database is reported against issue 11's goal (>= 1.6x at 16 clients).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._env import (
    ExampleServer,
    add_report_options,
    benchmark_parser,
    machine_busy,
    percentile_ms,
    postgres_enabled,
    prepare_database,
    private_postgres,
    process_cpu,
    publish,
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
        return percentile_ms(self.latencies, q)


class Connection:
    """One kept-alive HTTP/1.1 connection that POSTs JSON: a load-generating client.

    The clients share the machine's cores with the server, so what they cost is
    taken from it: httpx cost 3-4 ms of CPU per request here, an eighth of the
    server's. This client writes the request in one call and reads the answer by
    its ``Content-Length`` (what the example API sends), and nothing else.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post_json(self, path: str, payload: Any) -> tuple[int, Any]:
        """The status and the decoded JSON body of a POST of ``payload`` to ``path``."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        body = json.dumps(payload).encode()
        self._writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        status_line = await self._reader.readline()
        status = int(status_line.split()[1])
        length = None
        close = False
        while True:
            line = await self._reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length is None:
            raise ValueError(f"an answer without Content-Length: {status_line!r}")
        data = await self._reader.readexactly(length)
        if close:
            await self.aclose()
        return status, json.loads(data)

    async def aclose(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with suppress(OSError):
                await writer.wait_closed()


async def load(server: ExampleServer, clients: int, seconds: float, users: int) -> Cell:
    """``clients`` clients send the query to ``server`` until ``seconds`` have passed."""
    host, port = server.base.removeprefix("http://").rsplit(":", 1)
    latencies: list[float] = []
    failures = 0
    answers = 0  # every answer, late ones included: the CPU time is theirs too
    offsets = max(1, users - PAGE + 1)
    server_before = process_cpu(server.pid)
    machine_before = machine_busy()
    client_before = time.process_time()
    started = time.perf_counter()
    deadline = started + seconds

    async def client(index: int) -> None:
        nonlocal failures, answers
        n = index * 7
        connection = Connection(host, int(port))
        try:
            while time.perf_counter() < deadline:
                n += 1
                body = {"query": QUERY, "variables": {"offset": (n * 37) % offsets}}
                sent = time.perf_counter()
                try:
                    status, answer = await asyncio.wait_for(
                        connection.post_json("/graphql", body), REQUEST_TIMEOUT
                    )
                    ok = (
                        status == 200
                        and not answer.get("errors")
                        and len(answer["data"]["users"]) == PAGE
                    )
                except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError,
                        KeyError, TypeError, IndexError):  # fmt: skip
                    ok = False
                    await connection.aclose()  # a fresh connection for the next request
                answers += 1
                answered = time.perf_counter()
                if answered > deadline:
                    break  # in flight at the deadline: not counted
                if ok:
                    latencies.append(answered - sent)
                else:
                    failures += 1
        finally:
            await connection.aclose()

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
                    "rps_vs_one_worker": _per_round_vs_one_worker(config, configs, cells, n),
                }
            )
    return rows


def _per_round_vs_one_worker(
    config: Config, configs: list[Config], cells: dict[tuple[str, int], list[Cell]], n: int
) -> list[float]:
    """Each round's requests/s over the same database's one-worker server's (several workers)."""
    one = next((c for c in configs if c.url == config.url and c.workers == 1), None)
    if config.workers < 2 or one is None:
        return []
    return [
        c.rps / b.rps if b.rps else float("nan")
        for c, b in zip(cells[(config.name, n)], cells[(one.name, n)], strict=True)
    ]


WORKERS_GOAL = 1.6
"""Issue 11: 2 workers give at least this many times one worker's requests/s, every round."""
GOAL_CLIENTS = 16
"""... at this many kept-alive clients."""


def workers_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Per client count, several workers against one: each round's ratio, and the goal."""
    lines = []
    for r in rows:
        ratios = r.get("rps_vs_one_worker") or []
        if not ratios:
            continue
        if r["clients"] == GOAL_CLIENTS:
            met = "met" if min(ratios) >= WORKERS_GOAL else "not met"
            goal = f"goal ≥ {WORKERS_GOAL} in every round: {met}"
        else:
            goal = f"the goal is at {GOAL_CLIENTS} clients"
        cores = " + ".join(f"{w:.2f}" for w in r.get("worker_cores") or [])
        lines.append(
            f"- {r['server']}, {r['clients']} clients: "
            f"{', '.join(f'{x:.2f}' for x in ratios)}x one worker's requests/s per round "
            f"({goal}); cores per worker "
            f"{cores}, the whole machine {_number(r.get('machine_cores'), 2)} of "
            f"{_usable_cores()}."
        )
    return lines


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


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
        *workers_lines(rows),
        "",
        "The clients run in the benchmark's own process on the same machine as the servers "
        "and PostgreSQL, so all of them share its cores (see the top of the page). One worker "
        "can use one core at most: once it does, more clients only queue (latency about "
        "clients / requests/s), and requests/s are bounded by 1000 / server CPU ms per request. A "
        "second worker helps only as far as a second core is free (machine cores busy minus "
        "the server's: the clients, PostgreSQL, anything else running) and only if the "
        "connections are spread: each worker listens on its own `SO_REUSEPORT` socket "
        "(`example_api/workers.py`), and the kernel spreads the clients' kept-alive "
        "connections over them by a hash of the client's port (per-worker cores). On a "
        "machine with 2 cores shared with the load generator and PostgreSQL, 2 workers "
        "cannot each have a whole core: the machine cores busy column shows how close the "
        "run came.",
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
    parser = benchmark_parser("server_throughput", __doc__)
    parser.add_argument("--clients", type=_parse_clients, help="client counts (default 1,16)")
    parser.add_argument("--seconds", type=float, help="per measurement (default 6)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3)")
    parser.add_argument("--users", type=int, help="users to seed (default 500)")
    add_report_options(parser)
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
            *workers_lines(rows),
            "",
        ]
    )
    data = {"users": users, "rounds": rounds, "seconds": seconds, "rows": rows}
    publish(report, data, args.out, args.json)
    failed = sum(r["failures"] for r in rows)
    if failed:
        print(f"{failed} requests failed: see the failed column", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
