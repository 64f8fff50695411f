"""Test event loops: a virtual clock, and a recorder of everything the loop reports.

Tests about waiting (max_wait_ms, retry backoff, batch_timeout_ms) run on
``VirtualClockLoop``: when nothing is ready and only timers are pending, the
loop jumps its clock to the next timer instead of sleeping, so such tests are
instant and deterministic.
"""

from __future__ import annotations

import asyncio
import gc
import selectors
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualClockLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        if events or timeout == 0:
            return events
        if timeout is None:  # only real I/O can wake the loop
            return super().select(None)
        assert self.loop is not None
        self.loop.now += timeout
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """A selector loop whose clock only moves when the loop would otherwise sleep."""

    def __init__(self) -> None:
        selector = _JumpingSelector()
        super().__init__(selector)
        selector.loop = self
        self.now = 0.0
        self.reports: list[dict[str, Any]] = []
        self.set_exception_handler(lambda loop, context: self.reports.append(context))

    def time(self) -> float:
        return self.now


async def settle(iterations: int) -> None:
    """Run loop iterations until nothing is ready to run without the clock moving.

    Fails if the loop is still busy after ``iterations`` iterations at one instant.
    """
    ready = asyncio.get_running_loop()._ready  # type: ignore[attr-defined]  # CPython's queue of callbacks
    for _ in range(iterations):
        await asyncio.sleep(0)
        if not ready:
            await asyncio.sleep(0)
            if not ready:
                return
    raise AssertionError(f"still busy after {iterations} iterations at one instant")


HANG_AFTER_S = 600.0
"""Virtual seconds a run may take; far beyond any wait the tests use."""


def run_virtual(main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main()`` on a fresh :class:`VirtualClockLoop` in debug mode, checked.

    Bounded by a (virtual) ``asyncio.timeout`` so a hang fails fast instead of
    stalling the suite; fails if ``main`` leaves a task running or the loop
    reports anything (an exception never retrieved, a task destroyed while
    pending, a callback that raised), before or after the loop closes.
    """

    async def guarded() -> T:
        try:
            async with asyncio.timeout(HANG_AFTER_S):
                result = await main()
        except TimeoutError:
            raise AssertionError(f"the run hung for {HANG_AFTER_S} virtual seconds") from None
        for _ in range(3):
            await asyncio.sleep(0)
        leftover = asyncio.all_tasks() - {asyncio.current_task()}
        assert not leftover, f"tasks still running after the run: {leftover}"
        return result

    # Objects that exist before the run are frozen, so that the collections which
    # flush out "never retrieved" reports only walk what the run created.
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
