"""The database engine: one async engine per process, configured for its backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from example_api.settings import DatabaseOptions

__all__ = ["create_engine", "create_sessionmaker", "prepare_sqlite_path"]


def prepare_sqlite_path(url: str) -> None:
    """Create the folder of a SQLite file URL (the embedded default lives in ``data/``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Foreign keys on (SQLite leaves them off), WAL so readers never wait for the writer."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


_DEFAULT_OPTIONS = DatabaseOptions()


def create_engine(url: str, *, options: DatabaseOptions = _DEFAULT_OPTIONS) -> AsyncEngine:
    """An async engine for ``url``: SQLite through aiosqlite or PostgreSQL through asyncpg.

    ``options`` (default: the defaults of
    :class:`~example_api.settings.DatabaseOptions`; the app passes
    ``settings.database``) size the PostgreSQL pool and
    bound every wait on the database: for a free connection (``pool_timeout_ms``),
    for a new connection (``connect_timeout_ms``) and for a statement's answer
    (``statement_timeout_ms``, asyncpg's ``command_timeout``, which holds even
    when the server or the network stops answering). Each of those fails with
    an error the loaders retry (``DB_RETRY``), so a sick database makes requests
    fail, never hang. A connection found dead is replaced (``pool_pre_ping``).
    """
    prepare_sqlite_path(url)
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    connect_args: dict[str, Any] = {"timeout": options.connect_timeout_ms / 1000}
    if options.statement_timeout_ms:
        connect_args["command_timeout"] = options.statement_timeout_ms / 1000
    return create_async_engine(
        url,
        pool_size=options.pool_size,
        max_overflow=options.pool_overflow,
        pool_timeout=options.pool_timeout_ms / 1000,
        pool_pre_ping=True,
        connect_args=connect_args,
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    """Sessions that keep loaded objects usable after commit (resolvers read them later)."""
    return async_sessionmaker(engine, expire_on_commit=False)
