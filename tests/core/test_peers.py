"""What users of the peer DataLoaders rely on (issue 10), behaviour by behaviour.

aiodataloader, Strawberry's DataLoader, graphql/dataloader and java-dataloader
users find these as they expect them, or documented in ``docs/migrating.md``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pytest

from gqlbatch import BatchInfo, KeyedLoader

pytestmark = pytest.mark.usefixtures("loop_reports")


class Source:
    """A batch function over a mutable table, recording its calls."""

    def __init__(self, delay: float = 0) -> None:
        self.table: dict[Any, Any] = {}
        self.calls: list[list[Any]] = []
        self.delay = delay
        self.cancelled = 0

    async def __call__(self, keys: list[Any]) -> dict[Any, Any]:
        self.calls.append(list(keys))
        values = {key: self.table.get(key, f"v{key}") for key in keys}
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return values


# -- 1. clear, prime and write-through on waiting and in-flight keys -------------------


async def test_a_clear_on_a_waiting_key_detaches_it() -> None:
    source = Source()
    loader = KeyedLoader(source)
    waiting = loader.load(1)
    loader.clear(1).prime(1, "new")
    assert await waiting == "v1"  # its callers get what was fetched
    assert await loader.load(1) == "new"  # the cache holds the primed value
    assert source.calls == [[1]]


async def test_a_clear_on_an_in_flight_key_detaches_it() -> None:
    source = Source(delay=0.01)
    loader = KeyedLoader(source)
    in_flight = loader.load(1)
    await asyncio.sleep(0.001)
    assert source.calls == [[1]]
    source.table[1] = "changed"
    loader.clear(1)
    assert await in_flight == "v1"
    assert await loader.load(1) == "changed"  # fetched again, not the detached value
    assert source.calls == [[1], [1]]


async def test_a_load_after_a_clear_in_the_same_tick_is_fetched_once() -> None:
    source = Source()
    loader = KeyedLoader(source)
    first = loader.load(1)
    loader.clear(1)
    second = loader.load(1)
    assert list(await asyncio.gather(first, second)) == ["v1", "v1"]
    assert source.calls == [[1]]
    assert loader.peek(1) == "v1"  # the second load re-attached it: cached


async def test_clear_all_detaches_every_waiting_key() -> None:
    source = Source()
    loader = KeyedLoader(source)
    waiting = loader.load_many([1, 2])
    loader.clear_all().prime_many({1: "one"})
    assert await waiting == ["v1", "v2"]
    assert loader.peek(1) == "one" and loader.peek(2) is None


async def test_prime_leaves_a_waiting_key_alone_until_it_is_cleared() -> None:
    loader = KeyedLoader(Source())
    waiting = loader.load(1)
    loader.prime(1, "ignored")
    assert await waiting == "v1"
    assert await loader.load(1) == "v1"


# -- 2. a caller cannot poison the cache -----------------------------------------------


async def test_a_caller_completing_its_own_future_does_not_reach_the_cache() -> None:
    loader = KeyedLoader(Source(delay=0.001))
    mine = loader.load(1)
    mine.set_result("mine")
    assert await loader.load(1) == "v1"
    assert await loader.load_many([1]) == ["v1"]


async def test_a_caller_failing_its_own_future_does_not_reach_the_cache() -> None:
    loader = KeyedLoader(Source(delay=0.001))
    mine = loader.load(1)
    mine.set_exception(RuntimeError("mine"))
    with pytest.raises(RuntimeError):
        await mine
    assert await loader.load(1) == "v1"
    assert await loader.load_many([1]) == ["v1"]


# -- 4. nothing is left behind when the loop ends --------------------------------------

SHUTDOWN = """
import asyncio, gc
from gqlbatch import KeyedLoader

async def fetch(keys):
    await asyncio.sleep(0.01)
    return {k: k for k in keys}

handed_out = []

