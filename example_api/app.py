"""The ASGI application: GraphQL at ``/graphql``, ``/healthz`` and ``/metrics``.

Everything is assembled here, from :class:`~example_api.settings.Settings`
read once per process. ``create_app`` is what uvicorn imports in each worker
(``uvicorn --factory example_api.app:create_app``); ``python -m example_api
serve`` does exactly that.

Tracing: with ``EXAMPLE_API_OTEL=1`` (and the ``otel`` extra installed) each
GraphQL operation gets an OpenTelemetry span from Strawberry's
``OpenTelemetryExtension``, and each loader batch a ``gqlbatch`` span under
the resolver that caused it (``gqlbatch.otel``). Spans go to the global
tracer provider unless ``create_app`` is given one.

Lifecycle: on start the server applies ``alembic upgrade head`` (unless
``EXAMPLE_API_MIGRATE=0``), opens the view queue and tunes the garbage
collector (unless ``EXAMPLE_API_GC_TUNING=0``; see :func:`gc_tuned`). On
SIGTERM or SIGINT uvicorn stops accepting connections and lets requests in
flight finish; then the view queue writes every accepted view, the database
pool is closed and the collector is set back as it was.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import strawberry
from graphql import GraphQLError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.extensions import (
    DisableIntrospection,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from example_api import migrations
from example_api.context import AppContext
from example_api.db import create_engine, create_sessionmaker
from example_api.extensions import PublicErrors, RequestStats, is_public
from example_api.loaders import Loaders, registry_options
from example_api.metrics import Metrics
from example_api.settings import Settings, SettingsError
from example_api.views import ViewCounter
from gqlbatch import add_observer, remove_observer
from gqlbatch.sqlalchemy import PerBatchSessions, StatementCounter
from gqlbatch.strawberry import GraphQL, LoaderExtension

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

__all__ = [
    "GC_YOUNG_THRESHOLD",
    "OTEL_ENV",
    "AppState",
    "build_schema",
    "create_app",
    "gc_tuned",
    "tracing_from_env",
]

log = logging.getLogger("example_api")

OTEL_ENV = "EXAMPLE_API_OTEL"
"""Environment variable that turns OpenTelemetry tracing on (``1``) or off (``0``, default)."""


def tracing_from_env(env: Any = None) -> bool:
    """Whether ``EXAMPLE_API_OTEL`` asks for tracing; a value other than 1/0 raises."""
    raw = (os.environ if env is None else env).get(OTEL_ENV, "").strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{OTEL_ENV} must be one of 1/0, true/false, yes/no, on/off, got {raw!r}")


GC_YOUNG_THRESHOLD = 10_000
"""While the app runs, the youngest generation is collected once this many more container
objects were allocated than freed (Python's default is 700)."""

_gc_users = 0  # running apps that asked for gc_tuned(); the first tunes, the last restores
_gc_saved: tuple[tuple[int, ...], bool] = ((), False)  # thresholds before; unfreeze at the end


@contextmanager
def gc_tuned() -> Iterator[None]:
    """Tune CPython's garbage collector for serving requests, and restore it afterwards.

    Two measured costs of the default collector in this server (the four-level
    query, ``docs/benchmarks.md``), which grow with the requests in flight:

    * every full collection walks the whole heap, and about 100,000 of its
      objects are the modules, the GraphQL schema and the ORM mappers, which
      never become garbage. A full collection then takes tens of milliseconds
      and comes every few requests. ``gc.freeze()`` after start-up moves those
      objects out of the collector's sight: full collections walk only what
      requests made.
    * a request allocates thousands of objects that live until its answer is
      sent. With a collection every 700 allocations, the youngest generation is
      collected many times during each request and every live object is promoted
      on, which brings the next full collection sooner. With
      :data:`GC_YOUNG_THRESHOLD` most of them are freed by reference counting
      before any collection looks at them.

    Cycles are still collected; nothing else changes. Process-wide and nestable:
    the first app to enter tunes the collector, the last to leave restores the
    thresholds and, unless something else had frozen objects before, unfreezes.
    """
    global _gc_users, _gc_saved
    if _gc_users == 0:
        _gc_saved = (gc.get_threshold(), gc.get_freeze_count() == 0)
        gc.collect()  # garbage of start-up is freed, not frozen
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *_gc_saved[0][1:])
    _gc_users += 1
    try:
        yield
    finally:
        _gc_users -= 1
        if _gc_users == 0:
            thresholds, unfreeze = _gc_saved
            gc.set_threshold(*thresholds)
            if unfreeze:
                gc.unfreeze()


