"""BatchedQueue: the spec's API table, options and behaviour notes, minus its flaws."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from gqlbatch import (
    BatchedQueue,
    BatchError,
    LoaderClosedError,
    MissingKeyError,
    QueueClearedError,
    QueueFullError,
)
from tests._harness import each_is
from tests._loop import run_virtual

pytestmark = pytest.mark.usefixtures("loop_reports")


async def double(items: list[int]) -> list[int]:
    return [i * 2 for i in items]


def test_defaults_are_the_specs() -> None:
    options = BatchedQueue(double).options
    assert (options.max_batch_size, options.max_wait_ms, options.max_queue_size) == (10, 1000, 1000)
    assert options.error_mode == "continue"
    assert options.max_concurrency == 1


def test_a_batch_goes_when_max_batch_size_items_wait_or_after_max_wait_ms() -> None:
    async def main() -> list[tuple[float, list[int]]]:
        loop = asyncio.get_running_loop()
        seen: list[tuple[float, list[int]]] = []

        async def record(items: list[int]) -> list[int]:
            seen.append((loop.time(), items))
            return items

        queue = BatchedQueue(record, max_batch_size=3, max_wait_ms=200)
        futures = [queue.enqueue(i) for i in range(4)]
        assert await asyncio.gather(*futures) == [0, 1, 2, 3]
        return seen

    assert run_virtual(main) == [(0.0, [0, 1, 2]), (0.2, [3])]


async def test_items_are_never_deduplicated() -> None:
    seen: list[list[str]] = []

    async def record(items: list[str]) -> list[str]:
        seen.append(items)
        return [i.upper() for i in items]

    queue = BatchedQueue(record, max_wait_ms=0)
    assert list(await asyncio.gather(queue.enqueue("a"), queue.enqueue("a"))) == ["A", "A"]
    assert seen == [["a", "a"]]


async def test_fewer_results_reject_the_orphaned_callers_and_extras_are_ignored() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:2]

    queue = BatchedQueue(short, max_wait_ms=0, name="views")
    results = await asyncio.gather(*(queue.enqueue(i) for i in range(3)), return_exceptions=True)
    assert results[:2] == [0, 1]
    assert isinstance(results[2], MissingKeyError)
    assert str(results[2]).startswith("Processor returned fewer results than expected")

    async def long(items: list[int]) -> list[int]:
        return [*items, 99, 100]

    queue = BatchedQueue(long, max_wait_ms=0)
    assert list(await asyncio.gather(queue.enqueue(1), queue.enqueue(2))) == [1, 2]


async def test_an_exception_at_position_i_fails_item_i_only() -> None:
    boom = ValueError("item 1 is bad")

    async def process(items: list[int]) -> list[Any]:
        return [boom if i == 1 else i for i in items]

    queue = BatchedQueue(process, max_wait_ms=0)
    results = await asyncio.gather(*(queue.enqueue(i) for i in range(3)), return_exceptions=True)
    assert results == [0, boom, 2]


async def test_with_key_of_results_are_correlated_by_key() -> None:
    async def upsert(rows: list[dict[str, Any]]) -> dict[str, int]:
        return {"b": 2, "a": 1}  # any order; "c" is missing

    queue = BatchedQueue(upsert, key_of=lambda row: row["id"], max_wait_ms=0, name="upsert")
    results = await asyncio.gather(
        queue.enqueue({"id": "a"}),
        queue.enqueue({"id": "b"}),
        queue.enqueue({"id": "a", "again": True}),
        queue.enqueue({"id": "c"}),
        return_exceptions=True,
    )
    assert list(results[:3]) == [1, 2, 1]
    assert isinstance(results[3], MissingKeyError)
    assert "queue 'upsert': the processor returned no result for key 'c'" in str(results[3])


async def test_enqueue_raises_queue_full_synchronously_and_changes_nothing() -> None:
    queue = BatchedQueue(double, max_queue_size=2, max_wait_ms=0, name="writes")
    futures = [queue.enqueue(1), queue.enqueue(2)]
    with pytest.raises(QueueFullError, match="queue 'writes' is full: max_queue_size=2"):
        queue.enqueue(3)
    assert queue.size == 2
    assert await asyncio.gather(*futures) == [2, 4]
    assert queue.stats.rejected == 1
    assert await queue.enqueue(3) == 6


async def test_clear_rejects_waiting_and_in_flight_callers_and_drops_running_results() -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    finished = asyncio.Event()

    async def slow(items: list[int]) -> list[int]:
        started.set()
        await release.wait()
        finished.set()
        return items

    queue = BatchedQueue(slow, max_batch_size=1, max_wait_ms=0)
    running = queue.enqueue(1)
    await started.wait()
    waiting = queue.enqueue(2)
    queue.clear()
    for future in (running, waiting):
        with pytest.raises(QueueClearedError, match=r"^Queue cleared$"):
            await future
    assert queue.size == 0
    release.set()
    await asyncio.wait_for(finished.wait(), 1)  # the running call was left to finish
    assert await queue.enqueue(3) == 3  # and the queue works on


async def test_flush_processes_what_is_queued_now() -> None:
    queue = BatchedQueue(double, max_wait_ms=60_000)
    futures = [queue.enqueue(i) for i in range(3)]
    await queue.flush()
    assert [f.result() for f in futures] == [0, 2, 4]


async def test_one_processor_call_at_a_time_by_default() -> None:
    running = peak = 0

    async def process(items: list[int]) -> list[int]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        running -= 1
        return items

    queue = BatchedQueue(process, max_batch_size=2, max_wait_ms=0)
    assert await asyncio.gather(*(queue.enqueue(i) for i in range(6))) == list(range(6))
    assert peak == 1
    assert queue.stats.batches == 3


def test_items_that_arrive_while_every_slot_is_busy_join_the_next_call() -> None:
    """A processor slower than ``max_wait_ms`` gets bigger calls, not a backlog of small ones.

    As the spec's ``tasks`` array does, a batch whose time has come while the
    processor is busy keeps taking items (up to ``max_batch_size``) and goes as
    soon as the slot frees. Cut every ``max_wait_ms`` instead, it would make one
    small call per ``max_wait_ms``: a backlog that grows as long as items keep
    coming (the example API's view counter once held thousands of them, each
    keeping its request's objects alive).
    """

    async def main() -> tuple[list[tuple[float, int]], float]:
        loop = asyncio.get_running_loop()
        calls: list[tuple[float, int]] = []

        async def write(items: list[int]) -> list[int]:
            calls.append((loop.time(), len(items)))
            await asyncio.sleep(0.1)  # one bulk write takes ten times max_wait_ms
            return items

        queue = BatchedQueue(write, max_batch_size=1000, max_wait_ms=10, max_queue_size=None)
        futures = []
        for item in range(200):  # an item every 5 ms for a second
            futures.append(queue.enqueue(item))
            await asyncio.sleep(0.005)
        assert await asyncio.gather(*futures) == list(range(200))
        return calls, loop.time()

    calls, finished = run_virtual(main)
    # The first call at 10 ms; each later one takes what came during the one before.
    when, size = calls[0]
    assert when == pytest.approx(0.01)
    assert size == 2
    assert [when for when, _ in calls[1:]] == pytest.approx([0.11 + 0.1 * n for n in range(10)])
    assert sum(size for _, size in calls) == 200
    assert all(size >= 10 for _, size in calls[1:-1]), calls
    assert finished == pytest.approx(1.11)  # cut every 10 ms: 100 calls, done after 10 s


def test_a_batch_held_for_a_slot_runs_in_its_first_items_context() -> None:
    """Holding a batch does not change whose context its call runs in.

    A call runs in the context of its first item's caller, held or not (tracing
    parents its span there), never in that of the call that freed the slot: the
    queue would otherwise hand one caller's context on from call to call, and
    keep it alive, for as long as the processor stays busy.
    """
    caller: contextvars.ContextVar[str] = contextvars.ContextVar("caller")

    async def main() -> list[tuple[str, list[int]]]:
        seen: list[tuple[str, list[int]]] = []

        async def write(items: list[int]) -> list[int]:
            seen.append((caller.get(), items))
            await asyncio.sleep(0.1)
            return items

        queue = BatchedQueue(write, max_wait_ms=10)

        async def enqueue(name: str, items: list[int], at: float) -> list[int]:
            caller.set(name)
            await asyncio.sleep(at)
            return await asyncio.gather(*(queue.enqueue(item) for item in items))

        await asyncio.gather(enqueue("a", [1], 0), enqueue("b", [2], 0.02), enqueue("c", [3], 0.03))
        return seen

    assert run_virtual(main) == [("a", [1]), ("b", [2, 3])]


async def test_a_failing_batch_gives_each_caller_its_own_error() -> None:
    async def fail(items: list[int]) -> list[int]:
        raise OSError("disk full")

    queue = BatchedQueue(fail, max_wait_ms=0, name="w")
    outcomes = await asyncio.gather(queue.enqueue(1), queue.enqueue(2), return_exceptions=True)
    errors = each_is(BatchError, outcomes)
    assert errors[0] is not errors[1]
    assert [e.key for e in errors] == [1, 2]
    assert str(errors[0]) == "queue 'w': batch failed after 1 attempt for key 1: OSError: disk full"


async def test_fail_fast_rejects_the_rest_of_the_queue() -> None:
    async def process(items: list[int]) -> list[int]:
        if 0 in items:
            raise RuntimeError("first batch failed")
        return items

    queue = BatchedQueue(process, max_batch_size=1, max_wait_ms=0, error_mode="fail-fast")
    results = await asyncio.gather(*(queue.enqueue(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r.__cause__, RuntimeError) for r in each_is(BatchError, results))
    assert await queue.enqueue(5) == 5


async def test_close_rejects_and_refuses_new_items() -> None:
    queue = BatchedQueue(double, max_wait_ms=60_000, name="views")
    future = queue.enqueue(1)
    queue.close()
    with pytest.raises(LoaderClosedError, match="queue 'views' is closed"):
        await future
    with pytest.raises(LoaderClosedError):
        queue.enqueue(2)


async def test_aclose_loses_nothing_accepted() -> None:
    queue = BatchedQueue(double, max_wait_ms=60_000)
    futures = [queue.enqueue(i) for i in range(25)]
    await queue.aclose()
    assert [f.result() for f in futures] == [i * 2 for i in range(25)]


async def test_a_processor_returning_a_non_list_fails_the_batch() -> None:
    async def bad(items: list[int]) -> int:
        return 3

    queue: BatchedQueue[int, int] = BatchedQueue(bad, max_wait_ms=0)  # type: ignore[arg-type]
    with pytest.raises(BatchError, match="must return a list aligned with its items"):
        await queue.enqueue(1)


async def test_an_unhashable_key_is_refused_at_enqueue() -> None:
    queue = BatchedQueue(double, key_of=lambda item: [item], max_wait_ms=0)  # type: ignore[arg-type, return-value]
    with pytest.raises(TypeError, match="returned the unhashable"):
        queue.enqueue(1)
