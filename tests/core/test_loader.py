"""KeyedLoader, behaviour by behaviour."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from gqlbatch import (
    BatchError,
    KeyedLoader,
    LoaderClosedError,
    MissingKeyError,
    QueueFullError,
    RetryPolicy,
    WrongEventLoopError,
)
from gqlbatch._engine import MAX_COALESCE_ITERATIONS
from tests._harness import each_is
from tests._loop import run_virtual

pytestmark = pytest.mark.usefixtures("loop_reports")


class Recorder:
    """A batch function that records its calls and answers ``key * 10``."""

    def __init__(self, skip: Iterable[Any] = (), fail: Mapping[Any, BaseException] = {}):
        self.calls: list[list[Any]] = []
        self.skip = set(skip)
        self.fail = dict(fail)

    async def __call__(self, keys: list[Any]) -> dict[Any, Any]:
        self.calls.append(list(keys))
        await asyncio.sleep(0)
        out: dict[Any, Any] = {}
        for key in reversed(keys):  # any order
            if key in self.skip:
                continue
            out[key] = self.fail.get(key, key * 10)
        out["extra-key-nobody-asked-for"] = "ignored"
        return out


async def _after(awaits: int, loader: KeyedLoader[Any, Any], key: Any) -> Any:
    for _ in range(awaits):
        await asyncio.sleep(0)
    return await loader.load(key)


# -- batching and correlation ---------------------------------------------------------


async def test_coalesces_loads_of_one_tick_into_one_batch_of_distinct_keys() -> None:
    fetch = Recorder()
    loader = KeyedLoader(fetch)
    values = await asyncio.gather(*(loader.load(k) for k in [1, 2, 1, 3, 2]))
    assert values == [10, 20, 10, 30, 20]
    assert fetch.calls == [[1, 2, 3]]


async def test_results_are_matched_by_key_whatever_their_order_or_extras() -> None:
    async def fetch(keys: list[int]) -> dict[int, str]:
        return {k: f"v{k}" for k in [*sorted(keys, reverse=True), 999]}

    loader = KeyedLoader(fetch)
    assert await asyncio.gather(*(loader.load(k) for k in [3, 1, 2])) == ["v3", "v1", "v2"]


async def test_resolvers_that_await_before_loading_still_share_one_batch() -> None:
    fetch = Recorder()
    loader = KeyedLoader(fetch)
    values = await asyncio.gather(*(_after(i % 4, loader, i) for i in range(100)))
    assert values == [i * 10 for i in range(100)]
    assert len(fetch.calls) == 1
    assert sorted(fetch.calls[0]) == list(range(100))


async def test_a_steady_stream_of_keys_cannot_hold_a_batch_back_forever() -> None:
    fetch = Recorder()
    loader = KeyedLoader(fetch)
    futures = []
    for i in range(MAX_COALESCE_ITERATIONS + 10):
        futures.append(loader.load(i))
        await asyncio.sleep(0)
    await asyncio.gather(*futures)
    assert len(fetch.calls) >= 2
    assert len(fetch.calls[0]) <= MAX_COALESCE_ITERATIONS + 1


async def test_keys_arriving_after_real_io_form_the_next_batch() -> None:
    fetch = Recorder()
    loader = KeyedLoader(fetch)
    first = loader.load(1)
    await asyncio.sleep(0.001)
    assert list(await asyncio.gather(first, loader.load(2))) == [10, 20]
    assert fetch.calls == [[1], [2]]


async def test_max_batch_size_splits_keys_into_full_batches() -> None:
    fetch = Recorder()
    loader = KeyedLoader(fetch, max_batch_size=3)
    assert await asyncio.gather(*(loader.load(k) for k in range(7))) == [k * 10 for k in range(7)]
    assert fetch.calls == [[0, 1, 2], [3, 4, 5], [6]]


def test_max_wait_ms_dispatches_that_long_after_the_first_key() -> None:
    async def main() -> list[tuple[float, list[int]]]:
        loop = asyncio.get_running_loop()
        seen: list[tuple[float, list[int]]] = []

        async def fetch(keys: list[int]) -> dict[int, int]:
            seen.append((loop.time(), keys))
            return {k: k for k in keys}

        loader = KeyedLoader(fetch, max_wait_ms=50)
        first = loader.load(1)
        await asyncio.sleep(0.030)
        second = loader.load(2)  # does not push the deadline back
        await asyncio.gather(first, second)
        third = loader.load(3)
        await third
        return seen

    seen = run_virtual(main)
    assert [keys for _, keys in seen] == [[1, 2], [3]]
    assert seen[0][0] == pytest.approx(0.050)
    assert seen[1][0] == pytest.approx(0.100)


def test_max_wait_ms_batch_goes_early_when_full() -> None:
    async def main() -> list[tuple[float, list[int]]]:
        loop = asyncio.get_running_loop()
        seen: list[tuple[float, list[int]]] = []

        async def fetch(keys: list[int]) -> dict[int, int]:
            seen.append((loop.time(), keys))
            return {k: k for k in keys}

        loader = KeyedLoader(fetch, max_wait_ms=1000, max_batch_size=2)
        await asyncio.gather(*(loader.load(k) for k in range(3)))
        return seen

    seen = run_virtual(main)
    assert seen == [(0.0, [0, 1]), (1.0, [2])]


async def test_missing_keys_resolve_to_none_by_default() -> None:
    loader = KeyedLoader(Recorder(skip=[2]))
    assert list(await asyncio.gather(loader.load(1), loader.load(2))) == [10, None]


async def test_missing_error_fails_each_caller_with_its_own_missing_key_error() -> None:
    loader = KeyedLoader(Recorder(skip=[2]), missing="error", name="user")
    results = await asyncio.gather(
        loader.load(2), loader.load(2), loader.load(1), return_exceptions=True
    )
    assert isinstance(results[0], MissingKeyError)
    assert isinstance(results[1], MissingKeyError)
    assert results[0] is not results[1]
    assert results[2] == 10
    assert str(results[0]) == "loader 'user': the batch function returned no result for key 2"
    assert results[0].key == 2 and results[0].loader == "user"


async def test_misses_are_cached_too() -> None:
    fetch = Recorder(skip=[2])
    loader = KeyedLoader(fetch, missing="error")
    with pytest.raises(MissingKeyError):
        await loader.load(2)
    with pytest.raises(MissingKeyError):
        await loader.load(2)
    assert fetch.calls == [[2]]


async def test_a_per_key_exception_fails_that_key_only_and_is_not_cached() -> None:
    boom = LookupError("no such row")
    fetch = Recorder(fail={2: boom})
    loader = KeyedLoader(fetch)
    results = await asyncio.gather(loader.load(1), loader.load(2), return_exceptions=True)
    assert list(results) == [10, boom]
    assert results[1] is boom
    fetch.fail.clear()
    assert await loader.load(2) == 20
    assert fetch.calls == [[1, 2], [2]]


async def test_key_of_maps_rows_to_keys() -> None:
    async def fetch(ids: list[int]) -> list[dict[str, int]]:
        return [{"id": i, "v": i * 2} for i in ids if i != 3]

    loader = KeyedLoader(fetch, key_of=lambda row: row["id"])
    rows = await asyncio.gather(*(loader.load(k) for k in [1, 3]))
    assert rows == [{"id": 1, "v": 2}, None]


async def test_many_groups_rows_per_key_and_gives_empty_lists() -> None:
    async def fetch(author_ids: list[int]) -> list[tuple[int, str]]:
        return [(1, "a"), (2, "b"), (1, "c"), (9, "stray")]

    loader = KeyedLoader(fetch, key_of=lambda row: row[0], many=True)
    assert await asyncio.gather(*(loader.load(k) for k in [1, 2, 3])) == [
        [(1, "a"), (1, "c")],
        [(2, "b")],
        [],
    ]


async def test_callable_objects_returning_awaitables_are_batch_functions() -> None:
    loader = KeyedLoader(Recorder())
    assert await loader.load(4) == 40


async def test_a_plain_function_fails_the_batch_with_a_type_error_naming_the_loader() -> None:
    def not_async(keys: list[int]) -> dict[int, int]:
        return {k: k for k in keys}

    loader = KeyedLoader(not_async, name="sync")  # type: ignore[arg-type]
    with pytest.raises(BatchError) as info:
        await loader.load(1)
    assert isinstance(info.value.__cause__, TypeError)
    assert "batch function of loader 'sync' returned dict, not an awaitable" in str(info.value)


async def test_a_result_of_the_wrong_shape_fails_the_batch() -> None:
    async def listing(keys: list[int]) -> list[int]:
        return keys

    loader = KeyedLoader(listing, name="listing")  # type: ignore[arg-type]
    with pytest.raises(BatchError, match="must return a Mapping of key to value"):
        await loader.load(1)


async def test_key_type_rejects_keys_of_another_type_at_once() -> None:
    fetch = Recorder()
    loader = KeyedLoader(fetch, key_type=int, name="user")
    with pytest.raises(TypeError, match="loader 'user': key '1' is of type str, expected int"):
        loader.load("1")
    assert fetch.calls == []


# -- futures, cancellation ------------------------------------------------------------


async def test_each_pending_load_returns_a_future_of_its_own() -> None:
    loader = KeyedLoader(Recorder())
    a, b = loader.load(1), loader.load(1)
    assert a is not b
    assert list(await asyncio.gather(a, b)) == [10, 10]


async def test_cancelling_one_caller_never_cancels_another_caller_of_the_same_key() -> None:
    loader = KeyedLoader(Recorder())
    victim = asyncio.ensure_future(loader.load(1))
    survivor = asyncio.ensure_future(loader.load(1))
    await asyncio.sleep(0)
    victim.cancel()
    assert await survivor == 10
    assert victim.cancelled()


async def test_each_caller_of_a_repeated_key_is_answered_and_counted() -> None:
    fetch = Recorder()
    loader = KeyedLoader(fetch)
    first, again, gone = loader.load(1), loader.load(1), loader.load(1)
    resolved = loader.resolve(1)
    other = loader.load(2)
    gone.cancel()
    assert isinstance(resolved, asyncio.Future) and resolved is not first  # its own
    answered = asyncio.gather(first, again, resolved, other)
    assert await asyncio.wait_for(answered, 5) == [10, 10, 10, 20]
    assert fetch.calls == [[1, 2]]
    assert gone.cancelled()
    stats = loader.stats
    assert (stats.loads, stats.keys_dispatched, stats.cache_hits) == (5, 2, 0)
    assert loader.resolve(1) == 10  # cached once, as the first caller's value


async def test_a_repeated_key_is_answered_beside_load_many_positions() -> None:
    fetch = Recorder()
    loader = KeyedLoader(fetch)
    first = loader.load(1)
    listed = loader.load_many([2, 1, 2])
    later = loader.load(2)
    assert await asyncio.gather(first, listed, later) == [10, [20, 10, 20], 20]
    assert fetch.calls == [[1, 2]]


async def test_a_repeated_key_of_another_type_is_refused_by_key_type() -> None:
    loader = KeyedLoader(Recorder(), key_type=int)
    first = loader.load(1)
    with pytest.raises(TypeError, match=r"key 1\.0 is of type float, expected int"):
        loader.load(1.0)  # equal to 1, and hashed alike
    with pytest.raises(TypeError, match=r"key 1\.0 is of type float, expected int"):
        loader.resolve(1.0)
    assert await first == 10


async def test_cancelling_a_task_awaiting_a_load_leaves_other_tasks_alone() -> None:
    gate = asyncio.Event()

    async def slow(keys: list[int]) -> dict[int, int]:
        await gate.wait()
        return {k: k for k in keys}

    loader = KeyedLoader(slow)
    first = asyncio.create_task(_after(0, loader, 7))
    second = asyncio.create_task(_after(0, loader, 7))
    await asyncio.sleep(0.001)
    first.cancel()
    gate.set()
    assert await second == 7
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_batch_whose_callers_are_all_gone_is_never_called() -> None:
    fetch = Recorder()
    loader = KeyedLoader(fetch)
    for future in [loader.load(1), loader.load(2)]:
        future.cancel()
    await loader.flush()
    assert fetch.calls == []
    assert await loader.load(1) == 10  # not poisoned: fetched afresh


async def test_a_batch_function_raising_cancelled_error_fails_callers_without_hanging() -> None:
    async def rogue(keys: list[int]) -> dict[int, int]:
        raise asyncio.CancelledError

    loader = KeyedLoader(rogue)
    results = await asyncio.wait_for(
        asyncio.gather(loader.load(1), loader.load(1), return_exceptions=True), 1
    )
    errors = each_is(BatchError, results)
    assert isinstance(errors[0].__cause__, asyncio.CancelledError)


# -- the cache ------------------------------------------------------------------------


async def test_a_cache_hit_returns_a_completed_future() -> None:
    fetch = Recorder()
    loader = KeyedLoader(fetch)
    assert await loader.load(1) == 10
    hit = loader.load(1)
    assert hit.done() and hit.result() == 10
    assert fetch.calls == [[1]]
    assert loader.stats.cache_hits == 1


async def test_a_load_of_a_key_in_flight_joins_its_batch() -> None:
    gate = asyncio.Event()
    calls: list[list[int]] = []

    async def slow(keys: list[int]) -> dict[int, int]:
        calls.append(keys)
        await gate.wait()
        return {k: k + 1 for k in keys}

    loader = KeyedLoader(slow)
    first = loader.load(1)
    await asyncio.sleep(0.001)  # batch is running
    second = loader.load(1)
    gate.set()
    assert list(await asyncio.gather(first, second)) == [2, 2]
    assert calls == [[1]]


async def test_without_cache_keys_are_still_deduplicated_within_a_batch() -> None:
    fetch = Recorder()
    loader = KeyedLoader(fetch, cache=False)
    assert list(await asyncio.gather(loader.load(1), loader.load(1))) == [10, 10]
    assert await loader.load(1) == 10
    assert fetch.calls == [[1], [1]]


async def test_prime_caches_a_value_but_never_overwrites() -> None:
    fetch = Recorder()
    loader = KeyedLoader(fetch)
    loader.prime(1, "primed")
    loader.prime(1, "again")
    assert await loader.load(1) == "primed"
    assert fetch.calls == []
    with pytest.raises(TypeError, match="prime\\(\\) caches values only"):
        loader.prime(2, ValueError("x"))


async def test_clear_forgets_a_value_so_the_next_load_fetches_again() -> None:
    fetch = Recorder()
    loader = KeyedLoader(fetch)
    await loader.load_many([1, 2, 3])
    loader.clear(1)
    loader.clear_many([2])
    assert await loader.load_many([1, 2, 3]) == [10, 20, 30]
    loader.clear_all()
    await loader.load(3)
    assert fetch.calls == [[1, 2, 3], [1, 2], [3]]


async def test_clear_during_flight_answers_callers_but_does_not_cache() -> None:
    gate = asyncio.Event()
    version = {"v": 1}

    async def slow(keys: list[int]) -> dict[int, int]:
        seen = version["v"]
        await gate.wait()
        return {k: seen for k in keys}

    loader = KeyedLoader(slow)
    stale = loader.load(1)
    await asyncio.sleep(0.001)
    version["v"] = 2  # a write happened
    loader.clear(1)
    gate.set()
    assert await stale == 1
    assert await loader.load(1) == 2


async def test_unhashable_keys_raise_type_error_at_once() -> None:
    loader = KeyedLoader(Recorder(), name="filters")
    with pytest.raises(TypeError, match=r"loader 'filters': key \[1\] is unhashable \(list\)"):
        loader.load([1])


async def test_cache_key_makes_keys_hashable_and_matches_result_keys() -> None:
    async def fetch(filters: list[dict[str, int]]) -> list[dict[str, int]]:
        return [{"id": f["id"], "double": f["id"] * 2} for f in filters]

    loader = KeyedLoader(
        fetch,
        key_of=lambda row: {"id": row["id"]},
        cache_key=lambda f: f["id"],
    )
    a, b = await asyncio.gather(loader.load({"id": 1}), loader.load({"id": 1}))
    assert a == b == {"id": 1, "double": 2}


# -- load_many ------------------------------------------------------------------------


async def test_load_many_returns_values_in_the_order_of_the_keys() -> None:
    fetch = Recorder(skip=[5])
    loader = KeyedLoader(fetch)
    await loader.load(3)
    assert await loader.load_many([5, 3, 1, 3]) == [None, 30, 10, 30]
    assert fetch.calls == [[3], [5, 1]]
    assert await loader.load_many([]) == []


async def test_load_many_fails_with_the_first_failure_or_returns_exceptions() -> None:
    boom = ValueError("bad key 2")
    loader = KeyedLoader(Recorder(fail={2: boom}))
    with pytest.raises(ValueError, match="bad key 2"):
        await loader.load_many([1, 2])
    assert await loader.load_many([1, 2], return_exceptions=True) == [10, boom]


# -- capacity and concurrency ---------------------------------------------------------


async def test_max_queue_size_refuses_one_more_key_synchronously() -> None:
    loader = KeyedLoader(Recorder(), max_queue_size=2, name="q")
    first, second = loader.load(1), loader.load(2)
    joined = loader.load(1)  # keys already waiting do not count
    with pytest.raises(QueueFullError, match="loader 'q' is full: max_queue_size=2"):
        loader.load(3)
    assert len(loader) == 2
    assert loader.stats.rejected == 1
    assert list(await asyncio.gather(first, second, joined)) == [10, 20, 10]
    assert len(loader) == 0
    loader.load(1)  # a cache hit never counts
    assert len(loader) == 0


async def test_load_many_that_does_not_fit_accepts_nothing() -> None:
    loader = KeyedLoader(Recorder(), max_queue_size=3)
    loader.load(1)
    with pytest.raises(QueueFullError):
        loader.load_many([1, 2, 3, 4])
    assert len(loader) == 1
    assert await loader.load_many([1, 2, 3]) == [10, 20, 30]


async def test_max_concurrency_bounds_batch_function_calls_running_at_once() -> None:
    running = peak = 0

    async def fetch(keys: list[int]) -> dict[int, int]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        running -= 1
        return {k: k for k in keys}

    loader = KeyedLoader(fetch, max_batch_size=2, max_concurrency=2)
    assert await asyncio.gather(*(loader.load(k) for k in range(10))) == list(range(10))
    assert peak == 2
    assert loader.stats.batches == 5


async def test_a_full_batch_waiting_for_a_slot_still_counts_as_queued() -> None:
    gate = asyncio.Event()

    async def slow(keys: list[int]) -> dict[int, int]:
        await gate.wait()
        return {k: k for k in keys}

    loader = KeyedLoader(slow, max_batch_size=2, max_concurrency=1, max_queue_size=3)
    futures = [loader.load(k) for k in range(3)]
    await asyncio.sleep(0.001)  # [0, 1] runs, [2] waits for the slot
    assert len(loader) == 1
    gate.set()
    assert await asyncio.gather(*futures) == [0, 1, 2]


# -- error modes ----------------------------------------------------------------------


async def test_continue_mode_fails_only_the_batch_that_raised() -> None:
    async def fetch(keys: list[int]) -> dict[int, int]:
        if 1 in keys:
            raise ConnectionError("db down")
        return {k: k for k in keys}

    loader = KeyedLoader(fetch, max_batch_size=2, name="user")
    results = await asyncio.gather(*(loader.load(k) for k in range(4)), return_exceptions=True)
    assert isinstance(results[0], BatchError) and isinstance(results[1], BatchError)
    assert results[2:] == [2, 3]
    assert str(results[1]) == (
        "loader 'user': batch failed after 1 attempt for key 1: ConnectionError: db down"
    )
    assert loader.stats.failed_batches == 1


async def test_every_failing_caller_gets_its_own_batch_error() -> None:
    cause = RuntimeError("boom")

    async def fetch(keys: list[int]) -> dict[int, int]:
        raise cause

    loader = KeyedLoader(fetch, name="n")
    errors = await asyncio.gather(
        loader.load(1), loader.load(1), loader.load(2), return_exceptions=True
    )
    assert len({id(e) for e in errors}) == 3
    for error, key in zip(errors, [1, 1, 2], strict=True):
        assert isinstance(error, BatchError)
        assert error.key == key and error.loader == "n" and error.attempts == 1
        assert error.__cause__ is cause


async def test_a_failed_batch_is_not_cached() -> None:
    attempts = 0

    async def flaky(keys: list[int]) -> dict[int, int]:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError
        return {k: k for k in keys}

    loader = KeyedLoader(flaky)
    with pytest.raises(BatchError):
        await loader.load(1)
    assert await loader.load(1) == 1


async def test_fail_fast_rejects_everything_else_with_the_first_failure_as_cause() -> None:
    gate = asyncio.Event()

    async def fetch(keys: list[int]) -> dict[int, Any]:
        if keys == [0, 1]:
            return {0: 0, 1: LookupError("row 1 is bad")}
        await gate.wait()
        return {k: k for k in keys}

    loader = KeyedLoader(fetch, max_batch_size=2, error_mode="fail-fast")
    futures = [loader.load(k) for k in range(4)]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert results[0] == 0
    assert isinstance(results[1], LookupError)
    for other in results[2:]:
        assert isinstance(other, BatchError)
        assert other.__cause__ is results[1]
        assert "rejected by fail-fast" in str(other)
    gate.set()
    assert await loader.load(9) == 9  # accepts new work afterwards


async def test_fail_fast_on_a_raising_batch_cancels_the_batches_in_flight() -> None:
    cancelled = asyncio.Event()

    async def fetch(keys: list[int]) -> dict[int, int]:
        if 0 in keys:
            await asyncio.sleep(0)
            raise ConnectionError("down")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    loader = KeyedLoader(fetch, max_batch_size=1, error_mode="fail-fast")
    results = await asyncio.gather(loader.load(1), loader.load(0), return_exceptions=True)
    errors = each_is(BatchError, results)
    assert isinstance(errors[0].__cause__, ConnectionError)
    await asyncio.wait_for(cancelled.wait(), 1)


def test_retry_mode_retries_a_failed_batch_with_backoff() -> None:
    async def main() -> tuple[list[float], list[Any], Any]:
        loop = asyncio.get_running_loop()
        times: list[float] = []

        async def flaky(keys: list[int]) -> dict[int, int]:
            times.append(loop.time())
            if len(times) < 3:
                raise ConnectionError("try again")
            return {k: k for k in keys}

        loader = KeyedLoader(
            flaky,
            error_mode="retry",
            retry=RetryPolicy(retries=3, base_delay_ms=100, factor=2, jitter=False),
        )
        values = await asyncio.gather(loader.load(1), loader.load(2))
        return times, list(values), loader.stats

    times, values, stats = run_virtual(main)
    assert values == [1, 2]
    assert times == pytest.approx([0.0, 0.1, 0.3])
    assert stats.retries == 2 and stats.batches == 3 and stats.failed_batches == 0


def test_retry_mode_retries_only_the_keys_that_failed() -> None:
    async def main() -> tuple[list[list[int]], list[Any]]:
        calls: list[list[int]] = []

        async def fetch(keys: list[int]) -> dict[int, Any]:
            calls.append(keys)
            return {
                k: (TimeoutError("slow shard") if k == 2 and len(calls) < 3 else k) for k in keys
            }

        loader = KeyedLoader(fetch, error_mode="retry", retry=RetryPolicy(retries=5))
        values = await asyncio.gather(loader.load(1), loader.load(2), loader.load(3))
        return calls, list(values)

    calls, values = run_virtual(main)
    assert values == [1, 2, 3]
    assert calls == [[1, 2, 3], [2], [2]]


def test_retry_gives_up_with_a_batch_error_counting_attempts() -> None:
    async def main() -> BaseException:
        async def down(keys: list[int]) -> dict[int, int]:
            raise ConnectionError("still down")

        loader = KeyedLoader(down, error_mode="retry", retry=RetryPolicy(retries=2))
        try:
            await loader.load(1)
        except BatchError as error:
            return error
        raise AssertionError("no error")

    error = run_virtual(main)
    assert isinstance(error, BatchError)
    assert error.attempts == 3
    assert isinstance(error.__cause__, ConnectionError)


def test_retry_skips_exceptions_outside_retry_on_and_never_retries_misses() -> None:
    async def main() -> tuple[int, list[Any]]:
        calls = 0

        async def fetch(keys: list[int]) -> dict[int, Any]:
            nonlocal calls
            calls += 1
            return {1: PermissionError("denied")}  # 2 is missing

        loader = KeyedLoader(
            fetch, error_mode="retry", retry=RetryPolicy(retry_on=(ConnectionError,))
        )
        results = await asyncio.gather(loader.load(1), loader.load(2), return_exceptions=True)
        return calls, list(results)

    calls, results = run_virtual(main)
    assert calls == 1
    assert isinstance(results[0], PermissionError)
    assert results[1] is None


def test_batch_timeout_fails_a_call_that_takes_too_long() -> None:
    async def main() -> BaseException:
        async def hang(keys: list[int]) -> dict[int, int]:
            await asyncio.sleep(60)
            return {}

        loader = KeyedLoader(hang, batch_timeout_ms=250, name="slow")
        try:
            await loader.load(1)
        except BatchError as error:
            assert asyncio.get_running_loop().time() == pytest.approx(0.25)
            return error
        raise AssertionError("no error")

    error = run_virtual(main)
    assert isinstance(error.__cause__, TimeoutError)
    assert "took longer than batch_timeout_ms=250" in str(error)


def test_retry_backoff_holds_no_concurrency_slot() -> None:
    async def main() -> list[tuple[float, list[int]]]:
        loop = asyncio.get_running_loop()
        calls: list[tuple[float, list[int]]] = []

        async def fetch(keys: list[int]) -> dict[int, int]:
            calls.append((loop.time(), keys))
            if keys == [0] and len(calls) == 1:
                raise ConnectionError
            return {k: k for k in keys}

        loader = KeyedLoader(
            fetch,
            max_batch_size=1,
            max_concurrency=1,
            error_mode="retry",
            retry=RetryPolicy(base_delay_ms=1000, jitter=False),
        )
        await asyncio.gather(loader.load(0), loader.load(1))
        return calls

    calls = run_virtual(main)
    assert calls == [(0.0, [0]), (0.0, [1]), (1.0, [0])]


# -- flush, close, aclose -------------------------------------------------------------


def test_flush_dispatches_at_once_and_awaits_the_batches() -> None:
    async def main() -> tuple[float, int | None]:
        loader = KeyedLoader(Recorder(), max_wait_ms=10_000)
        future = loader.load(1)
        await loader.flush()
        assert future.done()
        return asyncio.get_running_loop().time(), future.result()

    assert run_virtual(main) == (0.0, 10)


async def test_close_rejects_every_caller_not_yet_answered() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow(keys: list[int]) -> dict[int, int]:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    loader = KeyedLoader(slow, max_batch_size=1, name="u")
    in_flight = loader.load(1)
    await started.wait()
    waiting = loader.load(2)
    loader.close()
    loader.close()  # idempotent
    for future in (in_flight, waiting):
        with pytest.raises(LoaderClosedError, match="loader 'u' is closed"):
            await future
    await asyncio.wait_for(cancelled.wait(), 1)
    with pytest.raises(LoaderClosedError):
        loader.load(3)
    assert loader.closed


async def test_aclose_finishes_everything_accepted_then_closes() -> None:
    fetch = Recorder()
    loader = KeyedLoader(fetch, max_wait_ms=5000)
    futures = [loader.load(k) for k in range(3)]
    await loader.aclose()
    assert [f.result() for f in futures] == [0, 10, 20]
    with pytest.raises(LoaderClosedError):
        loader.load(1)


async def test_async_with_closes_gracefully() -> None:
    async with KeyedLoader(Recorder(), max_wait_ms=5000) as loader:
        future = loader.load(2)
    assert future.result() == 20
    assert loader.closed


# -- event loops ----------------------------------------------------------------------


def test_a_loader_created_outside_any_loop_works_in_one_loop_after_another() -> None:
    loader = KeyedLoader(Recorder())

    async def main() -> int | None:
        return await loader.load(1)

    assert asyncio.run(main()) == 10
    assert asyncio.run(main()) == 10


def test_a_loader_left_waiting_by_a_closed_loop_starts_afresh_in_the_next() -> None:
    fetch = Recorder()
    loader = KeyedLoader(fetch, max_wait_ms=50)

    async def abandon() -> None:
        loader.load(1)  # its loop ends before the batch is due

    async def main() -> int | None:
        return await loader.load(1)

    run_virtual(abandon)
    assert fetch.calls == []
    assert run_virtual(main) == 10
    assert fetch.calls == [[1]]


async def test_a_loader_used_from_a_second_open_loop_raises_a_clear_error() -> None:
    loader = KeyedLoader(Recorder(), name="user")
    assert await loader.load(1) == 10

    def other_loop() -> None:
        async def main() -> None:
            loader.load(2)

        asyncio.run(main())

    with pytest.raises(WrongEventLoopError, match="loader 'user' is bound to another event loop"):
        await asyncio.to_thread(other_loop)


def test_load_outside_a_running_loop_raises_a_clear_error() -> None:
    loader = KeyedLoader(Recorder(), name="user")
    with pytest.raises(RuntimeError, match="can only be used from a coroutine"):
        loader.load(1)


def test_works_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> list[Any]:
        loader = KeyedLoader(Recorder(skip=[3]))
        return list(await asyncio.gather(*(_after(k % 3, loader, k) for k in range(5))))

    with asyncio.Runner(loop_factory=uvloop.new_event_loop, debug=True) as runner:
        assert runner.run(main()) == [0, 10, 20, None, 40]


class _OwnFuture(asyncio.Future[Any]):
    """The future class of a loop that makes its own (an instrumented loop, say)."""


class _OwnFutureLoop(asyncio.SelectorEventLoop):
    def create_future(self) -> asyncio.Future[Any]:
        return _OwnFuture(loop=self)


def test_works_on_a_loop_whose_create_future_makes_its_own_futures() -> None:
    fetch = Recorder()

    async def main() -> tuple[list[Any], list[Any], bool]:
        loader = KeyedLoader(fetch)
        first = loader.load(1)
        loaded = list(await asyncio.gather(first, *(loader.load(k) for k in (2, 3))))
        again = list(await asyncio.gather(*(loader.load(k) for k in (1, 2, 3))))
        return loaded, again, isinstance(first, _OwnFuture)

    with asyncio.Runner(loop_factory=_OwnFutureLoop, debug=True) as runner:
        assert runner.run(main()) == ([10, 20, 30], [10, 20, 30], True)
    assert fetch.calls == [[1, 2, 3]]


# -- statistics and bookkeeping -------------------------------------------------------


async def test_stats_count_loads_hits_batches_and_keys() -> None:
    loader = KeyedLoader(Recorder(), max_batch_size=2)
    await asyncio.gather(*(loader.load(k) for k in [1, 2, 3, 1]))
    await loader.load(1)
    stats = loader.stats
    # [1, 2] goes at once (full); the second 1 joins it in flight; the last load hits.
    assert (stats.loads, stats.cache_hits, stats.batches) == (5, 2, 2)
    assert (stats.keys_dispatched, stats.largest_batch) == (3, 2)


async def test_per_key_bookkeeping_creates_no_reference_cycles() -> None:
    loader = KeyedLoader(Recorder(skip=[7]), missing="error")
    await asyncio.gather(*(loader.load(k) for k in range(50)), return_exceptions=True)
    await loader.load_many(range(40, 60), return_exceptions=True)
    await asyncio.sleep(0)
    gc.collect()
    gc.disable()
    try:
        await asyncio.gather(*(loader.load(k) for k in range(100, 200)))
        await loader.load_many(range(200, 300))
        await asyncio.sleep(0)
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_load_many_positions_are_answered_once_even_when_closed_midway() -> None:
    async def main() -> list[Any]:
        async def fetch(keys: list[int]) -> dict[int, Any]:
            return {1: 1, 2: ConnectionError("shard down")}

        loader = KeyedLoader(fetch, error_mode="retry", retry=RetryPolicy(base_delay_ms=1000))
        many = loader.load_many([1, 2], return_exceptions=True)
        await asyncio.sleep(0.1)  # key 1 answered; key 2 waits to be retried
        loader.close()
        return await many

    result = run_virtual(main)
    assert result[0] == 1
    assert isinstance(result[1], LoaderClosedError)


async def test_load_many_of_two_cached_misses_fails_once() -> None:
    loader = KeyedLoader(Recorder(skip=[1, 2]), missing="error")
    await asyncio.gather(loader.load(1), loader.load(2), return_exceptions=True)
    with pytest.raises(MissingKeyError):
        await loader.load_many([1, 2])


async def test_a_resolver_awaiting_three_times_while_nobody_loads_still_joins() -> None:
    fetch = Recorder()
    loader = KeyedLoader(fetch)
    assert list(await asyncio.gather(_after(0, loader, 1), _after(3, loader, 2))) == [10, 20]
    assert fetch.calls == [[1, 2]]


async def test_on_a_busy_loop_a_few_quiet_iterations_end_the_batch() -> None:
    fetch = Recorder()
    loader = KeyedLoader(fetch)

    async def busy() -> None:  # another request keeps the loop's ready queue non-empty
        for _ in range(10 * MAX_COALESCE_ITERATIONS):
            await asyncio.sleep(0)

    spinner = asyncio.create_task(busy())
    first = loader.load(1)
    for _ in range(MAX_COALESCE_ITERATIONS):
        await asyncio.sleep(0)
    late = loader.load(2)
    assert list(await asyncio.gather(first, late)) == [10, 20]
    await spinner
    assert fetch.calls == [[1], [2]]


async def test_load_many_fetches_a_repeated_key_once_even_across_a_split() -> None:
    fetch = Recorder()
    loader = KeyedLoader(fetch, cache=False, max_batch_size=2)
    assert await loader.load_many([1, 2, 1, 3, 2]) == [10, 20, 10, 30, 20]
    assert fetch.calls == [[1, 2], [3]]
