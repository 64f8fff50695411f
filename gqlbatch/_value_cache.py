"""The shared value cache: a second cache stage behind each loader's own.

A :class:`KeyedLoader` caches per request. With ``value_cache=`` it also
consults a cache shared by every request, process and machine (Redis, or the
in-process :class:`MemoryValueCache`), **once per batch**: the batch's keys go
to ``get_many`` in one call, only the keys it lacks reach the batch function,
and what the batch function found goes back in one ``set_many`` call. Per-key
exceptions are never stored; keys the batch function did not answer are
stored (as :data:`NOT_FOUND`) only with ``cache_misses_ttl``.

Failure model: the shared cache is an optimisation, never a dependency. Each
call is bounded by ``value_cache_timeout_ms``; a call that fails or times out
counts as a cache that holds nothing (fail open), and after
``CircuitBreaker.failures`` failures in a row the loaders stop asking for
``CircuitBreaker.reset_s`` seconds, then let one call through to test the
water.

Consistency: a fill must never store a value older than an invalidation that
completed before it. A reader could otherwise read the old row, a writer commit
and invalidate, and the reader then store the old row for every process to
read until its TTL ends (the *fill race*). So ``set_many`` receives the very
mapping ``get_many`` returned (``read``), and an implementation refuses to
store a key invalidated since that read: :class:`MemoryValueCache` keeps an
invalidation log, ``gqlbatch.redis`` a generation per key checked by a script.
A fill older than the cache's ``fill_window_s`` is dropped whole, which bounds
how long that bookkeeping must be kept.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence, Sized
from dataclasses import dataclass
from typing import Any, Final, Protocol, runtime_checkable

from gqlbatch._observe import OBSERVERS
from gqlbatch._options import check_int, check_number

__all__ = [
    "NOT_FOUND",
    "CacheCallInfo",
    "CircuitBreaker",
    "MemoryValueCache",
    "ValueCache",
    "ValueCacheRead",
]


class _NotFound:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_FOUND"

    def __reduce__(self) -> str:
        return "NOT_FOUND"


NOT_FOUND: Final = _NotFound()
"""The value a shared cache stores for a key the batch function did not answer.

