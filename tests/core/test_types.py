"""What a user's type checker sees: ``LoaderOptions`` passed on, ``async with``, error modes.

The ``assert_type`` lines are checked by ``mypy --strict`` over this file; at run
time the tests check that the same calls work and that unknown options fail.
"""

from __future__ import annotations

from typing import Unpack, assert_type

import pytest

from gqlbatch import BatchedQueue, KeyedLoader, LoaderOptions
from gqlbatch._options import ENGINE_OPTIONS
from gqlbatch._types import EngineOptions


async def names(keys: list[int]) -> dict[int, str]:
    return {key: str(key) for key in keys}


def make_loader(**options: Unpack[LoaderOptions[int]]) -> KeyedLoader[int, str | None]:
    """How an integration passes options on: typed, without repeating them."""
    return KeyedLoader(names, **options)


async def test_async_with_gives_the_loader_its_own_type() -> None:
    async with KeyedLoader(names) as loader:
        assert_type(loader, KeyedLoader[int, str | None])
        assert await loader.load(1) == "1"


async def test_options_passed_on_reach_the_loader() -> None:
    loader = make_loader(max_batch_size=2, error_mode="fail-fast", cache=False, name="n")
    assert loader.options.max_batch_size == 2
    assert loader.options.error_mode == "fail-fast"
    assert loader.name == "n"
    assert await loader.load(3) == "3"
    assert loader.stats.cache_hits == 0


def test_error_mode_takes_its_strings_without_a_cast() -> None:
    loader = KeyedLoader(names, error_mode="retry")
    assert loader.options.error_mode == "retry"


def test_an_unknown_loader_option_is_a_type_error_naming_it() -> None:
    with pytest.raises(
        TypeError, match="KeyedLoader\\(\\) got an unexpected keyword argument 'sise'"
    ):
        KeyedLoader(names, sise=3)  # type: ignore[call-overload]  # the misspelling under test


def test_an_unknown_queue_option_is_a_type_error_naming_it() -> None:
    async def process(items: list[int]) -> list[int]:
        return items

    with pytest.raises(
        TypeError, match="BatchedQueue\\(\\) got an unexpected keyword argument 'cache'"
    ):
        BatchedQueue(process, cache=False)  # type: ignore[call-arg]  # queues do not cache


def test_the_engine_options_typed_dict_matches_batch_options() -> None:
    assert set(EngineOptions.__optional_keys__) == set(ENGINE_OPTIONS)
    assert set(LoaderOptions.__optional_keys__) > set(ENGINE_OPTIONS)
