"""The example API with plain per-field queries: the N+1 problem, kept for comparison only.

``python -m example_api serve --factory benchmarks._naive:create_app`` serves
this instead of the blog's loader-backed root types;
``benchmarks/example_api_compare.py`` measures the two side by side. Each
relation resolver opens a session and runs its own ``SELECT`` for its one
parent, which is what a resolver written without loaders does: a four-level
query over N users runs about N x 5 x 5 statements. Reads only (the comparison
needs no writes). Never serve this.

The types are the schema's (:mod:`example_api.schema`): each subclass below
keeps their fields and GraphQL names and replaces only the
relation resolvers, which return this module's types.
"""

from __future__ import annotations

from typing import Any

import strawberry
from sqlalchemy import Select, select
from starlette.applications import Starlette
from strawberry.types import Info

from example_api import app, models, schema
from example_api.context import AppContext
from example_api.schema import page_of
from example_api.settings import Settings

__all__ = ["Query", "create_app"]

Ctx = Info[AppContext, None]


def create_app(settings: Settings | None = None) -> Starlette:
    """The example API (``settings``: default from the environment) with :class:`Query`."""
    return app.create_app(settings, query=Query, mutation=None)


async def _all(info: Ctx, stmt: Select[Any]) -> list[Any]:
    async with info.context.sessions.session() as session:
        return list((await session.scalars(stmt)).all())


async def _one(info: Ctx, model: type[models.Base], key: int) -> Any:
    async with info.context.sessions.session() as session:
        return await session.get(model, key)


def _page(stmt: Select[Any], info: Ctx, limit: int, offset: int, *order: Any) -> Select[Any]:
    limit, offset = page_of(info, limit, offset)
    return stmt.order_by(*order).limit(limit).offset(offset)


@strawberry.type(name="User")
class User(schema.User):
    @strawberry.field
    async def posts(self, info: Ctx, limit: int = 10, offset: int = 0) -> list[Post]:
        stmt = select(models.Post).where(models.Post.author_id == int(self.id))
        return await _all(info, _page(stmt, info, limit, offset, models.Post.id))


@strawberry.type(name="Post")
class Post(schema.Post):
    @strawberry.field  # type: ignore[misc]  # the schema declares it with loader_field
    async def author(self, info: Ctx) -> User:  # type: ignore[override]
        return await _one(info, models.User, self.author_id)  # type: ignore[no-any-return]

    @strawberry.field
    async def comments(self, info: Ctx, limit: int = 10, offset: int = 0) -> list[Comment]:
        stmt = select(models.Comment).where(models.Comment.post_id == int(self.id))
        return await _all(info, _page(stmt, info, limit, offset, models.Comment.id))

    @strawberry.field
    async def tags(self, info: Ctx, limit: int = 10, offset: int = 0) -> list[Tag]:
        stmt = (
            select(models.Tag)
            .join(models.post_tags, models.post_tags.c.tag_id == models.Tag.id)
            .where(models.post_tags.c.post_id == int(self.id))
        )
        return await _all(info, _page(stmt, info, limit, offset, models.Tag.name, models.Tag.id))


@strawberry.type(name="Comment")
class Comment(schema.Comment):
    @strawberry.field  # type: ignore[misc]  # the schema declares it with loader_field
    async def author(self, info: Ctx) -> User:  # type: ignore[override]
        return await _one(info, models.User, self.author_id)  # type: ignore[no-any-return]

    @strawberry.field  # type: ignore[misc]  # the schema declares it with loader_field
    async def post(self, info: Ctx) -> Post:  # type: ignore[override]
        return await _one(info, models.Post, self.post_id)  # type: ignore[no-any-return]


@strawberry.type(name="Tag")
class Tag(schema.Tag):
    @strawberry.field
    async def posts(self, info: Ctx, limit: int = 10, offset: int = 0) -> list[Post]:
        stmt = (
            select(models.Post)
            .join(models.post_tags, models.post_tags.c.post_id == models.Post.id)
            .where(models.post_tags.c.tag_id == int(self.id))
        )
        return await _all(info, _page(stmt, info, limit, offset, models.Post.id))


def _root(model: Any, info: Ctx, limit: int, offset: int) -> Select[Any]:
    return _page(select(model), info, limit, offset, model.id)


@strawberry.type(name="Query")
class Query:
    """The schema's read entry points, each relation below them read per field."""

    @strawberry.field
    async def users(self, info: Ctx, limit: int = 10, offset: int = 0) -> list[User]:
        return await _all(info, _root(models.User, info, limit, offset))

    @strawberry.field
    async def posts(self, info: Ctx, limit: int = 10, offset: int = 0) -> list[Post]:
        return await _all(info, _root(models.Post, info, limit, offset))

    @strawberry.field
    async def tags(self, info: Ctx, limit: int = 10, offset: int = 0) -> list[Tag]:
        return await _all(info, _root(models.Tag, info, limit, offset))

    @strawberry.field
    async def user(self, info: Ctx, id: strawberry.ID) -> User | None:
        return await _one(info, models.User, schema.id_of(id, "id"))  # type: ignore[no-any-return]

    @strawberry.field
    async def post(self, info: Ctx, id: strawberry.ID) -> Post | None:
        return await _one(info, models.Post, schema.id_of(id, "id"))  # type: ignore[no-any-return]
