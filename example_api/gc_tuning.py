"""Garbage-collector tuning for serving requests (``EXAMPLE_API_GC_TUNING``).

The app enters :func:`gc_tuned` in its lifespan when ``settings.gc_tuning``
holds; why it pays, measured, is in ``docs/example-api.md``.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["GC_YOUNG_THRESHOLD", "gc_tuned"]

GC_YOUNG_THRESHOLD = 10_000
"""While the app runs, the youngest generation is collected once this many more container
objects were allocated than freed (Python's default is 700)."""

_gc_users = 0  # running apps that asked for gc_tuned(); the first tunes, the last restores
_gc_saved: tuple[tuple[int, ...], bool] = ((), False)  # thresholds before; unfreeze at the end


@contextmanager
def gc_tuned() -> Iterator[None]:
    """Tune CPython's garbage collector for serving requests, and restore it afterwards.

    Two measured costs of the default collector in this server (the four-level
    query, ``docs/benchmarks.md``), which grow with the requests in flight:

    * every full collection walks the whole heap, and about 100,000 of its
      objects are the modules, the GraphQL schema and the ORM mappers, which
      never become garbage. A full collection then takes tens of milliseconds
      and comes every few requests. ``gc.freeze()`` after start-up moves those
      objects out of the collector's sight: full collections walk only what
      requests made.
    * a request allocates thousands of objects that live until its answer is
      sent. With a collection every 700 allocations, the youngest generation is
      collected many times during each request and every live object is promoted
      on, which brings the next full collection sooner. With
      :data:`GC_YOUNG_THRESHOLD` most of them are freed by reference counting
      before any collection looks at them.

    Cycles are still collected; nothing else changes. Process-wide and nestable:
    the first app to enter tunes the collector, the last to leave restores the
    thresholds and, unless something else had frozen objects before, unfreezes.
    """
    global _gc_users, _gc_saved
    if _gc_users == 0:
        _gc_saved = (gc.get_threshold(), gc.get_freeze_count() == 0)
        gc.collect()  # garbage of start-up is freed, not frozen
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *_gc_saved[0][1:])
    _gc_users += 1
    try:
        yield
    finally:
        _gc_users -= 1
        if _gc_users == 0:
            thresholds, unfreeze = _gc_saved
            gc.set_threshold(*thresholds)
            if unfreeze:
                gc.unfreeze()
