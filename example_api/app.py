"""The ASGI application: GraphQL at ``/graphql``, ``/healthz`` and ``/metrics``.

Assembly only: :func:`create_app` takes the :class:`~example_api.settings.Settings`
(read from the environment once, when not given) and hands each part the
settings it needs; the parts live in their own modules (state, middleware,
GC tuning, schema, loaders, views). ``create_app`` is what uvicorn imports in
each worker (``uvicorn --factory example_api.app:create_app``); ``python -m
example_api serve`` does exactly that.

Tracing: with ``EXAMPLE_API_OTEL=1`` (and the ``otel`` extra installed) each
GraphQL operation gets an OpenTelemetry span from Strawberry's
``OpenTelemetryExtension``, and each loader batch a ``gqlbatch`` span under
the resolver that caused it (``gqlbatch.otel``). Spans go to the global
tracer provider unless ``create_app`` is given one.

Shared cache: with ``EXAMPLE_API_REDIS_URL`` the ``user`` and ``post`` loaders
share a cache on Redis across processes (:mod:`example_api.shared_cache`).

Lifecycle: on start the server applies ``alembic upgrade head`` (unless
``EXAMPLE_API_MIGRATE=0``), opens the view queue and tunes the garbage
collector (unless ``EXAMPLE_API_GC_TUNING=0``; see
:func:`example_api.gc_tuning.gc_tuned`). On SIGTERM or SIGINT uvicorn stops
accepting connections and lets requests in flight finish; then the view queue
writes every accepted view, the database pool is closed and the collector is
set back as it was.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, nullcontext
from functools import partial
from typing import TYPE_CHECKING, Any

import strawberry
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from strawberry.extensions import DisableIntrospection, MaxTokensLimiter, SchemaExtension
from strawberry.schema.config import StrawberryConfig

from example_api import migrations, schema
from example_api.context import AppContext
from example_api.db import create_engine, create_sessionmaker
from example_api.extensions import ErrorCodes, ExampleSchema, PublicErrors, RequestStats
from example_api.gc_tuning import gc_tuned
from example_api.graphiql import ASSETS_PATH, GraphQLWithPage, assets_app, graphiql_html
from example_api.guard import (
    Admission,
    AdmissionExtension,
    HostCheck,
    OperationGuard,
    SecurityHeaders,
)
from example_api.loaders import Loaders, registry_options
from example_api.metrics import Metrics
from example_api.middleware import BodySizeLimit, MetricsMiddleware
from example_api.settings import Settings, SettingsError
from example_api.shared_cache import SharedCache
from example_api.state import AppState
from example_api.views import ViewCounter
from gqlbatch import add_observer, remove_observer
from gqlbatch.sqlalchemy import PerBatchSessions, StatementCounter
from gqlbatch.strawberry import (
    AliasLimiter,
    CostLimiter,
    DepthLimiter,
    LoaderExtension,
    OperationNameRequired,
    RepeatLimiter,
)

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

__all__ = ["build_schema", "create_app"]

log = logging.getLogger("example_api")


def _require_opentelemetry() -> None:
    """Fail at start-up, naming the extra, when tracing is asked for without OpenTelemetry."""
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        raise SettingsError(
            "EXAMPLE_API_OTEL=1 needs OpenTelemetry: pip install 'gqlbatch[otel]' "
            "(and an SDK with an exporter to send the spans somewhere)"
        ) from None


def cost_options(settings: Settings) -> dict[str, Any]:
    """:class:`CostLimiter`'s options for ``settings``: the blog's lists are paged by ``limit``."""
    return {
        "max_cost": settings.max_cost,
        "default_list_size": settings.max_page_size,
        "max_list_size": settings.max_page_size,  # a larger limit gets the page-size error
    }


def build_schema(
    settings: Settings,
    *,
    admission: Admission | None = None,
    tracing: bool = False,
    tracer_provider: TracerProvider | None = None,
    query: type = schema.Query,
    mutation: type | None = schema.Mutation,
) -> strawberry.Schema:
    """The schema with the hardening of ``settings``: limits always, masking in production.

    With ``tracing``, Strawberry's ``OpenTelemetryExtension`` comes first, so
    the operation's span encloses everything else the request does; its spans
    go to ``tracer_provider`` (default: the global one). ``query`` and
    ``mutation`` are the root types (default: the blog's, in :mod:`example_api.schema`).
    ``admission`` holds expensive operations back (:mod:`example_api.guard`).
    """
    extensions: list[Callable[[], SchemaExtension] | type[SchemaExtension]] = []
    if tracing:
        from strawberry.extensions.tracing import OpenTelemetryExtension

        extensions.append(
            OpenTelemetryExtension
            if tracer_provider is None
            else partial(OpenTelemetryExtension, tracer_provider=tracer_provider)
        )
    extensions += [
        ErrorCodes,  # a code in extensions.code for syntax and validation errors
        partial(MaxTokensLimiter, max_token_count=settings.max_tokens),
        # Before validation, each linear in the document: a refusal skips validation.
        OperationNameRequired,
        partial(DepthLimiter, max_depth=settings.max_depth),
        partial(AliasLimiter, max_alias_count=settings.max_aliases),
        partial(RepeatLimiter, max_repeats=settings.max_repeats),
        # The cost limit; with admission, the same walk also decides who waits for a slot.
        partial(AdmissionExtension, admission=admission, **cost_options(settings))
        if admission is not None
        else partial(CostLimiter, **cost_options(settings)),
    ]
    extensions += [
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
    return ExampleSchema(query=query, mutation=mutation, extensions=extensions, config=config)


def create_app(
    settings: Settings | None = None,
    *,
    tracing: bool | None = None,
    tracer_provider: TracerProvider | None = None,
    query: type = schema.Query,
    mutation: type | None = schema.Mutation,
) -> Starlette:
    """The whole server for ``settings`` (default: read from the environment, once).

    ``tracing`` (default: ``settings.tracing``, ``EXAMPLE_API_OTEL``) adds
    OpenTelemetry spans for each operation, resolver and loader batch, sent to
    ``tracer_provider`` (default: OpenTelemetry's global provider). It needs the
    ``otel`` extra. ``query`` and ``mutation`` replace the root types (the
    benchmarks' per-field-query variant, ``benchmarks._naive``, does).
    """
    settings = settings or Settings.from_env()
    tracing = settings.tracing if tracing is None else tracing
    if tracing:
        _require_opentelemetry()
    engine = create_engine(settings.database_url, options=settings.database)
    statements = StatementCounter(engine)
    state = AppState(
        settings=settings, engine=engine, sessions=create_sessionmaker(engine), metrics=Metrics()
    )
    shared = state.shared_cache = SharedCache(settings) if settings.redis_url else None
    if shared is not None:
        state.metrics.add_circuits(shared.circuit_states())
    custom = "" if query is schema.Query else f", query type {query.__module__}.{query.__name__}"

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            await migrations.upgrade(engine)
        views = state.views = ViewCounter(
            engine,
            state.metrics,
            max_queue_size=settings.view_queue_size,
            flush_ms=settings.view_flush_ms,
            after_write=shared.posts_changed if shared is not None else None,
        )
        add_observer(state.metrics)  # loader batch sizes, waits, outcomes for /metrics
        if tracing:
            from gqlbatch import otel

            otel.instrument(
                tracer_provider.get_tracer("gqlbatch") if tracer_provider is not None else None
            )
        mode = "debug" if settings.debug else "production"
        traced = ", OpenTelemetry tracing" if tracing else ""
        log.info(
            "example_api ready (%s%s%s) on %s",
            mode,
            custom,
            traced,
            settings.redacted_database_url,
        )
        if settings.debug:
            log.info("GraphiQL: open %s in a browser", settings.graphql_url)
        else:
            log.info("GraphQL endpoint: POST %s (no GraphiQL in production)", settings.graphql_url)
        if settings.auth_secret:
            log.info("authorization on: mutations need a bearer token; email is owner-only")
        else:
            log.info(
                "authorization OFF (EXAMPLE_API_AUTH_SECRET unset): anyone may write as any "
                "user and read every email"
            )
        with gc_tuned() if settings.gc_tuning else nullcontext():
            try:
                yield
            finally:
                log.info("example_api stopping: writing %d pending views", views.pending)
                await views.aclose()
                if shared is not None:
                    await shared.aclose()
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

    graphql: GraphQLWithPage[Loaders] = GraphQLWithPage(
        build_schema(
            settings,
            admission=Admission(
                max_expensive=settings.max_expensive,
                cheap_cost=settings.cheap_cost,
                wait_ms=settings.admission_wait_ms,
            ),
            tracing=tracing,
            tracer_provider=tracer_provider,
            query=query,
            mutation=mutation,
        ),
        registry=partial(
            Loaders,
            options=registry_options(settings.database),
            loader_options=shared.loader_options() if shared is not None else None,
        ),
        sessions=PerBatchSessions(state.sessions),
        statements=statements,
        context_class=partial(AppContext, state=state),
        graphiql_page=graphiql_html(settings.graphiql_cdn) if settings.debug else None,
        allow_queries_via_get=True,  # queries only: Strawberry refuses mutations over GET
        subscription_protocols=(),
    )
    routes: list[BaseRoute] = [
        Route("/graphql", graphql),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    if settings.debug:  # GraphiQL: its files (unless from a CDN), and / leads to it
        if not settings.graphiql_cdn:
            routes.append(Mount(ASSETS_PATH, assets_app()))
        routes.append(Route("/", lambda _request: RedirectResponse("/graphql"), methods=["GET"]))
    app = Starlette(
        debug=False,  # never a traceback page, even in debug mode: errors are in the log
        routes=routes,
        lifespan=lifespan,
    )
    app.state.example_api = state
    # The last added is the outermost.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        OperationGuard,
        timeout_ms=settings.request_timeout_ms,
        max_response_bytes=settings.max_response_bytes,
    )
    app.add_middleware(HostCheck, allowed_hosts=settings.allowed_host_names)
    app.add_middleware(SecurityHeaders)  # on every answer, the Host check's 400 too
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)  # outermost: counts 413s
    return app
