"""The batching engine shared by :class:`KeyedLoader` and :class:`BatchedQueue`.

Read top to bottom in the order things happen: a key is accepted (``_route``),
it waits in the pending batch until the batch is dispatched (``_schedule``,
``_on_iteration``, ``_due``, ``_dispatch``), the batch runs in a task of its own
(``_run``: concurrency slot, call, correlation, delivery, retries), and a
failure may spread by error mode (``_reject_everything``). ``close`` and the
task's done callback make sure no caller is ever left hanging.

Vocabulary:

* a *key* is what the batch function receives; its *cache key* (``ck``) is what
  identifies it inside the engine (the key itself, ``cache_key(key)``, or a
  sequence number for queue items, which are never deduplicated);
* a *waiter* is what a caller holds: an ``asyncio.Future`` of its own for
  ``load``/``enqueue``, or a position of a ``load_many`` result;
* a *batch* is a set of cache keys handed out together, each with its waiters.

The faces differ only in how a result is correlated to cache keys
(``_correlate``) and in what a missing key means (``_missing_error``).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import sys
from collections import deque
from collections.abc import Callable, Collection, Hashable, Iterable, Sized
from typing import Any, Final, Protocol, Self

from gqlbatch._errors import (
    BatchError,
    LoaderClosedError,
    MissingKeyError,
    QueueFullError,
    WrongEventLoopError,
    describe,
)
from gqlbatch._observe import OBSERVERS, BatchInfo, BatchObserver
from gqlbatch._options import BatchOptions, ErrorMode
from gqlbatch._stats import LoaderStats

MAX_COALESCE_ITERATIONS: Final = 16
"""With ``max_wait_ms=0``, the most event-loop iterations a batch waits for more keys."""
QUIET_ITERATIONS: Final = 4
"""With ``max_wait_ms=0`` on a busy loop, iterations in a row without a new key that end a batch."""


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


ABSENT: Final = _Sentinel("ABSENT")
"""A key with no entry in the batch function's result."""
RAISE: Final = _Sentinel("RAISE")
"""``_absent`` value of faces where a missing key fails with ``MissingKeyError``."""
MISS: Final = _Sentinel("MISS")
"""Cache entry of a miss that fails with ``MissingKeyError`` on every hit."""

_OPEN, _CLOSING, _CLOSED = 0, 1, 2


