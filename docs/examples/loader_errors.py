"""Error modes: continue, retry with per-key granularity, fail-fast."""

import asyncio

from gqlbatch import BatchError, KeyedLoader, RetryPolicy

calls: list[list[int]] = []


async def flaky_fetch(ids: list[int]) -> dict[int, int | Exception]:
    calls.append(ids)
    # Key 3 lives on a shard that times out on the first call: only it is retried.
    return {i: TimeoutError("shard 3 timed out") if i == 3 and len(calls) == 1 else i for i in ids}


async def broken_fetch(ids: list[int]) -> dict[int, int]:
    raise ConnectionError("database is down")


async def main() -> None:
    retrying = KeyedLoader(
        flaky_fetch,
        error_mode="retry",
        retry=RetryPolicy(retries=2, base_delay_ms=10),
        name="row",
    )
    print(await retrying.load_many([1, 2, 3]), "calls:", calls)  # [[1, 2, 3], [3]]
    assert calls == [[1, 2, 3], [3]]

    failing = KeyedLoader(broken_fetch, name="user")
    results = await asyncio.gather(failing.load(1), failing.load(1), return_exceptions=True)
    for error in results:
        assert isinstance(error, BatchError)
        print(type(error).__name__, error.key, error.attempts, repr(error.__cause__))
    assert results[0] is not results[1]  # each caller its own error


asyncio.run(main())
