"""The example API's observability: batch metrics on /metrics, OpenTelemetry spans when asked.

The app runs in-process (httpx's ASGI transport, lifespan included) on a real
SQLite file and on a private PostgreSQL database.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import text
from starlette.applications import Starlette

from example_api import migrations
from example_api.app import create_app
from example_api.db import create_engine
from example_api.metrics import Metrics
from example_api.seed import SeedPlan, seed
from example_api.settings import Settings, SettingsError
from gqlbatch import BatchInfo
from tests._harness import attributes_of
from tests.example_api.e2e.server import FOUR_LEVELS, private_database

QUERY = FOUR_LEVELS % 10
LOADERS_OF_QUERY = {"posts_of_user", "comments_of_post", "user", "tags_of_post"}
SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, seeded database (20 users) of each backend."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'observability.db'}"
        yield url
        return
    pg_url: str = request.getfixturevalue("pg_url")
    with private_database(pg_url, "observability") as url:
        yield url


@pytest.fixture
async def seeded(database_url: str) -> str:
    engine = create_engine(database_url)
    try:
        await migrations.upgrade(engine)
        await seed(engine, SeedPlan(users=20, seed=1))
    finally:
        await engine.dispose()
    return database_url


@asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            yield client


def samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value for every sample line of a Prometheus text page."""
    found = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        found[f"{match[1]}{match[2] or ''}"] = float(match[3])
    return found


def families(text: str) -> set[str]:
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


# -- /metrics --------------------------------------------------------------------------------


async def test_metrics_carry_each_loaders_batch_size_wait_attempts_and_outcome(
    seeded: str,
) -> None:
    app = create_app(Settings(database_url=seeded, debug=True, migrate_on_start=False))
    async with serving(app) as client:
        body = (await client.post("/graphql", json={"query": QUERY})).json()
        assert "errors" not in body, body
        text = (await client.get("/metrics")).text

    assert {
        "example_api_loader_batch_size",
        "example_api_loader_batch_wait_seconds",
        "example_api_loader_batch_attempts_total",
        "example_api_loader_batch_retries_total",
        "example_api_loader_batch_outcomes_total",
        "example_api_loader_batch_failed_keys_total",
    } <= families(text)
    values = samples(text)
    loaders = body["extensions"]["gqlbatch"]["loaders"]
    assert set(loaders) == LOADERS_OF_QUERY
    for name, stats in loaders.items():
        label = f'loader="{name}"'
        # The observer saw exactly the batches and keys the loader itself counted.
        assert values[f"example_api_loader_batch_attempts_total{{{label}}}"] == stats["batches"]
        assert values[f"example_api_loader_batch_size_count{{{label}}}"] == stats["batches"]
        assert values[f"example_api_loader_batch_size_sum{{{label}}}"] == stats["keys_dispatched"]
        assert (
            values[f'example_api_loader_batch_outcomes_total{{{label},outcome="ok"}}']
            == stats["batches"]
        )
        assert values[f"example_api_loader_batch_wait_seconds_count{{{label}}}"] == stats["batches"]
        wait = values[f"example_api_loader_batch_wait_seconds_sum{{{label}}}"]
        assert 0 <= wait < 60
        assert (
            values[f'example_api_loader_batch_wait_seconds_bucket{{{label},le="+Inf"}}']
            == (stats["batches"])
        )
    assert not any("retries_total{" in key or "failed_keys_total{" in key for key in values)
    assert not any('outcome="error"' in key or 'outcome="partial"' in key for key in values)


async def test_a_failing_fetcher_shows_as_retries_and_an_error_outcome(seeded: str) -> None:
    app = create_app(Settings(database_url=seeded, debug=True, migrate_on_start=False))
    async with serving(app) as client:
        engine = create_engine(seeded)  # tags_of_post now fails on every attempt
        try:
            async with engine.begin() as connection:
                await connection.execute(text("DROP TABLE post_tags"))
        finally:
            await engine.dispose()
        body = (await client.post("/graphql", json={"query": QUERY})).json()
        page = (await client.get("/metrics")).text

    assert "no such table" in body["errors"][0]["message"] or "post_tags" in str(body["errors"])
    values = samples(page)
    label = 'loader="tags_of_post"'
    # SQLite reports a missing table as an OperationalError, which DB_RETRY retries
    # (3 times, after 50, 100 and 200 ms); PostgreSQL as a ProgrammingError, which
    # it does not. Every attempt ends in error.
    attempts = 4 if seeded.startswith("sqlite") else 1
    assert values[f"example_api_loader_batch_attempts_total{{{label}}}"] == attempts
    assert values.get(f"example_api_loader_batch_retries_total{{{label}}}", 0) == attempts - 1
    assert values[f'example_api_loader_batch_outcomes_total{{{label},outcome="error"}}'] == attempts
    assert f'example_api_loader_batch_outcomes_total{{{label},outcome="ok"}}' not in values
    if attempts > 1:  # backoff counts as waiting: at least 25, 75 and 175 ms with jitter
        assert values[f"example_api_loader_batch_wait_seconds_sum{{{label}}}"] >= 0.275
    assert (
        values['example_api_loader_batch_outcomes_total{loader="posts_of_user",outcome="ok"}'] >= 1
    )


