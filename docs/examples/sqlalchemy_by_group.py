"""Many rows per key: by_group with an extra filter, an order and a per-key limit in SQL."""

import asyncio

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy_models import Post, example_database, print_sql

from gqlbatch.sqlalchemy import StatementCounter, by_group


async def main() -> None:
    async with example_database() as engine:
        sessions = async_sessionmaker(engine)
        counter = StatementCounter(engine)

        # Each author's two latest published posts; every author gets a list.
        latest = by_group(
            Post.author_id, where=Post.published, order_by=Post.id.desc(), limit=2
        ).loader(sessions)
        with counter.scope() as sql:
            lists = await latest.load_many([1, 2, 3])
        print([[p.title for p in posts] for posts in lists])
        print_sql(sql)
        counter.close()


asyncio.run(main())
