"""gqlbatch.strawberry with gqlbatch.sqlalchemy fetchers, on SQLite and PostgreSQL.

Through ``schema.execute`` and through the ASGI app served by uvicorn on
loopback, counting the SQL statements each request runs.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import strawberry
import uvicorn
from sqlalchemy import select, update

from gqlbatch.sqlalchemy import SharedSession, by_column, by_group, by_relationship
from gqlbatch.strawberry import (
    Context,
    GraphQL,
    LoaderExtension,
    LoaderRegistry,
    loader,
    write_through,
)
from tests.sqlalchemy.sqla_models import Database
from tests.sqlalchemy.sqla_models import Post as PostRow
from tests.sqlalchemy.sqla_models import User as UserRow

pytest_plugins = ["tests.sqlalchemy.sqla_fixtures"]  # the db fixture: SQLite and PostgreSQL


class Loaders(LoaderRegistry):
    user = loader(by_column(UserRow.id))
    posts = loader(by_group(PostRow.author_id, order_by=PostRow.id, limit=3))
    tags = loader(by_relationship(PostRow.tags))


Info = strawberry.Info[Context[Loaders], None]


@strawberry.type
class Tag:
    name: str


@strawberry.type
class Post:
    id: int
    title: str
    author_id: strawberry.Private[int]

    @strawberry.field
    async def author(self, info: Info) -> User:
        for _ in range(self.id % 4):  # resolvers that await before loading
            await asyncio.sleep(0)
        row = await info.context.loaders.user.load(self.author_id)
        return User.of(row)

    @strawberry.field
    async def tags(self, info: Info) -> list[Tag]:
        rows = await info.context.loaders.tags.load(self.id)
        assert rows is not None  # a many-rows fetcher gives every key a list
        return [Tag(name=t.name) for t in rows]


@strawberry.type
class User:
    id: int
    name: str

    @staticmethod
    def of(row: Any) -> User:
        return User(id=row.id, name=row.name)

    @strawberry.field
    async def posts(self, info: Info) -> list[Post]:
        rows = await info.context.loaders.posts.load(self.id)
        assert rows is not None  # a many-rows fetcher gives every key a list
        return [Post(id=r.id, title=r.title, author_id=r.author_id) for r in rows]

    @strawberry.field
    async def again(self, info: Info) -> User:
        return User.of(await info.context.loaders.user.load(self.id))


async def _users(info: Info, first: int) -> list[User]:
    sessions = info.context.sessions
    async with sessions.session() as session:
        rows = await session.scalars(select(UserRow).order_by(UserRow.id).limit(first))
        return [User.of(r) for r in rows]


@strawberry.type
class Query:
    @strawberry.field
    async def users(self, info: Info, first: int = 100) -> list[User]:
        return await _users(info, first)

    @strawberry.field
    async def user(self, info: Info, id: int) -> User | None:
        row = await info.context.loaders.user.load(id)
        return User.of(row) if row else None


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def rename(self, info: Info, id: int, name: str) -> User:
        loaders = info.context.loaders
        before = await loaders.user.load(id)  # cached now
        assert before is not None
        async with info.context.sessions.session() as session:
            await session.execute(update(UserRow).where(UserRow.id == id).values(name=name))
            await session.commit()
            after = await session.get_one(UserRow, id, populate_existing=True)
        write_through(loaders.user, id, after)
        return User.of(after)


schema = strawberry.Schema(Query, Mutation, extensions=[LoaderExtension.with_statistics()])

DEEP = "{ users { name posts { title author { name } tags { name } } } }"


def _context(db: Database) -> Context[Loaders]:
    from gqlbatch.sqlalchemy import PerBatchSessions

    sessions = PerBatchSessions(db.maker)
    return Context(loaders=Loaders(sessions=sessions, statements=db.counter))


def _check_deep(data: dict[str, Any]) -> None:
    users = data["users"]
    assert len(users) == 100
    first = users[0]
    assert first["name"] == "user1"
    assert [p["title"] for p in first["posts"]] == ["post 1.1", "post 1.2", "post 1.3"]
    assert {p["author"]["name"] for p in first["posts"]} == {"user1"}
    assert all(len(p["tags"]) == 2 for u in users for p in u["posts"])


async def test_a_deep_query_runs_one_statement_per_loader_per_level(db: Database) -> None:
    with db.counter.scope() as sql:
        result = await schema.execute(DEEP, context_value=_context(db))
    assert result.errors is None, result.errors
    assert result.data is not None
    _check_deep(result.data)
    # users (the root query) + posts + authors + tags: 4 statements for 100 users,
    # 300 posts and their authors and tags; per field it would be 1 + 100 + 300 + 300
    assert sql.count == 4
    assert result.extensions is not None
    report = result.extensions["gqlbatch"]
    assert report["sql_statements"] == 4
    assert {name: s["sql_statements"] for name, s in report["loaders"].items()} == {
        "posts": 1,
        "user": 1,
        "tags": 1,
    }
    assert {name: s["batches"] for name, s in report["loaders"].items()} == {
        "posts": 1,
        "user": 1,
        "tags": 1,
    }
    assert report["loaders"]["posts"]["largest_batch"] == 100


async def test_a_mutation_response_shows_what_it_wrote(db: Database) -> None:
    query = 'mutation { rename(id: 5, name: "renamed") { name again { name } } }'
    result = await schema.execute(query, context_value=_context(db))
    assert result.errors is None, result.errors
    assert result.data == {"rename": {"name": "renamed", "again": {"name": "renamed"}}}
    after = await schema.execute("{ user(id: 5) { name } }", context_value=_context(db))
    assert after.data == {"user": {"name": "renamed"}}


@asynccontextmanager
async def serve(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Serve ``app`` with uvicorn on a free loopback port, on this event loop."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", ws="none"
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):  # bounded
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)


async def test_concurrent_http_requests_each_batch_and_count_their_own_statements(
    db: Database,
) -> None:
    app = GraphQL(
        schema,
        registry=Loaders,
        sessions_factory=lambda: SharedSession(db.maker),  # one session per request
        statements=db.counter,
    )
    async with serve(app) as client:

        async def ask(user_id: int) -> dict[str, Any]:
            query = "query ($id: Int!) { user(id: $id) { name posts { author { name } } } }"
            response = await client.post(
                "/graphql", json={"query": query, "variables": {"id": user_id}}
            )
            assert response.status_code == 200
            body: dict[str, Any] = response.json()
            return body

        bodies = await asyncio.gather(*(ask(i) for i in range(1, 11)))
        deep = await client.post("/graphql", json={"query": DEEP})

    for user_id, body in enumerate(bodies, start=1):
        assert "errors" not in body, body
        user = body["data"]["user"]
        assert user["name"] == f"user{user_id}"
        assert {p["author"]["name"] for p in user["posts"]} == {f"user{user_id}"}
        # user, then posts; the authors were cached by this request's own first load
        assert body["extensions"]["gqlbatch"]["sql_statements"] == 2
        assert body["extensions"]["gqlbatch"]["loaders"]["user"]["cache_hits"] == 3
    deep_body = deep.json()
    _check_deep(deep_body["data"])
    assert deep_body["extensions"]["gqlbatch"]["sql_statements"] == 4
