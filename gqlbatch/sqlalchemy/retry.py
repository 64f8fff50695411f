"""Retrying database work on transient failures only: :func:`db_retry_policy`."""

from __future__ import annotations

import sqlalchemy.exc as sa_exc

from gqlbatch import RetryPolicy

__all__ = ["DB_RETRY", "DisconnectError", "db_retry_policy"]


class _DisconnectMeta(type):
    """Makes ``isinstance(error, DisconnectError)`` recognise invalidated connections."""

    def __instancecheck__(cls, instance: object) -> bool:
        return isinstance(instance, sa_exc.DBAPIError) and bool(instance.connection_invalidated)


class DisconnectError(Exception, metaclass=_DisconnectMeta):
    """Matches any SQLAlchemy ``DBAPIError`` raised because the connection was lost.

    Never raised itself: it exists for ``isinstance`` checks and for
    ``RetryPolicy.retry_on``. SQLAlchemy marks an error with
    ``connection_invalidated`` when the dialect recognises a disconnect, whatever
    the error's class.
    """


_DB_RETRY_ON: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,  # the pool had no connection to give in time
    DisconnectError,
    TimeoutError,
    ConnectionError,
)


def db_retry_policy(
    *,
    retries: int = 3,
    base_delay_ms: float = 50,
    factor: float = 2.0,
    max_delay_ms: float = 2_000,
    jitter: bool = True,
) -> RetryPolicy:
    """A :class:`~gqlbatch.RetryPolicy` for database work: transient failures only.

    Retries connection errors and timeouts (SQLAlchemy ``OperationalError``,
    ``InterfaceError``, pool ``TimeoutError``, any disconnect, and the built-in
    ``TimeoutError``/``ConnectionError``). Never ``IntegrityError``,
    ``ProgrammingError``, ``DataError``: running the same statement again cannot
    fix them. Note that SQLite reports some programming errors ("no such table")
    as ``OperationalError``; on SQLite those are retried too.
    """
    return RetryPolicy(
        retries=retries,
        base_delay_ms=base_delay_ms,
        factor=factor,
        max_delay_ms=max_delay_ms,
        jitter=jitter,
        retry_on=_DB_RETRY_ON,
    )


DB_RETRY: RetryPolicy = db_retry_policy()
"""``db_retry_policy()`` with its defaults: 3 retries from 50 ms, doubling, at most 2 s."""
