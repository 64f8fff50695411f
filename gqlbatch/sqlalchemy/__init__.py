"""Bulk fetchers for SQLAlchemy 2.x async: a mapped column or relationship as a batch function.

A *fetcher* is an async callable ``(keys) -> {key: value | exception}`` built from a
declaration such as ``by_column(User.id)``; it is the ``batch_fn`` of a
:class:`~gqlbatch.KeyedLoader` as it is, so a resolver never writes
``select ... where id in (...)`` by hand::

    users = by_column(User.id)                       # one User per id
    posts = by_group(Post.author_id, order_by=Post.id.desc(), limit=5)
    tags = by_relationship(Post.tags)                 # many-to-many, through post_tags

    loader = users.loader(sessions)                   # KeyedLoader(name="User.id", key_type=int)
    ada = await loader.load(1)

What every fetcher guarantees:

* **One statement per batch.** Keys are deduplicated and sent as bind parameters
  in one ``SELECT``, whatever their order, duplicates or absence. On PostgreSQL
  keys are sent as *one array parameter* (``col = ANY($1::INTEGER[])``; a
  composite key as one array per column, through ``unnest()``), so even 100,000
  keys are one statement, and the statement text never changes with the batch
  size (asyncpg's prepared-statement cache keeps hitting). Elsewhere keys go
  into ``IN (...)``; when they would
  exceed the dialect's bind-parameter limit (SQLite's is read from the linked
  library at run time) the fetcher splits them into as few statements as
  needed, of equal size.
* **Per-key limits in SQL.** ``limit=`` on a many-rows fetcher numbers each key's
  rows with ``row_number() OVER (PARTITION BY key ORDER BY ...)`` and keeps the
  first ``limit``: never more rows leave the database than are returned.
* **Fully loaded objects.** The batch's session is closed (per-batch sessions)
  or never committed by the fetcher (shared session), so every column attribute
  is loaded and nothing is expired; touching an attribute later never does I/O.
  Relationships are not loaded unless ``options`` say so (``selectinload``):
  reach them through their own loader. Declare relationships ``lazy="raise"``
  so that a forgotten one fails loudly instead of querying.
* **Type checks before SQL.** ``loader_options["key_type"]`` is the key column's
  Python type, so ``KeyedLoader`` rejects ``"1"`` for an integer column at
  ``load()``. The fetcher checks again (and checks each element of a composite
  key): a bad key gets its own ``TypeError`` and never reaches the database.

Sessions: see :class:`SessionSource`. The default, :class:`PerBatchSessions`,
gives each batch its own short session; :class:`SharedSession` runs a request's
batches one at a time on one session.

One concept per module, every public name re-exported here: ``sessions``
(:class:`SessionSource` and the sources), ``counting`` (:class:`StatementCounter`),
``retry`` (:func:`db_retry_policy`), ``constructors`` (``by_column`` and friends),
``fetchers`` (what they build), ``spec`` and ``dialects`` (what building and
running a fetcher's statement needs).
"""

from __future__ import annotations

from gqlbatch.sqlalchemy.constructors import by_column, by_group, by_relationship
from gqlbatch.sqlalchemy.counting import StatementCounter, StatementScope
from gqlbatch.sqlalchemy.fetchers import ManyFetcher, OneFetcher
from gqlbatch.sqlalchemy.retry import DB_RETRY, DisconnectError, db_retry_policy
from gqlbatch.sqlalchemy.sessions import PerBatchSessions, SessionSource, SharedSession

__all__ = [
    "DB_RETRY",
    "DisconnectError",
    "ManyFetcher",
    "OneFetcher",
    "PerBatchSessions",
    "SessionSource",
    "SharedSession",
    "StatementCounter",
    "StatementScope",
    "by_column",
    "by_group",
    "by_relationship",
    "db_retry_policy",
]
