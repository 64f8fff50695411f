"""Misuse of the public API: every error message, pinned, naming the argument or loader."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from gqlbatch import BatchedQueue, BatchError, KeyedLoader


async def fetch(keys: list[int]) -> dict[int, int]:
    return {k: k for k in keys}


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"many": True}, ValueError, "many=True needs key_of, to group the rows by key"),
        ({"many": 1}, TypeError, "many must be a bool, got 1 (int)"),
        ({"missing": "maybe"}, ValueError, "missing must be one of 'none', 'error', got 'maybe'"),
        ({"missing": None}, TypeError, "missing must be a str, got None (NoneType)"),
        ({"key_type": 5}, TypeError, "key_type must be a type, a tuple of types, or None, got 5"),
        ({"cache": "yes"}, TypeError, "cache must be a bool, got 'yes' (str)"),
        ({"cache_key": "id"}, TypeError, "cache_key must be callable, got 'id' (str)"),
        ({"key_of": 3}, TypeError, "key_of must be callable, got 3 (int)"),
        ({"max_batch_size": -5}, ValueError, "max_batch_size must be >= 1, got -5"),
    ],
)
def test_keyed_loader_rejects_bad_arguments(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        KeyedLoader(fetch, **kwargs)


def test_a_batch_function_must_be_callable() -> None:
    with pytest.raises(TypeError, match=re.escape("batch function of loader 'x' must be callable")):
        KeyedLoader(42, name="x")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=re.escape("batch function of queue must be callable")):
        BatchedQueue(None)  # type: ignore[arg-type]


def test_the_queue_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=re.escape("max_queue_size must be >= 1, got 0")):
        BatchedQueue(fetch, max_queue_size=0)
    with pytest.raises(TypeError, match=re.escape("key_of must be callable, got 'id' (str)")):
        BatchedQueue(fetch, key_of="id")  # type: ignore[arg-type]


# -- bad keys given to load_many and clear, and results of the wrong shape ---------------


async def test_load_many_names_the_key_of_the_wrong_type() -> None:
    loader = KeyedLoader(fetch, key_type=int, name="user")
    with pytest.raises(
        TypeError, match=re.escape("loader 'user': key '2' is of type str, expected int")
    ):
        loader.load_many([1, "2"])  # type: ignore[list-item]
    assert loader.stats.loads == 0


@pytest.mark.parametrize("max_queue_size", [None, 1])
async def test_load_many_names_the_unhashable_key(max_queue_size: int | None) -> None:
    loader: KeyedLoader[Any, int | None] = KeyedLoader(
        fetch, name="user", max_queue_size=max_queue_size
    )
    with pytest.raises(TypeError, match=re.escape("loader 'user': key [2] is unhashable (list)")):
        loader.load_many([1, [2]])
    await loader.aclose()


def test_clear_names_the_unhashable_key() -> None:
    loader: KeyedLoader[Any, int | None] = KeyedLoader(fetch, name="user")
    with pytest.raises(TypeError, match=re.escape("loader 'user': key [1] is unhashable (list)")):
        loader.clear([1])


async def test_rows_given_as_a_mapping_fail_the_batch_of_a_key_of_loader() -> None:
    async def rows(keys: list[int]) -> Any:
        return {k: k for k in keys}

    loader = KeyedLoader(rows, key_of=lambda row: row, name="rows")
    with pytest.raises(BatchError) as failed:
        await loader.load(1)
    assert str(failed.value.__cause__) == (
        "batch function of loader 'rows' has key_of, so it must return an iterable of rows, "
        "got dict"
    )


async def test_a_keyed_processor_must_return_a_mapping() -> None:
    async def process(items: list[int]) -> list[int]:
        return items

    queue = BatchedQueue(process, key_of=lambda item: item, max_wait_ms=0, name="w")
    with pytest.raises(BatchError) as failed:
        await queue.enqueue(1)
    assert str(failed.value.__cause__) == (
        "processor of queue 'w' has key_of, so it must return a Mapping of key to result, got list"
    )


async def test_loaders_and_queues_show_their_name_and_size() -> None:
    loader = KeyedLoader(fetch, name="user")
    queue = BatchedQueue(lambda items: asyncio.sleep(0, items), name="w")
    assert repr(loader) == "<KeyedLoader user size=0 cached=0>"
    assert repr(queue) == "<BatchedQueue w size=0>"
