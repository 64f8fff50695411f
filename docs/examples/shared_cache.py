"""A shared value cache behind per-request loaders: one process, MemoryValueCache."""

import asyncio

from gqlbatch import KeyedLoader, MemoryValueCache

ROWS = {1: {"id": 1, "name": "ada"}, 2: {"id": 2, "name": "grace"}}
SHARED = MemoryValueCache(max_entries=10_000, ttl=300)  # one per process, per loader kind


async def fetch_users(ids: list[int]) -> dict[int, dict[str, object]]:
    print("database reads", ids)
    return {i: dict(ROWS[i]) for i in ids if i in ROWS}


def request_loader() -> KeyedLoader[int, dict[str, object] | None]:
    """What each request creates: a fresh loader over the shared cache."""
    return KeyedLoader(fetch_users, name="user", value_cache=SHARED)


async def main() -> None:
    first = request_loader()
    print(await first.load_many([1, 2, 3]))  # database reads [1, 2, 3]
    second = request_loader()
    print(await second.load_many([1, 2]))  # no database read: both come from SHARED
    print(second.stats.value_cache_hits, "hits")

    # A mutation: write, then invalidate, and only then answer.
    ROWS[1]["name"] = "ada lovelace"
    await request_loader().invalidate(1)
    print(await request_loader().load(1))  # database reads [1]


asyncio.run(main())
