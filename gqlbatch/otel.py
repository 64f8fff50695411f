"""OpenTelemetry tracing for gqlbatch: one span per batch function call.

Install the extra (``pip install gqlbatch[otel]``) and call :func:`instrument`
once at start-up. Each call of a batch function then gets a span named
``gqlbatch <name>`` (``gqlbatch.batch`` for unnamed loaders) with these
attributes:

==========================  ===============================================
``gqlbatch.loader``         the loader's or queue's ``name`` ("" if none)
``gqlbatch.kind``           ``"loader"`` or ``"queue"``
``gqlbatch.batch_size``     keys handed to this call
``gqlbatch.attempt``        1 for the first call, 2 for the first retry...
``gqlbatch.wait_ms``        time from the batch's first key to this call
``gqlbatch.outcome``        ``"ok"``, ``"partial"`` (some keys failed), ``"error"``
``gqlbatch.failed_keys``    per-key exceptions in the result
==========================  ===============================================

A call that raised records the exception and sets the span's status to ERROR.
The span is a child of whatever span was current where the batch's first key
was loaded: with a tracing GraphQL extension, the resolver's or the
operation's span.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, Tracer

import gqlbatch
from gqlbatch import BatchInfo

__all__ = ["TracingObserver", "instrument", "uninstrument"]


class TracingObserver:
    """A :class:`gqlbatch.BatchObserver` that opens a span per batch function call."""

    def __init__(self, tracer: Tracer | None = None) -> None:
        self._tracer = tracer or trace.get_tracer("gqlbatch", gqlbatch.__version__)

    def __repr__(self) -> str:
        return f"<TracingObserver {self._tracer!r}>"

    def batch_started(self, info: BatchInfo) -> Span:
        span = self._tracer.start_span(
            f"gqlbatch {info.loader}" if info.loader else "gqlbatch.batch",
            kind=trace.SpanKind.INTERNAL,
        )
        span.set_attribute("gqlbatch.loader", info.loader or "")
        span.set_attribute("gqlbatch.kind", info.kind)
        span.set_attribute("gqlbatch.batch_size", info.size)
        span.set_attribute("gqlbatch.attempt", info.attempt)
        span.set_attribute("gqlbatch.wait_ms", info.waited_ms)
        return span

    def batch_finished(
        self, token: Any, info: BatchInfo, error: BaseException | None, failed_keys: int
    ) -> None:
        span: Span = token
        if error is not None:
            span.set_attribute("gqlbatch.outcome", "error")
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        else:
            span.set_attribute("gqlbatch.outcome", "partial" if failed_keys else "ok")
        span.set_attribute("gqlbatch.failed_keys", failed_keys)
        span.end()


_installed: TracingObserver | None = None


def instrument(tracer: Tracer | None = None) -> TracingObserver:
    """Trace every batch function call of this process; returns the observer.

    Calling it again replaces the previous observer (to switch tracers).
    """
    global _installed
    uninstrument()
    _installed = TracingObserver(tracer)
    gqlbatch.add_observer(_installed)
    return _installed


def uninstrument() -> None:
    """Stop tracing batch function calls."""
    global _installed
    if _installed is not None:
        gqlbatch.remove_observer(_installed)
        _installed = None
