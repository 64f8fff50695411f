"""A hypothesis state machine drives BatchedQueue and checks it against a model.

Rules enqueue items (one or several at a time), flush, clear, close and reopen
(a new queue), aclose, cancel a caller, and advance a virtual clock. Items say
what the processor does with the call that holds them: answer, return an
exception for the item, raise for the whole call, return fewer results, or
return extra ones. The processor records every call, and after every step:

* each future handed out is done at most once, and once done its outcome never
  changes; it is its own item's outcome from the call that held it (or
  QueueClearedError / LoaderClosedError / cancellation, from the rule that did it);
* a future not done is waiting (not handed to the processor yet) or in a call
  still running; nothing waits longer than ``max_wait_ms`` while the processor
  is idle;
* ``size`` and ``stats`` agree with the model; no call is larger than
  ``max_batch_size`` or runs beside more than ``max_concurrency - 1`` others;
  no item is ever processed twice.

At the end, everything still open is flushed; every future is then done, and the
loop (in debug mode) reported nothing.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from gqlbatch import (
    BatchedQueue,
    BatchError,
    LoaderClosedError,
    MissingKeyError,
    QueueClearedError,
    QueueFullError,
)
from tests._harness import bounded
from tests._loop import VirtualClockLoop, settle

KINDS = ["ok", "ok", "ok", "exc", "poison", "short", "extra"]
SETTLE_ITERATIONS = 1000  # most loop iterations a step may take at one instant


@dataclass(frozen=True)
class Item:
    ident: int
    kind: str
    key: int  # the key, when the queue correlates by key


@dataclass
class Call:
    generation: int
    items: list[Item]
    returned: Any = None  # the list or mapping the processor returned
    raised: BaseException | None = None
    finished: bool = False
    cancelled: bool = False
    nobody_waited: bool = False  # every item's caller was gone when the call began


@dataclass
class Entry:
    item: Item
    future: asyncio.Future[Any]
    generation: int
    enqueued_at: float
    callbacks: int = 0
    cancelled: bool = False  # cancelled by a rule
    cleared: bool = False  # not done when clear() ran
    closed: bool = False  # not done when close() ran
    outcome: Any = field(default=None)  # first outcome observed
    seen: bool = False

    def count_callback(self, _future: asyncio.Future[Any]) -> None:
        """A done-callback: counts how many times the future ran its callbacks."""
        self.callbacks += 1


class QueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        gc.freeze()  # so the collections at the end walk only what this run created
        self.loop = VirtualClockLoop()
        self.loop.set_debug(True)
        self.entries: list[Entry] = []
        self.calls: list[Call] = []
        self.generation = 0
        self.next_ident = 0
        self.running = 0
        self.accepted = 0  # by the current queue
        self.refused = 0  # QueueFullError raised by the current queue
        self.closed = False
        self.closed_generations: set[int] = set()
        self.entry_of: dict[int, Entry] = {}

    # -- driving the loop ----------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` to its end, then let every zero-time consequence happen."""

        async def bounded_run() -> Any:
            async with asyncio.timeout(600):  # virtual seconds: a hang fails fast
                result = await coro
            await self.settle()
            return result

        return self.loop.run_until_complete(bounded_run())

    async def settle(self) -> None:
        """Run loop iterations until nothing is ready to run without the clock moving."""
        await settle(SETTLE_ITERATIONS)

    def now(self) -> float:
        return self.loop.time()

    def sync(self, action: Callable[[], Any]) -> Any:
        """Call ``action`` inside the running loop, as application code would."""

        async def inside() -> Any:
            return action()

        return self.run(inside())

    # -- the queue -----------------------------------------------------------------

    @initialize(
        max_batch_size=st.integers(1, 4),
        max_wait_ms=st.sampled_from([1, 5, 20]),
        max_queue_size=st.integers(1, 8),
        # mostly the spec's one call at a time, and calls that take a while, so that
        # batches wait for a slot when the queue is cleared, closed or cancelled
        max_concurrency=st.sampled_from([1, 1, 2, None]),
        process_ms=st.sampled_from([0, 2, 10, 10]),
        keyed=st.booleans(),
    )
    def start(
        self,
        max_batch_size: int,
        max_wait_ms: int,
        max_queue_size: int,
        max_concurrency: int | None,
        process_ms: int,
        keyed: bool,
    ) -> None:
        self.config: dict[str, Any] = {
            "max_batch_size": max_batch_size,
            "max_wait_ms": max_wait_ms,
            "max_queue_size": max_queue_size,
            "max_concurrency": max_concurrency,
        }
        self.process_ms = process_ms
        self.keyed = keyed
        self.open_queue()

    def open_queue(self) -> None:
        self.generation += 1
        self.accepted = self.refused = 0
        self.closed = False
        self.queue: BatchedQueue[Item, Any] = BatchedQueue(
            self.processor(self.generation),
            key_of=(lambda item: item.key) if self.keyed else None,
            name=f"q{self.generation}",
            **self.config,
        )

    def processor(self, generation: int) -> Callable[[list[Item]], Coroutine[Any, Any, Any]]:
        async def process(items: list[Item]) -> Any:
            call = Call(generation, list(items))
            call.nobody_waited = all(self.entry_of[item.ident].future.done() for item in items)
            self.calls.append(call)
            self.running += 1
            try:
                await asyncio.sleep(self.process_ms / 1000)
                if any(item.kind == "poison" for item in items):
                    call.raised = RuntimeError(f"call {len(self.calls)} failed")
                    raise call.raised
                call.returned = self.answer(len(self.calls), items)
                return call.returned
            except asyncio.CancelledError:
                call.cancelled = True
                raise
            finally:
                self.running -= 1
                call.finished = True

        return process

    def answer(self, n: int, items: list[Item]) -> Any:
        if self.keyed:  # items sharing a key share its result; "short" leaves its key out
            by_key: dict[int, Any] = {}
            for item in items:
                if item.kind == "exc":
                    by_key.setdefault(item.key, LookupError(f"key {item.key} failed"))
                elif item.kind != "short":
                    by_key.setdefault(item.key, ("ok", item.ident, item.key))
            if any(item.kind == "extra" for item in items):
                by_key[99] = ("extra", n, 99)  # a key no item has
            return by_key
        results: list[Any] = []
        for item in items:
            if item.kind == "short":
                return results  # fewer results than items
            if item.kind == "exc":
                results.append(LookupError(f"item {item.ident} failed"))
            else:
                results.append(("ok", item.ident, item.key))
        if any(item.kind == "extra" for item in items):
            results += [("extra", n, -1), ("extra", n, -2)]  # more results than items
        return results

    # -- rules -----------------------------------------------------------------------

    def enqueue_now(self, kinds: list[str], keys: list[int]) -> None:
        for kind, key in zip(kinds, keys, strict=True):
            self.next_ident += 1
            item = Item(self.next_ident, kind, key)
            if self.closed:
                with pytest.raises(
                    LoaderClosedError, match=f"queue 'q{self.generation}' is closed"
                ):
                    self.queue.enqueue(item)
                continue
            before = self.queue.size
            if before >= self.config["max_queue_size"]:
                with pytest.raises(QueueFullError) as refused:
                    self.queue.enqueue(item)
                assert refused.value.key is item
                assert self.queue.size == before
                self.refused += 1
                continue
            future = self.queue.enqueue(item)
            assert before < self.config["max_queue_size"]
            assert self.queue.size == before + 1
            self.accepted += 1
            entry = Entry(item, future, self.generation, self.now())
            future.add_done_callback(entry.count_callback)
            self.entries.append(entry)
            self.entry_of[item.ident] = entry

    @rule(kind=st.sampled_from(KINDS), key=st.integers(0, 2))
    def enqueue(self, kind: str, key: int) -> None:
        self.sync(lambda: self.enqueue_now([kind], [key]))

    @rule(
        kinds=st.lists(st.sampled_from(KINDS), min_size=2, max_size=6),
        keys=st.lists(st.integers(0, 2), min_size=6, max_size=6),
    )
    def enqueue_several_at_once(self, kinds: list[str], keys: list[int]) -> None:
        self.sync(lambda: self.enqueue_now(kinds, keys[: len(kinds)]))

    @rule(ms=st.sampled_from([0.5, 1, 3, 7, 20, 50]))
    def advance_time(self, ms: float) -> None:
        self.run(asyncio.sleep(ms / 1000))

    @rule(data=st.data())
    def cancel_a_caller(self, data: st.DataObject) -> None:
        waiting = [e for e in self.entries if not e.future.done()]
        if not waiting:
            return
        entry = data.draw(st.sampled_from(waiting))
        entry.cancelled = True
        entry.future.cancel()
        self.run(asyncio.sleep(0))

    @rule()
    def flush(self) -> None:
        mine = [e for e in self.entries if e.generation == self.generation]
        self.run(self.queue.flush())
        assert self.queue.size == 0
        assert all(e.future.done() for e in mine), "flush returned before its items were done"

    @rule()
    def clear(self) -> None:
        def clear_now() -> None:
            for entry in self.entries:
                if not entry.future.done() and entry.generation == self.generation:
                    entry.cleared = True
            self.queue.clear()
            assert self.queue.size == 0
            for entry in self.entries:
                if entry.cleared:
                    assert entry.future.done()  # at once, not later

        self.sync(clear_now)

    @rule()
    def close(self) -> None:
        def close_now() -> None:
            for entry in self.entries:
                if not entry.future.done() and entry.generation == self.generation:
                    entry.closed = True
            self.queue.close()
            self.closed = True
            self.closed_generations.add(self.generation)
            assert self.queue.size == 0
            assert all(e.future.done() for e in self.entries if e.closed)

        self.sync(close_now)

    @precondition(lambda self: not self.closed)
    @rule()
    def aclose(self) -> None:
        mine = [e for e in self.entries if e.generation == self.generation]
        self.run(self.queue.aclose())
        self.closed = True
        self.closed_generations.add(self.generation)
        for entry in mine:
            assert entry.future.done()
            if not entry.future.cancelled():
                assert not isinstance(entry.future.exception(), LoaderClosedError)

    @precondition(lambda self: self.closed)
    @rule()
    def reopen(self) -> None:
        self.open_queue()

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def every_future_is_its_own_items_outcome(self) -> None:
        errors: list[BaseException] = []
        for entry in self.entries:
            future = entry.future
            if not future.done():
                assert entry.callbacks == 0
                assert not (entry.cancelled or entry.cleared or entry.closed)
                self.check_pending(entry)
                continue
            assert entry.callbacks == 1, "a future was completed more than once"
            outcome = "cancelled" if future.cancelled() else future.exception() or future.result()
            if entry.seen:  # ends at most once: what it ended with never changes
                assert outcome is entry.outcome or outcome == entry.outcome
                continue
            entry.seen, entry.outcome = True, outcome
            self.check_outcome(entry, outcome)
            if isinstance(outcome, BatchError):
                errors.append(outcome)
        assert len({id(e) for e in errors}) == len(errors), "callers share a BatchError"

    def calls_of(self, item: Item) -> list[Call]:
        return [call for call in self.calls if item in call.items]

    def check_pending(self, entry: Entry) -> None:
        calls = self.calls_of(entry.item)
        assert len(calls) <= 1
        if calls:
            assert not calls[0].finished, f"{entry.item} was processed but never answered"

    def check_outcome(self, entry: Entry, outcome: Any) -> None:
        item = entry.item
        if outcome == "cancelled":
            assert entry.cancelled, f"{item} was cancelled by nobody"
            return
        if entry.cleared:
            assert type(outcome) is QueueClearedError and str(outcome) == "Queue cleared"
            return
        if entry.closed:
            assert isinstance(outcome, LoaderClosedError), outcome
            assert f"queue 'q{entry.generation}'" in str(outcome)
            return
        calls = self.calls_of(item)
        assert len(calls) == 1, f"{item} answered ({outcome!r}) after {len(calls)} calls"
        call = calls[0]
        assert call.finished and not call.cancelled
        if call.raised is not None:
            assert isinstance(outcome, BatchError), outcome
            assert outcome.key is item and outcome.attempts == 1
            assert outcome.loader == f"q{entry.generation}"
            assert outcome.__cause__ is call.raised
            return
        returned = call.returned
        if self.keyed:
            present, expected = item.key in returned, returned.get(item.key)
        else:
            index = call.items.index(item)
            present = index < len(returned)
            expected = returned[index] if present else None
        if not present:
            assert isinstance(outcome, MissingKeyError), outcome
            assert outcome.key is item
            if not self.keyed:
                assert "Processor returned fewer results than expected" in str(outcome)
        elif isinstance(expected, BaseException):
            assert outcome is expected
        else:
            assert outcome == expected
            assert expected[1] == item.ident or (self.keyed and expected[2] == item.key)

    @invariant()
    def calls_respect_the_options(self) -> None:
        seen: set[int] = set()
        for call in self.calls:
            assert not call.nobody_waited, "the processor was called for nobody"
            # clear() leaves a running call to finish; only close() cancels it
            assert not call.cancelled or call.generation in self.closed_generations
            assert len(call.items) <= self.config["max_batch_size"]
            for item in call.items:
                assert item.ident not in seen, f"{item} was processed twice"
                seen.add(item.ident)
        assert self.running <= (self.config["max_concurrency"] or len(self.calls) or 1)

    @invariant()
    def size_and_stats_agree_with_the_model(self) -> None:
        mine = [e for e in self.entries if e.generation == self.generation]
        calls = [c for c in self.calls if c.generation == self.generation]
        handed = {item.ident for call in calls for item in call.items}
        unhanded = [e for e in mine if e.item.ident not in handed and not (e.cleared or e.closed)]
        gone = [e for e in unhanded if e.cancelled]
        if self.closed:
            assert self.queue.size == 0
        else:  # a batch whose callers are all cancelled is dropped without a call
            assert len(unhanded) - len(gone) <= self.queue.size <= len(unhanded)
        stats = self.queue.stats
        assert stats.loads == self.accepted + self.refused  # calls of enqueue on an open queue
        assert stats.rejected == self.refused
        assert stats.batches == len(calls)
        assert stats.keys_dispatched == sum(len(c.items) for c in calls)
        assert stats.largest_batch == max((len(c.items) for c in calls), default=0)
        assert stats.retries == 0 and stats.cache_hits == 0
        assert stats.failed_batches == sum(c.raised is not None for c in calls)

    @invariant()
    def nothing_waits_past_max_wait_while_the_processor_is_idle(self) -> None:
        if self.running or self.closed:
            return
        limit = self.config["max_wait_ms"] / 1000 + 1e-6
        for entry in self.entries:
            if not entry.future.done() and not self.calls_of(entry.item):
                assert self.now() - entry.enqueued_at <= limit, (entry, self.now())

    # -- the end ---------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            if hasattr(self, "queue") and not self.closed:
                self.run(self.queue.aclose())
            for entry in self.entries:
                assert entry.future.done(), f"{entry.item} was never answered"
            self.every_future_is_its_own_items_outcome()
            leftover = asyncio.all_tasks(self.loop)
            assert not leftover, leftover
            gc.collect()
            assert self.loop.reports == [], self.loop.reports
        finally:
            self.loop.close()
            self.entries.clear()
            gc.collect()
            gc.unfreeze()
        assert self.loop.reports == [], self.loop.reports


QueueMachine.TestCase.settings = settings(bounded(max_examples=400), stateful_step_count=50)
TestBatchedQueueAgainstAModel = QueueMachine.TestCase
