"""DocumentCache: a query text is parsed and validated once, and every limit still applies."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
import strawberry
import strawberry.schema.schema as strawberry_schema
from graphql import GraphQLError, ValidationContext, ValidationRule, parse
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)

from gqlbatch.strawberry import AliasLimiter, CostLimiter, DepthLimiter, DocumentCache


@strawberry.type
class Node:
    id: int

    @strawberry.field
    def child(self) -> Node:
        return Node(id=self.id + 1)


@strawberry.type
class Query:
    @strawberry.field
    def nodes(self, limit: int = 10) -> list[Node]:
        return [Node(id=i) for i in range(limit)]


class LimitCheck(SchemaExtension):
    """A check that reads the variables, as a cost limit does: refuses ``limit`` over 50."""

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        limit = (context.variables or {}).get("limit", 10)
        if not context.pre_execution_errors and limit > 50:
            context.pre_execution_errors = [GraphQLError(f"limit {limit} is over 50")]
        yield


PAGE = "query Page($limit: Int!) { nodes(limit: $limit) { id } }"
DEEP = "{ nodes { child { child { child { id } } } } }"


def run(schema: strawberry.Schema, query: str, **variables: Any) -> list[str]:
    """The error messages of one request (none: it ran)."""
    result = schema.execute_sync(query, variable_values=variables or None)
    return [error.message for error in result.errors or ()]


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts graphql-core validations Strawberry runs (one per validated document)."""
    calls: list[int] = []
    original = strawberry_schema.__dict__["validate"]

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(strawberry_schema, "validate", counted)
    return calls


def test_a_repeated_query_text_is_parsed_and_validated_once(validations: list[int]) -> None:
    cache = DocumentCache()
    schema = strawberry.Schema(Query, extensions=[cache.extension()])
    for _ in range(3):
        assert run(schema, PAGE, limit=2) == []
    assert len(validations) == 1
    assert len(cache) == 1
    result = schema.execute_sync(PAGE, variable_values={"limit": 3})
    assert result.data == {"nodes": [{"id": 0}, {"id": 1}, {"id": 2}]}


def test_an_invalid_document_is_refused_every_time(validations: list[int]) -> None:
    schema = strawberry.Schema(Query, extensions=[DocumentCache().extension()])
    for _ in range(2):
        assert run(schema, "{ nodes { nope } }") == ["Cannot query field 'nope' on type 'Node'."]
    assert len(validations) == 2


@pytest.mark.parametrize("cache_first", [True, False], ids=["cache first", "check first"])
def test_a_check_reading_the_variables_still_refuses_a_cached_text(cache_first: bool) -> None:
    cache = DocumentCache()
    extensions = [cache.extension(), LimitCheck]
    schema = strawberry.Schema(Query, extensions=extensions if cache_first else extensions[::-1])
    for _ in range(2):
        assert run(schema, PAGE, limit=10) == []
        assert run(schema, PAGE, limit=100) == ["limit 100 is over 50"]


@pytest.mark.parametrize("cache_first", [True, False], ids=["cache first", "limits first"])
def test_the_cost_depth_and_alias_limits_refuse_a_cached_text_every_time(cache_first: bool) -> None:
    cache = DocumentCache()
    limits: list[Callable[[], SchemaExtension]] = [
        partial(CostLimiter, max_cost=50),  # reads the variables: limit x 1 object
        partial(DepthLimiter, max_depth=3),
        partial(AliasLimiter, max_alias_count=1),
    ]
    extensions = [cache.extension(), *limits] if cache_first else [*limits, cache.extension()]
    schema = strawberry.Schema(Query, extensions=extensions)
    for _ in range(2):
        assert run(schema, PAGE, limit=10) == []
        assert run(schema, PAGE, limit=100) == ["Query cost 100 exceeds the maximum cost of 50"]
        assert run(schema, DEEP) == ["'anonymous' exceeds maximum operation depth of 3"]
        assert run(schema, "{ a: nodes { id } b: nodes { id } }") == ["2 aliases found. Allowed: 1"]


def test_validation_rules_added_by_extensions_run_on_every_request(
    validations: list[int],
) -> None:
    ran: list[int] = []

    class Counted(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            ran.append(1)

    cache = DocumentCache()
    limited = strawberry.Schema(
        Query,
        extensions=[
            cache.extension(),
            partial(QueryDepthLimiter, max_depth=3),
            partial(MaxAliasesLimiter, max_alias_count=1),
            partial(AddValidationRules, [Counted]),
        ],
    )
    for _ in range(2):
        assert run(limited, DEEP) == ["'anonymous' exceeds maximum operation depth of 3"]
        assert run(limited, "{ a: nodes { id } b: nodes { id } }") == [
            "2 aliases found. Allowed: 1"
        ]
        assert run(limited, "{ nodes { child { id } } }") == []
    # Refused texts are validated in full each time, the clean one once; the rules
    # the extensions add ran on all six requests.
    assert len(validations) == 2 * 2 + 1
    assert len(ran) == 6


def test_a_document_another_extension_put_in_place_is_validated_in_full() -> None:
    class Swap(SchemaExtension):  # a persisted-query lookup, say, after the cache
        def on_parse(self) -> Iterator[None]:
            if (self.execution_context.variables or {}).get("limit") == 7:
                self.execution_context.graphql_document = parse("{ nodes { nope } }")
            yield

    schema = strawberry.Schema(Query, extensions=[DocumentCache().extension(), Swap])
    assert run(schema, PAGE, limit=1) == []  # the text is cached, parsed and validated
    assert run(schema, PAGE, limit=7) == ["Cannot query field 'nope' on type 'Node'."]


def test_a_text_parsed_under_a_larger_token_limit_is_refused_under_a_smaller_one() -> None:
    cache = DocumentCache()
    loose = strawberry.Schema(
        Query, extensions=[cache.extension(), partial(MaxTokensLimiter, 1000)]
    )
    tight = strawberry.Schema(Query, extensions=[cache.extension(), partial(MaxTokensLimiter, 5)])
    assert run(loose, DEEP) == []
    assert run(tight, DEEP) == [
        "Syntax Error: Document contains more than 5 tokens. Parsing aborted."
    ]
    assert run(loose, DEEP) == []


def test_the_cache_keeps_at_most_maxsize_documents_and_never_a_long_text() -> None:
    cache = DocumentCache(maxsize=2, max_query_length=100)
    schema = strawberry.Schema(Query, extensions=[cache.extension()])
    for limit in range(1, 4):
        assert run(schema, f"{{ nodes(limit: {limit}) {{ id }} }}") == []
    assert len(cache) == 2
    assert (cache.maxsize, repr(cache)) == (2, "<DocumentCache 2/2 documents>")
    cache.clear()
    long_text = "{ nodes { id " + " " * 100 + "} }"
    assert run(schema, long_text) == []
    assert len(cache) == 0


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"maxsize": 0}, ValueError, "maxsize must be >= 1, got 0"),
        ({"maxsize": "9"}, TypeError, "maxsize must be an int, got '9' (str)"),
        ({"max_query_length": True}, TypeError, "max_query_length must be an int, got True"),
    ],
)
def test_bad_arguments_are_refused_naming_them(
    arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        DocumentCache(**arguments)