def test_outcomes_are_ok_partial_or_error_per_loader() -> None:
    metrics = Metrics()
    first = BatchInfo(loader="user", kind="loader", size=3, attempt=1, waited_ms=2.0)
    retry = BatchInfo(loader="user", kind="loader", size=3, attempt=2, waited_ms=52.0)
    queue = BatchInfo(loader=None, kind="queue", size=7, attempt=1, waited_ms=200.0)
    for info, error, failed in (
        (first, ConnectionError("reset"), 0),
        (retry, None, 1),
        (queue, None, 0),
    ):
        metrics.batch_started(info)
        metrics.batch_finished(None, info, error, failed)
    values = samples(metrics.render())
    assert values['example_api_loader_batch_attempts_total{loader="user"}'] == 2
    assert values['example_api_loader_batch_retries_total{loader="user"}'] == 1
    assert values['example_api_loader_batch_outcomes_total{loader="user",outcome="error"}'] == 1
    assert values['example_api_loader_batch_outcomes_total{loader="user",outcome="partial"}'] == 1
    assert values['example_api_loader_batch_failed_keys_total{loader="user"}'] == 1
    assert values['example_api_loader_batch_outcomes_total{loader="queue",outcome="ok"}'] == 1
    assert values['example_api_loader_batch_wait_seconds_bucket{loader="user",le="0.0025"}'] == 1
    assert values['example_api_loader_batch_wait_seconds_bucket{loader="user",le="0.1"}'] == 2
    assert values['example_api_loader_batch_wait_seconds_sum{loader="user"}'] == pytest.approx(
        0.054
    )
    assert values['example_api_loader_batch_wait_seconds_bucket{loader="queue",le="0.1"}'] == 0


# -- OpenTelemetry ---------------------------------------------------------------------------


def _ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    chain = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        chain.append(span)
    return chain


async def test_each_batch_span_lies_under_the_graphql_operation_span(seeded: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(
        Settings(database_url=seeded, debug=True, migrate_on_start=False),
        tracing=True,
        tracer_provider=provider,
    )
    try:
        async with serving(app) as client:
            body = (await client.post("/graphql", json={"query": QUERY})).json()
            assert "errors" not in body, body
            operation_spans_before = len(exporter.get_finished_spans())
            await client.post("/graphql", json={"query": "{ users(limit: 1) { id } }"})
    finally:
        provider.shutdown()

    spans = exporter.get_finished_spans()[:operation_spans_before]
    by_id = {span.context.span_id: span for span in spans}
    operations = [span for span in spans if span.name.startswith("GraphQL Query")]
    assert len(operations) == 1
    operation = operations[0]
    batches = [span for span in spans if span.name.startswith("gqlbatch ")]
    loaders = body["extensions"]["gqlbatch"]["loaders"]
    assert {attributes_of(span)["gqlbatch.loader"] for span in batches} == set(loaders)
    assert len(batches) == sum(stats["batches"] for stats in loaders.values())
    for span in batches:
        assert operation in _ancestors(span, by_id), span.name
        assert span.context.trace_id == operation.context.trace_id
        attributes = attributes_of(span)
        name = attributes["gqlbatch.loader"]
        assert span.name == f"gqlbatch {name}"
        assert attributes["gqlbatch.kind"] == "loader"
        assert 1 <= attributes["gqlbatch.batch_size"] <= loaders[name]["keys_dispatched"]
        assert attributes["gqlbatch.attempt"] == 1
        assert attributes["gqlbatch.outcome"] == "ok"
        assert attributes["gqlbatch.wait_ms"] >= 0
        assert span.start_time is not None and operation.start_time is not None
        assert span.end_time is not None and operation.end_time is not None
        assert span.start_time >= operation.start_time
        assert span.end_time <= operation.end_time
    sizes = {name: 0 for name in loaders}
    for span in batches:
        sizes[attributes_of(span)["gqlbatch.loader"]] += attributes_of(span)["gqlbatch.batch_size"]
    assert sizes == {name: stats["keys_dispatched"] for name, stats in loaders.items()}


async def test_without_tracing_no_span_is_made(sqlite_url: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(Settings(database_url=sqlite_url), tracing=False, tracer_provider=provider)
    try:
        async with serving(app) as client:
            body = (await client.post("/graphql", json={"query": QUERY})).json()
            assert body["data"]["users"] == []
    finally:
        provider.shutdown()
    assert exporter.get_finished_spans() == ()


def test_the_tracing_switch_reads_example_api_otel() -> None:
    assert Settings.from_env({}).tracing is False
    assert Settings.from_env({"EXAMPLE_API_OTEL": "1"}).tracing is True
    assert Settings.from_env({"EXAMPLE_API_OTEL": " Off "}).tracing is False
    with pytest.raises(SettingsError, match=r"EXAMPLE_API_OTEL must be one of .* got 'maybe'"):
        Settings.from_env({"EXAMPLE_API_OTEL": "maybe"})
