"""Deterministic fake data: the same arguments always write the same rows.

``python -m example_api seed --users 100 --seed 7`` writes 100 users, their
posts, comments by random users, and tags, all drawn from ``random.Random(7)``,
with explicit ids and timestamps so that two databases seeded alike are equal.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from example_api.models import Comment, Post, Tag, User, post_tags

__all__ = ["SeedPlan", "SeedReport", "is_empty", "rows_for", "seed"]

_FIRST = [
    "Ada",
    "Alan",
    "Barbara",
    "Brian",
    "Claude",
    "Dennis",
    "Donald",
    "Edsger",
    "Frances",
    "Grace",
    "Guido",
    "Hedy",
    "John",
    "Ken",
    "Leslie",
    "Linus",
    "Margaret",
    "Niklaus",
    "Radia",
    "Rob",
    "Shafi",
    "Sophie",
    "Tim",
    "Barbara",
    "Whitfield",
    "Yukihiro",
]
_LAST = [
    "Lovelace",
    "Turing",
    "Liskov",
    "Kernighan",
    "Shannon",
    "Ritchie",
    "Knuth",
    "Dijkstra",
    "Allen",
    "Hopper",
    "Rossum",
    "Lamarr",
    "McCarthy",
    "Thompson",
    "Lamport",
    "Torvalds",
    "Hamilton",
    "Wirth",
    "Perlman",
    "Pike",
    "Goldwasser",
    "Wilson",
    "Berners-Lee",
    "Diffie",
    "Matsumoto",
]
_WORDS = [
    "batch",
    "loader",
    "query",
    "cache",
    "key",
    "graph",
    "schema",
    "resolver",
    "latency",
    "index",
    "join",
    "window",
    "queue",
    "retry",
    "backoff",
    "tail",
    "p99",
    "async",
    "event",
    "loop",
    "future",
    "deadline",
    "shard",
    "replica",
    "vacuum",
    "plan",
    "cursor",
    "page",
    "limit",
    "offset",
    "tuple",
    "merge",
    "hash",
    "sort",
    "scan",
    "bloom",
    "filter",
]
_TAGS = [
    "python",
    "graphql",
    "sqlalchemy",
    "postgres",
    "sqlite",
    "performance",
    "async",
    "testing",
    "design",
    "databases",
    "caching",
    "http",
    "security",
    "observability",
    "tutorial",
    "opinion",
    "release",
    "howto",
    "internals",
    "benchmark",
]
_EPOCH = datetime(2024, 1, 1)
_CHUNK = 2000


@dataclass(frozen=True, slots=True, kw_only=True)
class SeedPlan:
    """How much to write. Counts per parent are drawn uniformly from 0 to twice the mean."""

    users: int = 50
    """Default 50. Users to write."""
    posts_per_user: int = 5
    """Default 5. Mean posts per user."""
    comments_per_post: int = 5
    """Default 5. Mean comments per post."""
    tags: int = 20
    """Default 20. Distinct tags; each post carries up to 3."""
    seed: int = 1
    """Default 1. Seed of the random generator: same seed, same rows."""

    def __post_init__(self) -> None:
        for name in ("users", "posts_per_user", "comments_per_post", "tags"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class SeedReport:
    """How many rows :func:`seed` wrote."""

    users: int
    posts: int
    comments: int
    tags: int
    post_tags: int


def rows_for(plan: SeedPlan) -> dict[str, list[dict[str, Any]]]:
    """The rows :func:`seed` writes for ``plan``, by table name, without writing them."""
    rng = random.Random(plan.seed)
    tag_names = [
        _TAGS[i % len(_TAGS)] + ("" if i < len(_TAGS) else f"-{i}") for i in range(plan.tags)
    ]
    tags = [{"id": i + 1, "name": name} for i, name in enumerate(tag_names)]
    users: list[dict[str, Any]] = []
    posts: list[dict[str, Any]] = []
    comments: list[dict[str, Any]] = []
    links: list[dict[str, Any]] = []
    for uid in range(1, plan.users + 1):
        name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        created = _EPOCH + timedelta(minutes=uid)
        email = f"{name.lower().replace(' ', '.')}.{uid}@example.com"
        users.append({"id": uid, "name": name, "email": email, "created_at": created})
    for user in users:
        for _ in range(rng.randint(0, 2 * plan.posts_per_user)):
            pid = len(posts) + 1
            words = rng.sample(_WORDS, 4)
            posts.append(
                {
                    "id": pid,
                    "author_id": user["id"],
                    "title": " ".join(words).capitalize(),
                    "body": " ".join(rng.choices(_WORDS, k=30)),
                    "view_count": 0,
                    "created_at": user["created_at"] + timedelta(hours=pid),
                }
            )
            for tag_id in sorted(
                rng.sample(range(1, plan.tags + 1), min(plan.tags, rng.randint(0, 3)))
            ):
                links.append({"post_id": pid, "tag_id": tag_id})
    for post in posts:
        for _ in range(rng.randint(0, 2 * plan.comments_per_post)):
            cid = len(comments) + 1
            comments.append(
                {
                    "id": cid,
                    "post_id": post["id"],
                    "author_id": rng.randint(1, plan.users),
                    "body": " ".join(rng.choices(_WORDS, k=12)),
                    "created_at": post["created_at"] + timedelta(minutes=cid % 1000),
                }
            )
    return {"users": users, "tags": tags, "posts": posts, "post_tags": links, "comments": comments}


async def is_empty(engine: AsyncEngine) -> bool:
    """Whether the database holds no user yet."""
    async with engine.connect() as connection:
        return (await connection.scalar(select(func.count()).select_from(User))) == 0


async def seed(
    engine: AsyncEngine, plan: SeedPlan = SeedPlan(), *, reset: bool = False
) -> SeedReport:
    """Write ``plan``'s rows in one transaction; with ``reset``, delete every row first.

    Raises ValueError when the database already holds users and ``reset`` is
    False: seeding twice would collide on ids.
    """
    rows = rows_for(plan)
    tables: tuple[Table, ...] = (
        User.__table__,  # type: ignore[assignment]  # a mapped class's Table, typed FromClause
        Tag.__table__,
        Post.__table__,
        post_tags,
        Comment.__table__,
    )
    async with engine.begin() as connection:
        if reset:
            for table in reversed(tables):
                await connection.execute(delete(table))
        elif await connection.scalar(select(func.count()).select_from(User)):
            raise ValueError("the database already holds users; seed with reset=True (--reset)")
        for table in tables:
            data = rows[table.name]
            for start in range(0, len(data), _CHUNK):
                await connection.execute(insert(table), data[start : start + _CHUNK])
        await _advance_sequences(connection)
    return SeedReport(
        users=len(rows["users"]),
        posts=len(rows["posts"]),
        comments=len(rows["comments"]),
        tags=len(rows["tags"]),
        post_tags=len(rows["post_tags"]),
    )


async def _advance_sequences(connection: AsyncConnection) -> None:
    """PostgreSQL: move each id sequence past the explicit ids, so inserts keep working."""
    if connection.dialect.name != "postgresql":
        return
    for table in ("users", "posts", "comments", "tags"):
        await connection.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"COALESCE((SELECT max(id) FROM {table}), 0) + 1, false)"
            )
        )
