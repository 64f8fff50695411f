"""The Alembic migrations build exactly the models' schema, and go down and up again."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from example_api import migrations
from example_api.db import create_engine
from example_api.models import metadata
from tests.example_api.e2e.server import private_database

TABLES = {"users", "posts", "comments", "tags", "post_tags"}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('migrations') / 'blog.db'}"
    else:
        with private_database(request.getfixturevalue("pg_url"), "migrations") as url:
            yield url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        await migrations.downgrade(engine, "base")
        await engine.dispose()


def _differences(connection: Connection) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(connection), metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names()) - {"alembic_version"}


async def test_migrations_and_models_agree(engine: AsyncEngine) -> None:
    await migrations.upgrade(engine)
    async with engine.connect() as connection:
        assert await connection.run_sync(_differences) == []
        assert await connection.run_sync(_tables) == TABLES
    assert await migrations.current_revision(engine) == migrations.head_revision()


async def test_upgrade_downgrade_upgrade(engine: AsyncEngine) -> None:
    await migrations.upgrade(engine)
    await migrations.downgrade(engine, "base")
    async with engine.connect() as connection:
        assert await connection.run_sync(_tables) == set()
    assert await migrations.current_revision(engine) is None
    await migrations.upgrade(engine)
    async with engine.connect() as connection:
        assert await connection.run_sync(_differences) == []
    await migrations.upgrade(engine)  # a second upgrade at head changes nothing


def test_every_foreign_key_leads_an_index() -> None:
    for table in metadata.tables.values():
        leading = {index.columns[0].name for index in table.indexes}
        leading.add(table.primary_key.columns[0].name)
        for fk in table.foreign_keys:
            assert fk.parent.name in leading, f"{table.name}.{fk.parent.name} has no index"


def test_relationships_never_load_lazily() -> None:
    from sqlalchemy.orm import class_mapper

    from example_api.models import Comment, Post, Tag, User

    for model in (User, Post, Comment, Tag):
        for relationship in class_mapper(model).relationships:
            assert relationship.lazy == "raise", f"{model.__name__}.{relationship.key}"