Only with ``cache_misses_ttl``; the loader then applies its ``missing`` rule
(None, or :class:`MissingKeyError`) as if the batch function had left the key out.
"""


@runtime_checkable
class ValueCache(Protocol):
    """A cache shared beyond one request: what ``KeyedLoader(value_cache=...)`` consults.

    Keys are the loader's cache keys (``cache_key(key)``, or the keys). Every
    method may raise or hang: the loader bounds each call and fails open.
    """

    async def get_many(self, keys: Sequence[Hashable], /) -> Mapping[Hashable, Any]:
        """The values held for ``keys`` (keys not held are left out).

        The mapping returned comes back as ``read`` to the ``set_many`` that
        fills the keys it lacked, so it may carry what the fill needs to refuse
        keys invalidated meanwhile (see :class:`ValueCacheRead`).
        """
        ...

    async def set_many(
        self, items: Mapping[Hashable, Any], ttl: float | None, /, *, read: Mapping[Hashable, Any]
    ) -> None:
        """Store ``items`` for ``ttl`` seconds (None: the cache's default).

        Must not store a key that ``delete_many`` removed after ``read`` was made.
        """
        ...

    async def delete_many(self, keys: Sequence[Hashable], /) -> None:
        """Forget ``keys``, and make fills of reads made before this call skip them."""
        ...


class ValueCacheRead(dict[Hashable, Any]):
    """What ``get_many`` returns: the hits, and when the read was made.

    ``at`` is the cache's clock at the read; ``token`` is the
    implementation's own (an invalidation sequence number, generations).
    """

    __slots__ = ("at", "token")

    def __init__(self, hits: Mapping[Hashable, Any], at: float, token: Any = None) -> None:
        super().__init__(hits)
        self.at = at
        self.token = token


# --------------------------------------------------------------------------- in process


class MemoryValueCache:
    """A :class:`ValueCache` in this process's memory: LRU-bounded, with a TTL per entry.

    For one-process deployments and tests. Shared by every loader given it
    (give each loader kind its own: keys are not namespaced). Values are held
    as they are, not copied: every request gets the same object, so never
    mutate what such a loader returns.

    Args:
        max_entries: the most entries held; the least recently used goes first.
        ttl: seconds an entry lives when ``set_many`` passes None (None: forever).
        fill_window_s: a fill made more than this long after its read is dropped.
        clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        ttl: float | None = None,
        fill_window_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = check_int("max_entries", max_entries, 1)
        self._ttl = check_number("ttl", ttl, 0, optional=True, strict=True)
        self._window = check_number("fill_window_s", fill_window_s, 0, strict=True)
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        # Invalidations of the last fill window: key -> (sequence number, time).
        self._deleted: OrderedDict[Hashable, tuple[int, float]] = OrderedDict()
        self._seq = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<MemoryValueCache {len(self._entries)}/{self._max}>"

    async def get_many(self, keys: Sequence[Hashable], /) -> ValueCacheRead:
        now = self._clock()
        entries = self._entries
        hits: dict[Hashable, Any] = {}
        for key in keys:
            entry = entries.get(key)
            if entry is None:
                continue
            if entry[0] <= now:
                del entries[key]
                continue
            entries.move_to_end(key)
            hits[key] = entry[1]
        return ValueCacheRead(hits, now, self._seq)

    async def set_many(
        self, items: Mapping[Hashable, Any], ttl: float | None, /, *, read: Mapping[Hashable, Any]
    ) -> None:
        now = self._clock()
        if not isinstance(read, ValueCacheRead) or now - read.at > self._window:
            return  # not a read of this cache, or too old to know what was invalidated since
        self._prune(now)
        ttl = self._ttl if ttl is None else ttl
        expires = float("inf") if ttl is None else now + ttl
        entries = self._entries
        deleted = self._deleted
        for key, value in items.items():
            gone = deleted.get(key)
            if gone is not None and gone[0] > read.token:
                continue  # invalidated after the read: the value may be older than the write
            entries[key] = (expires, value)
            entries.move_to_end(key)
        while len(entries) > self._max:
            entries.popitem(last=False)

    async def delete_many(self, keys: Sequence[Hashable], /) -> None:
        now = self._clock()
        self._seq += 1
        for key in keys:
            self._entries.pop(key, None)
            self._deleted[key] = (self._seq, now)
            self._deleted.move_to_end(key)
        self._prune(now)

    def _prune(self, now: float) -> None:
        """Drop invalidations older than the fill window: no fill can predate them."""
        deleted = self._deleted
        while deleted:
            key, (_, at) = next(iter(deleted.items()))
            if now - at <= self._window:
                break
            del deleted[key]


# --------------------------------------------------------------------------- the breaker


class CircuitBreaker:
    """Stops asking a failing shared cache for a while.

    ``failures`` failed calls in a row open the circuit: calls are skipped for
    ``reset_s`` seconds; then one call goes through (half-open): a success
    closes the circuit, a failure opens it again. One breaker per cache object
    is made for you (:func:`breaker_of`); pass your own to
    ``value_cache_breaker=`` to share or tune it.
    """

    __slots__ = ("_clock", "_failed", "_open_until", "_trial", "failures", "reset_s")

    def __init__(
        self,
        *,
        failures: int = 5,
        reset_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures: int = check_int("failures", failures, 1)
        """Failed calls in a row that open the circuit (default 5)."""
        self.reset_s: float = check_number("reset_s", reset_s, 0, strict=True)
        """Seconds the circuit stays open before one trial call (default 5.0)."""
        self._clock = clock
        self._failed = 0
        self._open_until = 0.0
        self._trial = False  # a half-open trial call is under way

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.state} failures={self.failures} reset_s={self.reset_s}>"

    @property
    def state(self) -> str:
        """``"closed"`` (calls go through), ``"open"`` (skipped) or ``"half-open"``."""
        if self._failed < self.failures:
            return "closed"
        return "open" if self._clock() < self._open_until or self._trial else "half-open"

    def allow(self) -> bool:
        """Whether a call may go now; a half-open circuit lets exactly one through."""
        if self._failed < self.failures:
            return True
        if self._trial or self._clock() < self._open_until:
            return False
        self._trial = True
        return True

    def succeeded(self) -> None:
        self._failed = 0
        self._trial = False

    def failed(self) -> None:
        self._failed += 1
        self._trial = False
        if self._failed >= self.failures:
            self._open_until = self._clock() + self.reset_s


_BREAKERS: weakref.WeakKeyDictionary[Any, CircuitBreaker] = weakref.WeakKeyDictionary()

MAX_UNDELIVERED: Final = 100_000
"""The most failed invalidations a process keeps for one cache, to deliver later."""

# Per cache object: keys whose invalidation failed in this process, oldest first.
# While any is left, this process reads nothing from that cache (its own requests
# must see their writes) and delivers them before its next read.
_UNDELIVERED: weakref.WeakKeyDictionary[Any, dict[Hashable, None]] = weakref.WeakKeyDictionary()


def breaker_of(cache: ValueCache) -> CircuitBreaker:
    """The process's default breaker of ``cache``, shared by every loader using it."""
    breaker = _BREAKERS.get(cache)
    if breaker is None:
        breaker = _BREAKERS[cache] = CircuitBreaker()
    return breaker


# --------------------------------------------------------------------------- observing


@dataclass(frozen=True, slots=True)
class CacheCallInfo:
    """One call of a shared cache by a loader, as observers see it.

    An observer with a ``value_cache_call(info)`` method receives one per call.
    """

    loader: str | None
    """The loader's ``name``."""
    operation: str
    """``"get"``, ``"set"`` or ``"delete"``."""
    keys: int
    """Keys in the call."""
    hits: int
    """Keys found (``"get"`` only)."""
    outcome: str
    """``"ok"``, ``"error"`` (raised or timed out) or ``"skipped"`` (circuit open)."""
    ms: float
    """Milliseconds the call took (0 when skipped)."""
    circuit: str
    """The breaker's state after the call."""


class ValueCacheCounters:
    """A loader's shared-cache counters (kept per loader, read through ``stats``)."""

    __slots__ = ("errors", "hits", "misses", "ms", "skips")

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.errors = 0
        self.skips = 0
        self.ms = 0.0


_FAILED: Final[Any] = object()


class SharedStage:
    """One loader's use of a shared cache: bounded calls, the breaker, the counters.

    Built by :class:`KeyedLoader` from its ``value_cache*`` options; wraps the
    batch function so the engine needs to know nothing about it.
    """

    __slots__ = (
        "breaker",
        "cache",
        "counters",
        "invalidate_timeout",
        "misses_ttl",
        "name",
        "timeout",
        "ttl",
    )

    def __init__(
        self,
        cache: ValueCache,
        *,
        name: str | None,
        ttl: float | None,
        misses_ttl: float | None,
        timeout_ms: float,
        invalidate_timeout_ms: float = 1000,
        breaker: CircuitBreaker | None,
    ) -> None:
        if not isinstance(cache, ValueCache):
            raise TypeError(
                f"value_cache must have async get_many, set_many and delete_many methods "
                f"(a gqlbatch.ValueCache), got {cache!r} ({type(cache).__name__})"
            )
        try:
            hash(cache)
            weakref.ref(cache)
        except TypeError:
            raise TypeError(
                f"value_cache must be hashable and weakly referenceable: the process keeps "
                f"its breaker and its undelivered invalidations per cache object; got a "
                f"{type(cache).__name__} (a dataclass with eq=True, or with slots=True and "
                f"no __weakref__?)"
            ) from None
        self.cache = cache
        self.name = name
        self.ttl: float | None = check_number("value_cache_ttl", ttl, 0, optional=True, strict=True)
        self.misses_ttl: float | None = check_number(
            "cache_misses_ttl", misses_ttl, 0, optional=True, strict=True
        )
        self.timeout: float = (
            check_number("value_cache_timeout_ms", timeout_ms, 0, strict=True) / 1000
        )
        self.invalidate_timeout: float = (
            check_number("value_cache_invalidate_timeout_ms", invalidate_timeout_ms, 0, strict=True)
            / 1000
        )
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise TypeError(
                f"value_cache_breaker must be a CircuitBreaker or None, got {breaker!r}"
            )
        self.breaker = breaker_of(cache) if breaker is None else breaker
        self.counters = ValueCacheCounters()

    def wrap(
        self,
        batch_fn: Callable[[list[Any]], Any],
        cache_key: Callable[[Any], Hashable] | None,
        outcomes: Callable[[Any, list[Hashable]], Mapping[Hashable, Any]],
    ) -> Callable[[list[Any]], Any]:
        """The batch function behind the shared cache; it answers ``{cache key: outcome}``."""
        stage = self

        async def shared(keys: list[Any]) -> Mapping[Hashable, Any]:
            cks: list[Hashable] = keys if cache_key is None else [cache_key(k) for k in keys]
            read = await stage._read(cks)
            counters = stage.counters
            answered: dict[Hashable, Any] = {}
            lacking: list[Any] = []
            lacking_cks: list[Hashable] = []
            for key, ck in zip(keys, cks, strict=True):
                if read is not _FAILED and ck in read:
                    value = read[ck]
                    if value is not NOT_FOUND:  # a stored miss: left out, as the fetch did
                        answered[ck] = value
                else:
                    lacking.append(key)
                    lacking_cks.append(ck)
            if read is not _FAILED:
                counters.hits += len(keys) - len(lacking)
                counters.misses += len(lacking)
            if not lacking:
                return answered
            found = outcomes(await batch_fn(lacking), lacking_cks)
            if read is not _FAILED:  # no read, no fill: nothing would guard it
                await stage._fill(found, lacking_cks, read)
            if answered:
                found = {**found, **answered}
            return found

        return shared

    async def _fill(
        self, found: Mapping[Hashable, Any], cks: list[Hashable], read: Mapping[Hashable, Any]
    ) -> None:
        """Store what the batch function found in one call (misses in one more).

        Exceptions are never stored; misses only with ``cache_misses_ttl``.
        """
        values: dict[Hashable, Any] = {}
        misses: list[Hashable] = []
        for ck in cks:
            value = found.get(ck, NOT_FOUND)
            if value is NOT_FOUND:
                misses.append(ck)
            elif not isinstance(value, BaseException):
                values[ck] = value
        cache = self.cache
        if values:
            await self._call("set", values, lambda: cache.set_many(values, self.ttl, read=read))
        if misses and self.misses_ttl is not None:
            absent = dict.fromkeys(misses, NOT_FOUND)
            await self._call(
                "set", absent, lambda: cache.set_many(absent, self.misses_ttl, read=read)
            )

    async def _read(self, cks: list[Hashable]) -> Any:
        """``get_many``, once every invalidation this process owes the cache is delivered."""
        undelivered = _UNDELIVERED.get(self.cache)
        if undelivered:
            owed = list(undelivered)
            if await self._call("delete", owed, lambda: self.cache.delete_many(owed)) is _FAILED:
                return _FAILED  # read the database: this cache may hold what we overwrote
            for ck in owed:
                undelivered.pop(ck, None)
        return await self._call("get", cks, lambda: self.cache.get_many(cks))

    async def delete(self, cks: Sequence[Hashable]) -> None:
        """Forget ``cks`` in the shared cache, bounded and failing open.

        A deletion is what keeps other processes from reading a value a write
        replaced, so it is worth more than a read: it is tried even while the
        circuit is open, and may take ``value_cache_invalidate_timeout_ms``
        rather than the reads' ``value_cache_timeout_ms``. One that still fails
        is kept and delivered before this process's next read of the cache,
        which reads nothing from it until then. ``cks`` is never empty.
        """
        call = lambda: self.cache.delete_many(cks)  # noqa: E731
        deleted = await self._call("delete", cks, call, self.invalidate_timeout, gated=False)
        if deleted is not _FAILED:
            return
        undelivered = _UNDELIVERED.get(self.cache)
        if undelivered is None:
            undelivered = _UNDELIVERED[self.cache] = {}
        for ck in cks:
            undelivered.pop(ck, None)
            undelivered[ck] = None
        while len(undelivered) > MAX_UNDELIVERED:  # past this, the entries' TTL is the bound
            del undelivered[next(iter(undelivered))]

    async def _call(
        self,
        operation: str,
        keys: Sized,
        call: Callable[[], Any],
        limit_s: float | None = None,
        *,
        gated: bool = True,
    ) -> Any:
        """Run one cache call within ``limit_s`` (default: the reads' timeout).

        Returns ``_FAILED`` when it failed, timed out or was skipped: ``gated``
        calls ask the breaker first; others go whatever its state.
        """
        breaker = self.breaker
        if gated and not breaker.allow():
            self.counters.skips += len(keys)
            self._tell(operation, len(keys), 0, "skipped", 0.0)
            return _FAILED
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout if limit_s is None else limit_s):
                result = await call()
        except TypeError:
            # A value or key the cache cannot hold (an ORM object, say) is a bug to
            # see, not an outage to hide: it fails the batch, naming the value.
            raise
        except Exception:
            # A cache that raised or timed out holds nothing, as far as we know.
            breaker.failed()
            ms = (time.perf_counter() - started) * 1000
            self.counters.errors += 1
            self.counters.ms += ms
            self._tell(operation, len(keys), 0, "error", ms)
            return _FAILED
        breaker.succeeded()
        ms = (time.perf_counter() - started) * 1000
        self.counters.ms += ms
        if OBSERVERS:
            hits = len(result) if operation == "get" else 0
            self._tell(operation, len(keys), hits, "ok", ms)
        return result

    def _tell(self, operation: str, keys: int, hits: int, outcome: str, ms: float) -> None:
        if not OBSERVERS:
            return
        info = CacheCallInfo(self.name, operation, keys, hits, outcome, ms, self.breaker.state)
        for observer in list(OBSERVERS):
            hook = getattr(observer, "value_cache_call", None)
            if hook is None:
                continue
            try:
                hook(info)
            except Exception as exc:
                asyncio.get_running_loop().call_exception_handler(
                    {"message": f"gqlbatch observer {observer!r} raised", "exception": exc}
                )
