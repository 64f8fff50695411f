"""The per-request loaders: every relation of the schema is read through one of these.

A :class:`Loaders` object is made for each GraphQL request. Its loaders
batch the keys that resolvers ask for at the same moment into one SQL
statement per loader, whatever the number of parents:

* ``user``, ``post``: one row per id (``WHERE id IN (...)``);
* ``posts_of_user``, ``comments_of_post``, ``tags_of_post``, ``posts_of_tag``:
  the children of many parents at once, with the page (``limit``/``offset``)
  applied **per parent in SQL** by a ``row_number()`` window partitioned by the
  parent key, so a parent with 10,000 comments never sends 10,000 rows.

Each page (limit, offset) is its own loader, made on first use and kept for
the rest of the request, so equal pages share batches and caches. Every fetch
opens its own session: batches of different loaders run concurrently, and an
``AsyncSession`` must not be shared between concurrent tasks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from example_api.metrics import Metrics
from example_api.models import Base, Comment, Post, Tag, User, post_tags
from gqlbatch import KeyedLoader, LoaderStats

__all__ = ["Loaders", "Page"]

M = TypeVar("M", bound=Base)
Sessions = async_sessionmaker[AsyncSession]


@dataclass(frozen=True, slots=True)
class Page:
    """A window of a list: at most ``limit`` items after skipping ``offset``."""

    limit: int
    offset: int = 0


def _windowed(
    stmt_for: Callable[[ColumnElement[int]], Select[Any]],
    model: type[M],
    parent: ColumnElement[int],
    order_by: Sequence[ColumnElement[Any]],
    page: Page,
) -> Select[Any]:
    """``stmt_for(row_number)``'s rows numbered per parent, cut to ``page`` in SQL.

    ``stmt_for`` receives the ``row_number() OVER (PARTITION BY parent ORDER BY
    ...)`` column to add to its select list; the outer query keeps rows whose
    number falls inside the page and maps them back to ``model``.
    """
    number = func.row_number().over(partition_by=parent, order_by=order_by).label("rn")
    inner = stmt_for(number).subquery("paged")
    row = aliased(model, inner)
    return (
        select(inner.c.parent_key, row)
        .where(inner.c.rn > page.offset, inner.c.rn <= page.offset + page.limit)
        .order_by(inner.c.parent_key, inner.c.rn)
    )


async def _grouped(
    sessions: Sessions, stmt: Select[Any], keys: Iterable[int]
) -> dict[int, list[Any]]:
    """Run ``stmt`` (rows of ``(parent_key, object)``) and group the objects by parent."""
    groups: dict[int, list[Any]] = defaultdict(list)
    async with sessions() as session:
        for parent_key, obj in (await session.execute(stmt)).all():
            groups[parent_key].append(obj)
    return {key: groups.get(key, []) for key in keys}


async def _by_id(sessions: Sessions, model: type[M], ids: list[int]) -> dict[int, M]:
    async with sessions() as session:
        rows = (await session.scalars(select(model).where(model.id.in_(ids)))).all()  # type: ignore[attr-defined]
    return {row.id: row for row in rows}  # type: ignore[attr-defined]


async def fetch_users(sessions: Sessions, ids: list[int]) -> dict[int, User]:
    """Users by id."""
    return await _by_id(sessions, User, ids)


async def fetch_posts(sessions: Sessions, ids: list[int]) -> dict[int, Post]:
    """Posts by id."""
    return await _by_id(sessions, Post, ids)


async def fetch_posts_of_users(
    sessions: Sessions, page: Page, author_ids: list[int]
) -> dict[int, list[Post]]:
    """Each user's posts, oldest first, one page per user."""

    def stmt(number: ColumnElement[int]) -> Select[Any]:
        return select(Post, Post.author_id.label("parent_key"), number).where(
            Post.author_id.in_(author_ids)
        )

    query = _windowed(stmt, Post, Post.author_id, (Post.id,), page)
    return await _grouped(sessions, query, author_ids)


async def fetch_comments_of_posts(
    sessions: Sessions, page: Page, post_ids: list[int]
) -> dict[int, list[Comment]]:
    """Each post's comments, oldest first, one page per post."""

    def stmt(number: ColumnElement[int]) -> Select[Any]:
        return select(Comment, Comment.post_id.label("parent_key"), number).where(
            Comment.post_id.in_(post_ids)
        )

    query = _windowed(stmt, Comment, Comment.post_id, (Comment.id,), page)
    return await _grouped(sessions, query, post_ids)


