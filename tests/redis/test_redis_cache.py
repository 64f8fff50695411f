"""RedisValueCache on the Redis at 127.0.0.1:6379 and on a 3-master Redis Cluster."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from redis.asyncio import Redis, RedisCluster
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from gqlbatch import NOT_FOUND, BatchError, KeyedLoader
from gqlbatch.redis import JsonSerializer, RedisValueCache
from tests._harness import bounded
from tests._interleavings import play, steps

pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("loop_reports")]


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    made = Redis.from_url(redis_url, socket_timeout=5)
    yield made
    await made.aclose()


@pytest.fixture
async def cluster(redis_cluster: list[int]) -> AsyncIterator[RedisCluster]:
    made = RedisCluster(host="127.0.0.1", port=redis_cluster[0], socket_timeout=5)
    await made.initialize()
    yield made
    await made.aclose()


class Source:
    """A batch function over a dict, recording the keys of each call."""

    def __init__(self, rows: dict[Any, Any]) -> None:
        self.rows = rows
        self.calls: list[list[Any]] = []

    async def __call__(self, keys: list[Any]) -> dict[Any, Any]:
        self.calls.append(list(keys))
        return {key: self.rows[key] for key in keys if key in self.rows}


def _loader(batch_fn: Any, **options: Any) -> KeyedLoader[Any, Any]:
    """A loader whose cache calls get time enough on a loaded machine (the timeouts
    are tested on their own, in ``tests/core`` and ``test_redis_faults.py``)."""
    return KeyedLoader(batch_fn, value_cache_timeout_ms=10_000, **options)


def _count(target: Any, name: str) -> list[int]:
    """Count calls of the async method ``name`` of ``target`` (patched on the instance)."""
    calls = [0]
    inner: Callable[..., Awaitable[Any]] = getattr(target, name)

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return await inner(*args, **kwargs)

    setattr(target, name, counted)
    return calls


async def test_a_batch_is_one_mget_and_its_fill_one_script_call(
    client: Redis, redis_namespace: str
) -> None:
    cache = RedisValueCache(client, namespace=redis_namespace)
    mgets = _count(client, "mget")
    fills = _count(cache, "_fill")
    source = Source({i: {"id": i, "name": f"user {i}"} for i in range(20)})
    first = await _loader(source, value_cache=cache).load_many(range(20))
    assert (mgets[0], fills[0]) == (1, 1)
    again = await _loader(source, value_cache=cache).load_many(range(25))
    assert again[:20] == first
    assert again[20:] == [None] * 5
    assert source.calls == [list(range(20)), list(range(20, 25))]
    assert (mgets[0], fills[0]) == (2, 1)  # nothing new found: no fill


async def test_another_client_reads_what_one_stored(redis_url: str, redis_namespace: str) -> None:
    async with Redis.from_url(redis_url) as one, Redis.from_url(redis_url) as two:
        source = Source({("a", 1): [1, 2.5, "x", None, True]})
        await _loader(source, value_cache=RedisValueCache(one, namespace=redis_namespace)).load(
            ("a", 1)
        )
        other = _loader(source, value_cache=RedisValueCache(two, namespace=redis_namespace))
        assert await other.load(("a", 1)) == [1, 2.5, "x", None, True]
        assert source.calls == [[("a", 1)]]


async def test_invalidate_makes_every_later_read_fetch_again(
    client: Redis, redis_namespace: str
) -> None:
    cache = RedisValueCache(client, namespace=redis_namespace)
    source = Source({1: "old"})
    await _loader(source, value_cache=cache).load(1)
    source.rows[1] = "new"
    await _loader(source, value_cache=cache).invalidate(1)
    assert await _loader(source, value_cache=cache).load(1) == "new"


async def _fill_race(cache_of: Callable[[], RedisValueCache]) -> None:
    """Reader reads the old row; writer commits and invalidates; the reader's fill is refused."""
    rows = {7: "old"}
    read_done = asyncio.Event()
    write_done = asyncio.Event()

    async def slow_read(keys: list[int]) -> dict[int, str]:
        found = {key: rows[key] for key in keys}
        read_done.set()
        await write_done.wait()
        return found

    reader = asyncio.ensure_future(_loader(slow_read, value_cache=cache_of()).load(7))
    await read_done.wait()
    rows[7] = "new"
    await _loader(slow_read, value_cache=cache_of()).invalidate(7)
    write_done.set()
    assert await reader == "old"
    assert await cache_of().get_many([7]) == {}
    write_done.set()
    assert await _loader(slow_read, value_cache=cache_of()).load(7) == "new"
    assert await cache_of().get_many([7]) == {7: "new"}


