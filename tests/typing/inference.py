"""What a user's editor infers, checked by mypy (``make typecheck``); never run.

Each ``assert_type`` is a promise about the public API's types: mypy fails when
an overload, a return type or a generic parameter stops giving what a user of
the library sees in an editor today.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, assert_type

from gqlbatch import KeyedLoader
from gqlbatch.sqlalchemy import ManyFetcher, OneFetcher, by_column, by_group, by_relationship
from gqlbatch.strawberry import (
    LoaderRegistry,
    LoaderSpec,
    from_index_batch,
    loader,
    loader_field,
)
from tests.sqlalchemy.sqla_models import Post, User


async def names(keys: list[int]) -> dict[int, str]:
    return {key: str(key) for key in keys}


async def by_index(keys: list[int]) -> list[str]:
    return [str(key) for key in keys]


class Pages:
    """A fetcher that is not itself callable: ``bind`` gives the batch function."""

    @property
    def loader_options(self) -> Mapping[str, Any]:
        return {"key_type": tuple}

    def bind(
        self, sessions: Any, /
    ) -> Callable[[list[tuple[int, int]]], Awaitable[dict[tuple[int, int], str]]]:
        async def batch(keys: list[tuple[int, int]]) -> dict[tuple[int, int], str]:
            return {key: str(key) for key in keys}

        return batch


class Loaders(LoaderRegistry):
    name = loader(names)
    name_or_error = loader(names, missing="error")
    page = loader(Pages())
    page_or_error = loader(Pages(), missing="error")
    user = loader(by_column(User.id))
    posts = loader(by_relationship(User.posts))
    from_index = loader(from_index_batch(by_index))


def declared_loaders_are_typed_by_their_source(registry: Loaders) -> None:
    assert_type(Loaders.name, LoaderSpec[int, str | None])
    assert_type(registry.name, KeyedLoader[int, str | None])
    assert_type(registry.name_or_error, KeyedLoader[int, str])
    assert_type(registry.page, KeyedLoader[tuple[int, int], str | None])
    assert_type(registry.page_or_error, KeyedLoader[tuple[int, int], str])
    assert_type(registry.user, KeyedLoader[int, Any | None])
    assert_type(registry.posts, KeyedLoader[Any, list[Post] | None])
    assert_type(registry.from_index, KeyedLoader[int, str | None])


def fetchers_carry_their_entity() -> None:
    assert_type(by_column(User.id), OneFetcher[int, Any])
    assert_type(by_group(Post.author_id), ManyFetcher[int, Any])
    assert_type(by_relationship(Post.author), OneFetcher[Any, User])
    assert_type(by_relationship(User.posts), ManyFetcher[Any, Post])


async def resolve_gives_the_value_or_its_future() -> None:
    async with KeyedLoader(names, missing="error") as loaded:
        assert_type(loaded.resolve(1), str | asyncio.Future[str])


def loader_fields_take_a_declared_loader_or_its_name() -> None:
    # Any, as strawberry.field's value is: the class annotation is the field's type.
    assert_type(loader_field(Loaders.user, key="author_id"), Any)
    loader_field(Loaders.name, key=lambda thing: 1)
    loader_field("name", key="id")
    loader_field(Loaders.name, key=1)  # type: ignore[arg-type]
    loader_field(Loaders.name, key=lambda thing: "1")  # type: ignore[arg-type,return-value]
    loader_field(Loaders.name, key="id", description=2)  # type: ignore[arg-type]


async def a_loader_in_async_with_keeps_its_type() -> None:
    async with KeyedLoader(names) as loaded:
        assert_type(loaded, KeyedLoader[int, str | None])


def options_are_checked_by_name_and_type(sessions: Any) -> None:
    # An unused "type: ignore" fails mypy: each line below must stay an error.
    by_column(User.id).loader(sessions, max_batch_size=10, error_mode="retry", missing="error")
    by_column(User.id).loader(sessions, max_batch_sise=10)  # type: ignore[call-arg]
    by_column(User.id).loader(sessions, error_mode="retyr")  # type: ignore[arg-type]
    Loaders(options={"max_batch_size": 10, "batch_timeout_ms": 50.0})
    Loaders(options={"max_batch_sise": 10})  # type: ignore[arg-type]
