"""Process-wide metrics, rendered in the Prometheus text exposition format (version 0.0.4).

Written by hand on purpose: the format is a few lines of text per sample, and
the example should not need a metrics library. Each uvicorn worker counts its
own requests; a Prometheus server scraping several workers sums them.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gqlbatch import BatchInfo, CacheCallInfo, LoaderStats

__all__ = ["Histogram", "Metrics"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STATEMENT_BUCKETS = (0, 1, 2, 3, 4, 5, 10, 25, 50, 100, 250, 1000)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)
WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
OUTCOMES = ("ok", "partial", "error")
"""A batch call's outcome, as ``gqlbatch.otel`` names it: all keys answered, some
keys failed (per-key exceptions), or the call raised (timed out, was cancelled)."""
KNOWN_PATHS = frozenset({"/graphql", "/healthz", "/metrics"})

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""HTTP methods counted under their own name; any other shares the label ``other``, so a
client sending thousands of made-up methods cannot grow ``/metrics`` without bound."""

Labels = tuple[tuple[str, str], ...]


def _labels(labels: Labels, extra: tuple[str, str] | None = None) -> str:
    pairs = (*labels, extra) if extra else labels
    if not pairs:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(slots=True)
class Histogram:
    """Cumulative buckets, a sum and a count, per label set."""

    buckets: tuple[float, ...]
    counts: dict[Labels, list[int]] = field(default_factory=dict)
    sums: dict[Labels, float] = field(default_factory=dict)

    def observe(self, value: float, labels: Labels = ()) -> None:
        """Count ``value`` in the first bucket whose upper bound holds it."""
        counts = self.counts.setdefault(labels, [0] * (len(self.buckets) + 1))
        counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sums[labels] = self.sums.get(labels, 0.0) + value

    def count(self, labels: Labels = ()) -> int:
        """Observations made with ``labels``."""
        return sum(self.counts.get(labels, ()))

    def render(self, name: str) -> Iterable[str]:
        for labels, counts in sorted(self.counts.items()):
            running = 0
            for bound, n in zip((*self.buckets, math.inf), counts, strict=True):
                running += n
                yield f"{name}_bucket{_labels(labels, ('le', _number(bound)))} {running}"
            yield f"{name}_sum{_labels(labels)} {_number(self.sums[labels])}"
            yield f"{name}_count{_labels(labels)} {running}"


def _loader_label(info: BatchInfo) -> str:
    """A batch call's ``loader`` label: the loader's name, or its kind when unnamed."""
    return info.loader or info.kind


def _add(counter: dict[Labels, int], labels: Labels, n: int = 1) -> None:
    counter[labels] = counter.get(labels, 0) + n


