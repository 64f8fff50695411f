"""Exceptions raised by gqlbatch.

Every exception gqlbatch raises on its own account derives from one base
class, grouped by what a caller can do about it::

    GqlBatchError
    ├── QueueFullError        back off: the queue holds max_queue_size keys already
    ├── QueueClearedError     the queue was cleared before this caller was answered
    ├── LoaderClosedError     the loader or queue is closed (or closing)
    ├── BatchError            the batch holding this key failed; see __cause__
    ├── MissingKeyError       the batch answered, but not for this key (also a LookupError)
    └── WrongEventLoopError   used from an event loop it is not bound to (also a RuntimeError)

Exceptions that a batch function returns for a single key are handed to that
key's callers as they are, never wrapped.

Each caller that fails receives its own exception instance: an exception
object shared between callers would collect every caller's traceback and tie
their frames together.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BatchError",
    "GqlBatchError",
    "LoaderClosedError",
    "MissingKeyError",
    "QueueClearedError",
    "QueueFullError",
    "WrongEventLoopError",
]


def describe(loader: str | None, kind: str = "loader") -> str:
    """The loader (or queue) as error messages name it: ``loader 'user'``."""
    return kind if loader is None else f"{kind} {loader!r}"


class GqlBatchError(Exception):
    """Base class of every exception raised by gqlbatch."""


class QueueFullError(GqlBatchError):
    """``max_queue_size`` keys already wait to be dispatched; nothing was accepted.

    Raised synchronously by ``load``/``enqueue``; the loader's state is unchanged.
    """

    def __init__(
        self, loader: str | None, key: Any, max_queue_size: int, kind: str = "loader"
    ) -> None:
        self.loader = loader
        self.key = key
        self.max_queue_size = max_queue_size
        super().__init__(
            f"{describe(loader, kind)} is full: max_queue_size={max_queue_size} keys already "
            f"wait to be dispatched, so key {key!r} was not accepted"
        )


class QueueClearedError(GqlBatchError):
    """``BatchedQueue.clear()`` rejected this caller before it was answered."""

    def __init__(self, message: str = "Queue cleared") -> None:
        super().__init__(message)


class LoaderClosedError(GqlBatchError):
    """The loader or queue was closed before this caller was answered, or is closed."""

    def __init__(
        self, loader: str | None, key: Any = None, *, closing: bool = False, kind: str = "loader"
    ) -> None:
        self.loader = loader
        self.key = key
        state = "is closing" if closing else "is closed"
        super().__init__(f"{describe(loader, kind)} {state}; key {key!r} was not answered")


class BatchError(GqlBatchError):
    """The batch that held :attr:`key` failed as a whole, or gave up retrying it.

    The original exception is ``__cause__``. Each failing caller gets its own
    instance.

    Attributes:
        key: the key (or queue item) as handed to the batch function. With
            ``cache_key``, callers whose keys share a cache key share one
            spelling of it here: the first caller's.
        loader: the ``name`` of the loader or queue, or None.
        attempts: how many calls of the batch function included this key (0 when
            the key was rejected before its batch was ever called).
    """

    def __init__(
        self,
        loader: str | None,
        key: Any,
        attempts: int,
        cause: BaseException,
        reason: str = "",
        kind: str = "loader",
    ) -> None:
        self.loader = loader
        self.key = key
        self.attempts = attempts
        detail = reason or (f"batch failed after {attempts} attempt{'s' if attempts != 1 else ''}")
        message = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
        super().__init__(f"{describe(loader, kind)}: {detail} for key {key!r}: {message}")
        self.__cause__ = cause


class MissingKeyError(GqlBatchError, LookupError):
    """The batch function's result has no entry for this key.

    Raised for a :class:`~gqlbatch.KeyedLoader` created with ``missing="error"``,
    and for :class:`~gqlbatch.BatchedQueue` items whose key or index is absent
    from the processor's result.
    """

    def __init__(
        self, loader: str | None, key: Any, detail: str = "", kind: str = "loader"
    ) -> None:
        self.loader = loader
        self.key = key
        super().__init__(
            detail
            or f"{describe(loader, kind)}: the batch function returned no result for key {key!r}"
        )


class WrongEventLoopError(GqlBatchError, RuntimeError):
    """A loader or queue was used from an event loop other than the one it is bound to."""

    def __init__(self, loader: str | None, kind: str = "loader") -> None:
        self.loader = loader
        super().__init__(
            f"{describe(loader, kind)} is bound to another event loop that is still open; "
            "create one loader per event loop (for GraphQL: one per request)"
        )
