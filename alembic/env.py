"""Alembic environment of the example API: async-ready, same database URL as the server.

The URL comes, in this order, from a connection handed over by the server
(``config.attributes["connection"]``, see :mod:`example_api.migrations`), from
``-x database_url=...`` or ``sqlalchemy.url`` when set, and otherwise from the
server's settings (``DATABASE_URL``, default a SQLite file under ``data/``).
"""

from __future__ import annotations

import asyncio
import logging.config

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import context
from example_api.db import prepare_sqlite_path
from example_api.models import metadata
from example_api.settings import Settings, normalize_database_url

config = context.config
if config.config_file_name is not None and not config.attributes.get("skip_logging"):
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

# One number for every PostgreSQL advisory lock taken around migrations, so
# that several processes migrating at once run one after the other.
MIGRATION_LOCK = 0x67716C62  # "gqlb"


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("database_url")
    url = url or config.get_main_option("sqlalchemy.url")
    return normalize_database_url(url) if url else Settings.from_env().database_url


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations(connection: Connection) -> None:
    """Run the migrations on an open synchronous connection."""
    _configure(connection)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        context.run_migrations()


async def run_async_migrations(url: str) -> None:
    """Open the async engine, migrate through its connection, and dispose of it."""
    prepare_sqlite_path(url)
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


def run_offline() -> None:
    """``alembic upgrade --sql``: write the SQL instead of running it."""
    context.configure(
        url=_url(),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
elif (given := config.attributes.get("connection")) is not None:
    run_migrations(given)
else:
    asyncio.run(run_async_migrations(_url()))
