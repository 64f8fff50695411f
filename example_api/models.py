"""SQLAlchemy models of the blog: users write posts, comment on posts, posts carry tags.

Every relationship is ``lazy="raise"``: touching one outside a loader is a bug
the example must never hide, so it fails loudly instead of running a query.
Every foreign key column leads an index (the many-to-many table's primary key
covers ``post_id``), because each loader selects children by their parent's key.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = ["Base", "Comment", "Post", "Tag", "User", "metadata", "post_tags"]

# Constraint names spelled out so that migrations name them the same way on
# every database (SQLite and PostgreSQL would otherwise pick differently).
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class Base(DeclarativeBase):
    """Declarative base bound to :data:`metadata`."""

    metadata = metadata


post_tags = Table(
    "post_tags",
    metadata,
    Column("post_id", ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True),
    Index(None, "tag_id"),
)
"""Which tags a post carries; the primary key (post_id, tag_id) indexes post_id."""


class User(Base):
    """Someone who writes posts and comments."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(), server_default=text("CURRENT_TIMESTAMP")
    )

    posts: Mapped[list[Post]] = relationship(
        back_populates="author", lazy="raise", order_by="Post.id"
    )
    comments: Mapped[list[Comment]] = relationship(
        back_populates="author", lazy="raise", order_by="Comment.id"
    )


class Post(Base):
    """A post, written by one user, with comments and tags."""

    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text, default="")
    view_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(
        DateTime(), server_default=text("CURRENT_TIMESTAMP")
    )

    author: Mapped[User] = relationship(back_populates="posts", lazy="raise")
    comments: Mapped[list[Comment]] = relationship(
        back_populates="post", lazy="raise", order_by="Comment.id"
    )
    tags: Mapped[list[Tag]] = relationship(
        secondary=post_tags, back_populates="posts", lazy="raise", order_by="Tag.name"
    )


class Comment(Base):
    """A comment by one user on one post."""

    __tablename__ = "comments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), index=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(), server_default=text("CURRENT_TIMESTAMP")
    )

    post: Mapped[Post] = relationship(back_populates="comments", lazy="raise")
    author: Mapped[User] = relationship(back_populates="comments", lazy="raise")


class Tag(Base):
    """A label that any number of posts carry."""

    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)

    posts: Mapped[list[Post]] = relationship(
        secondary=post_tags, back_populates="tags", lazy="raise", order_by="Post.id"
    )
