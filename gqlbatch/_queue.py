"""``BatchedQueue``: the spec's face of the engine, for bulk writes and batch endpoints."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Any, Generic, TypeVar, Unpack

from gqlbatch._engine import RAISE, Batch, Engine
from gqlbatch._errors import MissingKeyError, QueueClearedError
from gqlbatch._options import (
    ENGINE_OPTIONS,
    QUEUE_DEFAULTS,
    batch_options,
    check_callable,
    check_options,
)
from gqlbatch._types import EngineOptions

__all__ = ["BatchedQueue"]

T = TypeVar("T")
R = TypeVar("R")


class BatchedQueue(Engine, Generic[T, R]):
    """Aggregate items into batches for a bulk processor, with backpressure.

    Every item is its own caller (never deduplicated). Without ``key_of`` the
    processor returns a list aligned with its input, as in the spec; with
    ``key_of`` it returns a mapping of ``key_of(item)`` to result, and results
    are correlated by key.

    Args:
        processor: ``async (items: list[T]) -> list[R | BaseException]``, or with
            ``key_of``, ``-> Mapping[key, R | BaseException]``.

    Keyword Args:
        max_batch_size (int | None): process once this many items wait (default 10).
        max_wait_ms (float): process this long after a batch's first item (default 1000).
        max_queue_size (int | None): items waiting before ``enqueue`` raises
            :class:`QueueFullError` (default 1000).
        error_mode (ErrorMode | str): ``"continue"``, ``"fail-fast"`` or ``"retry"``.
        retry (RetryPolicy): the :class:`RetryPolicy` of ``error_mode="retry"``.
        key_of: correlate by key instead of by position.
        max_concurrency (int | None): processor calls running at once (default 1: the spec's lock).
        batch_timeout_ms (float | None): a processor call running longer fails (each attempt).
        name (str | None): named in errors and statistics.
    """

    def __init__(
        self,
        processor: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]
        | Callable[[list[T]], Awaitable[Mapping[Any, R | BaseException]]],
        *,
        key_of: Callable[[T], Hashable] | None = None,
        **options: Unpack[EngineOptions],
    ) -> None:
        check_options("BatchedQueue()", options, ENGINE_OPTIONS)
        self._key_of = check_callable("key_of", key_of)
        super().__init__(
            processor,
            batch_options(options, QUEUE_DEFAULTS),
            kind="queue",
            absent=RAISE,
            hold_when_busy=True,
            remember_keys=True,  # sequence number -> item
        )
        self._seq = 0

    def __repr__(self) -> str:
        return f"<BatchedQueue {self._name or ''!s} size={self.size}>"

    def enqueue(self, item: T) -> asyncio.Future[R]:
        """Add ``item`` to the next batch; return a future of its own result.

        Raises (at once): :class:`QueueFullError` when ``max_queue_size`` items
        wait (nothing changes); :class:`LoaderClosedError`; TypeError when
        ``key_of(item)`` is unhashable.
        """
        self._enter(item)
        if self._key_of is not None:
            key = self._key_of(item)
            try:
                hash(key)
            except TypeError:
                raise TypeError(
                    f"{self._label}: key_of({item!r}) returned the unhashable {key!r}"
                ) from None
        self._loads += 1
        self._seq += 1
        future: asyncio.Future[R] = self._new_future()
        self._route(self._seq, item, future)
        return future

    def clear(self) -> None:
        """Reject every caller not yet answered with ``QueueClearedError("Queue cleared")``.

        Waiting items are dropped. A processor call already running is left to
        finish; its results are dropped. The queue accepts new items at once.
        """
        self._reject_everything(lambda item, attempts: QueueClearedError(), cancel=False)

    def _correlate(self, result: Any, batch: Batch, cks: Any) -> Mapping[Hashable, Any]:
        """Map results to sequence numbers: by position, or by ``key_of`` with a mapping."""
        items = batch.keys
        assert items is not None
        if self._key_of is not None:
            if not isinstance(result, Mapping):
                raise TypeError(
                    f"processor of {self._label} has key_of, so it must return a Mapping of "
                    f"key to result, got {type(result).__name__}"
                )
            outcomes: dict[Hashable, Any] = {}
            for ck in cks:
                key = self._key_of(items[ck])
                if key in result:
                    outcomes[ck] = result[key]
            return outcomes
        if not isinstance(result, Sequence) or isinstance(result, str | bytes):
            raise TypeError(
                f"processor of {self._label} must return a list aligned with its items "
                f"(or a Mapping, with key_of=...), got {type(result).__name__}"
            )
        return dict(zip(cks, result, strict=False))

    def _missing_error(self, batch: Batch, ck: Hashable, outcomes: Any) -> BaseException:
        """The error of an item the processor gave no result for, worded per mode."""
        assert batch.keys is not None
        item = batch.keys[ck]
        if self._key_of is not None:
            return MissingKeyError(
                self._name,
                item,
                f"{self._label}: the processor returned no result for key "
                f"{self._key_of(item)!r} of item {item!r}",
                kind=self._kind,
            )
        return MissingKeyError(
            self._name,
            item,
            f"Processor returned fewer results than expected: {self._label} got "
            f"{len(outcomes)} results, none for item {item!r}",
            kind=self._kind,
        )
