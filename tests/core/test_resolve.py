"""KeyedLoader.resolve: the value itself when the cache holds it, else load's future."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gqlbatch import KeyedLoader, MissingKeyError
from tests._harness import bounded
from tests._loop import run_virtual

pytestmark = pytest.mark.usefixtures("loop_reports")


async def times_ten(keys: list[int]) -> dict[int, int]:
    await asyncio.sleep(0)
    return {key: key * 10 for key in keys if key >= 0}


async def settle(result: Any) -> Any:
    """What a resolver's result gives GraphQL: awaited if awaitable, else as it is."""
    return await result if inspect.isawaitable(result) else result


# -- what it returns ---------------------------------------------------------------------


async def test_a_fetched_value_is_returned_itself_not_a_future() -> None:
    loader = KeyedLoader(times_ten)
    assert await loader.load(1) == 10
    assert loader.resolve(1) == 10


async def test_a_primed_value_is_returned_itself() -> None:
    loader = KeyedLoader(times_ten)
    loader.prime_many({1: 11, 2: 22})
    assert [loader.resolve(1), loader.resolve(2)] == [11, 22]
    assert loader.stats.batches == 0


async def test_values_left_by_load_many_are_returned_themselves() -> None:
    loader = KeyedLoader(times_ten)
    assert await loader.load_many([1, 2]) == [10, 20]
    assert loader.resolve(2) == 20


async def test_a_key_not_cached_gives_a_future_batched_with_the_loads() -> None:
    calls: list[list[int]] = []

    async def fetch(keys: list[int]) -> dict[int, int]:
        calls.append(keys)
        return await times_ten(keys)

    loader = KeyedLoader(fetch)
    pending = [loader.resolve(1), loader.load(2), loader.resolve(3), loader.resolve(1)]
    futures = [result for result in pending if isinstance(result, asyncio.Future)]
    assert len(futures) == 4
    assert await asyncio.gather(*futures) == [10, 20, 30, 10]
    assert calls == [[1, 2, 3]]


async def test_a_key_in_flight_gives_a_future_joining_its_batch() -> None:
    loader = KeyedLoader(times_ten)
    first = loader.load(1)
    await asyncio.sleep(0)  # dispatched, not answered
    joined = loader.resolve(1)
    assert isinstance(joined, asyncio.Future)
    assert list(await asyncio.gather(first, joined)) == [10, 10]
    assert loader.stats.batches == 1


async def test_a_miss_is_none_itself_by_default() -> None:
    loader = KeyedLoader(times_ten)
    assert await loader.load(-1) is None
    assert loader.resolve(-1) is None


async def test_a_cached_miss_with_missing_error_fails_through_a_future() -> None:
    loader = KeyedLoader(times_ten, missing="error")
    with pytest.raises(MissingKeyError):
        await loader.load(-1)
    result = loader.resolve(-1)
    assert isinstance(result, asyncio.Future)
    with pytest.raises(MissingKeyError):
        await result
    assert loader.stats.batches == 1  # the miss was cached


async def test_a_failure_is_not_cached_so_the_next_resolve_loads_again() -> None:
    attempts: list[list[int]] = []

    async def flaky(keys: list[int]) -> dict[int, Any]:
        attempts.append(keys)
        return {key: ValueError("down") if len(attempts) == 1 else key for key in keys}

    loader = KeyedLoader(flaky)
    with pytest.raises(ValueError, match="down"):
        await settle(loader.resolve(1))
    again = loader.resolve(1)
    assert isinstance(again, asyncio.Future)
    assert await again == 1
    assert loader.resolve(1) == 1


async def test_a_value_primed_as_a_pending_future_is_waited_for() -> None:
    loader = KeyedLoader(times_ten)
    value: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    loader.prime(1, value)
    waiting = loader.resolve(1)
    assert isinstance(waiting, asyncio.Future)
    value.set_result(7)
    assert await waiting == 7
    assert loader.resolve(1) == 7


