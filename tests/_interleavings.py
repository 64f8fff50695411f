"""Readers and writers of a shared value cache, interleaved step by step.

A reader misses, reads the database, then fills (three steps); a writer
writes the database, then invalidates (two steps). :func:`play` runs one
interleaving against a :class:`~gqlbatch.ValueCache` and checks, after every
step, the property the cache promises: once a write has been invalidated,
nothing older than it is ever read from the cache. Used for the in-process
cache (``tests/core``) and for Redis (``tests/redis``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from gqlbatch import ValueCache

KEYS = (1, 2)
READERS = 3

# A step: (actor, key). Actors 0..READERS-1 are readers; READERS + i is the writer of KEYS[i].
steps = st.lists(
    st.tuples(st.integers(0, READERS + len(KEYS) - 1), st.sampled_from(KEYS)), max_size=40
)


@dataclass
class _Reader:
    stage: int = 0  # 0: idle, 1: missed (read held), 2: read the database
    key: int = 0
    read: Mapping[Hashable, Any] = field(default_factory=dict)
    found: int = 0


async def play(cache: ValueCache, script: list[tuple[int, int]]) -> None:
    """Run ``script`` against ``cache``; fail on the first stale read."""
    database = dict.fromkeys(KEYS, 0)
    invalidated = dict.fromkeys(KEYS, 0)  # the newest version whose invalidation completed
    writing = dict.fromkeys(KEYS, False)  # a write committed, its invalidation not done yet
    readers = [_Reader() for _ in range(READERS)]

    async def check(key: int, seen: Mapping[Hashable, Any], what: str) -> None:
        if key in seen:
            assert seen[key] >= invalidated[key], (
                f"{what}: read version {seen[key]} of key {key}, "
                f"but version {invalidated[key]} had been written and invalidated"
            )

    for actor, key in script:
        if actor < READERS:
            reader = readers[actor]
            if reader.stage == 0:
                reader.key = key
                reader.read = await cache.get_many([key])
                await check(key, reader.read, f"reader {actor}")
                reader.stage = 0 if key in reader.read else 1
            elif reader.stage == 1:
                reader.found = database[reader.key]
                reader.stage = 2
            else:
                await cache.set_many({reader.key: reader.found}, 60, read=reader.read)
                reader.stage = 0
        else:
            mine = KEYS[actor - READERS]
            if not writing[mine]:
                database[mine] += 1
                writing[mine] = True
            else:
                await cache.delete_many([mine])
                invalidated[mine] = database[mine]
                writing[mine] = False
        for each in KEYS:
            await check(each, await cache.get_many([each]), f"after step {(actor, key)}")
