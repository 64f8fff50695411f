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
from gqlbatch._value_cache import (
    NOT_FOUND,
    CacheCallInfo,
    CircuitBreaker,
    MemoryValueCache,
    ValueCache,
    ValueCacheRead,
)

__all__ = [
    "BatchError",
    "BatchFunction",
    "BatchInfo",
    "BatchObserver",
    "BatchOptions",
    "BatchedQueue",
    "CacheCallInfo",
    "CircuitBreaker",
    "EngineOptions",
    "ErrorMode",
    "ErrorModeName",
    "GqlBatchError",
    "KeyType",
    "KeyedLoader",
    "LoaderClosedError",
    "LoaderOptions",
    "LoaderStats",
    "MemoryValueCache",
    "MissingKeyError",
    "NOT_FOUND",
    "QueueClearedError",
    "QueueFullError",
    "RetryPolicy",
    "RowsBatchFunction",
    "ValueCache",
    "ValueCacheRead",
    "WrongEventLoopError",
    "add_observer",
    "remove_observer",
]
