"""Strawberry integration: per-request loaders in ``info.context.loaders``.

A resolver writes ``await info.context.loaders.user.load(user_id)`` and gets
batching, caching and error handling. The pieces, in the order a request meets
them:

- :class:`LoaderRegistry` and :func:`loader` declare loaders as class
  attributes. One registry instance serves one request; each
  :class:`~gqlbatch.KeyedLoader` is created on first attribute access, so a
  request that touches two of fifty loaders builds two.
- :class:`Context` carries the request, the registry and the database session
  source; :class:`GraphQL` (Strawberry's ASGI app) and :func:`context_getter`
  (FastAPI's ``GraphQLRouter``) build one per request and close it afterwards.
- :class:`LoaderExtension` closes every loader of the operation when it ends,
  and optionally reports batching statistics in the response's ``extensions``.
- :func:`loader_field` declares a field that reads a loader, with no await
  when the loader already holds the value (``KeyedLoader.resolve``).
- :func:`write_through` and :func:`invalidate` keep a mutation's response fresh.
- :class:`DocumentCache` parses and validates each query text once, every
  limit still applied on every request.
- :func:`from_index_batch` adapts a batch function written for Strawberry's
  ``DataLoader`` or aiodataloader (a list aligned with the keys).
- :class:`CostLimiter`, :class:`DepthLimiter`, :class:`AliasLimiter`,
  :class:`RepeatLimiter` and :class:`OperationNameRequired` refuse a costly or
  hostile document before it is validated or executed, in time linear in it.

This module imports Strawberry, never SQLAlchemy: anything with
``bind(sessions)`` and ``loader_options`` is treated as a fetcher (see
:class:`Fetcher`), which is what ``gqlbatch.sqlalchemy`` provides.

One concept per module, every public name re-exported here: ``protocols``
(:class:`Fetcher`, :class:`StatementCounting`), ``registry`` (:class:`LoaderRegistry`,
:class:`LoaderSpec`), ``declare`` (:func:`loader`), ``context``, ``getter``
(:func:`context_getter`), ``extension``, ``fields`` (:func:`loader_field`),
``mutations``, ``bridge``, ``cost``, ``limits``, ``documents``; ``asgi``
(:class:`GraphQL`, needs Starlette) and ``fastapi`` (needs FastAPI) are imported
only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gqlbatch.strawberry.bridge import BatchLengthError, from_index_batch
from gqlbatch.strawberry.context import Context
from gqlbatch.strawberry.cost import CostLimiter
from gqlbatch.strawberry.declare import loader
from gqlbatch.strawberry.documents import DocumentCache
from gqlbatch.strawberry.extension import LoaderExtension
from gqlbatch.strawberry.fields import LoaderFieldError, loader_field, use_direct_resolvers
from gqlbatch.strawberry.getter import context_getter
from gqlbatch.strawberry.limits import (
    AliasLimiter,
    DepthLimiter,
    OperationNameRequired,
    RepeatLimiter,
)
from gqlbatch.strawberry.mutations import invalidate, write_through
from gqlbatch.strawberry.protocols import Fetcher, StatementCounting, StatementScope
from gqlbatch.strawberry.registry import LoaderRegistry, LoaderSpec, RegistryClosedError

if TYPE_CHECKING:
    from gqlbatch.strawberry.asgi import GraphQL

__all__ = [
    "AliasLimiter",
    "BatchLengthError",
    "Context",
    "CostLimiter",
    "DepthLimiter",
    "DocumentCache",
    "Fetcher",
    "GraphQL",
    "LoaderExtension",
    "LoaderFieldError",
    "LoaderRegistry",
    "LoaderSpec",
    "OperationNameRequired",
    "RegistryClosedError",
    "RepeatLimiter",
    "StatementCounting",
    "StatementScope",
    "context_getter",
    "from_index_batch",
    "invalidate",
    "loader",
    "loader_field",
    "use_direct_resolvers",
    "write_through",
]


def __getattr__(name: str) -> Any:
    # The ASGI app needs Starlette, which Strawberry does not require; import it on use.
    if name == "GraphQL":
        from gqlbatch.strawberry.asgi import GraphQL

        return GraphQL
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
