"""The shared value cache stage of KeyedLoader, and MemoryValueCache."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given

from gqlbatch import (
    NOT_FOUND,
    CacheCallInfo,
    CircuitBreaker,
    KeyedLoader,
    MemoryValueCache,
    MissingKeyError,
    ValueCache,
    add_observer,
    remove_observer,
)
from tests._harness import bounded
from tests._interleavings import play, steps

pytestmark = pytest.mark.usefixtures("loop_reports")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Spy:
    """A ValueCache over a MemoryValueCache that records each call; may fail or hang."""

    def __init__(self, inner: ValueCache | None = None) -> None:
        self.inner = inner or MemoryValueCache()
        self.calls: list[tuple[str, Any]] = []
        self.fail: BaseException | None = None
        self.failing = {"get", "set", "delete"}  # the operations ``fail`` applies to
        self.hang = False

    async def _maybe_fail(self) -> None:
        if self.hang:
            await asyncio.Event().wait()
        if self.fail is not None and self.calls[-1][0] in self.failing:
            raise self.fail

    async def get_many(self, keys: Sequence[Hashable], /) -> Mapping[Hashable, Any]:
        self.calls.append(("get", list(keys)))
        await self._maybe_fail()
        return await self.inner.get_many(keys)

    async def set_many(
        self, items: Mapping[Hashable, Any], ttl: float | None, /, *, read: Mapping[Hashable, Any]
    ) -> None:
        self.calls.append(("set", dict(items)))
        await self._maybe_fail()
        await self.inner.set_many(items, ttl, read=read)

    async def delete_many(self, keys: Sequence[Hashable], /) -> None:
        self.calls.append(("delete", list(keys)))
        await self._maybe_fail()
        await self.inner.delete_many(keys)


class Source:
    """A batch function over a dict, recording the keys of each call."""

    def __init__(self, rows: dict[Any, Any]) -> None:
        self.rows = rows
        self.calls: list[list[Any]] = []

    async def __call__(self, keys: list[Any]) -> dict[Any, Any]:
        self.calls.append(list(keys))
        return {key: self.rows[key] for key in keys if key in self.rows}


def _loader(source: Any, cache: ValueCache, **options: Any) -> KeyedLoader[Any, Any]:
    return KeyedLoader(source, value_cache=cache, name="user", **options)


async def test_the_shared_cache_is_asked_once_per_batch_and_only_lacking_keys_are_fetched() -> None:
    spy = Spy()
    source = Source({1: "ada", 2: "grace", 3: "linus"})
    await _loader(source, spy).load_many([1, 2])
    spy.calls.clear()
    source.calls.clear()
    values = await _loader(source, spy).load_many([1, 2, 3])
    assert values == ["ada", "grace", "linus"]
    assert spy.calls == [("get", [1, 2, 3]), ("set", {3: "linus"})]
    assert source.calls == [[3]]


async def test_another_request_is_answered_from_the_shared_cache_without_the_batch_function() -> (
    None
):
    cache = MemoryValueCache()
    source = Source({1: "ada"})
    assert await _loader(source, cache).load(1) == "ada"
    second = _loader(source, cache)
    assert await second.load(1) == "ada"
    assert source.calls == [[1]]
    stats = second.stats
    assert (stats.value_cache_hits, stats.value_cache_misses, stats.batches) == (1, 0, 1)


async def test_per_key_exceptions_are_never_stored() -> None:
    spy = Spy()

    async def fetch(keys: list[int]) -> dict[int, Any]:
        return {1: ValueError("row 1 is broken"), 2: "grace"}

    first = await _loader(fetch, spy).load_many([1, 2], return_exceptions=True)
    assert isinstance(first[0], ValueError)
    assert ("set", {2: "grace"}) in spy.calls
    assert len(spy.inner) == 1  # type: ignore[arg-type]


async def test_misses_are_not_stored_unless_cache_misses_ttl_is_given() -> None:
    cache = MemoryValueCache()
    source = Source({})
    assert await _loader(source, cache).load(7) is None
    assert await _loader(source, cache).load(7) is None
    assert source.calls == [[7], [7]]

    stored = MemoryValueCache()
    await _loader(source, stored, cache_misses_ttl=30).load(8)
    assert await stored.get_many([8]) == {8: NOT_FOUND}
    with pytest.raises(MissingKeyError):
        await _loader(source, stored, missing="error").load(8)
    assert source.calls[-1] == [8]  # the stored miss answered the second loader


async def test_a_failing_shared_cache_is_skipped_and_the_batch_function_answers() -> None:
    spy = Spy()
    spy.fail = ConnectionError("redis is down")
    source = Source({1: "ada", 2: "grace"})
    loader = _loader(source, spy)
    assert await loader.load_many([1, 2]) == ["ada", "grace"]
    assert source.calls == [[1, 2]]
    assert [op for op, _ in spy.calls] == ["get"]  # no fill without a read
    assert loader.stats.value_cache_errors == 1


async def test_a_hanging_shared_cache_is_given_up_after_the_timeout() -> None:
    spy = Spy()
    spy.hang = True
    source = Source({1: "ada"})
    loader = _loader(source, spy, value_cache_timeout_ms=5)
    assert await loader.load(1) == "ada"
    assert loader.stats.value_cache_errors == 1


async def test_the_circuit_opens_after_repeated_failures_and_one_trial_closes_it() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=2, reset_s=10, clock=clock)
    spy = Spy()
    spy.fail = ConnectionError("down")
    source = Source({1: "ada"})
    for _ in range(2):
        await _loader(source, spy, value_cache_breaker=breaker).load(1)
    assert breaker.state == "open"
    spy.calls.clear()
    skipped = _loader(source, spy, value_cache_breaker=breaker)
    assert await skipped.load(1) == "ada"
    assert spy.calls == []
    assert skipped.stats.value_cache_skips == 1
    clock.now += 10
    assert breaker.state == "half-open"
    spy.fail = None
    trial = _loader(source, spy, value_cache_breaker=breaker)
    assert await trial.load(1) == "ada"
    assert breaker.state == "closed"
    assert spy.calls[0] == ("get", [1])


async def test_invalidations_are_tried_even_while_the_circuit_is_open() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, reset_s=60, clock=clock)
    spy = Spy()
    spy.fail = ConnectionError("down")
    await _loader(Source({}), spy, value_cache_breaker=breaker).load(1)
    assert breaker.state == "open"
    spy.fail = None
    spy.calls.clear()
    await _loader(Source({}), spy, value_cache_breaker=breaker).invalidate(1)
    assert spy.calls == [("delete", [1])]
    assert breaker.state == "closed"  # and a success closes it


async def test_an_invalidation_may_take_longer_than_a_read() -> None:
    spy = Spy()
    slow = asyncio.Event()

    async def delete_slowly(keys: Sequence[Hashable], /) -> None:
        await asyncio.sleep(0.05)
        slow.set()

    spy.delete_many = delete_slowly  # type: ignore[method-assign]
    loader = _loader(Source({}), spy, value_cache_timeout_ms=1)
    await loader.invalidate(1)
    assert slow.is_set()
    assert loader.stats.value_cache_errors == 0
    quick = _loader(Source({}), spy, value_cache_invalidate_timeout_ms=1)
    await quick.invalidate(1)
    assert quick.stats.value_cache_errors == 1


async def test_a_failed_trial_opens_the_circuit_again() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, reset_s=5, clock=clock)
    spy = Spy()
    spy.fail = ConnectionError("down")
    await _loader(Source({}), spy, value_cache_breaker=breaker).load(1)
    clock.now += 5
    assert breaker.allow()
    assert not breaker.allow()  # one trial at a time
    breaker.failed()
    assert breaker.state == "open"


async def test_each_cache_object_has_one_default_breaker_shared_by_its_loaders() -> None:
    cache = MemoryValueCache()
    a = _loader(Source({}), cache)
    b = _loader(Source({}), cache)
    assert a.value_cache_breaker is b.value_cache_breaker is not None
    assert KeyedLoader(Source({})).value_cache_breaker is None


async def test_invalidate_reaches_the_shared_cache_before_it_is_done() -> None:
    cache = MemoryValueCache()
    source = Source({1: "ada"})
    await _loader(source, cache).load(1)
    source.rows[1] = "ada lovelace"
    writer = _loader(source, cache)
    await writer.invalidate(1)
    assert await _loader(source, cache).load(1) == "ada lovelace"


async def test_a_caller_cancelled_while_it_awaits_an_invalidation_does_not_cancel_it() -> None:
    spy = Spy()
    started = asyncio.Event()
    release = asyncio.Event()
    deleted: list[Sequence[Hashable]] = []

    async def slow_delete(keys: Sequence[Hashable], /) -> None:
        started.set()
        await release.wait()
        deleted.append(keys)

    spy.delete_many = slow_delete  # type: ignore[method-assign]
    loader = _loader(Source({}), spy)

    async def mutation() -> None:
        await loader.invalidate(1)

    answering = asyncio.ensure_future(mutation())
    await started.wait()
    answering.cancel()  # the client went away
    with pytest.raises(asyncio.CancelledError):
        await answering
    release.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert deleted == [[1]]


async def test_clear_and_clear_many_reach_the_shared_cache_in_the_background() -> None:
    spy = Spy()
    loader = _loader(Source({1: "a", 2: "b"}), spy)
    loader.clear(1)
    loader.clear_many([1, 2])
    await asyncio.sleep(0)
    assert [call for call in spy.calls if call[0] == "delete"] == [
        ("delete", [1]),
        ("delete", [1, 2]),
    ]


async def test_a_failed_invalidation_is_delivered_before_the_next_read_which_skips_the_cache() -> (
    None
):
    spy = Spy()
    source = Source({1: "old"})
    await _loader(source, spy).load(1)
    spy.fail = ConnectionError("redis unreachable for deletes")
    spy.failing = {"delete"}
    source.rows[1] = "new"
    writer = _loader(source, spy)
    await writer.invalidate(1)  # fails, and is kept
    assert writer.stats.value_cache_errors == 1
    assert await _loader(source, spy).load(1) == "new"  # not the cached "old"
    spy.fail = None
    spy.calls.clear()
    assert await _loader(source, spy).load(1) == "new"
    assert [op for op, _ in spy.calls] == ["delete", "get", "set"]
    spy.calls.clear()
    assert await _loader(source, spy).load(1) == "new"
    assert spy.calls == [("get", [1])]  # delivered once, then reads as usual


async def test_a_fill_after_an_invalidation_does_not_store_the_value_read_before_it() -> None:
    """The fill race, forced: read the old row, the writer commits and invalidates, fill."""
    cache = MemoryValueCache()
    rows = {1: "old"}
    reading = asyncio.Event()
    written = asyncio.Event()

    async def slow_read(keys: list[int]) -> dict[int, str]:
        found = {key: rows[key] for key in keys}  # the old row, read before the write
        reading.set()
        await written.wait()
        return found

    reader = asyncio.ensure_future(_loader(slow_read, cache).load(1))
    await reading.wait()
    rows[1] = "new"  # the writer commits ...
    await _loader(slow_read, cache).invalidate(1)  # ... and invalidates
    written.set()
    assert await reader == "old"  # the reader's own request may see what it read
    assert await cache.get_many([1]) == {}  # but it did not store it for anyone else


async def test_fills_of_keys_not_invalidated_still_happen_after_an_unrelated_invalidation() -> None:
    cache = MemoryValueCache()
    read = await cache.get_many([1, 2])
    await cache.delete_many([1])
    await cache.set_many({1: "x", 2: "y"}, None, read=read)
    assert await cache.get_many([1, 2]) == {2: "y"}


async def test_a_fill_older_than_the_fill_window_is_dropped() -> None:
    clock = Clock()
    cache = MemoryValueCache(fill_window_s=30, clock=clock)
    read = await cache.get_many([1])
    clock.now += 31
    await cache.set_many({1: "x"}, None, read=read)
    assert len(cache) == 0


async def test_memory_cache_entries_expire_after_their_ttl_and_the_least_recent_goes_first() -> (
    None
):
    clock = Clock()
    cache = MemoryValueCache(max_entries=2, ttl=60, clock=clock)
    await cache.set_many({1: "a", 2: "b"}, None, read=await cache.get_many([]))
    await cache.get_many([1])  # 1 is now the most recent
    await cache.set_many({3: "c"}, 5, read=await cache.get_many([]))
    assert await cache.get_many([1, 2, 3]) == {1: "a", 3: "c"}
    clock.now += 5
    assert await cache.get_many([1, 3]) == {1: "a"}
    clock.now += 55
    assert await cache.get_many([1]) == {}


async def test_rows_with_key_of_many_and_cache_key_go_through_the_shared_cache() -> None:
    cache = MemoryValueCache()
    rows = [("ada", 1), ("grace", 1), ("linus", 2)]
    calls: list[list[Any]] = []

    async def by_team(keys: list[dict[str, int]]) -> list[tuple[str, int]]:
        calls.append(keys)
        wanted = {k["team"] for k in keys}
        return [row for row in rows if row[1] in wanted]

    def make() -> KeyedLoader[Any, Any]:
        return KeyedLoader(
            by_team,
            key_of=lambda row: {"team": row[1]},
            many=True,
            cache_key=lambda k: k["team"],
            value_cache=cache,
        )

    first = await make().load_many([{"team": 1}, {"team": 3}])
    second = await make().load_many([{"team": 1}, {"team": 2}])
    assert first == [[("ada", 1), ("grace", 1)], []]
    assert second == [[("ada", 1), ("grace", 1)], [("linus", 2)]]
    assert calls == [[{"team": 1}, {"team": 3}], [{"team": 2}]]


async def test_observers_see_each_shared_cache_call() -> None:
    seen: list[CacheCallInfo] = []

    class Observer:
        def batch_started(self, info: Any) -> None:
            pass

        def batch_finished(self, *args: Any) -> None:
            pass

        def value_cache_call(self, info: CacheCallInfo) -> None:
            seen.append(info)

    observer = Observer()
    add_observer(observer)
    try:
        await _loader(Source({1: "ada"}), MemoryValueCache()).load_many([1, 2])
    finally:
        remove_observer(observer)
    assert [(i.operation, i.keys, i.hits, i.outcome, i.loader) for i in seen] == [
        ("get", 2, 0, "ok", "user"),
        ("set", 1, 0, "ok", "user"),
    ]
    assert seen[0].circuit == "closed"


def test_options_are_checked_naming_the_argument() -> None:
    with pytest.raises(TypeError, match="value_cache must have async get_many"):
        KeyedLoader(Source({}), value_cache={})  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="value_cache_timeout_ms"):
        KeyedLoader(Source({}), value_cache=MemoryValueCache(), value_cache_timeout_ms=0)
    with pytest.raises(ValueError, match="cache_misses_ttl"):
        KeyedLoader(Source({}), value_cache=MemoryValueCache(), cache_misses_ttl=-1)
    with pytest.raises(TypeError, match="value_cache_breaker must be a CircuitBreaker"):
        KeyedLoader(
            Source({}),
            value_cache=MemoryValueCache(),
            value_cache_breaker="no",  # type: ignore[call-overload]
        )

    class Unhashable(Spy):
        __hash__ = None  # type: ignore[assignment]  # as a dataclass with eq=True

    with pytest.raises(TypeError, match="value_cache must be hashable and weakly"):
        KeyedLoader(Source({}), value_cache=Unhashable())
    with pytest.raises(ValueError, match="max_entries must be >= 1"):
        MemoryValueCache(max_entries=0)


@given(steps)
@bounded(300)
def test_no_interleaving_of_readers_and_writers_reads_an_invalidated_value(
    script: list[tuple[int, int]],
) -> None:
    asyncio.run(play(MemoryValueCache(), script))


async def test_the_invalidation_log_keeps_only_the_fill_window() -> None:
    clock = Clock()
    cache = MemoryValueCache(fill_window_s=10, clock=clock)
    await cache.delete_many([1, 2])
    clock.now += 11
    await cache.delete_many([3])
    assert list(cache._deleted) == [3]  # the older ones can no longer matter


async def test_undelivered_invalidations_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import gqlbatch._value_cache as module

    monkeypatch.setattr(module, "MAX_UNDELIVERED", 2)
    spy = Spy()
    spy.fail = ConnectionError("down")
    await _loader(Source({}), spy).invalidate(1, 2, 3)
    assert list(module._UNDELIVERED[spy]) == [2, 3]  # past the bound, the TTL bounds staleness


async def test_an_observer_without_the_hook_is_skipped_and_one_that_raises_is_reported() -> None:
    reports: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: reports.append(ctx))

    class Plain:
        def batch_started(self, info: Any) -> None:
            pass

        def batch_finished(self, *args: Any) -> None:
            pass

    class Broken(Plain):
        def value_cache_call(self, info: CacheCallInfo) -> None:
            raise RuntimeError("observer bug")

    plain, broken = Plain(), Broken()
    add_observer(plain)
    add_observer(broken)
    try:
        assert await _loader(Source({1: "a"}), MemoryValueCache()).load(1) == "a"
    finally:
        remove_observer(plain)
        remove_observer(broken)
    assert [type(r["exception"]) for r in reports] == [RuntimeError, RuntimeError]  # get, set


def test_the_public_objects_read_well() -> None:
    import pickle

    assert repr(NOT_FOUND) == "NOT_FOUND"
    assert pickle.loads(pickle.dumps(NOT_FOUND)) is NOT_FOUND
    assert repr(MemoryValueCache(max_entries=5)) == "<MemoryValueCache 0/5>"
    assert repr(CircuitBreaker()) == "<CircuitBreaker closed failures=5 reset_s=5.0>"


def test_clear_outside_an_event_loop_raises_and_leaves_no_coroutine_behind() -> None:
    loader = KeyedLoader(Source({}), value_cache=MemoryValueCache())
    with pytest.raises(RuntimeError, match="no running event loop"):
        loader.clear(1)
    gc.collect()  # a coroutine made and never awaited would warn here (-W error)