async def main():
    loader = KeyedLoader(fetch)
    handed_out.append(loader.load(1))
    handed_out.append(loader.load_many([2, 3]))

asyncio.run(main())
gc.collect()
assert all(f.cancelled() or f.done() for f in handed_out), handed_out
print("ok")
"""


def test_a_loop_ending_with_loads_waiting_prints_nothing_and_cancels_them() -> None:
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", SHUTDOWN],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout == "ok\n", result.stdout + result.stderr
    assert result.stderr == ""


# -- 5-8. differences a migrating user trips over --------------------------------------


async def test_clear_prime_and_clear_all_return_the_loader_for_chaining() -> None:
    loader = KeyedLoader(Source())
    assert loader.clear(1).prime(1, "a").clear_many([2]).clear_all() is loader
    assert loader.prime_many({3: "c"}) is loader


async def test_load_none_is_a_type_error_naming_the_loader() -> None:
    loader = KeyedLoader(Source(), name="user")
    with pytest.raises(TypeError, match="loader 'user': the key None is not accepted"):
        loader.load(None)
    with pytest.raises(TypeError, match="loader 'user': the key None"):
        loader.load_many([1, None])


async def test_load_none_works_when_key_type_admits_none() -> None:
    loader = KeyedLoader(Source(), key_type=(int, type(None)))
    assert await loader.load(None) == "vNone"


async def test_prime_with_a_future_makes_loads_wait_for_it() -> None:
    source = Source()
    loader = KeyedLoader(source)
    value: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    loader.prime(1, value)
    waiting = loader.load(1)
    await asyncio.sleep(0)
    assert not waiting.done()
    value.set_result("primed")
    assert await waiting == "primed"
    assert await loader.load(1) == "primed"
    assert source.calls == []


async def test_a_primed_future_that_fails_is_not_cached() -> None:
    source = Source()
    loader = KeyedLoader(source)
    value: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    loader.prime(1, value)
    waiting = loader.load(1)
    value.set_exception(LookupError("gone"))
    with pytest.raises(LookupError):
        await waiting
    assert await loader.load(1) == "v1"  # fetched: the failure was not cached
    assert source.calls == [[1]]


async def test_a_running_batch_nobody_waits_for_is_cancelled_without_a_cache() -> None:
    source = Source(delay=10)
    loader = KeyedLoader(source, cache=False)
    futures = [loader.load(1), loader.load(2)]
    await asyncio.sleep(0.001)
    assert source.calls == [[1, 2]]
    for future in futures:
        future.cancel()
    await asyncio.sleep(0.001)
    assert source.cancelled == 1
    assert loader.stats.cancelled_batches == 1


async def test_a_running_batch_is_kept_for_the_cache_while_the_loader_is_open() -> None:
    source = Source(delay=0.01)
    loader = KeyedLoader(source)
    future = loader.load(1)
    await asyncio.sleep(0.001)
    future.cancel()
    await loader.flush()
    assert loader.peek(1) == "v1" and source.cancelled == 0


async def test_a_closing_loader_cancels_a_running_batch_nobody_waits_for() -> None:
    source = Source(delay=10)
    loader = KeyedLoader(source)
    future = loader.load(1)
    await asyncio.sleep(0.001)
    closing = asyncio.ensure_future(loader.aclose())
    await asyncio.sleep(0)
    future.cancel()
    await closing
    assert source.cancelled == 1 and loader.stats.cancelled_batches == 1


# -- 9-13. what the peers have ---------------------------------------------------------


class LRU:
    """A cache_map bounded to ``size`` entries."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any) -> Any:
        if key in self.entries:
            self.entries.move_to_end(key)
        return self.entries.get(key)

    def set(self, key: Any, value: Any) -> None:
        self.entries[key] = value
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def delete(self, key: Any) -> None:
        self.entries.pop(key, None)

    def clear(self) -> None:
        self.entries.clear()


