"""Per-key cost of ``load``: gqlbatch's KeyedLoader beside aiodataloader, Strawberry and asyncio.

    python -m benchmarks.loader_overhead [--quick] [--keys N] [--rounds R]
                                         [--loop asyncio|uvloop] [--out PATH]

Four implementations run the same workloads in the same process:

* ``floor``: the least asyncio can do per key: create a future, set its
  result, await it (``load_many``: one such future per key, then one for the
  list). No batching, no cache: what any loader costs at the very least.
* ``gqlbatch``: ``KeyedLoader``; its batch function returns a mapping
  ``{key: value}`` (``dict(zip(keys, keys))``).
* ``aiodataloader``: ``aiodataloader.DataLoader``; its batch function returns
  the list of values in key order (``list(keys)``), which costs less than the
  mapping above: a real one would also have to reorder its rows by key.
* ``strawberry``: ``strawberry.dataloader.DataLoader``, batch function as for
  aiodataloader.

Workloads (``N`` keys, 100,000 by default; fan-out width 100):

1. ``distinct``: one coroutine calls ``load`` for N distinct keys in one tick,
   then awaits each future. One batch expected.
2. ``max_batch_size=100``: the same with batches of at most 100 keys.
3. ``cache hits``: every key was loaded before (untimed); load them all again.
4. ``fan-out``: N/100 parent tasks (``asyncio.gather``) each ``load`` their
   parent, then ``load_many`` their 100 children (the peers' ``load_many`` is an
   ``asyncio.gather`` of ``load`` futures). Keys = parents + children.
5. ``fan-out, 0-3 awaits``: as 4, but parent ``i`` awaits ``asyncio.sleep(0)``
   ``i % 4`` times before each of its two loads, as resolvers doing an async
   permission check do. The batches column shows how many batches each loader
   made per level (parents / children); gqlbatch aims at one per level.

Method: each round runs every implementation once per workload, in an order
rotated from round to round; the first round is a discarded warm-up. Each
timed run starts after ``gc.collect()`` with the collector enabled as usual;
``gc.callbacks`` time each collection inside the run. Figures are medians over
the rounds; the ratios are medians of per-round ratios (paired runs), to the
floor and to the faster peer (the peer with the lower median on that
workload). Results are checked after each run (outside the timed part).

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
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from benchmarks._env import cpu_model, git_revision, version

FANOUT = 100
"""Children per parent in the fan-out workloads."""
FULL_KEYS = 100_000
FULL_ROUNDS = 9
QUICK_KEYS = 2_000
QUICK_ROUNDS = 2
WARMUP_ROUNDS = 1
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
    """Create a future, set its result, hand it over: no batching, no cache."""

    def __init__(self) -> None:
        self._create = asyncio.get_running_loop().create_future

    def load(self, key: int) -> asyncio.Future[int]:
        future = self._create()
        future.set_result(key)
        return future

    def load_many(self, keys: Iterable[int]) -> asyncio.Future[list[int]]:
        create = self._create
        values = []
        for key in keys:
            future = create()
            future.set_result(key)
            values.append(future.result())
        outer: asyncio.Future[list[int]] = create()
        outer.set_result(values)
        return outer


def make_floor(max_batch_size: int | None) -> Made:
    return Made(_Floor())


def make_gqlbatch(max_batch_size: int | None) -> Made:
    from gqlbatch import KeyedLoader

    sizes: list[int] = []

    async def fetch(keys: list[int]) -> dict[int, int]:
        sizes.append(len(keys))
        return dict(zip(keys, keys, strict=True))

    return Made(KeyedLoader(fetch, max_batch_size=max_batch_size), sizes)


def make_aiodataloader(max_batch_size: int | None) -> Made:
    from aiodataloader import DataLoader

    sizes: list[int] = []

    async def fetch(keys: list[int]) -> list[int]:
        sizes.append(len(keys))
        return list(keys)

    return Made(DataLoader(fetch, max_batch_size=max_batch_size), sizes)


def make_strawberry(max_batch_size: int | None) -> Made:
    from strawberry.dataloader import DataLoader

    sizes: list[int] = []

    async def fetch(keys: list[int]) -> list[int]:
        sizes.append(len(keys))
        return list(keys)

    return Made(DataLoader(fetch, max_batch_size=max_batch_size), sizes)


@dataclass(frozen=True)
class Impl:
    name: str
    package: str | None  # distribution whose version is reported
    make: Callable[[int | None], Made]


IMPLS = (
    Impl("floor", None, make_floor),
    Impl("gqlbatch", "gqlbatch", make_gqlbatch),
    Impl("aiodataloader", "aiodataloader", make_aiodataloader),
    Impl("strawberry", "strawberry-graphql", make_strawberry),
)


# -- measuring -------------------------------------------------------------------------


class Meter:
    """Wall time of the timed part of a run, and the garbage collections inside it."""

    def __init__(self) -> None:
        self.elapsed = 0.0
        self.gc_time = 0.0
        self.collections = [0, 0, 0]
        self._active = False
        self._gc_started = 0.0
        self._started = 0.0

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if not self._active:
            return
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_time += time.perf_counter() - self._gc_started
            self.collections[info["generation"]] += 1

    def start(self) -> None:
        gc.collect()  # garbage of earlier runs is not this run's cost
        self.gc_time = 0.0
        self.collections = [0, 0, 0]
        self._active = True
        self._started = time.perf_counter()

    def stop(self) -> None:
        self.elapsed = time.perf_counter() - self._started
        self._active = False


def check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(f"wrong results: {what}")


# -- workloads -------------------------------------------------------------------------
# Each returns the number of keys loaded in its timed part and the batch sizes
# per level (one list per loader).


async def distinct(impl: Impl, n: int, meter: Meter) -> tuple[int, list[list[int]]]:
    made = impl.make(None)
    load = made.loader.load
    keys = list(range(n))
    meter.start()
    futures = [load(key) for key in keys]
    for future in futures:
        await future
    meter.stop()
    check([await f for f in futures] == keys, f"{impl.name} distinct")
    return n, [made.batches]


async def max_batch_100(impl: Impl, n: int, meter: Meter) -> tuple[int, list[list[int]]]:
    made = impl.make(100)
    load = made.loader.load
    keys = list(range(n))
    meter.start()
    futures = [load(key) for key in keys]
    for future in futures:
        await future
    meter.stop()
    check([await f for f in futures] == keys, f"{impl.name} max_batch_size")
    check(all(size <= 100 for size in made.batches), f"{impl.name} batch over 100")
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
    check(impl.name == "floor" or len(made.batches) == before, f"{impl.name} fetched again")
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


Workload = Callable[[Impl, int, Meter], Awaitable[tuple[int, list[list[int]]]]]

WORKLOADS: tuple[tuple[str, Workload], ...] = (
    ("distinct keys, one tick", distinct),
    ("max_batch_size=100", max_batch_100),
    ("cache hits", cache_hits),
    ("fan-out 1 → 100 (load_many)", fan_out),
    ("fan-out, 0-3 awaits first", fan_out_awaits),
)


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
    gc.callbacks.append(meter.on_gc)
    try:
        for r in range(WARMUP_ROUNDS + rounds):
            shift = r % len(IMPLS)
            order = IMPLS[shift:] + IMPLS[:shift]
            for title, workload in WORKLOADS:
                for impl in order:
                    keys, batches = await workload(impl, n, meter)
                    if r < WARMUP_ROUNDS:
                        continue
                    samples.setdefault((title, impl.name), []).append(
                        Sample(
                            meter.elapsed,
                            meter.gc_time,
                            (meter.collections[0], meter.collections[1], meter.collections[2]),
                            keys,
                            tuple(len(level) for level in batches),
                        )
                    )
            if progress:
                label = "warm-up" if r < WARMUP_ROUNDS else f"round {r - WARMUP_ROUNDS + 1}"
                print(f"{label}/{rounds} done", file=sys.stderr, flush=True)
    finally:
        gc.callbacks.remove(meter.on_gc)
    return samples


# -- reporting -------------------------------------------------------------------------


def header(n: int, rounds: int, loop_name: str) -> list[str]:
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    env_debug = os.environ.get("PYTHONASYNCIODEBUG", "")
    debug_note = f"forced off (PYTHONASYNCIODEBUG={env_debug!r})" if env_debug else "off"
    loop_version = f" {version('uvloop')}" if loop_name == "uvloop" else ""
    return [
        "## loader_overhead: per-key cost of `load`",
        "",
        f"- machine: {cpu_model()}, {cores} logical CPUs ({usable} usable), "
        f"{platform.system()} {platform.release()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()}), "
        f"event loop: {loop_name}{loop_version}, asyncio debug {debug_note}",
        f"- gqlbatch {version('gqlbatch')} (git {git_revision()}), "
        f"aiodataloader {version('aiodataloader')}, "
        f"strawberry-graphql {version('strawberry-graphql')}",
        f"- {n:,} keys per workload (fan-out: {max(1, n // FANOUT):,} parents x {FANOUT}); "
        f"{rounds} interleaved rounds after {WARMUP_ROUNDS} warm-up, order rotated per round",
        "- µs/key: median (min-max) over rounds; GC: time in collections per key and "
        "collections per run (generations 0/1/2), medians; ratios: medians of per-round "
        "ratios; batches: per level (parents / children), floor has none",
        "",
    ]


def _median_or_none(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(samples: dict[tuple[str, str], list[Sample]]) -> list[dict[str, Any]]:
    """One row per workload and implementation: medians, spread, GC and paired ratios."""
    rows = []
    for title, _ in WORKLOADS:
        per_key = {
            impl.name: [s.seconds / s.keys * 1e6 for s in samples[(title, impl.name)]]
            for impl in IMPLS
        }
        faster = min(PEERS, key=lambda name: statistics.median(per_key[name]))
        for impl in IMPLS:
            runs = samples[(title, impl.name)]
            times = per_key[impl.name]
            rows.append(
                {
                    "workload": title,
                    "implementation": impl.name,
                    "batches": None if impl.name == "floor" else sorted({s.batches for s in runs}),
                    "us_per_key": statistics.median(times),
                    "us_per_key_min": min(times),
                    "us_per_key_max": max(times),
                    "gc_us_per_key": statistics.median(s.gc_seconds / s.keys * 1e6 for s in runs),
                    "gc_runs": [
                        statistics.median(s.collections[g] for s in runs) for g in range(3)
                    ],
                    "vs_floor": _median_or_none(
                        [t / f for t, f in zip(times, per_key["floor"], strict=True)]
                    ),
                    "vs_faster_peer": _median_or_none(
                        [t / p for t, p in zip(times, per_key[faster], strict=True)]
                    ),
                    "faster_peer": faster,
                }
            )
    return rows


def table(rows: list[dict[str, Any]]) -> list[str]:
    """The markdown table of :func:`summarize`'s rows."""
    lines = [
        "| workload | implementation | batches | µs/key | min-max | GC µs/key "
        "| GC runs 0/1/2 | vs floor | vs faster peer |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        impl = row["implementation"]
        batches = (
            "—"
            if row["batches"] is None
            else ", ".join(" / ".join(f"{b:,}" for b in levels) for levels in row["batches"])
        )
        name = f"**{impl}**" if impl == "gqlbatch" else impl
        peer_ratio = f"{row['vs_faster_peer']:.2f}" + (
            " (faster peer)" if impl == row["faster_peer"] else ""
        )
        collections = "/".join(f"{n:g}" for n in row["gc_runs"])
        lines.append(
            f"| {row['workload']} | {name} | {batches} | {row['us_per_key']:.3f} "
            f"| {row['us_per_key_min']:.3f}-{row['us_per_key_max']:.3f} "
            f"| {row['gc_us_per_key']:.3f} | {collections} "
            f"| {row['vs_floor']:.2f} | {peer_ratio} |"
        )
    return lines


COLORS = {
    "floor": "#9e9e9e",
    "gqlbatch": "#1f77b4",
    "aiodataloader": "#ff7f0e",
    "strawberry": "#d62728",
}


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    """Per-key time (left) and the GC part of it (right), per workload and implementation."""
    from benchmarks._env import pyplot, save

    plt = pyplot()
    workloads = [title for title, _ in WORKLOADS]
    names = [impl.name for impl in IMPLS]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8), sharey=True)
    height = 0.8 / len(names)
    for i, name in enumerate(names):
        by_workload = {r["workload"]: r for r in rows if r["implementation"] == name}
        ys = [w - 0.4 + height / 2 + i * height for w in range(len(workloads))]
        for axis, measure in ((left, "us_per_key"), (right, "gc_us_per_key")):
            axis.barh(
                ys,
                [by_workload[w][measure] for w in workloads],
                height=height,
                color=COLORS[name],
                label=name,
            )
    left.set_yticks(range(len(workloads)), workloads)
    left.invert_yaxis()
    left.set_xlabel("µs per key (median; lower is better)")
    right.set_xlabel("of which in the garbage collector, µs per key")
    left.legend(loc="upper right")
    figure.suptitle("Loader overhead per key")
    save(figure, path)


