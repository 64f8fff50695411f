"""gqlbatch.sqlalchemy fetchers behind KeyedLoader: statement counts, sessions, errors, pools."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import QueuePool, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from gqlbatch import BatchedQueue, BatchError, KeyedLoader
from gqlbatch.sqlalchemy import (
    DB_RETRY,
    DisconnectError,
    PerBatchSessions,
    SessionSource,
    SharedSession,
    StatementCounter,
    by_column,
    by_relationship,
    db_retry_policy,
)
from tests.sqlalchemy.sqla_models import CHILDREN, PARENTS, Database, Post, Tag, User

pytest_plugins = ["tests.sqlalchemy.sqla_fixtures"]  # the db fixture: SQLite and PostgreSQL

FAST_RETRY = db_retry_policy(retries=2, base_delay_ms=1, max_delay_ms=1, jitter=False)


def source_of(db: Database, mode: str) -> PerBatchSessions | SharedSession:
    return PerBatchSessions(db.maker) if mode == "per-batch" else SharedSession(db.maker)


async def finish(sessions: object) -> None:
    if isinstance(sessions, SharedSession):
        await sessions.aclose()


@dataclass
class Loaders:
    """One request's loaders, as a GraphQL context would hold them."""

    user: KeyedLoader[int, Any]
    posts: KeyedLoader[int, Any]
    author: KeyedLoader[int, Any]
    tags: KeyedLoader[int, Any]

    @classmethod
    def create(cls, sessions: object) -> Loaders:
        return cls(
            user=by_column(User.id).loader(sessions),
            posts=by_relationship(User.posts).loader(sessions),
            author=by_relationship(Post.author).loader(sessions),
            tags=by_relationship(Post.tags).loader(sessions),
        )


POST_AUTHOR = by_relationship(Post.author)


async def resolve_post(loaders: Loaders, post: Post) -> dict[str, Any]:
    await asyncio.sleep(0)  # a resolver that awaits something before it loads
    author, tags = await asyncio.gather(
        loaders.author.load(POST_AUTHOR.key_for(post)), loaders.tags.load(post.id)
    )
    return {"title": post.title, "author": author.name, "tags": [t.name for t in tags]}


async def resolve_user(loaders: Loaders, user_id: int) -> dict[str, Any]:
    user = await loaders.user.load(user_id)
    posts = await loaders.posts.load(user.id)
    return {
        "name": user.name,
        "posts": await asyncio.gather(*(resolve_post(loaders, p) for p in posts)),
    }


# -- one statement per loader per level ------------------------------------------------


@pytest.mark.parametrize("mode", ["per-batch", "shared"])
async def test_a_resolver_tree_issues_one_statement_per_loader_per_level(
    db: Database, mode: str
) -> None:
    sessions = source_of(db, mode)
    loaders = Loaders.create(sessions)
    with db.counter.scope() as sql:
        tree = await asyncio.gather(*(resolve_user(loaders, u) for u in range(1, PARENTS + 1)))
    await finish(sessions)
    assert len(tree) == PARENTS
    assert all(len(user["posts"]) == CHILDREN for user in tree)
    assert tree[1]["posts"][0]["author"] == "user2"
    # users (level 1), their posts (level 2), the posts' authors and tags (level 3)
    assert sql.count == 4
    for loader in (loaders.user, loaders.posts, loaders.author, loaders.tags):
        assert loader.stats.batches == 1, loader.name
    assert loaders.tags.stats.keys_dispatched == PARENTS * CHILDREN
    assert loaders.author.stats.keys_dispatched == PARENTS


async def test_loader_options_are_name_and_key_type_and_merge_with_given_options(
    db: Database,
) -> None:
    loader = by_column(User.id).loader(db.maker, name="users", missing="error")
    assert loader.name == "users"
    assert isinstance(loader, KeyedLoader)
    with pytest.raises(RuntimeError, match=re.escape("fetcher 'User.id' is not bound")):
        by_column(User.id).loader()
    bound = by_column(User.id, sessions=db.maker)
    assert (await bound.loader().load(3)).name == "user3"


async def test_a_key_of_the_wrong_type_fails_at_the_loader_before_any_sql(db: Database) -> None:
    loader = by_column(User.id).loader(db.maker)
    with db.counter.scope() as sql:
        with pytest.raises(TypeError) as caught:
            loader.load("1")  # type: ignore[arg-type]  # a GraphQL ID arrives as a str
        await loader.flush()
    assert sql.count == 0
    assert "'User.id'" in str(caught.value)
    assert "'1'" in str(caught.value)