def _require_opentelemetry() -> None:
    """Fail at start-up, naming the extra, when tracing is asked for without OpenTelemetry."""
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        raise SettingsError(
            f"{OTEL_ENV}=1 needs OpenTelemetry: pip install 'gqlbatch[otel]' "
            "(and an SDK with an exporter to send the spans somewhere)"
        ) from None


def build_schema(
    settings: Settings, *, tracing: bool = False, tracer_provider: TracerProvider | None = None
) -> strawberry.Schema:
    """The schema with the hardening of ``settings``: limits always, masking in production.

    With ``tracing``, Strawberry's ``OpenTelemetryExtension`` comes first, so
    the operation's span encloses everything else the request does; its spans
    go to ``tracer_provider`` (default: the global one).
    """
    query: type
    mutation: type | None
    if settings.naive:  # reads only: the comparison needs no writes
        from example_api.naive import Query as query

        mutation = None
    else:
        from example_api.schema import Mutation as mutation
        from example_api.schema import Query as query

    extensions: list[Callable[[], SchemaExtension] | type[SchemaExtension]] = []
    if tracing:
        from strawberry.extensions.tracing import OpenTelemetryExtension

        extensions.append(
            OpenTelemetryExtension
            if tracer_provider is None
            else partial(OpenTelemetryExtension, tracer_provider=tracer_provider)
        )
    extensions += [
        partial(MaxTokensLimiter, max_token_count=settings.max_tokens),
        partial(QueryDepthLimiter, max_depth=settings.max_depth),
        partial(MaxAliasesLimiter, max_alias_count=settings.max_aliases),
        LoaderExtension.with_statistics(settings.debug),  # closes loaders; debug: stats
        RequestStats,  # after LoaderExtension, so it ends first: loaders still counted
    ]
    if not settings.debug:
        extensions += [DisableIntrospection, PublicErrors]
    config = StrawberryConfig(
        disable_field_suggestions=not settings.debug,
        batching_config=(
            {"max_operations": settings.max_batch_operations}
            if settings.max_batch_operations
            else None
        ),
    )
    return ExampleSchema(
        query=query,
        mutation=mutation,
        extensions=extensions,
        config=config,
    )


class ExampleSchema(strawberry.Schema):
    """Logs unexpected errors with their stack trace, and client errors not at all."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        unexpected = [error for error in errors if not is_public(error)]
        if unexpected:
            super().process_errors(unexpected, execution_context)


@dataclass(slots=True)
class AppState:
    """What lives as long as the process: engine, sessions, metrics, the view queue."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    metrics: Metrics
    views: ViewCounter | None = None


