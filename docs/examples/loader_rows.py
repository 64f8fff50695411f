"""Rows instead of a mapping: key_of, many=True, missing="error"."""

import asyncio
from dataclasses import dataclass

from gqlbatch import KeyedLoader, MissingKeyError


@dataclass
class Post:
    id: int
    author_id: int
    title: str


POSTS = [Post(1, 10, "a"), Post(2, 11, "b"), Post(3, 10, "c")]


async def posts_by_id(ids: list[int]) -> list[Post]:
    return [p for p in POSTS if p.id in ids]


async def posts_by_author(author_ids: list[int]) -> list[Post]:
    return [p for p in POSTS if p.author_id in author_ids]


async def main() -> None:
    post = KeyedLoader(posts_by_id, key_of=lambda p: p.id, missing="error", name="post")
    by_author = KeyedLoader(posts_by_author, key_of=lambda p: p.author_id, many=True)

    print(await post.load(2))
    try:
        await post.load(42)
    except MissingKeyError as error:
        print("error:", error)
    lists = await by_author.load_many([10, 11, 12])
    print([[p.title for p in posts] for posts in lists])  # [['a', 'c'], ['b'], []]
    assert [len(posts) for posts in lists] == [2, 1, 0]


asyncio.run(main())
