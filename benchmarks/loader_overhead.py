"""Per-key cost of ``load``: gqlbatch's KeyedLoader beside aiodataloader, Strawberry and asyncio.

    python -m benchmarks.loader_overhead [--quick] [--keys N] [--rounds R]
                                         [--loop asyncio|uvloop] [--out PATH]
                                         [--instruction-keys N | --no-instructions]

Five implementations run the same workloads in the same process:

* ``floor``: the least asyncio can do per key: create a future, set its
  result, await it (``load_many``: one such future per key, then one for the
  list). No batching, no cache: what any loader costs at the very least. Both
  floors make their futures by the C type directly (``Future(loop=loop)``),
  the cheapest way there is.
* ``batching floor``: the least a *batching* loader built on asyncio futures
  can do: a pending future per key (one per ``load_many`` call), all answered
  by one loop callback per batch (per ``max_batch_size`` keys). A task that
  awaits such a future is suspended and woken again (the callback that
  ``set_result`` schedules, one more task step and loop iteration per key),
  which the ``floor``'s done futures spare it. No batch function, no cache:
  every loader's cost above it is its own. The tables give each loader's
  instructions and time per key above it, and the goals table the ratio to
  aiodataloader that even a loader costing nothing above it would reach.
* ``gqlbatch``: ``KeyedLoader``; its batch function returns a mapping
  ``{key: value}`` (``dict(zip(keys, keys))``).
* ``aiodataloader``: ``aiodataloader.DataLoader``; its batch function returns
  the list of values in key order (``list(keys)``), which costs less than the
  mapping above: a real one would also have to reorder its rows by key.
* ``strawberry``: ``strawberry.dataloader.DataLoader``, batch function as for
  aiodataloader.

Workloads (``N`` keys, 100,000 by default; fan-out width 100), in the shapes
resolvers use a loader:

1. ``distinct``: one coroutine calls ``load`` for N distinct keys in one tick,
   then awaits each future. One batch expected.
2. ``max_batch_size=100``: the same with batches of at most 100 keys.
3. ``gather``: one coroutine awaits ``asyncio.gather(*(load(k) for k in keys))``.
4. ``task per key``: N resolver-like coroutines, each awaiting one ``load``,
   run as tasks by ``asyncio.gather`` (what graphql-core does for a list field
   whose items each read one key).
5. ``cache hits``: every key was loaded before (untimed); load them all again.
6. ``fan-out``: N/100 parent tasks (``asyncio.gather``) each ``load`` their
   parent, then ``load_many`` their 100 children (the peers' ``load_many`` is an
   ``asyncio.gather`` of ``load`` futures). Keys = parents + children.
7. ``fan-out, 0-3 awaits``: as 6, but parent ``i`` awaits ``asyncio.sleep(0)``
   ``i % 4`` times before each of its two loads, as resolvers doing an async
   permission check do. The batches column shows how many batches each loader
   made per level (parents / children); gqlbatch aims at one per level.
8. ``repeated keys``: as 1, but N loads of N/5 distinct keys, each key loaded
   five times in the tick (as many comments share an author). The peers hand
   every caller of a pending key the same future; gqlbatch gives each its own,
   so that one caller cancelling never cancels another: a future per load.
   Not one of issue 11's shapes (no goal): measured so that the price of that
   choice is on the page.

Two measures, each reported per key and as ratios to aiodataloader and to
Strawberry's ``DataLoader``:

* **Time.** Each round runs every implementation once per workload, in an
  order rotated from round to round; the first round is a discarded warm-up.
  Each timed run starts after ``gc.collect()`` with the collector enabled as
  usual; ``gc.callbacks`` time each collection inside the run. Figures are
  medians over the rounds; the ratios are medians of per-round ratios (paired
  runs). Results are checked after each run (outside the timed part).
* **Instructions** (``valgrind --tool=callgrind``, 20,000 keys by default):
  one child process runs every workload of every implementation once untimed
  (warm-up: imports, the interpreter's specialisation) and once measured, and
  marks the start and the end of each measured part with ``os.getppid()``;
  callgrind dumps its counters at every ``getppid`` (``--dump-before``), so
  each measured part is one dump. The run's garbage is counted too, wherever
  it is freed: what the workload's return frees, and what only a collection
  frees (reference cycles, which some loaders leave behind), less the cost of
  a collection with nothing to free (the walk of the heap).
  ``PYTHONHASHSEED=0`` and a fixed order make the counts the same on every
  run: they do not depend on the machine's load nor on where a garbage
  collection fell (collections inside a run are part of its count, as they
  are part of its cost). Skipped, with a note, when
  valgrind is not installed.

The event loop runs with asyncio's debug mode forced off, whatever
``PYTHONASYNCIODEBUG`` says: debug mode distorts timings.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from benchmarks._env import GcTimer, callgrind_child, cpu_model, git_revision, version

FUTURE = asyncio.Future

FANOUT = 100
"""Children per parent in the fan-out workloads."""
FULL_KEYS = 100_000
FULL_ROUNDS = 9
QUICK_KEYS = 2_000
QUICK_ROUNDS = 2
WARMUP_ROUNDS = 1
INSTRUCTION_KEYS = 20_000
"""Keys per workload under callgrind."""
QUICK_INSTRUCTION_KEYS = 1_000
PEERS = ("aiodataloader", "strawberry")


class Loader(Protocol):
    """What the workloads use: the common surface of every implementation."""

    def load(self, key: int) -> Awaitable[Any]: ...
    def load_many(self, keys: Iterable[int]) -> Awaitable[list[Any]]: ...


# -- implementations -------------------------------------------------------------------


@dataclass
class Made:
    """A loader built for one run, and the sizes of the batches its function got."""

    loader: Loader
    batches: list[int] = field(default_factory=list)


class _Floor:
    """Create a future, set its result, hand it over: no batching, no cache.

    Futures are made by the C type directly (``Future(loop=loop)``, what
    ``loop.create_future()`` does through a Python method), as both floors do.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()

    def load(self, key: int) -> asyncio.Future[int]:
        future: asyncio.Future[int] = FUTURE(loop=self._loop)
        future.set_result(key)
        return future

    def load_many(self, keys: Iterable[int]) -> asyncio.Future[list[int]]:
        loop = self._loop
        values = []
        for key in keys:
            future: asyncio.Future[int] = FUTURE(loop=loop)
            future.set_result(key)
            values.append(future.result())
        outer: asyncio.Future[list[int]] = FUTURE(loop=loop)
        outer.set_result(values)
        return outer


