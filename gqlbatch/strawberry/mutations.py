"""Keeping a mutation's response fresh: :func:`write_through` and :func:`invalidate`."""

from __future__ import annotations

from typing import Any, TypeVar

from gqlbatch import KeyedLoader

__all__ = ["invalidate", "write_through"]

K = TypeVar("K")
V = TypeVar("V")


def write_through(loader: KeyedLoader[K, V], key: K, value: V) -> None:
    """After a write, make ``loader`` answer ``key`` with ``value`` for the rest of the request.

    Replaces whatever the loader cached for ``key`` (a value, a miss, or a
    load in flight), so a mutation's response shows what it just wrote.
    """
    loader.clear(key)
    loader.prime(key, value)


def invalidate(loader: KeyedLoader[K, Any], *keys: K) -> None:
    """After a write, forget ``keys`` so the next ``load`` reads them again.

    Use it where the new value is not at hand, or for grouped loaders
    (``posts_by_author``) whose list for a key the write changed. With no
    keys, the whole cache of ``loader`` is dropped.
    """
    if keys:
        loader.clear_many(keys)
    else:
        loader.clear_all()