async def fetch_tags_of_posts(
    sessions: Sessions, page: Page, post_ids: list[int]
) -> dict[int, list[Tag]]:
    """Each post's tags by name, one page per post (through ``post_tags``)."""
    link = post_tags.c

    def stmt(number: ColumnElement[int]) -> Select[Any]:
        return (
            select(Tag, link.post_id.label("parent_key"), number)
            .join(post_tags, link.tag_id == Tag.id)
            .where(link.post_id.in_(post_ids))
        )

    query = _windowed(stmt, Tag, link.post_id, (Tag.name, Tag.id), page)
    return await _grouped(sessions, query, post_ids)


async def fetch_posts_of_tags(
    sessions: Sessions, page: Page, tag_ids: list[int]
) -> dict[int, list[Post]]:
    """Each tag's posts, oldest first, one page per tag (through ``post_tags``)."""
    link = post_tags.c

    def stmt(number: ColumnElement[int]) -> Select[Any]:
        return (
            select(Post, link.tag_id.label("parent_key"), number)
            .join(post_tags, link.post_id == Post.id)
            .where(link.tag_id.in_(tag_ids))
        )

    query = _windowed(stmt, Post, link.tag_id, (Post.id,), page)
    return await _grouped(sessions, query, tag_ids)


class Loaders:
    """The loaders of one request, made lazily; read them as ``info.context.loaders``.

    Args:
        sessions: makes one session per batch.
        metrics: where each batch's size is recorded (None: nowhere).
    """

    def __init__(self, sessions: Sessions, metrics: Metrics | None = None) -> None:
        self._sessions = sessions
        self._metrics = metrics
        self._all: dict[tuple[str, Page | None], KeyedLoader[Any, Any]] = {}
        self.user: KeyedLoader[int, User | None] = self._single("user", fetch_users)
        self.post: KeyedLoader[int, Post | None] = self._single("post", fetch_posts)

    def posts_of_user(self, page: Page) -> KeyedLoader[int, list[Post]]:
        """Posts by author id, one page per author."""
        return self._paged("posts_of_user", fetch_posts_of_users, page)

    def comments_of_post(self, page: Page) -> KeyedLoader[int, list[Comment]]:
        """Comments by post id, one page per post."""
        return self._paged("comments_of_post", fetch_comments_of_posts, page)

    def tags_of_post(self, page: Page) -> KeyedLoader[int, list[Tag]]:
        """Tags by post id, one page per post."""
        return self._paged("tags_of_post", fetch_tags_of_posts, page)

    def posts_of_tag(self, page: Page) -> KeyedLoader[int, list[Post]]:
        """Posts by tag id, one page per tag."""
        return self._paged("posts_of_tag", fetch_posts_of_tags, page)

    def forget(self, relation: str, key: int) -> None:
        """Drop ``key`` from every page of ``relation`` (after a write changed it)."""
        for (name, _page), loader in self._all.items():
            if name == relation:
                loader.clear(key)

    def stats(self) -> dict[str, LoaderStats]:
        """Statistics of every loader used in this request, by loader name."""
        return {loader.name or "": loader.stats for loader in self._all.values()}

    async def aclose(self) -> None:
        """Let batches in flight finish, then close every loader."""
        for loader in self._all.values():
            await loader.aclose()

    def _single(
        self, name: str, fetch: Callable[[Sessions, list[int]], Awaitable[dict[int, Any]]]
    ) -> KeyedLoader[int, Any]:
        sessions, metrics = self._sessions, self._metrics

        async def batch(ids: list[int]) -> dict[int, Any]:
            if metrics is not None:
                metrics.observe_batch(name, len(ids))
            return await fetch(sessions, ids)

        loader: KeyedLoader[int, Any] = KeyedLoader(batch, key_type=int, name=name)
        self._all[name, None] = loader
        return loader

    def _paged(
        self,
        name: str,
        fetch: Callable[[Sessions, Page, list[int]], Awaitable[dict[int, list[Any]]]],
        page: Page,
    ) -> KeyedLoader[int, list[Any]]:
        loader = self._all.get((name, page))
        if loader is not None:
            return loader
        sessions, metrics = self._sessions, self._metrics

        async def batch(ids: list[int]) -> dict[int, list[Any]]:
            if metrics is not None:
                metrics.observe_batch(name, len(ids))
            return await fetch(sessions, page, ids)

        label = f"{name}(limit={page.limit},offset={page.offset})"
        loader = KeyedLoader(batch, key_type=int, name=label)
        self._all[name, page] = loader
        return loader
