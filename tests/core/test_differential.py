"""Differential tests against aiodataloader 0.4.3 for index-aligned batch functions.

The same crowd of callers runs against an aiodataloader ``DataLoader`` and against a
``KeyedLoader`` whose batch function wraps the same index-aligned one
(``dict(zip(keys, values))``); every caller must get the same value (or an
exception of the same type and message) from both. Then, for the cases where
aiodataloader is fragile, each test shows what aiodataloader does and that
gqlbatch does the right thing:

* cancelling one caller of a key cancels every other caller of that key in
  aiodataloader (one shared future); in gqlbatch it affects nobody else;
* a batch function that raises CancelledError leaves aiodataloader's callers
  pending forever; gqlbatch fails each of them with a BatchError of its own;
* a batch function that raises hands aiodataloader's callers one shared exception
  object; gqlbatch gives each caller its own BatchError with that cause;
* resolvers that await a few times before loading split aiodataloader's level
  into several batches; gqlbatch makes one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiodataloader import DataLoader
from hypothesis import given, settings
from hypothesis import strategies as st

from gqlbatch import BatchError, KeyedLoader
from tests._harness import bounded
from tests._loop import run_virtual


def index_aligned(failing: frozenset[int]) -> Any:
    """An index-aligned batch function: a value per key, an exception for ``failing`` keys."""

    async def batch(keys: list[int]) -> list[Any]:
        await asyncio.sleep(0)
        return [KeyError(f"no row {k}") if k in failing else f"row {k}" for k in keys]

    return batch


def by_key(batch: Any) -> Any:
    """The same batch function, answering by key as KeyedLoader wants."""

    async def keyed(keys: list[int]) -> dict[int, Any]:
        return dict(zip(keys, await batch(keys), strict=True))

    return keyed


def normal(outcome: Any) -> Any:
    """An outcome as compared across libraries: exceptions by type and message."""
    if isinstance(outcome, BaseException):
        return (type(outcome).__name__, str(outcome))
    return outcome


@dataclass
class Caller:
    keys: list[int]
    many: bool
    awaits: int


@dataclass
class Crowd:
    callers: list[Caller]
    failing: frozenset[int]
    cache: bool
    max_batch_size: int | None
    waves: int  # the crowd arrives in this many waves, each after a virtual millisecond


@st.composite
def crowds(draw: st.DrawFn) -> Crowd:
    keys = st.integers(0, 12)
    failing = frozenset(draw(st.lists(keys, max_size=3)))
    callers = []
    for _ in range(draw(st.integers(1, 20))):
        many = draw(st.booleans())
        chosen = draw(st.lists(keys, min_size=1, max_size=4)) if many else [draw(keys)]
        if many:  # load_many fails as a whole in aiodataloader: keep its keys good
            chosen = [k for k in chosen if k not in failing] or [99]
        callers.append(Caller(chosen, many, draw(st.integers(0, 3))))
    return Crowd(
        callers=callers,
        failing=failing,
        cache=draw(st.booleans()),
        max_batch_size=draw(st.none() | st.integers(1, 4)),
        waves=draw(st.integers(1, 3)),
    )


async def _serve(crowd: Crowd, load: Any, load_many: Any) -> list[Any]:
    async def one(n: int, caller: Caller) -> Any:
        await asyncio.sleep((n % crowd.waves) / 1000)
        for _ in range(caller.awaits):
            await asyncio.sleep(0)
        if caller.many:
            return await load_many(caller.keys)
        return await load(caller.keys[0])

    outcomes = await asyncio.gather(
        *(one(n, c) for n, c in enumerate(crowd.callers)), return_exceptions=True
    )
    return [[normal(o) for o in x] if isinstance(x, list) else normal(x) for x in outcomes]


@given(crowds())
@bounded(max_examples=150)
def test_every_caller_gets_the_same_outcome_as_from_aiodataloader(crowd: Crowd) -> None:
    batch = index_aligned(crowd.failing)

    async def theirs() -> list[Any]:
        loader: DataLoader[int, Any] = DataLoader(
            batch, cache=crowd.cache, max_batch_size=crowd.max_batch_size
        )
        return await _serve(crowd, loader.load, loader.load_many)

    async def ours() -> list[Any]:
        loader = KeyedLoader(by_key(batch), cache=crowd.cache, max_batch_size=crowd.max_batch_size)
        async with loader:
            return await _serve(crowd, loader.load, loader.load_many)

    assert run_virtual(ours) == run_virtual(theirs)


# -- where aiodataloader is fragile ------------------------------------------------------


def test_cancelling_one_caller_cancels_the_others_in_aiodataloader_but_not_in_gqlbatch() -> None:
    batch = index_aligned(frozenset())

    async def crowd(load: Any) -> tuple[bool, Any]:
        async def resolver() -> Any:
            return await load(1)

        victim = asyncio.create_task(resolver())
        bystander = asyncio.create_task(resolver())
        await asyncio.sleep(0)  # both now await their future
        victim.cancel()
        outcome = (await asyncio.gather(bystander, return_exceptions=True))[0]
        await asyncio.gather(victim, return_exceptions=True)
        return victim.cancelled(), outcome

    async def theirs() -> tuple[bool, Any]:
        loader: DataLoader[int, Any] = DataLoader(batch)
        return await crowd(loader.load)

    async def ours() -> tuple[bool, Any]:
        async with KeyedLoader(by_key(batch)) as loader:
            return await crowd(loader.load)

    cancelled, outcome = run_virtual(theirs)
    assert cancelled and isinstance(outcome, asyncio.CancelledError)  # the bystander too
    cancelled, outcome = run_virtual(ours)
    assert cancelled and outcome == "row 1"


def test_a_batch_function_raising_cancelled_error_hangs_aiodataloader_not_gqlbatch() -> None:
    async def rogue(keys: list[int]) -> list[Any]:
        raise asyncio.CancelledError

    async def rogue_by_key(keys: list[int]) -> dict[int, Any]:
        raise asyncio.CancelledError

    async def theirs() -> int:
        loader: DataLoader[int, Any] = DataLoader(rogue)
        futures = [loader.load(1), loader.load(2)]
        _, pending = await asyncio.wait(futures, timeout=60)  # a minute (virtual)
        for future in futures:
            future.cancel()
        return len(pending)

    async def ours() -> list[Any]:
        async with KeyedLoader(rogue_by_key, name="rogue") as loader:
            return list(
                await asyncio.gather(
                    loader.load(1), loader.load(1), loader.load(2), return_exceptions=True
                )
            )

    assert run_virtual(theirs) == 2  # still waiting after a minute
    errors = run_virtual(ours)
    assert all(isinstance(e, BatchError) for e in errors)
    assert [e.key for e in errors] == [1, 1, 2]
    assert all(isinstance(e.__cause__, asyncio.CancelledError) for e in errors)
    assert len({id(e) for e in errors}) == 3


def test_a_failing_batch_shares_one_exception_in_aiodataloader_not_in_gqlbatch() -> None:
    async def broken(keys: list[int]) -> list[Any]:
        raise ConnectionError("database went away")

    async def theirs() -> list[Any]:
        loader: DataLoader[int, Any] = DataLoader(broken, cache=False)
        return await asyncio.gather(*(loader.load(k) for k in [1, 1, 2]), return_exceptions=True)

    async def ours() -> list[Any]:
        async with KeyedLoader(by_key(broken), cache=False) as loader:
            values: list[Any] = await asyncio.gather(
                *(loader.load(k) for k in [1, 1, 2]), return_exceptions=True
            )
            return values

    shared = run_virtual(theirs)
    assert shared[0] is shared[1] is shared[2]  # one object, raised into three callers
    errors = run_virtual(ours)
    assert len({id(e) for e in errors}) == 3
    assert [e.key for e in errors] == [1, 1, 2]
    assert all(e.attempts == 1 for e in errors)
    assert all(normal(e.__cause__) == normal(shared[0]) for e in errors)


async def _level(load: Any, awaits: list[int]) -> list[Any]:
    """Sibling resolvers: resolver ``k`` awaits ``awaits[k]`` times, then loads key ``k``."""

    async def resolver(key: int, n: int) -> Any:
        for _ in range(n):
            await asyncio.sleep(0)
        return await load(key)

    return await asyncio.gather(*(resolver(k, n) for k, n in enumerate(awaits)))


def _batches_of_a_level(awaits: list[int]) -> tuple[int, int]:
    """Batch function calls for one level: (aiodataloader's, gqlbatch's)."""
    calls: list[list[int]] = []
    batch = index_aligned(frozenset())

    async def recorded(keys: list[int]) -> list[Any]:
        calls.append(keys)
        values: list[Any] = await batch(keys)
        return values

    async def theirs() -> list[Any]:
        loader: DataLoader[int, Any] = DataLoader(recorded)
        return await _level(loader.load, awaits)

    async def ours() -> list[Any]:
        async with KeyedLoader(by_key(recorded)) as loader:
            return await _level(loader.load, awaits)

    expected = [f"row {k}" for k in range(len(awaits))]
    assert run_virtual(theirs) == expected
    their_batches = len(calls)
    calls.clear()
    assert run_virtual(ours) == expected
    return their_batches, len(calls)


def test_a_crowd_of_resolvers_awaiting_first_splits_aiodataloader_but_not_gqlbatch() -> None:
    theirs, ours = _batches_of_a_level([0, 1, 2, 3] * 25)
    assert theirs > 1
    assert ours == 1


def test_a_resolver_that_awaits_once_shares_the_batch_of_one_that_did_not() -> None:
    theirs, ours = _batches_of_a_level([0, 1])
    assert theirs == 1
    assert ours == 1


@given(st.lists(st.integers(0, 3), min_size=1, max_size=12))
@settings(bounded(max_examples=100))
def test_resolvers_awaiting_zero_to_three_times_make_one_batch_never_more_than_aiodataloader(
    awaits: list[int],
) -> None:
    theirs, ours = _batches_of_a_level(awaits)
    assert ours <= theirs
    assert ours == 1
