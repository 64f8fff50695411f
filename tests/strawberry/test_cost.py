"""gqlbatch.strawberry's cost limit: page sizes multiplied down the tree, checked before running."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import pytest
import strawberry
from graphql import parse

from gqlbatch.strawberry import CostLimiter
from gqlbatch.strawberry.cost import COST_CEILING

resolved: list[str] = []  # the fields resolved, to show a refused query runs nothing


@strawberry.type
class Tag:
    id: int
    names: list[str]

    @strawberry.field
    def posts(self, limit: int = 10) -> list[Post]:
        resolved.append("Tag.posts")
        return []


@strawberry.type
class Post:
    id: int

    @strawberry.field
    def tags(self, limit: int = 10) -> list[Tag]:
        resolved.append("Post.tags")
        return []

    @strawberry.field
    def author(self) -> Author:
        return Author(id=1)

    @strawberry.field
    def related(self) -> list[Post]:  # a list without a size argument
        return []


@strawberry.type
class Author:
    id: int


@strawberry.type
class Query:
    @strawberry.field
    def tags(self, limit: int = 10) -> list[Tag]:
        resolved.append("Query.tags")
        return [Tag(id=1, names=[])]

    @strawberry.field
    def search(self, text: str, first: int = 5) -> list[Post]:
        return []

    @strawberry.field
    def post(self) -> Post | None:
        return None


SCHEMA = strawberry.Schema(Query)
BOMB = (
    "{ tags(limit: 100) { posts(limit: 100) { tags(limit: 100) { posts(limit: 100) "
    "{ tags(limit: 100) { id } } } } } }"
)


def cost(query: str, variables: Mapping[str, Any] | None = None, **options: Any) -> int:
    """The cost of the one operation of ``query``."""
    [value] = CostLimiter(1, **options).cost(SCHEMA._schema, parse(query), variables).values()
    return value


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("{ tags { id } }", 10),  # the argument's default
        ("{ tags(limit: 3) { id names } }", 3),  # scalars and lists of scalars are free
        ("{ tags(limit: 3) { posts(limit: 4) { id } } }", 3 * (1 + 4)),
        ("{ a: tags(limit: 3) { id } b: tags(limit: 2) { id } }", 5),  # aliases add up
        ("{ post { author { id } } }", 2),  # single objects count 1 each
        ('{ search(text: "x") { id } }', 5),  # the first size argument found: first
        ("{ post { related { id } } }", 1 + 10),  # no size argument: default_list_size
        ("{ tags(limit: 2) { ...P ...P } } fragment P on Tag { posts(limit: 3) { id } }", 14),
        ("{ tags(limit: 2) { ... on Tag { posts(limit: 3) { id } } } }", 2 * (1 + 3)),
        ("{ __schema { types { name } } tags(limit: 1) { __typename } }", 1),  # introspection
        ("{ tags(limit: -5) { id } }", 0),
        ("{ tags(limit: " + "9" * 5000 + ") { id } }", COST_CEILING),  # past int()'s digits
        ("{ tags(limit: 2) { nope { id } } }", 2),  # unknown fields: validation's business
        (BOMB, 100 + 100**2 + 100**3 + 100**4 + 100**5),
    ],
)
def test_cost_counts_every_object_a_query_can_return(query: str, expected: int) -> None:
    assert cost(query) == expected


def test_page_sizes_come_from_variables_then_their_defaults_then_the_schema() -> None:
    query = "query($n: Int = 3, $m: Int) { tags(limit: $n) { posts(limit: $m) { id } } }"
    assert cost(query) == 3 * (1 + 10)
    assert cost("query($n: Int = " + "9" * 5000 + ") { tags(limit: $n) { id } }") == COST_CEILING
    assert cost(query, {"n": 7, "m": 2}) == 7 * (1 + 2)
    assert cost(query, {"n": "junk"}) == 10 * (1 + 10)  # the schema's; coercion refuses it


def test_page_sizes_past_the_largest_page_count_as_the_largest_page() -> None:
    assert cost("{ tags(limit: 100000) { posts(limit: 7) { id } } }", max_list_size=50) == 50 * 8
    assert cost("query($n: Int!) { tags(limit: $n) { id } }", {"n": 10**12}, max_list_size=50) == 50


def test_field_cost_hints_and_list_sizes_price_a_users_own_fields() -> None:
    query = '{ search(text: "x", first: 2) { id related { id } } }'
    assert cost(query) == 2 * (1 + 10)
    hinted = cost(query, field_costs={"Query.search": 50}, list_sizes={"Post.related": 3})
    assert hinted == 2 * (50 + 3)


def test_a_fragment_spread_2_to_the_40_times_is_priced_exactly_and_at_once() -> None:
    fragments = ["fragment F0 on Tag { posts(limit: 1) { id } }"]
    fragments += [f"fragment F{i} on Tag {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, 41)]
    assert cost("{ tags(limit: 1) { ...F40 } }\n" + "\n".join(fragments)) == 1 + 2**40


def test_a_cost_past_the_ceiling_is_reported_as_the_ceiling() -> None:
    query = "{ " + "tags(limit: 1000) { posts(limit: 1000) { " * 4 + "id" + " } }" * 4 + " }"
    assert cost(query) == COST_CEILING


async def test_a_query_over_the_limit_is_refused_with_its_cost_before_anything_runs() -> None:
    schema = strawberry.Schema(Query, extensions=[partial(CostLimiter, max_cost=50_000)])
    resolved.clear()
    result = await schema.execute(BOMB)
    assert result.data is None
    assert resolved == []
    [error] = [e.formatted for e in result.errors or ()]
    assert error["message"] == "Query cost 10101010100 exceeds the maximum cost of 50000"
    assert error.get("extensions") == {
        "code": "QUERY_TOO_COSTLY",
        "cost": 10101010100,
        "maxCost": 50000,
    }


async def test_a_query_at_the_limit_runs() -> None:
    schema = strawberry.Schema(Query, extensions=[partial(CostLimiter, max_cost=2 * (1 + 3))])
    query = "query($n: Int!) { tags(limit: 2) { posts(limit: $n) { id } } }"
    assert (await schema.execute(query, variable_values={"n": 3})).errors is None
    refused = await schema.execute(query, variable_values={"n": 4})
    assert [e.message for e in refused.errors or ()] == [
        "Query cost 10 exceeds the maximum cost of 8"
    ]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: CostLimiter(0), "max_cost must be an integer >= 1, got 0"),
        (
            lambda: CostLimiter(10, field_costs={"Query.x": -1}),
            "field_costs['Query.x'] must be an integer >= 0, got -1",
        ),
        (
            lambda: CostLimiter(10, list_sizes={"Post.related": 2.5}),  # type: ignore[dict-item]  # the misuse tested
            "list_sizes['Post.related'] must be an integer >= 0, got 2.5",
        ),
        (
            lambda: CostLimiter(10, size_arguments="limit"),
            "size_arguments must be a sequence of names, got 'limit'",
        ),
        (
            lambda: CostLimiter(10, max_list_size=-1),
            "max_list_size must be an integer >= 0 or None, got -1",
        ),
        (
            lambda: CostLimiter(10, default_list_size=-1),
            "default_list_size must be an integer >= 0, got -1",
        ),
    ],
)
def test_bad_options_are_refused_naming_the_option(
    make: Callable[[], object], message: str
) -> None:
    with pytest.raises((ValueError, TypeError)) as raised:
        make()
    assert str(raised.value) == message
