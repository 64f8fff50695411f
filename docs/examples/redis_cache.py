"""RedisValueCache: every process and machine shares one cache (needs Redis on 127.0.0.1:6379)."""

import asyncio
import os

from redis.asyncio import Redis

from gqlbatch import KeyedLoader
from gqlbatch.redis import RedisValueCache

ROWS = {1: {"id": 1, "name": "ada"}, 2: {"id": 2, "name": "grace"}}
NAMESPACE = f"docs-example-{os.getpid()}:user"  # in an application: "myapp:user"


async def fetch_users(ids: list[int]) -> dict[int, dict[str, object]]:
    print("database reads", ids)
    return {i: ROWS[i] for i in ids if i in ROWS}


async def main() -> None:
    async with Redis.from_url("redis://127.0.0.1:6379/0") as client:
        # One per loader kind and process; bump version= when a value's shape changes.
        users = RedisValueCache(client, namespace=NAMESPACE, version=1, ttl=300)
        try:
            first = KeyedLoader(fetch_users, name="user", value_cache=users)
            print(await first.load_many([1, 2]))  # database reads [1, 2]: one MGET, one fill
            second = KeyedLoader(fetch_users, name="user", value_cache=users)
            print(await second.load(2))  # from Redis: another process would get it too

            ROWS[2] = {"id": 2, "name": "grace hopper"}  # a mutation commits ...
            await second.invalidate(2)  # ... and invalidates before it answers
            print(await KeyedLoader(fetch_users, value_cache=users).load(2))
        finally:
            await client.delete(*[key async for key in client.scan_iter(f"{NAMESPACE}*")])


asyncio.run(main())
