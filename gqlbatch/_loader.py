"""``KeyedLoader``: the DataLoader face of the engine, for GraphQL resolvers."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Hashable,
    Iterable,
    Mapping,
    Sized,
)
from threading import get_ident
from typing import Any, Final, Generic, Literal, Self, TypeVar, Unpack, overload

from gqlbatch._engine import FUTURE, MISS, RAISE, Batch, Engine, Promise
from gqlbatch._errors import MissingKeyError
from gqlbatch._observe import BatchObserver
from gqlbatch._options import (
    LOADER_DEFAULTS,
    batch_options,
    check_bool,
    check_callable,
    check_choice,
    check_options,
)
from gqlbatch._stats import LoaderStats
from gqlbatch._types import BatchFunction, CacheMap, LoaderOptions, RowsBatchFunction
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

    def cancel(self) -> bool:
        return self.gather.outer.cancel()


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
        cache_map (CacheMap | None): keep the cache in this object (``get``/``set``/
            ``delete``/``clear``, see :class:`CacheMap`), e.g. an LRU bound; its keys
            are cache keys.
        schedule (Callable | None): ``(dispatch) -> None``, called when a batch's first
            key arrives; the batch goes when it calls ``dispatch()`` (or at
            ``max_batch_size``).
        observers (Sequence[BatchObserver]): observers of this loader only (default none).
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
        cache_map = _check_cache_map(options.get("cache_map"))
        schedule = check_callable("schedule", options.get("schedule"))
        if schedule is not None and engine_options.max_wait_ms:
            raise ValueError(
                "schedule= decides when a batch goes, so it cannot be combined with "
                f"max_wait_ms={engine_options.max_wait_ms!r}; pass one or the other"
            )
        super().__init__(
            batch_fn,
            engine_options,
            kind="loader",
            caching=check_bool("cache", options.get("cache", True)),
            absent=RAISE if missing == "error" else None,
            remember_keys=cache_key is not None,
            cancel_unused=True,
            schedule=schedule,
            observers=_check_observers(options.get("observers", ())),
        )
        if cache_map is not None:
            self._cache = _MapCache(cache_map)
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
        # Keys that are their own cache keys, in a dict: ``load`` takes its fast
        # path, where ``_hits`` is the cache. Otherwise ``_hits`` stays empty.
        self._plain = cache_key is None and cache_map is None
        self._hits: dict[Any, Any] = self._cache if self._plain else {}
        self._fast_join = self._plain and self._caching

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
        return f"<KeyedLoader {self._name or ''!s} size={self.size} cached={len(self._cache)}>"

    # -- loading -------------------------------------------------------------------------

    def load(self, key: K) -> asyncio.Future[V]:
        """Return a future of ``key``'s value, batched with the other loads of this moment.

        A pending future is this caller's own: cancelling it (or completing it)
        affects nobody else. A cache hit may return a shared future that is
        already done.

        Raises (at once): TypeError for None (unless ``key_type`` admits it), an
        unhashable key or one not of ``key_type``; :class:`QueueFullError`;
        :class:`LoaderClosedError`; :class:`WrongEventLoopError`.
        """
        # The hot path, in one function: a value cached as a done future (no
        # loop check: awaiting a done future works from any event loop), or a
        # new key joining the batch pending on this thread's loop while the
        # engine keeps it ``_open`` (every key it holds is cached, so a key not
        # cached is not in it; ``_limit`` keeps it under max_batch_size and
        # max_queue_size). Everything else takes ``_load``.
        try:
            hit = self._hits.get(key)
        except TypeError:
            return self._load(key)  # raises: unhashable
        if hit is not None:
            if hit.__class__ is FUTURE:
                self._fast_hits += 1
                return hit
            if hit is self._open and self._thread == get_ident():
                return self._join_open(key)
            return self._load(key)
        batch = self._open
        if batch is None or self._thread != get_ident():
            return self._load(key)
        key_type = self._key_type
        if key_type is None:
            if key is None:
                return self._load(key)  # raises
        elif not isinstance(key, key_type):
            return self._load(key)  # raises
        waiters = batch.waiters
        if len(waiters) >= self._limit:
            return self._load(key)
        future: asyncio.Future[V] = FUTURE(loop=self._loop)
        waiters[key] = future  # counted as a load and queued per batch (_count_pending)
        self._hits[key] = batch
        return future

    def _join_open(self, key: Any) -> asyncio.Future[V]:
        """A key again, while its batch is ``_open`` on this thread: one more future of it.

        The key passed load's checks when it joined (a hash-equal key of another
        type is checked here); each caller gets its own future, so that
        cancelling one affects nobody else.
        """
        key_type = self._key_type
        if key_type is not None and not isinstance(key, key_type):
            return self._load(key)  # raises
        batch = self._open
        assert batch is not None  # the caller found the key's entry to be it
        future: asyncio.Future[V] = FUTURE(loop=self._loop)
        self._loads += 1
        batch.join(key, future)
        return future

    def _load(self, key: Any) -> asyncio.Future[V]:
        """``load``'s every other case: checks, cache entries, a new batch window."""
        self._check_key(key)
        ck = self._ck(key)
        self._enter(key)
        self._loads += 1
        entry = self._cache.get(ck)
        if entry is not None:
            return self._from_entry(ck, key, entry)
        future: asyncio.Future[V] = self._new_future()
        self._route(ck, key, future)
        return future

    def _from_entry(self, ck: Hashable, key: Any, entry: Any) -> asyncio.Future[Any]:
        """A future answering ``key`` from its cache entry (see the engine's docstring)."""
        cls = entry.__class__
        if cls is FUTURE:
            self._cache_hits += 1
            return entry  # type: ignore[no-any-return]
        future = self._new_future()
        if cls is tuple:
            self._cache_hits += 1
            future.set_result(entry[0])
            self._cache[ck] = future  # later hits take load's fast path
        elif entry is MISS:
            self._cache_hits += 1
            future.set_exception(self._missing_error_for(key))
        else:  # a Batch, pending or in flight, or a Promise
            if entry is not self._batch:
                self._cache_hits += 1
            entry.join(ck, future)
        return future

    def resolve(self, key: K) -> V | asyncio.Future[V]:
        """``key``'s value itself when the cache holds it, else what ``load(key)`` returns.

        A GraphQL resolver can return the result as it is: graphql-core
        completes a value at once and awaits a future only when it gets one, so
        a cache hit costs no coroutine, task or await. A value is returned only
        when the cache holds it settled (fetched, primed, or left by
        ``load_many``); a key waiting or in flight, a cached miss with
        ``missing="error"``, and a key not cached give ``load``'s future, so
        errors always come through a future. Counted as ``load`` counts (a hit
        is a cache hit) and raising at once what ``load`` raises.
        """
        # load's fast path read the other way round: the value, not its future.
        try:
            hit: Any = self._hits.get(key)
        except TypeError:
            return self._load(key)  # raises: unhashable
        cls = hit.__class__
        if cls is FUTURE:  # the cache's futures are done, with a result
            self._fast_hits += 1
            return hit.result()  # type: ignore[no-any-return]
        if cls is tuple:
            if key is None or self._key_type is not None:
                self._check_key(key)  # as load's path for such an entry does
            self._fast_hits += 1
            return hit[0]  # type: ignore[no-any-return]
        if hit is not None:  # waiting, in flight, a miss, a promise: load's own next step
            if hit is self._open and self._thread == get_ident():
                return self._join_open(key)
            return self._load(key)
        if not self._plain:
            return self._resolve(key)
        return self.load(key)

    def _resolve(self, key: K) -> V | asyncio.Future[V]:
        """``resolve`` with ``cache_key=`` or ``cache_map=``: ``_load``'s steps, then the entry."""
        self._check_key(key)
        ck = self._ck(key)
        self._enter(key)
        entry = self._cache.get(ck)
        cls = entry.__class__
        if cls is FUTURE or cls is tuple:
            self._loads += 1
            self._cache_hits += 1
            value: V = entry.result() if cls is FUTURE else entry[0]
            return value
        return self._load(key)

    def load_many(
        self, keys: Iterable[K], return_exceptions: bool = False
    ) -> asyncio.Future[list[V]]:
        """Return a future of the values of ``keys``, in the order of ``keys``.

        With ``return_exceptions=False`` the future fails with the first failure
        (in the order the keys are answered); with True, failures take their
        key's place in the list. Duplicate keys are fetched once.
        """
        keys = list(keys)
        for key in keys:
            self._check_key(key)
        self._enter(keys[0] if keys else None)
        outer: asyncio.Future[list[Any]] = self._new_future()
        gather = _Gather(outer, len(keys), return_exceptions)
        if not keys:
            outer.set_result([])
            return outer
        cache_key = self._cache_key
        cks = keys if cache_key is None else [cache_key(k) for k in keys]
        self._loads += len(keys)
        try:
            if self.size + len(keys) > self._max_queue:
                self._check_room(keys, cks)
        except TypeError:
            raise self._unhashable_among(keys, cks) from None
        cache = self._cache
        routed: dict[Hashable, _Position] = {}
        for index, (key, ck) in enumerate(zip(keys, cks, strict=True)):
            try:
                position = routed.get(ck)
            except TypeError:
                outer.cancel()
                raise self._unhashable(key, ck) from None
            if position is not None:  # a duplicate within this call
                if position.more is None:
                    position.more = [index]
                else:
                    position.more.append(index)
                continue
            entry = cache.get(ck)
            if entry is None:
                position = routed[ck] = _Position(gather, index)
                self._route(ck, key, position).others = True
                continue
            cls = entry.__class__
            if cls is FUTURE:
                self._cache_hits += 1
                gather.put(index, entry.result())
            elif cls is tuple:
                self._cache_hits += 1
                gather.put(index, entry[0])
            elif entry is MISS:
                self._cache_hits += 1
                position = _Position(gather, index)
                if not position.done():
                    position.set_exception(self._missing_error_for(key))
            else:  # a Batch or a Promise
                if entry is not self._batch:
                    self._cache_hits += 1
                position = routed[ck] = _Position(gather, index)
                entry.join(ck, position)
        return outer

    def _check_room(self, keys: list[Any], cks: list[Any]) -> None:
        """Raise QueueFullError unless every new key of a ``load_many`` fits."""
        pending = self._batch.waiters if self._batch is not None else {}
        queued = self.size
        new: set[Hashable] = set()
        for key, ck in zip(keys, cks, strict=True):
            if ck in new or ck in pending or self._cache.get(ck) is not None:
                continue
            new.add(ck)
            if queued + len(new) > self._max_queue:
                raise self._full(key)

    # -- the cache -----------------------------------------------------------------------
    #
    # A key that waits in a batch (pending or in flight) counts as cached: prime
    # leaves it alone. ``clear`` detaches it: its callers still get the fetched
    # value, but the cache will not hold it, so a later ``prime`` or ``load``
    # starts afresh (graphql/dataloader's rule). ``prime`` after ``clear`` is
    # therefore how a write replaces a value, waiting or not.

    def prime(self, key: K, value: V | asyncio.Future[Any]) -> Self:
        """Cache ``value`` for ``key`` unless the key is cached, waiting or in flight.

        As in graphql/dataloader, priming never overwrites: to replace a value,
        ``clear(key)`` first. ``value`` may be a future (a value to come): loads
        of the key wait for it, and if it fails, the failure is not cached.
        Exceptions are never cached, so priming one raises TypeError. Does
        nothing when ``cache=False``. Returns the loader, for chaining.
        """
        if isinstance(value, BaseException):
            raise TypeError(
                f"{self._label}: prime() caches values only, got the exception {value!r} "
                f"for key {key!r}; failures are never cached"
            )
        if not self._caching:
            return self
        ck = self._ck(key)
        if self._cache.get(ck) is not None:
            return self
        if isinstance(value, asyncio.Future):
            self._prime_future(ck, value)
        else:
            self._cache[ck] = (value,)
        return self

    def prime_many(self, values: Mapping[K, V | asyncio.Future[Any]]) -> Self:
        """``prime`` each key of ``values`` with its value; returns the loader."""
        for key, value in values.items():
            self.prime(key, value)
        return self

    def _prime_future(self, ck: Hashable, value: asyncio.Future[Any]) -> None:
        """Prime with a future: its value is cached once there; loads meanwhile wait."""
        if value.done():
            if not value.cancelled() and value.exception() is None:
                self._cache[ck] = (value.result(),)
            return
        promise = Promise()
        self._cache[ck] = promise

        def settle(done: asyncio.Future[Any]) -> None:
            failed = done.cancelled() or done.exception() is not None
            if self._cache.get(ck) is promise:
                if failed:
                    self._cache.pop(ck, None)
                else:
                    self._cache[ck] = (done.result(),)
            for waiter in promise.waiters:
                if done.cancelled():
                    waiter.cancel()
                elif failed:
                    error = done.exception()
                    assert error is not None
                    if not waiter.done():
                        waiter.set_exception(error)
                elif not waiter.done():
                    waiter.set_result(done.result())

        value.add_done_callback(settle)

    def peek(self, key: K, default: Any = None) -> V | Any:
        """The value cached for ``key``, or ``default``; never loads.

        A key waiting or in flight, a cached miss, or a key not cached give
        ``default``.
        """
        entry = self._cache.get(self._ck(key))
        cls = entry.__class__
        if cls is FUTURE:
            return entry.result()
        if cls is tuple:
            return entry[0]
        return default

    def clear(self, key: K) -> Self:
        """Forget ``key``'s cached value, miss, or load waiting or in flight.

        A load waiting or in flight still answers its callers, but its value is
        not cached, and later loads of the key fetch it again. With
        ``value_cache``, the key is deleted there too, in the background
        (:meth:`invalidate` waits). Returns the loader, for chaining.
        """
        ck = self._ck(key)
        entry = self._cache.pop(ck, None)
        if entry.__class__ is Batch:
            entry.detach(ck)
            if entry is self._open:  # a key of it is no longer cached: load's fast path stops
                self._open = None
        if self._shared is not None and self._share_clears:
            _in_background(self._shared.delete, [ck])
        return self

    def clear_many(self, keys: Iterable[K]) -> Self:
        """``clear`` each of ``keys`` (one call of the shared cache for them all)."""
        self.invalidate(*keys)
        return self

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

    def clear_all(self) -> Self:
        """Forget every cached value and miss, and detach every load waiting or in flight.

        Returns the loader, for chaining.
        """
        if self._batch is not None:
            for ck in self._batch.waiters:
                self._batch.detach(ck)
            self._open = None  # its keys are no longer cached: load's fast path stops
        for batch in self._batches.values():
            batch.cached = False
        self._cache.clear()
        return self

    # -- correlation (the engine's face-specific part) ---------------------------------

    def _correlate(self, result: Any, batch: Batch, cks: Any) -> Mapping[Hashable, Any]:
        """Map a result to ``{cache key: value}`` (the shared stage's as it is)."""
        if self._shared is not None:  # the shared stage correlated what it fetched
            return result  # type: ignore[no-any-return]
        return self._outcomes(result, cks)

    def _outcomes(self, result: Any, cks: Any) -> Mapping[Hashable, Any]:
        """The batch function's ``result`` as ``{cache key: outcome}``, rows grouped."""
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

    def _check_key(self, key: Any) -> None:
        """Raise TypeError for a key of the wrong type, or None unless admitted."""
        key_type = self._key_type
        if key_type is None:
            if key is None:
                raise TypeError(
                    f"{self._label}: the key None is not accepted (a GraphQL null reaching "
                    "a loader is a bug in the caller); pass key_type=(..., type(None)) "
                    "to admit it"
                )
        elif not isinstance(key, key_type):
            if key is None:
                raise TypeError(
                    f"{self._label}: the key None is not accepted by key_type="
                    f"{self._type_names()} (a GraphQL null reaching a loader is a bug in "
                    "the caller)"
                )
            raise self._wrong_type(key)

    def _ck(self, key: Any) -> Hashable:
        """``key``'s cache key, checked to be hashable."""
        ck = key if self._cache_key is None else self._cache_key(key)
        try:
            hash(ck)
        except TypeError:
            raise self._unhashable(key, ck) from None
        return ck  # type: ignore[no-any-return]

    def _missing_error_for(self, key: Any) -> MissingKeyError:
        """The error of a cached miss, for this caller's key."""
        return MissingKeyError(self._name, key, kind=self._kind)

    def _wrong_type(self, key: Any) -> TypeError:
        """The error for a key not of ``key_type``."""
        return TypeError(
            f"{self._label}: key {key!r} is of type {type(key).__name__}, "
            f"expected {self._type_names()}"
        )

    def _type_names(self) -> str:
        """``key_type`` as messages name it: ``int or str``."""
        expected = self._key_type
        if isinstance(expected, tuple):
            return " or ".join(t.__name__ for t in expected)
        return getattr(expected, "__name__", repr(expected))

    def _unhashable(self, key: Any, ck: Any) -> TypeError:
        """The error for a key whose cache key cannot be hashed."""
        hint = "" if self._cache_key is not None else "; pass cache_key= to make keys hashable"
        shown = f"key {key!r}" if ck is key else f"key {key!r} (cache key {ck!r})"
        return TypeError(f"{self._label}: {shown} is unhashable ({type(ck).__name__}){hint}")

    def _unhashable_among(self, keys: list[Any], cks: list[Any]) -> TypeError:
        """The error for the first unhashable cache key among ``cks``."""
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
    """``key_type=``: a type, a non-empty tuple of types, or None."""
    if value is None or isinstance(value, type):
        return value
    if isinstance(value, tuple) and value and all(isinstance(t, type) for t in value):
        return value
    raise TypeError(f"key_type must be a type, a tuple of types, or None, got {value!r}")


