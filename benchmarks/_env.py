"""What the benchmarks share: the machine and versions, servers, a private PostgreSQL database.

Not a benchmark (its name starts with ``_``). Every wait here is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import importlib.metadata
import json
import os
import platform
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent

PG_ADMIN_URL = os.environ.get(
    "GQLBATCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
"""Maintenance database of the PostgreSQL server the benchmarks create their databases on."""

NO_POSTGRES_ENV = "GQLBATCH_BENCH_NO_POSTGRES"
"""Set to 1 to run the database benchmarks on SQLite only (no PostgreSQL server here)."""

SERVER_READY_SECONDS = 60
SERVER_STOP_SECONDS = 60

PACKAGES = (
    "gqlbatch",
    "strawberry-graphql",
    "graphql-core",
    "aiodataloader",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "uvicorn",
    "starlette",
    "httpx",
    "matplotlib",
)


def postgres_enabled() -> bool:
    """False when ``GQLBATCH_BENCH_NO_POSTGRES`` asks for SQLite only."""
    return os.environ.get(NO_POSTGRES_ENV, "").strip() not in ("1", "true", "yes", "on")


# -- machine and versions --------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def memory_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.0f} GiB"
    except (OSError, ValueError):
        pass
    return "unknown"


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def git_revision() -> str:
    """Short commit of the checkout, marked when ``gqlbatch/`` has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
            cwd=ROOT,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "gqlbatch", "example_api"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=ROOT,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" (modified)" if dirty else "")


def postgres_version() -> str:
    """The PostgreSQL server's version, or why it is not known."""
    if not postgres_enabled():
        return f"not used ({NO_POSTGRES_ENV}=1)"

    async def ask() -> str:
        import asyncpg

        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=10)
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    try:
        return asyncio.run(ask())
    except (OSError, ImportError) as exc:
        return f"not reachable ({type(exc).__name__})"


def machine() -> dict[str, Any]:
    """The machine, the interpreter and every version a reader needs to compare runs."""
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    try:
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": cores,
        "usable_cores": usable,
        "memory": memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "load": load,
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "git": git_revision(),
        "versions": {package: version(package) for package in PACKAGES},
        "sqlite": sqlite3.sqlite_version,
        "postgresql": postgres_version(),
    }


# -- a private PostgreSQL database -------------------------------------------------------


