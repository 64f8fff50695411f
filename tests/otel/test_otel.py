"""gqlbatch.otel: a span per batch call, child of the span where the batch began."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from gqlbatch import KeyedLoader, RetryPolicy, otel
from tests._harness import attributes_of


@pytest.fixture
def provider() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel.instrument(provider.get_tracer("test"))
    try:
        yield provider, exporter
    finally:
        otel.uninstrument()
        provider.shutdown()


async def test_each_batch_call_is_a_span_under_the_span_that_loaded(
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    tracer_provider, spans = provider
    calls = 0

    async def fetch(keys: list[int]) -> dict[int, Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("reset")
        return {k: (ValueError("bad") if k == 3 else k) for k in keys}

    loader = KeyedLoader(
        fetch,
        name="user",
        error_mode="retry",
        retry=RetryPolicy(base_delay_ms=1, retry_on=(ConnectionError,)),
    )
    tracer = tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("graphql.operation") as parent:
        results = await asyncio.gather(*(loader.load(k) for k in (1, 2, 3)), return_exceptions=True)
    assert results[:2] == [1, 2]

    finished = spans.get_finished_spans()
    batch_spans = [s for s in finished if s.name == "gqlbatch user"]
    assert len(batch_spans) == 2
    first, second = batch_spans
    for span in batch_spans:
        assert span.parent is not None
        assert span.parent.span_id == parent.get_span_context().span_id
        assert attributes_of(span)["gqlbatch.loader"] == "user"
        assert attributes_of(span)["gqlbatch.batch_size"] == 3
    assert attributes_of(first)["gqlbatch.attempt"] == 1
    assert attributes_of(first)["gqlbatch.outcome"] == "error"
    assert first.status.status_code is StatusCode.ERROR
    assert first.events[0].name == "exception"
    assert attributes_of(second)["gqlbatch.attempt"] == 2
    assert attributes_of(second)["gqlbatch.outcome"] == "partial"
    assert attributes_of(second)["gqlbatch.failed_keys"] == 1
    assert attributes_of(second)["gqlbatch.wait_ms"] >= attributes_of(first)["gqlbatch.wait_ms"]


def test_uninstrument_stops_tracing() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel.instrument(provider.get_tracer("t"))
    otel.uninstrument()

    async def main() -> None:
        loader: KeyedLoader[int, Any] = KeyedLoader(
            lambda keys: asyncio.sleep(0, dict.fromkeys(keys, 1))
        )
        await loader.load(1)

    asyncio.run(main())
    assert exporter.get_finished_spans() == ()


def test_the_core_does_not_import_opentelemetry() -> None:
    import subprocess
    import sys

    code = "import sys, gqlbatch; sys.exit('opentelemetry' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
