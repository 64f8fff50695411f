"""Upstream behaviour the suite works around, reproduced without gqlbatch.

Each test here pins a defect of a dependency that ``pyproject.toml`` works
around. When one fails, the dependency has changed: remove the workaround it
names.
"""

from __future__ import annotations

import asyncio
import gc
import re
import warnings
from typing import Any

import strawberry


@strawberry.type
class Leaf:
    n: int

    @strawberry.field
    async def value(self) -> int:
        return self.n


@strawberry.type
class Item:
    n: int

    @strawberry.field
    async def fails_first(self) -> int:  # non-null: an error nulls the whole list
        if self.n == 0:
            raise RuntimeError("item 0 fails")
        await asyncio.sleep(0)
        return self.n

    @strawberry.field
    async def leaves(self) -> list[Leaf]:
        await asyncio.sleep(0)
        return [Leaf(n=self.n * 10 + i) for i in range(5)]


@strawberry.type
class Query:
    @strawberry.field
    async def items(self) -> list[Item]:
        return [Item(n=i) for i in range(20)]


class QuietSchema(strawberry.Schema):
    """Logs nothing: pytest keeps log records, whose tracebacks would keep the coroutines."""

    def process_errors(self, errors: Any, execution_context: Any = None) -> None:
        pass


UNAWAITED = re.compile(r"coroutine '([^']+)' was never awaited")


def test_graphql_core_leaves_coroutines_unawaited_when_a_list_item_fails() -> None:
    """Why pyproject.toml ignores "coroutine 'Executor...' was never awaited" warnings.

    graphql-core 3.3.2 (issue #269) cancels the sibling items of a list whose
    non-null field failed; items whose task had not started yet leave the
    coroutines they hold never awaited. No loader is involved.
    """
    schema = QuietSchema(Query)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = asyncio.run(schema.execute("{ items { failsFirst leaves { value } } }"))
        data, messages = result.data, [error.message for error in result.errors or []]
        del result  # its errors' tracebacks hold the frames that hold the coroutines
        gc.collect()
    assert data is None
    assert messages == ["item 0 fails"]
    names = {m[1] for w in caught if (m := UNAWAITED.match(str(w.message)))}
    assert names, "graphql-core no longer drops coroutines: remove the filters in pyproject.toml"
    # only graphql-core's and Strawberry's own coroutines, which the filters name
    allowed = re.compile(
        r"Executor\.[\w.<>]+|GraphQLCoreConverter\.from_resolver\.<locals>\._async_resolver"
    )
    assert all(allowed.fullmatch(name) for name in names), names
