"""Run every benchmark module's ``main``: ``python -m benchmarks [--quick] [--out-dir DIR] [NAME]``.

``--report PAGE`` (``make bench`` passes ``docs/benchmarks.md``) also writes
the generated page: each module's results as JSON, then its ``render`` section
and charts (``PAGE``'s folder ``/img/bench-*.png``), under a header with the
machine and versions. The page is written only when every benchmark succeeded.

Modules are found by name: those listed in ``ORDER`` first (the ones present),
then any other ``benchmarks/*.py`` whose name does not start with ``_``, in
alphabetical order. A module that fails to import or to run is reported and the
others still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
import traceback
from pathlib import Path

ORDER = ("loader_overhead", "graphql_e2e", "example_api_compare", "server_throughput")
"""Benchmarks that run first, in this order, when present."""

HERE = Path(__file__).resolve().parent


def discover() -> list[str]:
    """Names of the benchmark modules in this package, in running order."""
    found = {p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_")}
    listed = [name for name in ORDER if name in found]
    return listed + sorted(found.difference(listed))


def run_one(name: str, argv: list[str]) -> bool:
    """Import ``benchmarks.<name>`` and call its ``main(argv)``; True when it succeeded."""
    print(f"\n<!-- benchmarks.{name} {' '.join(argv)} -->", flush=True)
    started = time.perf_counter()
    try:
        module = importlib.import_module(f"{__package__ or 'benchmarks'}.{name}")
        entry = getattr(module, "main", None)
        if not callable(entry):
            print(f"benchmarks.{name} has no main(argv): skipped", file=sys.stderr)
            return False
        status = entry(argv)
    except SystemExit as exc:  # a main that exits instead of returning
        status = exc.code
    except Exception:
        traceback.print_exc()
        print(f"benchmarks.{name} failed", file=sys.stderr)
        return False
    ok = status in (None, 0)
    if not ok:
        print(f"benchmarks.{name} exited with status {status!r}", file=sys.stderr)
    print(f"<!-- benchmarks.{name}: {time.perf_counter() - started:.1f} s -->", flush=True)
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", help="benchmark modules to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="short runs (smoke test)")
    parser.add_argument("--out-dir", type=Path, help="also write each report to DIR/<name>.md")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument(
        "--report", type=Path, help="write the generated page here (charts in its img/ folder)"
    )
    args = parser.parse_args(argv)
    available = discover()
    if args.list:
        print("\n".join(available))
        return 0
    unknown = [name for name in args.names if name not in available]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; available: {available}")
    if args.out_dir is not None:
        args.out_dir.mkdir(parents=True, exist_ok=True)
    names = args.names or available
    machine = None
    if args.report is not None:
        from benchmarks._env import machine as describe

        machine = describe()  # before the run: the load average is the machine's own
    started = time.perf_counter()
    failed = []
    with tempfile.TemporaryDirectory() as results:
        for name in names:
            forwarded = ["--quick"] if args.quick else []
            if args.out_dir is not None:
                forwarded += ["--out", str(args.out_dir / f"{name}.md")]
            if args.report is not None:
                forwarded += ["--json", str(Path(results) / f"{name}.json")]
            if not run_one(name, forwarded):
                failed.append(name)
        if failed:
            print(f"failed: {', '.join(failed)}", file=sys.stderr)
            return 1
        if args.report is not None and machine is not None:
            from benchmarks._report import write_page

            args.report.parent.mkdir(parents=True, exist_ok=True)
            charts = write_page(
                args.report, names, Path(results), machine, time.perf_counter() - started
            )
            print(f"wrote {args.report} and {', '.join(str(c) for c in charts)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
