"""gqlbatch.strawberry's document limits: Strawberry's verdicts and messages, in linear time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import pytest
import strawberry
from strawberry.extensions import MaxAliasesLimiter, QueryDepthLimiter, SchemaExtension

import gqlbatch.strawberry._document as document_module
import gqlbatch.strawberry.limits as limits
from gqlbatch.strawberry import AliasLimiter, DepthLimiter, OperationNameRequired, RepeatLimiter

Extension = Callable[[], SchemaExtension]


@strawberry.type
class Post:
    id: int

    @strawberry.field
    def posts(self, limit: int = 2) -> list[Post]:
        return [Post(id=self.id * 10 + i) for i in range(limit)]


@strawberry.type
class Query:
    @strawberry.field
    def posts(self, limit: int = 2) -> list[Post]:
        return [Post(id=i) for i in range(limit)]


def errors(extensions: Sequence[Extension], query: str) -> list[dict[str, Any]]:
    """The errors of executing ``query`` with ``extensions``, as a client sees them."""
    result = strawberry.Schema(Query, extensions=extensions).execute_sync(query)
    return [dict(error.formatted) for error in result.errors or ()]


def messages(extensions: Sequence[Extension], query: str) -> list[str]:
    return [error["message"] for error in errors(extensions, query)]


def doubling(levels: int, leaf: str = "id") -> str:
    """Fragment i spreads fragment i - 1 twice: ``levels`` fragments, 2**levels leaves."""
    parts = [f"{{ posts {{ ...F{levels} }} }}", f"fragment F0 on Post {{ {leaf} }}"]
    parts += [f"fragment F{i} on Post {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, levels + 1)]
    return "\n".join(parts)


def nested(levels: int) -> str:
    return "{ " + "posts { " * levels + "id" + " }" * (levels + 1)


# A spread of documents on which the linear limits must agree with Strawberry's.
DOCUMENTS = [
    nested(2),
    nested(3),
    nested(4),
    "{ posts { ...A } } fragment A on Post { posts { ...B } } fragment B on Post { posts { id } }",
    "{ posts { ... on Post { posts { posts { id } } } } }",
    "{ a: posts { b: id } c: posts { ...A ...A } } fragment A on Post { d: id e: posts { id } }",
    "query One { x: posts { id } } query Two { y: posts { z: id } }",
    "{ posts { __typename posts { id } } }",
    doubling(3, "a: id"),
]


# --------------------------------------------------------------------------- depth


@pytest.mark.parametrize("query", DOCUMENTS)
@pytest.mark.parametrize("max_depth", [1, 2, 3])
def test_the_depth_limit_refuses_what_strawberrys_refuses_with_its_message(
    query: str, max_depth: int
) -> None:
    theirs = messages([partial(QueryDepthLimiter, max_depth=max_depth)], query)
    ours = messages([partial(DepthLimiter, max_depth=max_depth)], query)
    assert sorted(set(ours)) == sorted(set(theirs))


def test_a_depth_error_carries_a_code_and_the_operation_name() -> None:
    [error] = errors([partial(DepthLimiter, max_depth=2)], "query Deep " + nested(3))
    assert error["message"] == "'Deep' exceeds maximum operation depth of 2"
    assert error["extensions"] == {"code": "MAX_DEPTH_EXCEEDED"}


def test_the_depth_callback_gets_every_operations_depth() -> None:
    seen: list[dict[str, int]] = []
    query = "query A " + nested(2) + " query B " + nested(1)
    strawberry.Schema(
        Query, extensions=[partial(DepthLimiter, max_depth=5, callback=seen.append)]
    ).execute_sync(query, operation_name="A")
    assert seen == [{"A": 2, "B": 1}]


def test_depth_walks_each_fragment_once_however_often_it_is_spread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = 0
    depth = limits._depth

    def counting(*args: Any) -> int:
        nonlocal calls
        calls += 1
        return depth(*args)

    monkeypatch.setattr(limits, "_depth", counting)
    assert messages([partial(DepthLimiter, max_depth=10)], doubling(30)) == []
    assert calls <= 2 * 32  # 31 fragments and one operation (Strawberry: 2**30 leaves)


# --------------------------------------------------------------------------- aliases


@pytest.mark.parametrize("query", DOCUMENTS)
@pytest.mark.parametrize("max_aliases", [0, 2, 4])
def test_the_alias_limit_counts_like_strawberrys_with_its_message(
    query: str, max_aliases: int
) -> None:
    theirs = messages([partial(MaxAliasesLimiter, max_alias_count=max_aliases)], query)
    ours = messages([partial(AliasLimiter, max_alias_count=max_aliases)], query)
    assert ours == theirs


def test_aliases_in_a_fragment_spread_2_to_the_30_times_are_counted_without_walking_them() -> None:
    [error] = errors([partial(AliasLimiter, max_alias_count=15)], doubling(30, "a: id"))
    assert error["message"] == f"{2**30} aliases found. Allowed: 15"
    assert error["extensions"] == {"code": "MAX_ALIASES_EXCEEDED"}


# --------------------------------------------------------------------------- repeats


def test_one_field_repeated_past_the_limit_is_refused_before_graphql_core_compares_pairs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import graphql.validation.rules.overlapping_fields_can_be_merged as overlap

    def never(*args: Any) -> Any:
        raise AssertionError("graphql-core compared fields of a refused document")

    monkeypatch.setattr(overlap, "find_conflicts_within_selection_set", never)
    [error] = errors([partial(RepeatLimiter, max_repeats=10)], "{ " + "posts { id } " * 495 + "}")
    assert (
        error["message"] == "'posts' is selected 495 times at one place of the result. Allowed: 10"
    )
    assert error["extensions"] == {"code": "MAX_REPEATS_EXCEEDED"}


@pytest.mark.parametrize(
    ("query", "count"),
    [
        ("{ posts { posts { id } posts { id } posts { id } } }", 3),  # a nested set
        ("{ posts { posts { id } ... on Post { posts { id } ... on Post { posts { id } } } } }", 3),
        (
            "{ posts { posts { id } ...A ...A } } fragment A on Post { posts { id } posts { id } }",
            3,
        ),
        ("{ posts { x: posts { id } x: posts { id } posts { id } } }", 2),  # the response name
    ],
)
def test_repeats_count_the_fields_graphql_core_would_compare(query: str, count: int) -> None:
    assert messages([partial(RepeatLimiter, max_repeats=count)], query) == []
    [message] = messages([partial(RepeatLimiter, max_repeats=count - 1)], query)
    assert f"selected {count} times at one place of the result" in message


def test_fields_without_a_selection_have_their_own_looser_limit() -> None:
    fragments = " ".join(f"fragment F{i} on Post {{ id }}" for i in range(30))
    spreads = " ".join(f"...F{i}" for i in range(30))  # 30 fragments select id: fine
    query = f"{{ posts {{ {spreads} }} }} {fragments}"
    assert messages([partial(RepeatLimiter, max_repeats=2)], query) == []
    [message] = messages([partial(RepeatLimiter, max_repeats=2, max_leaf_repeats=29)], query)
    assert message == "'posts.id' is selected 30 times at one place of the result. Allowed: 29"


def test_repeats_count_every_field_merged_on_one_path() -> None:
    # 3 posts each holding 3 posts: 9 fields on the path posts.posts, compared pairwise
    # by graphql-core although no selection set holds more than 3.
    query = "{ " + ("posts { " + "posts { id } " * 3 + "} ") * 3 + "}"
    assert messages([partial(RepeatLimiter, max_repeats=9)], query) == []
    [error] = errors([partial(RepeatLimiter, max_repeats=8)], query)
    assert (
        error["message"]
        == "'posts.posts' is selected 9 times at one place of the result. Allowed: 8"
    )


def test_a_document_too_large_to_walk_is_refused_as_too_complex() -> None:
    [error] = errors([partial(RepeatLimiter, max_repeats=10, max_visits=5)], nested(6))
    assert error["extensions"] == {"code": "DOCUMENT_TOO_COMPLEX"}
    assert error["message"].startswith("The document is too complex to check (over 5 selections")


def test_a_fragment_cycle_is_left_to_validation() -> None:
    query = "{ posts { ...A } } fragment A on Post { posts { ...A } }"
    assert messages([partial(RepeatLimiter, max_repeats=2)], query) == [
        "Cannot spread fragment 'A' within itself."
    ]


def test_distinct_fields_and_fragments_stay_under_the_repeat_limit() -> None:
    assert messages([partial(RepeatLimiter, max_repeats=1)], doubling(30)) == []


# --------------------------------------------------------------------------- operation name


def test_several_operations_without_a_name_get_the_specifications_error() -> None:
    schema = strawberry.Schema(Query, extensions=[OperationNameRequired])
    query = "query A { posts(limit: 1) { id } } query B { posts(limit: 2) { id } }"
    refused = schema.execute_sync(query)
    assert refused.data is None
    assert [dict(e.formatted) for e in refused.errors or ()] == [
        {
            "message": "Must provide operation name if query contains multiple operations.",
            "extensions": {"code": "OPERATION_NAME_REQUIRED"},
        }
    ]
    assert schema.execute_sync(query, operation_name="B").data == {"posts": [{"id": 0}, {"id": 1}]}
    assert schema.execute_sync("query A { posts(limit: 1) { id } }").errors is None


# --------------------------------------------------------------------------- together, misuse


def test_the_first_refusal_is_the_only_error() -> None:
    extensions: list[Extension] = [
        partial(DepthLimiter, max_depth=1),
        partial(AliasLimiter, max_alias_count=0),
    ]
    assert messages(extensions, "{ a: posts { posts { id } } }") == [
        "'anonymous' exceeds maximum operation depth of 1"
    ]


def test_a_document_that_passes_the_limits_is_validated_and_executed() -> None:
    extensions: list[Extension] = [
        partial(DepthLimiter, max_depth=3),
        partial(AliasLimiter, max_alias_count=1),
        partial(RepeatLimiter, max_repeats=2),
    ]
    assert messages(extensions, "{ posts { nope } }") == [
        "Cannot query field 'nope' on type 'Post'."
    ]
    result = strawberry.Schema(Query, extensions=extensions).execute_sync("{ a: posts { id } }")
    assert result.data == {"a": [{"id": 0}, {"id": 1}]}


def test_a_document_too_deep_for_the_stack_is_refused_not_crashed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def overflow(*args: Any) -> int:
        raise RecursionError

    monkeypatch.setattr(limits, "_depth", overflow)
    [error] = errors([partial(DepthLimiter, max_depth=3)], nested(2))
    assert error["message"] == document_module.NESTED_TOO_DEEPLY
    assert error["extensions"] == {"code": "NESTED_TOO_DEEPLY"}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DepthLimiter(max_depth=0), "max_depth must be an integer >= 1, got 0"),
        (lambda: DepthLimiter(max_depth=True), "max_depth must be an integer >= 1, got True"),
        (lambda: DepthLimiter(3, callback=3), "callback must be callable, got 3"),  # type: ignore[arg-type]  # the misuse tested
        (lambda: AliasLimiter(-1), "max_alias_count must be an integer >= 0, got -1"),
        (lambda: RepeatLimiter("5"), "max_repeats must be an integer >= 1, got '5'"),  # type: ignore[arg-type]  # the misuse tested
        (lambda: RepeatLimiter(5, max_visits=0), "max_visits must be an integer >= 1, got 0"),
        (
            lambda: RepeatLimiter(5, max_leaf_repeats=0),
            "max_leaf_repeats must be an integer >= 1, got 0",
        ),
    ],
)
def test_bad_limits_are_refused_naming_the_argument(
    make: Callable[[], object], message: str
) -> None:
    with pytest.raises((ValueError, TypeError)) as raised:
        make()
    assert str(raised.value) == message
