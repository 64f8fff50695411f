"""Observers see every batch function call: size, attempt, wait, outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from gqlbatch import (
    BatchedQueue,
    BatchError,
    BatchInfo,
    KeyedLoader,
    RetryPolicy,
    add_observer,
    remove_observer,
)
from tests._loop import run_virtual


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def batch_started(self, info: BatchInfo) -> int:
        self.events.append(("start", info))
        return len(self.events)

    def batch_finished(
        self, token: Any, info: BatchInfo, error: BaseException | None, failed_keys: int
    ) -> None:
        self.events.append(("end", (token, type(error).__name__ if error else None, failed_keys)))


@pytest.fixture
def log() -> Iterator[Log]:
    observer = Log()
    add_observer(observer)
    try:
        yield observer
    finally:
        remove_observer(observer)


def test_observers_see_each_call_with_its_attempt_wait_and_outcome(log: Log) -> None:
    async def main() -> None:
        calls = 0

        async def fetch(keys: list[int]) -> dict[int, Any]:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise ConnectionError
            return {k: (KeyError(k) if k == 2 else k) for k in keys}

        loader = KeyedLoader(
            fetch,
            name="user",
            max_wait_ms=20,
            error_mode="retry",
            retry=RetryPolicy(base_delay_ms=100, jitter=False, retry_on=(ConnectionError,)),
        )
        await asyncio.gather(loader.load(1), loader.load(2), return_exceptions=True)

    run_virtual(main)
    starts = [info for kind, info in log.events if kind == "start"]
    ends = [detail for kind, detail in log.events if kind == "end"]
    assert [(i.loader, i.kind, i.size, i.attempt) for i in starts] == [
        ("user", "loader", 2, 1),
        ("user", "loader", 2, 2),
    ]
    assert starts[0].waited_ms == pytest.approx(20)
    assert starts[1].waited_ms == pytest.approx(120)
    assert ends == [(1, "ConnectionError", 0), (3, None, 1)]


async def test_a_raising_observer_is_reported_and_changes_nothing(log: Log) -> None:
    class Broken:
        def batch_started(self, info: BatchInfo) -> None:
            raise RuntimeError("observer bug")

        def batch_finished(self, *args: Any) -> None:
            raise RuntimeError("observer bug")

    reports: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, ctx: reports.append(ctx))
    broken = Broken()
    add_observer(broken)
    try:
        queue = BatchedQueue(lambda items: asyncio.sleep(0, items), max_wait_ms=0)
        assert await queue.enqueue(5) == 5
    finally:
        remove_observer(broken)
    assert len(reports) == 1
    assert "observer" in reports[0]["message"]
    assert [kind for kind, _ in log.events] == ["start", "end"]


async def test_an_observer_raising_at_the_end_of_a_call_is_reported_and_changes_nothing(
    log: Log,
) -> None:
    class FailsAtEnd:
        def batch_started(self, info: BatchInfo) -> None:
            return None

        def batch_finished(self, *args: Any) -> None:
            raise RuntimeError("observer bug")

    reports: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, ctx: reports.append(ctx))
    failing = FailsAtEnd()
    add_observer(failing)
    try:
        queue = BatchedQueue(lambda items: asyncio.sleep(0, items), max_wait_ms=0)
        assert await queue.enqueue(5) == 5
    finally:
        remove_observer(failing)
    assert [report["message"] for report in reports] == [f"gqlbatch observer {failing!r} raised"]
    assert isinstance(reports[0]["exception"], RuntimeError)
    assert [kind for kind, _ in log.events] == ["start", "end"]


async def test_observers_hear_a_result_of_the_wrong_shape_as_the_call_s_error(log: Log) -> None:
    async def listing(keys: list[int]) -> list[int]:
        return keys

    loader = KeyedLoader(listing, name="listing")  # type: ignore[arg-type]
    with pytest.raises(BatchError):
        await loader.load(1)
    ends = [detail for kind, detail in log.events if kind == "end"]
    assert ends == [(1, "TypeError", 0)]


async def test_observers_hear_the_end_of_a_cancelled_call(log: Log) -> None:
    started = asyncio.Event()

    async def hang(keys: list[int]) -> dict[int, int]:
        started.set()
        await asyncio.sleep(10)
        return {}

    loader = KeyedLoader(hang)
    future = loader.load(1)
    await started.wait()
    loader.close()
    with pytest.raises(Exception, match="closed"):
        await future
    await asyncio.sleep(0)
    assert log.events[-1][1][1] == "CancelledError"
    assert not isinstance(future.exception(), BatchError)
