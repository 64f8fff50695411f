"""The cache the by-id loaders share across processes and machines, on Redis.

Only with ``EXAMPLE_API_REDIS_URL``: then the ``user`` and ``post`` loaders of
every request consult one :class:`~gqlbatch.redis.RedisValueCache` each before
the database (see ``docs/scaling-out.md``). The paged loaders stay per request:
a page changes with every write to its parent's children, and the per-request
cache already reads each page once per request.

Consistency: every write invalidates the shared entries it changes before it
answers (the mutations in :mod:`example_api.schema` await ``write_through``;
the view queue invalidates the posts whose ``viewCount`` its bulk UPDATE
changed, so ``viewCount`` lags by the queue's flush, as without the cache).
When Redis cannot be reached during a write, other processes may read the old
entry for at most ``EXAMPLE_API_CACHE_TTL_S``.

Values are the models' column values as JSON (:class:`RowSerializer`), read
back as detached model instances: the resolvers read only columns from them,
and every relationship goes through a loader.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import inspect

from example_api import models
from example_api.settings import Settings
from gqlbatch import CircuitBreaker, KeyedLoader, LoaderOptions
from gqlbatch.redis import RedisValueCache

__all__ = ["SHAPE_VERSION", "RowSerializer", "SharedCache"]

SHAPE_VERSION = 1
"""What a cached user or post holds; bump it when a model's columns change, so a
deploy never reads the entries the previous one wrote."""

SHARED_LOADERS: Mapping[str, type[models.Base]] = {"user": models.User, "post": models.Post}
"""The loaders that use the shared cache, and the model of their values."""


class RowSerializer:
    """A model row as JSON of its columns (datetimes as ISO 8601), read back detached."""

    def __init__(self, model: type[models.Base]) -> None:
        self.model = model
        self._columns = [column.key for column in inspect(model).column_attrs]
        self._datetimes = {
            column.key
            for column in inspect(model).columns
            if isinstance(column.type.python_type, type)
            and issubclass(column.type.python_type, datetime)
        }

    def dumps(self, value: Any, /) -> bytes:
        if not isinstance(value, self.model):
            raise TypeError(
                f"RowSerializer({self.model.__name__}) stores {self.model.__name__} rows, "
                f"got {type(value).__name__}"
            )
        row = {key: getattr(value, key) for key in self._columns}
        for key in self._datetimes:
            if row[key] is not None:
                row[key] = row[key].isoformat()
        return json.dumps(row, separators=(",", ":")).encode()

    def loads(self, data: bytes, /) -> Any:
        row = json.loads(data)
        for key in self._datetimes:
            if row.get(key) is not None:
                row[key] = datetime.fromisoformat(row[key])
        return self.model(**row)

    def __repr__(self) -> str:
        return f"RowSerializer({self.model.__name__})"


async def _never_called(keys: list[int]) -> dict[int, Any]:
    raise AssertionError("the view queue's invalidator never loads")  # pragma: no cover


class SharedCache:
    """The Redis client and one cache per shared loader, for the life of the process."""

    def __init__(self, settings: Settings) -> None:
        self.client = Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=settings.cache_timeout_ms / 1000,
            socket_timeout=max(1.0, settings.cache_timeout_ms / 1000),
        )
        self.caches = {
            name: RedisValueCache(
                self.client,
                namespace=f"{settings.redis_namespace}:{name}",
                version=SHAPE_VERSION,
                ttl=settings.cache_ttl_s,
                serializer=RowSerializer(model),
            )
            for name, model in SHARED_LOADERS.items()
        }
        self.breakers = {name: CircuitBreaker() for name in self.caches}
        self._options: dict[str, LoaderOptions[Any]] = {
            name: {
                "value_cache": cache,
                "value_cache_timeout_ms": settings.cache_timeout_ms,
                "value_cache_breaker": self.breakers[name],
            }
            for name, cache in self.caches.items()
        }
        # Invalidates posts outside any request (the view queue), with the post
        # loaders' breaker, so failed deletions are kept and delivered like theirs.
        self._posts: KeyedLoader[int, Any] = KeyedLoader(
            _never_called,
            name="post",
            value_cache=self.caches["post"],
            value_cache_timeout_ms=settings.cache_timeout_ms,
            value_cache_breaker=self.breakers["post"],
        )

    def loader_options(self) -> dict[str, LoaderOptions[Any]]:
        """``LoaderRegistry(loader_options=...)`` of every request."""
        return self._options

    def circuit_states(self) -> dict[str, Callable[[], str]]:
        """Each shared loader's breaker state, read at each scrape of ``/metrics``."""
        return {name: _state_of(breaker) for name, breaker in self.breakers.items()}

    async def posts_changed(self, post_ids: list[int]) -> None:
        """Invalidate posts changed outside a mutation (their view counts)."""
        await self._posts.invalidate(*post_ids)

    async def aclose(self) -> None:
        """Close the connections to Redis."""
        self._posts.close()
        await self.client.aclose()


def _state_of(breaker: CircuitBreaker) -> Callable[[], str]:
    return lambda: breaker.state
