"""Shared fixtures: a private PostgreSQL database per test run, SQLite files per test.

PostgreSQL is expected on 127.0.0.1:5432 with trust auth (override with
GQLBATCH_PG_ADMIN_URL). Each pytest run creates its own database and drops it
at the end, so concurrent runs never collide. Where GQLBATCH_REQUIRE_POSTGRES
is set (CI sets it), an unreachable server fails the tests instead of skipping.
"""

from __future__ import annotations

import asyncio
import gc
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

PG_ADMIN_URL = os.environ.get(
    "GQLBATCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _pg_base() -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0]


async def _pg_admin(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """The name of a fresh PostgreSQL database private to this test run."""
    name = f"gqlbatch_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, ImportError) as exc:  # server down, or asyncpg missing
        if os.environ.get("GQLBATCH_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL is required here but not reachable: {exc!r}")
        pytest.skip(f"PostgreSQL not reachable: {exc!r}")
    try:
        yield name
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def pg_url(pg_database: str) -> str:
    """SQLAlchemy async URL (asyncpg) of this run's private PostgreSQL database."""
    return f"{_pg_base().replace('postgresql://', 'postgresql+asyncpg://', 1)}/{pg_database}"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """SQLAlchemy async URL (aiosqlite) of a fresh SQLite file for this test."""
    return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
async def loop_reports() -> Any:
    """Record what the running loop reports (unretrieved exceptions, destroyed tasks...).

    The test fails if anything was reported by the time it ends.
    """
    loop = asyncio.get_running_loop()
    reports: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reports.append(context))
    yield reports
    await asyncio.sleep(0)
    gc.collect()
    await asyncio.sleep(0)
    loop.set_exception_handler(previous)
    assert reports == [], reports


REDIS_URL = os.environ.get("GQLBATCH_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis server's URL; skips (fails, with GQLBATCH_REQUIRE_REDIS) if it does not answer."""
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # server down (redis.ConnectionError), or redis-py missing
        if os.environ.get("GQLBATCH_REQUIRE_REDIS"):
            pytest.fail(f"Redis is required here but not reachable: {exc!r}")
        pytest.skip(f"Redis not reachable: {exc!r}")
    return REDIS_URL


@pytest.fixture
def redis_namespace(redis_url: str) -> Iterator[str]:
    """A key prefix private to this test; its keys are deleted at the end (never FLUSHALL)."""
    import redis

    namespace = f"gqlbatch-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield namespace
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()