class MetricsMiddleware:
    """Counts every HTTP request with its status and latency."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - start
            self.metrics.observe_request(scope["method"], scope["path"], status, seconds)


class _BodyTooLarge(Exception):
    """Raised from ``receive`` inside the app once the body passes the limit."""


class BodySizeLimit:
    """Answers 413 to a request whose body is larger than ``max_bytes``, without reading it.

    A ``Content-Length`` over the limit is refused before the app runs; a body
    sent in chunks is counted as the app reads it, and refused as soon as the
    count passes the limit (the app never sees the rest). Before the 413 the
    rest of the body is read and dropped for at most ``drain_seconds``, so a
    client still writing its body reads the answer rather than a reset
    connection.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, drain_seconds: float = 5.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.drain_seconds = drain_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next(
            (value for name, value in scope["headers"] if name == b"content-length"), None
        )
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(receive, send, more_body=True)
            return
        received = 0
        more_body = True
        started = False

        async def counting_receive() -> Message:
            nonlocal received, more_body
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                more_body = message.get("more_body", False)
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except _BodyTooLarge:
            if started:  # the app answered before reading all of it; nothing left to say
                raise
            await self._refuse(receive, send, more_body=more_body)

    async def _refuse(self, receive: Receive, send: Send, *, more_body: bool) -> None:
        """Drop what is left of the body (``more_body``: some is), then answer 413."""
        try:
            async with asyncio.timeout(self.drain_seconds):
                while more_body:
                    message = await receive()
                    more_body = message["type"] == "http.request" and message.get(
                        "more_body", False
                    )
        except TimeoutError:
            pass
        response = PlainTextResponse(
            f"Request body too large: at most {self.max_bytes} bytes", status_code=413
        )
        await response({"type": "http"}, receive, send)


def create_app(
    settings: Settings | None = None,
    *,
    tracing: bool | None = None,
    tracer_provider: TracerProvider | None = None,
) -> Starlette:
    """The whole server for ``settings`` (default: read from the environment).

    ``tracing`` (default: ``EXAMPLE_API_OTEL``) adds OpenTelemetry spans for
    each operation, resolver and loader batch, sent to ``tracer_provider``
    (default: OpenTelemetry's global provider). It needs the ``otel`` extra.
    """
    settings = settings or Settings.from_env()
    if tracing is None:
        tracing = tracing_from_env()
    if tracing:
        _require_opentelemetry()
    engine = create_engine(settings.database_url, options=settings.database)
    statements = StatementCounter(engine)
    state = AppState(
        settings=settings, engine=engine, sessions=create_sessionmaker(engine), metrics=Metrics()
    )

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            await migrations.upgrade(engine)
        state.views = ViewCounter(
            engine,
            state.metrics,
            max_queue_size=settings.view_queue_size,
            flush_ms=settings.view_flush_ms,
        )
        add_observer(state.metrics)  # loader batch sizes, waits, outcomes for /metrics
        if tracing:
            from gqlbatch import otel

            otel.instrument(
                tracer_provider.get_tracer("gqlbatch") if tracer_provider is not None else None
            )
        mode = "debug" if settings.debug else "production"
        naive = ", NAIVE per-field queries" if settings.naive else ""
        traced = ", OpenTelemetry tracing" if tracing else ""
        log.info(
            "example_api ready (%s%s%s) on %s",
            mode,
            naive,
            traced,
            settings.redacted_database_url,
        )
        with gc_tuned() if settings.gc_tuning else nullcontext():
            try:
                yield
            finally:
                log.info("example_api stopping: writing %d pending views", state.views.pending)
                await state.views.aclose()
                remove_observer(state.metrics)
                if tracing:
                    from gqlbatch import otel

                    otel.uninstrument()
                statements.close()
                await engine.dispose()
                log.info("example_api stopped")

    async def healthz(_request: Request) -> Response:
        try:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception:
            log.exception("health check failed")
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, 503)
        return JSONResponse({"status": "ok", "database": "ok"})

    async def metrics(_request: Request) -> Response:
        return PlainTextResponse(
            state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    graphql: GraphQL[Loaders] = GraphQL(
        build_schema(settings, tracing=tracing, tracer_provider=tracer_provider),
        registry=partial(Loaders, options=registry_options(settings.database)),
        sessions=PerBatchSessions(state.sessions),
        statements=statements,
        context_class=partial(AppContext, state=state),
        graphql_ide="graphiql" if settings.debug else None,
        allow_queries_via_get=True,  # queries only: Strawberry refuses mutations over GET
        subscription_protocols=(),
    )
    app = Starlette(
        debug=False,  # never a traceback page, even in debug mode: errors are in the log
        routes=[
            Route("/graphql", graphql),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.example_api = state
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)  # outermost: counts 413s
    return app
