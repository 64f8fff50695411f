"""gqlbatch: keyed batching for Python GraphQL APIs."""

from gqlbatch._errors import (
    BatchError,
    GqlBatchError,
    LoaderClosedError,
    MissingKeyError,
    QueueClearedError,
    QueueFullError,
    WrongEventLoopError,
)
from gqlbatch._options import BatchOptions, ErrorMode, RetryPolicy

__all__ = [
    "BatchError",
    "BatchOptions",
    "ErrorMode",
    "GqlBatchError",
    "LoaderClosedError",
    "MissingKeyError",
    "QueueClearedError",
    "QueueFullError",
    "RetryPolicy",
    "WrongEventLoopError",
]
