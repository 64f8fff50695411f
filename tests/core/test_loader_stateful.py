"""A hypothesis state machine drives KeyedLoader and checks it against a model.

Each machine draws a configuration (max_batch_size, max_wait_ms, max_concurrency,
max_queue_size, cache, missing, error_mode with its RetryPolicy, batch_timeout_ms).
Rules load one key, load several keys in one tick, load_many (duplicates, with and
without return_exceptions), prime, clear, clear_many, clear_all, flush, close,
aclose, reopen (a new loader), cancel a caller, advance a virtual clock, and script
the batch function: per key a value, a miss or an exception; per call a raise of
the whole call or a call slow enough to pass batch_timeout_ms.

The model predicts, at the moment the engine acts, what it must do:

* a load is a cache hit (a done future), joins the key's pending or in-flight
  fetch, starts a new fetch, or raises QueueFullError at once (load_many: all or
  nothing); the model says which, and the engine must agree;
* every batch task the engine creates is a dispatch the model expected (size
  reached, flush) or one that is due (max_wait_ms elapsed, or the loop went quiet
  with max_wait_ms=0); after every step no batch waits past its time;
* a call's keys are exactly its batch's keys (first attempt) or the live keys
  being retried, each once, never more than max_batch_size, never more than
  max_concurrency calls at once, never a key the cache holds;
* when a call ends the model answers each waiter as the engine must: a value, a
  miss (None or MissingKeyError), the key's own exception, a BatchError caused by
  the call's failure or timeout (with its attempt count), a retry, or fail-fast's
  rejection of everything else; values and misses are cached only if the key was
  not cleared meanwhile, failures never.

After every step each handed-out future is done exactly when the model has
answered it, with exactly the model's outcome, completed once; ``size`` and
``stats`` equal the model's. At the end the loader is closed gracefully, every
future is done, no task is left and the loop (in debug mode) reported nothing.
"""

from __future__ import annotations

import asyncio
import gc
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from gqlbatch import (
    BatchError,
    KeyedLoader,
    LoaderClosedError,
    MissingKeyError,
    QueueFullError,
    RetryPolicy,
)
from tests._harness import bounded
from tests._loop import VirtualClockLoop, run_virtual, settle

KEYS = st.integers(0, 4)
KINDS = ["value", "value", "value", "miss", "exc"]  # what the batch function does per key
PLANS = ["normal", "normal", "raise", "slow"]  # what it does per call
SETTLE_ITERATIONS = 1000  # most loop iterations a step may take at one instant
SLOW_MS = 40  # a "slow" call; batch_timeout_ms, when set, is shorter
EPS = 1e-9  # the loop fires a timer due within its clock resolution
FAIL_FAST_REASON = "rejected by fail-fast after another batch failed"
TIMEOUT: Any = object()  # the cause of a BatchError for a call past batch_timeout_ms
MISS: Any = object()  # a cached miss of missing="error"

# stats.loads is documented as "one per key for load_many, refused ones included",
# but a load_many refused with QueueFullError counts no load at all; pinned by
# test_a_refused_load_many_counts_its_keys_as_loads below. The model follows the
# engine here so that the machine checks everything else.
REFUSED_LOAD_MANY_COUNTS_LOADS = True


class KeyFault(Exception):
    """What the batch function returns for a key scripted to fail."""


class CallFault(Exception):
    """What the batch function raises for a call scripted to fail as a whole."""


# -- the model's records -----------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """One outcome the model expects: a value, or a failure described by its parts."""

    kind: str  # value | same | missing | batch | failfast | closed | cancelled
    key: Any = None
    value: Any = None  # the value, or the very exception object ("same")
    attempts: int = 0
    cause: Any = None  # the exception object, or TIMEOUT

    @property
    def failure(self) -> bool:
        return self.kind not in ("value", "cancelled")


CANCELLED = Expect("cancelled")


@dataclass(eq=False)
class Entry:
    """A future handed out by ``load`` or ``load_many``."""

    future: asyncio.Future[Any]
    keys: list[int]
    many: bool
    return_exceptions: bool
    loader: str
    positions: list[Expect | None] = field(default_factory=list)
    final: Expect | list[Expect] | None = None  # the model's outcome, once answered
    callbacks: int = 0
    seen: Any = None

    def count_callback(self, _future: asyncio.Future[Any]) -> None:
        """A done-callback: counts how many times the future ran its callbacks."""
        self.callbacks += 1


@dataclass(eq=False)
class Fetch:
    """One key of one batch, with the waiters (entry, position) it must answer."""

    key: int
    batch: ModelBatch
    waiters: list[tuple[Entry, int]] = field(default_factory=list)
    concluded: bool = False
    detached: bool = False  # cleared while pending: answers its callers, caches nothing