def render(data: dict[str, Any], img_dir: Path, img_link: str) -> str:
    """The report page's section: method, chart, table (``img_link``: the chart's URL prefix)."""
    meta = data["meta"]
    chart(data["rows"], img_dir / "bench-loader-overhead.png")
    rows = data["rows"]

    def row(workload: str, impl: str) -> dict[str, Any]:
        return next(r for r in rows if r["workload"] == workload and r["implementation"] == impl)

    lines = [
        "## Loader overhead per key",
        "",
        "`benchmarks/loader_overhead.py`: gqlbatch's `KeyedLoader` beside aiodataloader, "
        "Strawberry's `DataLoader` and the asyncio floor (create a future, set it, await it), "
        "on five workloads with trivial batch functions, so that only the loaders' own cost "
        "is measured. Its module docstring describes each workload.",
        "",
        f"{meta['keys']:,} keys per workload; {meta['rounds']} interleaved rounds after "
        f"{meta['warmup']} warm-up, the order of the implementations rotated each round; "
        f"event loop: {meta['loop']}. µs/key: median (min-max) over rounds. GC: time spent in "
        "collections during the run, per key, and collections per run (generations 0/1/2). "
        "Ratios are medians of per-round ratios (paired runs); batches: per level "
        "(parents / children).",
        "",
        f"![Loader overhead per key]({img_link}bench-loader-overhead.png)",
        "",
        *table(rows),
        "",
        "In this run, per key:",
        "",
    ]
    for title, _ in WORKLOADS:
        ours = row(title, "gqlbatch")
        faster = row(title, ours["faster_peer"])
        lines.append(
            f"- {title}: gqlbatch {ours['us_per_key']:.2f} µs "
            f"({ours['gc_us_per_key']:.2f} in GC), the faster peer ({faster['implementation']}) "
            f"{faster['us_per_key']:.2f} µs ({faster['gc_us_per_key']:.2f} in GC): "
            f"ratio {ours['vs_faster_peer']:.2f}."
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.loader_overhead",
        description="Per-key cost of load: gqlbatch, aiodataloader, Strawberry, asyncio floor.",
    )
    parser.add_argument("--quick", action="store_true", help="few keys and rounds (smoke test)")
    parser.add_argument("--keys", type=int, help=f"keys per workload (default {FULL_KEYS:,})")
    parser.add_argument("--rounds", type=int, help=f"timed rounds (default {FULL_ROUNDS})")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--out", type=Path, help="also write the markdown report to this file")
    parser.add_argument("--progress", action="store_true", help="report rounds on stderr")
    parser.add_argument("--json", type=Path, help="also write the results as JSON (for the page)")
    args = parser.parse_args(argv)
    n = args.keys or (QUICK_KEYS if args.quick else FULL_KEYS)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else FULL_ROUNDS)
    if n < FANOUT:
        parser.error(f"--keys must be at least {FANOUT} (one parent's fan-out), got {n}")
    if rounds < 1:
        parser.error(f"--rounds must be at least 1, got {rounds}")

    loop_factory = None
    if args.loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    started = time.perf_counter()
    with asyncio.Runner(debug=False, loop_factory=loop_factory) as runner:
        samples = runner.run(run_rounds(n, rounds, args.progress))
    rows = summarize(samples)
    lines = header(n, rounds, args.loop) + table(rows)
    lines += ["", f"Total run time {time.perf_counter() - started:.0f} s.", ""]
    report = "\n".join(lines)
    print(report, flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report, encoding="utf-8")
    if args.json is not None:
        meta = {"keys": n, "rounds": rounds, "warmup": WARMUP_ROUNDS, "loop": args.loop}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