async def test_cache_key_and_cache_map_loaders_return_cached_values_themselves() -> None:
    class Map:
        def __init__(self) -> None:
            self.entries: dict[Hashable, Any] = {}

        def get(self, key: Hashable) -> Any:
            return self.entries.get(key)

        def set(self, key: Hashable, value: Any) -> None:
            self.entries[key] = value

        def delete(self, key: Hashable) -> None:
            self.entries.pop(key, None)

        def clear(self) -> None:
            self.entries.clear()

    async def by_name(keys: list[str]) -> dict[str, str]:
        return {key: key.upper() for key in keys}

    folded = KeyedLoader(by_name, cache_key=str.lower)
    mapped = KeyedLoader(by_name, cache_map=Map())
    for loader in (folded, mapped):
        assert await settle(loader.resolve("ada")) == "ADA"
        assert loader.resolve("ada") == "ADA"
        loader.prime("bob", "Bob")
        assert loader.resolve("bob") == "Bob"
    assert folded.resolve("ADA") == "ADA"  # the same cache key
    assert mapped.stats.cache_hits == folded.stats.cache_hits - 1 == 2


# -- checks and statistics -----------------------------------------------------------------


async def test_resolve_raises_at_once_what_load_raises() -> None:
    loader = KeyedLoader(times_ten, key_type=int)
    loader.prime(1, 10)
    with pytest.raises(TypeError, match="key None is not accepted"):
        loader.resolve(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected int"):
        loader.resolve("1")  # type: ignore[arg-type]
    loose = KeyedLoader(times_ten)
    with pytest.raises(TypeError, match="unhashable"):
        loose.resolve([1])  # type: ignore[arg-type]
    loose.prime(None, 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key None is not accepted"):
        loose.resolve(None)  # type: ignore[arg-type]


async def test_a_hit_counts_as_a_load_and_a_cache_hit() -> None:
    loader = KeyedLoader(times_ten)
    await loader.load(1)
    loader.prime(2, 20)
    loader.resolve(1)
    loader.resolve(2)
    stats = loader.stats
    assert (stats.loads, stats.cache_hits, stats.batches) == (3, 2, 1)


# -- resolve(k) is awaiting load(k), whatever happened before --------------------------------


@dataclass(frozen=True)
class Step:
    op: str  # "load", "resolve", "prime", "clear", "tick"
    key: int


steps = st.lists(
    st.builds(
        Step,
        st.sampled_from(["load", "resolve", "resolve", "prime", "clear", "tick"]),
        st.integers(-2, 5),
    ),
    max_size=30,
)


def outcome(future: asyncio.Future[Any]) -> Any:
    error = future.exception()
    return (type(error).__name__, str(error)) if error else future.result()


@bounded(150)
@given(steps, st.sampled_from(["none", "error"]), st.booleans())
def test_resolve_is_awaiting_load_for_any_history(
    script: list[Step], missing: str, cache: bool
) -> None:
    """Two loaders run the same script; one resolves where the other loads.

    Every caller gets the same outcome, the batch function sees the same
    calls, and the statistics agree.
    """

    async def run(use_resolve: bool) -> tuple[list[Any], list[list[int]], Any]:
        calls: list[list[int]] = []

        async def fetch(keys: list[int]) -> dict[int, Any]:
            calls.append(sorted(keys))
            await asyncio.sleep(0)
            return {k: (ValueError(f"bad {k}") if k == 5 else k * 10) for k in keys if k >= 0}

        loader: KeyedLoader[int, Any] = KeyedLoader(
            fetch,
            missing=missing,  # type: ignore[call-overload]
            cache=cache,
        )
        futures: list[asyncio.Future[Any]] = []
        for step in script:
            if step.op == "tick":
                await asyncio.sleep(0)
            elif step.op == "prime":
                loader.prime(step.key, step.key + 1)
            elif step.op == "clear":
                loader.clear(step.key)
            elif step.op == "resolve" and use_resolve:
                result = loader.resolve(step.key)
                if not isinstance(result, asyncio.Future):
                    done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                    done.set_result(result)
                    result = done
                futures.append(result)
            else:
                futures.append(loader.load(step.key))
        await asyncio.wait(futures) if futures else None
        return [outcome(f) for f in futures], calls, loader.stats

    assert run_virtual(lambda: run(True)) == run_virtual(lambda: run(False))
