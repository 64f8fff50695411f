"""The batching engine shared by :class:`KeyedLoader` and :class:`BatchedQueue`.

Read top to bottom in the order things happen: a key is accepted (``_route``),
it waits in the pending batch until the batch is dispatched (``_schedule``,
``_on_iteration``, ``_due``, ``_dispatch``), the batch runs in a task of its own
(``_run``: concurrency slot, call, correlation, delivery, retries), and a
failure may spread by error mode (``_reject_everything``). ``close``, the
task's done callback and the loop's shutdown (``_LoopWatch``) make sure no
caller is ever left hanging.

Vocabulary:

* a *key* is what the batch function receives; its *cache key* (``ck``) is what
  identifies it inside the engine (the key itself, ``cache_key(key)``, or a
  sequence number for queue items, which are never deduplicated);
* a *waiter* is what a caller holds: an ``asyncio.Future`` of its own for
  ``load``/``enqueue``, or a position of a ``load_many`` result;
* a *batch* is a set of cache keys handed out together, each with its waiters;
  the *pending* batch is the one still taking keys (the batch window).

The cache (loaders only) is one mapping of cache key to *entry*, so a load looks
a key up once whatever state the key is in:

* a done ``asyncio.Future``: a value, handed out as it is;
* a 1-tuple ``(value,)``: a value not wrapped in a future yet (``prime``,
  ``load_many``, or a caller that completed its own future: the cache never
  holds a future a caller could still complete);
* ``MISS``: a key the batch function did not answer, with ``missing="error"``;
* a :class:`Batch`: the key waits in that batch, pending or in flight; a load
  joins it;
* a :class:`Promise`: a value primed as a future that is not done yet.

``clear`` removes the entry; a batch that still holds the key *detaches* it:
its callers get the fetched value, but the value is not cached, and later
loads start afresh (graphql/dataloader's rule).

The faces differ only in how a result is correlated to cache keys
(``_correlate``) and in what a missing key means (``_missing_error``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import functools
import inspect
import operator
import sys
import weakref
from asyncio import InvalidStateError
from collections import deque
from collections.abc import (
    AsyncGenerator,
    Callable,
    Collection,
    Hashable,
    Iterable,
    Iterator,
    Sequence,
    Sized,
)
from threading import get_ident
from typing import Any, ClassVar, Final, Protocol, Self

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
SHUTDOWN_GRACE: Final = 1.0
"""Seconds the loop's shutdown waits for cancelled batch tasks to end."""


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


ABSENT: Final = _Sentinel("ABSENT")
"""A key with no entry in the batch function's result."""
RAISE: Final = _Sentinel("RAISE")
"""``absent`` value of faces where a missing key fails with ``MissingKeyError``."""
MISS: Final = _Sentinel("MISS")
"""Cache entry of a miss that fails with ``MissingKeyError`` on every hit."""

FUTURE: Final = asyncio.Future
"""The class of the futures the cache may hand out as they are (done, the engine's own)."""
FAST_LIMIT: Final = (1 << 30) - 1
"""Most keys a pending batch takes through ``load``'s fast path (an int compared cheaply)."""


class State(enum.Enum):
    """Where an engine is in its life; it only ever moves down this list."""

    OPEN = "open"
    """Accepting work."""
    CLOSING = "closing"
    """``aclose()`` runs: new work is refused, accepted work finishes."""
    CLOSED = "closed"
    """Every caller answered; new work is refused."""


OPEN: Final = State.OPEN
CLOSING: Final = State.CLOSING
CLOSED: Final = State.CLOSED


