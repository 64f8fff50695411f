"""What the Strawberry integration expects of other libraries, as protocols.

``gqlbatch.strawberry`` never imports SQLAlchemy: a fetcher (``by_column(User.id)``)
and a statement counter are recognised by their shape, described here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar, runtime_checkable

__all__ = ["Fetcher", "FetcherOf", "StatementCounting", "StatementScope"]

K = TypeVar("K")
V_co = TypeVar("V_co", covariant=True)


@runtime_checkable
class Fetcher(Protocol):
    """What the registry treats as a fetcher rather than a plain batch function.

    ``gqlbatch.sqlalchemy``'s fetchers (``by_column(User.id)`` and friends)
    satisfy it; so does anything else with these two members:

    - ``bind(sessions)`` returns the batch function (an async callable
      ``(keys) -> Mapping``) that reads through ``sessions``, the registry's
      session source;
    - ``loader_options`` holds default :class:`~gqlbatch.KeyedLoader` options
      (``key_type``, ``many``, ...). Options given to :func:`loader` win.

    When the registry has no ``sessions``, the fetcher is used as it is (it may
    be bound already); one whose optional ``sessions`` attribute is None is
    known to be unbound, and asking for its loader raises TypeError at once.
    """

    @property
    def loader_options(self) -> Mapping[str, Any]: ...

    def bind(self, sessions: Any, /) -> Any: ...


class FetcherOf(Protocol[K, V_co]):
    """A :class:`Fetcher` whose batch function maps ``K`` keys to ``V_co`` values.

    For type checkers only: :func:`~gqlbatch.strawberry.loader` reads the key and
    value types of a fetcher that is not itself callable from what ``bind`` returns.
    """

    @property
    def loader_options(self) -> Mapping[str, Any]: ...

    def bind(
        self, sessions: Any, /
    ) -> Callable[[list[K]], Awaitable[Mapping[K, V_co | BaseException]]]: ...


class StatementScope(Protocol):
    """The value a :class:`StatementCounting` scope yields: statements counted so far."""

    @property
    def count(self) -> int: ...


@runtime_checkable
class StatementCounting(Protocol):
    """Counts SQL statements per scope, like ``gqlbatch.sqlalchemy.StatementCounter``.

    ``scope()`` is a context manager; statements executed inside it (in the
    same task or in tasks started from it) are counted in the
    :class:`StatementScope` it yields, including statements of scopes nested
    inside it.
    """

    def scope(self) -> AbstractContextManager[StatementScope]: ...
