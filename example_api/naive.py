"""The same schema with plain per-field queries: the N+1 problem, kept for comparison only.

``EXAMPLE_API_NAIVE=1`` (``serve --naive``) serves this instead of
:mod:`example_api.schema`; ``benchmarks/example_api_compare.py`` measures the
two side by side. Each relation resolver opens a session and runs its own
``SELECT`` for its one parent, which is what a resolver written without
loaders does: a four-level query over N users runs about N x 5 x 5 statements.
Never serve this.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from sqlalchemy import Select, select
from strawberry.types import Info

from example_api import models
from example_api.context import AppContext
from example_api.schema import page_of

__all__ = ["Query"]

Ctx = Info[AppContext, None]


async def _all(info: Ctx, stmt: Select[Any]) -> list[Any]:
    async with info.context.sessions.session() as session:
        return list((await session.scalars(stmt)).all())


async def _one(info: Ctx, model: type[models.Base], key: int) -> Any:
    async with info.context.sessions.session() as session:
        return await session.get(model, key)


@strawberry.type(name="User")
class User:
    id: strawberry.ID
    name: str
    email: str
    created_at: datetime

    @strawberry.field
    async def posts(self, info: Ctx, limit: int = 10, offset: int = 0) -> list[Post]:
        limit, offset = page_of(info, limit, offset)
        stmt = select(models.Post).where(models.Post.author_id == int(self.id))
        return await _all(info, stmt.order_by(models.Post.id).limit(limit).offset(offset))


@strawberry.type(name="Post")
class Post:
    id: strawberry.ID
    title: str
    body: str
    view_count: int
    created_at: datetime
    author_id: strawberry.Private[int]

    @strawberry.field
    async def author(self, info: Ctx) -> User:
        return await _one(info, models.User, self.author_id)  # type: ignore[no-any-return]

    @strawberry.field
    async def comments(self, info: Ctx, limit: int = 10, offset: int = 0) -> list[Comment]:
        limit, offset = page_of(info, limit, offset)
        stmt = select(models.Comment).where(models.Comment.post_id == int(self.id))
        return await _all(info, stmt.order_by(models.Comment.id).limit(limit).offset(offset))

    @strawberry.field
    async def tags(self, info: Ctx, limit: int = 10, offset: int = 0) -> list[Tag]:
        limit, offset = page_of(info, limit, offset)
        stmt = (
            select(models.Tag)
            .join(models.post_tags, models.post_tags.c.tag_id == models.Tag.id)
            .where(models.post_tags.c.post_id == int(self.id))
        )
        return await _all(
            info,
            stmt.order_by(models.Tag.name, models.Tag.id).limit(limit).offset(offset),
        )


@strawberry.type(name="Comment")
class Comment:
    id: strawberry.ID
    body: str
    created_at: datetime
    author_id: strawberry.Private[int]
    post_id: strawberry.Private[int]

    @strawberry.field
    async def author(self, info: Ctx) -> User:
        return await _one(info, models.User, self.author_id)  # type: ignore[no-any-return]

    @strawberry.field
    async def post(self, info: Ctx) -> Post:
        return await _one(info, models.Post, self.post_id)  # type: ignore[no-any-return]


@strawberry.type(name="Tag")
class Tag:
    id: strawberry.ID
    name: str

    @strawberry.field
    async def posts(self, info: Ctx, limit: int = 10, offset: int = 0) -> list[Post]:
        limit, offset = page_of(info, limit, offset)
        stmt = (
            select(models.Post)
            .join(models.post_tags, models.post_tags.c.post_id == models.Post.id)
            .where(models.post_tags.c.tag_id == int(self.id))
        )
        return await _all(info, stmt.order_by(models.Post.id).limit(limit).offset(offset))


def _page(model: type[models.Base], info: Ctx, limit: int, offset: int) -> Select[Any]:
    limit, offset = page_of(info, limit, offset)
    return select(model).order_by(model.id).limit(limit).offset(offset)  # type: ignore[attr-defined]


@strawberry.type(name="Query")
class Query:
    @strawberry.field
    async def users(self, info: Ctx, limit: int = 10, offset: int = 0) -> list[User]:
        return await _all(info, _page(models.User, info, limit, offset))

    @strawberry.field
    async def posts(self, info: Ctx, limit: int = 10, offset: int = 0) -> list[Post]:
        return await _all(info, _page(models.Post, info, limit, offset))

    @strawberry.field
    async def tags(self, info: Ctx, limit: int = 10, offset: int = 0) -> list[Tag]:
        return await _all(info, _page(models.Tag, info, limit, offset))

    @strawberry.field
    async def user(self, info: Ctx, id: strawberry.ID) -> User | None:
        return await _one(info, models.User, int(id))  # type: ignore[no-any-return]

    @strawberry.field
    async def post(self, info: Ctx, id: strawberry.ID) -> Post | None:
        return await _one(info, models.Post, int(id))  # type: ignore[no-any-return]
