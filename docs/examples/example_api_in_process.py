"""The example API in-process: a temporary SQLite database, the four-level query, its statistics."""

from __future__ import annotations

import asyncio
import tempfile

import httpx
from starlette.applications import Starlette

from example_api import migrations
from example_api.app import create_app
from example_api.db import create_engine
from example_api.seed import SeedPlan, seed
from example_api.settings import Settings

QUERY = """{ users(limit: 10) { id name posts(limit: 5) { id title
  comments(limit: 5) { id author { id name } } tags { name } } } }"""


async def main(app: Starlette, url: str) -> None:
    engine = create_engine(url)
    await migrations.upgrade(engine)  # the server would do it on start, too
    await seed(engine, SeedPlan(users=20, seed=1))
    await engine.dispose()

    async with app.router.lifespan_context(app):  # start-up, then graceful shutdown
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            body = (await client.post("/graphql", json={"query": QUERY})).json()

    users = body["data"]["users"]
    posts = sum(len(u["posts"]) for u in users)
    comments = sum(len(p["comments"]) for u in users for p in u["posts"])
    stats = body["extensions"]["gqlbatch"]
    print(f"{len(users)} users, {posts} posts, {comments} comments")
    print("SQL statements:", stats["sql_statements"])  # 5: one per relation, not one per row
    for name, loader in stats["loaders"].items():
        print(f"  {name:<17} {loader['loads']:>4} loads -> {loader['batches']} batch")
    assert stats["sql_statements"] == 5


with tempfile.TemporaryDirectory() as folder:
    database_url = f"sqlite+aiosqlite:///{folder}/blog.db"
    # Building the schema takes a moment: do it before the event loop runs.
    asgi_app = create_app(Settings(database_url=database_url, debug=True))
    asyncio.run(main(asgi_app, database_url))
