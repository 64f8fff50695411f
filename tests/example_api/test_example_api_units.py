"""The example API's parts on their own: settings, seed, metrics, loaders, views, the CLI."""

from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from example_api import migrations
from example_api.app import create_app
from example_api.db import create_engine, create_sessionmaker
from example_api.gc_tuning import GC_YOUNG_THRESHOLD, gc_tuned
from example_api.loaders import Loaders
from example_api.metrics import Metrics
from example_api.models import Base, Comment, Post, post_tags
from example_api.seed import SeedPlan, is_empty, seed
from example_api.settings import DEFAULT_DATABASE_URL, Settings, SettingsError
from example_api.views import ViewCounter, ViewsClosedError, add_views
from gqlbatch.sqlalchemy import PerBatchSessions, StatementCounter
from tests.example_api.e2e.server import ROOT, scalar

# -- settings -------------------------------------------------------------------------------


def test_settings_default_to_sqlite_on_loopback_in_production_mode() -> None:
    settings = Settings.from_env({})
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8000, 1)
    assert settings.debug is False
    assert settings.migrate_on_start is True
    assert settings.gc_tuning is True


def test_settings_read_every_variable() -> None:
    env = {
        "DATABASE_URL": "postgresql://app:secret@db:5432/blog",
        "EXAMPLE_API_HOST": "0.0.0.0",
        "EXAMPLE_API_PORT": "9000",
        "EXAMPLE_API_WORKERS": "4",
        "EXAMPLE_API_DEBUG": "yes",
        "EXAMPLE_API_MIGRATE": "off",
        "EXAMPLE_API_MAX_PAGE_SIZE": "500",
        "EXAMPLE_API_MAX_BATCH": "5",
        "EXAMPLE_API_GC_TUNING": "0",
    }
    settings = Settings.from_env(env)
    assert settings.database_url == "postgresql+asyncpg://app:secret@db:5432/blog"
    assert settings.redacted_database_url == "postgresql+asyncpg://app:***@db:5432/blog"
    assert (settings.host, settings.port, settings.workers) == ("0.0.0.0", 9000, 4)
    assert settings.debug is True
    assert settings.migrate_on_start is False
    assert settings.max_page_size == 500
    assert settings.max_batch_operations == 5
    assert settings.gc_tuning is False
    assert Settings.from_env(settings.to_env()) == settings


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EXAMPLE_API_PORT": "http"}, "EXAMPLE_API_PORT must be an integer, got 'http'"),
        ({"EXAMPLE_API_PORT": "70000"}, "EXAMPLE_API_PORT must be between 1 and 65535"),
        ({"EXAMPLE_API_MAX_PAGE_SIZE": "0"}, "EXAMPLE_API_MAX_PAGE_SIZE must be >= 1, got 0"),
        ({"EXAMPLE_API_DEBUG": "maybe"}, "EXAMPLE_API_DEBUG must be one of 1/0"),
        ({"DATABASE_URL": "mysql://x/y"}, "PostgreSQL (asyncpg) or SQLite (aiosqlite)"),
        ({"EXAMPLE_API_WORKERS": "3"}, "EXAMPLE_API_WORKERS=3 needs PostgreSQL"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_env(env)


def test_bad_database_url_never_shows_its_password() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"DATABASE_URL": "user:hunter2@host/db"})
    assert "hunter2" not in str(caught.value)


# -- seed -----------------------------------------------------------------------------------


