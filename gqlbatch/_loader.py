"""``KeyedLoader``: the DataLoader face of the engine, for GraphQL resolvers."""

from __future__ import annotations

import asyncio
import dataclasses
from asyncio.events import _get_running_loop
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Hashable,
    Iterable,
    Mapping,
)
from typing import Any, Final, Generic, Literal, TypeVar, Unpack, overload

from gqlbatch._engine import MISS, RAISE, Batch, Engine
from gqlbatch._errors import MissingKeyError
from gqlbatch._options import (
    LOADER_DEFAULTS,
    batch_options,
    check_bool,
    check_callable,
    check_choice,
    check_options,
)
from gqlbatch._stats import LoaderStats
from gqlbatch._types import BatchFunction, LoaderOptions, RowsBatchFunction
from gqlbatch._value_cache import CircuitBreaker, SharedStage

__all__ = ["KeyedLoader"]

LOADER_OPTIONS = LoaderOptions.__optional_keys__
"""The keyword options ``KeyedLoader`` takes besides ``key_of``, ``many`` and ``missing``."""

K = TypeVar("K")
V = TypeVar("V")
R = TypeVar("R")


_UNSET: Any = object()  # a load_many position not answered yet


class _Gather:
    """The result list of one ``load_many`` call, filled as its keys are answered."""

    __slots__ = ("outer", "remaining", "results", "return_exceptions")

    def __init__(self, outer: asyncio.Future[list[Any]], size: int, return_exceptions: bool):
        self.outer = outer
        self.results: list[Any] = [_UNSET] * size
        self.remaining = size
        self.return_exceptions = return_exceptions

    def put(self, index: int, value: Any) -> None:
        self.results[index] = value
        self.remaining -= 1
        if not self.remaining and not self.outer.done():
            self.outer.set_result(self.results)


class _Position:
    """A waiter standing for position ``index`` of a ``load_many`` result.

    Answering it costs no event-loop callback: only the list as a whole is a
    future, completed when its last position is answered. Later positions of
    the same key in the same call (``more``) share it, so a key is routed once
    per ``load_many`` whatever happens to the batch meanwhile.
    """

    __slots__ = ("gather", "index", "more")

    def __init__(self, gather: _Gather, index: int) -> None:
        self.gather = gather
        self.index = index
        self.more: list[int] | None = None

    def done(self) -> bool:
        gather = self.gather
        return gather.results[self.index] is not _UNSET or gather.outer.done()

    def set_result(self, value: Any) -> None:
        gather = self.gather
        gather.put(self.index, value)
        if self.more:
            for index in self.more:
                gather.put(index, value)

    def set_exception(self, error: BaseException) -> None:
        if self.gather.return_exceptions:
            self.set_result(error)
        else:
            self.gather.outer.set_exception(error)


