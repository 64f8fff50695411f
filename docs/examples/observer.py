"""A batch observer: log every batch function call with its size and wait."""

import asyncio
from typing import Any

import gqlbatch
from gqlbatch import BatchInfo, KeyedLoader


class PrintingObserver:
    def batch_started(self, info: BatchInfo) -> float:
        print(f"{info.kind} {info.loader}: {info.size} keys, attempt {info.attempt}")
        return info.waited_ms

    def batch_finished(
        self, token: Any, info: BatchInfo, error: BaseException | None, failed_keys: int
    ) -> None:
        outcome = "ok" if error is None else f"failed: {error!r}"
        print(f"  waited {token:.1f} ms, {outcome}, {failed_keys} keys failed")


async def fetch(ids: list[int]) -> dict[int, int | Exception]:
    return {i: ValueError(i) if i == 3 else i for i in ids}


async def main() -> None:
    observer = PrintingObserver()
    gqlbatch.add_observer(observer)
    try:
        loader = KeyedLoader(fetch, name="row", max_wait_ms=5)
        await loader.load_many(range(5), return_exceptions=True)
    finally:
        gqlbatch.remove_observer(observer)


asyncio.run(main())
