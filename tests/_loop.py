"""Test event loops: a virtual clock, and a recorder of everything the loop reports.

Tests about waiting (max_wait_ms, retry backoff, batch_timeout_ms) run on
``VirtualClockLoop``: when nothing is ready and only timers are pending, the
loop jumps its clock to the next timer instead of sleeping, so such tests are
instant and deterministic.
"""

from __future__ import annotations

import asyncio
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


def run_virtual(main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main()`` on a fresh VirtualClockLoop in debug mode; fail on any loop report."""
    with asyncio.Runner(loop_factory=VirtualClockLoop, debug=True) as runner:
        result = runner.run(main())  # type: ignore[arg-type]
        loop = runner.get_loop()
        assert isinstance(loop, VirtualClockLoop)
        assert loop.reports == [], loop.reports
    return result