async def test_a_fill_racing_an_invalidation_never_stores_the_old_value(
    redis_url: str, redis_namespace: str
) -> None:
    async with Redis.from_url(redis_url) as reader, Redis.from_url(redis_url) as writer:
        clients = iter([reader, writer, reader, reader, reader])
        await _fill_race(lambda: RedisValueCache(next(clients), namespace=redis_namespace))


async def test_the_fill_script_stores_nothing_for_a_key_invalidated_since_the_read(
    client: Redis, redis_namespace: str
) -> None:
    cache = RedisValueCache(client, namespace=redis_namespace)
    read = await cache.get_many([1, 2])
    await cache.delete_many([1])
    await cache.set_many({1: "old", 2: "fresh"}, None, read=read)
    assert await client.exists(f"{redis_namespace}:{{1}}:v1") == 0
    assert await cache.get_many([1, 2]) == {2: "fresh"}


async def test_a_value_whose_generation_changed_is_not_read(
    client: Redis, redis_namespace: str
) -> None:
    """An invalidation whose DEL was lost (the generation was set) still hides the value."""
    cache = RedisValueCache(client, namespace=redis_namespace)
    await _loader(Source({1: "old"}), value_cache=cache).load(1)
    await client.set(f"{redis_namespace}:{{1}}:g", b"somebody-wrote")
    assert await cache.get_many([1]) == {}


async def test_a_new_value_shape_version_never_reads_old_entries_and_shares_invalidations(
    client: Redis, redis_namespace: str
) -> None:
    v1 = RedisValueCache(client, namespace=redis_namespace, version=1)
    v2 = RedisValueCache(client, namespace=redis_namespace, version=2)
    await _loader(Source({1: {"name": "ada"}}), value_cache=v1).load(1)
    assert await v2.get_many([1]) == {}
    await _loader(Source({1: {"name": "ada", "age": 36}}), value_cache=v2).load(1)
    await _loader(Source({}), value_cache=v2).invalidate(1)  # a new deploy writes
    assert await v1.get_many([1]) == {}  # the old deploy's readers see it too


async def test_misses_are_stored_only_with_cache_misses_ttl(
    client: Redis, redis_namespace: str
) -> None:
    cache = RedisValueCache(client, namespace=redis_namespace)
    await _loader(Source({}), value_cache=cache).load(1)
    assert await cache.get_many([1]) == {}
    await _loader(Source({}), value_cache=cache, cache_misses_ttl=5).load(1)
    assert await cache.get_many([1]) == {1: NOT_FOUND}
    ttl_ms = await client.pttl(f"{redis_namespace}:{{1}}:v1")
    assert 0 < ttl_ms <= 5000


async def test_values_live_for_the_loaders_ttl_or_the_caches(
    client: Redis, redis_namespace: str
) -> None:
    cache = RedisValueCache(client, namespace=redis_namespace, ttl=60)
    await _loader(Source({1: "a"}), value_cache=cache).load(1)
    await _loader(Source({2: "b"}), value_cache=cache, value_cache_ttl=2).load(2)
    assert 2000 < await client.pttl(f"{redis_namespace}:{{1}}:v1") <= 60_000
    assert 0 < await client.pttl(f"{redis_namespace}:{{2}}:v1") <= 2000


async def test_a_huge_batch_is_read_in_chunks(client: Redis, redis_namespace: str) -> None:
    cache = RedisValueCache(client, namespace=redis_namespace, chunk_size=3)
    source = Source({i: i * i for i in range(10)})
    await _loader(source, value_cache=cache).load_many(range(10))
    assert await _loader(source, value_cache=cache).load_many(range(10)) == [
        i * i for i in range(10)
    ]
    assert source.calls == [list(range(10))]


class _Base(DeclarativeBase):
    pass


class _User(_Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)


async def test_an_orm_object_is_refused_with_an_error_that_says_so(
    client: Redis, redis_namespace: str
) -> None:
    cache = RedisValueCache(client, namespace=redis_namespace)
    loader = KeyedLoader(Source({1: _User(id=1)}), value_cache=cache)
    with pytest.raises(BatchError) as caught:
        await loader.load(1)
    assert "an ORM object is not cacheable as such" in str(caught.value.__cause__)


async def test_a_key_that_cannot_name_a_redis_key_is_refused_naming_it(
    client: Redis, redis_namespace: str
) -> None:
    cache = RedisValueCache(client, namespace=redis_namespace)
    with pytest.raises(TypeError, match=r"key frozenset\(\{1\}\) \(frozenset\) cannot name"):
        await cache.get_many([frozenset({1})])