class Waiter(Protocol):
    """What the engine answers: an ``asyncio.Future`` or a ``load_many`` position."""

    def done(self) -> bool: ...
    def set_result(self, result: Any, /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...
    def cancel(self) -> bool: ...


class Batch:
    """Cache keys handed out together; lives until each of its callers is answered.

    Plain dicts and no back references: a batch holds its waiters, nothing holds
    the batch but the engine (its pending slot, ``_batches``, cache entries), so
    per-key bookkeeping forms no reference cycle for the garbage collector.
    """

    __slots__ = (
        "abandoned",
        "attempts",
        "cached",
        "calling",
        "created",
        "detached",
        "extra",
        "finished",
        "gone",
        "keys",
        "others",
        "routed",
        "started",
        "waiters",
    )

    def __init__(self, keys: dict[Hashable, Any] | None, created: float = 0.0) -> None:
        self.created = created  # loop time of its first key
        self.waiters: dict[Hashable, Waiter] = {}  # cache key -> first waiter, arrival order
        self.extra: dict[Hashable, list[Waiter]] | None = None  # further waiters (rare)
        self.keys = keys  # cache key -> key, where the two differ
        self.routed = 0  # keys added by ``_route`` (counted as loads there), while pending
        self.attempts = 0  # calls of the batch function so far
        self.started = False  # handed to the batch function at least once
        self.calling = False  # a call of the batch function is under way
        self.finished = False  # its task answered every caller and returned
        self.cached = True  # its values go to the cache (False after clear_all)
        self.detached: set[Hashable] | None = None  # cache keys cleared while it held them
        self.gone = 0  # callers that cancelled while it runs (watched batches only)
        self.abandoned = False  # cancelled because nobody could use its result
        self.others = False  # a first waiter is a load_many position, not a FUTURE

    def join(self, ck: Hashable, waiter: Waiter) -> None:
        """Add a further waiter of a key this batch holds already."""
        extra = self.extra
        if extra is None:
            self.extra = {ck: [waiter]}
        else:
            extra.setdefault(ck, []).append(waiter)

    def callers(self, ck: Hashable) -> list[Waiter]:
        """Every waiter of ``ck``, first one first."""
        more = self.extra.get(ck) if self.extra else None
        first = self.waiters[ck]
        return [first, *more] if more else [first]

    def all_callers(self) -> Iterable[Waiter]:
        """Every waiter of every key."""
        yield from self.waiters.values()
        if self.extra:
            for more in self.extra.values():
                yield from more

    def key(self, ck: Hashable) -> Any:
        """The key ``ck`` stands for, as the batch function receives it."""
        return ck if self.keys is None else self.keys[ck]

    def detach(self, ck: Hashable) -> None:
        """``ck`` was cleared: answer its callers, but cache nothing for it."""
        if self.detached is None:
            self.detached = {ck}
        else:
            self.detached.add(ck)

    def live(self, cks: Iterable[Hashable]) -> list[Hashable]:
        """The cache keys among ``cks`` that still have a caller waiting."""
        waiters = self.waiters
        extra = self.extra
        return [
            ck
            for ck in cks
            if not waiters[ck].done() or (extra and any(not w.done() for w in extra.get(ck, ())))
        ]

    def any_waiting(self) -> bool:
        """Whether any caller of any key is still waiting."""
        return any(not waiter.done() for waiter in self.all_callers())


class Promise:
    """Cache entry of a value primed as a future that is not done yet.

    Loads join it like a batch in flight; when the future is done its value is
    cached (a failure is not) and every caller answered.
    """

    __slots__ = ("waiters",)

    def __init__(self) -> None:
        self.waiters: list[Waiter] = []

    def join(self, ck: Hashable, waiter: Waiter) -> None:
        """Add a caller of the primed key."""
        self.waiters.append(waiter)


def _answer(waiter: Waiter, value: Any) -> None:
    """Give ``waiter`` its value, unless it is done already (cancelled, say)."""
    if not waiter.done():
        waiter.set_result(value)


def _fail(waiter: Waiter, error: BaseException) -> None:
    """Give ``waiter`` its error, unless it is done already."""
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
        cancel_unused: bool = False,
        schedule: Callable[[Callable[[], None]], object] | None = None,
        observers: Sequence[BatchObserver] = (),
    ) -> None:
        """Set up an idle engine; the face says how it behaves.

        Args:
            kind: ``"loader"`` or ``"queue"``, as errors and statistics name it.
            caching: keep values, misses and loads in flight (``cache=True``).
            absent: what a key missing from the result resolves to, or RAISE.
            hold_when_busy: a due batch keeps taking keys while every slot is busy.
            remember_keys: keys differ from cache keys, so batches keep both.
            cancel_unused: cancel a running batch that no caller waits for any more
                and whose result nothing can use (reads may be abandoned; writes not).
            schedule: called with a batch's dispatch when its first key arrives,
                instead of the event-loop rule.
            observers: observers of this engine's batches only.
        """
        if not callable(batch_fn):
            raise TypeError(
                f"batch function of {describe(options.name, kind)} must be callable, "
                f"got {batch_fn!r} ({type(batch_fn).__name__})"
            )
        self._batch_fn = batch_fn
        self._options = options
        self._kind = kind
        self._caching = caching
        self._absent = absent
        self._hold_when_busy = hold_when_busy
        self._remember_keys = remember_keys
        self._cancel_unused = cancel_unused
        self._scheduler = schedule
        self._observers = tuple(observers)
        self._name = options.name
        self._label = describe(options.name, kind)
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
        self._thread: int | None = None  # the thread running ``_loop``, while a batch is pending
        self._new_future: Callable[[], asyncio.Future[Any]] = _unbound
        self._plain_futures = False  # the loop's futures are FUTURE(loop=loop)
        self._state = OPEN
        self._batch: Batch | None = None  # the pending batch, taking keys
        # The pending batch again, while KeyedLoader.load may add keys to it
        # without ``_route`` (see "accepting keys" below).
        self._open: Batch | None = None
        self._fast_join = False  # the face's fast path may join (KeyedLoader sets it)
        self._handle: asyncio.Handle | None = None  # its dispatch, once scheduled
        # Due but held until a slot frees (``_hold_when_busy``), with the context
        # its task is to run in: the one it would have had if dispatched when due.
        self._held: contextvars.Context | None = None
        self._seen = 0  # pending keys at the previous look (max_wait_ms=0)
        self._quiet = 0  # looks in a row that saw no new key
        self._iterations = 0  # looks since the batch's first key
        self._ready: Sized | None = None  # the loop's ready queue, where it has one
        # The cache: cache key -> entry (see the module's docstring). It stays
        # empty when caching is off. KeyedLoader may replace it with a cache_map.
        self._cache: Any = {}
        self._batches: dict[asyncio.Task[None], Batch] = {}  # every batch handed out
        # Keys accepted and not yet handed to the batch function: those of the
        # pending batch (``len(waiters)``, counted per batch, not per key) and
        # ``_queued`` in batches dispatched but not started; ``_room`` is what
        # ``max_queue_size`` leaves for the pending batch.
        self._queued = 0
        self._room = self._max_queue
        self._fast_max = min(self._max_batch - 1, FAST_LIMIT)
        self._limit = min(self._room, self._fast_max)
        self._running = 0  # batch function calls under way (with max_concurrency)
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        # Statistics.
        # Loads: KeyedLoader.load's fast path adds keys to the pending batch
        # uncounted; its batch counts them when it leaves the pending slot
        # (``_count_pending``). Every other load is counted as it is made.
        self._loads = 0
        self._cache_hits = 0  # cache hits that took the slow path
        self._fast_hits = 0  # cache hits of KeyedLoader.load's fast path
        self._calls = 0
        self._keys_dispatched = 0
        self._largest = 0
        self._retries = 0
        self._failed = 0
        self._rejected = 0
        self._cancelled = 0

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
        batch = self._batch
        return self._queued if batch is None else self._queued + len(batch.waiters)

    def __len__(self) -> int:
        return self.size

    @property
    def closed(self) -> bool:
        """True once ``close()`` ran (directly or at the end of ``aclose()``)."""
        return self._state is CLOSED

    @property
    def stats(self) -> LoaderStats:
        """A snapshot of the counters; see :class:`LoaderStats`."""
        return LoaderStats(
            loads=self._loads + self._fast_hits + self._uncounted(),
            cache_hits=self._cache_hits + self._fast_hits,
            batches=self._calls,
            keys_dispatched=self._keys_dispatched,
            largest_batch=self._largest,
            retries=self._retries,
            failed_batches=self._failed,
            rejected=self._rejected,
            cancelled_batches=self._cancelled,
        )

    def _uncounted(self) -> int:
        """Loads of the pending batch's keys not counted yet (``load``'s fast path)."""
        batch = self._batch
        return 0 if batch is None else len(batch.waiters) - batch.routed

    def _count_pending(self, batch: Batch) -> None:
        """``batch`` leaves the pending slot: count its fast-path loads, queue its keys."""
        self._loads += len(batch.waiters) - batch.routed
        self._unqueue(-len(batch.waiters))

    def _unqueue(self, count: int) -> None:
        """``count`` keys of dispatched batches were handed out (or dropped)."""
        self._queued -= count
        self._room = self._max_queue - self._queued
        self._limit = min(self._room, self._fast_max)

    async def flush(self) -> int:
        """Dispatch what waits now, ignoring ``max_wait_ms``, and await every batch in flight.

        Returns the number of keys this call dispatched (0 when none waited).
        Retries and waits for a concurrency slot are part of a batch, so they are
        awaited too. Batches started by the awaited batches themselves are not.
        Cancelling ``flush`` does not cancel the batches.
        """
        dispatched = len(self._batch.waiters) if self._batch is not None else 0
        self._dispatch()
        current = asyncio.current_task()
        tasks = [task for task in self._batches if task is not current]
        if tasks:
            await asyncio.wait(tasks)
        return dispatched

    def close(self) -> None:
        """Close now: every caller not yet answered gets :class:`LoaderClosedError`.

        Timers and running batch tasks are cancelled; later calls raise
        :class:`LoaderClosedError`. Calling it again does nothing.
        """
        if self._state is CLOSED:
            return
        self._state = CLOSED
        self._reject_everything(self._closed_error, cancel=True)
        self._cache.clear()

    async def aclose(self) -> None:
        """Close gracefully: refuse new work, finish everything accepted, then ``close()``.

        Nothing accepted is lost. A loader's running batch whose callers have all
        gone is cancelled, since nothing could use its result. If ``aclose`` itself is
        cancelled, it closes at once (as ``close()``) and re-raises.
        """
        if self._state is CLOSED:
            return
        self._state = CLOSING
        if self._cancel_unused and self._caching:
            for task, batch in list(self._batches.items()):
                self._watch_callers(task, batch)
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
        if self._state is not OPEN:
            raise self._closed_error(key, 0)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                f"{self._label} can only be used from a coroutine running in an event loop"
            ) from None
        if loop is not self._loop:
            self._bind(loop)

    def _enter(self, key: Any) -> None:
        """Check that new work may proceed: a thread-id read while a batch is pending.

        A pending batch means the engine is open and bound to the loop running
        in ``_thread`` (see ``_route``); otherwise the full check.
        """
        if self._batch is None or self._thread != get_ident():
            self._check_open(key)

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
            if self._batch is not None:
                self._loads += self._uncounted()
            self._batch = self._open = None
            self._handle = None
            self._held = None
            self._cache.clear()
            self._batches.clear()
            self._slot_waiters.clear()
            self._queued = self._running = 0
            self._room = self._max_queue
            self._limit = min(self._room, self._fast_max)
        self._loop = loop
        ready = getattr(loop, "_ready", None)
        self._ready = ready if isinstance(ready, Sized) else None
        # Futures come from the C type directly where the loop would do just that
        # through a Python method; other loops (uvloop) make their own.
        if type(loop).create_future is asyncio.BaseEventLoop.create_future:
            self._new_future = functools.partial(FUTURE, loop=loop)
        else:
            self._new_future = loop.create_future
        self._plain_futures = _makes_plain_futures(loop)
        _LoopWatch.of(loop).add(self)

    def _full(self, key: Any) -> QueueFullError:
        """Count a refused key; the error to raise for it."""
        self._rejected += 1
        return QueueFullError(self._name, key, self._max_queue, self._kind)

    # While a batch is pending, the engine is open and bound to the loop that runs
    # in ``_thread``; one loop runs per thread, so a load from that thread needs no
    # look at the running loop (which costs CPython 3.11 a getpid() system call).
    # The first key of each batch window makes the full check (``_check_open``).
    #
    # KeyedLoader.load adds a new key to the pending batch itself, with two dict
    # stores (the batch's waiters, the cache) and no other per-key bookkeeping,
    # while the batch is ``_open``: the face allows it (``_fast_join``: plain keys,
    # a dict cache, caching on) and the loop makes plain futures. What ``_route``
    # checks per key is settled per batch instead: every key of an open batch is
    # cached, so a key load did not find in the cache is not in the batch (a
    # ``clear`` of one of its keys closes it to the fast path); and ``_limit``, a
    # small int kept beside ``_room``, stops the fast path one key short of
    # max_batch_size and at max_queue_size, leaving the dispatch or the refusal
    # to ``_route``. Loads are counted per batch (``_count_pending``).

    def _route(self, ck: Hashable, key: Any, waiter: Waiter) -> Batch:
        """Attach ``waiter`` to the pending batch (opening one) for a key not cached.

        The caller has checked that the engine is open and bound to the running
        loop. Raises :class:`QueueFullError`, changing nothing, when a new key would
        exceed ``max_queue_size``. Returns the batch (which may have gone already).
        """
        batch = self._batch
        if batch is None:
            if self._room <= 0:
                raise self._full(key)
            batch = self._open_window()
        waiters = batch.waiters
        if ck in waiters:  # a key waiting already (detached by a clear, or no cache)
            batch.join(ck, waiter)
            if self._caching:
                if batch.detached:
                    batch.detached.discard(ck)
                self._cache[ck] = batch
            return batch
        if len(waiters) >= self._room:
            raise self._full(key)
        waiters[ck] = waiter
        if batch.keys is not None:
            batch.keys[ck] = key
        if self._caching:
            self._cache[ck] = batch
        batch.routed += 1
        if len(waiters) >= self._max_batch:
            self._dispatch()
        return batch

    def _open_window(self) -> Batch:
        """Start the pending batch for a first key, and arrange its dispatch."""
        loop = self._loop
        assert loop is not None
        batch = self._batch = Batch({} if self._remember_keys else None, loop.time())
        self._thread = get_ident()
        if self._fast_join and self._plain_futures:
            self._open = batch
        self._schedule(batch)
        return batch

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

    #
    # With ``schedule=``, the user's function decides: it gets the batch's dispatch
    # and calls it when it likes (max_batch_size still dispatches at once).

    def _schedule(self, batch: Batch) -> None:
        """Arrange the dispatch of a batch whose first key just arrived."""
        loop = self._loop
        assert loop is not None
        if self._scheduler is not None:
            self._scheduler(functools.partial(self._dispatch_if_pending, batch))
        elif self._wait:
            self._handle = loop.call_later(self._wait, self._due)
        else:
            self._seen = 0
            self._quiet = 0
            self._iterations = 0
            self._handle = loop.call_soon(self._on_iteration)

    def _dispatch_if_pending(self, batch: Batch) -> None:
        """``schedule``'s callback: dispatch ``batch`` unless it went already."""
        if self._batch is batch:
            self._due()

    def _on_iteration(self) -> None:
        """One look per loop iteration at whether the pending batch's wave is over."""
        batch = self._batch
        size = len(batch.waiters) if batch is not None else 0
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
        Its keys' cache entries point at the batch already (``_route``), so new
        loads of them join it in flight.
        """
        context, self._held = self._held, None
        batch = self._batch
        if batch is None:
            return
        self._batch = self._open = None
        self._count_pending(batch)
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        assert self._loop is not None
        task = self._loop.create_task(self._run(batch), context=context)
        self._batches[task] = batch
        task.add_done_callback(self._on_batch_done)
        if self._cancel_unused and not self._caching:
            self._watch_callers(task, batch)

    # -- running a batch -----------------------------------------------------------------
    #
    # ``_run`` is the loop of attempts; each attempt takes a concurrency slot,
    # picks the keys still worth fetching (``_keys_of_attempt``), calls the batch
    # function under the observers' eyes (``_call_observed``), and settles the
    # outcome (``_settle``): answers, failures, and the keys to retry, if any.

    async def _run(self, batch: Batch) -> None:
        """Call the batch function until every caller of ``batch`` is answered."""
        cks: Collection[Hashable] = batch.waiters  # keys of this attempt
        while True:
            if self._max_concurrency is not None:
                await self._acquire_slot()
            try:
                attempt = self._keys_of_attempt(batch, cks)
                if attempt is None:
                    batch.finished = True
                    return
                cks, keys = attempt
                outcome, watch = await self._call_observed(batch, keys)
            finally:
                if self._max_concurrency is not None:
                    self._release_slot()
            retry = self._settle(batch, cks, outcome, watch)
            if retry is None:
                batch.finished = True
                return
            await self._backoff(batch.attempts)
            cks = retry

    def _keys_of_attempt(
        self, batch: Batch, cks: Collection[Hashable]
    ) -> tuple[Collection[Hashable], list[Any]] | None:
        """The cache keys and keys to call the batch function with, or None to stop.

        The first call is skipped when every caller is gone; keys whose own
        callers were cancelled still go along (checking each key costs more than
        fetching it). A retry takes only the keys someone still waits for.
        """
        if not batch.started:
            batch.started = True
            self._unqueue(len(batch.waiters))
        if batch.attempts == 0:
            if not batch.any_waiting():
                self._forget(batch, cks)
                return None
            keys = list(cks if batch.keys is None else batch.keys.values())
        else:
            live = batch.live(cks)
            if len(live) < len(cks):
                self._forget(batch, set(cks).difference(live))
            cks = live
            if not cks:
                return None
            keys = list(cks) if batch.keys is None else [batch.keys[ck] for ck in cks]
        batch.attempts += 1
        self._calls += 1
        self._keys_dispatched += len(keys)
        if len(keys) > self._largest:
            self._largest = len(keys)
        return cks, keys

    async def _call_observed(self, batch: Batch, keys: list[Any]) -> tuple[Any, _Watch | None]:
        """``_call``, with the observers told it starts, and its end if it failed."""
        watch = self._observe(batch, keys) if OBSERVERS or self._observers else None
        batch.calling = True
        try:
            outcome = await self._call(keys)
        except BaseException as exc:  # cancelled: observers still hear the end
            if watch:
                self._observed(watch, exc, 0)
            raise
        finally:
            batch.calling = False
        if watch and type(outcome) is _Failure:
            self._observed(watch, outcome.error, 0)
        return outcome, watch

    def _settle(
        self, batch: Batch, cks: Collection[Hashable], outcome: Any, watch: _Watch | None
    ) -> list[Hashable] | Collection[Hashable] | None:
        """Answer the callers from one call's outcome; return the keys to retry, or None."""
        if type(outcome) is _Failure:
            error = outcome.error
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
                if not failed:
                    return None
                retry = [ck for ck, exc in failed if self._may_retry(exc, batch.attempts)]
                if retry:
                    retried = set(retry)
                    failed = [(ck, exc) for ck, exc in failed if ck not in retried]
                self._fail_keys(batch, failed, whole=False)
                if failed and self._mode is ErrorMode.FAIL_FAST:
                    self._fail_fast(failed[0][1], batch)
                return retry or None
        if self._may_retry(error, batch.attempts):
            return cks
        self._failed += 1
        self._fail_keys(batch, [(ck, error) for ck in cks], whole=True)
        batch.finished = True
        if self._mode is ErrorMode.FAIL_FAST:
            self._fail_fast(error, batch)
        if isinstance(error, KeyboardInterrupt | SystemExit):
            raise error
        return None

    def _observe(self, batch: Batch, keys: list[Any]) -> _Watch:
        """Tell the observers a call starts; return what ``_observed`` needs."""
        assert self._loop is not None
        now = self._loop.time()
        info = BatchInfo(
            loader=self._name,
            kind=self._kind,
            size=len(keys),
            attempt=batch.attempts,
            waited_ms=(now - batch.created) * 1000,
            keys=tuple(keys),
        )
        tokens = []
        for observer in (*OBSERVERS, *self._observers):
            try:
                tokens.append((observer, observer.batch_started(info)))
            except Exception as exc:
                self._report_observer(observer, exc)
        return info, now, tokens

    def _observed(self, watch: _Watch, error: BaseException | None, failed_keys: int) -> None:
        """Tell the observers that saw a call start how it ended."""
        info, started, tokens = watch
        assert self._loop is not None
        ended = BatchInfo(
            loader=info.loader,
            kind=info.kind,
            size=info.size,
            attempt=info.attempt,
            waited_ms=info.waited_ms,
            keys=info.keys,
            duration_ms=(self._loop.time() - started) * 1000,
        )
        for observer, token in tokens:
            try:
                observer.batch_finished(token, ended, error, failed_keys)
            except Exception as exc:
                self._report_observer(observer, exc)

    def _report_observer(self, observer: BatchObserver, exc: Exception) -> None:
        """An observer raised: the loop's exception handler hears of it, callers do not."""
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
        """The error for a key absent from the result, where ``absent`` is RAISE."""
        return MissingKeyError(self._name, batch.key(ck), kind=self._kind)

    def _deliver(
        self, batch: Batch, cks: Collection[Hashable], outcomes: Any
    ) -> list[tuple[Hashable, BaseException]]:
        """Answer each key's callers from ``outcomes``; return the keys that failed.

        A value is cached unless its key was detached, as the caller's own future
        when the engine completed it, else as ``(value,)``: a future its caller
        completed or cancelled first never becomes what other loads receive.
        """
        waiters = batch.waiters
        extra = batch.extra
        if (
            cks is waiters
            and batch.detached is None
            and not batch.others
            and self._plain_futures
            and self._absent is None
            and type(outcomes) is dict
            and type(self._cache) is dict
            and self._deliver_plain(batch, outcomes)
        ):
            return []
        cache = self._cache if self._caching and batch.cached else None
        detached = batch.detached
        absent = self._absent
        get = outcomes.get
        failed: list[tuple[Hashable, BaseException]] = []
        pairs = waiters.items() if cks is waiters else [(ck, waiters[ck]) for ck in cks]
        for ck, first in pairs:
            value = get(ck, ABSENT)
            if value is ABSENT:
                value = absent
                if value is RAISE:
                    for waiter in batch.callers(ck):
                        _fail(waiter, self._missing_error(batch, ck, outcomes))
                    if cache is not None and not (detached and ck in detached):
                        cache[ck] = MISS
                    continue
            elif isinstance(value, BaseException):
                failed.append((ck, value))
                continue
            if first.__class__ is FUTURE:  # one call, not done() then set_result()
                try:
                    first.set_result(value)
                    entry: Any = first
                except InvalidStateError:  # its caller completed or cancelled it first
                    entry = (value,)
            else:
                if not first.done():
                    first.set_result(value)
                entry = (value,)
            if extra:
                for waiter in extra.get(ck, ()):
                    _answer(waiter, value)
            if cache is not None and not (detached and ck in detached):
                cache[ck] = entry
        return failed

    def _deliver_plain(self, batch: Batch, outcomes: dict[Hashable, Any]) -> bool:
        """``_deliver`` of a first attempt: a FUTURE first per key, none cleared, absent None.

        Per key, no Python code: the values are looked up (an absent key's
        ``get`` is None, its value) and set by ``map`` in C, and the cache takes
        the futures in one ``update``; a future its caller completed or cancelled
        first stops the map once (InvalidStateError), is cached as ``(value,)``,
        and the map goes on. A key's further callers (``extra``) are answered one
        by one. Returns False, having done nothing, when a value of ``outcomes``
        is an exception: ``_deliver`` then answers key by key.
        """
        for cls in set(map(type, outcomes.values())):  # every value, not only this batch's
            if issubclass(cls, BaseException):
                return False
        waiters = batch.waiters
        get = outcomes.get
        futures: Iterator[Any] = iter(waiters.values())  # FUTUREs only (not batch.others)
        answers = map(FUTURE.set_result, futures, map(get, waiters))
        late: list[int] = []
        while True:
            try:
                deque(answers, 0)
                break
            except InvalidStateError:  # its caller completed or cancelled it first
                late.append(len(waiters) - operator.length_hint(futures) - 1)
        extra = batch.extra
        if extra:  # the further callers of a key (one future each), key by key
            for ck, more in extra.items():
                value = get(ck)
                for waiter in more:
                    if not waiter.done():
                        waiter.set_result(value)
        if self._caching and batch.cached:
            cache = self._cache
            cache.update(waiters)
            if late:
                cks = list(waiters)
                for index in late:
                    cache[cks[index]] = (get(cks[index]),)
        return True

    # -- failures ------------------------------------------------------------------------

    def _may_retry(self, error: BaseException, attempts: int) -> bool:
        """Whether the error mode and the retry policy retry ``error`` now."""
        if self._mode is not ErrorMode.RETRY or self._state is not OPEN:
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
        self._forget(batch, [ck for ck, _ in failed])

    def _forget(self, batch: Batch, cks: Iterable[Hashable]) -> None:
        """Stop routing new loads of ``cks`` to ``batch``, which will not answer them."""
        if not self._caching:
            return
        cache = self._cache
        for ck in cks:
            if cache.get(ck) is batch:
                cache.pop(ck, None)
            batch.detach(ck)

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

    def _take_pending(self) -> Batch | None:
        """Empty the pending batch's slot (cancelling its dispatch); return the batch."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._held = None
        batch, self._batch = self._batch, None
        self._open = None
        if batch is not None:  # its keys are no longer queued
            self._loads += len(batch.waiters) - batch.routed
        return batch

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
        pending = self._take_pending()
        if pending is not None:
            self._forget(pending, pending.waiters)
            self._reject_batch(pending, make_error)
        for task, batch in list(self._batches.items()):
            if batch is spare:
                continue
            if not batch.started:
                batch.started = True  # its keys no longer count as queued
                self._unqueue(len(batch.waiters))
            self._forget(batch, batch.waiters)
            self._reject_batch(batch, make_error)
            if cancel:
                task.cancel()

    def _reject_batch(self, batch: Batch, make_error: Callable[[Any, int], BaseException]) -> None:
        """Fail each caller of ``batch`` not answered yet, one error instance each."""
        for ck in batch.waiters:
            callers = batch.callers(ck)
            if all(w.done() for w in callers):
                continue
            key = batch.key(ck)
            for waiter in callers:
                _fail(waiter, make_error(key, batch.attempts))

    def _closed_error(self, key: Any, attempts: int) -> BaseException:
        """The error of a caller that the closing or closed engine will not answer."""
        return LoaderClosedError(self._name, key, closing=self._state is CLOSING, kind=self._kind)

    def _on_batch_done(self, task: asyncio.Task[None]) -> None:
        """Once a batch task ended, nobody may be left waiting on it.

        A task that ran to its end answered everyone. One that was cancelled (by
        ``close()``, fail-fast, the loop shutting down, or because nobody could
        use its result) may have ended before it could; its remaining callers get
        a BatchError caused by the cancellation.
        """
        batch = self._batches.pop(task, None)
        if batch is None or batch.finished:
            return
        if not batch.started:
            batch.started = True
            self._unqueue(len(batch.waiters))
        self._forget(batch, batch.waiters)
        cause = asyncio.CancelledError("the batch task was cancelled")
        self._reject_batch(
            batch,
            lambda key, attempts: BatchError(self._name, key, attempts, cause, kind=self._kind),
        )

    # -- batches nobody can use ----------------------------------------------------------
    #
    # A running batch whose callers have all cancelled is cancelled too when its
    # result could not even go to the cache (cache=False, or the engine closing):
    # an abandoned request then stops costing database work. Only a call under
    # way is cancelled; a batch not called yet is skipped when its turn comes,
    # and one between retries retries only keys someone waits for. Watching
    # costs a done callback per caller, so cached batches are not watched while
    # the engine is open.

    def _watch_callers(self, task: asyncio.Task[None], batch: Batch) -> None:
        """Cancel ``task`` once no caller of ``batch`` waits any more (its call running)."""
        callers = list(batch.all_callers())
        outers = {id(w): w for w in (getattr(w, "gather", None) for w in callers) if w}

        def gone(waiter: Any) -> None:
            batch.gone += 1
            if batch.gone == len(watched) and batch.calling and not task.cancelling():
                batch.abandoned = True
                self._cancelled += 1
                task.cancel()

        # A load_many's positions are answered together with their list: watch the list.
        watched: list[Any] = [w for w in callers if not hasattr(w, "gather")]
        watched += [gather.outer for gather in outers.values()]
        for waiter in watched:
            waiter.add_done_callback(gone)

    # -- the loop's shutdown -------------------------------------------------------------

    def _abandon(self) -> list[asyncio.Task[None]]:
        """The loop is shutting down: cancel every handed-out future and batch task.

        Called by ``_LoopWatch``. Futures are cancelled rather than failed: nobody
        will await them, and a failed future nobody awaits is logged.
        """
        pending = self._take_pending()
        batches = list(self._batches.values())
        if pending is not None:
            batches.append(pending)
        for batch in batches:
            batch.finished = True  # nothing left for _on_batch_done to answer
            for waiter in batch.all_callers():
                waiter.cancel()
        tasks = list(self._batches)
        for task in tasks:
            task.cancel()
        self._cache.clear()
        return tasks

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
        """Pass a slot to the next batch waiting for one, or free it."""
        while self._slot_waiters:
            slot = self._slot_waiters.popleft()
            if not slot.done():
                slot.set_result(None)  # the slot passes straight to the next batch
                return
        self._running -= 1
        if self._held is not None:  # a held batch goes next
            self._dispatch()


_Watch = tuple[BatchInfo, float, list[tuple[BatchObserver, Any]]]
"""What ``_observe`` hands ``_observed``: the call's info, its start time, the tokens."""


