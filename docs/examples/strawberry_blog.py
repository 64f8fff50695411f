"""A blog schema twice: resolvers that query per field (N+1), then a loader registry."""

from __future__ import annotations

import asyncio
from typing import Any

import strawberry
from sqlalchemy import ForeignKey, event, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import StaticPool

from gqlbatch.strawberry import Context, LoaderExtension, LoaderRegistry, loader

# --- the database: 10 authors with 3 posts each --------------------------------------------


class Base(DeclarativeBase):
    pass


class AuthorRow(Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class PostRow(Base):
    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"), index=True)
    title: Mapped[str]


engine = create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)
Session = async_sessionmaker(engine, expire_on_commit=False)
statements = 0


@event.listens_for(engine.sync_engine, "before_cursor_execute")
def count(*args: Any) -> None:
    global statements
    statements += 1


# --- before: every resolver runs its own query ----------------------------------------------


@strawberry.type
class Author:
    id: int
    name: str

    @strawberry.field
    async def posts(self) -> list[Post]:
        async with Session() as session:
            rows = await session.scalars(select(PostRow).where(PostRow.author_id == self.id))
            return [Post(id=r.id, title=r.title, author_id=r.author_id) for r in rows]


@strawberry.type
class Post:
    id: int
    title: str
    author_id: strawberry.Private[int]

    @strawberry.field
    async def author(self) -> Author:
        async with Session() as session:
            row = await session.get_one(AuthorRow, self.author_id)
            return Author(id=row.id, name=row.name)


async def all_posts() -> list[PostRow]:
    async with Session() as session:
        return list(await session.scalars(select(PostRow).order_by(PostRow.id)))


@strawberry.type
class Query:
    @strawberry.field
    async def posts(self) -> list[Post]:
        return [Post(id=r.id, title=r.title, author_id=r.author_id) for r in await all_posts()]


n_plus_one = strawberry.Schema(Query)


# --- after: the same schema, reading through a request's loaders -----------------------------


async def authors_by_id(ids: list[int]) -> dict[int, AuthorRow]:
    async with Session() as session:
        rows = await session.scalars(select(AuthorRow).where(AuthorRow.id.in_(ids)))
        return {row.id: row for row in rows}


async def posts_by_author(author_ids: list[int]) -> list[PostRow]:
    async with Session() as session:
        where = PostRow.author_id.in_(author_ids)
        return list(await session.scalars(select(PostRow).where(where).order_by(PostRow.id)))


class Loaders(LoaderRegistry):
    author = loader(authors_by_id, key_type=int, missing="error")
    posts_by_author = loader(posts_by_author, key_of=lambda post: post.author_id, many=True)


Info = strawberry.Info[Context[Loaders], None]


@strawberry.type(name="Author")
class BatchedAuthor:
    id: int
    name: str

    @strawberry.field
    async def posts(self, info: Info) -> list[BatchedPost]:
        rows = await info.context.loaders.posts_by_author.load(self.id)
        return [BatchedPost(id=r.id, title=r.title, author_id=r.author_id) for r in rows]


@strawberry.type(name="Post")
class BatchedPost:
    id: int
    title: str
    author_id: strawberry.Private[int]

    @strawberry.field
    async def author(self, info: Info) -> BatchedAuthor:
        row = await info.context.loaders.author.load(self.author_id)  # AuthorRow, to mypy too
        return BatchedAuthor(id=row.id, name=row.name)


@strawberry.type(name="Query")
class BatchedQuery:
    @strawberry.field
    async def posts(self) -> list[BatchedPost]:
        rows = await all_posts()
        return [BatchedPost(id=r.id, title=r.title, author_id=r.author_id) for r in rows]


batched = strawberry.Schema(BatchedQuery, extensions=[LoaderExtension.with_statistics()])

# --- run both -------------------------------------------------------------------------------

QUERY = "{ posts { title author { name posts { title } } } }"


async def main() -> None:
    global statements
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    async with Session.begin() as session:
        for a in range(1, 11):
            session.add(AuthorRow(id=a, name=f"author {a}"))
            session.add_all(PostRow(author_id=a, title=f"post {a}.{p}") for p in range(3))

    statements = 0
    before = await n_plus_one.execute(QUERY)
    print("N+1:    ", statements, "statements")  # 61: 1 + 30 authors + 30 post lists
    assert statements == 61

    statements = 0
    after = await batched.execute(QUERY, context_value=Context(loaders=Loaders()))
    print("batched:", statements, "statements")  # 3: one per level
    assert statements == 3

    assert before.errors is None and after.errors is None
    assert before.data == after.data  # the same answer
    assert after.extensions is not None
    for name, stats in after.extensions["gqlbatch"]["loaders"].items():
        print(f"{name}: {stats['loads']} loads in {stats['batches']} batch")
    await engine.dispose()


asyncio.run(main())
