"""Refuse costly and hostile documents before they run: cost, depth, aliases, repeats."""

from __future__ import annotations

import asyncio
import logging
from functools import partial

import strawberry

from gqlbatch.strawberry import (
    AliasLimiter,
    CostLimiter,
    DepthLimiter,
    OperationNameRequired,
    RepeatLimiter,
)


@strawberry.type
class Post:
    id: int

    @strawberry.field
    def tags(self, limit: int = 10) -> list[Tag]:
        return [Tag(id=i) for i in range(limit)]


@strawberry.type
class Tag:
    id: int

    @strawberry.field
    def posts(self, limit: int = 10) -> list[Post]:
        return [Post(id=i) for i in range(limit)]


@strawberry.type
class Query:
    @strawberry.field
    def posts(self, limit: int = 10) -> list[Post]:
        return [Post(id=i) for i in range(limit)]

    @strawberry.field
    def search(self, text: str) -> list[Post]:  # no size argument: priced by a hint
        return []


# Strawberry logs every error of an operation; a refused document is the client's error.
logging.getLogger("strawberry.execution").setLevel(logging.CRITICAL)

schema = strawberry.Schema(
    Query,
    extensions=[
        OperationNameRequired,
        partial(DepthLimiter, max_depth=6),
        partial(AliasLimiter, max_alias_count=15),
        partial(RepeatLimiter, max_repeats=10),
        partial(
            CostLimiter,
            max_cost=5_000,
            field_costs={"Query.search": 20},  # one search result costs 20 objects
            list_sizes={"Query.search": 50},  # and a search returns at most 50
            max_list_size=100,  # the largest page the resolvers serve
        ),
    ],
)


async def main() -> None:
    # 10 posts, each with 10 tags: 10 x (1 + 10) = 110 objects at most. Runs.
    ok = await schema.execute("{ posts { id tags { id } } }")
    assert ok.errors is None

    # 100 + 100^2 + 100^3 objects at most: refused before any resolver runs.
    bomb = await schema.execute(
        "{ posts(limit: 100) { tags(limit: 100) { posts(limit: 100) { id } } } }"
    )
    [error] = bomb.errors or []
    print(error.message, error.extensions)
    assert error.extensions == {"code": "QUERY_TOO_COSTLY", "cost": 1010100, "maxCost": 5000}

    # The hint prices the search: 50 x 20 = 1,000, twice (an alias) = 2,000. Runs.
    searched = await schema.execute('{ a: search(text: "x") { id } b: search(text: "y") { id } }')
    assert searched.errors is None

    # 30 fragments, each spreading the one before twice: 2^30 paths, checked in a
    # walk over 31 fragments (Strawberry's QueryDepthLimiter walks every path).
    fragments = ["fragment F0 on Post { id }"]
    fragments += [f"fragment F{i} on Post {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, 31)]
    doubled = await schema.execute("{ posts(limit: 1) { ...F30 } }\n" + "\n".join(fragments))
    assert doubled.data == {"posts": [{"id": 0}]}


if __name__ == "__main__":
    asyncio.run(main())