def _checked_out(db: Database) -> int:
    """Connections of ``db``'s pool in use now."""
    pool = db.engine.pool
    assert isinstance(pool, QueuePool)
    return pool.checkedout()


async def test_a_composite_key_with_a_bad_element_fails_alone_without_sql(db: Database) -> None:
    from tests.sqlalchemy.sqla_models import Account

    loader = by_column(Account.org, Account.login).loader(db.maker)
    with db.counter.scope() as sql:
        outcomes = await asyncio.gather(
            loader.load(("acme", "ann")), loader.load(("acme", 7)), return_exceptions=True
        )
    good, bad = outcomes
    assert isinstance(good, Account)
    assert good.display == "ann@acme"
    assert isinstance(bad, TypeError)
    assert "at position 1" in str(bad)
    assert sql.count == 1


# -- session modes under concurrent batches -------------------------------------------


class Recording:
    """Wraps a session source; records how many of its sessions are in use at once."""

    def __init__(self, inner: SessionSource) -> None:
        self.inner = inner
        self.active = 0
        self.most_at_once = 0
        self.sessions: list[AsyncSession] = []  # kept alive, so their ids stay distinct

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.inner.session() as session:
            self.active += 1
            self.most_at_once = max(self.most_at_once, self.active)
            self.sessions.append(session)
            try:
                yield session
            finally:
                self.active -= 1


async def _four_loaders_at_once(sessions: SessionSource) -> list[Any]:
    user = by_column(User.id).loader(sessions)
    email = by_column(User.email).loader(sessions)
    posts = by_relationship(User.posts).loader(sessions)
    tags = by_relationship(Post.tags).loader(sessions)
    return list(
        await asyncio.gather(
            user.load(1), email.load("u2@example.org"), posts.load(3), tags.load(4)
        )
    )


async def test_per_batch_sessions_run_concurrent_batches_on_separate_sessions(
    db: Database,
) -> None:
    recording = Recording(PerBatchSessions(db.maker))
    for _ in range(5):
        user, by_email, posts, tags = await _four_loaders_at_once(recording)
        assert (user.id, by_email.id, len(posts), len(tags) >= 1) == (1, 2, CHILDREN, True)
    assert recording.most_at_once == 4  # all four batches in flight together
    assert len({id(s) for s in recording.sessions}) == 20  # a session per batch
    assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_shared_session_serializes_concurrent_batches_on_one_session(db: Database) -> None:
    shared = SharedSession(db.maker)
    recording = Recording(shared)
    for _ in range(5):
        user, by_email, posts, _tags = await _four_loaders_at_once(recording)
        assert (user.id, by_email.id, len(posts)) == (1, 2, CHILDREN)
    assert recording.most_at_once == 1  # one batch at a time
    assert len({id(s) for s in recording.sessions}) == 1  # the same session throughout
    assert _checked_out(db) == 1  # held for the request...
    await shared.aclose()
    await shared.aclose()  # idempotent
    assert _checked_out(db) == 0  # ...and returned at its end
    with pytest.raises(RuntimeError, match="SharedSession is closed"):
        await by_column(User.id).bind(shared)([1])


async def test_shared_session_aclose_waits_for_the_running_batch(db: Database) -> None:
    entered = asyncio.Event()

    class Signalling:
        @contextlib.asynccontextmanager
        async def session(self) -> AsyncIterator[AsyncSession]:
            async with shared.session() as session:
                entered.set()
                yield session

    async with SharedSession(db.maker) as shared:
        loader = by_column(User.id).loader(Signalling())
        pending = loader.load(1)
        await entered.wait()  # the batch holds the shared session
        closing = asyncio.ensure_future(shared.aclose())
        assert (await pending).id == 1
        await closing
        assert shared.closed
    assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_bare_sessionmaker_is_per_batch_sessions(db: Database) -> None:
    loader = by_column(User.id).loader(db.maker)
    assert (await loader.load(5)).email == "u5@example.org"
    assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


# -- connection hygiene ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["per-batch", "shared"])
async def test_a_thousand_requests_leave_no_connection_checked_out(db: Database, mode: str) -> None:
    statements = db.counter.total
    for request in range(1_000):
        sessions = source_of(db, mode)
        user = by_column(User.id).loader(sessions)
        posts = by_relationship(User.posts).loader(sessions)
        ids = [request % PARENTS + 1, (request * 7) % PARENTS + 1]
        users = await user.load_many(ids)
        lists = await posts.load_many([u.id for u in users])
        assert [len(p) for p in lists] == [CHILDREN, CHILDREN]
        await finish(sessions)
    assert db.counter.total - statements == 2_000
    assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", ["per-batch", "shared"])