def make_floor(max_batch_size: int | None) -> Made:
    return Made(_Floor())


class _BatchingFloor:
    """A pending future per key, all answered by one loop callback per batch.

    The least any batching loader built on asyncio futures does: its futures
    are pending when handed out, so an awaiting task is suspended and woken
    (a callback scheduled by ``set_result``, a task step) where the ``floor``'s
    done futures let it run on. No batch function, no cache, no correlation;
    futures made by the C type directly, kept in two lists (nothing else the
    garbage collector tracks) and answered by ``map`` in C.
    """

    def __init__(self, max_batch_size: int | None) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._call_soon = loop.call_soon
        self._max = max_batch_size or 0
        self._keys: list[Any] | None = None  # the pending batch's keys (values)
        self._futures: list[asyncio.Future[Any]] = []  # and its futures

    def load(self, key: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = FUTURE(loop=self._loop)
        keys = self._keys
        if keys is None or (self._max and len(keys) >= self._max):
            keys = self._keys = []
            self._futures = []
            self._call_soon(self._answer, keys, self._futures)
        keys.append(key)
        self._futures.append(future)
        return future

    def load_many(self, keys: Iterable[int]) -> asyncio.Future[list[int]]:
        return self.load(list(keys))  # one future for the list, answered with the batch

    def _answer(self, keys: list[Any], futures: list[asyncio.Future[Any]]) -> None:
        if self._keys is keys:
            self._keys = None
        deque(map(FUTURE.set_result, futures, keys), 0)


def make_batching_floor(max_batch_size: int | None) -> Made:
    return Made(_BatchingFloor(max_batch_size))


def make_gqlbatch(max_batch_size: int | None) -> Made:
    from gqlbatch import KeyedLoader

    sizes: list[int] = []

    async def fetch(keys: list[int]) -> dict[int, int]:
        sizes.append(len(keys))
        return dict(zip(keys, keys, strict=True))

    return Made(KeyedLoader(fetch, max_batch_size=max_batch_size), sizes)


def _make_peer(loader_class: Callable[..., Loader], max_batch_size: int | None) -> Made:
    """A peer's loader (``loader_class(fetch, max_batch_size=...)``) on a list-returning fetch."""
    sizes: list[int] = []

    async def fetch(keys: list[int]) -> list[int]:
        sizes.append(len(keys))
        return list(keys)

    return Made(loader_class(fetch, max_batch_size=max_batch_size), sizes)


def make_aiodataloader(max_batch_size: int | None) -> Made:
    from aiodataloader import DataLoader

    return _make_peer(DataLoader, max_batch_size)


def make_strawberry(max_batch_size: int | None) -> Made:
    from strawberry.dataloader import DataLoader

    return _make_peer(DataLoader, max_batch_size)


@dataclass(frozen=True)
class Impl:
    name: str
    package: str | None  # distribution whose version is reported, None for a reference
    make: Callable[[int | None], Made]


BATCHING_FLOOR = "batching floor"

IMPLS = (
    Impl("floor", None, make_floor),
    Impl(BATCHING_FLOOR, None, make_batching_floor),
    Impl("gqlbatch", "gqlbatch", make_gqlbatch),
    Impl("aiodataloader", "aiodataloader", make_aiodataloader),
    Impl("strawberry", "strawberry-graphql", make_strawberry),
)


# -- measuring -------------------------------------------------------------------------


class Meter:
    """Wall time of the timed part of a run, and the garbage collections inside it.

    With ``marks`` on (the callgrind child), the timed part is also bracketed by
    two ``os.getppid()`` calls, at which callgrind dumps its counters.
    """

    def __init__(self, marks: bool = False) -> None:
        self.elapsed = 0.0
        self.gc = GcTimer()
        """The collections inside the timed part (counted while it is a ``gc.callbacks`` entry)."""
        self.marks = 0
        """``getppid`` marks made so far (callgrind's dump files are numbered by them)."""
        self._marking = marks
        self._started = 0.0

    def start(self) -> None:
        gc.collect()  # garbage of earlier runs is not this run's cost
        self.gc.reset()
        self.gc.active = True
        if self._marking:
            self.marks += 1
            os.getppid()
        self._started = time.perf_counter()

    def stop(self) -> None:
        self.elapsed = time.perf_counter() - self._started
        if self._marking:
            self.marks += 1
            os.getppid()
        self.gc.active = False


def check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(f"wrong results: {what}")


# -- workloads -------------------------------------------------------------------------
# Each returns the number of keys loaded in its timed part and the batch sizes
# per level (one list per loader).


async def _one_by_one(
    impl: Impl, keys: list[int], meter: Meter, what: str, max_batch_size: int | None = None
) -> tuple[int, list[list[int]]]:
    """Load every key in one tick, then await each future in turn."""
    made = impl.make(max_batch_size)
    load = made.loader.load
    meter.start()
    futures = [load(key) for key in keys]
    for future in futures:
        await future
    meter.stop()
    check([await f for f in futures] == keys, f"{impl.name} {what}")
    return len(keys), [made.batches]


async def distinct(impl: Impl, n: int, meter: Meter) -> tuple[int, list[list[int]]]:
    return await _one_by_one(impl, list(range(n)), meter, "distinct")


async def repeated(impl: Impl, n: int, meter: Meter) -> tuple[int, list[list[int]]]:
    distinct_keys = max(1, n // 5)
    keys = [i % distinct_keys for i in range(n)]
    return await _one_by_one(impl, keys, meter, "repeated keys")


async def max_batch_100(impl: Impl, n: int, meter: Meter) -> tuple[int, list[list[int]]]:
    done = await _one_by_one(impl, list(range(n)), meter, "max_batch_size", max_batch_size=100)
    check(all(size <= 100 for size in done[1][0]), f"{impl.name} batch over 100")
    return done


async def gathered(impl: Impl, n: int, meter: Meter) -> tuple[int, list[list[int]]]:
    made = impl.make(None)
    load = made.loader.load
    keys = list(range(n))
    meter.start()
    values = await asyncio.gather(*[load(key) for key in keys])
    meter.stop()
    check(list(values) == keys, f"{impl.name} gather")
    return n, [made.batches]


async def task_per_key(impl: Impl, n: int, meter: Meter) -> tuple[int, list[list[int]]]:
    made = impl.make(None)
    load = made.loader.load
    keys = list(range(n))

    async def resolve(key: int) -> Any:  # a resolver reading one key
        return await load(key)

    meter.start()
    values = await asyncio.gather(*[resolve(key) for key in keys])
    meter.stop()
    check(list(values) == keys, f"{impl.name} task per key")
    return n, [made.batches]


async def cache_hits(impl: Impl, n: int, meter: Meter) -> tuple[int, list[list[int]]]:
    made = impl.make(None)
    load = made.loader.load
    keys = list(range(n))
    for future in [load(key) for key in keys]:  # fill the cache (untimed)
        await future
    before = len(made.batches)
    meter.start()
    futures = [load(key) for key in keys]
    for future in futures:
        await future
    meter.stop()
    check([await f for f in futures] == keys, f"{impl.name} cache hits")
    check(impl.package is None or len(made.batches) == before, f"{impl.name} fetched again")
    return n, [made.batches[before:]]


async def _fan_out(impl: Impl, n: int, meter: Meter, awaits: bool) -> tuple[int, list[list[int]]]:
    parents = impl.make(None)
    children = impl.make(None)
    n_parents = max(1, n // FANOUT)
    child_keys = [list(range(p * FANOUT, (p + 1) * FANOUT)) for p in range(n_parents)]
    sleep = asyncio.sleep

    async def resolve(parent: int) -> tuple[Any, list[Any]]:
        pauses = parent % 4 if awaits else 0
        for _ in range(pauses):
            await sleep(0)  # an async permission check, say
        value = await parents.loader.load(parent)
        for _ in range(pauses):
            await sleep(0)
        return value, await children.loader.load_many(child_keys[parent])

    resolvers = [resolve(p) for p in range(n_parents)]
    meter.start()
    results = await asyncio.gather(*resolvers)
    meter.stop()
    expected = [(p, child_keys[p]) for p in range(n_parents)]
    check(results == expected, f"{impl.name} fan-out")
    return n_parents * (1 + FANOUT), [parents.batches, children.batches]


async def fan_out(impl: Impl, n: int, meter: Meter) -> tuple[int, list[list[int]]]:
    return await _fan_out(impl, n, meter, awaits=False)


async def fan_out_awaits(impl: Impl, n: int, meter: Meter) -> tuple[int, list[list[int]]]:
    return await _fan_out(impl, n, meter, awaits=True)


CACHE_HITS = "cache hits"
"""The workload the floors cannot serve as loaders do: they have no cache, so they load again."""

Workload = Callable[[Impl, int, Meter], Awaitable[tuple[int, list[list[int]]]]]

WORKLOADS: tuple[tuple[str, Workload], ...] = (
    ("distinct keys, one tick", distinct),
    ("max_batch_size=100", max_batch_100),
    ("asyncio.gather, one tick", gathered),
    ("a task per key (resolver)", task_per_key),
    (CACHE_HITS, cache_hits),
    ("fan-out 1 → 100 (load_many)", fan_out),
    ("fan-out, 0-3 awaits first", fan_out_awaits),
    ("repeated keys, one tick", repeated),
)

GOALS: dict[str, float] = {
    "distinct keys, one tick": 0.8,
    "max_batch_size=100": 0.8,
    "asyncio.gather, one tick": 0.8,
    "a task per key (resolver)": 0.8,
    CACHE_HITS: 1.0,
    "fan-out 1 → 100 (load_many)": 0.5,
    "fan-out, 0-3 awaits first": 0.5,
}
"""Issue 11's goal per workload: gqlbatch / aiodataloader, in instructions and in time
(a workload without one is measured for the record)."""


@dataclass
class Sample:
    seconds: float
    gc_seconds: float
    collections: tuple[int, int, int]
    keys: int
    batches: tuple[int, ...]  # per level


async def run_rounds(n: int, rounds: int, progress: bool) -> dict[tuple[str, str], list[Sample]]:
    samples: dict[tuple[str, str], list[Sample]] = {}
    meter = Meter()
    with meter.gc:
        for r in range(WARMUP_ROUNDS + rounds):
            shift = r % len(IMPLS)
            order = IMPLS[shift:] + IMPLS[:shift]
            for title, workload in WORKLOADS:
                for impl in order:
                    keys, batches = await workload(impl, n, meter)
                    if r < WARMUP_ROUNDS:
                        continue
                    gen0, gen1, gen2 = meter.gc.collections
                    samples.setdefault((title, impl.name), []).append(
                        Sample(
                            meter.elapsed,
                            meter.gc.seconds,
                            (gen0, gen1, gen2),
                            keys,
                            tuple(len(level) for level in batches),
                        )
                    )
            if progress:
                label = "warm-up" if r < WARMUP_ROUNDS else f"round {r - WARMUP_ROUNDS + 1}"
                print(f"{label}/{rounds} done", file=sys.stderr, flush=True)
    return samples


# -- instructions (callgrind) ------------------------------------------------------------


async def _marked_runs(n: int) -> list[dict[str, Any]]:
    """The callgrind child's work: each workload and implementation, warmed up, then marked."""
    meter = Meter(marks=True)
    runs = []
    for title, workload in WORKLOADS:
        for impl in IMPLS:
            await workload(impl, n, Meter())  # warm-up, unmarked
            keys, _ = await workload(impl, n, meter)
            run = meter.marks  # the dump of the measured part
            # The run's garbage: what its return freed, then what only a collection
            # frees (cycles), less a collection with nothing to free (the heap walk).
            meter.marks += 3
            os.getppid()
            gc.collect()
            os.getppid()
            gc.collect()
            os.getppid()
            dumps = {"run": run, "returned": run + 1, "collected": run + 2, "walk": run + 3}
            runs.append({"workload": title, "implementation": impl.name, "keys": keys, **dumps})
    return runs


def _instructions_child(n: int, out: Path) -> int:
    """Run under callgrind: write which dump holds each measured part."""
    with asyncio.Runner(debug=False) as runner:
        runs = runner.run(_marked_runs(n))
    out.write_text(json.dumps(runs), encoding="utf-8")
    return 0


def count_instructions(n: int) -> dict[tuple[str, str], float] | str:
    """Instructions per key of every workload and implementation, or why there are none."""
    counted = callgrind_child("benchmarks.loader_overhead", "--keys", str(n))
    if isinstance(counted, str):
        return counted
    runs, totals = counted
    found: dict[tuple[str, str], float] = {}
    for run in runs:
        part = {name: totals[run[name]] for name in DUMPS}
        total = part["run"] + part["returned"] + part["collected"] - part["walk"]
        found[(run["workload"], run["implementation"])] = total / run["keys"]
    return found


DUMPS = ("run", "returned", "collected", "walk")


# -- reporting -------------------------------------------------------------------------


def header(n: int, rounds: int, loop_name: str, instruction_keys: int | None) -> list[str]:
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    env_debug = os.environ.get("PYTHONASYNCIODEBUG", "")
    debug_note = f"forced off (PYTHONASYNCIODEBUG={env_debug!r})" if env_debug else "off"
    loop_version = f" {version('uvloop')}" if loop_name == "uvloop" else ""
    counted = (
        f"instructions: callgrind, {instruction_keys:,} keys per workload"
        if instruction_keys
        else "instructions: not counted"
    )
    try:
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    return [
        "## loader_overhead: per-key cost of `load`",
        "",
        f"- machine: {cpu_model()}, {cores} logical CPUs ({usable} usable), "
        f"{platform.system()} {platform.release()}, load average at the end {load}",
        f"- Python {platform.python_version()} ({platform.python_implementation()}), "
        f"event loop: {loop_name}{loop_version}, asyncio debug {debug_note}",
        f"- gqlbatch {version('gqlbatch')} (git {git_revision()}), "
        f"aiodataloader {version('aiodataloader')}, "
        f"strawberry-graphql {version('strawberry-graphql')}",
        f"- time: {n:,} keys per workload (fan-out: {max(1, n // FANOUT):,} parents x {FANOUT}); "
        f"{rounds} interleaved rounds after {WARMUP_ROUNDS} warm-up, order rotated per round; "
        f"{counted}",
        "- µs/key: median (min-max) over rounds; GC: time in collections per key and "
        "collections per run (generations 0/1/2), medians; time ratios: medians of per-round "
        "ratios; batches: per level (parents / children), the floors have none",
        "",
    ]


def _median_or_none(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(
    samples: dict[tuple[str, str], list[Sample]],
    instructions: dict[tuple[str, str], float] | None = None,
) -> list[dict[str, Any]]:
    """One row per workload and implementation: medians, spread, GC, instructions, ratios."""
    rows = []
    counted = instructions or {}
    for title, _ in WORKLOADS:
        per_key = {
            impl.name: [s.seconds / s.keys * 1e6 for s in samples[(title, impl.name)]]
            for impl in IMPLS
        }
        base = counted.get((title, BATCHING_FLOOR))
        for impl in IMPLS:
            runs = samples[(title, impl.name)]
            times = per_key[impl.name]
            ours = counted.get((title, impl.name))
            row: dict[str, Any] = {
                "workload": title,
                "implementation": impl.name,
                "batches": None if impl.package is None else sorted({s.batches for s in runs}),
                "us_per_key": statistics.median(times),
                "us_per_key_min": min(times),
                "us_per_key_max": max(times),
                "gc_us_per_key": statistics.median(s.gc_seconds / s.keys * 1e6 for s in runs),
                "gc_runs": [statistics.median(s.collections[g] for s in runs) for g in range(3)],
                "vs_floor": _median_or_none(
                    [t / f for t, f in zip(times, per_key["floor"], strict=True)]
                ),
                "instructions_per_key": ours,
                "instructions_above_batching_floor": (
                    None if ours is None or base is None else ours - base
                ),
                "us_above_batching_floor": _median_or_none(
                    [t - b for t, b in zip(times, per_key[BATCHING_FLOOR], strict=True)]
                ),
            }
            for peer in PEERS:
                row[f"vs_{peer}"] = _median_or_none(
                    [t / p for t, p in zip(times, per_key[peer], strict=True)]
                )
                theirs = counted.get((title, peer))
                row[f"instructions_vs_{peer}"] = (
                    ours / theirs if ours is not None and theirs else None
                )
            rows.append(row)
    return rows


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _above(value: float | None, digits: int) -> str:
    """A cost above the batching floor, signed (the floor itself is at 0)."""
    return "—" if value is None else f"{value:+,.{digits}f}"


def table(rows: list[dict[str, Any]]) -> list[str]:
    """The markdown table of :func:`summarize`'s rows."""
    lines = [
        "| workload | implementation | batches | instructions/key | above batching floor "
        "| µs/key | min-max | above batching floor | GC µs/key | GC runs 0/1/2 "
        "| instructions vs aiodataloader | time vs aiodataloader "
        "| instructions vs strawberry | time vs strawberry | time vs floor |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        impl = row["implementation"]
        batches = (
            "—"
            if row["batches"] is None
            else ", ".join(" / ".join(f"{b:,}" for b in levels) for levels in row["batches"])
        )
        name = f"**{impl}**" if impl == "gqlbatch" else impl
        collections = "/".join(f"{n:g}" for n in row["gc_runs"])
        instructions = row.get("instructions_per_key")
        lines.append(
            f"| {row['workload']} | {name} | {batches} "
            f"| {'—' if instructions is None else f'{instructions:,.0f}'} "
            f"| {_above(row.get('instructions_above_batching_floor'), 0)} "
            f"| {row['us_per_key']:.3f} "
            f"| {row['us_per_key_min']:.3f}-{row['us_per_key_max']:.3f} "
            f"| {_above(row.get('us_above_batching_floor'), 3)} "
            f"| {row['gc_us_per_key']:.3f} | {collections} "
            f"| {_ratio(row.get('instructions_vs_aiodataloader'))} "
            f"| {_ratio(row.get('vs_aiodataloader'))} "
            f"| {_ratio(row.get('instructions_vs_strawberry'))} "
            f"| {_ratio(row.get('vs_strawberry'))} | {_ratio(row['vs_floor'])} |"
        )
    return lines


def goals(rows: list[dict[str, Any]]) -> list[str]:
    """gqlbatch / aiodataloader per workload against issue 11's goals, met or not.

    Beside it, the batching floor / aiodataloader: the ratio a batching loader
    costing nothing above the batching floor would reach.
    """
    lines = [
        "| workload | goal (gqlbatch / aiodataloader) | instructions | time | met "
        "| batching floor / aiodataloader: instructions | time |",
        "|---|--:|--:|--:|---|--:|--:|",
    ]
    for title, _ in WORKLOADS:
        row = next(r for r in rows if r["workload"] == title and r["implementation"] == "gqlbatch")
        floor = next(
            r for r in rows if r["workload"] == title and r["implementation"] == BATCHING_FLOOR
        )
        goal = GOALS.get(title)
        measured = [row.get("instructions_vs_aiodataloader"), row.get("vs_aiodataloader")]
        known = [m for m in measured if m is not None]
        met = "yes" if known and goal is not None and all(m <= goal for m in known) else "no"
        if goal is None:
            met = "— (not a goal)"
        elif row.get("instructions_vs_aiodataloader") is None:
            met += " (time only)"
        reference = (
            "| — (no cache) | — |"
            if title == CACHE_HITS
            else f"| {_ratio(floor.get('instructions_vs_aiodataloader'))} "
            f"| {_ratio(floor.get('vs_aiodataloader'))} |"
        )
        lines.append(
            f"| {title} | {'—' if goal is None else f'≤ {goal:.1f}'} | {_ratio(measured[0])} "
            f"| {_ratio(measured[1])} | {met} " + reference
        )
    return lines


COLORS = {
    "floor": "#9e9e9e",
    BATCHING_FLOOR: "#5f5f5f",
    "gqlbatch": "#1f77b4",
    "aiodataloader": "#ff7f0e",
    "strawberry": "#d62728",
}


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    """Instructions per key (left, when counted) and time per key (right)."""
    from benchmarks._env import pyplot, save

    plt = pyplot()
    workloads = [title for title, _ in WORKLOADS]
    names = [impl.name for impl in IMPLS]
    counted = all(r.get("instructions_per_key") is not None for r in rows)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 5.6), sharey=True)
    height = 0.8 / len(names)
    measures = (
        ("instructions_per_key", "us_per_key") if counted else ("us_per_key", "gc_us_per_key")
    )
    for i, name in enumerate(names):
        by_workload = {r["workload"]: r for r in rows if r["implementation"] == name}
        ys = [w - 0.4 + height / 2 + i * height for w in range(len(workloads))]
        for axis, measure in zip((left, right), measures, strict=True):
            axis.barh(
                ys,
                [by_workload[w][measure] for w in workloads],
                height=height,
                color=COLORS[name],
                label=name,
            )
    left.set_yticks(range(len(workloads)), workloads)
    left.invert_yaxis()
    if counted:
        left.set_xlabel("instructions per key (callgrind; lower is better)")
        right.set_xlabel("µs per key (median; lower is better)")
    else:
        left.set_xlabel("µs per key (median; lower is better)")
        right.set_xlabel("of which in the garbage collector, µs per key")
    left.legend(loc="lower right")
    figure.suptitle("Loader overhead per key")
    save(figure, path)


def render(data: dict[str, Any], img_dir: Path, img_link: str) -> str:
    """The report page's section: method, chart, goals, table."""
    meta = data["meta"]
    chart(data["rows"], img_dir / "bench-loader-overhead.png")
    rows = data["rows"]
    instruction_keys = meta.get("instruction_keys")
    counted = (
        f"Instructions: `valgrind --tool=callgrind`, {instruction_keys:,} keys per workload, "
        "each run warmed up once, then counted alone between markers, its garbage included (a "
        "collection after it, less a collection with nothing to free: a loader that leaves "
        "reference cycles pays for them); the counts are the same on every run (fixed order, "
        "`PYTHONHASHSEED=0`), whatever the machine's load."
        if instruction_keys
        else f"Instructions were not counted in this run ({meta.get('instructions_note')})."
    )
    lines = [
        "## Loader overhead per key",
        "",
        "`benchmarks/loader_overhead.py`: gqlbatch's `KeyedLoader` beside aiodataloader, "
        "Strawberry's `DataLoader` and two references, in the shapes resolvers use a loader "
        "(futures awaited one by one, `asyncio.gather`, a task per key, cache hits, fan-out), "
        "with trivial batch functions, so that only the loaders' own cost is measured. Its "
        "module docstring describes each workload.",
        "",
        "The references: the asyncio *floor* (create a future, set it, await it: no batching) "
        "and the *batching floor* (a pending future per key, all answered by one loop callback "
        "per batch: the least a batching loader built on asyncio futures can do; a task "
        "awaiting such a future is suspended and woken again, which the floor's done futures "
        'spare it). "Above batching floor" is each loader\'s own cost per key; the goals '
        "table shows the ratio to aiodataloader that a loader costing nothing above the "
        "batching floor would reach.",
        "",
        counted,
        "",
        f"Time: {meta['keys']:,} keys per workload; {meta['rounds']} interleaved rounds after "
        f"{meta['warmup']} warm-up, the order of the implementations rotated each round; "
        f"event loop: {meta['loop']}. µs/key: median (min-max) over rounds. GC: time spent in "
        "collections during the run, per key, and collections per run (generations 0/1/2). "
        "Time ratios are medians of per-round ratios (paired runs); batches: per level "
        "(parents / children). " + meta.get("conditions", ""),
        "",
        f"![Loader overhead per key]({img_link}bench-loader-overhead.png)",
        "",
        "Issue 11's goals, gqlbatch / aiodataloader (met: every measured ratio at or under "
        "the goal):",
        "",
        *goals(rows),
        "",
        *table(rows),
        "",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.loader_overhead",
        description="Per-key cost of load: gqlbatch, aiodataloader, Strawberry, the floors.",
    )
    parser.add_argument("--quick", action="store_true", help="few keys and rounds (smoke test)")
    parser.add_argument("--keys", type=int, help=f"keys per workload (default {FULL_KEYS:,})")
    parser.add_argument("--rounds", type=int, help=f"timed rounds (default {FULL_ROUNDS})")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--out", type=Path, help="also write the markdown report to this file")
    parser.add_argument("--progress", action="store_true", help="report rounds on stderr")
    parser.add_argument("--json", type=Path, help="also write the results as JSON (for the page)")
    parser.add_argument(
        "--instruction-keys",
        type=int,
        help=f"keys per workload under callgrind (default {INSTRUCTION_KEYS:,}; "
        f"--quick {QUICK_INSTRUCTION_KEYS:,})",
    )
    parser.add_argument(
        "--no-instructions", action="store_true", help="time only: do not run callgrind"
    )
    parser.add_argument("--instructions-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n = args.keys or (QUICK_KEYS if args.quick else FULL_KEYS)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else FULL_ROUNDS)
    if n < FANOUT:
        parser.error(f"--keys must be at least {FANOUT} (one parent's fan-out), got {n}")
    if rounds < 1:
        parser.error(f"--rounds must be at least 1, got {rounds}")
    if args.instructions_child is not None:
        return _instructions_child(n, args.instructions_child)
    default_keys = QUICK_INSTRUCTION_KEYS if args.quick else INSTRUCTION_KEYS
    instruction_keys = None if args.no_instructions else (args.instruction_keys or default_keys)
    if instruction_keys is not None and instruction_keys < FANOUT:
        parser.error(f"--instruction-keys must be at least {FANOUT}, got {instruction_keys}")

    started = time.perf_counter()
    instructions: dict[tuple[str, str], float] | None = None
    note = "--no-instructions"
    if instruction_keys is not None:  # first, alone: the timed rounds run after it
        if args.progress:
            print(f"callgrind: {instruction_keys:,} keys ...", file=sys.stderr, flush=True)
        counted = count_instructions(instruction_keys)
        if isinstance(counted, str):
            note, instruction_keys = counted, None
            print(f"instructions not counted: {counted}", file=sys.stderr)
        else:
            instructions = counted
    loop_factory = None
    if args.loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(debug=False, loop_factory=loop_factory) as runner:
        samples = runner.run(run_rounds(n, rounds, args.progress))
    rows = summarize(samples, instructions)
    lines = header(n, rounds, args.loop, instruction_keys) + goals(rows) + [""] + table(rows)
    lines += ["", f"Total run time {time.perf_counter() - started:.0f} s.", ""]
    report = "\n".join(lines)
    print(report, flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report, encoding="utf-8")
    if args.json is not None:
        try:
            load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
        except OSError:
            load = "unknown"
        meta = {
            "keys": n,
            "rounds": rounds,
            "warmup": WARMUP_ROUNDS,
            "loop": args.loop,
            "instruction_keys": instruction_keys,
            "instructions_note": note,
            "conditions": f"Load average when the timed rounds ended: {load}.",
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
