"""Shared by the randomized suites: deterministic settings and a checked, virtual-time run.

``run_checked`` runs one example on a fresh :class:`~tests._loop.VirtualClockLoop`
in debug mode, bounded by a (virtual) ``asyncio.timeout`` so a hang fails fast
instead of stalling the suite, and fails if the example leaves a task running
or the loop reports anything (an exception never retrieved, a task destroyed
while pending, a callback that raised), before or after the loop closes.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from typing import TypeVar

from hypothesis import HealthCheck, settings

from tests._loop import VirtualClockLoop

T = TypeVar("T")

HANG_AFTER_S = 600.0
"""Virtual seconds an example may take; far beyond any wait the examples use."""


def bounded(max_examples: int) -> settings:
    """Hypothesis settings for CI: derandomized, no example database, no deadline."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def run_checked(main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main()`` on a virtual clock; fail on a hang, a leftover task or a loop report."""

    async def guarded() -> T:
        try:
            async with asyncio.timeout(HANG_AFTER_S):
                result = await main()
        except TimeoutError:
            raise AssertionError(f"the example hung for {HANG_AFTER_S} virtual seconds") from None
        for _ in range(3):
            await asyncio.sleep(0)
        leftover = asyncio.all_tasks() - {asyncio.current_task()}
        assert not leftover, f"tasks still running after the example: {leftover}"
        return result

    # Objects that exist before the example are frozen, so that the collections which
    # flush out "never retrieved" reports only walk what the example created.
    gc.freeze()
    try:
        with asyncio.Runner(loop_factory=VirtualClockLoop, debug=True) as runner:
            loop = runner.get_loop()
            assert isinstance(loop, VirtualClockLoop)
            result = runner.run(guarded())
            gc.collect()
            assert loop.reports == [], loop.reports
        gc.collect()
        assert loop.reports == [], loop.reports
    finally:
        gc.unfreeze()
    return result
