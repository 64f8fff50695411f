"""Benchmarks of gqlbatch; ``python -m benchmarks`` (or ``make bench``) runs them all.

Every module of this package whose name does not start with ``_`` is a
benchmark. It defines ``main(argv: list[str] | None = None) -> int | None`` and
accepts at least ``--quick`` (a short run, for tests and smoke checks) and
``--out PATH`` (also write its markdown report to PATH). It prints its report,
a markdown table, to stdout, and can run on its own:
``python -m benchmarks.loader_overhead --quick``.

Run benchmarks with asyncio's debug mode off (``PYTHONASYNCIODEBUG`` unset or
empty; any other value, "0" included, turns it on): debug mode adds bookkeeping
to every callback and distorts timings.
"""
