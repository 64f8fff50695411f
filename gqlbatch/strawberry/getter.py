"""FastAPI's ``context_getter``: a :class:`~gqlbatch.strawberry.Context` per request.

Importing this module does not import FastAPI; calling :func:`context_getter` does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from gqlbatch.strawberry.context import Context, build_context, check_sessions
from gqlbatch.strawberry.protocols import StatementCounting
from gqlbatch.strawberry.registry import RegistryT

__all__ = ["context_getter"]


def context_getter(
    registry: Callable[..., RegistryT],
    *,
    sessions: Any = None,
    sessions_factory: Callable[[], Any] | None = None,
    statements: StatementCounting | None = None,
) -> Callable[[], AsyncIterator[Context[RegistryT]]]:
    """A FastAPI ``context_getter`` building a :class:`Context` per request.

    Use it as ``GraphQLRouter(schema, context_getter=context_getter(Loaders, sessions=maker))``.
    It is a dependency with ``yield``: after the request the registry is closed,
    and sessions made by ``sessions_factory`` are closed with their ``aclose()``.
    The context is a ``strawberry.fastapi.BaseContext`` too, so the router fills in
    ``request``, ``response`` and ``background_tasks``. Needs FastAPI.

    Args:
        registry: the :class:`LoaderRegistry` subclass (or a factory taking
            ``sessions=`` and ``statements=``).
        sessions: one session source shared by every request (``PerBatchSessions``,
            an ``async_sessionmaker``).
        sessions_factory: called once per request for a session source of its
            own (``lambda: SharedSession(maker)``); closed when the request ends.
        statements: a :class:`StatementCounting` object for the statistics.
    """
    from gqlbatch.strawberry.fastapi import FastAPIContext

    check_sessions(sessions, sessions_factory)

    async def get_context() -> AsyncIterator[Context[RegistryT]]:
        context = build_context(FastAPIContext, registry, sessions, sessions_factory, statements)
        try:
            yield context
        finally:
            await context.aclose()

    return get_context
