"""The per-request loaders: every relation of the schema is read through one of these.

:class:`Loaders` is a :class:`gqlbatch.strawberry.LoaderRegistry`: one
instance per request, reachable as ``info.context.loaders``, each loader
made on first use over a :mod:`gqlbatch.sqlalchemy` fetcher. A batch is one
SQL statement per loader, whatever the number of parents:

* ``user``, ``post``: one row per id (``by_column``); with
  ``EXAMPLE_API_REDIS_URL`` they consult a cache shared by every process first
  (:mod:`example_api.shared_cache`, given as the registry's ``loader_options``);
* ``posts_of_user``, ``comments_of_post``, ``tags_of_post``, ``posts_of_tag``:
  a page of children for many parents at once (``by_relationship``), the
  per-parent ``limit`` applied **in SQL** by a ``row_number()`` window
  partitioned by the parent key, so a post with 10,000 comments never sends
  10,000 rows for ``comments(limit: 5)``.

A page comes from the GraphQL field's ``limit`` and ``offset`` arguments, so
the paged loaders take ``(parent id, limit, offset)`` keys (:class:`Paged`):
the keys of one batch are grouped by page, one statement per distinct page.
In a query every parent at one level asks for the same page, so that is one
statement per level.

Every loader retries transient database errors (``DB_RETRY``: a lost
connection, a pool or statement timeout) and gives each attempt of a batch
``batch_timeout_ms`` at most: the app creates each request's registry with
:func:`registry_options` of its settings (``EXAMPLE_API_BATCH_TIMEOUT_MS``; see
:class:`~example_api.settings.DatabaseOptions`). A batch that still fails
reaches each of its callers as a ``BatchError``, which production mode masks
as "Internal server error.".
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from functools import lru_cache
from typing import Any

from sqlalchemy.orm import QueryableAttribute

from example_api.models import Post, Tag, User
from example_api.settings import DatabaseOptions
from gqlbatch import EngineOptions
from gqlbatch.sqlalchemy import DB_RETRY, ManyFetcher, by_column, by_relationship
from gqlbatch.strawberry import LoaderRegistry, loader

__all__ = ["Loaders", "PageKey", "Paged", "registry_options"]

_DB_OPTIONS: dict[str, Any] = {"error_mode": "retry", "retry": DB_RETRY}


def registry_options(database: DatabaseOptions) -> EngineOptions:
    """The options of every loader of a request that come from the settings."""
    return {"batch_timeout_ms": database.batch_timeout_ms or None}


PageKey = tuple[int, int, int]
"""``(parent id, limit, offset)``: the key of a paged loader."""

BatchFn = Callable[[list[PageKey]], Awaitable[Mapping[PageKey, Any]]]


class Paged:
    """A one-to-many or many-to-many relationship read one page per parent.

    A fetcher for :class:`~gqlbatch.strawberry.LoaderRegistry`: ``bind(sessions)``
    gives the batch function over ``(parent id, limit, offset)`` keys. Each
    distinct page becomes one ``by_relationship(attribute, limit=offset + limit)``
    statement; the first ``offset`` rows of each parent are then dropped.
    ``gqlbatch.sqlalchemy`` limits in SQL but has no offset, so a nested
    ``offset`` costs ``offset`` extra rows per parent (never more than the
    parent has).
    """

    def __init__(self, attribute: QueryableAttribute[Any]) -> None:
        self.attribute = attribute
        self.name = f"{attribute.class_.__name__}.{attribute.key}"
        self._fetcher: Callable[[int], ManyFetcher[int, Any]] = lru_cache(maxsize=64)(
            lambda rows: by_relationship(attribute, limit=rows)
        )

    @property
    def loader_options(self) -> Mapping[str, Any]:
        """Keys are ``(parent id, limit, offset)`` tuples."""
        return {"key_type": tuple}

    def bind(self, sessions: Any) -> BatchFn:
        """The batch function reading through ``sessions``."""
        fetcher_for = self._fetcher

        async def batch(keys: list[PageKey]) -> dict[PageKey, Any]:
            pages: dict[tuple[int, int], list[int]] = {}
            for parent, limit, offset in keys:
                pages.setdefault((limit, offset), []).append(parent)
            wanted = [(page, parents) for page, parents in pages.items() if page[0] > 0]
            found = await asyncio.gather(
                *(
                    fetcher_for(limit + offset).bind(sessions)(parents)
                    for (limit, offset), parents in wanted
                )
            )
            result: dict[PageKey, Any] = {key: [] for key in keys}  # limit 0: nothing to read
            for ((limit, offset), parents), rows_of in zip(wanted, found, strict=True):
                for parent in parents:
                    rows = rows_of.get(parent, [])
                    result[parent, limit, offset] = (
                        rows if isinstance(rows, BaseException) else rows[offset:]
                    )
            return result

        return batch

    def __repr__(self) -> str:
        return f"Paged({self.name})"


class Loaders(LoaderRegistry):
    """The loaders of one request. Transient database errors are retried (``DB_RETRY``)."""

    user = loader(by_column(User.id), **_DB_OPTIONS)
    """Users by id."""
    post = loader(by_column(Post.id), **_DB_OPTIONS)
    """Posts by id."""
    posts_of_user = loader(Paged(User.posts), **_DB_OPTIONS)
    """A user's posts, oldest first, by ``(user id, limit, offset)``."""
    comments_of_post = loader(Paged(Post.comments), **_DB_OPTIONS)
    """A post's comments, oldest first, by ``(post id, limit, offset)``."""
    tags_of_post = loader(Paged(Post.tags), **_DB_OPTIONS)
    """A post's tags by name, by ``(post id, limit, offset)``."""
    posts_of_tag = loader(Paged(Tag.posts), **_DB_OPTIONS)
    """A tag's posts, oldest first, by ``(tag id, limit, offset)``."""
