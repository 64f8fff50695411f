"""Settings of the example API, read once from the environment.

Every setting has an environment variable; the CLI (``python -m example_api``)
turns its options into those variables before the server starts, so every
uvicorn worker process reads the same configuration the same way:

=============================  ==========================================  =======================
variable                       meaning                                     default
=============================  ==========================================  =======================
``DATABASE_URL``               SQLAlchemy URL (async drivers are implied)  ``sqlite+aiosqlite:///
                                                                           data/example_api.db``
``EXAMPLE_API_HOST``           interface to listen on                      ``127.0.0.1``
``EXAMPLE_API_PORT``           TCP port                                    ``8000``
``EXAMPLE_API_WORKERS``        uvicorn worker processes                    ``1``
``EXAMPLE_API_DEBUG``          GraphiQL, introspection, full errors,       ``0`` (production)
                               ``extensions.gqlbatch`` statistics
``EXAMPLE_API_MIGRATE``        ``alembic upgrade head`` on start           ``1``
``EXAMPLE_API_MAX_PAGE_SIZE``  largest ``limit`` a list field accepts      ``100``
``EXAMPLE_API_MAX_DEPTH``      deepest query accepted                      ``10``
``EXAMPLE_API_MAX_ALIASES``    most aliases in one operation               ``15``
``EXAMPLE_API_MAX_TOKENS``     most tokens in one document                 ``2000``
``EXAMPLE_API_MAX_BATCH``      operations per HTTP request (0: no          ``0``
                               batching)
``EXAMPLE_API_MAX_BODY_BYTES`` largest request body; larger gets a 413    ``1048576``
``EXAMPLE_API_VIEW_QUEUE``     views waiting to be written, at most        ``10000``
``EXAMPLE_API_VIEW_FLUSH_MS``  how long a view waits for others            ``200``
``EXAMPLE_API_NAIVE``          per-field queries, for benchmarks only      ``0``
``EXAMPLE_API_GC_TUNING``      freeze the start-up heap and collect young  ``1``
                               objects less often (``example_api.app``)
=============================  ==========================================  =======================

The database pool and timeouts (:class:`DatabaseOptions`; the pool and the
statement and connect timeouts apply to PostgreSQL, the batch timeout to both):

======================================  =====================================  =========
variable                                meaning                                default
======================================  =====================================  =========
``EXAMPLE_API_DB_POOL_SIZE``            connections kept open per process      ``10``
``EXAMPLE_API_DB_POOL_OVERFLOW``        extra connections opened under load    ``10``
``EXAMPLE_API_DB_POOL_TIMEOUT_MS``      wait for a free connection, at most    ``30000``
``EXAMPLE_API_DB_CONNECT_TIMEOUT_MS``   opening a connection, at most          ``10000``
``EXAMPLE_API_DB_STATEMENT_TIMEOUT_MS`` one statement, at most (0: no limit)   ``30000``
``EXAMPLE_API_BATCH_TIMEOUT_MS``        one loader batch attempt, at most (0:  ``10000``
                                        no limit); retried like a lost
                                        connection
======================================  =====================================  =========

A bad value raises :class:`SettingsError` naming the variable and the value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DatabaseOptions",
    "Settings",
    "SettingsError",
    "normalize_database_url",
]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///data/example_api.db"
"""The embedded default: a SQLite file under ``data/``, created on first start."""

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class SettingsError(ValueError):
    """An environment variable (or CLI option) holds a value the server cannot use."""


def normalize_database_url(url: str) -> str:
    """Return ``url`` with the async driver the server uses for its database.

    ``postgresql://`` and ``postgres://`` become ``postgresql+asyncpg://`` and
    ``sqlite://`` becomes ``sqlite+aiosqlite://``; URLs naming a driver are kept.
    """
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise SettingsError(  # not echoed: it may hold a password
            "DATABASE_URL must look like scheme://user:password@host/database; "
            "the value given has no scheme"
        )
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+asyncpg://{rest}"
    if scheme == "sqlite":
        return f"sqlite+aiosqlite://{rest}"
    if scheme not in ("postgresql+asyncpg", "sqlite+aiosqlite"):
        raise SettingsError(
            "DATABASE_URL must be a PostgreSQL (asyncpg) or SQLite (aiosqlite) URL, "
            f"got scheme {scheme!r}"
        )
    return url


def _redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name} must be one of 1/0, true/false, yes/no, on/off, got {raw!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseOptions:
    """The connection pool and the timeouts that keep a sick database from hanging requests.

    Read on their own by :meth:`from_env` as well as part of :class:`Settings`,
    so that :func:`example_api.db.create_engine` and the loaders find them in
    every worker process. A timeout of 0 means no limit.
    """

    pool_size: int = 10
    """Default 10. Connections each process keeps open (PostgreSQL)."""
    pool_overflow: int = 10
    """Default 10. Connections opened beyond ``pool_size`` under load, closed when returned."""
    pool_timeout_ms: int = 30_000
    """Default 30,000. How long a statement waits for a free connection before it fails."""
    connect_timeout_ms: int = 10_000
    """Default 10,000. How long opening a connection may take (PostgreSQL)."""
    statement_timeout_ms: int = 30_000
    """Default 30,000. How long the client waits for one statement's answer (PostgreSQL)."""
    batch_timeout_ms: int = 10_000
    """Default 10,000. One attempt of a loader's batch at most; then it is retried (DB_RETRY)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DatabaseOptions:
        """Read the ``EXAMPLE_API_DB_*`` and ``EXAMPLE_API_BATCH_TIMEOUT_MS`` variables."""
        env = os.environ if env is None else env
        return cls(
            pool_size=_int(env, "EXAMPLE_API_DB_POOL_SIZE", 10, 1),
            pool_overflow=_int(env, "EXAMPLE_API_DB_POOL_OVERFLOW", 10, 0),
            pool_timeout_ms=_int(env, "EXAMPLE_API_DB_POOL_TIMEOUT_MS", 30_000, 1),
            connect_timeout_ms=_int(env, "EXAMPLE_API_DB_CONNECT_TIMEOUT_MS", 10_000, 1),
            statement_timeout_ms=_int(env, "EXAMPLE_API_DB_STATEMENT_TIMEOUT_MS", 30_000, 0),
            batch_timeout_ms=_int(env, "EXAMPLE_API_BATCH_TIMEOUT_MS", 10_000, 0),
        )

    def to_env(self) -> dict[str, str]:
        """The environment variables that make :meth:`from_env` rebuild these options."""
        return {
            "EXAMPLE_API_DB_POOL_SIZE": str(self.pool_size),
            "EXAMPLE_API_DB_POOL_OVERFLOW": str(self.pool_overflow),
            "EXAMPLE_API_DB_POOL_TIMEOUT_MS": str(self.pool_timeout_ms),
            "EXAMPLE_API_DB_CONNECT_TIMEOUT_MS": str(self.connect_timeout_ms),
            "EXAMPLE_API_DB_STATEMENT_TIMEOUT_MS": str(self.statement_timeout_ms),
            "EXAMPLE_API_BATCH_TIMEOUT_MS": str(self.batch_timeout_ms),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """The server's configuration; build it with :meth:`from_env`."""

    database_url: str = DEFAULT_DATABASE_URL
    """Default: a SQLite file under ``data/``. SQLAlchemy URL with an async driver."""
    host: str = "127.0.0.1"
    """Default ``127.0.0.1``: loopback only."""
    port: int = 8000
    """Default 8000."""
    workers: int = 1
    """Default 1. Several workers need PostgreSQL."""
    debug: bool = False
    """Default False (production): GraphiQL, introspection and full errors are off."""
    migrate_on_start: bool = True
    """Default True: the server applies ``alembic upgrade head`` when it starts."""
    max_page_size: int = 100
    """Default 100. Largest ``limit`` any list field accepts."""
    max_depth: int = 10
    """Default 10. Deepest selection accepted (``QueryDepthLimiter``)."""
    max_aliases: int = 15
    """Default 15. Most aliases in one operation (``MaxAliasesLimiter``)."""
    max_tokens: int = 2000
    """Default 2000. Most tokens in one document (``MaxTokensLimiter``)."""
    max_batch_operations: int = 0
    """Default 0: HTTP operation batching off. Otherwise the most operations per request."""
    max_body_bytes: int = 1_048_576
    """Default 1 MiB. Largest request body read; a larger one is answered 413 unread."""
    view_queue_size: int = 10_000
    """Default 10,000. Views accepted but not yet written; beyond it ``recordView`` fails."""
    view_flush_ms: float = 200
    """Default 200. How long a recorded view waits for others before the bulk UPDATE."""
    naive: bool = False
    """Default False. Plain per-field queries instead of loaders: for benchmarks only."""
    gc_tuning: bool = True
    """Default True. While the app runs, the garbage collector skips the objects made at
    start-up and collects young objects less often (``example_api.app.GC_YOUNG_THRESHOLD``)."""
    database: DatabaseOptions = field(default_factory=DatabaseOptions)
    """Default :class:`DatabaseOptions`: the pool and the database timeouts."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "database_url", normalize_database_url(self.database_url))
        if not 0 < self.port < 65536:
            raise SettingsError(f"EXAMPLE_API_PORT must be between 1 and 65535, got {self.port}")
        if self.workers > 1 and self.is_sqlite:
            raise SettingsError(
                f"EXAMPLE_API_WORKERS={self.workers} needs PostgreSQL: SQLite allows one "
                "writer at a time, so run one worker on SQLite or set DATABASE_URL"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read the settings from ``env`` (default ``os.environ``), then apply ``overrides``."""
        env = os.environ if env is None else env
        settings = cls(
            database_url=env.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            host=env.get("EXAMPLE_API_HOST") or "127.0.0.1",
            port=_int(env, "EXAMPLE_API_PORT", 8000, 1),
            workers=_int(env, "EXAMPLE_API_WORKERS", 1, 1),
            debug=_bool(env, "EXAMPLE_API_DEBUG", False),
            migrate_on_start=_bool(env, "EXAMPLE_API_MIGRATE", True),
            max_page_size=_int(env, "EXAMPLE_API_MAX_PAGE_SIZE", 100, 1),
            max_depth=_int(env, "EXAMPLE_API_MAX_DEPTH", 10, 1),
            max_aliases=_int(env, "EXAMPLE_API_MAX_ALIASES", 15, 0),
            max_tokens=_int(env, "EXAMPLE_API_MAX_TOKENS", 2000, 1),
            max_batch_operations=_int(env, "EXAMPLE_API_MAX_BATCH", 0, 0),
            max_body_bytes=_int(env, "EXAMPLE_API_MAX_BODY_BYTES", 1_048_576, 1),
            view_queue_size=_int(env, "EXAMPLE_API_VIEW_QUEUE", 10_000, 1),
            view_flush_ms=_int(env, "EXAMPLE_API_VIEW_FLUSH_MS", 200, 0),
            naive=_bool(env, "EXAMPLE_API_NAIVE", False),
            gc_tuning=_bool(env, "EXAMPLE_API_GC_TUNING", True),
            database=DatabaseOptions.from_env(env),
        )
        return replace(settings, **overrides) if overrides else settings

    @property
    def is_sqlite(self) -> bool:
        """Whether the database is SQLite."""
        return self.database_url.startswith("sqlite")

    @property
    def redacted_database_url(self) -> str:
        """The database URL without its password, for logs."""
        return _redact(self.database_url)

    def to_env(self) -> dict[str, str]:
        """The environment variables that make :meth:`from_env` rebuild these settings."""
        return {
            "DATABASE_URL": self.database_url,
            "EXAMPLE_API_HOST": self.host,
            "EXAMPLE_API_PORT": str(self.port),
            "EXAMPLE_API_WORKERS": str(self.workers),
            "EXAMPLE_API_DEBUG": "1" if self.debug else "0",
            "EXAMPLE_API_MIGRATE": "1" if self.migrate_on_start else "0",
            "EXAMPLE_API_MAX_PAGE_SIZE": str(self.max_page_size),
            "EXAMPLE_API_MAX_DEPTH": str(self.max_depth),
            "EXAMPLE_API_MAX_ALIASES": str(self.max_aliases),
            "EXAMPLE_API_MAX_TOKENS": str(self.max_tokens),
            "EXAMPLE_API_MAX_BATCH": str(self.max_batch_operations),
            "EXAMPLE_API_MAX_BODY_BYTES": str(self.max_body_bytes),
            "EXAMPLE_API_VIEW_QUEUE": str(self.view_queue_size),
            "EXAMPLE_API_VIEW_FLUSH_MS": str(int(self.view_flush_ms)),
            "EXAMPLE_API_NAIVE": "1" if self.naive else "0",
            "EXAMPLE_API_GC_TUNING": "1" if self.gc_tuning else "0",
            **self.database.to_env(),
        }
