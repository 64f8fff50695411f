"""Observers: how tracing and metrics integrations see every batch function call.

The engine notifies each registered observer when it calls a batch function and
when that call's outcome is known. Observers registered with
:func:`add_observer` are process-wide, because loaders are usually created per
request by code that should not have to know about tracing; ``observers=`` on a
loader adds observers of that loader only. ``gqlbatch.otel`` is one observer; a
metrics exporter is another.

An observer that raises is reported to the event loop's exception handler and
otherwise ignored: observing never changes what callers receive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["BatchInfo", "BatchObserver", "add_observer", "remove_observer"]


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """One call of a batch function, as observers see it."""

    loader: str | None
    """The loader's or queue's ``name``."""
    kind: str
    """``"loader"`` or ``"queue"``."""
    size: int
    """Keys (or items) handed to this call."""
    attempt: int
    """1 for the first call of a batch, 2 for its first retry, and so on."""
    waited_ms: float
    """Milliseconds from the batch's first key to this call (backoff included)."""
    keys: Sequence[Any] = ()
    """The keys (or items) handed to this call, in the order the batch function got them."""
    duration_ms: float | None = None
    """Milliseconds the call took: None at ``batch_started``, set at ``batch_finished``."""


class BatchObserver(Protocol):
    """Receives the start and the end of each batch function call."""

    def batch_started(self, info: BatchInfo) -> Any:
        """Called just before the call; the return value comes back to ``batch_finished``."""

    def batch_finished(
        self, token: Any, info: BatchInfo, error: BaseException | None, failed_keys: int
    ) -> None:
        """Called once the call's outcome is known.

        ``error`` is the exception the call raised (or timed out with), or None
        when it returned; ``failed_keys`` counts per-key exceptions in its result.
        """


OBSERVERS: list[BatchObserver] = []


def add_observer(observer: BatchObserver) -> None:
    """Register ``observer`` for every loader and queue of this process."""
    if observer not in OBSERVERS:
        OBSERVERS.append(observer)


def remove_observer(observer: BatchObserver) -> None:
    """Unregister ``observer``; does nothing if it is not registered."""
    if observer in OBSERVERS:
        OBSERVERS.remove(observer)
