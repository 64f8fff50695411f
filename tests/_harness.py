"""Shared test helpers: deterministic Hypothesis settings, typed views of outcomes and spans.

Examples that need an event loop run with :func:`tests._loop.run_virtual`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, TypeVar

from hypothesis import HealthCheck, settings

E = TypeVar("E")


def each_is(kind: type[E], values: Iterable[object]) -> list[E]:
    """``values`` as a list, after checking that each is a ``kind`` (``gather`` outcomes)."""
    checked: list[E] = []
    for value in values:
        assert isinstance(value, kind), f"expected a {kind.__name__}, got {value!r}"
        checked.append(value)
    return checked


def bounded(max_examples: int) -> settings:
    """Hypothesis settings for CI: derandomized, no example database, no deadline."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


class _Span(Protocol):
    @property
    def attributes(self) -> Mapping[str, Any] | None: ...


def attributes_of(span: _Span) -> dict[str, Any]:
    """A finished OpenTelemetry span's attributes as a dict (``span.attributes`` may be None)."""
    return dict(span.attributes or {})
