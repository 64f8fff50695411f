"""Counting the SQL statements an engine executes, per request: :class:`StatementCounter`."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["StatementCounter", "StatementScope"]


class StatementScope:
    """The statements executed inside one :meth:`StatementCounter.scope` (and its tasks)."""

    __slots__ = ("parameters", "statements")

    def __init__(self) -> None:
        self.statements: list[str] = []
        """The SQL text of each statement, in execution order, as sent to the driver."""
        self.parameters: list[Any] = []
        """The bind parameters of each statement, aligned with :attr:`statements`."""

    @property
    def count(self) -> int:
        """How many statements ran in this scope."""
        return len(self.statements)

    def __repr__(self) -> str:
        return f"<StatementScope count={self.count}>"


class StatementCounter:
    """Counts the SQL statements an engine executes (``before_cursor_execute``).

    ``total`` counts everything since construction. ``scope()`` counts only the
    statements run from its own context: the scope lives in a context variable,
    and tasks created inside it (a loader's batch tasks, created by the first
    ``load()`` of the request) inherit it, so concurrent requests each count
    their own statements. Scopes nest; an outer scope counts the inner one's
    statements too. ``close()`` removes the listener::

        counter = StatementCounter(engine)
        with counter.scope() as sql:
            await handle_request()
        assert sql.count == 3
    """

    def __init__(self, engine: AsyncEngine | Engine) -> None:
        if isinstance(engine, AsyncEngine):
            engine = engine.sync_engine
        if not isinstance(engine, Engine):
            raise TypeError(
                f"engine must be an AsyncEngine or an Engine, got {engine!r} "
                f"({type(engine).__name__})"
            )
        self._engine = engine
        self._total = 0
        self._scopes: contextvars.ContextVar[tuple[StatementScope, ...]] = contextvars.ContextVar(
            f"gqlbatch_statement_scopes_{id(self)}", default=()
        )
        self._closed = False
        event.listen(engine, "before_cursor_execute", self._count)

    @property
    def total(self) -> int:
        """Statements executed on the engine since this counter was created."""
        return self._total

    @contextlib.contextmanager
    def scope(self) -> Iterator[StatementScope]:
        """Count (and record) the statements run from this context until exit."""
        counted = StatementScope()
        token = self._scopes.set((*self._scopes.get(), counted))
        try:
            yield counted
        finally:
            self._scopes.reset(token)

    def close(self) -> None:
        """Stop counting; idempotent."""
        if not self._closed:
            self._closed = True
            event.remove(self._engine, "before_cursor_execute", self._count)

    def __enter__(self) -> StatementCounter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _count(
        self,
        conn: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        """The event listener: one call per statement sent to the driver."""
        self._total += 1
        for counted in self._scopes.get():
            counted.statements.append(statement)
            counted.parameters.append(parameters)

    def __repr__(self) -> str:
        return f"<StatementCounter total={self._total}>"