async def test_an_unreachable_redis_fails_open(redis_namespace: str) -> None:
    async with Redis(host="127.0.0.1", port=1, socket_connect_timeout=1) as down:
        loader = KeyedLoader(
            Source({1: "ada"}), value_cache=RedisValueCache(down, namespace=redis_namespace)
        )
        assert await loader.load(1) == "ada"
        await loader.invalidate(1)  # never raises
        assert loader.stats.value_cache_errors == 2


async def test_set_many_fills_only_keys_its_read_found_lacking(
    client: Redis, redis_namespace: str
) -> None:
    cache = RedisValueCache(client, namespace=redis_namespace)
    assert await cache.get_many([]) == {}
    read = await cache.get_many([1])
    await cache.set_many({1: "a", 2: "b"}, None, read=read)  # 2 was not read: not filled
    assert await cache.get_many([1, 2]) == {1: "a"}
    await cache.delete_many([])
    with pytest.raises(TypeError, match="set_many needs read="):
        await cache.set_many({1: "a"}, None, read={})


async def test_a_fill_later_than_the_fill_window_is_dropped(
    client: Redis, redis_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = RedisValueCache(client, namespace=redis_namespace, fill_window_s=5)
    read = await cache.get_many([1])
    later = time.monotonic() + 6
    monkeypatch.setattr(time, "monotonic", lambda: later)
    await cache.set_many({1: "late"}, None, read=read)
    monkeypatch.undo()
    assert await cache.get_many([1]) == {}


def test_options_are_checked_naming_the_argument(client: Redis) -> None:
    with pytest.raises(ValueError, match="namespace must be a non-empty string without braces"):
        RedisValueCache(client, namespace="a{b}")
    with pytest.raises(ValueError, match="generation_ttl must be at least"):
        RedisValueCache(client, namespace="a", ttl=10, max_ttl=10, generation_ttl=20)
    with pytest.raises(TypeError, match=r"client must be a redis\.asyncio\.Redis"):
        RedisValueCache(object(), namespace="a")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="version must be an int or a non-empty string"):
        RedisValueCache(client, namespace="a", version="")
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1"):
        RedisValueCache(client, namespace="a", chunk_size=0)
    with pytest.raises(TypeError, match="serializer must have dumps and loads"):
        RedisValueCache(client, namespace="a", serializer=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl must be a number > 0"):
        RedisValueCache(client, namespace="a", ttl=0)
    cache = RedisValueCache(client, namespace="a", version=3, ttl=60)
    assert repr(cache) == "<RedisValueCache 'a' v3 ttl=60.0>"
    assert repr(JsonSerializer()) == "JsonSerializer()"


@given(steps)
@settings(
    bounded(150),
    suppress_health_check=[
        *bounded(150).suppress_health_check,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_no_interleaving_of_readers_and_writers_reads_an_invalidated_value(
    redis_url: str, redis_namespace: str, script: list[tuple[int, int]]
) -> None:
    """Each example in a namespace of its own under the test's (deleted at the end)."""

    async def run() -> None:
        async with Redis.from_url(redis_url) as client:
            namespace = f"{redis_namespace}:{uuid.uuid4().hex[:8]}"
            await play(RedisValueCache(client, namespace=namespace), script)

    asyncio.run(run())


# --------------------------------------------------------------------------- Redis Cluster


async def test_cluster_batches_are_split_by_slot_and_read_back(
    cluster: RedisCluster, redis_namespace: str
) -> None:
    cache = RedisValueCache(cluster, namespace=redis_namespace)
    source = Source({i: f"v{i}" for i in range(50)})
    await _loader(source, value_cache=cache).load_many(range(50))
    slots = {cluster.keyslot(f"{redis_namespace}:{{{i}}}:g") for i in range(50)}
    assert len(slots) > 3  # the keys spread over the cluster's nodes
    assert await _loader(source, value_cache=cache).load_many(range(50)) == [
        f"v{i}" for i in range(50)
    ]
    assert source.calls == [list(range(50))]
    await _loader(source, value_cache=cache).invalidate(*range(0, 50, 2))
    held = await cache.get_many(list(range(50)))
    assert set(held) == set(range(1, 50, 2))


async def test_cluster_a_fill_racing_an_invalidation_never_stores_the_old_value(
    cluster: RedisCluster, redis_namespace: str
) -> None:
    await _fill_race(lambda: RedisValueCache(cluster, namespace=redis_namespace))
