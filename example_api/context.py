"""What every resolver can reach through ``info.context``, and the statement counter."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from example_api.loaders import Loaders
from example_api.metrics import Metrics
from example_api.settings import Settings

if TYPE_CHECKING:
    from example_api.views import ViewCounter

__all__ = ["Context", "StatementTally", "count_statements", "statement_scope"]


@dataclass(slots=True)
class StatementTally:
    """SQL statements run so far in one scope (one GraphQL request)."""

    count: int = 0


_tally: ContextVar[StatementTally | None] = ContextVar("example_api_statements", default=None)


def _on_execute(*_args: Any) -> None:
    tally = _tally.get()
    if tally is not None:
        tally.count += 1


def count_statements(engine: AsyncEngine) -> None:
    """Count every statement ``engine`` runs into the current :func:`statement_scope`.

    An ``executemany`` counts once: it is one statement sent with many rows.
    """
    if not event.contains(engine.sync_engine, "before_cursor_execute", _on_execute):
        event.listen(engine.sync_engine, "before_cursor_execute", _on_execute)


@contextmanager
def statement_scope() -> Iterator[StatementTally]:
    """A fresh tally for the statements run from this context (and tasks it starts)."""
    tally = StatementTally()
    token = _tally.set(tally)
    try:
        yield tally
    finally:
        _tally.reset(token)


def leave_statement_scope() -> None:
    """Stop counting in the current context (for process-wide work a request started)."""
    _tally.set(None)


@dataclass(slots=True, kw_only=True)
class Context:
    """The per-request context of the GraphQL app."""

    request: Request | WebSocket
    response: Response | None
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    loaders: Loaders
    views: ViewCounter
    metrics: Metrics
    statements: StatementTally = field(default_factory=StatementTally)
