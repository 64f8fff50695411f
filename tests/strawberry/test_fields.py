"""loader_field: fields that read a loader, with no await when the value is known."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
import strawberry
from strawberry.permission import BasePermission

from gqlbatch.strawberry import (
    Context,
    LoaderExtension,
    LoaderFieldError,
    LoaderRegistry,
    loader,
    loader_field,
    use_direct_resolvers,
)

# --------------------------------------------------------------------------- a tiny blog


@dataclass
class UserRow:
    id: int
    name: str


@dataclass
class PostRow:
    id: int
    author_id: int
    reviewer_id: int | None
    title: str


USERS = {i: UserRow(i, f"user {i}") for i in range(1, 6)}
POSTS = [
    PostRow(10 * a + p, a, None if p else a % 5 + 1, f"post {a}.{p}") for a in USERS for p in (0, 1)
]
POSTS.append(PostRow(99, 404, 404, "by nobody"))  # its author and reviewer do not exist
CALLS: list[tuple[str, list[int]]] = []


async def users_by_id(ids: list[int]) -> dict[int, UserRow]:
    CALLS.append(("user", sorted(ids)))
    await asyncio.sleep(0)
    return {i: USERS[i] for i in ids if i in USERS}


async def posts_by_author(ids: list[int]) -> list[PostRow]:
    CALLS.append(("posts", sorted(ids)))
    return [post for post in POSTS if post.author_id in ids]


class Loaders(LoaderRegistry):
    user = loader(users_by_id, key_type=int)
    posts = loader(posts_by_author, key_of=lambda post: post.author_id, many=True)


Info = strawberry.Info[Context[Loaders], None]


# The await style, as docs/strawberry.md teaches it first.
@strawberry.type(name="User")
class AwaitUser:
    id: int
    name: str

    @strawberry.field
    async def posts(self, info: Info) -> list[AwaitPost]:
        return await info.context.loaders.posts.load(self.id)  # type: ignore[return-value]


@strawberry.type(name="Post")
class AwaitPost:
    id: int
    title: str
    author_id: strawberry.Private[int]
    reviewer_id: strawberry.Private[int | None]

    @strawberry.field
    async def author(self, info: Info) -> AwaitUser | None:
        return await info.context.loaders.user.load(self.author_id)  # type: ignore[return-value]

    @strawberry.field
    async def reviewer(self, info: Info) -> AwaitUser | None:
        if self.reviewer_id is None:
            return None
        return await info.context.loaders.user.load(self.reviewer_id)  # type: ignore[return-value]


@strawberry.type(name="Query")
class AwaitQuery:
    @strawberry.field
    def users(self) -> list[AwaitUser]:
        return list(USERS.values())  # type: ignore[arg-type]

    @strawberry.field
    def posts(self) -> list[AwaitPost]:
        return POSTS  # type: ignore[return-value]


# The same schema with loader_field.
class IsReader(BasePermission):
    message = "readers only"

    def has_permission(self, source: Any, info: strawberry.Info, **kwargs: Any) -> bool:
        return getattr(info.context, "request", None) is None


@strawberry.type(name="User")
class User:
    id: int
    name: str
    posts: list[Post] = loader_field(Loaders.posts, key="id", description="newest last")


@strawberry.type(name="Post")
class Post:
    id: int
    title: str
    author_id: strawberry.Private[int]
    reviewer_id: strawberry.Private[int | None]
    author: User | None = loader_field("user", key="author_id", permission_classes=[IsReader])
    reviewer: User | None = loader_field(Loaders.user, key=lambda post: post.reviewer_id)


@strawberry.type(name="Query")
class Query:
    @strawberry.field
    def users(self, info: Info, prime: bool = False) -> list[User]:
        rows = list(USERS.values())
        if prime:  # the rows are in hand: later reads by id need no batch
            info.context.loaders.user.prime_many({row.id: row for row in rows})
        return rows  # type: ignore[return-value]

    @strawberry.field
    def posts(self) -> list[Post]:
        return POSTS  # type: ignore[return-value]


await_schema = strawberry.Schema(AwaitQuery, extensions=[LoaderExtension])
schema = strawberry.Schema(Query, extensions=[LoaderExtension])

DEEP = "{ users { name posts { title author { name } reviewer { name posts { id } } } } }"
FLAT = "{ posts { title author { id } reviewer { id } } }"


def context() -> Context[Loaders]:
    return Context(loaders=Loaders())


async def run(target: strawberry.Schema, query: str) -> tuple[Any, list[tuple[str, list[int]]]]:
    CALLS.clear()
    result = await target.execute(query, context_value=context())
    assert result.errors is None, result.errors
    return result.data, list(CALLS)


# --------------------------------------------------------------------------- answers and batches


@pytest.mark.parametrize("query", [DEEP, FLAT])
async def test_answers_and_batches_are_those_of_the_await_style(query: str) -> None:
    expected, expected_calls = await run(await_schema, query)
    data, calls = await run(schema, query)
    assert data == expected
    assert calls == expected_calls  # one batch per loader per level, the same keys


async def test_one_batch_per_loader_per_level() -> None:
    _, calls = await run(schema, DEEP)
    assert calls == [
        ("posts", [1, 2, 3, 4, 5]),
        ("user", [1, 2, 3, 4, 5]),  # authors and reviewers of one level, together
    ]


async def test_values_a_root_resolver_primed_cost_no_batch() -> None:
    data, calls = await run(schema, DEEP.replace("users", "users(prime: true)", 1))
    expected, _ = await run(schema, DEEP)
    assert data == expected
    assert calls == [("posts", [1, 2, 3, 4, 5])]


def test_known_values_are_completed_without_an_await() -> None:
    """With every value cached, the request completes synchronously."""
    CALLS.clear()
    registry = Loaders()
    registry.user.prime_many({**USERS, 404: None})
    query = "{ posts { author { name } reviewer { name } } }"
    result = schema.execute_sync(query, context_value=Context(loaders=registry))
    assert result.errors is None, result.errors
    assert result.data is not None
    assert result.data["posts"][0] == {"author": {"name": "user 1"}, "reviewer": {"name": "user 2"}}
    assert CALLS == []


async def test_a_missing_value_and_a_null_key_give_null() -> None:
    data, calls = await run(schema, "{ posts { id author { id } reviewer { id } } }")
    assert data["posts"][1] == {"id": 11, "author": {"id": 1}, "reviewer": None}  # null key
    assert data["posts"][-1] == {"id": 99, "author": None, "reviewer": None}  # no user 404
    assert calls == [("user", [1, 2, 3, 4, 5, 404])]


async def test_errors_reach_the_field_as_with_await() -> None:
    async def failing(ids: list[int]) -> dict[int, Any]:
        return {i: ValueError(f"user {i} is unavailable") for i in ids}

    class Failing(LoaderRegistry):
        user = loader(failing)
        posts = loader(posts_by_author, key_of=lambda post: post.author_id, many=True)

    result = await schema.execute(
        "{ posts { id author { id } } }", context_value=Context(loaders=Failing())
    )
    assert result.errors is not None
    assert {error.message for error in result.errors} >= {"user 1 is unavailable"}
    assert result.errors[0].path is not None and result.errors[0].path[-1] == "author"


def test_the_schema_shows_the_declared_types_and_options() -> None:
    sdl = str(schema)
    assert '"""newest last"""\n  posts: [Post!]!' in sdl
    assert "author: User\n" in sdl and "reviewer: User\n" in sdl


async def test_permission_classes_apply() -> None:
    class Request:
        pass

    result = await schema.execute(
        "{ posts { author { id } } }",
        context_value=Context(loaders=Loaders(), request=Request()),  # type: ignore[arg-type]
    )
    assert result.errors is not None
    assert result.errors[0].message == "readers only"


# --------------------------------------------------------------------------- mistakes


@strawberry.type
class Thing:
    id: int
    owner: User | None = loader_field("owner", key="id")
    keeper: User | None = loader_field(Loaders.user, key="keeper_id")


@strawberry.type
class ThingQuery:
    @strawberry.field
    def thing(self) -> Thing:
        return Thing(id=1)


mistakes = strawberry.Schema(ThingQuery)
direct_mistakes = strawberry.Schema(ThingQuery, extensions=[LoaderExtension])
MISTAKES = pytest.mark.parametrize("target", [mistakes, direct_mistakes], ids=["wrapped", "direct"])


@MISTAKES
async def test_an_undeclared_loader_is_named_with_field_and_key(target: strawberry.Schema) -> None:
    result = await target.execute("{ thing { owner { id } } }", context_value=context())
    assert result.errors is not None
    assert result.errors[0].message == (
        "Thing.owner reads loader 'owner' with the key 'id': Loaders declares no such "
        "loader; it declares 'user', 'posts'"
    )
    error = result.errors[0].original_error
    assert isinstance(error, LoaderFieldError)
    assert (error.field, error.loader, error.key) == ("Thing.owner", "owner", "id")


@MISTAKES
async def test_a_missing_key_attribute_is_named_with_field_and_loader(
    target: strawberry.Schema,
) -> None:
    result = await target.execute("{ thing { keeper { id } } }", context_value=context())
    assert result.errors is not None
    assert result.errors[0].message == (
        "Thing.keeper reads loader 'user' with the key 'keeper_id': the Thing it resolves "
        "on has no attribute 'keeper_id'"
    )


async def test_a_context_without_loaders_is_named() -> None:
    result = await schema.execute("{ posts { author { id } } }", context_value=object())
    assert result.errors is not None
    assert result.errors[0].message == (
        "Post.author reads loader 'user' with the key 'author_id': info.context (object) has "
        "no loaders; give the request a gqlbatch.strawberry.Context"
    )


async def test_a_context_without_loaders_is_named_on_a_direct_field() -> None:
    result = await schema.execute("{ posts { reviewer { id } } }", context_value=object())
    assert result.errors is not None
    assert result.errors[0].message == (
        "Post.reviewer reads loader 'user': info.context (object) has no loaders; give the "
        "request a gqlbatch.strawberry.Context"
    )


def test_graphql_core_calls_plain_loader_fields_directly() -> None:
    """Once per schema; not a field with permission classes (Strawberry runs them)."""
    fresh = strawberry.Schema(Query)
    assert use_direct_resolvers(fresh) == 2  # User.posts, Post.reviewer; not Post.author
    assert use_direct_resolvers(fresh) == 0
    assert str(fresh) == str(schema)


@strawberry.type
class Gone:
    message: str


class GoneHandler(strawberry.ExceptionHandler[LookupError, Gone]):
    def handle(self, exception: LookupError, *, field: Any, info: Any) -> Gone:
        return Gone(message=str(exception))


def test_a_schema_with_exception_handlers_keeps_strawberry_s_wrapper() -> None:
    handled = strawberry.Schema(Query, types=[Gone], exception_handlers=[GoneHandler()])
    assert use_direct_resolvers(handled) == 0
    assert use_direct_resolvers(object()) == 0  # not a Strawberry schema


@strawberry.type
class Odd:
    id: int
    owner: User | None = loader_field(Loaders.user, key=lambda odd: odd.missing_attribute)


@strawberry.type
class OddQuery:
    @strawberry.field
    def odd(self) -> Odd:
        return Odd(id=1)


async def test_an_attribute_error_of_a_key_callable_reaches_the_field_as_it_is() -> None:
    odd = strawberry.Schema(OddQuery, extensions=[LoaderExtension])
    result = await odd.execute("{ odd { owner { id } } }", context_value=context())
    assert result.errors is not None
    assert result.errors[0].message == "'Odd' object has no attribute 'missing_attribute'"


def test_bad_declarations_fail_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError, match="needs a declared loader"):
        loader_field(42, key="id")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not declared on a LoaderRegistry"):
        loader_field(loader(users_by_id), key="id")
    with pytest.raises(TypeError, match="registry's own attribute"):
        loader_field("sessions", key="id")
    with pytest.raises(TypeError, match="attribute name or a callable"):
        loader_field("user", key=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be an attribute name"):
        loader_field("user", key="author id")


def test_a_field_without_a_type_fails_as_strawberry_fails_it() -> None:
    with pytest.raises(Exception, match='type of field "owner"'):

        @strawberry.type
        class Thing:
            id: int
            owner = loader_field("user", key="id")
