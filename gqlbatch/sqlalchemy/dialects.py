"""How many bind parameters one statement may carry, per database dialect."""

from __future__ import annotations

import sqlite3

from sqlalchemy.engine import Dialect

__all__ = ["dialect_max_params"]

_POSTGRES_MAX_PARAMS = 32_767  # asyncpg (and the wire protocol) allow an Int16 count
_SQLITE_FALLBACK_MAX_PARAMS = 999  # SQLITE_MAX_VARIABLE_NUMBER before SQLite 3.32
_KNOWN_MAX_PARAMS = {
    "postgresql": _POSTGRES_MAX_PARAMS,
    "mysql": 65_535,
    "mariadb": 65_535,
    "mssql": 2_100,
    "oracle": 65_535,
}
_UNKNOWN_MAX_PARAMS = 999
_sqlite_max_params: int | None = None


def _read_sqlite_max_params() -> int:
    """SQLITE_LIMIT_VARIABLE_NUMBER of the SQLite library linked into this process.

    aiosqlite drives the standard library's ``sqlite3``, so a throw-away
    in-memory connection reports the limit every connection starts with.
    """
    global _sqlite_max_params
    if _sqlite_max_params is None:
        try:
            probe = sqlite3.connect(":memory:")
            try:
                _sqlite_max_params = int(probe.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
            finally:
                probe.close()
        except (sqlite3.Error, AttributeError):  # pragma: no cover - very old sqlite3
            _sqlite_max_params = _SQLITE_FALLBACK_MAX_PARAMS
    return _sqlite_max_params


def dialect_max_params(dialect: Dialect) -> int:
    """The bind-parameter limit of ``dialect`` (SQLite's read from the linked library)."""
    if dialect.name == "sqlite":
        return _read_sqlite_max_params()
    return _KNOWN_MAX_PARAMS.get(dialect.name, _UNKNOWN_MAX_PARAMS)
