"""The ``db`` fixture of the gqlbatch.sqlalchemy tests (load with ``pytest_plugins``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.sqlalchemy.sqla_models import Database, open_database


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(kind, url) of each database; sync, as pg_url's set-up runs its own event loop."""
    fixture = {"sqlite": "sqlite_url", "postgres": "pg_url"}[request.param]
    return request.param, request.getfixturevalue(fixture)


@pytest.fixture
async def db(db_url: tuple[str, str]) -> AsyncIterator[Database]:
    """A seeded database private to the test, on SQLite and on PostgreSQL."""
    async with open_database(*db_url) as database:
        yield database
