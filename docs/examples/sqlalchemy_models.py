"""The models and data of the SQLAlchemy examples, and a helper that prints the SQL sent.

Every relationship is lazy="raise": a relationship the loaders did not load fails
loudly instead of querying behind their back. Run an example against PostgreSQL
with DATABASE_URL=postgresql+asyncpg://user@host/db (it creates and drops its tables).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import Column, ForeignKey, Table
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from gqlbatch.sqlalchemy import StatementScope


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


class Post(Base):
    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    title: Mapped[str]
    published: Mapped[bool] = mapped_column(default=True)
    author: Mapped[User] = relationship(back_populates="posts", lazy="raise")
    tags: Mapped[list[Tag]] = relationship(secondary=post_tags, lazy="raise", order_by="Tag.id")


class Tag(Base):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class Membership(Base):
    """A composite primary key."""

    __tablename__ = "memberships"

    org: Mapped[str] = mapped_column(primary_key=True)
    login: Mapped[str] = mapped_column(primary_key=True)
    role: Mapped[str]


@asynccontextmanager
async def example_database() -> AsyncIterator[AsyncEngine]:
    """A seeded database: a temporary SQLite file, or DATABASE_URL if set."""
    with tempfile.TemporaryDirectory() as directory:
        url = os.environ.get("DATABASE_URL") or f"sqlite+aiosqlite:///{directory}/example.db"
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.drop_all)
            await conn.run_sync(Base.metadata.create_all)
            await conn.execute(
                User.__table__.insert(),
                [
                    {"id": 1, "name": "ada", "email": "ada@example.org"},
                    {"id": 2, "name": "grace", "email": "grace@example.org"},
                    {"id": 3, "name": "linus", "email": "linus@example.org"},
                ],
            )
            await conn.execute(
                Post.__table__.insert(),
                [
                    {"id": 10, "author_id": 1, "title": "Notes on the engine", "published": True},
                    {"id": 11, "author_id": 1, "title": "Bernoulli numbers", "published": True},
                    {"id": 12, "author_id": 1, "title": "Draft", "published": False},
                    {"id": 20, "author_id": 2, "title": "COBOL", "published": True},
                ],
            )
            await conn.execute(Tag.__table__.insert(), [{"id": 1, "name": "math"}])
            await conn.execute(Tag.__table__.insert(), [{"id": 2, "name": "history"}])
            await conn.execute(
                post_tags.insert(),
                [
                    {"post_id": 10, "tag_id": 2},
                    {"post_id": 11, "tag_id": 1},
                    {"post_id": 11, "tag_id": 2},
                ],
            )
            await conn.execute(
                Membership.__table__.insert(),
                [
                    {"org": "acme", "login": "ada", "role": "owner"},
                    {"org": "acme", "login": "grace", "role": "member"},
                ],
            )
        try:
            yield engine
        finally:
            async with engine.begin() as conn:
                await conn.run_sync(Base.metadata.drop_all)
            await engine.dispose()


def print_sql(scope: StatementScope) -> None:
    """Print each statement the scope saw, as sent to the driver, with its parameters."""
    for statement, parameters in zip(scope.statements, scope.parameters, strict=True):
        print("\n".join(line.rstrip() for line in statement.splitlines()))
        print(f"-- parameters: {parameters!r}")