class Waiter(Protocol):
    """What the engine answers: an ``asyncio.Future`` or a ``load_many`` position."""

    def done(self) -> bool: ...
    def set_result(self, result: Any, /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...


class Batch:
    """Cache keys handed out together; lives until each of its callers is answered.

    Plain dicts and no back references: a batch holds its waiters, nothing holds
    the batch but the engine's registries, so per-key bookkeeping forms no
    reference cycle for the garbage collector to chase.
    """

    __slots__ = ("attempts", "created", "extra", "finished", "keys", "started", "waiters")

    def __init__(
        self,
        waiters: dict[Hashable, Waiter],
        extra: dict[Hashable, list[Waiter]] | None,
        keys: dict[Hashable, Any] | None,
        created: float = 0.0,
    ) -> None:
        self.created = created  # loop time of its first key
        self.waiters = waiters  # cache key -> first waiter, in arrival order
        self.extra = extra  # cache key -> further waiters of that key (rare)
        self.keys = keys  # cache key -> key, where the two differ
        self.attempts = 0  # calls of the batch function so far
        self.started = False  # handed to the batch function at least once
        self.finished = False  # its task answered every caller and returned

    def join(self, ck: Hashable, waiter: Waiter) -> None:
        extra = self.extra
        if extra is None:
            self.extra = {ck: [waiter]}
        else:
            extra.setdefault(ck, []).append(waiter)

    def callers(self, ck: Hashable) -> list[Waiter]:
        more = self.extra.get(ck) if self.extra else None
        first = self.waiters[ck]
        return [first, *more] if more else [first]

    def key(self, ck: Hashable) -> Any:
        return ck if self.keys is None else self.keys[ck]

    def live(self, cks: Iterable[Hashable]) -> list[Hashable]:
        """The cache keys among ``cks`` that still have a caller waiting."""
        waiters = self.waiters
        extra = self.extra
        return [
            ck
            for ck in cks
            if not waiters[ck].done() or (extra and any(not w.done() for w in extra.get(ck, ())))
        ]


def _answer(waiter: Waiter, value: Any) -> None:
    if not waiter.done():
        waiter.set_result(value)


def _fail(waiter: Waiter, error: BaseException) -> None:
    if not waiter.done():
        waiter.set_exception(error)


class Engine:
    """Shared machinery of both faces. Not public: use KeyedLoader or BatchedQueue."""

    def __init__(
        self,
        batch_fn: Callable[[list[Any]], Any],
        options: BatchOptions,
        *,
        kind: str,
        caching: bool = False,
        absent: Any = None,
        hold_when_busy: bool = False,
        remember_keys: bool = False,
    ) -> None:
        """Set up an idle engine; the face says how it behaves.

        Args:
            kind: ``"loader"`` or ``"queue"``, as errors and statistics name it.
            caching: keep values, misses and loads in flight (``cache=True``).
            absent: what a key missing from the result resolves to, or RAISE.
            hold_when_busy: a due batch keeps taking keys while every slot is busy.
            remember_keys: keys differ from cache keys, so batches keep both.
        """
        if not callable(batch_fn):
            raise TypeError(
                f"batch function of {describe(options.name, kind)} must be callable, "
                f"got {batch_fn!r} ({type(batch_fn).__name__})"
            )
        self._kind = kind
        self._caching = caching
        self._absent = absent
        self._hold_when_busy = hold_when_busy
        self._batch_fn = batch_fn
        self._options = options
        self._name = options.name
        self._label = describe(options.name, self._kind)
        self._max_batch = options.max_batch_size or sys.maxsize
        self._max_queue = options.max_queue_size or sys.maxsize
        self._wait = options.max_wait_ms / 1000
        self._max_concurrency = options.max_concurrency
        self._mode = options.error_mode
        self._retry = options.retry
        self._timeout = (
            None if options.batch_timeout_ms is None else options.batch_timeout_ms / 1000
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._new_future: Callable[[], asyncio.Future[Any]] = _unbound
        self._state = _OPEN
        # The batch being filled.
        self._pending: dict[Hashable, Waiter] = {}
        self._pending_extra: dict[Hashable, list[Waiter]] | None = None
        self._pending_keys: dict[Hashable, Any] | None = {} if remember_keys else None
        self._handle: asyncio.Handle | None = None  # its dispatch, once scheduled
        # Due but held until a slot frees (``_hold_when_busy``), with the context
        # its task is to run in: the one it would have had if dispatched when due.
        self._held: contextvars.Context | None = None
        self._first_at = 0.0  # loop time when the pending batch's first key arrived
        self._seen = 0  # pending keys at the previous look (max_wait_ms=0)
        self._quiet = 0  # looks in a row that saw no new key
        self._iterations = 0  # looks since the batch's first key
        self._ready: Sized | None = None  # the loop's ready queue, where it has one
        # The cache, in two parts: values as done futures, which ``load`` hands
        # out as they are; and values not yet wrapped in a future (a 1-tuple, from
        # ``prime`` or ``load_many``) or misses (MISS), which ``load`` converts.
        # Keys whose batch has not answered yet are in ``_inflight``. The cache
        # stays empty when caching is off; looking it up still rejects unhashable
        # keys.
        self._cache: dict[Hashable, asyncio.Future[Any]] = {}
        self._stored: dict[Hashable, Any] = {}
        self._inflight: dict[Hashable, Batch] = {}
        self._batches: dict[asyncio.Task[None], Batch] = {}  # every batch handed out
        self._queued = 0  # keys accepted and not yet handed to the batch function
        self._running = 0  # batch function calls under way (with max_concurrency)
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        # Statistics.
        self._loads = 0  # loads that took the slow path
        self._cache_hits = 0  # cache hits that took the slow path
        self._fast_hits = 0  # cache hits of KeyedLoader.load's fast path
        self._calls = 0
        self._keys_dispatched = 0
        self._largest = 0
        self._retries = 0
        self._failed = 0
        self._rejected = 0

    # -- public surface shared by both faces ---------------------------------------------

    @property
    def name(self) -> str | None:
        """The ``name`` given at construction, or None."""
        return self._name

    @property
    def options(self) -> BatchOptions:
        """The validated options, read-only."""
        return self._options

    @property
    def size(self) -> int:
        """Keys accepted and not yet handed to the batch function."""
        return self._queued

    def __len__(self) -> int:
        return self._queued

    @property
    def closed(self) -> bool:
        """True once ``close()`` ran (directly or at the end of ``aclose()``)."""
        return self._state == _CLOSED

    @property
    def stats(self) -> LoaderStats:
        """A snapshot of the counters; see :class:`LoaderStats`."""
        return LoaderStats(
            loads=self._loads + self._fast_hits,
            cache_hits=self._cache_hits + self._fast_hits,
            batches=self._calls,
            keys_dispatched=self._keys_dispatched,
            largest_batch=self._largest,
            retries=self._retries,
            failed_batches=self._failed,
            rejected=self._rejected,
        )

    async def flush(self) -> None:
        """Dispatch what waits now, ignoring ``max_wait_ms``, and await every batch in flight.

        Retries and waits for a concurrency slot are part of a batch, so they are
        awaited too. Batches started by the awaited batches themselves are not.
        Cancelling ``flush`` does not cancel the batches.
        """
        self._dispatch()
        current = asyncio.current_task()
        tasks = [task for task in self._batches if task is not current]
        if tasks:
            await asyncio.wait(tasks)

    def close(self) -> None:
        """Close now: every caller not yet answered gets :class:`LoaderClosedError`.

        Timers and running batch tasks are cancelled; later calls raise
        :class:`LoaderClosedError`. Calling it again does nothing.
        """
        if self._state == _CLOSED:
            return
        self._state = _CLOSED
        self._reject_everything(self._closed_error, cancel=True)
        self._cache.clear()
        self._stored.clear()

    async def aclose(self) -> None:
        """Close gracefully: refuse new work, finish everything accepted, then ``close()``.

        Nothing accepted is lost. If ``aclose`` itself is cancelled, it closes at
        once (as ``close()``) and re-raises the cancellation.
        """
        if self._state == _CLOSED:
            return
        self._state = _CLOSING
        try:
            await self.flush()
        finally:
            self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- accepting keys ------------------------------------------------------------------

    def _check_open(self, key: Any) -> None:
        """Raise unless new work is accepted here; bind to the running loop at first use."""
        if self._state:
            raise self._closed_error(key, 0)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                f"{self._label} can only be used from a coroutine running in an event loop"
            ) from None
        if loop is not self._loop:
            self._bind(loop)

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to ``loop``: at first use, or again once the previous loop was closed.

        A loader may be created at import time and used by one ``asyncio.run`` after
        another. While its loop is open, its futures and tasks belong to that loop,
        so use from another one is refused rather than left to hang.
        """
        old = self._loop
        if old is not None:
            if not old.is_closed():
                raise WrongEventLoopError(self._name, self._kind)
            # Whatever the closed loop left behind can never complete: start afresh.
            self._pending = {}
            self._pending_extra = None
            self._pending_keys = {} if self._pending_keys is not None else None
            self._handle = None
            self._held = None
            self._cache.clear()
            self._stored.clear()
            self._inflight.clear()
            self._batches.clear()
            self._slot_waiters.clear()
            self._queued = self._running = 0
        self._loop = loop
        ready = getattr(loop, "_ready", None)
        self._ready = ready if isinstance(ready, Sized) else None
        # Futures come from the C type directly where the loop would do just that
        # through a Python method; other loops (uvloop) make their own.
        if type(loop).create_future is asyncio.BaseEventLoop.create_future:
            self._new_future = functools.partial(asyncio.Future, loop=loop)
        else:
            self._new_future = loop.create_future

    def _full(self, key: Any) -> QueueFullError:
        self._rejected += 1
        return QueueFullError(self._name, key, self._max_queue, self._kind)

    def _route(self, ck: Hashable, key: Any, waiter: Waiter) -> None:
        """Attach ``waiter`` to the pending batch, to a batch in flight, or to a new key.

        The caller has checked that the engine is open and bound to the running
        loop. Raises :class:`QueueFullError`, changing nothing, when a new key would
        exceed ``max_queue_size``.
        """
        pending = self._pending
        if ck in pending:
            extra = self._pending_extra
            if extra is None:
                self._pending_extra = {ck: [waiter]}
            else:
                extra.setdefault(ck, []).append(waiter)
            return
        if self._caching:
            batch = self._inflight.get(ck)
            if batch is not None:
                batch.join(ck, waiter)
                self._cache_hits += 1
                return
        if self._queued >= self._max_queue:
            raise self._full(key)
        pending[ck] = waiter
        if self._pending_keys is not None:
            self._pending_keys[ck] = key
        self._queued += 1
        size = len(pending)
        if size == 1:
            self._schedule()
        if size >= self._max_batch:
            self._dispatch()

    # -- when to dispatch ----------------------------------------------------------------
    #
    # With max_wait_ms > 0 the rule is the spec's: a timer started by the batch's
    # first key; later keys do not push it back.
    #
    # With max_wait_ms=0 a batch should hold every key that the current "wave" of
    # resolvers will ask for. graphql-core runs sibling resolvers as tasks that
    # reach `load` after different numbers of awaits (a permission check, a nested
    # coroutine that suspends), so dispatching on the next loop iteration, as
    # aiodataloader and Strawberry do with call_soon, splits a level into several
    # batches. Instead the engine looks once per loop iteration, from a call_soon
    # callback, at whether new keys arrived since its previous look.
    #
    # One quiet look is not enough: the look runs in FIFO order among the
    # iteration's callbacks, so a sibling that suspended in the same iteration as
    # the first key's resolver runs *after* the look and loads only then. So a
    # quiet look dispatches only when nothing else is ready to run (the event
    # loop's ready queue is empty: every resolver that could still load is waiting
    # on I/O or on a load). While other work keeps the loop busy (other requests,
    # say), QUIET_ITERATIONS quiet looks in a row end the wave. Either way, a
    # batch never waits more than MAX_COALESCE_ITERATIONS iterations after its
    # first key, so a steady stream of keys cannot starve it. A key that arrives
    # only after real I/O (a timer, a socket) forms the next batch.
    #
    # The ready queue is asyncio's private `_ready` deque; on loops without one
    # (uvloop) only the quiet-iterations rule applies.

    def _schedule(self) -> None:
        """Arrange the dispatch of a batch whose first key just arrived."""
        loop = self._loop
        assert loop is not None
        self._first_at = loop.time()
        if self._wait:
            self._handle = loop.call_later(self._wait, self._due)
        else:
            self._seen = 0
            self._quiet = 0
            self._iterations = 0
            self._handle = loop.call_soon(self._on_iteration)

    def _on_iteration(self) -> None:
        size = len(self._pending)
        self._iterations += 1
        if size != self._seen:
            self._seen = size
            self._quiet = 0
        else:
            self._quiet += 1
        ready = self._ready
        if (
            self._iterations >= MAX_COALESCE_ITERATIONS
            or self._quiet >= QUIET_ITERATIONS
            or (self._quiet and ready is not None and not ready)
        ):
            self._handle = None
            self._due()
        else:
            assert self._loop is not None
            self._handle = self._loop.call_soon(self._on_iteration)

    # A queue holds a due batch while every slot is busy, as the spec's ``tasks``
    # array does: items that arrive meanwhile join it (up to max_batch_size, which
    # still dispatches at once), and it goes when a slot frees (``_release_slot``).
    # Dispatched when due, it would wait for the slot as it is, and a processor
    # slower than max_wait_ms would be handed one small batch per max_wait_ms: a
    # backlog that grows for as long as items keep coming. A loader's batch goes
    # when due, as its event-loop rule says, and waits for its slot as it is.

    def _due(self) -> None:
        """The pending batch's time has come: dispatch it, or hold it for a slot."""
        if (
            self._hold_when_busy
            and self._max_concurrency is not None
            and (self._running >= self._max_concurrency or self._slot_waiters)
        ):
            self._handle = None
            self._held = contextvars.copy_context()  # the caller's, as a dispatch's task gets
            return
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand the pending batch to a task of its own, if anything is pending.

        The task runs in the current context, or in the one a held batch kept.
        """
        context, self._held = self._held, None
        pending = self._pending
        if not pending:
            return
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        batch = Batch(pending, self._pending_extra, self._pending_keys, self._first_at)
        self._pending = {}
        self._pending_extra = None
        if self._pending_keys is not None:
            self._pending_keys = {}
        if self._caching:
            self._inflight.update(dict.fromkeys(pending, batch))
        assert self._loop is not None
        task = self._loop.create_task(self._run(batch), context=context)
        self._batches[task] = batch
        task.add_done_callback(self._on_batch_done)

    # -- running a batch -----------------------------------------------------------------

    async def _run(self, batch: Batch) -> None:
        """Call the batch function until every caller of ``batch`` is answered."""
        cks: Collection[Hashable] = batch.waiters  # keys of this attempt
        while True:
            if self._max_concurrency is not None:
                await self._acquire_slot()
            try:
                if not batch.started:
                    batch.started = True
                    self._queued -= len(batch.waiters)
                if batch.attempts == 0:
                    # First call: skipped when every caller is gone. Keys whose own
                    # callers were cancelled still go along: checking each key costs
                    # more than fetching it.
                    if not _any_waiting(batch):
                        self._forget(batch, cks)
                        batch.finished = True
                        return
                    keys = list(cks if batch.keys is None else batch.keys.values())
                else:
                    live = batch.live(cks)
                    if len(live) < len(cks):
                        self._forget(batch, set(cks).difference(live))
                    cks = live
                    if not cks:
                        batch.finished = True
                        return
                    keys = list(cks) if batch.keys is None else [batch.keys[ck] for ck in cks]
                batch.attempts += 1
                self._calls += 1
                self._keys_dispatched += len(keys)
                if len(keys) > self._largest:
                    self._largest = len(keys)
                watch = self._observe(batch, len(keys)) if OBSERVERS else None
                try:
                    outcome = await self._call(keys)
                except BaseException as exc:  # cancelled: observers still hear the end
                    if watch:
                        self._observed(watch, exc, 0)
                    raise
            finally:
                if self._max_concurrency is not None:
                    self._release_slot()
            if type(outcome) is _Failure:
                error = outcome.error
                if watch:
                    self._observed(watch, error, 0)
            else:
                try:
                    outcomes = self._correlate(outcome, batch, cks)
                except Exception as exc:  # a result of the wrong shape fails the batch
                    error = exc
                    if watch:
                        self._observed(watch, error, 0)
                else:
                    failed = self._deliver(batch, cks, outcomes)
                    if watch:
                        self._observed(watch, None, len(failed))
                    retry = [ck for ck, exc in failed if self._may_retry(exc, batch.attempts)]
                    if retry:
                        retried = set(retry)
                        failed = [(ck, exc) for ck, exc in failed if ck not in retried]
                    self._fail_keys(batch, failed, whole=False)
                    if failed and self._mode is ErrorMode.FAIL_FAST:
                        self._fail_fast(failed[0][1], batch)
                    if not retry:
                        batch.finished = True
                        return
                    await self._backoff(batch.attempts)
                    cks = retry
                    continue
            if self._may_retry(error, batch.attempts):
                await self._backoff(batch.attempts)
                continue
            self._failed += 1
            self._fail_keys(batch, [(ck, error) for ck in cks], whole=True)
            batch.finished = True
            if self._mode is ErrorMode.FAIL_FAST:
                self._fail_fast(error, batch)
            if isinstance(error, KeyboardInterrupt | SystemExit):
                raise error
            return

    def _observe(
        self, batch: Batch, size: int
    ) -> tuple[BatchInfo, list[tuple[BatchObserver, Any]]] | None:
        """Tell the observers a call starts; return what ``_observed`` needs."""
        assert self._loop is not None
        info = BatchInfo(
            loader=self._name,
            kind=self._kind,
            size=size,
            attempt=batch.attempts,
            waited_ms=(self._loop.time() - batch.created) * 1000,
        )
        tokens = []
        for observer in list(OBSERVERS):
            try:
                tokens.append((observer, observer.batch_started(info)))
            except Exception as exc:
                self._report_observer(observer, exc)
        return info, tokens

    def _observed(
        self,
        watch: tuple[BatchInfo, list[tuple[BatchObserver, Any]]],
        error: BaseException | None,
        failed_keys: int,
    ) -> None:
        info, tokens = watch
        for observer, token in tokens:
            try:
                observer.batch_finished(token, info, error, failed_keys)
            except Exception as exc:
                self._report_observer(observer, exc)

    def _report_observer(self, observer: BatchObserver, exc: Exception) -> None:
        assert self._loop is not None
        self._loop.call_exception_handler(
            {"message": f"gqlbatch observer {observer!r} raised", "exception": exc}
        )

    async def _call(self, keys: list[Any]) -> Any:
        """One call of the batch function; a failure is returned as ``_Failure``.

        A CancelledError aimed at this task (``close()``, fail-fast, loop shutdown)
        propagates: the engine never swallows its own cancellation. One raised by
        the batch function on its own is a failure like any other, and so are
        KeyboardInterrupt and SystemExit, which ``_run`` re-raises once the
        callers have their answer.
        """
        try:
            awaitable = self._batch_fn(keys)
            if not inspect.isawaitable(awaitable):
                raise TypeError(
                    f"batch function of {self._label} returned {type(awaitable).__name__}, "
                    "not an awaitable: it must be async (a coroutine function, or a callable "
                    "returning an awaitable)"
                )
            if self._timeout is None:
                return await awaitable
            deadline = asyncio.timeout(self._timeout)
            try:
                async with deadline:
                    return await awaitable
            except TimeoutError:
                if deadline.expired():
                    raise TimeoutError(
                        f"batch function of {self._label} took longer than "
                        f"batch_timeout_ms={self._options.batch_timeout_ms}"
                    ) from None
                raise
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            return _Failure(exc)
        except BaseException as exc:
            return _Failure(exc)

    def _correlate(self, result: Any, batch: Batch, cks: Collection[Hashable]) -> Any:
        """Map the batch function's result to ``{cache key: outcome}`` (face-specific)."""
        raise NotImplementedError

    def _missing_error(self, batch: Batch, ck: Hashable, outcomes: Any) -> BaseException:
        """The error for a key absent from the result, where ``_absent`` is RAISE."""
        return MissingKeyError(self._name, batch.key(ck), kind=self._kind)

    def _deliver(
        self, batch: Batch, cks: Collection[Hashable], outcomes: Any
    ) -> list[tuple[Hashable, BaseException]]:
        """Answer each key's callers from ``outcomes``; return the keys that failed."""
        waiters = batch.waiters
        extra = batch.extra
        caching = self._caching
        cache = self._cache
        stored = self._stored
        inflight = self._inflight
        absent = self._absent
        failed: list[tuple[Hashable, BaseException]] = []
        for ck in cks:
            value = outcomes.get(ck, ABSENT)
            if value is ABSENT:
                value = absent
                if value is RAISE:
                    for waiter in batch.callers(ck):
                        _fail(waiter, self._missing_error(batch, ck, outcomes))
                    if caching and inflight.get(ck) is batch:
                        del inflight[ck]
                        stored[ck] = MISS
                    continue
            elif isinstance(value, BaseException):
                failed.append((ck, value))
                continue
            first = waiters[ck]
            if not first.done():
                first.set_result(value)
            if extra:
                for waiter in extra.get(ck, ()):
                    _answer(waiter, value)
            if caching and inflight.get(ck) is batch:
                del inflight[ck]
                if type(first) is asyncio.Future and not first.cancelled():
                    cache[ck] = first
                else:
                    stored[ck] = (value,)
        return failed

    # -- failures ------------------------------------------------------------------------

    def _may_retry(self, error: BaseException, attempts: int) -> bool:
        if self._mode is not ErrorMode.RETRY or self._state:
            return False
        return self._retry.should_retry(error, attempts - 1)

    async def _backoff(self, attempts: int) -> None:
        """Sleep before the next attempt, holding no concurrency slot."""
        self._retries += 1
        await asyncio.sleep(self._retry.delay_ms(attempts) / 1000)

    def _fail_keys(
        self, batch: Batch, failed: list[tuple[Hashable, BaseException]], *, whole: bool
    ) -> None:
        """Answer the callers of keys that failed.

        When the batch function failed as a whole (``whole``), or retries of a key
        were given up, each caller gets a BatchError of its own with the error as
        its cause. A per-key exception otherwise reaches its callers as the very
        object the batch function returned. Failures are never cached.
        """
        inflight = self._inflight
        retry_mode = self._mode is ErrorMode.RETRY and self._retry.retries > 0
        for ck, error in failed:
            wrap = whole or (retry_mode and isinstance(error, self._retry.retry_on))
            key = batch.key(ck)
            for waiter in batch.callers(ck):
                _fail(
                    waiter,
                    BatchError(self._name, key, batch.attempts, error, kind=self._kind)
                    if wrap
                    else error,
                )
            if inflight.get(ck) is batch:
                del inflight[ck]

    def _forget(self, batch: Batch, cks: Iterable[Hashable]) -> None:
        """Stop routing new loads of ``cks`` to ``batch``, which will not answer them."""
        inflight = self._inflight
        for ck in cks:
            if inflight.get(ck) is batch:
                del inflight[ck]

    def _fail_fast(self, cause: BaseException, origin: Batch) -> None:
        """Reject everything else waiting or in flight; new work is accepted after."""

        def error(key: Any, attempts: int) -> BaseException:
            return BatchError(
                self._name,
                key,
                attempts,
                cause,
                "rejected by fail-fast after another batch failed",
                self._kind,
            )

        self._reject_everything(error, cancel=True, spare=origin)

    def _reject_everything(
        self,
        make_error: Callable[[Any, int], BaseException],
        *,
        cancel: bool,
        spare: Batch | None = None,
    ) -> None:
        """Fail every caller not yet answered (pending and in flight) with ``make_error``.

        With ``cancel``, batch tasks are cancelled too (except ``spare``'s, the task
        doing the rejecting); without it, running batch functions are left to
        finish and their results dropped, since every caller is answered already.
        """
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._held = None
        pending = Batch(self._pending, self._pending_extra, self._pending_keys)
        self._pending = {}
        self._pending_extra = None
        if self._pending_keys is not None:
            self._pending_keys = {}
        self._queued = 0
        self._reject_batch(pending, make_error)
        for task, batch in list(self._batches.items()):
            if batch is spare:
                continue
            batch.started = True  # its keys no longer count as queued
            self._reject_batch(batch, make_error)
            if cancel:
                task.cancel()
        self._inflight.clear()

    def _reject_batch(self, batch: Batch, make_error: Callable[[Any, int], BaseException]) -> None:
        for ck in batch.waiters:
            callers = batch.callers(ck)
            if all(w.done() for w in callers):
                continue
            key = batch.key(ck)
            for waiter in callers:
                _fail(waiter, make_error(key, batch.attempts))

    def _closed_error(self, key: Any, attempts: int) -> BaseException:
        return LoaderClosedError(self._name, key, closing=self._state == _CLOSING, kind=self._kind)

    def _on_batch_done(self, task: asyncio.Task[None]) -> None:
        """Once a batch task ended, nobody may be left waiting on it.

        A task that ran to its end answered everyone. One that was cancelled (by
        ``close()``, fail-fast, or the loop shutting down) may have ended before it
        could; its remaining callers get a BatchError caused by the cancellation.
        """
        batch = self._batches.pop(task, None)
        if batch is None or batch.finished:
            return
        if not batch.started:
            batch.started = True
            self._queued -= len(batch.waiters)
        self._forget(batch, batch.waiters)
        cause = asyncio.CancelledError("the batch task was cancelled")
        self._reject_batch(
            batch,
            lambda key, attempts: BatchError(self._name, key, attempts, cause, kind=self._kind),
        )

    # -- concurrency slots ---------------------------------------------------------------

    async def _acquire_slot(self) -> None:
        """Wait for one of ``max_concurrency`` slots, first come first served."""
        assert self._max_concurrency is not None
        if self._running < self._max_concurrency and not self._slot_waiters:
            self._running += 1
            return
        assert self._loop is not None
        slot: asyncio.Future[None] = self._loop.create_future()
        self._slot_waiters.append(slot)
        try:
            await slot
        except BaseException:
            if slot.done() and not slot.cancelled():
                self._release_slot()  # handed over just as we were cancelled: pass it on
            raise

    def _release_slot(self) -> None:
        while self._slot_waiters:
            slot = self._slot_waiters.popleft()
            if not slot.done():
                slot.set_result(None)  # the slot passes straight to the next batch
                return
        self._running -= 1
        if self._held is not None:  # a held batch goes next
            self._dispatch()


def _unbound() -> asyncio.Future[Any]:
    raise RuntimeError("not bound to an event loop yet")


class _Failure:
    """A batch function call that raised or timed out."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _any_waiting(batch: Batch) -> bool:
    for waiter in batch.waiters.values():
        if not waiter.done():
            return True
    if batch.extra:
        return any(not w.done() for ws in batch.extra.values() for w in ws)
    return False
