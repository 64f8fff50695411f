"""gqlbatch on Redis: a value cache shared by every process and machine (extra ``redis``).

``RedisValueCache`` is a :class:`gqlbatch.ValueCache` for ``KeyedLoader(value_cache=...)``
on ``redis.asyncio`` (a single server or Redis Cluster); see ``docs/scaling-out.md``.
"""

from gqlbatch.redis.cache import RedisValueCache
from gqlbatch.redis.serializers import JsonSerializer, Serializer

__all__ = ["JsonSerializer", "RedisValueCache", "Serializer"]
