import asyncio

import strawberry
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from gqlbatch.sqlalchemy import PerBatchSessions, by_column
from gqlbatch.strawberry import Context, GraphQL, LoaderExtension, LoaderRegistry, loader


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class Loaders(LoaderRegistry):
    user = loader(by_column(User.id))  # one SELECT ... WHERE id IN (...) per batch


@strawberry.type
class Query:
    @strawberry.field
    async def name(self, info: strawberry.Info, id: int) -> str | None:
        user = await info.context.loaders.user.load(id)
        return user.name if user else None


engine = create_async_engine("sqlite+aiosqlite:///quickstart.db")
maker = async_sessionmaker(engine)
schema = strawberry.Schema(Query, extensions=[LoaderExtension.with_statistics()])
app = GraphQL(schema, registry=Loaders, sessions=PerBatchSessions(maker))  # an ASGI app


async def main() -> None:
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.drop_all)
        await connection.run_sync(Base.metadata.create_all)
    async with maker.begin() as session:
        session.add_all([User(id=1, name="ada"), User(id=2, name="grace")])
    query = "{ a: name(id: 1) b: name(id: 2) c: name(id: 1) d: name(id: 99) }"
    context = Context(loaders=Loaders(sessions=PerBatchSessions(maker)))
    result = await schema.execute(query, context_value=context)
    print(result.data)  # {'a': 'ada', 'b': 'grace', 'c': 'ada', 'd': None}
    print(result.extensions)  # the user loader: 4 loads, 1 batch, 3 keys
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
