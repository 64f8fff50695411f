"""The cache as the peers' users know it: prime, clear, peek, a bounded cache_map."""

import asyncio
from collections import OrderedDict
from typing import Any

from gqlbatch import KeyedLoader

TABLE = {1: "Ada", 2: "Grace", 3: "Edsger"}
fetched: list[list[int]] = []


async def fetch_names(ids: list[int]) -> dict[int, str]:
    fetched.append(list(ids))
    return {i: TABLE[i] for i in ids if i in TABLE}


class LRU:
    """A cache_map holding at most ``size`` entries."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any) -> Any:
        if key in self.entries:
            self.entries.move_to_end(key)
        return self.entries.get(key)

    def set(self, key: Any, value: Any) -> None:
        self.entries[key] = value
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def delete(self, key: Any) -> None:
        self.entries.pop(key, None)

    def clear(self) -> None:
        self.entries.clear()


async def main() -> None:
    names = KeyedLoader(fetch_names, key_type=int, name="name")

    # A write while a load of the same key waits: clear detaches the waiting
    # load (its caller gets what is fetched), prime gives later loads the new value.
    waiting = names.load(1)
    TABLE[1] = "Ada Lovelace"
    names.clear(1).prime(1, "Ada Lovelace")
    assert await waiting == "Ada Lovelace"  # fetched after the write
    assert names.peek(1) == "Ada Lovelace"

    # A value to come: loads of the key wait for the future.
    later: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    names.prime(4, later)
    asyncio.get_running_loop().call_soon(later.set_result, "Barbara")
    assert await names.load(4) == "Barbara"

    # A GraphQL null reaching a loader is a bug in the caller.
    try:
        names.load(None)  # type: ignore[arg-type]  # the mistake shown
    except TypeError as error:
        print(error)

    # A bounded cache for a long-lived loader.
    bounded = KeyedLoader(fetch_names, cache_map=LRU(2))
    await bounded.load_many([1, 2, 3])
    await bounded.load(1)  # evicted by 3: fetched again
    print(f"batches: {fetched}")
    assert fetched[-2:] == [[1, 2, 3], [1]]


if __name__ == "__main__":
    asyncio.run(main())