class _LoopWatch:
    """Cleans up after the engines bound to one event loop when the loop shuts down.

    asyncio has no "loop closing" callback, but ``asyncio.run`` (and
    ``loop.shutdown_asyncgens()``) closes every async generator started on the
    loop, after it has cancelled the remaining tasks. One generator per loop,
    started when the first engine binds, waits for that moment; then every
    engine cancels what it handed out, and the batch tasks it cancels are
    awaited, so the loop closes with no task pending and no coroutine never
    awaited.
    """

    _watches: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWatch]] = (
        weakref.WeakKeyDictionary()
    )
    """Watches of loops without a ``__dict__`` (uvloop's)."""

    def __init__(self) -> None:
        self.engines: weakref.WeakSet[Engine] = weakref.WeakSet()
        self.closer: AsyncGenerator[None, None] | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _LoopWatch:
        """The watch of ``loop``, started on first use.

        Kept in the loop's own ``__dict__`` where it has one, so that a loop
        closed without ``shutdown_asyncgens()`` and its watch (whose generator
        refers back to the loop) go together as one garbage cycle.
        """
        watch: _LoopWatch | None = getattr(loop, "_gqlbatch_watch", None)
        if watch is None:
            watch = cls._watches.get(loop) if hasattr(loop, "__weakref__") else None
        if watch is None:
            watch = cls()
            try:
                loop._gqlbatch_watch = watch  # type: ignore[attr-defined]  # our own slot
            except AttributeError:
                try:
                    cls._watches[loop] = watch
                except TypeError:  # no weak references either: nothing to watch with
                    return watch
            watch.start()
        return watch

    def add(self, engine: Engine) -> None:
        """Clean ``engine`` up too when the loop shuts down."""
        self.engines.add(engine)

    def start(self) -> None:
        """Start the generator; the loop's first-iteration hook registers it."""
        if sys.get_asyncgen_hooks().firstiter is None:
            return  # not run by a loop that closes async generators
        closer = self.closer = self._wait_for_shutdown()
        with contextlib.suppress(StopIteration):  # it stops at its first ``yield``
            closer.__anext__().send(None)

    async def _wait_for_shutdown(self) -> AsyncGenerator[None, None]:
        """Suspend until the loop closes its async generators; then clean up."""
        try:
            yield
        finally:
            loop = asyncio.get_running_loop()
            if getattr(loop, "_gqlbatch_watch", None) is self:
                del loop._gqlbatch_watch  # type: ignore[attr-defined]  # set in of()
            if hasattr(loop, "__weakref__"):
                self._watches.pop(loop, None)
            tasks = [task for engine in list(self.engines) for task in engine._abandon()]
            self.engines.clear()
            if tasks:
                await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE)


def _makes_plain_futures(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop.create_future()`` is ``FUTURE(loop=loop)``: asyncio's loops, uvloop's."""
    create = type(loop).create_future
    if create is asyncio.BaseEventLoop.create_future:
        return True
    uvloop = sys.modules.get("uvloop")
    return uvloop is not None and create is getattr(uvloop.Loop, "create_future", None)


def _unbound() -> asyncio.Future[Any]:
    """The future factory of an engine not bound yet: every caller checks first."""
    raise RuntimeError("not bound to an event loop yet")


class _Failure:
    """A batch function call that raised or timed out."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error
