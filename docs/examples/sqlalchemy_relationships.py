"""From relationships: many-to-one, one-to-many, many-to-many, keys read from the mapper."""

import asyncio

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy_models import Post, User, example_database, print_sql

from gqlbatch.sqlalchemy import StatementCounter, by_column, by_relationship

AUTHOR = by_relationship(Post.author)  # many-to-one: keyed by post.author_id
POSTS = by_relationship(User.posts)  # one-to-many: keyed by user.id
TAGS = by_relationship(Post.tags)  # many-to-many through post_tags: keyed by post.id


async def main() -> None:
    async with example_database() as engine:
        sessions = async_sessionmaker(engine)
        counter = StatementCounter(engine)
        posts = await by_column(Post.id).bind(sessions)([10, 11, 20])
        author, tags = AUTHOR.loader(sessions), TAGS.loader(sessions)

        for loader_name, load in [
            ("Post.author", lambda p: author.load(AUTHOR.key_for(p))),
            ("Post.tags", lambda p: tags.load(TAGS.key_for(p))),
        ]:
            with counter.scope() as sql:
                results = await asyncio.gather(*(load(p) for p in posts.values()))
            print(loader_name, "->", results_text(results))
            print_sql(sql)

        user_posts = POSTS.loader(sessions)
        with counter.scope() as sql:
            results = await user_posts.load_many([1, 2, 3])
        print("User.posts ->", results_text(results))
        print_sql(sql)
        counter.close()


def results_text(results: list[object]) -> object:
    def text(value: object) -> object:
        if isinstance(value, list):
            return [text(v) for v in value]
        return getattr(value, "name", None) or getattr(value, "title", None)

    return [text(r) for r in results]


asyncio.run(main())
