"""Strawberry registries with a shared value cache: declared, or given per loader at run time."""

from __future__ import annotations

from typing import Any

import pytest

from gqlbatch import MemoryValueCache
from gqlbatch.strawberry import LoaderRegistry, invalidate, loader, write_through

pytestmark = pytest.mark.usefixtures("loop_reports")

ROWS: dict[int, str] = {}
CALLS: list[list[int]] = []


async def fetch(keys: list[int]) -> dict[int, str]:
    CALLS.append(list(keys))
    return {key: ROWS[key] for key in keys if key in ROWS}


DECLARED = MemoryValueCache()


class Loaders(LoaderRegistry):
    user = loader(fetch, value_cache=DECLARED, value_cache_ttl=60)
    post = loader(fetch)


@pytest.fixture(autouse=True)
def rows() -> None:
    ROWS.clear()
    ROWS.update({1: "ada", 2: "grace", 11: "ada", 12: "grace"})
    CALLS.clear()


async def test_a_declared_value_cache_is_shared_by_the_registries_of_all_requests() -> None:
    assert await Loaders().user.load(1) == "ada"
    assert await Loaders().user.load(1) == "ada"
    assert CALLS == [[1]]


async def test_loader_options_give_one_loader_a_value_cache_known_at_run_time() -> None:
    shared = MemoryValueCache()
    for _ in range(2):
        registry = Loaders(loader_options={"post": {"value_cache": shared}})
        assert await registry.post.load(2) == "grace"
    assert CALLS == [[2]]


async def test_write_through_and_invalidate_reach_the_shared_cache_when_awaited() -> None:
    await Loaders().user.load_many([11, 12])
    ROWS.update({11: "ada lovelace", 12: "grace hopper"})
    mutation = Loaders()
    await write_through(mutation.user, 11, "ada lovelace")
    await invalidate(mutation.user, 12)
    assert await mutation.user.load(11) == "ada lovelace"  # primed: no read
    assert await Loaders().user.load_many([11, 12]) == ["ada lovelace", "grace hopper"]
    assert CALLS == [[11, 12], [11, 12]]


async def test_invalidate_without_keys_or_value_cache_is_done_at_once() -> None:
    registry = Loaders()
    await registry.post.load(1)
    await invalidate(registry.post)
    await invalidate(registry.user)
    await write_through(registry.post, 1, "x")


def test_loader_options_name_declared_loaders_and_known_options_only() -> None:
    with pytest.raises(TypeError, match="Loaders declares no loader 'comment'"):
        Loaders(loader_options={"comment": {"cache": False}})
    bad: dict[str, Any] = {"user": {"name": "x", "colour": "red"}}
    with pytest.raises(TypeError, match="'colour', 'name' cannot be set for loader 'user'"):
        Loaders(loader_options=bad)