async def test_failed_and_timed_out_batches_return_their_connections(
    db: Database, mode: str
) -> None:
    broken = by_column(User.id, where=text("no_such_column = 1"))
    slow_sql = "pg_sleep(10) IS NOT NULL" if db.kind == "postgres" else None
    for _ in range(20):
        sessions = source_of(db, mode)
        failing = broken.loader(sessions)
        healthy = by_column(User.id).loader(sessions)
        outcomes = await asyncio.gather(failing.load(1), healthy.load(1), return_exceptions=True)
        bad, good = outcomes
        assert isinstance(bad, BatchError)
        assert isinstance(bad.__cause__, DBAPIError)
        assert isinstance(good, User)
        assert good.id == 1  # the other loader's batch is untouched
        # a later batch in the same request still works (a shared session starts afresh)
        assert (await healthy.load(2)).id == 2
        await finish(sessions)
    if slow_sql is not None:
        sessions = source_of(db, mode)
        slow = by_column(User.id, where=text(slow_sql)).loader(sessions, batch_timeout_ms=50)
        with pytest.raises(BatchError) as caught:
            await slow.load(1)
        assert isinstance(caught.value.__cause__, TimeoutError)
        await finish(sessions)
    assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


# -- errors and retries ----------------------------------------------------------------


def test_db_retry_covers_connection_errors_and_timeouts_only() -> None:
    def dbapi(cls: type[DBAPIError], invalidated: bool = False) -> DBAPIError:
        return cls("SELECT 1", {}, Exception("driver"), connection_invalidated=invalidated)

    retried = [
        dbapi(OperationalError),
        dbapi(DBAPIError, invalidated=True),
        dbapi(IntegrityError, invalidated=True),  # a disconnect, whatever its class says
        TimeoutError(),
        ConnectionResetError(),
        ConnectionRefusedError(),
    ]
    not_retried = [dbapi(IntegrityError), dbapi(ProgrammingError), ValueError(), dbapi(DBAPIError)]
    for error in retried:
        assert DB_RETRY.should_retry(error, 0), error
        assert not DB_RETRY.should_retry(error, DB_RETRY.retries), error
    for error in not_retried:
        assert not DB_RETRY.should_retry(error, 0), error
    assert isinstance(dbapi(DBAPIError, invalidated=True), DisconnectError)
    assert not isinstance(dbapi(DBAPIError), DisconnectError)


async def test_programming_errors_are_not_retried(db: Database) -> None:
    loader = by_column(User.id, where=text("no_such_column = 1")).loader(
        db.maker, error_mode="retry", retry=FAST_RETRY
    )
    with pytest.raises(BatchError) as caught:
        await loader.load(1)
    cause = caught.value.__cause__
    if db.kind == "postgres":
        assert isinstance(cause, ProgrammingError)
        assert caught.value.attempts == 1
    else:  # SQLite reports "no such column" as an OperationalError, which is retried
        assert isinstance(cause, OperationalError)
        assert caught.value.attempts == 1 + FAST_RETRY.retries


async def test_integrity_errors_are_not_retried(db: Database) -> None:
    async def insert_users(rows: list[dict[str, Any]]) -> list[Any]:
        async with db.maker() as session, session.begin():
            session.add_all(User(**row) for row in rows)
        return [row["id"] for row in rows]

    queue = BatchedQueue(
        insert_users, max_wait_ms=0, error_mode="retry", retry=FAST_RETRY, name="users.insert"
    )
    taken = {"id": 500, "name": "dup", "email": "u1@example.org"}  # email is unique
    with pytest.raises(BatchError) as caught:
        await queue.enqueue(taken)
    assert isinstance(caught.value.__cause__, IntegrityError)
    assert caught.value.attempts == 1
    assert queue.stats.retries == 0
    await queue.aclose()


