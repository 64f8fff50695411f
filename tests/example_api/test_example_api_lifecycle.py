"""Start-up, backpressure and shutdown of the real server; several workers on PostgreSQL."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.example_api.e2e.server import FOUR_LEVELS, private_database, run_server, scalar

# uvicorn re-raises SIGTERM once it has shut down gracefully.
GRACEFUL = (0, -signal.SIGTERM)
RECORD = "mutation($id: ID!) { recordView(postId: $id) { accepted } }"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'blog.db'}"
    else:
        with private_database(request.getfixturevalue("pg_url"), "life") as url:
            yield url


def test_full_view_queue_refuses_clearly_and_every_acknowledged_view_is_written(
    database_url: str, tmp_path: Path
) -> None:
    # A view is answered once its UPDATE committed: 3 wait for the 2 s flush, 2 more
    # find the queue full and are refused at once.
    env = {"EXAMPLE_API_VIEW_QUEUE": "3", "EXAMPLE_API_VIEW_FLUSH_MS": "2000"}
    with run_server(database_url, tmp_path, args=["--seed-if-empty", "3"], env=env) as server:
        with ThreadPoolExecutor(5) as pool:
            bodies = list(pool.map(lambda _: server.graphql(RECORD, {"id": "1"}), range(5)))
        accepted = [b for b in bodies if "errors" not in b]
        refused = [b for b in bodies if "errors" in b]
        assert len(accepted) == 3
        assert len(refused) == 2
        error = refused[0]["errors"][0]
        assert error["extensions"] == {"code": "VIEW_QUEUE_FULL"}
        assert "too many views are waiting to be written (3)" in error["message"]
        assert "retry later" in error["message"]
        assert refused[0]["data"] == {"recordView": None}  # per field: the others answered
        metrics = server.get("/metrics").text
        assert "example_api_view_queue_rejections_total 2" in metrics
        assert "example_api_view_queue_size 0" in metrics
        # Acknowledged means written: no shutdown needed to find them.
        assert scalar(database_url, "SELECT view_count FROM posts WHERE id = 1") == 3
        assert server.stop() in GRACEFUL
    assert "stopping: writing 0 pending views" in server.logs()


def test_shutdown_lets_requests_in_flight_finish_and_loses_no_accepted_view(
    database_url: str, tmp_path: Path
) -> None:
    # Each view is answered once written, at most a flush (300 ms) later: SIGTERM lets
    # the requests in flight wait for it.
    env = {"EXAMPLE_API_VIEW_FLUSH_MS": "300"}
    with run_server(database_url, tmp_path, args=["--seed-if-empty", "20"], env=env) as server:

        def call(i: int) -> str:
            try:
                if i % 4 == 0:
                    response = httpx.post(
                        f"{server.url}/graphql", json={"query": FOUR_LEVELS % 20}, timeout=30
                    )
                    return "query" if response.status_code == 200 else "failed"
                response = httpx.post(
                    f"{server.url}/graphql",
                    json={"query": RECORD, "variables": {"id": "2"}},
                    timeout=30,
                )
            except httpx.TransportError:
                return "refused"  # the server had stopped accepting connections
            if response.status_code != 200:
                return "failed"
            return "accepted" if response.json()["data"] else "failed"

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(call, range(40)))
            late = list(pool.map(call, range(40, 80)))
            server.process.terminate()  # SIGTERM while the next calls are in flight
            racing = list(pool.map(call, range(80, 120)))
        assert server.process.wait(30) in GRACEFUL
    outcomes = results + late + racing
    assert "failed" not in outcomes, outcomes
    accepted = outcomes.count("accepted")
    assert accepted >= 60  # all calls made before SIGTERM
    assert scalar(database_url, "SELECT view_count FROM posts WHERE id = 2") == accepted


def test_several_workers_on_postgresql_share_the_views_and_batch_alike(
    pg_url: str, tmp_path: Path
) -> None:
    with private_database(pg_url, "workers") as url:
        args = ["--workers", "2", "--debug", "--seed-if-empty", "20"]
        env = {"EXAMPLE_API_VIEW_FLUSH_MS": "50"}
        with run_server(url, tmp_path, args=args, env=env) as server:
            assert len(_worker_processes(server.process.pid)) == 2

            def call(_: int) -> tuple[bool, int]:
                # A new connection each time, so the kernel spreads them over the workers.
                with httpx.Client(timeout=30) as client:
                    body = client.post(
                        f"{server.url}/graphql",
                        json={"query": RECORD, "variables": {"id": "3"}},
                    ).json()
                    stats = client.post(
                        f"{server.url}/graphql", json={"query": FOUR_LEVELS % 20}
                    ).json()["extensions"]["gqlbatch"]
                return "errors" not in body, stats["sql_statements"]

            with ThreadPoolExecutor(8) as pool:
                outcomes = list(pool.map(call, range(60)))
            assert all(ok for ok, _ in outcomes)
            assert {statements for _, statements in outcomes} == {5}
            metrics = server.get("/metrics").text
            assert "example_api_http_requests_total" in metrics
        assert scalar(url, "SELECT view_count FROM posts WHERE id = 3") == 60


def _worker_processes(parent: int) -> list[int]:
    """Children of ``parent`` running uvicorn workers (multiprocessing spawn children)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == parent and b"spawn_main" in cmdline:
            children.append(int(stat.parent.name))
    return children


def test_several_workers_are_refused_on_sqlite(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.example_api.e2e.server import ROOT

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "example_api",
            "serve",
            "--workers",
            "2",
            "--database-url",
            f"sqlite:///{tmp_path / 'x.db'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "EXAMPLE_API_WORKERS=2 needs PostgreSQL" in result.stderr
