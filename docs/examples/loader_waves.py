"""Resolvers that await before loading still share one batch per level."""

import asyncio

from gqlbatch import KeyedLoader

batches: list[list[int]] = []


async def fetch_scores(ids: list[int]) -> dict[int, int]:
    batches.append(sorted(ids))
    return {i: i * i for i in ids}


async def check_permission(user_id: int) -> None:
    # e.g. an async policy check that suspends a few times
    for _ in range(user_id % 4):
        await asyncio.sleep(0)


async def resolve_score(scores: KeyedLoader[int, int | None], user_id: int) -> int | None:
    await check_permission(user_id)
    return await scores.load(user_id)


async def main() -> None:
    scores = KeyedLoader(fetch_scores, name="score")
    values = await asyncio.gather(*(resolve_score(scores, i) for i in range(100)))
    assert values == [i * i for i in range(100)]
    print(f"{len(batches)} batch for 100 resolvers awaiting 0-3 times")
    assert len(batches) == 1


asyncio.run(main())
