"""An acknowledged view is a written view, even when a worker is killed (issue 12, item 6).

Two uvicorn workers on a private PostgreSQL database take ``recordView``
mutations from concurrent clients; one worker gets SIGKILL while views are in
flight. Every view answered with ``accepted: true`` must be in the database
afterwards: the answer means "the UPDATE holding it committed", not "queued".
Views whose request died with the worker may or may not be written; none is
counted twice. Bounded: the clients stop after ``SECONDS`` or ``MAX_VIEWS``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.example_api.e2e.server import private_database, run_server, scalar

SECONDS = 3.0
MAX_VIEWS = 5000
CLIENTS = 16
MUTATION = "mutation($p: ID!) { recordView(postId: $p) { accepted } }"


def _worker_pids(master: int) -> list[int]:
    """The uvicorn worker processes of ``master`` (not multiprocessing's resource tracker)."""
    found = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True)
    pids = [int(pid) for pid in found.stdout.split()]
    return [
        pid for pid in pids if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


async def _record_views(url: str, kill: asyncio.Event) -> tuple[int, int]:
    """Record views until the time or count is up; (acknowledged, sent)."""
    acknowledged = sent = 0
    deadline = time.monotonic() + SECONDS

    async def client(number: int) -> None:
        nonlocal acknowledged, sent
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            while time.monotonic() < deadline and sent < MAX_VIEWS:
                sent += 1
                if sent == MAX_VIEWS // 4 or time.monotonic() > deadline - SECONDS / 2:
                    kill.set()
                try:
                    answer = await http.post(
                        "/graphql",
                        json={"query": MUTATION, "variables": {"p": str(1 + number % 5)}},
                    )
                except httpx.TransportError:  # the killed worker's connection
                    continue
                data = answer.json().get("data") if answer.status_code == 200 else None
                if data and data["recordView"] and data["recordView"]["accepted"]:
                    acknowledged += 1

    await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    return acknowledged, sent


@pytest.mark.timeout(180)
def test_every_acknowledged_view_survives_a_killed_worker(pg_url: str, tmp_path: Path) -> None:
    with private_database(pg_url, "durable") as url:
        args = ["--production", "--seed-if-empty", "5", "--workers", "2"]
        with run_server(url, tmp_path, args=args) as server:
            before = int(scalar(url, "SELECT coalesce(sum(view_count), 0) FROM posts"))
            workers = _worker_pids(server.process.pid)
            assert len(workers) == 2, workers

            async def run() -> tuple[int, int]:
                kill = asyncio.Event()

                async def killer() -> None:
                    await kill.wait()
                    os.kill(workers[0], signal.SIGKILL)

                killing = asyncio.ensure_future(killer())
                try:
                    return await _record_views(server.url, kill)
                finally:
                    killing.cancel()

            acknowledged, sent = asyncio.run(run())
            assert acknowledged > 0
        # The server stopped gracefully: the surviving worker wrote what it had.
        written = int(scalar(url, "SELECT coalesce(sum(view_count), 0) FROM posts")) - before
    print(f"views: {sent} sent, {acknowledged} acknowledged, {written} written")
    assert acknowledged <= written <= sent, (acknowledged, written, sent)
