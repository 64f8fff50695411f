"""docs/sqlalchemy.md shows what its examples really print, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._stderr import without_slow_steps

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "sqlalchemy.md"
EXAMPLES = sorted(
    p for p in (ROOT / "docs" / "examples").glob("sqlalchemy_*.py") if p.stem != "sqlalchemy_models"
)


def _run(path: Path, database_url: str | None) -> str:
    env = {**os.environ, "PYTHONASYNCIODEBUG": "1"}
    env.pop("DATABASE_URL", None)
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    result = subprocess.run(
        [sys.executable, "-W", "error", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert without_slow_steps(result.stderr) == ""
    return result.stdout


def _text_blocks() -> list[str]:
    return re.findall(r"```text\n(.*?)```", PAGE.read_text(), re.S)


@pytest.fixture(scope="module")
def examples_pg_url(pg_url: str) -> Iterator[str]:
    """A PostgreSQL database of its own: the examples create and drop tables named users."""
    name = f"gqlbatch_docs_{uuid.uuid4().hex[:10]}"
    plain = pg_url.replace("postgresql+asyncpg://", "postgresql://", 1)

    async def admin(statement: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(plain, timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{pg_url.rsplit('/', 1)[0]}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_the_page_shows_the_sqlite_output_of_each_example(path: Path) -> None:
    output = _run(path, None)
    assert output in _text_blocks(), f"docs/sqlalchemy.md lacks the output of {path.name}"
    assert f'--8<-- "docs/examples/{path.name}"' in PAGE.read_text()


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_the_page_shows_the_postgresql_output_of_each_example(
    path: Path, examples_pg_url: str
) -> None:
    output = _run(path, examples_pg_url)
    assert output in _text_blocks(), f"docs/sqlalchemy.md lacks the output of {path.name}"


def test_every_fetcher_kind_has_its_sql_on_the_page() -> None:
    page = PAGE.read_text()
    for sql in (
        "WHERE users.id IN (?, ?, ?)",  # by_column
        "WHERE users.id = ANY ($1::INTEGER[])",  # by_column on PostgreSQL
        "unnest($1::VARCHAR[], $2::VARCHAR[])",  # composite keys on PostgreSQL
        "row_number() OVER (PARTITION BY posts.author_id",  # by_group with limit
        "JOIN post_tags ON tags.id = post_tags.tag_id",  # many-to-many
    ):
        assert sql in page, sql
