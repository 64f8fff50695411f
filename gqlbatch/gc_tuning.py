"""Garbage-collector set-up for a process that serves GraphQL requests: :func:`gc_tuned`.

Standard library only. Enter it once around serving (an ASGI app's lifespan)::

    from gqlbatch.gc_tuning import gc_tuned

    with gc_tuned():
        serve()

Why it pays, measured (``benchmarks/graphql_e2e.py``, ``docs/benchmarks.md``):
CPython's default collector spends 5-15 % of a small request's time in
collections, for two reasons that grow with the requests in flight:

* every full collection walks the whole heap, and about 100,000 of its objects
  are the modules, the GraphQL schema and the ORM mappers, which never become
  garbage. ``gc.freeze()`` after start-up moves them out of the collector's
  sight: full collections walk only what requests made.
* a request allocates thousands of objects that live until its answer is sent.
  With a collection every 700 allocations (the default), the youngest generation
  is collected many times during each request and every live object is promoted
  on, which brings the next full collection sooner. With a threshold of
  :data:`GC_YOUNG_THRESHOLD` most of them are freed by reference counting before
  any collection looks at them.

Cycles are still collected; nothing else changes.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["GC_YOUNG_THRESHOLD", "gc_tuned"]

GC_YOUNG_THRESHOLD = 10_000
"""The default ``young_threshold``: the youngest generation is collected once this many
more container objects were allocated than freed (CPython's default is 700)."""

_users = 0  # callers inside gc_tuned(); the first tunes, the last restores
_saved: tuple[tuple[int, ...], bool] = ((), False)  # thresholds before; unfreeze at the end


@contextmanager
def gc_tuned(young_threshold: int = GC_YOUNG_THRESHOLD) -> Iterator[None]:
    """Tune CPython's garbage collector for serving requests, and restore it afterwards.

    On entry: collect once (start-up's garbage is freed, not frozen), freeze
    every object that survives, and set the youngest generation's threshold to
    ``young_threshold`` (the older generations' thresholds are kept). On exit the
    thresholds are restored and, unless something else had frozen objects
    before, the frozen objects are unfrozen.

    Process-wide and nestable: the first caller to enter tunes the collector,
    the last to leave restores it; a nested call's ``young_threshold`` is
    ignored.

    Args:
        young_threshold: allocations between two collections of the youngest
            generation; an int >= 1. Default :data:`GC_YOUNG_THRESHOLD`.
    """
    if not isinstance(young_threshold, int) or isinstance(young_threshold, bool):
        raise TypeError(
            f"young_threshold must be an int, got {young_threshold!r} "
            f"({type(young_threshold).__name__})"
        )
    if young_threshold < 1:
        raise ValueError(f"young_threshold must be >= 1, got {young_threshold!r}")
    global _users, _saved
    if _users == 0:
        _saved = (gc.get_threshold(), gc.get_freeze_count() == 0)
        gc.collect()
        gc.freeze()
        gc.set_threshold(young_threshold, *_saved[0][1:])
    _users += 1
    try:
        yield
    finally:
        _users -= 1
        if _users == 0:
            thresholds, unfreeze = _saved
            gc.set_threshold(*thresholds)
            if unfreeze:
                gc.unfreeze()
