"""Declaring a loader on a registry: :func:`loader`, typed by its overloads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeVar, Unpack, overload

from gqlbatch import BatchFunction, BatchOptions, LoaderOptions, RowsBatchFunction
from gqlbatch.strawberry.protocols import Fetcher, FetcherOf
from gqlbatch.strawberry.registry import ENGINE_OPTIONS, UNSET, LoaderSpec

__all__ = ["loader"]

K = TypeVar("K")
V = TypeVar("V")

_OPTIONS = frozenset(LoaderOptions.__optional_keys__)
"""The keyword options :func:`loader` passes on to :class:`~gqlbatch.KeyedLoader`."""

# The overloads give the loader's value type: key_of, many and missing decide it; the
# other options (LoaderOptions) do not.


@overload
def loader(
    source: BatchFunction[K, V],
    *,
    key_of: None = ...,
    many: Literal[False] = ...,
    missing: Literal["error"],
    **options: Unpack[LoaderOptions[K]],
) -> LoaderSpec[K, V]: ...


@overload
def loader(
    source: BatchFunction[K, V],
    *,
    key_of: None = ...,
    many: Literal[False] = ...,
    missing: Literal["none"] = ...,
    **options: Unpack[LoaderOptions[K]],
) -> LoaderSpec[K, V | None]: ...


@overload
def loader(
    source: RowsBatchFunction[K, V],
    *,
    key_of: Callable[[V], K],
    many: Literal[True],
    missing: Literal["none", "error"] = ...,
    **options: Unpack[LoaderOptions[K]],
) -> LoaderSpec[K, list[V]]: ...


@overload
def loader(
    source: RowsBatchFunction[K, V],
    *,
    key_of: Callable[[V], K],
    many: Literal[False] = ...,
    missing: Literal["error"],
    **options: Unpack[LoaderOptions[K]],
) -> LoaderSpec[K, V]: ...


@overload
def loader(
    source: RowsBatchFunction[K, V],
    *,
    key_of: Callable[[V], K],
    many: Literal[False] = ...,
    missing: Literal["none"] = ...,
    **options: Unpack[LoaderOptions[K]],
) -> LoaderSpec[K, V | None]: ...


# A fetcher that is not itself callable (it has bind() and loader_options): typed by
# what bind() returns. Callable fetchers (gqlbatch.sqlalchemy's) match the overloads above.
@overload
def loader(
    source: FetcherOf[K, V],
    *,
    missing: Literal["error"],
    **options: Unpack[LoaderOptions[K]],
) -> LoaderSpec[K, V]: ...


@overload
def loader(
    source: FetcherOf[K, V],
    *,
    missing: Literal["none"] = ...,
    **options: Unpack[LoaderOptions[K]],
) -> LoaderSpec[K, V | None]: ...


def loader(
    source: Any,
    *,
    key_of: Any = UNSET,
    many: Any = UNSET,
    missing: Any = UNSET,
    **options: Unpack[LoaderOptions[Any]],
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
    for option in options:
        if option not in _OPTIONS:  # what Python says for a keyword not in a signature
            raise TypeError(f"loader() got an unexpected keyword argument {option!r}")
    if not callable(source) and not isinstance(source, Fetcher):
        raise TypeError(
            f"loader() needs a batch function or a fetcher, got {source!r} "
            f"({type(source).__name__})"
        )
    given = {"key_of": key_of, "many": many, "missing": missing}
    declared: dict[str, Any] = {key: value for key, value in given.items() if value is not UNSET}
    declared.update(options)
    BatchOptions(**{key: declared[key] for key in ENGINE_OPTIONS if key in declared})
    return LoaderSpec(source, declared)
