"""loader_field: fields that read a loader, synchronously when the value is known."""

from __future__ import annotations

import asyncio

import strawberry
from sqlalchemy import ForeignKey, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import StaticPool

from gqlbatch.sqlalchemy import PerBatchSessions, StatementCounter, by_column, by_group
from gqlbatch.strawberry import Context, LoaderExtension, LoaderRegistry, loader, loader_field


class Base(DeclarativeBase):
    pass


class UserRow(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class PostRow(Base):
    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    editor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    title: Mapped[str]


class Loaders(LoaderRegistry):
    user = loader(by_column(UserRow.id))  # KeyedLoader[int, UserRow | None]
    posts = loader(by_group(PostRow.author_id, order_by=PostRow.id))  # lists of posts


Info = strawberry.Info[Context[Loaders], None]


# The resolvers receive the ORM rows themselves: their attributes are the fields.
@strawberry.type
class Post:
    id: int
    title: str
    author: User = loader_field(Loaders.user, key="author_id")
    editor: User | None = loader_field(Loaders.user, key="editor_id")  # null: no load


@strawberry.type
class User:
    id: int
    name: str
    posts: list[Post] = loader_field(Loaders.posts, key="id", description="oldest first")


@strawberry.type
class Query:
    @strawberry.field
    async def users(self, info: Info) -> list[User]:
        async with info.context.sessions.session() as session:
            rows = list(await session.scalars(select(UserRow).order_by(UserRow.id)))
        # The rows are in hand: every later read of a user by id is free and synchronous.
        info.context.loaders.user.prime_many({row.id: row for row in rows})
        return rows  # the rows serve as Users


schema = strawberry.Schema(Query, extensions=[LoaderExtension.with_statistics()])
QUERY = "{ users { name posts { title author { name } editor { name } } } }"


async def main() -> None:
    engine = create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)
    maker = async_sessionmaker(engine)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    async with maker.begin() as session:
        session.add_all(UserRow(id=u, name=f"user {u}") for u in range(1, 6))
        session.add_all(
            PostRow(author_id=u, editor_id=u % 5 + 1 if p else None, title=f"post {u}.{p}")
            for u in range(1, 6)
            for p in range(2)
        )

    with StatementCounter(engine) as counter:
        context = Context(loaders=Loaders(sessions=PerBatchSessions(maker), statements=counter))
        result = await schema.execute(QUERY, context_value=context)
    assert result.errors is None and result.data is not None
    print(result.data["users"][0])
    assert result.extensions is not None
    statistics = result.extensions["gqlbatch"]
    print("statements:", statistics["sql_statements"])  # users, then posts: authors were primed
    assert statistics["sql_statements"] == 2
    assert statistics["loaders"]["user"]["batches"] == 0
    await engine.dispose()


asyncio.run(main())