@dataclass(eq=False)
class ModelBatch:
    fetches: dict[int, Fetch] = field(default_factory=dict)  # in arrival order
    first_at: float = 0.0
    task: asyncio.Task[Any] | None = None
    calls: list[Call] = field(default_factory=list)
    started: bool = False  # handed to the batch function (or skipped, or rejected)
    rejected: bool = False  # by close() or fail-fast
    retry_keys: list[int] = field(default_factory=list)  # keys of the next attempt


@dataclass(eq=False)
class Call:
    batch: ModelBatch
    keys: list[int]
    attempt: int
    plan: str
    ended: bool = False
    cancelled: bool = False


@dataclass
class Model:
    """What one loader must hold."""

    name: str
    cache: dict[int, Any] = field(default_factory=dict)  # key -> value, or MISS
    inflight: dict[int, Fetch] = field(default_factory=dict)
    pending: ModelBatch | None = None
    batches: list[ModelBatch] = field(default_factory=list)  # dispatched, in order
    awaiting_task: deque[ModelBatch] = field(default_factory=deque)
    closed: bool = False
    closing: bool = False
    loads: int = 0
    cache_hits: int = 0
    calls: int = 0
    keys_dispatched: int = 0
    largest: int = 0
    retries: int = 0
    failed: int = 0
    cancelled: int = 0  # running batches cancelled because nobody could use them
    rejected: int = 0

    @property
    def queued(self) -> int:
        waiting = len(self.pending.fetches) if self.pending else 0
        return waiting + sum(len(b.fetches) for b in self.batches if not b.started)


def alive(entry: Entry) -> bool:
    return entry.final is None


def fetch_live(fetch: Fetch) -> bool:
    return any(alive(entry) for entry, _ in fetch.waiters)


class LoaderMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        gc.freeze()  # so the collections at the end walk only what this run created
        self.loop = VirtualClockLoop()
        self.loop.set_debug(True)
        self.loop.set_task_factory(self.task_factory)
        self.entries: list[Entry] = []
        self.all_calls: list[Call] = []
        self.problems: list[str] = []  # found inside the batch function or a hook
        self.behaviour: dict[int, str] = {}
        self.call_plans: deque[str] = deque()
        self.running = 0
        self.in_action = False
        self.generation = 0
        self.next_value = 0

    # -- driving the loop ----------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` to its end, then let every zero-time consequence happen."""

        async def bounded_run() -> Any:
            async with asyncio.timeout(600):  # virtual seconds: a hang fails fast
                result = await coro
            await self.settle()
            return result

        result = self.loop.run_until_complete(bounded_run())
        self.refresh()
        return result

    async def settle(self) -> None:
        """Run loop iterations until nothing is ready to run without the clock moving."""
        await settle(SETTLE_ITERATIONS)

    def sync(self, action: Callable[[], Any]) -> Any:
        """Call ``action`` inside the running loop, as a resolver would, in one tick."""

        async def inside() -> Any:
            self.in_action = True
            try:
                return action()
            finally:
                self.in_action = False

        return self.run(inside())

    def now(self) -> float:
        return self.loop.time()

    def task_factory(self, loop: Any, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, **kwargs)
        if getattr(coro, "__qualname__", "") == "Engine._run":
            self.hook(self.on_dispatch, task)
        return task

    def hook(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # reported by the invariants, not to the engine
            self.problems.append(f"{fn.__name__}: {exc!r}")

    # -- the loader ----------------------------------------------------------------------

    @initialize(
        max_batch_size=st.sampled_from([None, 1, 2, 3]),
        max_wait_ms=st.sampled_from([0, 0, 5]),
        max_concurrency=st.sampled_from([None, 1, 2]),
        max_queue_size=st.sampled_from([None, None, 2, 4]),
        cache=st.booleans(),
        missing=st.sampled_from(["none", "error"]),
        error_mode=st.sampled_from(["continue", "fail-fast", "retry"]),
        retries=st.integers(0, 2),
        base_delay_ms=st.sampled_from([1, 4]),
        retry_on=st.sampled_from([(Exception,), (CallFault, TimeoutError)]),
        batch_timeout_ms=st.sampled_from([None, 15]),
        call_ms=st.sampled_from([0, 2, 10]),
        kinds=st.lists(st.sampled_from(KINDS), min_size=5, max_size=5),
        plans=st.lists(st.sampled_from(PLANS), max_size=3),
    )
    def start(
        self,
        max_batch_size: int | None,
        max_wait_ms: int,
        max_concurrency: int | None,
        max_queue_size: int | None,
        cache: bool,
        missing: str,
        error_mode: str,
        retries: int,
        base_delay_ms: int,
        retry_on: tuple[type[BaseException], ...],
        batch_timeout_ms: int | None,
        call_ms: int,
        kinds: list[str],
        plans: list[str],
    ) -> None:
        self.policy = RetryPolicy(
            retries=retries, base_delay_ms=base_delay_ms, jitter=False, retry_on=retry_on
        )
        if error_mode != "retry":
            self.policy = RetryPolicy()
        self.config: dict[str, Any] = {
            "max_batch_size": max_batch_size,
            "max_wait_ms": max_wait_ms,
            "max_concurrency": max_concurrency,
            "max_queue_size": max_queue_size,
            "cache": cache,
            "missing": missing,
            "error_mode": error_mode,
            "retry": self.policy if error_mode == "retry" else RetryPolicy(),
            "batch_timeout_ms": batch_timeout_ms,
        }
        self.call_ms = call_ms
        self.behaviour = dict(enumerate(kinds))
        self.call_plans.extend(plans)
        self.open_loader()

    def open_loader(self) -> None:
        self.generation += 1
        self.m = Model(name=f"L{self.generation}")
        self.loader: KeyedLoader[int, Any] = KeyedLoader(
            self.batch_fn, name=self.m.name, **self.config
        )

    @property
    def max_batch(self) -> int:
        return self.config["max_batch_size"] or 1_000_000

    @property
    def max_queue(self) -> int:
        return self.config["max_queue_size"] or 1_000_000

    @property
    def caching(self) -> bool:
        return bool(self.config["cache"])

    # -- the batch function --------------------------------------------------------------

    async def batch_fn(self, keys: list[int]) -> dict[int, Any]:
        task = asyncio.current_task()
        batch = next((b for b in self.m.batches if b.task is task), None)
        if batch is None:
            self.problems.append(f"the batch function was called from an unknown task: {keys}")
            return {}
        call = Call(batch, list(keys), len(batch.calls) + 1, "normal")
        self.hook(self.on_call_start, call)
        call.plan = self.call_plans.popleft() if self.call_plans else "normal"
        values = {k: self.behaviour.get(k, "value") for k in keys}
        self.running += 1
        try:
            await asyncio.sleep((SLOW_MS if call.plan == "slow" else self.call_ms) / 1000)
        except asyncio.CancelledError:
            self.running -= 1
            call.ended = True
            useless = not self.caching or self.m.closing
            if batch.rejected:
                call.cancelled = True
            elif useless and not any(fetch_live(f) for f in batch.fetches.values()):
                call.cancelled = True  # every caller gone, and nothing could use the result
                self.m.cancelled += 1
            else:
                self.hook(self.on_timeout, call)
            raise
        self.running -= 1
        call.ended = True
        if call.plan == "raise":
            error = CallFault(f"call {len(self.all_calls)} failed")
            self.hook(self.on_whole_failure, call, error)
            raise error
        result: dict[int, Any] = {}
        for k, kind in values.items():
            if kind == "value":
                self.next_value += 1
                result[k] = ("v", k, self.next_value)
            elif kind == "exc":
                result[k] = KeyFault(f"key {k} failed")
        result[99] = ("extra", 99)  # a key nobody asked for is ignored
        self.hook(self.on_result, call, result)
        return result

    # -- the model: accepting keys ---------------------------------------------------------

    def answer(self, waiter: tuple[Entry, int], expect: Expect) -> None:
        entry, index = waiter
        if not alive(entry) or entry.positions[index] is not None:
            return  # the engine skips a waiter that is done
        entry.positions[index] = expect
        if not entry.many or (expect.failure and not entry.return_exceptions):
            entry.final = expect
        elif all(p is not None for p in entry.positions):
            entry.final = [p for p in entry.positions if p is not None]

    def model_route(self, key: int, waiter: tuple[Entry, int]) -> Fetch:
        """Join the key's pending or in-flight fetch, or start a new one (room checked)."""
        m = self.m
        if m.pending is not None and key in m.pending.fetches:
            fetch = m.pending.fetches[key]
            fetch.waiters.append(waiter)
            fetch.detached = False  # a load after a clear: not fetched yet, so it is fresh
            return fetch
        if self.caching and key in m.inflight:
            m.inflight[key].waiters.append(waiter)
            m.cache_hits += 1
            return m.inflight[key]
        if m.pending is None:
            m.pending = ModelBatch(first_at=self.now())
        fetch = Fetch(key, m.pending)
        fetch.waiters.append(waiter)
        m.pending.fetches[key] = fetch
        if len(m.pending.fetches) >= self.max_batch:
            self.model_dispatch()
        return fetch

    def model_hit(self, key: int) -> Expect | None:
        cached = self.m.cache.get(key)
        if key not in self.m.cache:
            return None
        if cached is MISS:
            return Expect("missing", key)
        return Expect("value", key, cached)

    def model_dispatch(self) -> None:
        m = self.m
        batch = m.pending
        assert batch is not None
        m.pending = None
        m.batches.append(batch)
        m.awaiting_task.append(batch)
        batch.retry_keys = list(batch.fetches)
        if self.caching:
            for key, fetch in batch.fetches.items():
                if not fetch.detached:
                    m.inflight[key] = fetch

    def on_dispatch(self, task: asyncio.Task[Any]) -> None:
        m = self.m
        if not m.awaiting_task:  # not predicted: it must be due by time
            assert m.pending is not None, "a batch was dispatched with nothing pending"
            assert not self.in_action, "a batch was dispatched while loads kept coming"
            wait = self.config["max_wait_ms"] / 1000
            assert self.now() >= m.pending.first_at + wait - 1e-6, (
                f"a batch was dispatched early: at {self.now()}, first key at "
                f"{m.pending.first_at}, max_wait_ms={self.config['max_wait_ms']}"
            )
            self.model_dispatch()
        m.awaiting_task.popleft().task = task

    # -- the model: calls ------------------------------------------------------------------

    def on_call_start(self, call: Call) -> None:
        m, batch = self.m, call.batch
        self.all_calls.append(call)
        assert not batch.rejected, "a rejected batch called the batch function"
        if call.attempt == 1:
            assert call.keys == list(batch.fetches), (call.keys, list(batch.fetches))
            assert any(fetch_live(f) for f in batch.fetches.values()), "called for nobody"
            batch.started = True
            for key in call.keys:  # unless cleared (and maybe primed) since it was queued
                fetch = batch.fetches[key]
                fresh = not self.caching or m.inflight.get(key) is fetch
                assert not (fresh and key in m.cache), f"key {key} was fetched while cached"
        else:
            live = [k for k in batch.retry_keys if fetch_live(batch.fetches[k])]
            assert call.keys == live, f"retried {call.keys}, expected the live keys {live}"
            for key in batch.retry_keys:
                if key not in live:
                    self.forget(batch.fetches[key])
        assert len(set(call.keys)) == len(call.keys), f"a key twice in one call: {call.keys}"
        assert len(call.keys) <= self.max_batch, f"call of {call.keys} exceeds max_batch_size"
        limit = self.config["max_concurrency"]
        assert limit is None or self.running < limit, "max_concurrency exceeded"
        batch.calls.append(call)
        m.calls += 1
        m.keys_dispatched += len(call.keys)
        m.largest = max(m.largest, len(call.keys))

    def forget(self, fetch: Fetch) -> None:
        if self.m.inflight.get(fetch.key) is fetch:
            del self.m.inflight[fetch.key]

    def may_retry(self, error: BaseException, attempts: int) -> bool:
        if self.config["error_mode"] != "retry" or self.m.closing or self.m.closed:
            return False
        return self.policy.should_retry(error, attempts - 1)

    def on_timeout(self, call: Call) -> None:
        timeout = self.config["batch_timeout_ms"]
        assert timeout is not None, "a call was cancelled with no timeout and no close"
        started = self.now() - timeout / 1000
        assert call.plan == "slow" or self.call_ms >= timeout, "cancelled too soon"
        self.on_whole_failure(call, TimeoutError(f"took longer than {started}"), TIMEOUT)

    def on_whole_failure(self, call: Call, error: BaseException, cause: Any = None) -> None:
        m, batch = self.m, call.batch
        cause = error if cause is None else cause
        if self.may_retry(error, call.attempt):
            m.retries += 1
            batch.retry_keys = list(call.keys)
            return
        m.failed += 1
        for key in call.keys:
            fetch = batch.fetches[key]
            for waiter in fetch.waiters:
                self.answer(waiter, Expect("batch", key, attempts=call.attempt, cause=cause))
            fetch.concluded = True
            self.forget(fetch)
        batch.retry_keys = []
        if self.config["error_mode"] == "fail-fast":
            self.reject_everything(
                lambda key, attempts: Expect("failfast", key, attempts=attempts, cause=cause),
                spare=batch,
            )

    def on_result(self, call: Call, result: dict[int, Any]) -> None:
        m, batch = self.m, call.batch
        failed: list[tuple[int, BaseException]] = []
        for key in call.keys:
            fetch = batch.fetches[key]
            value = result.get(key, MISS)
            if isinstance(value, BaseException):
                failed.append((key, value))
                continue
            if value is MISS and self.config["missing"] == "error":
                expect = Expect("missing", key)
            else:
                value = None if value is MISS else value
                expect = Expect("value", key, value)
            for waiter in fetch.waiters:
                self.answer(waiter, expect)
            fetch.concluded = True
            if self.caching and m.inflight.get(key) is fetch:
                del m.inflight[key]
                m.cache[key] = MISS if expect.kind == "missing" else value
        retry = [k for k, e in failed if self.may_retry(e, call.attempt)]
        failed = [(k, e) for k, e in failed if k not in retry]
        wrap = self.config["error_mode"] == "retry" and self.policy.retries > 0
        for key, error in failed:
            fetch = batch.fetches[key]
            if wrap and isinstance(error, self.policy.retry_on):
                expect = Expect("batch", key, attempts=call.attempt, cause=error)
            else:
                expect = Expect("same", key, error)
            for waiter in fetch.waiters:
                self.answer(waiter, expect)
            fetch.concluded = True
            self.forget(fetch)
        batch.retry_keys = retry
        if retry:
            m.retries += 1
        if failed and self.config["error_mode"] == "fail-fast":
            cause = failed[0][1]
            self.reject_everything(
                lambda key, attempts: Expect("failfast", key, attempts=attempts, cause=cause),
                spare=batch,
            )

    def reject_everything(
        self, make: Callable[[int, int], Expect], spare: ModelBatch | None = None
    ) -> None:
        m = self.m
        if m.pending is not None:
            for key, fetch in m.pending.fetches.items():
                for waiter in fetch.waiters:
                    self.answer(waiter, make(key, 0))
                fetch.concluded = True
            m.pending = None
        for batch in m.batches:
            if batch is spare:
                continue
            batch.started = True
            batch.rejected = True
            batch.retry_keys = []
            for key, fetch in batch.fetches.items():
                for waiter in fetch.waiters:
                    self.answer(waiter, make(key, len(batch.calls)))
                fetch.concluded = True
        m.inflight.clear()

    def refresh(self) -> None:
        """After a step: batches whose task ended without a call, and what is overdue."""
        m = self.m
        for batch in m.batches:
            if batch.task is None or not batch.task.done() or batch.rejected:
                continue
            unanswered = [f for f in batch.fetches.values() if not f.concluded]
            if unanswered and batch.retry_keys:
                live = [k for k in batch.retry_keys if fetch_live(batch.fetches[k])]
                assert not live, f"a batch task ended with callers of {live} unanswered"
            batch.started = True
            for fetch in batch.fetches.values():
                self.forget(fetch)
        assert not m.awaiting_task, "the model expected a dispatch that did not happen"
        if m.pending is not None and not m.closed:
            wait = self.config["max_wait_ms"] / 1000
            assert wait and self.now() < m.pending.first_at + wait - EPS, (
                f"a batch still waits at {self.now()}, its first key came at "
                f"{m.pending.first_at}, max_wait_ms={self.config['max_wait_ms']}"
            )

    # -- rules: loading --------------------------------------------------------------------

    def new_entry(self, keys: list[int], many: bool, rx: bool) -> Entry:
        """An entry the model routes first: the engine may dispatch while it loads."""
        return Entry(None, keys, many, rx, self.m.name, positions=[None] * len(keys))  # type: ignore[arg-type]

    def hand_out(self, entry: Entry, future: asyncio.Future[Any]) -> None:
        entry.future = future
        future.add_done_callback(entry.count_callback)
        self.entries.append(entry)

    def load_now(self, key: int) -> None:
        m = self.m
        if m.closed:
            with pytest.raises(LoaderClosedError, match=f"loader '{m.name}' is closed"):
                self.loader.load(key)
            return
        m.loads += 1
        hit = self.model_hit(key)
        joins = (m.pending is not None and key in m.pending.fetches) or (
            self.caching and key in m.inflight
        )
        if hit is None and not joins and m.queued >= self.max_queue:
            with pytest.raises(QueueFullError) as refused:
                self.loader.load(key)
            assert refused.value.key == key and refused.value.loader == m.name
            m.rejected += 1
            return
        entry = self.new_entry([key], many=False, rx=False)
        if hit is not None:
            m.cache_hits += 1
            self.answer((entry, 0), hit)
        else:
            self.model_route(key, (entry, 0))
        self.hand_out(entry, self.loader.load(key))
        assert entry.future.done() == (hit is not None), "a cache hit is a done future"

    def first_overflow(self, keys: list[int]) -> int | None:
        m = self.m
        new: set[int] = set()
        for key in keys:
            if key in m.cache or key in new or (m.pending and key in m.pending.fetches):
                continue
            if self.caching and key in m.inflight:
                continue
            new.add(key)
            if m.queued + len(new) > self.max_queue:
                return key
        return None

    def load_many_now(self, keys: list[int], rx: bool) -> None:
        m = self.m
        if m.closed:
            with pytest.raises(LoaderClosedError, match=f"loader '{m.name}' is closed"):
                self.loader.load_many(keys, return_exceptions=rx)
            return
        overflow = self.first_overflow(keys)
        if overflow is not None:
            before = (self.loader.size, len(asyncio.all_tasks(self.loop)))
            with pytest.raises(QueueFullError) as refused:
                self.loader.load_many(keys, return_exceptions=rx)
            assert refused.value.key == overflow, (refused.value.key, overflow)
            assert (self.loader.size, len(asyncio.all_tasks(self.loop))) == before
            m.rejected += 1
            if REFUSED_LOAD_MANY_COUNTS_LOADS:
                m.loads += len(keys)
            return
        entry = self.new_entry(keys, many=True, rx=rx)
        m.loads += len(keys)
        if not keys:
            entry.final = []
        routed: dict[int, Fetch] = {}  # a key repeated in one load_many is routed once
        for index, key in enumerate(keys):
            hit = self.model_hit(key)
            if hit is not None:
                m.cache_hits += 1
                self.answer((entry, index), hit)
            elif key in routed:
                routed[key].waiters.append((entry, index))
            else:
                routed[key] = self.model_route(key, (entry, index))
        self.hand_out(entry, self.loader.load_many(keys, return_exceptions=rx))
        assert entry.future.done() == (entry.final is not None), "load_many answered off time"

    @rule(key=KEYS)
    def load(self, key: int) -> None:
        self.sync(lambda: self.load_now(key))

    @rule(keys=st.lists(KEYS, min_size=2, max_size=5))
    def load_several_in_one_tick(self, keys: list[int]) -> None:
        def several() -> None:
            for key in keys:
                self.load_now(key)

        self.sync(several)

    @rule(keys=st.lists(KEYS, max_size=6), return_exceptions=st.booleans())
    def load_many(self, keys: list[int], return_exceptions: bool) -> None:
        self.sync(lambda: self.load_many_now(keys, return_exceptions))

    # -- rules: the cache ------------------------------------------------------------------

    @rule(key=KEYS)
    def prime(self, key: int) -> None:
        m = self.m
        self.next_value += 1
        value = ("p", key, self.next_value)
        self.sync(lambda: self.loader.prime(key, value))
        if m.closed or not self.caching:
            return
        waiting = m.pending and key in m.pending.fetches and not m.pending.fetches[key].detached
        if key in m.cache or key in m.inflight or waiting:
            return  # priming never overwrites
        m.cache[key] = value

    def model_clear(self, key: int) -> None:
        """graphql/dataloader's rule: a waiting or in-flight key is detached."""
        self.m.cache.pop(key, None)
        self.m.inflight.pop(key, None)
        if self.m.pending and key in self.m.pending.fetches:
            self.m.pending.fetches[key].detached = True

    @rule(key=KEYS)
    def clear(self, key: int) -> None:
        self.sync(lambda: self.loader.clear(key))
        self.model_clear(key)

    @rule(keys=st.lists(KEYS, max_size=3))
    def clear_many(self, keys: list[int]) -> None:
        self.sync(lambda: self.loader.clear_many(keys))
        for key in keys:
            self.model_clear(key)

    @rule()
    def clear_all(self) -> None:
        self.sync(self.loader.clear_all)
        self.m.cache.clear()
        self.m.inflight.clear()
        for fetch in self.m.pending.fetches.values() if self.m.pending else ():
            fetch.detached = True

    # -- rules: the batch function's behaviour ---------------------------------------------

    @rule(key=KEYS, kind=st.sampled_from(KINDS))
    def script_a_key(self, key: int, kind: str) -> None:
        self.behaviour[key] = kind

    @rule(plan=st.sampled_from(PLANS))
    def script_the_next_call(self, plan: str) -> None:
        self.call_plans.append(plan)

    # -- rules: time, cancellation, flush, closing -----------------------------------------

    @rule(ms=st.sampled_from([0.5, 1, 3, 5, 12, 40]))
    def advance_time(self, ms: float) -> None:
        self.run(asyncio.sleep(ms / 1000))

    @rule(data=st.data())
    def cancel_a_caller(self, data: st.DataObject) -> None:
        waiting = [e for e in self.entries if not e.future.done()]
        if not waiting:
            return
        entry = data.draw(st.sampled_from(waiting))
        assert alive(entry)
        entry.final = CANCELLED
        self.sync(entry.future.cancel)

    @rule()
    def flush(self) -> None:
        if self.m.pending is not None and not self.m.closed:
            self.model_dispatch()
        self.run(self.loader.flush())
        assert self.loader.size == 0
        mine = [e for e in self.entries if e.loader == self.m.name]
        assert all(e.future.done() for e in mine), "flush returned before its loads were done"

    @precondition(lambda self: not self.m.closed)
    @rule(graceful=st.booleans())
    def close(self, graceful: bool) -> None:
        if graceful:
            self.aclose_now()
            return

        def close_now() -> None:
            self.loader.close()
            self.m.closed = True
            self.reject_everything(lambda key, attempts: Expect("closed", key))
            self.m.cache.clear()

        self.sync(close_now)
        assert self.loader.closed and self.loader.size == 0

    def aclose_now(self) -> None:
        m = self.m
        m.closing = True
        if m.pending is not None:
            self.model_dispatch()
        self.run(self.loader.aclose())
        m.closing = False
        m.closed = True
        self.reject_everything(lambda key, attempts: Expect("closed", key))
        m.cache.clear()
        assert self.loader.closed and self.loader.size == 0
        for entry in self.entries:
            if entry.loader == m.name:
                assert entry.future.done(), "aclose returned before its loads were done"
                if not entry.future.cancelled():
                    error = entry.future.exception()
                    assert not isinstance(error, LoaderClosedError), "aclose dropped a load"

    @precondition(lambda self: self.m.closed)
    @rule()
    def reopen(self) -> None:
        self.open_loader()

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def nothing_went_wrong_inside_the_loop(self) -> None:
        assert not self.problems, self.problems

    @invariant()
    def every_future_is_its_own_keys_outcome(self) -> None:
        errors: list[BaseException] = []
        for entry in self.entries:
            future = entry.future
            assert future.done() == (entry.final is not None), (
                f"{'load_many' if entry.many else 'load'}({entry.keys}) of {entry.loader}: "
                f"done={future.done()}, the model says {entry.final!r}"
            )
            if not future.done():
                assert entry.callbacks == 0
                continue
            assert entry.callbacks == 1, "a future was completed more than once"
            outcome = "cancelled" if future.cancelled() else future.exception() or future.result()
            if entry.seen is not None:
                assert entry.seen[0] is outcome, "a future's outcome changed"
                continue
            entry.seen = (outcome,)
            final = entry.final
            if isinstance(final, list):
                assert isinstance(outcome, list) and len(outcome) == len(final), outcome
                own: dict[int, BaseException] = {}
                for expect, actual in zip(final, outcome, strict=True):
                    self.check(entry, expect, actual)
                    if isinstance(actual, BaseException):
                        own[id(actual)] = actual
                # One load_many is one caller: a key repeated in it may share its error.
                errors.extend(own.values())
            else:
                assert isinstance(final, Expect)
                self.check(entry, final, outcome)
                if isinstance(outcome, BaseException):
                    errors.append(outcome)
        engine_made = [e for e in errors if isinstance(e, BatchError | MissingKeyError)]
        assert len({id(e) for e in engine_made}) == len(engine_made), "callers share an error"

    def check(self, entry: Entry, expect: Expect, actual: Any) -> None:
        where = f"{'load_many' if entry.many else 'load'}({entry.keys}) of {entry.loader}"
        if expect.kind == "cancelled":
            assert actual == "cancelled", f"{where}: expected cancelled, got {actual!r}"
            return
        if expect.kind == "value":
            assert not isinstance(actual, BaseException), f"{where}: {actual!r}, not {expect}"
            assert actual == expect.value, f"{where}: got {actual!r}, expected {expect.value!r}"
            return
        assert isinstance(actual, BaseException), f"{where}: got {actual!r}, expected {expect}"
        if expect.kind == "same":
            assert actual is expect.value, f"{where}: got {actual!r}, expected {expect.value!r}"
        elif expect.kind == "missing":
            assert type(actual) is MissingKeyError, f"{where}: {actual!r}"
            assert actual.key == expect.key and actual.loader == entry.loader
        elif expect.kind == "closed":
            assert type(actual) is LoaderClosedError, f"{where}: {actual!r}"
            assert actual.key == expect.key and actual.loader == entry.loader
            assert f"loader '{entry.loader}' is closed" in str(actual)
        else:
            assert type(actual) is BatchError, f"{where}: got {actual!r}, expected {expect}"
            assert actual.key == expect.key and actual.loader == entry.loader, where
            assert actual.attempts == expect.attempts, (where, actual, expect)
            assert (FAIL_FAST_REASON in str(actual)) == (expect.kind == "failfast"), actual
            cause = actual.__cause__
            if expect.cause is TIMEOUT:
                assert type(cause) is TimeoutError and "batch_timeout_ms" in str(cause), cause
            else:
                assert cause is expect.cause, f"{where}: cause {cause!r}, not {expect.cause!r}"

    @invariant()
    def size_and_stats_agree_with_the_model(self) -> None:
        m = self.m
        assert self.loader.size == len(self.loader) == (0 if m.closed else m.queued), (
            self.loader.size,
            m.queued,
        )
        stats = self.loader.stats
        expected = (
            m.loads,
            m.cache_hits,
            m.calls,
            m.keys_dispatched,
            m.largest,
            m.retries,
            m.failed,
            m.rejected,
            m.cancelled,
        )
        actual = (
            stats.loads,
            stats.cache_hits,
            stats.batches,
            stats.keys_dispatched,
            stats.largest_batch,
            stats.retries,
            stats.failed_batches,
            stats.rejected,
            stats.cancelled_batches,
        )
        assert actual == expected, f"stats {stats}, the model says {expected}"

    @invariant()
    def nothing_waits_for_a_slot_while_the_batch_function_is_idle(self) -> None:
        if self.running:
            return
        for batch in self.m.batches:
            assert batch.started or batch.rejected, "a batch waits while no call runs"

    # -- the end -----------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            if hasattr(self, "loader") and not self.m.closed:
                self.aclose_now()
            for entry in self.entries:
                assert entry.future.done(), f"load of {entry.keys} was never answered"
            self.nothing_went_wrong_inside_the_loop()
            self.every_future_is_its_own_keys_outcome()
            leftover = asyncio.all_tasks(self.loop)
            assert not leftover, leftover
            gc.collect()
            assert self.loop.reports == [], self.loop.reports
        finally:
            self.loop.close()
            self.entries.clear()
            self.all_calls.clear()
            gc.collect()
            gc.unfreeze()
        assert self.loop.reports == [], self.loop.reports


LoaderMachine.TestCase.settings = settings(bounded(max_examples=300), stateful_step_count=50)
TestKeyedLoaderAgainstAModel = LoaderMachine.TestCase


# -- core bugs the machine found, fixed and pinned ---------------------------------------


async def echo(keys: list[int]) -> dict[int, int]:
    return {k: k for k in keys}


def test_a_refused_load_many_counts_its_keys_as_loads() -> None:
    """LoaderStats.loads: "one per key for load_many, refused ones included"."""

    async def main() -> int:
        loader = KeyedLoader(echo, max_queue_size=1)
        with pytest.raises(QueueFullError):
            loader.load_many([1, 2, 3])
        return loader.stats.loads

    assert run_virtual(main) == 3


def test_load_many_is_all_or_nothing_when_max_batch_size_splits_it() -> None:
    """Room is checked for 2 distinct keys, but with cache=False the duplicates that
    come after the max_batch_size dispatch are queued again, and the third new key
    overflows half way: the caller gets QueueFullError, yet keys stay queued."""

    async def main() -> tuple[bool, int]:
        loader = KeyedLoader(echo, cache=False, max_batch_size=2, max_queue_size=3)
        try:
            loader.load_many([1, 2, 1, 2])
        except QueueFullError:
            refused = True
        else:
            refused = False
        size = loader.size
        await loader.aclose()
        return refused, size

    refused, size = run_virtual(main)
    assert not refused or size == 0, f"refused, yet {size} keys stayed queued"


def test_load_many_fetches_a_duplicate_key_once_when_max_batch_size_splits_it() -> None:
    """load_many: "Duplicate keys are fetched once"."""
    calls: list[list[int]] = []

    async def fetch(keys: list[int]) -> dict[int, int]:
        calls.append(list(keys))
        return {k: k for k in keys}

    async def main() -> list[int | None]:
        loader = KeyedLoader(fetch, cache=False, max_batch_size=2)
        values = await loader.load_many([1, 2, 1])
        await loader.aclose()
        return values

    assert run_virtual(main) == [1, 2, 1]
    assert sorted(k for call in calls for k in call) == [1, 2], calls
