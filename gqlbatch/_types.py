"""Types named once: batch functions, and the options loaders share.

Every other module (and every integration) imports these instead of spelling
out ``Callable[...]`` or the option list again. ``LoaderOptions`` is what a
caller passes on with ``**options: Unpack[LoaderOptions]``: the options shared
by :class:`~gqlbatch.KeyedLoader` and the integrations' loader declarations.
``key_of``, ``many`` and ``missing`` are not among them: they decide the
loader's value type, so each signature spells them out in its overloads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, Generic, Literal, Protocol, TypeAlias, TypedDict, TypeVar

from gqlbatch._observe import BatchObserver
from gqlbatch._options import ErrorMode, RetryPolicy
from gqlbatch._value_cache import CircuitBreaker, ValueCache

__all__ = [
    "BatchFunction",
    "CacheMap",
    "EngineOptions",
    "ErrorModeName",
    "KeyType",
    "LoaderOptions",
    "RowsBatchFunction",
    "Schedule",
]

K = TypeVar("K")
V = TypeVar("V")
R = TypeVar("R")

BatchFunction: TypeAlias = Callable[[list[K]], Awaitable[Mapping[K, V | BaseException]]]
"""``async (keys) -> {key: value or exception}``: a loader's batch function."""
RowsBatchFunction: TypeAlias = Callable[[list[K]], Awaitable[Iterable[R]]]
"""``async (keys) -> rows``: a batch function whose rows ``key_of`` maps to keys."""
ErrorModeName: TypeAlias = Literal["continue", "fail-fast", "retry"]
"""The values of :class:`~gqlbatch.ErrorMode`, accepted wherever it is."""
KeyType: TypeAlias = type | tuple[type, ...] | None
"""``key_type=``: a type, a tuple of types, or None (any key)."""
Schedule: TypeAlias = Callable[[Callable[[], None]], object]
"""``schedule=``: called with a batch's dispatch when its first key arrives."""


class CacheMap(Protocol):
    """A cache the loader keeps its entries in (``cache_map=``), as graphql/dataloader's.

    Keys are cache keys (``cache_key(key)``, or the key itself); values are the
    loader's own entries, to be stored and returned as they are. Removing one
    (an LRU evicting it) is the same as ``loader.clear(key)``.
    """

    def get(self, key: Any, /) -> Any:
        """The entry stored for ``key``, or None."""

    def set(self, key: Any, value: Any, /) -> object:
        """Store ``value`` for ``key``."""

    def delete(self, key: Any, /) -> object:
        """Remove ``key``'s entry, if any."""

    def clear(self) -> object:
        """Remove every entry."""


class EngineOptions(TypedDict, total=False):
    """The options of :class:`~gqlbatch.BatchOptions`: what the engine itself takes.

    Each defaults as documented on :class:`~gqlbatch.BatchOptions` (loaders) or
    :class:`~gqlbatch.BatchedQueue` (queues).
    """

    max_batch_size: int | None
    max_wait_ms: float
    max_queue_size: int | None
    max_concurrency: int | None
    error_mode: ErrorMode | ErrorModeName
    retry: RetryPolicy
    batch_timeout_ms: float | None
    name: str | None


class LoaderOptions(EngineOptions, Generic[K], total=False):
    """Keyword options of :class:`~gqlbatch.KeyedLoader` that integrations pass on.

    ``LoaderOptions[K]`` types ``cache_key`` for keys of type ``K``; bare
    ``LoaderOptions`` accepts any key.
    """

    key_type: KeyType
    cache: bool
    cache_key: Callable[[K], Hashable] | None
    cache_map: CacheMap | None
    schedule: Schedule | None
    observers: Sequence[BatchObserver]
    value_cache: ValueCache | None
    value_cache_ttl: float | None
    cache_misses_ttl: float | None
    value_cache_timeout_ms: float
    value_cache_invalidate_timeout_ms: float
    value_cache_breaker: CircuitBreaker | None
