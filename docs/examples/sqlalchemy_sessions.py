"""Sessions: fetchers declared once, bound per request; per-batch sessions or one shared."""

import asyncio
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy_models import Post, User, example_database

from gqlbatch import KeyedLoader
from gqlbatch.sqlalchemy import (
    PerBatchSessions,
    SharedSession,
    StatementCounter,
    by_column,
    by_relationship,
)


class Fetchers:
    """Declarations, unbound: they live at module level and hold no session."""

    user = by_column(User.id)
    posts = by_relationship(User.posts)
    tags = by_relationship(Post.tags)


@dataclass
class Loaders:
    """One request's loaders, each bound to that request's session source."""

    user: KeyedLoader[int, Any]
    posts: KeyedLoader[int, Any]
    tags: KeyedLoader[int, Any]

    @classmethod
    def for_request(cls, sessions: PerBatchSessions | SharedSession) -> "Loaders":
        return cls(
            user=Fetchers.user.loader(sessions),
            posts=Fetchers.posts.loader(sessions),
            tags=Fetchers.tags.loader(sessions),
        )


async def resolve(loaders: Loaders, user_id: int) -> dict[str, Any]:
    """A resolver tree: user -> posts -> tags, each level one batch per loader."""
    user = await loaders.user.load(user_id)
    posts = await loaders.posts.load(user.id)
    tags = await loaders.tags.load_many([Fetchers.tags.key_for(p) for p in posts])
    return {"user": user, "posts": posts, "tags": tags}


async def request(engine: AsyncEngine, counter: StatementCounter, sessions: Any) -> None:
    loaders = Loaders.for_request(sessions)
    with counter.scope() as sql:
        results = await asyncio.gather(resolve(loaders, 1), resolve(loaders, 2))
    if isinstance(sessions, SharedSession):
        print("  connections held during the request:", engine.pool.checkedout())
        await sessions.aclose()  # at the end of every request
    print(f"  {sql.count} statements;", "connections still out:", engine.pool.checkedout())
    ada = results[0]["user"]
    print("  after the request:", ada.name, ada.email, [p.title for p in results[0]["posts"]])
    try:
        print(ada.posts)  # not loaded by the user loader: lazy="raise" makes that loud
    except InvalidRequestError as error:
        print("  InvalidRequestError:", str(error).split(";")[0])


async def main() -> None:
    async with example_database() as engine:
        counter = StatementCounter(engine)
        maker = async_sessionmaker(engine)
        print("PerBatchSessions (the default; a bare async_sessionmaker means this):")
        await request(engine, counter, PerBatchSessions(maker))
        print("SharedSession (one session per request, batches take turns):")
        await request(engine, counter, SharedSession(maker))
        counter.close()


asyncio.run(main())
