"""From index-based batch functions (Strawberry's ``DataLoader``, aiodataloader) to keyed ones."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, ItemsView, Iterator, Mapping, Sequence
from typing import TypeVar

from gqlbatch import GqlBatchError

__all__ = ["BatchLengthError", "from_index_batch"]

K = TypeVar("K")
V = TypeVar("V")


class BatchLengthError(GqlBatchError, ValueError):
    """An index-based batch function returned a list that does not match its keys."""

    def __init__(self, loader: str, keys: int, values: int) -> None:
        self.loader = loader
        self.keys = keys
        self.values = values
        super().__init__(
            f"index-based batch function {loader} returned {values} value"
            f"{'s' if values != 1 else ''} for {keys} key{'s' if keys != 1 else ''}; it must "
            "return exactly one value (or exception) per key, in the order of the keys"
        )


def from_index_batch(
    batch_fn: Callable[[list[K]], Awaitable[Sequence[V | BaseException]]],
    *,
    name: str | None = None,
) -> Callable[[list[K]], Awaitable[Mapping[K, V | BaseException]]]:
    """Adapt an index-based batch function to a keyed one.

    ``batch_fn`` is written for Strawberry's ``DataLoader`` or aiodataloader:
    it returns a list with one value (or exception instance) per key, in key
    order. The result maps each key to its value, so it can back a
    :class:`~gqlbatch.KeyedLoader` or a :func:`loader` declaration; exception
    instances still fail only their own key. A list of the wrong length raises
    :class:`BatchLengthError` naming ``name`` (default: the function's name),
    which the loader hands to every caller of the batch as a ``BatchError``.
    Unhashable keys work with the loader's ``cache_key=``: the result is then a
    mapping that pairs keys and values by position, without hashing the keys.
    """
    if not callable(batch_fn):
        raise TypeError(f"batch_fn must be callable, got {batch_fn!r}")
    label = name or getattr(batch_fn, "__qualname__", None) or repr(batch_fn)

    @functools.wraps(batch_fn)
    async def keyed(keys: list[K]) -> Mapping[K, V | BaseException]:
        values = await batch_fn(keys)
        if isinstance(values, str | bytes | Mapping) or not isinstance(values, Sequence):
            raise TypeError(
                f"index-based batch function {label} must return a list aligned with its keys, "
                f"got {type(values).__name__}"
            )
        if len(values) != len(keys):
            raise BatchLengthError(label, len(keys), len(values))
        try:
            return dict(zip(keys, values, strict=True))
        except TypeError:  # unhashable keys (the loader has cache_key=)
            return _Aligned(keys, values)

    return keyed


class _Aligned(Mapping[K, V]):
    """Keys and values paired by position, for keys that cannot be hashed.

    The loader reads it once, through ``items()``; looking a key up scans.
    """

    def __init__(self, keys: Sequence[K], values: Sequence[V]) -> None:
        self.keys_ = keys
        self.values_ = values

    def __getitem__(self, key: K) -> V:
        for index, candidate in enumerate(self.keys_):
            if candidate == key:
                return self.values_[index]
        raise KeyError(key)

    def __iter__(self) -> Iterator[K]:
        return iter(self.keys_)

    def __len__(self) -> int:
        return len(self.keys_)

    def items(self) -> ItemsView[K, V]:
        return _AlignedItems(self)


class _AlignedItems(ItemsView[K, V]):
    """``_Aligned.items()``: the pairs, without a lookup per key."""

    _mapping: _Aligned[K, V]

    def __iter__(self) -> Iterator[tuple[K, V]]:
        return zip(self._mapping.keys_, self._mapping.values_, strict=True)