async def _dump(url: str) -> dict[str, list[tuple[object, ...]]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            out = {}
            tables = [Base.metadata.tables[name] for name in ("users", "posts", "comments", "tags")]
            for table in (*tables, post_tags):
                rows = await connection.execute(select(table).order_by(*table.primary_key.columns))
                out[table.name] = [tuple(row) for row in rows]
            return out
    finally:
        await engine.dispose()


async def test_seed_writes_the_same_rows_for_the_same_seed(tmp_path: Path) -> None:
    urls = [f"sqlite+aiosqlite:///{tmp_path / name}" for name in ("a.db", "b.db", "c.db")]
    for url, seed_value in zip(urls, (7, 7, 8), strict=True):
        engine = create_engine(url)
        await migrations.upgrade(engine)
        assert await is_empty(engine)
        report = await seed(engine, SeedPlan(users=15, seed=seed_value))
        assert report.users == 15
        assert not await is_empty(engine)
        await engine.dispose()
    a, b, c = [await _dump(url) for url in urls]
    assert a == b
    assert a != c
    assert len(a["users"]) == 15
    assert a["comments"]


async def test_seed_refuses_a_populated_database_unless_reset(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    try:
        await migrations.upgrade(engine)
        await seed(engine, SeedPlan(users=3))
        with pytest.raises(ValueError, match="already holds users"):
            await seed(engine, SeedPlan(users=3))
        report = await seed(engine, SeedPlan(users=4), reset=True)
        assert report.users == 4
    finally:
        await engine.dispose()


def test_seed_plan_rejects_negative_counts() -> None:
    with pytest.raises(ValueError, match="users must be an int >= 0, got -1"):
        SeedPlan(users=-1)


# -- the garbage collector ------------------------------------------------------------------


def test_gc_tuned_freezes_start_up_and_the_last_user_restores_the_collector() -> None:
    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0, "nothing in the test process froze objects before"
    with gc_tuned():
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > 0
        with gc_tuned():  # a second app in the same process
            pass
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD  # the first one still runs
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("tuning", [True, False])
async def test_the_app_tunes_the_collector_only_while_it_runs(
    sqlite_url: str, tuning: bool
) -> None:
    before = gc.get_threshold()
    app = create_app(Settings(database_url=sqlite_url, gc_tuning=tuning), tracing=False)
    async with app.router.lifespan_context(app):
        assert (gc.get_threshold()[0] == GC_YOUNG_THRESHOLD) is tuning
        assert (gc.get_freeze_count() > 0) is tuning
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


# -- metrics --------------------------------------------------------------------------------


def test_metrics_render_the_prometheus_text_format() -> None:
    metrics = Metrics()
    metrics.observe_request("POST", "/graphql", 200, 0.02)
    metrics.observe_request("GET", "/nowhere/42", 404, 0.001)
    metrics.observe_batch("user", 30)
    metrics.add_gauge("example_api_view_queue_size", "Views waiting.", lambda: 4)
    text = metrics.render()
    assert text.endswith("\n")
    assert 'example_api_http_requests_total{method="POST",path="/graphql",status="200"} 1' in text
    assert 'example_api_http_requests_total{method="GET",path="other",status="404"} 1' in text
    assert 'example_api_http_request_duration_seconds_bucket{path="/graphql",le="0.01"} 0' in text
    assert 'example_api_http_request_duration_seconds_bucket{path="/graphql",le="0.025"} 1' in text
    assert 'example_api_http_request_duration_seconds_bucket{path="/graphql",le="+Inf"} 1' in text
    assert 'example_api_loader_batch_size_bucket{loader="user",le="25"} 0' in text
    assert 'example_api_loader_batch_size_bucket{loader="user",le="50"} 1' in text
    assert 'example_api_loader_batch_size_sum{loader="user"} 30' in text
    assert "# TYPE example_api_view_queue_size gauge\nexample_api_view_queue_size 4" in text
    for line in text.splitlines():
        assert line.startswith("# ") or len(line.rsplit(" ", 1)) == 2, line


# -- command line ---------------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "example_api", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_migrates_seeds_and_reports_the_revision(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    done = _cli("seed", "--users", "6", "--seed", "2", "--database-url", url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("seeded 6 users, ")
    again = _cli("seed", "--users", "6", "--if-empty", env={"DATABASE_URL": url})
    assert "nothing seeded" in again.stdout
    refused = _cli("seed", "--users", "6", "--database-url", url)
    assert refused.returncode == 2
    assert "already holds users" in refused.stderr
    head = migrations.head_revision()
    assert (
        f"database at revision {head}" in _cli("migrate", "current", "--database-url", url).stdout
    )
    down = _cli("migrate", "downgrade", "base", "--database-url", url)
    assert "database at revision (none)" in down.stdout
    up = _cli("migrate", env={"DATABASE_URL": url})
    assert f"database at revision {head}" in up.stdout
    async_url = url.replace("sqlite://", "sqlite+aiosqlite://")
    assert scalar(async_url, "SELECT count(*) FROM users") == 0


def test_alembic_command_reads_database_url_like_the_server(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'alembic.db'}"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "alembic"), "upgrade", "head"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    async_url = url.replace("sqlite://", "sqlite+aiosqlite://")
    assert (
        scalar(async_url, "SELECT version_num FROM alembic_version") == migrations.head_revision()
    )


# -- the view queue -------------------------------------------------------------------------


async def test_views_from_many_callers_become_one_update_per_batch(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    await migrations.upgrade(engine)
    await seed(engine, SeedPlan(users=3, seed=1))
    metrics = Metrics()
    views = ViewCounter(engine, metrics, max_queue_size=100, flush_ms=60_000)
    with StatementCounter(engine) as counter:
        for post_id in [1, 2, 1, 1, 99_999, 2]:
            views.record(post_id)
        assert views.pending == 6
        await views.flush()
        assert counter.total == 1  # one UPDATE ... CASE id ... for the six views
    assert metrics.views_written == 5
    assert metrics.view_write_failures == 1  # post 99999 does not exist: only its view fails
    assert metrics.view_batches == 1
    await views.aclose()
    with pytest.raises(ViewsClosedError, match="shutting down"):
        views.record(1)
    async with engine.connect() as connection:
        counts: dict[int, int] = dict(
            (await connection.execute(select(Post.id, Post.view_count))).all()
        )
    assert (counts[1], counts[2]) == (3, 2)
    await engine.dispose()


# SQLAlchemy does not annotate the asyncpg dialect class.
@pytest.mark.parametrize("dialect", [postgresql.asyncpg.dialect(), sqlite.dialect()])  # type: ignore[no-untyped-call]
def test_the_bulk_view_update_is_one_statement_whatever_the_number_of_posts(
    dialect: Dialect,
) -> None:
    """One SQL string, so SQLAlchemy compiles and caches it once (not once per size)."""
    statements = {
        str(add_views(dialect.name, Counter(range(1, posts + 1))).compile(dialect=dialect))
        for posts in (1, 2, 50, 1000)
    }
    assert len(statements) == 1, statements


async def test_views_recorded_during_a_slow_update_go_together_in_the_next_one(
    sqlite_url: str,
) -> None:
    """While one UPDATE waits on the database, later views gather for the next one.

    Each view below comes after ``flush_ms`` has passed; if each became a batch
    of its own and waited for the writer, the queue would grow by a batch per
    ``flush_ms`` for as long as the database stays slow (the soak's memory growth).
    """
    engine = create_engine(sqlite_url)
    await migrations.upgrade(engine)
    await seed(engine, SeedPlan(users=3, seed=1))
    metrics = Metrics()
    views = ViewCounter(engine, metrics, max_queue_size=100, flush_ms=10)
    path = sqlite_url.removeprefix("sqlite+aiosqlite:///")
    blocker = sqlite3.connect(path, timeout=10)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # holds the write lock: the first UPDATE waits
        views.record(1)
        await asyncio.sleep(0.05)  # its UPDATE has begun, and waits
        for post_id in [2, 1, 2, 1, 2]:
            views.record(post_id)
            await asyncio.sleep(0.02)  # twice flush_ms
        blocker.rollback()
    finally:
        blocker.close()
    await views.flush()
    assert metrics.view_batches == 2  # the first view's UPDATE, then one for the other five
    assert metrics.views_written == 6
    await views.aclose()
    async with engine.connect() as connection:
        counts: dict[int, int] = dict(
            (await connection.execute(select(Post.id, Post.view_count))).all()
        )
    assert (counts[1], counts[2]) == (3, 3)
    await engine.dispose()


# -- loaders --------------------------------------------------------------------------------


async def test_paged_loaders_limit_each_parent_in_sql_one_statement_per_page(
    sqlite_url: str,
) -> None:

    engine = create_engine(sqlite_url)
    await migrations.upgrade(engine)
    await seed(engine, SeedPlan(users=10, seed=4))
    loaders = Loaders(sessions=PerBatchSessions(create_sessionmaker(engine)))
    with StatementCounter(engine) as counter, counter.scope() as scope:
        two, also_two, next_two, empty = await asyncio.gather(
            loaders.comments_of_post.load((1, 2, 0)),
            loaders.comments_of_post.load((2, 2, 0)),
            loaders.comments_of_post.load((1, 2, 2)),
            loaders.comments_of_post.load((1, 0, 0)),
        )
    async with engine.connect() as connection:
        stmt = select(Comment.id).where(Comment.post_id == 1).order_by(Comment.id)
        all_of_post_1 = list((await connection.scalars(stmt)).all())
    assert [c.id for c in two] == all_of_post_1[:2]
    assert [c.id for c in next_two] == all_of_post_1[2:4]
    assert len(also_two) <= 2
    assert empty == []  # limit 0 reads nothing
    assert scope.count == 2  # one statement per distinct page (2, 0) and (2, 2)
    assert all("row_number() OVER (PARTITION BY" in sql for sql in scope.statements)
    await loaders.aclose()
    await engine.dispose()
