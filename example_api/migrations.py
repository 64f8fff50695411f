"""Alembic from Python: the server and the CLI migrate through these functions.

They hand Alembic an open connection of the server's own engine, so the
migrations run on exactly the database (and driver) that the server uses.
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from alembic import command

__all__ = ["alembic_config", "current_revision", "downgrade", "head_revision", "upgrade"]

ROOT = Path(__file__).resolve().parent.parent


def alembic_config() -> Config:
    """The project's Alembic configuration (``alembic.ini`` next to ``alembic/``)."""
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    config.attributes["skip_logging"] = True  # the server configures logging itself
    return config


def head_revision() -> str:
    """The newest revision in ``alembic/versions``."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "alembic/versions holds no migration"
    return head


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """``alembic upgrade revision`` on ``engine``'s database."""
    await _run(engine, lambda config: command.upgrade(config, revision))


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """``alembic downgrade revision`` on ``engine``'s database."""
    await _run(engine, lambda config: command.downgrade(config, revision))


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or None before the first migration."""

    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(read)


async def _run(engine: AsyncEngine, action: object) -> None:
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        action(config)  # type: ignore[operator]

    async with engine.begin() as connection:
        await connection.run_sync(run)