async def _admin(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextmanager
def private_postgres(purpose: str) -> Iterator[str]:
    """A fresh PostgreSQL database for this run only (asyncpg URL), dropped afterwards."""
    name = f"gqlbatch_bench_{purpose}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        base = PG_ADMIN_URL.rsplit("/", 1)[0]
        yield f"{base.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# -- the example API as a real server ------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ExampleServer:
    """A running ``python -m example_api serve``: its base URL and its process id."""

    base: str
    pid: int


@contextmanager
def running_example_server(
    url: str,
    log: Path,
    *,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Iterator[ExampleServer]:
    """``python -m example_api serve`` on a free loopback port, until the block ends.

    asyncio's debug mode is off in the server (it distorts timings); the
    database must be migrated already. The server gets SIGTERM at the end.
    With several workers, ``pid`` is uvicorn's supervisor, the workers its children.
    """
    import httpx

    port = free_port()
    environment = {
        **os.environ,
        "DATABASE_URL": url,
        "PYTHONASYNCIODEBUG": "",  # empty: off (any non-empty value, even "0", turns it on)
        **(env or {}),
    }
    command = [sys.executable, "-m", "example_api", "serve", "--no-migrate"]
    command += ["--port", str(port), "--log-level", "warning", *args]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_READY_SECONDS
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not start:\n{log.read_text(errors='replace')}")
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield ExampleServer(base, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(SERVER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(SERVER_STOP_SECONDS)


@contextmanager
def example_server(
    url: str,
    log: Path,
    *,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """:func:`running_example_server`, yielding only the base URL."""
    with running_example_server(url, log, args=args, env=env) as server:
        yield server.base


# -- CPU time (Linux /proc) ----------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system, every thread) of ``pid`` and of each of its descendants.

    Read from ``/proc``; empty where there is no ``/proc`` (not Linux) or the
    process is gone. A descendant that ended meanwhile is simply missing.
    """
    found: dict[int, float] = {}
    todo = [pid]
    while todo and len(found) < 1000:
        current = todo.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (command)"
        found[current] = (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text()
        except OSError:
            continue
        todo.extend(int(child) for child in children.split())
    return found


def machine_busy() -> float | None:
    """CPU seconds every core of the machine spent not idle since boot (None: no ``/proc``)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal: all but idle and iowait are busy
    return (sum(values[:8]) - sum(values[3:5])) / _TICKS


async def prepare_database(url: str, users: int, seed_value: int = 1) -> None:
    """Migrate ``url`` from scratch and seed ``users`` users."""
    from example_api import migrations
    from example_api.db import create_engine
    from example_api.seed import SeedPlan, seed

    engine = create_engine(url)
    try:
        await migrations.downgrade(engine, "base")
        await migrations.upgrade(engine)
        await seed(engine, SeedPlan(users=users, seed=seed_value))
    finally:
        await engine.dispose()


# -- measuring ------------------------------------------------------------------------------


class GcTimer:
    """Time spent in garbage collections, and their count per generation, while ``active``.

    A ``gc.callbacks`` entry for the duration of a ``with`` block; ``reset``
    zeroes the figures before a timed part, ``active`` brackets it.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self.active = False
        self._started = 0.0

    def reset(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if not self.active:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections[info["generation"]] += 1

    def __enter__(self) -> Self:
        gc.callbacks.append(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        gc.callbacks.remove(self)


def percentile_ms(latencies: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``latencies`` (seconds) in ms, nearest rank; NaN if none."""
    ordered = sorted(latencies)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))] * 1000


# -- command line and report ---------------------------------------------------------------


def benchmark_parser(
    module: str, doc: str | None, quick: str = "a small, short run"
) -> argparse.ArgumentParser:
    """The parser of ``python -m benchmarks.<module>``, with its ``--quick`` option.

    The description is the first paragraph of ``doc`` (the module's docstring);
    the benchmark adds its own options, then :func:`add_report_options`.
    """
    parser = argparse.ArgumentParser(
        prog=f"python -m benchmarks.{module}", description=(doc or "").split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help=quick)
    return parser


def add_report_options(
    parser: argparse.ArgumentParser, json_help: str = "also write the results here (for the page)"
) -> None:
    """``--out`` (the markdown report) and ``--json`` (the results), read by :func:`publish`."""
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    parser.add_argument("--json", type=Path, help=json_help)


def publish(report: str, data: dict[str, Any], out: Path | None, json_path: Path | None) -> None:
    """Print ``report``; write it to ``out`` and ``data`` as JSON to ``json_path`` if given."""
    print(report, end="")
    if out:
        out.write_text(report, encoding="utf-8")
    if json_path:
        json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


# -- charts ------------------------------------------------------------------------------


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (the ``bench`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "font.size": 9, "axes.grid": True})
    return plt


def save(figure: Any, path: Path) -> None:
    """Write ``figure`` as a PNG without a timestamp, so an unchanged chart is the same file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, format="png", metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(figure)


CALLGRIND_TIMEOUT = 1_800
"""Seconds one callgrind child run may take."""
_TOTALS = re.compile(rb"^totals:\s*(\d+)", re.MULTILINE)


def callgrind_child(module: str, *args: str) -> tuple[list[dict[str, Any]], list[int]] | str:
    """Run ``python -m module --instructions-child FILE *args`` under callgrind.

    The child marks its measured parts with ``os.getppid()``, at which callgrind
    dumps its counters (``--dump-before=getppid``), and writes the list of its
    runs (with their dump numbers) to FILE as JSON. Returns those runs and the
    instructions of every dump (index = dump number), or why there are none.
    """
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return "valgrind is not installed (apt-get install valgrind)"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "runs.json"
        command = [
            valgrind, "--tool=callgrind", "--dump-before=getppid",
            f"--callgrind-out-file={tmp}/cg.out",
            sys.executable, "-m", module, "--instructions-child", str(out), *args,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONASYNCIODEBUG": ""}
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, timeout=CALLGRIND_TIMEOUT
        )
        if done.returncode != 0 or not out.exists():
            tail = done.stderr.decode(errors="replace")[-2000:]
            raise SystemExit(f"the callgrind run failed ({done.returncode}):\n{tail}")
        runs: list[dict[str, Any]] = json.loads(out.read_text(encoding="utf-8"))
        dumps = sorted(Path(tmp).glob("cg.out.*"), key=lambda path: int(path.suffix[1:]))
        totals = [0] * (int(dumps[-1].suffix[1:]) + 1 if dumps else 0)
        for path in dumps:
            match = _TOTALS.search(path.read_bytes())
            if match is None:
                raise SystemExit(f"callgrind dump {path.name} has no totals line")
            totals[int(path.suffix[1:])] = int(match.group(1))
    return runs, totals