async def test_a_cache_map_bounds_the_cache() -> None:
    source = Source()
    lru = LRU(2)
    loader = KeyedLoader(source, cache_map=lru)
    assert await loader.load_many([1, 2, 3]) == ["v1", "v2", "v3"]
    assert list(lru.entries) == [2, 3]
    assert await loader.load(1) == "v1"  # evicted: fetched again
    assert await loader.load(3) == "v3"  # still there
    assert source.calls == [[1, 2, 3], [1]]


async def test_a_cache_map_holds_cache_keys() -> None:
    lru = LRU(10)
    loader = KeyedLoader(Source(), cache_map=lru, cache_key=str)
    await loader.load(1)
    assert list(lru.entries) == ["1"]


def test_a_cache_map_without_the_methods_is_refused() -> None:
    with pytest.raises(TypeError, match="cache_map must have get, set, delete and clear"):
        KeyedLoader(Source(), cache_map={})  # type: ignore[call-overload]  # a dict has no .set


async def test_schedule_decides_when_a_batch_goes() -> None:
    source = Source()
    dispatches: list[Callable[[], None]] = []
    loader = KeyedLoader(source, schedule=dispatches.append)
    first = loader.load(1)
    for _ in range(20):
        await asyncio.sleep(0)
    assert source.calls == [] and len(dispatches) == 1
    second = loader.load(2)
    dispatches[0]()
    assert list(await asyncio.gather(first, second)) == ["v1", "v2"]
    assert source.calls == [[1, 2]]
    dispatches[0]()  # a second call of a batch's dispatch does nothing


def test_schedule_with_max_wait_ms_is_refused() -> None:
    with pytest.raises(ValueError, match="schedule= decides when a batch goes"):
        KeyedLoader(Source(), schedule=lambda dispatch: None, max_wait_ms=5)


async def test_peek_returns_the_cached_value_without_loading() -> None:
    source = Source()
    loader = KeyedLoader(source)
    assert loader.peek(1) is None and loader.peek(1, "none") == "none"
    waiting = loader.load(1)
    assert loader.peek(1, "waiting") == "waiting"
    await waiting
    assert loader.peek(1) == "v1"
    loader.prime(2, "two")
    assert loader.peek(2) == "two"
    assert source.calls == [[1]]


async def test_prime_many_primes_each_key() -> None:
    loader = KeyedLoader(Source())
    loader.prime_many({1: "a", 2: "b"})
    assert await loader.load_many([1, 2]) == ["a", "b"]


async def test_flush_returns_the_number_of_keys_it_dispatched() -> None:
    loader = KeyedLoader(Source())
    loader.load_many([1, 2, 2, 3])
    assert await loader.flush() == 3
    assert await loader.flush() == 0


class Recording:
    def __init__(self) -> None:
        self.started: list[BatchInfo] = []
        self.finished: list[tuple[BatchInfo, BaseException | None, int]] = []

    def batch_started(self, info: BatchInfo) -> object:
        self.started.append(info)
        return None

    def batch_finished(
        self, token: Any, info: BatchInfo, error: BaseException | None, failed_keys: int
    ) -> None:
        self.finished.append((info, error, failed_keys))


async def test_a_loader_s_observers_see_its_batches_only() -> None:
    mine, other = Recording(), Recording()
    loader = KeyedLoader(Source(), observers=[mine], name="user")
    KeyedLoader(Source(), observers=[other])
    await loader.load_many([1, 2])
    assert [i.keys for i in mine.started] == [(1, 2)]
    ((info, error, failed),) = mine.finished
    assert info.loader == "user" and info.attempt == 1 and error is None and failed == 0
    assert info.duration_ms is not None and info.duration_ms >= 0
    assert other.started == []


def test_an_observer_without_the_methods_is_refused() -> None:
    with pytest.raises(TypeError, match="observers: 1 has no batch_started"):
        KeyedLoader(Source(), observers=[1])  # type: ignore[list-item]  # under test
