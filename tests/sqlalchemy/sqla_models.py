"""Models, data and databases for the gqlbatch.sqlalchemy tests.

Every relationship is ``lazy="raise"``: a test that touches one the fetcher did
not load fails loudly instead of querying behind the loader's back.

``open_database`` gives each test its own database: a fresh SQLite file, or a
fresh schema (on the search path) in this run's private PostgreSQL database, so
that other test modules' tables never collide with these.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import Column, ForeignKey, ForeignKeyConstraint, Table, insert, text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from gqlbatch.sqlalchemy import StatementCounter

PARENTS = 100
CHILDREN = 10
TAGS = 20


class Base(DeclarativeBase):
    pass


post_tags = Table(
    "post_tags",
    Base.metadata,
    Column("post_id", ForeignKey("posts.id"), primary_key=True),
    Column("tag_id", ForeignKey("tags.id"), primary_key=True),
)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    email: Mapped[str] = mapped_column(unique=True)
    posts: Mapped[list[Post]] = relationship(
        back_populates="author", lazy="raise", order_by="Post.id"
    )
    top_posts: Mapped[list[Post]] = relationship(
        primaryjoin="and_(User.id == Post.author_id, Post.score > 8)", viewonly=True, lazy="raise"
    )


class Post(Base):
    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    title: Mapped[str]
    score: Mapped[int]
    author: Mapped[User] = relationship(back_populates="posts", lazy="raise")
    tags: Mapped[list[Tag]] = relationship(secondary=post_tags, lazy="raise", order_by="Tag.id")
    comments: Mapped[list[Comment]] = relationship(back_populates="post", lazy="raise")


class Comment(Base):
    __tablename__ = "comments"

    id: Mapped[int] = mapped_column(primary_key=True)
    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id"), index=True)
    body: Mapped[str]
    post: Mapped[Post] = relationship(back_populates="comments", lazy="raise")


class Tag(Base):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(unique=True)


class Account(Base):
    """A composite primary key: (org, login)."""

    __tablename__ = "accounts"

    org: Mapped[str] = mapped_column(primary_key=True)
    login: Mapped[str] = mapped_column(primary_key=True)
    display: Mapped[str]
    notes: Mapped[list[Note]] = relationship(
        back_populates="account", lazy="raise", order_by="Note.id"
    )


class Note(Base):
    """A composite foreign key to Account."""

    __tablename__ = "notes"
    __table_args__ = (ForeignKeyConstraint(["org", "login"], ["accounts.org", "accounts.login"]),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org: Mapped[str]
    login: Mapped[str]
    body: Mapped[str]
    account: Mapped[Account] = relationship(back_populates="notes", lazy="raise")


class Item(Base):
    """A bare table for the 100,000-key tests."""

    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str]


@dataclass
class Database:
    kind: str
    engine: AsyncEngine
    maker: async_sessionmaker[AsyncSession]
    counter: StatementCounter


async def seed(engine: AsyncEngine) -> None:
    """100 users x 10 posts, 20 tags (2 per post), comments on every other post, accounts."""
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
        await conn.execute(
            insert(User),
            [{"id": u, "name": f"user{u}", "email": f"u{u}@example.org"} for u in range(1, 101)],
        )
        await conn.execute(
            insert(Post),
            [
                {
                    "id": (u - 1) * CHILDREN + n,
                    "author_id": u,
                    "title": f"post {u}.{n}",
                    "score": (u * 7 + n * 3) % 11,
                }
                for u in range(1, PARENTS + 1)
                for n in range(1, CHILDREN + 1)
            ],
        )
        await conn.execute(insert(Tag), [{"id": t, "name": f"tag{t}"} for t in range(1, TAGS + 1)])
        await conn.execute(
            post_tags.insert(),
            [
                {"post_id": p, "tag_id": t}
                for p in range(1, PARENTS * CHILDREN + 1)
                for t in {p % TAGS + 1, (p * 3) % TAGS + 1}
            ],
        )
        await conn.execute(
            insert(Comment),
            [
                {"id": p, "post_id": p, "body": f"on {p}"}
                for p in range(1, PARENTS * CHILDREN + 1, 2)
            ],
        )
        await conn.execute(
            insert(Account),
            [
                {"org": org, "login": login, "display": f"{login}@{org}"}
                for org in ("acme", "initech")
                for login in ("ann", "bob")
            ],
        )
        await conn.execute(
            insert(Note),
            [
                {"id": 1, "org": "acme", "login": "ann", "body": "a1"},
                {"id": 2, "org": "acme", "login": "ann", "body": "a2"},
                {"id": 3, "org": "initech", "login": "bob", "body": "b1"},
            ],
        )


@asynccontextmanager
async def open_database(
    kind: str, url: str, *, seeded: bool = True, **engine_options: object
) -> AsyncIterator[Database]:
    """A seeded database of ``kind`` ("sqlite" or "postgres") private to one test."""
    schema = None
    options: dict[str, object] = dict(engine_options)
    if kind == "postgres":
        schema = f"sqla_{uuid.uuid4().hex[:12]}"
        admin = create_async_engine(url)
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await admin.dispose()
        options["connect_args"] = {"server_settings": {"search_path": schema}}
    engine = create_async_engine(url, **options)
    counter = StatementCounter(engine)
    try:
        if seeded:
            await seed(engine)
        else:
            async with engine.begin() as conn:
                await conn.run_sync(Base.metadata.create_all)
        yield Database(kind, engine, async_sessionmaker(engine), counter)
    finally:
        counter.close()
        await engine.dispose()
        if schema is not None:
            admin = create_async_engine(url)
            async with admin.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            await admin.dispose()


def sqlite_variable_limit() -> int:
    """SQLITE_LIMIT_VARIABLE_NUMBER of the SQLite library this Python links."""
    probe = sqlite3.connect(":memory:")
    try:
        return probe.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    finally:
        probe.close()
