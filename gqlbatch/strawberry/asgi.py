"""Strawberry's ASGI app with a gqlbatch :class:`~gqlbatch.strawberry.Context` per request.

Kept apart from ``gqlbatch.strawberry`` because it needs Starlette, which
Strawberry itself does not require; ``gqlbatch.strawberry.GraphQL`` imports it
on first use.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Generic

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL as _StrawberryGraphQL
from strawberry.schema import BaseSchema

from gqlbatch.strawberry.context import Context, build_context, check_sessions
from gqlbatch.strawberry.protocols import StatementCounting
from gqlbatch.strawberry.registry import RegistryT

__all__ = ["GraphQL"]

# The contexts get_context built while serving the current ASGI call, closed after it.
_built: ContextVar[list[Context[Any]] | None] = ContextVar("gqlbatch_asgi_contexts", default=None)


class GraphQL(_StrawberryGraphQL[Context[RegistryT], None], Generic[RegistryT]):
    """Strawberry's ASGI app, building a :class:`Context` with a fresh registry per request.

    Example::

        app = GraphQL(schema, registry=Loaders, sessions=PerBatchSessions(maker))

    Every HTTP request (and every websocket connection) gets its own context and
    registry; when the request is over, the registry is closed and sessions made
    by ``sessions_factory`` are closed with their ``aclose()``. Override
    :meth:`get_context` to add to the context (call ``super().get_context``).

    Args:
        schema: the Strawberry schema (add :class:`LoaderExtension` to it).
        registry: the :class:`LoaderRegistry` subclass, or a factory taking
            ``sessions=`` and ``statements=``.
        sessions: one session source shared by every request.
        sessions_factory: called once per request for a session source of its own.
        statements: a :class:`StatementCounting` object for the statistics.
        context_class: the :class:`Context` subclass to build (default Context).
        **options: Strawberry's ``GraphQL`` options (``graphql_ide``, ...).
    """

    def __init__(
        self,
        schema: BaseSchema,
        *,
        registry: Callable[..., RegistryT],
        sessions: Any = None,
        sessions_factory: Callable[[], Any] | None = None,
        statements: StatementCounting | None = None,
        context_class: Callable[..., Context[RegistryT]] = Context,
        **options: Any,
    ) -> None:
        if not callable(registry):
            raise TypeError(f"registry must be a LoaderRegistry subclass, got {registry!r}")
        check_sessions(sessions, sessions_factory)
        super().__init__(schema, **options)
        self.registry = registry
        self.sessions = sessions
        self.sessions_factory = sessions_factory
        self.statements = statements
        self.context_class = context_class

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        built: list[Context[Any]] = []
        token = _built.set(built)
        try:
            await super().__call__(scope, receive, send)
        finally:
            _built.reset(token)
            for context in built:
                await context.aclose()

    def decode_json(self, data: str | bytes) -> object:
        """Parse JSON that must hold an object, or a list (a batch).

        Strawberry answers 400 to a :class:`json.JSONDecodeError` only, and a 500
        to what else goes wrong: :class:`UnicodeDecodeError` (bytes that are not
        UTF-8), :class:`ValueError` (a number of more than 4,300 digits),
        :class:`RecursionError` (arrays nested 100,000 deep), and a JSON scalar
        (``123``, ``null``) where it reads fields, in the body or in a batch.
        Each is a JSONDecodeError here.
        """
        try:
            value = super().decode_json(data)
        except json.JSONDecodeError:
            raise
        except UnicodeDecodeError as error:
            raise json.JSONDecodeError(f"invalid UTF-8 ({error.reason})", "", 0) from error
        except (ValueError, RecursionError) as error:
            raise json.JSONDecodeError(f"unreadable JSON ({error})", "", 0) from error
        if isinstance(value, dict):
            return value
        if isinstance(value, list):  # a batch: Strawberry refuses it when batching is off,
            batching = getattr(self.schema.config, "batching_config", None)
            if not batching or all(isinstance(item, dict) for item in value):
                return value  # and reads fields of each item when it is on
        raise json.JSONDecodeError("not an object (nor a list: a batch)", "", 0)

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context[RegistryT]:
        context = build_context(
            self.context_class, self.registry, self.sessions, self.sessions_factory, self.statements
        )
        context.request = request
        context.response = response
        built = _built.get()
        if built is not None:  # None only when called outside __call__: the caller closes it
            built.append(context)
        return context