def _check_cache_map(value: object) -> CacheMap | None:
    """``cache_map=``: None, or an object with the four methods the loader calls."""
    if value is None:
        return None
    missing = [
        name
        for name in ("get", "set", "delete", "clear")
        if not callable(getattr(value, name, None))
    ]
    if missing:
        raise TypeError(
            f"cache_map must have get, set, delete and clear methods, got {value!r} "
            f"({type(value).__name__}) without {', '.join(missing)}"
        )
    return value  # type: ignore[return-value]  # checked just above


def _check_observers(value: object) -> tuple[BatchObserver, ...]:
    """``observers=``: an iterable of objects with both observer methods."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(f"observers must be a sequence of observers, got {value!r}")
    observers = tuple(value)
    for observer in observers:
        if not callable(getattr(observer, "batch_started", None)) or not callable(
            getattr(observer, "batch_finished", None)
        ):
            raise TypeError(
                f"observers: {observer!r} has no batch_started and batch_finished methods"
            )
    return observers


class _MapCache:
    """A user's ``cache_map`` as the engine uses its cache: the few dict operations."""

    __slots__ = ("map",)

    def __init__(self, cache_map: CacheMap) -> None:
        self.map = cache_map

    def get(self, ck: Hashable, default: Any = None) -> Any:
        entry = self.map.get(ck)
        return default if entry is None else entry

    def __setitem__(self, ck: Hashable, entry: Any) -> None:
        self.map.set(ck, entry)

    def pop(self, ck: Hashable, default: Any = None) -> Any:
        entry = self.map.get(ck)
        if entry is None:
            return default
        self.map.delete(ck)
        return entry

    def clear(self) -> None:
        self.map.clear()

    def __len__(self) -> int:
        return len(self.map) if isinstance(self.map, Sized) else 0
