"""resolve(): a cached value itself, no await; anything else through load's future."""

import asyncio
import inspect

from gqlbatch import KeyedLoader

fetched: list[list[int]] = []


async def fetch_names(ids: list[int]) -> dict[int, str]:
    fetched.append(list(ids))
    return {i: f"user {i}" for i in ids if i < 100}


async def main() -> None:
    names = KeyedLoader(fetch_names, key_type=int, missing="error")
    names.prime_many({1: "Ada", 2: "Grace"})  # rows another query already read

    # Cached: the value itself, synchronously. Not cached: load's future.
    assert names.resolve(1) == "Ada"
    pending = names.resolve(3)
    assert isinstance(pending, asyncio.Future)
    assert await pending == "user 3"
    assert names.resolve(3) == "user 3"  # cached now
    assert fetched == [[3]]

    # A resolver returns the result as it is; GraphQL awaits it only if it must.
    results = [names.resolve(k) for k in (1, 2, 3, 4)]
    print([inspect.isawaitable(r) for r in results])  # [False, False, False, True]
    assert await asyncio.gather(*(r for r in results if inspect.isawaitable(r))) == ["user 4"]

    # Errors always come through the future, never as a value.
    missing = names.resolve(404)
    assert isinstance(missing, asyncio.Future)
    try:
        await missing
    except LookupError as error:
        print(type(error).__name__)  # MissingKeyError
    stats = names.stats
    print(f"{stats.loads} loads, {stats.cache_hits} cache hits, {stats.batches} batches")


if __name__ == "__main__":
    asyncio.run(main())
