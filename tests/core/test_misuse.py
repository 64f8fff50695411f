"""Misuse of the public API: every error message, pinned, naming the argument or loader."""

from __future__ import annotations

import re
from typing import Any

import pytest

from gqlbatch import BatchedQueue, KeyedLoader


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
