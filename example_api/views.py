"""``recordView``'s write path: one process-wide queue turns many views into bulk UPDATEs.

Every ``recordView(postId)`` call, from any request, enqueues its post id on
one :class:`gqlbatch.BatchedQueue`. When ``view_flush_ms`` has passed since
the first waiting view (or 1,000 views wait), the queue hands them to
:meth:`ViewCounter._write`, which adds them up per post and writes them with a
single UPDATE (:func:`add_views`). While an UPDATE runs, views that arrive
wait for the next one, so under load each UPDATE takes more views, not more
time. A full queue refuses the view at once (the caller gets a clear GraphQL error, never a
silent drop); on shutdown :meth:`ViewCounter.aclose` writes every view that was
accepted. Transient database errors are retried with backoff (``DB_RETRY``)
before the views count as lost.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping

from sqlalchemy import Integer, bindparam, cast, column, func, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.dml import ReturningUpdate
from sqlalchemy.sql.elements import ColumnElement

from example_api.metrics import Metrics
from example_api.models import Post
from gqlbatch import BatchedQueue, LoaderClosedError, QueueFullError
from gqlbatch.sqlalchemy import DB_RETRY

__all__ = [
    "UnknownPostError",
    "ViewCounter",
    "ViewQueueFullError",
    "ViewsClosedError",
    "add_views",
]

log = logging.getLogger("example_api.views")

MAX_BATCH = 1000


def add_views(dialect: str, views: Mapping[int, int]) -> ReturningUpdate[int]:
    """``UPDATE posts`` adding ``views[id]`` to each post's count; returns the ids found.

    The post ids and their views are bound as one table-valued parameter (two
    arrays on PostgreSQL, a JSON object on SQLite), so the statement is the
    same whatever the number of posts. A ``CASE id WHEN ... THEN ...`` with a
    bound pair per post would be a statement of its own for each number of
    posts, each compiled and kept in SQLAlchemy's statement cache (500
    statements by default) at about 3.6 KiB per post: 3.6 MiB for one UPDATE
    of 1,000 posts.
    """
    post_id: ColumnElement[int]
    added: ColumnElement[int]
    if dialect == "postgresql":
        given = (
            func.unnest(
                bindparam("post_ids", list(views), type_=ARRAY(Integer)),
                bindparam("views", list(views.values()), type_=ARRAY(Integer)),
            )
            .table_valued(column("post_id", Integer), column("views", Integer))
            .render_derived()
        )
        post_id, added = given.c.post_id, given.c.views
    else:  # SQLite: json_each of {"<post id>": views}
        given = func.json_each(json.dumps(dict(views))).table_valued(
            "key", column("value", Integer)
        )
        post_id, added = cast(given.c.key, Integer), given.c.value
    return (
        update(Post)
        .where(Post.id == post_id)
        .values(view_count=Post.view_count + added)
        .returning(Post.id)
    )


class ViewQueueFullError(Exception):
    """Too many views wait to be written; the caller should retry later."""


class ViewsClosedError(Exception):
    """The server is shutting down and accepts no more views."""


class UnknownPostError(LookupError):
    """A view was recorded for a post that does not exist (any more)."""


class ViewCounter:
    """Aggregates views of posts into bulk UPDATEs; one per process.

    Args:
        engine: the database the views are written to.
        metrics: counts accepted, written, rejected and lost views.
        max_queue_size: views accepted but not yet written, at most.
        flush_ms: how long the first waiting view waits for others.
        after_write: awaited with the ids of the posts each bulk UPDATE changed,
            once it committed (the shared cache invalidates them).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        metrics: Metrics,
        *,
        max_queue_size: int,
        flush_ms: float,
        after_write: Callable[[list[int]], Awaitable[None]] | None = None,
    ) -> None:
        self._engine = engine
        self._after_write = after_write
        self._metrics = metrics
        self._queue: BatchedQueue[int, bool] = BatchedQueue(
            self._write,
            max_batch_size=MAX_BATCH,
            max_wait_ms=flush_ms,
            max_queue_size=max_queue_size,
            error_mode="retry",
            retry=DB_RETRY,
            name="views",
        )
        metrics.add_gauge(
            "example_api_view_queue_size", "Views accepted, not yet written.", self._size
        )

    def _size(self) -> float:
        return float(self._queue.size)

    @property
    def pending(self) -> int:
        """Views accepted and not yet written."""
        return self._queue.size

    def record(self, post_id: int) -> asyncio.Future[bool]:
        """Accept one view of ``post_id``; it is written with the next bulk UPDATE.

        Returns the future of that write: True once the UPDATE committed, or the
        error that lost the view. Raises :class:`ViewQueueFullError` at once when
        the queue is full, and :class:`ViewsClosedError` once shutdown has begun.
        """
        try:
            future = self._queue.enqueue(post_id)
        except LoaderClosedError:
            raise ViewsClosedError(
                "the server is shutting down; the view was not recorded"
            ) from None
        except QueueFullError as exc:
            self._metrics.view_rejections += 1
            raise ViewQueueFullError(
                f"too many views are waiting to be written ({exc.max_queue_size}); "
                "the view was not recorded, retry later"
            ) from None
        self._metrics.views_accepted += 1
        future.add_done_callback(self._written)
        return future

    async def flush(self) -> None:
        """Write every view accepted so far."""
        await self._queue.flush()

    async def aclose(self) -> None:
        """Refuse new views, write every accepted one, then stop."""
        await self._queue.aclose()

    def _written(self, future: asyncio.Future[bool]) -> None:
        if future.cancelled():
            self._metrics.view_write_failures += 1
            return
        error = future.exception()
        if error is None:
            self._metrics.views_written += 1
        else:
            self._metrics.view_write_failures += 1
            log.error("a view was lost: %s", error)

    async def _write(self, post_ids: list[int]) -> list[bool | BaseException]:
        """Write in a context of its own: the UPDATE is not the enqueuing request's statement."""
        return await asyncio.create_task(self._update(post_ids), context=contextvars.Context())

    async def _update(self, post_ids: list[int]) -> list[bool | BaseException]:
        """One UPDATE for the whole batch; views of missing posts fail on their own."""
        stmt = add_views(self._engine.dialect.name, Counter(post_ids))
        async with self._engine.begin() as connection:
            found = set((await connection.execute(stmt)).scalars())
        self._metrics.view_batches += 1
        if self._after_write is not None and found:
            try:
                await self._after_write(sorted(found))
            except Exception:  # the views are written: never fail (and retry) them for this
                log.exception("invalidating the shared cache after a view UPDATE failed")
        return [
            True if post_id in found else UnknownPostError(f"post {post_id} does not exist")
            for post_id in post_ids
        ]