class Metrics:
    """Counters and histograms of one server process; :meth:`render` is ``/metrics``."""

    def __init__(self, *, gauges: Mapping[str, tuple[str, Callable[[], float]]] = {}) -> None:
        self.requests: dict[Labels, int] = {}
        self.latency = Histogram(LATENCY_BUCKETS)
        self.sql_statements = Histogram(STATEMENT_BUCKETS)
        self.batch_sizes = Histogram(BATCH_BUCKETS)
        self.batch_waits = Histogram(WAIT_BUCKETS)
        self.batch_attempts: dict[Labels, int] = {}
        self.batch_retries: dict[Labels, int] = {}
        self.batch_outcomes: dict[Labels, int] = {}
        self.batch_failed_keys: dict[Labels, int] = {}
        self.loader_loads: dict[Labels, int] = {}
        self.loader_cache_hits: dict[Labels, int] = {}
        self.graphql_errors = 0
        self.views_accepted = 0
        self.views_written = 0
        self.view_rejections = 0
        self.view_write_failures = 0
        self.view_batches = 0
        self._gauges = dict(gauges)
        self.shared_calls: dict[Labels, int] = {}
        self.shared_hits: dict[Labels, int] = {}
        self.shared_misses: dict[Labels, int] = {}
        self.shared_seconds: dict[Labels, float] = {}
        self._circuits: dict[str, Callable[[], str]] = {}

    def add_gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """Report ``read()`` as the gauge ``name`` at each scrape."""
        self._gauges[name] = (help_text, read)

    def add_circuits(self, states: Mapping[str, Callable[[], str]]) -> None:
        """Report each loader's shared-cache circuit state (``states[loader]()``) at each scrape."""
        self._circuits.update(states)

    def value_cache_call(self, info: CacheCallInfo) -> None:
        """gqlbatch observer hook: each call of a loader's shared cache."""
        loader = (("loader", info.loader or "loader"),)
        _add(self.shared_calls, (*loader, ("operation", info.operation), ("outcome", info.outcome)))
        self.shared_seconds[loader] = self.shared_seconds.get(loader, 0.0) + info.ms / 1000
        if info.operation == "get" and info.outcome == "ok":
            _add(self.shared_hits, loader, info.hits)
            _add(self.shared_misses, loader, info.keys - info.hits)

    def observe_request(self, method: str, path: str, status: int, seconds: float) -> None:
        """Count one HTTP request and its latency (unknown paths and methods share a label)."""
        route = path if path in KNOWN_PATHS else "other"
        verb = method if method in KNOWN_METHODS else "other"
        key = (("method", verb), ("path", route), ("status", str(status)))
        self.requests[key] = self.requests.get(key, 0) + 1
        self.latency.observe(seconds, (("path", route),))

    def observe_operation(self, statements: int, loaders: Mapping[str, LoaderStats]) -> None:
        """Record one GraphQL operation: its SQL statements and its loaders' counters."""
        self.sql_statements.observe(statements)
        for name, stats in loaders.items():
            labels = (("loader", name),)
            self.loader_loads[labels] = self.loader_loads.get(labels, 0) + stats.loads
            self.loader_cache_hits[labels] = (
                self.loader_cache_hits.get(labels, 0) + stats.cache_hits
            )

    def observe_batch(self, loader: str, size: int) -> None:
        """Record one call of ``loader``'s fetcher with ``size`` keys."""
        self.batch_sizes.observe(size, (("loader", loader),))

    def batch_started(self, info: BatchInfo) -> None:
        """gqlbatch observer hook: size, wait and attempt of every batch call."""
        loader = _loader_label(info)
        labels = (("loader", loader),)
        self.observe_batch(loader, info.size)
        self.batch_waits.observe(info.waited_ms / 1000, labels)
        _add(self.batch_attempts, labels)
        if info.attempt > 1:
            _add(self.batch_retries, labels)

    def batch_finished(
        self, token: Any, info: BatchInfo, error: BaseException | None, failed_keys: int
    ) -> None:
        """gqlbatch observer hook: the call's outcome and its failed keys."""
        loader = _loader_label(info)
        outcome = "error" if error is not None else "partial" if failed_keys else "ok"
        _add(self.batch_outcomes, (("loader", loader), ("outcome", outcome)))
        if failed_keys:
            _add(self.batch_failed_keys, (("loader", loader),), failed_keys)

    def render(self) -> str:
        """The Prometheus text format of every metric."""
        out: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")

        family("example_api_http_requests_total", "counter", "HTTP requests answered.")
        for labels, n in sorted(self.requests.items()):
            out.append(f"example_api_http_requests_total{_labels(labels)} {n}")
        family("example_api_http_request_duration_seconds", "histogram", "HTTP request latency.")
        out.extend(self.latency.render("example_api_http_request_duration_seconds"))
        family(
            "example_api_sql_statements_per_request",
            "histogram",
            "SQL statements run by one GraphQL request.",
        )
        out.extend(self.sql_statements.render("example_api_sql_statements_per_request"))
        family("example_api_loader_batch_size", "histogram", "Keys per call of a loader's fetcher.")
        out.extend(self.batch_sizes.render("example_api_loader_batch_size"))
        family(
            "example_api_loader_batch_wait_seconds",
            "histogram",
            "Time from a batch's first key to the call of its fetcher (retry backoff included).",
        )
        out.extend(self.batch_waits.render("example_api_loader_batch_wait_seconds"))
        counters = (
            (
                "example_api_loader_batch_attempts_total",
                "Calls of a loader's fetcher, retries included.",
                self.batch_attempts,
            ),
            (
                "example_api_loader_batch_retries_total",
                "Calls of a loader's fetcher that retried a failed call.",
                self.batch_retries,
            ),
            (
                "example_api_loader_batch_outcomes_total",
                "Ended fetcher calls by outcome: ok, partial (some keys failed), error.",
                self.batch_outcomes,
            ),
            (
                "example_api_loader_batch_failed_keys_total",
                "Keys a fetcher call answered with an exception.",
                self.batch_failed_keys,
            ),
        )
        for name, help_text, values in counters:
            family(name, "counter", help_text)
            for labels, n in sorted(values.items()):
                out.append(f"{name}{_labels(labels)} {n}")
        family("example_api_loader_loads_total", "counter", "Loads asked of each loader.")
        for labels, n in sorted(self.loader_loads.items()):
            out.append(f"example_api_loader_loads_total{_labels(labels)} {n}")
        family("example_api_loader_cache_hits_total", "counter", "Loads answered without a fetch.")
        for labels, n in sorted(self.loader_cache_hits.items()):
            out.append(f"example_api_loader_cache_hits_total{_labels(labels)} {n}")
        shared = (
            (
                "example_api_shared_cache_calls_total",
                "Calls of a loader's shared cache by operation (get, set, delete) and outcome "
                "(ok, error: raised or timed out, skipped: circuit open).",
                self.shared_calls,
            ),
            (
                "example_api_shared_cache_hits_total",
                "Keys a loader's shared cache answered.",
                self.shared_hits,
            ),
            (
                "example_api_shared_cache_misses_total",
                "Keys a loader's shared cache was asked for and lacked.",
                self.shared_misses,
            ),
            (
                "example_api_shared_cache_seconds_total",
                "Time spent in calls of a loader's shared cache.",
                self.shared_seconds,
            ),
        )
        for name, help_text, numbers in shared:
            family(name, "counter", help_text)
            for labels, number in sorted(numbers.items()):
                out.append(f"{name}{_labels(labels)} {_number(number)}")
        family(
            "example_api_shared_cache_circuit_state",
            "gauge",
            "1 for the state each loader's shared-cache circuit breaker is in.",
        )
        for loader, state_of in sorted(self._circuits.items()):
            current = state_of()
            for state in ("closed", "open", "half-open"):
                labels = (("loader", loader), ("state", state))
                out.append(
                    f"example_api_shared_cache_circuit_state{_labels(labels)} "
                    f"{int(state == current)}"
                )
        scalars = (
            ("example_api_graphql_errors_total", "GraphQL errors returned.", self.graphql_errors),
            ("example_api_views_accepted_total", "recordView calls accepted.", self.views_accepted),
            ("example_api_views_written_total", "Views written to posts.", self.views_written),
            (
                "example_api_view_queue_rejections_total",
                "recordView calls refused because the view queue was full.",
                self.view_rejections,
            ),
            (
                "example_api_view_write_failures_total",
                "Views lost because their bulk UPDATE failed.",
                self.view_write_failures,
            ),
            ("example_api_view_batches_total", "Bulk UPDATEs of view counts.", self.view_batches),
        )
        for name, help_text, value in scalars:
            family(name, "counter", help_text)
            out.append(f"{name} {value}")
        for name, (help_text, read) in sorted(self._gauges.items()):
            family(name, "gauge", help_text)
            out.append(f"{name} {_number(read())}")
        return "\n".join(out) + "\n"
