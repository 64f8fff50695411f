"""gqlbatch: keyed batching for Python GraphQL APIs.

The core needs nothing beyond the standard library. Integrations live in
``gqlbatch.strawberry`` and ``gqlbatch.sqlalchemy`` and are imported only when
asked for.
"""

__version__ = "0.1.0"

from gqlbatch._errors import (
    BatchError,
    GqlBatchError,
    LoaderClosedError,
    MissingKeyError,
    QueueClearedError,
    QueueFullError,
    WrongEventLoopError,
)
from gqlbatch._loader import KeyedLoader
from gqlbatch._observe import BatchInfo, BatchObserver, add_observer, remove_observer
from gqlbatch._options import BatchOptions, ErrorMode, RetryPolicy
from gqlbatch._queue import BatchedQueue
from gqlbatch._stats import LoaderStats
from gqlbatch._types import (
    BatchFunction,
    EngineOptions,
    ErrorModeName,
    KeyType,
    LoaderOptions,
    RowsBatchFunction,
)

__all__ = [
    "BatchError",
    "BatchFunction",
    "BatchInfo",
    "BatchObserver",
    "BatchOptions",
    "BatchedQueue",
    "EngineOptions",
    "ErrorMode",
    "ErrorModeName",
    "GqlBatchError",
    "KeyType",
    "KeyedLoader",
    "LoaderClosedError",
    "LoaderOptions",
    "LoaderStats",
    "MissingKeyError",
    "QueueClearedError",
    "QueueFullError",
    "RetryPolicy",
    "RowsBatchFunction",
    "WrongEventLoopError",
    "add_observer",
    "remove_observer",
]
