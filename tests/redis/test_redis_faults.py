"""Redis that cannot be reached during a write: reads fail open, staleness stays bounded.

The writing "process" reaches Redis through a loopback :class:`FaultProxy` that
drops connections or black-holes them (accepts, then never forwards a byte);
the reading "process" reaches Redis directly, as another machine whose network
is fine would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlparse

import pytest
from redis.asyncio import Redis

from gqlbatch import CircuitBreaker, KeyedLoader
from gqlbatch.redis import RedisValueCache
from tests.example_api.e2e.proxy import FaultProxy

pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("loop_reports")]

TTL = 30.0


@pytest.fixture
def proxy(redis_url: str) -> Iterator[FaultProxy]:
    parsed = urlparse(redis_url)
    made = FaultProxy(parsed.hostname or "127.0.0.1", parsed.port or 6379).start()
    yield made
    made.close()


@pytest.fixture
async def direct(redis_url: str) -> AsyncIterator[Redis]:
    async with Redis.from_url(redis_url, socket_timeout=5) as client:
        yield client


@pytest.fixture
async def proxied(proxy: FaultProxy) -> AsyncIterator[Redis]:
    async with Redis(host="127.0.0.1", port=proxy.port, socket_timeout=5) as client:
        yield client


class Table:
    """The database: one row per key, and the batch functions reading it."""

    def __init__(self) -> None:
        self.rows: dict[int, str] = {1: "old"}
        self.reads = 0

    async def read(self, keys: list[int]) -> dict[int, str]:
        self.reads += 1
        return {key: self.rows[key] for key in keys if key in self.rows}


@pytest.mark.parametrize("fault", ["drop", "black-hole"])
async def test_a_write_whose_invalidation_cannot_reach_redis_is_stale_elsewhere_for_at_most_the_ttl(
    fault: str, proxy: FaultProxy, direct: Redis, proxied: Redis, redis_namespace: str
) -> None:
    table = Table()
    writer_cache = RedisValueCache(proxied, namespace=redis_namespace, ttl=TTL)
    reader_cache = RedisValueCache(direct, namespace=redis_namespace, ttl=TTL)

    # Reads get time enough on a loaded machine; what fails here is the proxy, which
    # holds every byte: the writer's invalidation times out after 1 s whatever its load.
    def writer() -> KeyedLoader[int, Any]:
        return KeyedLoader(table.read, value_cache=writer_cache, value_cache_timeout_ms=2000)

    def reader() -> KeyedLoader[int, Any]:
        return KeyedLoader(table.read, value_cache=reader_cache, value_cache_timeout_ms=10_000)

    assert await writer().load(1) == "old"  # filled through the proxy: it works
    if fault == "drop":
        proxy.drop()
        proxy.stall()  # and the reconnection hangs
    else:
        proxy.stall()

    table.rows[1] = "new"  # the write commits ...
    mutation = writer()
    await mutation.invalidate(1)  # ... its invalidation times out: the mutation answers anyway
    assert mutation.stats.value_cache_errors == 1

    # The writer's own process never serves the old value: it skips the cache.
    assert await writer().load(1) == "new"
    # Another process still reads the old entry: that is the staleness the TTL bounds.
    assert await reader().load(1) == "old"
    ttl_ms = await direct.pttl(f"{redis_namespace}:{{1}}:v1")
    assert 0 < ttl_ms <= TTL * 1000

    proxy.resume()
    assert await writer().load(1) == "new"  # delivers the invalidation first
    assert await reader().load(1) == "new"  # every process sees the write now


async def test_a_black_holed_redis_costs_each_read_the_timeout_until_the_circuit_opens(
    proxy: FaultProxy, proxied: Redis, redis_namespace: str
) -> None:
    table = Table()
    breaker = CircuitBreaker(failures=2, reset_s=60)
    cache = RedisValueCache(proxied, namespace=redis_namespace, ttl=TTL)
    proxy.stall()
    stats = []
    for _ in range(4):
        loader = KeyedLoader(
            table.read, value_cache=cache, value_cache_timeout_ms=50, value_cache_breaker=breaker
        )
        assert await loader.load(1) == "old"  # the database answers every time
        stats.append((loader.stats.value_cache_errors, loader.stats.value_cache_skips))
    assert stats == [(1, 0), (1, 0), (0, 1), (0, 1)]
    assert breaker.state == "open"
    assert table.reads == 4
    proxy.resume()
