"""Declaring a loader: :func:`loader` and the descriptor it returns, :class:`LoaderSpec`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Literal, NoReturn, TypeVar, overload

from gqlbatch import BatchOptions, ErrorMode, KeyedLoader, RetryPolicy
from gqlbatch.strawberry.protocols import Fetcher

if TYPE_CHECKING:
    from gqlbatch.strawberry.registry import LoaderRegistry

__all__ = ["ENGINE_OPTIONS", "REGISTRY_OPTIONS", "UNSET", "LoaderSpec", "loader"]

K = TypeVar("K")
V = TypeVar("V")

UNSET: Any = object()
"""An option :func:`loader` was not given (None is a value some options take)."""

# Options of KeyedLoader that BatchOptions validates; checked when a loader is declared.
ENGINE_OPTIONS = (
    "max_batch_size",
    "max_wait_ms",
    "max_queue_size",
    "max_concurrency",
    "error_mode",
    "retry",
    "batch_timeout_ms",
    "name",
)
REGISTRY_OPTIONS = tuple(option for option in ENGINE_OPTIONS if option != "name")
"""The engine options a registry may set for all its loaders (a name is each loader's own)."""


class LoaderSpec(Generic[K, V]):
    """One declared loader: a descriptor on a :class:`LoaderRegistry` subclass.

    Read on the class it is the declaration itself; read on a registry
    instance it is that instance's :class:`~gqlbatch.KeyedLoader`, created on
    first access. Create it with :func:`loader`.
    """

    __slots__ = ("attribute", "options", "owner", "source")

    def __init__(self, source: Any, options: Mapping[str, Any]) -> None:
        self.source = source
        self.options: Mapping[str, Any] = dict(options)
        self.attribute = ""
        self.owner = ""

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.attribute = name
        self.owner = owner.__name__

    @property
    def is_fetcher(self) -> bool:
        """Whether the source is a fetcher (bound to the registry's sessions on creation)."""
        return isinstance(self.source, Fetcher) and not isinstance(self.source, type)

    @overload
    def __get__(self, instance: None, owner: type[Any]) -> LoaderSpec[K, V]: ...

    @overload
    def __get__(self, instance: LoaderRegistry, owner: type[Any]) -> KeyedLoader[K, V]: ...

    def __get__(
        self, instance: LoaderRegistry | None, owner: type[Any]
    ) -> LoaderSpec[K, V] | KeyedLoader[K, V]:
        if instance is None:
            return self
        return instance._loader(self)

    def __set__(self, instance: LoaderRegistry, value: object) -> NoReturn:
        raise AttributeError(
            f"{type(instance).__name__}.{self.attribute} is a declared loader and cannot be "
            "assigned; declare another loader instead"
        )

    def __repr__(self) -> str:
        return f"<loader {self.owner}.{self.attribute} of {self.source!r}>"


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
    }
    options = {key: value for key, value in given.items() if value is not UNSET}
    BatchOptions(**{key: options[key] for key in ENGINE_OPTIONS if key in options})
    return LoaderSpec(source, options)