async def test_connection_errors_are_retried_then_reported(db: Database) -> None:
    url = "sqlite+aiosqlite:////nonexistent-dir/db.sqlite"
    if db.kind == "postgres":
        url = "postgresql+asyncpg://postgres@127.0.0.1:1/nothing"  # nothing listens on port 1
    engine = create_async_engine(url)
    loader = by_column(User.id).loader(
        async_sessionmaker(engine), error_mode="retry", retry=FAST_RETRY
    )
    with pytest.raises(BatchError) as caught:
        await loader.load(1)
    assert caught.value.attempts == 1 + FAST_RETRY.retries
    assert isinstance(caught.value.__cause__, OperationalError | ConnectionError | OSError)
    await engine.dispose()


async def test_a_retried_batch_succeeds_once_the_database_is_back(db: Database) -> None:
    down_url = "postgresql+asyncpg://postgres@127.0.0.1:1/nothing"
    down = create_async_engine(down_url if db.kind == "postgres" else "sqlite+aiosqlite:////x/y")

    class FlakyThenUp:
        """The first batch meets a database that is down; later ones the real one."""

        def __init__(self) -> None:
            self.calls = 0

        def session(self) -> contextlib.AbstractAsyncContextManager[AsyncSession]:
            self.calls += 1
            return (async_sessionmaker(down) if self.calls == 1 else db.maker)()

    loader = by_column(User.id).loader(FlakyThenUp(), error_mode="retry", retry=FAST_RETRY)
    assert (await loader.load(9)).name == "user9"
    assert loader.stats.retries == 1
    await down.dispose()


# -- 100,000 keys ----------------------------------------------------------------------


async def test_a_hundred_thousand_keys(db: Database) -> None:
    from tests.sqlalchemy.sqla_models import Item, sqlite_variable_limit

    async with db.engine.begin() as conn:
        if db.kind == "postgres":
            await conn.execute(
                text("INSERT INTO items SELECT n, 'item ' || n FROM generate_series(1, 100000) n")
            )
        else:
            await conn.execute(
                text(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                    "WHERE i < 100000) INSERT INTO items SELECT i, 'item ' || i FROM n"
                )
            )
    keys = list(range(100_000, 0, -1))  # every row, in reverse order
    loader = by_column(Item.id).loader(db.maker)
    with db.counter.scope() as sql:
        items = await loader.load_many([*keys, 100_001, 100_002])
    assert [i.id for i in items[:-2]] == keys
    assert items[-2:] == [None, None]
    if db.kind == "postgres":
        assert sql.count == 1  # one array parameter
        assert "= ANY (" in sql.statements[0]
    else:
        limit = sqlite_variable_limit()
        assert sql.count == -(-100_002 // limit)  # as few statements as the limit allows
    assert loader.stats.batches == 1
    # composite keys use IN lists everywhere; 2 parameters per key
    pairs = [(f"org{n % 3}", f"login{n}") for n in range(100_000)]
    from tests.sqlalchemy.sqla_models import Account

    with db.counter.scope() as sql:
        found = await by_column(Account.org, Account.login).bind(db.maker)(pairs)
    assert found == {}
    if db.kind == "postgres":
        assert sql.count == 1  # one array parameter per key column, through unnest()
        assert "unnest(" in sql.statements[0]
    else:
        assert sql.count == -(-100_000 // (sqlite_variable_limit() // 2))


# -- StatementCounter ------------------------------------------------------------------


async def test_statement_counter_scopes_count_only_their_own_requests(db: Database) -> None:
    async def request(user_ids: list[int]) -> int:
        with db.counter.scope() as sql:
            loaders = Loaders.create(db.maker)
            await asyncio.gather(*(resolve_user(loaders, u) for u in user_ids))
        return sql.count

    before = db.counter.total
    counts = await asyncio.gather(request([1, 2]), request([3]), request(list(range(4, 40))))
    assert list(counts) == [4, 4, 4]
    assert db.counter.total - before == 12
    with db.counter.scope() as outer:
        with db.counter.scope() as inner:
            await by_column(User.id).bind(db.maker)([1])
        await by_column(User.id).bind(db.maker)([2])
    assert (outer.count, inner.count) == (2, 1)
    assert re.search(r"FROM users", inner.statements[0])
    assert inner.parameters[0] in ([1], (1,), ([1],))


async def test_statement_counter_close_stops_counting(db: Database) -> None:
    counter = StatementCounter(db.engine)
    await by_column(User.id).bind(db.maker)([1])
    counter.close()
    counter.close()
    await by_column(User.id).bind(db.maker)([1])
    assert counter.total == 1
    with pytest.raises(TypeError, match="engine must be an AsyncEngine or an Engine"):
        StatementCounter("sqlite://")  # type: ignore[arg-type]


_ = Tag
