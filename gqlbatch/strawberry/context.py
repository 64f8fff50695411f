"""What resolvers see as ``info.context``: :class:`Context`, and how the servers build one."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic

from gqlbatch.strawberry.protocols import StatementCounting
from gqlbatch.strawberry.registry import LoaderRegistry, RegistryT

if TYPE_CHECKING:
    from starlette.background import BackgroundTasks
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.websockets import WebSocket

__all__ = ["Context", "build_context", "check_sessions"]


class Context(Generic[RegistryT]):
    """What resolvers see as ``info.context``: the request, its loaders and its sessions.

    Annotate resolvers with ``strawberry.Info[Context[Loaders], None]`` and
    ``info.context.loaders.user`` is a ``KeyedLoader[int, User]`` to mypy and
    to an editor. Subclass it to carry more (the current user, settings).

    :class:`GraphQL` and :func:`context_getter` create one per request and
    call :meth:`aclose` when the request is over; with ``schema.execute``
    build it yourself (``Context(loaders=Loaders())``).

    Attributes:
        loaders: this request's registry.
        request: the Starlette ``Request`` or ``WebSocket`` (None outside a server).
        response: the response Strawberry will send (headers, cookies, status).
        sessions: the session source of this request (also the registry's), or None.
        statements: the :class:`StatementCounting` object, or None.
    """

    background_tasks: BackgroundTasks | None = None
    connection_params: Any | None = None

    def __init__(
        self,
        *,
        loaders: RegistryT,
        request: Request | WebSocket | None = None,
        response: Response | WebSocket | None = None,
        sessions: Any = None,
        statements: StatementCounting | None = None,
        owns_sessions: bool = False,
    ) -> None:
        if not isinstance(loaders, LoaderRegistry):
            raise TypeError(f"loaders must be a LoaderRegistry instance, got {loaders!r}")
        self.loaders = loaders
        self.request = request
        self.response = response
        self.sessions = sessions if sessions is not None else loaders.sessions
        self.statements = statements if statements is not None else loaders.statements
        self._owns_sessions = owns_sessions

    async def aclose(self) -> None:
        """End of request: close the registry, then the sessions if this context made them."""
        try:
            await self.loaders.aclose()
        finally:
            closer = getattr(self.sessions, "aclose", None)
            if self._owns_sessions and closer is not None:
                await closer()


def build_context(
    context_class: Callable[..., Context[RegistryT]],
    registry: Callable[..., RegistryT],
    sessions: Any,
    sessions_factory: Callable[[], Any] | None,
    statements: StatementCounting | None,
) -> Context[RegistryT]:
    """A new context with a new registry, and new sessions if a factory is given."""
    owns = sessions_factory is not None
    request_sessions = sessions_factory() if sessions_factory is not None else sessions
    return context_class(
        loaders=registry(sessions=request_sessions, statements=statements),
        sessions=request_sessions,
        statements=statements,
        owns_sessions=owns,
    )


def check_sessions(sessions: Any, sessions_factory: Any) -> None:
    if sessions is not None and sessions_factory is not None:
        raise TypeError(
            "pass sessions= (one session source shared by every request) or "
            "sessions_factory= (called once per request), not both"
        )
    if sessions_factory is not None and not callable(sessions_factory):
        raise TypeError(f"sessions_factory must be callable, got {sessions_factory!r}")
