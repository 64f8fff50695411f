"""Start the example API as a real uvicorn subprocess on a free loopback port.

Every wait here is bounded: a server that does not answer ``/healthz`` within
``READY_SECONDS`` fails the test with its log attached, and a server that does
not stop within ``STOP_SECONDS`` of SIGTERM is killed and fails the test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

READY_SECONDS = 60
STOP_SECONDS = 30
ROOT = Path(__file__).resolve().parents[3]

FOUR_LEVELS = """
{ users(limit: %d) { id name posts(limit: 5) { id title
    comments(limit: 5) { id author { id name } } tags { name } } } }
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running example API process."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """POST one operation; return the decoded JSON body (asserting HTTP 200)."""
        response = httpx.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=30, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", timeout=30, **kwargs)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, then wait (bounded) for a graceful exit; return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_SECONDS)
                raise AssertionError(f"server ignored SIGTERM; log:\n{self.logs()}") from None
        return self.process.returncode


@contextmanager
def run_server(
    database_url: str,
    log_dir: Path,
    *,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[Server]:
    """Run ``python -m example_api serve`` until the block ends (then SIGTERM it)."""
    port = free_port()
    log = log_dir / f"server-{port}.log"
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PYTHONASYNCIODEBUG": "1",  # asyncio debug mode: catches misuse in the server too
        **(env or {}),
    }
    command = [sys.executable, "-W", "error", "-m", "example_api", "serve"]
    command += ["--port", str(port), "--log-level", "info", *args]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=out, stderr=out)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        _wait_ready(server)
        yield server
    finally:
        server.stop()


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(
                f"server exited with {server.process.returncode}:\n{server.logs()}"
            )
        try:
            if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server not ready after {READY_SECONDS}s:\n{server.logs()}")


def admin_url(pg_url: str) -> str:
    """An asyncpg DSN of the server's maintenance database, from a test database URL."""
    url = make_url(pg_url).set(drivername="postgresql", database="postgres")
    return url.render_as_string(hide_password=False)


async def _admin(pg_url: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url(pg_url), timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextmanager
def private_database(pg_url: str, suffix: str) -> Iterator[str]:
    """A PostgreSQL database of its own (``<run's database>_<suffix>``), dropped afterwards."""
    base = make_url(pg_url)
    name = f"{base.database}_{suffix}"
    asyncio.run(_admin(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    asyncio.run(_admin(pg_url, f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def scalar(database_url: str, sql: str) -> Any:
    """Run one SQL query on ``database_url`` (a fresh engine) and return its scalar."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    async def run() -> Any:
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as connection:
                return await connection.scalar(text(sql))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def execute(database_url: str, sql: str) -> None:
    """Run one SQL statement on ``database_url`` and commit."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    async def run() -> None:
        engine = create_async_engine(database_url)
        try:
            async with engine.begin() as connection:
                await connection.execute(text(sql))
        finally:
            await engine.dispose()

    asyncio.run(run())