class KeyedLoader(Engine, Generic[K, V]):
    """Batch and cache loads by key, correlating results by key, never by position.

    Each ``load(key)`` made while resolvers run joins one batch; the batch
    function gets each distinct key once and answers with a mapping (or rows and
    ``key_of``); each caller receives exactly its own key's outcome.

    Args:
        batch_fn: ``async (keys: list[K]) -> Mapping[K, V | BaseException]``, or,
            with ``key_of``, an iterable of rows. May return keys in any order,
            fewer keys, or extra keys.

    Keyword Args:
        key_of: maps a row to its key; then ``batch_fn`` returns rows.
        many: with ``key_of``, group rows per key into lists (``[]`` for none).
        missing: ``"none"`` (default) resolves an absent key to None;
            ``"error"`` fails it with :class:`MissingKeyError`.
        key_type (type | tuple[type, ...] | None): a type or tuple of types;
            ``load`` raises TypeError for other keys.
        max_batch_size (int | None): dispatch once this many keys wait (default: unbounded).
        max_wait_ms (float): see :class:`BatchOptions` (default 0: the event-loop rule).
        max_queue_size (int | None): keys waiting before ``load`` raises :class:`QueueFullError`.
        max_concurrency (int | None): batch function calls running at once (default: unbounded).
        error_mode (ErrorMode | str): ``"continue"``, ``"fail-fast"`` or ``"retry"``
            (:class:`ErrorMode`).
        retry (RetryPolicy): the :class:`RetryPolicy` of ``error_mode="retry"``.
        batch_timeout_ms (float | None): a call running longer fails (each attempt).
        cache (bool): keep values, misses and loads in flight (default True).
        cache_key (Callable[[K], Hashable] | None): maps a key to a hashable cache key
            (keys and result keys alike).
        name (str | None): named in errors and statistics.
        value_cache (ValueCache | None): a :class:`ValueCache` shared beyond this loader (another
            process, another machine), consulted once per batch before the
            batch function; see ``docs/scaling-out.md``.
        value_cache_ttl (float | None): seconds a value stays in ``value_cache`` (default None:
            the cache's own default).
        cache_misses_ttl (float | None): store keys the batch function did not answer for this
            many seconds (default None: misses are not stored).
        value_cache_timeout_ms (float): the longest one call of ``value_cache`` may take
            before the loader goes on as if it held nothing (default 100).
        value_cache_invalidate_timeout_ms (float): the longest a deletion from
            ``value_cache`` (``invalidate``, ``clear``) may take (default 1000);
            deletions are tried even while the circuit is open.
        value_cache_breaker (CircuitBreaker | None): the :class:`CircuitBreaker` of ``value_cache``
            (default: one per cache object, shared by the loaders using it).
    """

    @overload
    def __init__(
        self: KeyedLoader[K, V | None],
        batch_fn: BatchFunction[K, V],
        *,
        key_of: None = None,
        many: Literal[False] = False,
        missing: Literal["none"] = "none",
        **options: Unpack[LoaderOptions[K]],
    ) -> None: ...
    @overload
    def __init__(
        self: KeyedLoader[K, V],
        batch_fn: BatchFunction[K, V],
        *,
        key_of: None = None,
        many: Literal[False] = False,
        missing: Literal["error"],
        **options: Unpack[LoaderOptions[K]],
    ) -> None: ...
    @overload
    def __init__(
        self: KeyedLoader[K, R | None],
        batch_fn: RowsBatchFunction[K, R],
        *,
        key_of: Callable[[R], K],
        many: Literal[False] = False,
        missing: Literal["none"] = "none",
        **options: Unpack[LoaderOptions[K]],
    ) -> None: ...
    @overload
    def __init__(
        self: KeyedLoader[K, R],
        batch_fn: RowsBatchFunction[K, R],
        *,
        key_of: Callable[[R], K],
        many: Literal[False] = False,
        missing: Literal["error"],
        **options: Unpack[LoaderOptions[K]],
    ) -> None: ...
    @overload
    def __init__(
        self: KeyedLoader[K, list[R]],
        batch_fn: RowsBatchFunction[K, R],
        *,
        key_of: Callable[[R], K],
        many: Literal[True],
        missing: Literal["none", "error"] = "none",
        **options: Unpack[LoaderOptions[K]],
    ) -> None: ...
    def __init__(
        self,
        batch_fn: Callable[[list[Any]], Awaitable[Any]],
        *,
        key_of: Callable[[Any], Any] | None = None,
        many: bool = False,
        missing: str = "none",
        **options: Unpack[LoaderOptions[Any]],
    ) -> None:
        check_options("KeyedLoader()", options, LOADER_OPTIONS)
        engine_options = batch_options(options, LOADER_DEFAULTS)
        self._key_of = check_callable("key_of", key_of)
        self._many = check_bool("many", many)
        if many and key_of is None:
            raise ValueError("many=True needs key_of, to group the rows by key")
        self._missing_mode = check_choice("missing", missing, ("none", "error"))
        self._key_type = _check_key_type(options.get("key_type"))
        cache_key = self._cache_key = check_callable("cache_key", options.get("cache_key"))
        super().__init__(
            batch_fn,
            engine_options,
            kind="loader",
            caching=check_bool("cache", options.get("cache", True)),
            absent=RAISE if missing == "error" else None,
            remember_keys=cache_key is not None,
        )
        # The shared stage, if any, wraps the (validated) batch function; the
        # wrapper answers by cache key, so ``_correlate`` passes its result on.
        self._shared: SharedStage | None = None
        self._share_clears = True  # False while ``invalidate`` clears key by key
        value_cache = options.get("value_cache")
        if value_cache is not None:
            self._shared = SharedStage(
                value_cache,
                name=engine_options.name,
                ttl=options.get("value_cache_ttl"),
                misses_ttl=options.get("cache_misses_ttl"),
                timeout_ms=options.get("value_cache_timeout_ms", 100),
                invalidate_timeout_ms=options.get("value_cache_invalidate_timeout_ms", 1000),
                breaker=options.get("value_cache_breaker"),
            )
            self._batch_fn = self._shared.wrap(self._batch_fn, cache_key, self._outcomes)
        # What ``load``'s fast path looks keys up in: the cache itself when keys
        # are their own cache keys, else a dict that stays empty.
        self._hits: dict[Any, asyncio.Future[Any]] = self._cache if cache_key is None else {}

    @property
    def stats(self) -> LoaderStats:
        """A snapshot of the counters; see :class:`LoaderStats`."""
        stats = super().stats
        if self._shared is None:
            return stats
        counters = self._shared.counters
        return dataclasses.replace(
            stats,
            value_cache_hits=counters.hits,
            value_cache_misses=counters.misses,
            value_cache_errors=counters.errors,
            value_cache_skips=counters.skips,
            value_cache_ms=counters.ms,
        )

    @property
    def value_cache_breaker(self) -> CircuitBreaker | None:
        """The breaker of ``value_cache`` (None without one)."""
        return None if self._shared is None else self._shared.breaker

    def __repr__(self) -> str:
        cached = len(self._cache) + len(self._stored)
        return f"<KeyedLoader {self._name or ''!s} size={self._queued} cached={cached}>"

    # -- loading -------------------------------------------------------------------------

    def load(self, key: K) -> asyncio.Future[V]:
        """Return a future of ``key``'s value, batched with the other loads of this moment.

        A pending future is this caller's own: cancelling it affects nobody else.
        A cache hit may return a shared future that is already done.

        Raises (at once): TypeError for an unhashable key or one not of
        ``key_type``; :class:`QueueFullError`; :class:`LoaderClosedError`;
        :class:`WrongEventLoopError`.
        """
        # The fast path, first: a value already cached as a done future. Misses,
        # other cached entries and unhashable keys go on to ``_load``. No loop
        # check here: awaiting a done future works from any event loop.
        try:
            hit = self._hits.get(key)
        except TypeError:
            hit = None
        if hit is not None:
            self._fast_hits += 1
            return hit
        return self._load(key)

    def _load(self, key: Any) -> asyncio.Future[V]:
        loop = _get_running_loop()
        if loop is None or loop is not self._loop or self._state:
            self._check_open(key)
        if self._key_type is not None and not isinstance(key, self._key_type):
            raise self._wrong_type(key)
        ck = key if self._cache_key is None else self._cache_key(key)
        self._loads += 1
        try:
            hit = self._cache.get(ck)
        except TypeError:
            raise self._unhashable(key, ck) from None
        if hit is not None:
            self._cache_hits += 1
            return hit
        if self._stored and ck in self._stored:
            self._cache_hits += 1
            entry = self._stored[ck]
            hit = self._new_future()
            if entry is MISS:
                hit.set_exception(self._missing_error_for(key))
            else:  # first hit on a value stored without a future: keep the future
                hit.set_result(entry[0])
                del self._stored[ck]
                self._cache[ck] = hit
            return hit
        future: asyncio.Future[V] = self._new_future()
        self._route(ck, key, future)
        return future

    def load_many(
        self, keys: Iterable[K], return_exceptions: bool = False
    ) -> asyncio.Future[list[V]]:
        """Return a future of the values of ``keys``, in the order of ``keys``.

        With ``return_exceptions=False`` the future fails with the first failure
        (in the order the keys are answered); with True, failures take their
        key's place in the list. Duplicate keys are fetched once.
        """
        keys = list(keys)
        first = keys[0] if keys else None
        self._check_open(first)
        outer: asyncio.Future[list[Any]] = self._new_future()
        gather = _Gather(outer, len(keys), return_exceptions)
        if not keys:
            outer.set_result([])
            return outer
        cache_key = self._cache_key
        key_type = self._key_type
        cks = keys if cache_key is None else [cache_key(k) for k in keys]
        if key_type is not None:
            for key in keys:
                if not isinstance(key, key_type):
                    raise self._wrong_type(key)
        self._loads += len(keys)
        try:
            if self._queued + len(keys) > self._max_queue:
                self._check_room(keys, cks)
        except TypeError:
            raise self._unhashable_among(keys, cks) from None
        cache = self._cache
        stored = self._stored
        routed: dict[Hashable, _Position] = {}
        for index, (key, ck) in enumerate(zip(keys, cks, strict=True)):
            try:
                hit = cache.get(ck)
            except TypeError:
                outer.cancel()
                raise self._unhashable(key, ck) from None
            if hit is not None:
                self._cache_hits += 1
                gather.put(index, hit.result())
                continue
            entry = stored.get(ck) if stored else None
            if entry is None:
                position = routed.get(ck)
                if position is None:
                    position = routed[ck] = _Position(gather, index)
                    self._route(ck, key, position)
                elif position.more is None:
                    position.more = [index]
                else:
                    position.more.append(index)
                continue
            self._cache_hits += 1
            if entry is MISS:
                position = _Position(gather, index)
                if not position.done():
                    position.set_exception(self._missing_error_for(key))
            else:
                gather.put(index, entry[0])
        return outer

    def _check_room(self, keys: list[Any], cks: list[Any]) -> None:
        """Raise QueueFullError unless every new key of a ``load_many`` fits."""
        new: set[Hashable] = set()
        for key, ck in zip(keys, cks, strict=True):
            if ck in self._cache or ck in self._stored or ck in self._pending or ck in new:
                continue
            if self._caching and ck in self._inflight:
                continue
            new.add(ck)
            if self._queued + len(new) > self._max_queue:
                raise self._full(key)

    # -- the cache -----------------------------------------------------------------------

    def prime(self, key: K, value: V) -> None:
        """Cache ``value`` for ``key`` unless the key is cached, waiting or in flight.

        As in graphql/dataloader, priming never overwrites: to replace a value,
        ``clear(key)`` first. Exceptions are never cached, so priming one raises
        TypeError. Does nothing when ``cache=False``.
        """
        if isinstance(value, BaseException):
            raise TypeError(
                f"{self._label}: prime() caches values only, got the exception {value!r} "
                f"for key {key!r}; failures are never cached"
            )
        if not self._caching:
            return
        ck = self._ck(key)
        if ck in self._cache or ck in self._stored or ck in self._inflight or ck in self._pending:
            return
        self._stored[ck] = (value,)

    def clear(self, key: K) -> None:
        """Forget ``key``'s cached value, miss, or load in flight.

        A load in flight still answers its callers, but its value is not cached,
        and later loads of the key fetch it again. With ``value_cache``, the key
        is deleted there too, in the background (:meth:`invalidate` waits).
        """
        ck = self._ck(key)
        self._cache.pop(ck, None)
        self._stored.pop(ck, None)
        self._inflight.pop(ck, None)
        if self._shared is not None and self._share_clears:
            _in_background(self._shared.delete, [ck])

    def clear_many(self, keys: Iterable[K]) -> None:
        """``clear`` each of ``keys`` (one call of the shared cache for them all)."""
        self.invalidate(*keys)

    def invalidate(self, *keys: K) -> Awaitable[None]:
        """``clear`` ``keys``, and return an awaitable of their deletion from ``value_cache``.

        Await it before a mutation answers, so that no request that starts
        afterwards, in any process, reads the old value. It never raises: a
        shared cache that cannot be reached is counted as an error (see
        ``docs/scaling-out.md`` for the staleness bound then). Without
        ``value_cache`` it is done at once.
        """
        self._share_clears = False  # one shared deletion for them all, below
        try:
            for key in keys:
                self.clear(key)
        finally:
            self._share_clears = True
        if self._shared is None or not keys:
            return _DONE
        return _in_background(self._shared.delete, [self._ck(key) for key in keys])

    def clear_all(self) -> None:
        """Forget every cached value, miss, and load in flight."""
        self._cache.clear()
        self._stored.clear()
        self._inflight.clear()

    # -- correlation (the engine's face-specific part) ---------------------------------

    def _correlate(self, result: Any, batch: Batch, cks: Any) -> Mapping[Hashable, Any]:
        if self._shared is not None:  # the shared stage correlated what it fetched
            return result  # type: ignore[no-any-return]
        return self._outcomes(result, cks)

    def _outcomes(self, result: Any, cks: Any) -> Mapping[Hashable, Any]:
        """The batch function's ``result`` as ``{cache key: outcome}``."""
        key_of = self._key_of
        cache_key = self._cache_key
        if key_of is None:
            if type(result) is not dict and not isinstance(result, Mapping):
                raise TypeError(
                    f"batch function of {self._label} must return a Mapping of key to value "
                    f"(or rows, with key_of=...), got {type(result).__name__}"
                )
            if cache_key is None:
                return result
            return {cache_key(key): value for key, value in result.items()}
        if isinstance(result, Mapping) or not isinstance(result, Iterable):
            raise TypeError(
                f"batch function of {self._label} has key_of, so it must return an iterable "
                f"of rows, got {type(result).__name__}"
            )
        if self._many:
            groups: dict[Hashable, list[Any]] = {ck: [] for ck in cks}
            for row in result:
                key = key_of(row)
                group = groups.get(key if cache_key is None else cache_key(key))
                if group is not None:
                    group.append(row)
            return groups
        rows: dict[Hashable, Any] = {}
        for row in result:
            key = key_of(row)
            rows.setdefault(key if cache_key is None else cache_key(key), row)
        return rows

    # -- helpers -------------------------------------------------------------------------

    def _ck(self, key: Any) -> Hashable:
        ck = key if self._cache_key is None else self._cache_key(key)
        try:
            hash(ck)
        except TypeError:
            raise self._unhashable(key, ck) from None
        return ck  # type: ignore[no-any-return]

    def _missing_error_for(self, key: Any) -> MissingKeyError:
        return MissingKeyError(self._name, key, kind=self._kind)

    def _wrong_type(self, key: Any) -> TypeError:
        expected = self._key_type
        names = (
            " or ".join(t.__name__ for t in expected)
            if isinstance(expected, tuple)
            else getattr(expected, "__name__", repr(expected))
        )
        return TypeError(
            f"{self._label}: key {key!r} is of type {type(key).__name__}, expected {names}"
        )

    def _unhashable(self, key: Any, ck: Any) -> TypeError:
        hint = "" if self._cache_key is not None else "; pass cache_key= to make keys hashable"
        shown = f"key {key!r}" if ck is key else f"key {key!r} (cache key {ck!r})"
        return TypeError(f"{self._label}: {shown} is unhashable ({type(ck).__name__}){hint}")

    def _unhashable_among(self, keys: list[Any], cks: list[Any]) -> TypeError:
        for key, ck in zip(keys, cks, strict=True):
            try:
                hash(ck)
            except TypeError:
                return self._unhashable(key, ck)
        return TypeError(f"{self._label}: load_many() got an unhashable key")


class _Done:
    """An awaitable that is done at once (an invalidation with nothing shared to reach)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


_DONE: Final = _Done()
_BACKGROUND: set[asyncio.Task[None]] = set()  # shared-cache deletions under way


def _in_background(
    delete: Callable[[list[Hashable]], Coroutine[Any, Any, None]], cks: list[Hashable]
) -> asyncio.Future[None]:
    """Run ``delete(cks)`` in a task of its own, held until it ends (it never raises).

    Returns the task shielded: a caller cancelled while it waits (a client gone
    in the middle of a mutation) does not cancel the deletion, which its write
    still needs. Raises RuntimeError, creating nothing, when no loop is running.
    """
    loop = asyncio.get_running_loop()
    task = loop.create_task(delete(cks))
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
    return asyncio.shield(task)


def _check_key_type(value: object) -> type | tuple[type, ...] | None:
    if value is None or isinstance(value, type):
        return value
    if isinstance(value, tuple) and value and all(isinstance(t, type) for t in value):
        return value
    raise TypeError(f"key_type must be a type, a tuple of types, or None, got {value!r}")
