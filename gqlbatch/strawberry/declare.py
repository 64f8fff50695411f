"""Declaring a loader on a registry: :func:`loader`, typed by its overloads."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from typing import Any, Literal, TypeVar, overload

from gqlbatch import BatchOptions, CircuitBreaker, ErrorMode, RetryPolicy, ValueCache
from gqlbatch.strawberry.protocols import Fetcher, FetcherOf
from gqlbatch.strawberry.registry import ENGINE_OPTIONS, UNSET, LoaderSpec

__all__ = ["loader"]

K = TypeVar("K")
V = TypeVar("V")


@overload
def loader(
    source: Callable[[list[K]], Awaitable[Mapping[K, V | BaseException]]],
    *,
    key_of: None = ...,
    many: Literal[False] = ...,
    missing: Literal["error"],
    key_type: type | tuple[type, ...] | None = ...,
    max_batch_size: int | None = ...,
    max_wait_ms: float = ...,
    max_queue_size: int | None = ...,
    max_concurrency: int | None = ...,
    error_mode: ErrorMode | str = ...,
    retry: RetryPolicy = ...,
    batch_timeout_ms: float | None = ...,
    cache: bool = ...,
    cache_key: Callable[[K], Hashable] | None = ...,
    name: str | None = ...,
    value_cache: ValueCache | None = ...,
    value_cache_ttl: float | None = ...,
    cache_misses_ttl: float | None = ...,
    value_cache_timeout_ms: float = ...,
    value_cache_invalidate_timeout_ms: float = ...,
    value_cache_breaker: CircuitBreaker | None = ...,
) -> LoaderSpec[K, V]: ...


@overload
def loader(
    source: Callable[[list[K]], Awaitable[Mapping[K, V | BaseException]]],
    *,
    key_of: None = ...,
    many: Literal[False] = ...,
    missing: Literal["none"] = ...,
    key_type: type | tuple[type, ...] | None = ...,
    max_batch_size: int | None = ...,
    max_wait_ms: float = ...,
    max_queue_size: int | None = ...,
    max_concurrency: int | None = ...,
    error_mode: ErrorMode | str = ...,
    retry: RetryPolicy = ...,
    batch_timeout_ms: float | None = ...,
    cache: bool = ...,
    cache_key: Callable[[K], Hashable] | None = ...,
    name: str | None = ...,
    value_cache: ValueCache | None = ...,
    value_cache_ttl: float | None = ...,
    cache_misses_ttl: float | None = ...,
    value_cache_timeout_ms: float = ...,
    value_cache_invalidate_timeout_ms: float = ...,
    value_cache_breaker: CircuitBreaker | None = ...,
) -> LoaderSpec[K, V | None]: ...


@overload
def loader(
    source: Callable[[list[K]], Awaitable[Iterable[V]]],
    *,
    key_of: Callable[[V], K],
    many: Literal[True],
    missing: Literal["none", "error"] = ...,
    key_type: type | tuple[type, ...] | None = ...,
    max_batch_size: int | None = ...,
    max_wait_ms: float = ...,
    max_queue_size: int | None = ...,
    max_concurrency: int | None = ...,
    error_mode: ErrorMode | str = ...,
    retry: RetryPolicy = ...,
    batch_timeout_ms: float | None = ...,
    cache: bool = ...,
    cache_key: Callable[[K], Hashable] | None = ...,
    name: str | None = ...,
    value_cache: ValueCache | None = ...,
    value_cache_ttl: float | None = ...,
    cache_misses_ttl: float | None = ...,
    value_cache_timeout_ms: float = ...,
    value_cache_invalidate_timeout_ms: float = ...,
    value_cache_breaker: CircuitBreaker | None = ...,
) -> LoaderSpec[K, list[V]]: ...


@overload
def loader(
    source: Callable[[list[K]], Awaitable[Iterable[V]]],
    *,
    key_of: Callable[[V], K],
    many: Literal[False] = ...,
    missing: Literal["error"],
    key_type: type | tuple[type, ...] | None = ...,
    max_batch_size: int | None = ...,
    max_wait_ms: float = ...,
    max_queue_size: int | None = ...,
    max_concurrency: int | None = ...,
    error_mode: ErrorMode | str = ...,
    retry: RetryPolicy = ...,
    batch_timeout_ms: float | None = ...,
    cache: bool = ...,
    cache_key: Callable[[K], Hashable] | None = ...,
    name: str | None = ...,
    value_cache: ValueCache | None = ...,
    value_cache_ttl: float | None = ...,
    cache_misses_ttl: float | None = ...,
    value_cache_timeout_ms: float = ...,
    value_cache_invalidate_timeout_ms: float = ...,
    value_cache_breaker: CircuitBreaker | None = ...,
) -> LoaderSpec[K, V]: ...


@overload
def loader(
    source: Callable[[list[K]], Awaitable[Iterable[V]]],
    *,
    key_of: Callable[[V], K],
    many: Literal[False] = ...,
    missing: Literal["none"] = ...,
    key_type: type | tuple[type, ...] | None = ...,
    max_batch_size: int | None = ...,
    max_wait_ms: float = ...,
    max_queue_size: int | None = ...,
    max_concurrency: int | None = ...,
    error_mode: ErrorMode | str = ...,
    retry: RetryPolicy = ...,
    batch_timeout_ms: float | None = ...,
    cache: bool = ...,
    cache_key: Callable[[K], Hashable] | None = ...,
    name: str | None = ...,
    value_cache: ValueCache | None = ...,
    value_cache_ttl: float | None = ...,
    cache_misses_ttl: float | None = ...,
    value_cache_timeout_ms: float = ...,
    value_cache_invalidate_timeout_ms: float = ...,
    value_cache_breaker: CircuitBreaker | None = ...,
) -> LoaderSpec[K, V | None]: ...


# A fetcher that is not itself callable (it has bind() and loader_options): typed by
# what bind() returns. Callable fetchers (gqlbatch.sqlalchemy's) match the overloads above.
@overload
def loader(
    source: FetcherOf[K, V],
    *,
    missing: Literal["error"],
    key_type: type | tuple[type, ...] | None = ...,
    max_batch_size: int | None = ...,
    max_wait_ms: float = ...,
    max_queue_size: int | None = ...,
    max_concurrency: int | None = ...,
    error_mode: ErrorMode | str = ...,
    retry: RetryPolicy = ...,
    batch_timeout_ms: float | None = ...,
    cache: bool = ...,
    cache_key: Callable[[K], Hashable] | None = ...,
    name: str | None = ...,
    value_cache: ValueCache | None = ...,
    value_cache_ttl: float | None = ...,
    cache_misses_ttl: float | None = ...,
    value_cache_timeout_ms: float = ...,
    value_cache_invalidate_timeout_ms: float = ...,
    value_cache_breaker: CircuitBreaker | None = ...,
) -> LoaderSpec[K, V]: ...


@overload
def loader(
    source: FetcherOf[K, V],
    *,
    missing: Literal["none"] = ...,
    key_type: type | tuple[type, ...] | None = ...,
    max_batch_size: int | None = ...,
    max_wait_ms: float = ...,
    max_queue_size: int | None = ...,
    max_concurrency: int | None = ...,
    error_mode: ErrorMode | str = ...,
    retry: RetryPolicy = ...,
    batch_timeout_ms: float | None = ...,
    cache: bool = ...,
    cache_key: Callable[[K], Hashable] | None = ...,
    name: str | None = ...,
    value_cache: ValueCache | None = ...,
    value_cache_ttl: float | None = ...,
    cache_misses_ttl: float | None = ...,
    value_cache_timeout_ms: float = ...,
    value_cache_invalidate_timeout_ms: float = ...,
    value_cache_breaker: CircuitBreaker | None = ...,
) -> LoaderSpec[K, V | None]: ...


def loader(
    source: Any,
    *,
    key_of: Any = UNSET,
    many: Any = UNSET,
    missing: Any = UNSET,
    key_type: Any = UNSET,
    max_batch_size: Any = UNSET,
    max_wait_ms: Any = UNSET,
    max_queue_size: Any = UNSET,
    max_concurrency: Any = UNSET,
    error_mode: Any = UNSET,
    retry: Any = UNSET,
    batch_timeout_ms: Any = UNSET,
    cache: Any = UNSET,
    cache_key: Any = UNSET,
    name: Any = UNSET,
    value_cache: Any = UNSET,
    value_cache_ttl: Any = UNSET,
    cache_misses_ttl: Any = UNSET,
    value_cache_timeout_ms: Any = UNSET,
    value_cache_invalidate_timeout_ms: Any = UNSET,
    value_cache_breaker: Any = UNSET,
) -> LoaderSpec[Any, Any]:
    """Declare a loader on a :class:`LoaderRegistry` subclass.

    ``source`` is a batch function (``async (keys) -> Mapping``, as for
    :class:`~gqlbatch.KeyedLoader`) or a fetcher (see :class:`Fetcher`). The
    keyword arguments are :class:`~gqlbatch.KeyedLoader`'s options; those not
    given keep the fetcher's defaults (``loader_options``), then the core's.
    ``name`` defaults to the attribute's name, which is also the loader's name
    in errors and statistics.

    Engine options are validated here, when the class is defined, not when a
    request first touches the loader.
    """
    if not callable(source) and not isinstance(source, Fetcher):
        raise TypeError(
            f"loader() needs a batch function or a fetcher, got {source!r} "
            f"({type(source).__name__})"
        )
    given = {
        "key_of": key_of,
        "many": many,
        "missing": missing,
        "key_type": key_type,
        "max_batch_size": max_batch_size,
        "max_wait_ms": max_wait_ms,
        "max_queue_size": max_queue_size,
        "max_concurrency": max_concurrency,
        "error_mode": error_mode,
        "retry": retry,
        "batch_timeout_ms": batch_timeout_ms,
        "cache": cache,
        "cache_key": cache_key,
        "name": name,
        "value_cache": value_cache,
        "value_cache_ttl": value_cache_ttl,
        "cache_misses_ttl": cache_misses_ttl,
        "value_cache_timeout_ms": value_cache_timeout_ms,
        "value_cache_invalidate_timeout_ms": value_cache_invalidate_timeout_ms,
        "value_cache_breaker": value_cache_breaker,
    }
    options = {key: value for key, value in given.items() if value is not UNSET}
    BatchOptions(**{key: options[key] for key in ENGINE_OPTIONS if key in options})
    return LoaderSpec(source, options)
