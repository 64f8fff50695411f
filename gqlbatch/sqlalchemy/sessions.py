"""Where a fetcher's sessions come from: :class:`SessionSource` and the two sources given."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

__all__ = ["PerBatchSessions", "SessionSource", "SharedSession", "as_source"]


@runtime_checkable
class SessionSource(Protocol):
    """Where a fetcher gets the :class:`AsyncSession` for one batch.

    ``session()`` returns an async context manager; the fetcher holds it open
    for exactly one batch (one or, above the bind-parameter limit, a few
    statements). Wherever a source is accepted, a bare ``async_sessionmaker``
    is accepted too and means :class:`PerBatchSessions`.
    """

    def session(self) -> contextlib.AbstractAsyncContextManager[AsyncSession]:
        """An async context manager giving a session for one batch."""
        ...


class PerBatchSessions:
    """The default source: every batch opens its own short session and closes it.

    Why it is the default: a GraphQL request dispatches several loaders in the
    same event-loop iteration, and one ``AsyncSession`` must never serve two of
    them at once. With a session per batch, concurrent batches run concurrently
    (on PostgreSQL, truly in parallel on separate connections), no batch waits
    for another, a failed batch cannot poison the next one, and no transaction
    stays open between batches; a connection is checked out only while a
    statement runs. The cost is a pool checkout per batch and, for a request,
    up to as many connections at once as loaders dispatch together: size the
    pool for it. Objects come back detached and fully loaded (the session never
    commits, so nothing is expired).
    """

    __slots__ = ("_maker",)

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._maker = _checked_maker(sessionmaker)

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        """The ``async_sessionmaker`` each batch's session comes from."""
        return self._maker

    def session(self) -> contextlib.AbstractAsyncContextManager[AsyncSession]:
        """A new session, closed (its connection returned to the pool) on exit."""
        return self._maker(expire_on_commit=False)

    def __repr__(self) -> str:
        return f"PerBatchSessions({self._maker!r})"


class SharedSession:
    """One session for a whole request; its batches take turns behind an ``asyncio.Lock``.

    Use it when the request must see one connection (a temporary table, a
    transaction-scoped setting such as PostgreSQL row-level security variables,
    or a pool too small for a connection per loader), or to share the identity
    map: a row loaded by two loaders is one object. Concurrent batches are
    serialized, so a request's loaders no longer query in parallel, and the
    connection stays checked out from the first batch until :meth:`aclose`, which
    the request must call at its end (or use ``async with``).

    A batch that fails or is cancelled discards the session (closing it: objects
    already handed out stay loaded) and the next batch starts a fresh one, so one
    database error never poisons the rest of the request. The session is opened
    with ``expire_on_commit=False``; the fetchers never commit.
    """

    __slots__ = ("_closed", "_lock", "_maker", "_session")

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._maker = _checked_maker(sessionmaker)
        self._lock = asyncio.Lock()
        self._session: AsyncSession | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """Wait for the lock, then yield the request's session (opened on first use)."""
        if self._closed:
            raise RuntimeError("SharedSession is closed; create one per request")
        async with self._lock:
            if self._closed:  # closed while this batch waited for the lock
                raise RuntimeError("SharedSession is closed; create one per request")
            if self._session is None:
                self._session = self._maker(expire_on_commit=False)
            session = self._session
            try:
                yield session
            except BaseException:
                self._session = None
                await _close_shielded(session)
                raise

    async def aclose(self) -> None:
        """Close the session and return its connection; idempotent. Waits for a running batch."""
        if self._closed:
            return
        self._closed = True
        async with self._lock:
            session, self._session = self._session, None
            if session is not None:
                await _close_shielded(session)

    async def __aenter__(self) -> SharedSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"SharedSession({self._maker!r}, {state})"


def _checked_maker(sessionmaker: object) -> async_sessionmaker[AsyncSession]:
    """``sessionmaker`` if it is an ``async_sessionmaker``; TypeError naming it otherwise."""
    if not isinstance(sessionmaker, async_sessionmaker):
        raise TypeError(
            f"sessionmaker must be an async_sessionmaker, got {sessionmaker!r} "
            f"({type(sessionmaker).__name__})"
        )
    return sessionmaker


async def _close_shielded(session: AsyncSession) -> None:
    """Close ``session`` to the end even if the caller is cancelled meanwhile.

    A half-closed session could keep its connection checked out for good.
    """
    task = asyncio.ensure_future(session.close())
    cancelled: BaseException | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            cancelled = exc
    task.result()
    if cancelled is not None:
        raise cancelled


def as_source(sessions: object, argument: str = "sessions") -> SessionSource:
    """A bare ``async_sessionmaker`` means per-batch sessions; anything else must be a source."""
    if isinstance(sessions, async_sessionmaker):
        return PerBatchSessions(sessions)
    if isinstance(sessions, SessionSource) and not isinstance(sessions, type):
        return sessions
    raise TypeError(
        f"{argument} must be a SessionSource (PerBatchSessions, SharedSession, ...) or an "
        f"async_sessionmaker, got {sessions!r} ({type(sessions).__name__})"
    )
