"""The registry over gqlbatch.sqlalchemy fetchers, with SQL statements in the statistics."""

from __future__ import annotations

import asyncio
import json

import strawberry
from sqlalchemy import ForeignKey, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import StaticPool

from gqlbatch.sqlalchemy import PerBatchSessions, StatementCounter, by_column, by_group
from gqlbatch.strawberry import Context, LoaderExtension, LoaderRegistry, loader


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


class Loaders(LoaderRegistry):
    author = loader(by_column(AuthorRow.id))  # key_type=int comes from the column
    latest_posts = loader(by_group(PostRow.author_id, order_by=PostRow.id.desc(), limit=2))


Info = strawberry.Info[Context[Loaders], None]


@strawberry.type
class Post:
    title: str
    author_id: strawberry.Private[int]

    @strawberry.field
    async def author(self, info: Info) -> str:
        author = await info.context.loaders.author.load(self.author_id)
        return author.name if author else "(deleted)"


@strawberry.type
class Author:
    id: int
    name: str

    @strawberry.field
    async def latest_posts(self, info: Info) -> list[Post]:
        rows = await info.context.loaders.latest_posts.load(self.id)
        return [Post(title=r.title, author_id=r.author_id) for r in rows]


@strawberry.type
class Query:
    @strawberry.field
    async def authors(self, info: Info) -> list[Author]:
        async with info.context.sessions.session() as session:
            rows = await session.scalars(select(AuthorRow).order_by(AuthorRow.id))
            return [Author(id=r.id, name=r.name) for r in rows]


schema = strawberry.Schema(Query, extensions=[LoaderExtension.with_statistics()])


async def main() -> None:
    engine = create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)
    maker = async_sessionmaker(engine)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    async with maker.begin() as session:
        for a in range(1, 6):
            session.add(AuthorRow(id=a, name=f"author {a}"))
            session.add_all(PostRow(author_id=a, title=f"post {a}.{p}") for p in range(4))

    with StatementCounter(engine) as counter:
        # What GraphQL(schema, registry=Loaders, sessions=..., statements=counter) builds
        # for each HTTP request:
        sessions = PerBatchSessions(maker)
        context = Context(loaders=Loaders(sessions=sessions, statements=counter))
        result = await schema.execute(
            "{ authors { name latestPosts { title author } } }", context_value=context
        )
    assert result.errors is None and result.data is not None
    print(result.data["authors"][0])
    print(json.dumps(result.extensions, indent=1))
    assert result.extensions is not None
    assert result.extensions["gqlbatch"]["sql_statements"] == 3  # authors, posts, their authors
    await engine.dispose()


asyncio.run(main())
