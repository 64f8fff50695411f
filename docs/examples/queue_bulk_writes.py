"""BatchedQueue: aggregate single writes into bulk writes, with backpressure."""

import asyncio
from collections import Counter

from gqlbatch import BatchedQueue, QueueFullError

views: Counter[int] = Counter()
writes: list[int] = []


async def record_views(post_ids: list[int]) -> dict[int, int]:
    # One bulk UPDATE per batch in a real app; keyed results: duplicates share one.
    counts = Counter(post_ids)
    views.update(counts)
    writes.append(len(post_ids))
    return {post_id: views[post_id] for post_id in counts}


async def main() -> None:
    queue = BatchedQueue(
        record_views,
        key_of=lambda post_id: post_id,
        max_batch_size=50,
        max_wait_ms=20,
        max_queue_size=200,
        name="views",
    )
    accepted = []
    rejected = 0
    for i in range(300):
        try:
            accepted.append(queue.enqueue(i % 7))
        except QueueFullError:
            rejected += 1  # backpressure: tell the client to slow down
    await queue.aclose()  # graceful: every accepted view is written
    results = await asyncio.gather(*accepted)
    print(f"accepted {len(accepted)}, rejected {rejected}, bulk writes {writes}")
    assert sum(views.values()) == len(accepted) == 200
    assert len(results) == 200


asyncio.run(main())
