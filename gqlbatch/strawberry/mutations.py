"""Keeping a mutation's response fresh: :func:`write_through` and :func:`invalidate`."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from gqlbatch import KeyedLoader

__all__ = ["invalidate", "write_through"]

K = TypeVar("K")
V = TypeVar("V")


def write_through(loader: KeyedLoader[K, V], key: K, value: V) -> Awaitable[None]:
    """After a write, make ``loader`` answer ``key`` with ``value`` for the rest of the request.

    Replaces whatever the loader cached for ``key`` (a value, a miss, or a
    load in flight), so a mutation's response shows what it just wrote.

    With a shared ``value_cache``, the key is deleted there (never set: two
    writers racing could leave the older value); await the result before the
    mutation answers, so no later request in any process reads the old value.
    """
    deleted = loader.invalidate(key)
    loader.prime(key, value)
    return deleted


def invalidate(loader: KeyedLoader[K, Any], *keys: K) -> Awaitable[None]:
    """After a write, forget ``keys`` so the next ``load`` reads them again.

    Use it where the new value is not at hand, or for grouped loaders
    (``posts_by_author``) whose list for a key the write changed. With no
    keys, the whole cache of ``loader`` is dropped (in this request only: a
    shared ``value_cache`` is reached by key). Await the result where the
    loader has a ``value_cache`` (see :func:`write_through`).
    """
    if keys:
        return loader.invalidate(*keys)
    loader.clear_all()
    return loader.invalidate()
