"""The README's example: one batch, keys matched by key, statistics."""

import asyncio

from gqlbatch import KeyedLoader

USERS = {1: "ada", 2: "grace", 3: "linus"}


async def fetch_users(ids: list[int]) -> dict[int, str]:
    print("one query for", ids)
    return {i: USERS[i] for i in ids if i in USERS}  # any order, missing keys allowed


async def main() -> None:
    users = KeyedLoader(fetch_users, name="user")
    a, b, c, nobody = await asyncio.gather(
        users.load(1), users.load(2), users.load(1), users.load(99)
    )
    print(a, b, c, nobody)  # ada grace ada None: one batch, key 1 fetched once
    print(users.stats)


asyncio.run(main())
