"""Fault injection at the database: the real server keeps answering while PostgreSQL misbehaves.

The example API runs as a uvicorn subprocess in production mode, connected to
its private PostgreSQL database through a :class:`~tests.example_api.e2e.proxy.FaultProxy` on a
loopback port. The proxy drops every connection mid-batch, stalls the wire
past the loaders' ``batch_timeout_ms``, and holds the pool's every connection
so that new requests find it exhausted. For each fault:

* every request gets an HTTP 200 answer: data, or a masked GraphQL error
  ("Internal server error."), never a 5xx, never a hang (clients give up after
  ``CLIENT_TIMEOUT`` seconds, far beyond the server's own bounds);
* the server keeps answering requests that need no database meanwhile;
* once the fault is over, the very same queries succeed again.

The server is configured tight so that faults resolve in seconds: a pool of 2
connections without overflow, 1 s to get a connection, 3 s to open one or per
statement, and 1 s per loader batch attempt (the shortest) (``EXAMPLE_API_DB_*``,
``EXAMPLE_API_BATCH_TIMEOUT_MS``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.example_api.e2e.proxy import FaultProxy
from tests.example_api.e2e.server import Server, private_database, run_server, scalar

CLIENT_TIMEOUT = 90  # seconds; the server's own bounds answer long before
MASKED = "Internal server error."
POOL_SIZE = 2

SERVER_ENV = {
    "EXAMPLE_API_DB_POOL_SIZE": str(POOL_SIZE),
    "EXAMPLE_API_DB_POOL_OVERFLOW": "0",
    "EXAMPLE_API_DB_POOL_TIMEOUT_MS": "1000",
    "EXAMPLE_API_DB_CONNECT_TIMEOUT_MS": "3000",
    "EXAMPLE_API_DB_STATEMENT_TIMEOUT_MS": "3000",
    "EXAMPLE_API_BATCH_TIMEOUT_MS": "1000",
    "EXAMPLE_API_VIEW_FLUSH_MS": "20",
}

# Queries read through loaders (user, post, nested lists) and root fields (pages).
BY_LOADER = '{ user(id: "1") { id name posts(limit: 3) { id comments(limit: 2) { id } } } }'
BY_ROOT = "{ users(limit: 3) { id } }"
NESTED = "{ posts(limit: 5) { id author { id } tags { name } } }"
RECORD = 'mutation { recordView(postId: "1") { accepted } }'
MIX = (BY_LOADER, BY_ROOT, NESTED, RECORD)


@dataclass
class Answer:
    """What one request got back."""

    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.status == 200 and "errors" not in self.body

    @property
    def masked_error(self) -> bool:
        """An HTTP 200 whose every error is the production mode's masked message."""
        errors = self.body.get("errors") or []
        return (
            self.status == 200 and bool(errors) and {e.get("message") for e in errors} == {MASKED}
        )


def ask(server: Server, query: str) -> Answer:
    response = httpx.post(f"{server.url}/graphql", json={"query": query}, timeout=CLIENT_TIMEOUT)
    return Answer(response.status_code, response.json())


@pytest.fixture(scope="module")
def database(pg_url: str) -> Iterator[str]:
    with private_database(pg_url, "faults") as url:
        yield url


@pytest.fixture(scope="module")
def proxy(database: str) -> Iterator[FaultProxy]:
    target = make_url(database)
    proxy = FaultProxy(target.host or "127.0.0.1", target.port or 5432).start()
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture(scope="module")
def server(
    database: str, proxy: FaultProxy, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    via_proxy = make_url(database).set(host="127.0.0.1", port=proxy.port)
    url = via_proxy.render_as_string(hide_password=False)
    args = ["--production", "--seed-if-empty", "10"]
    with run_server(url, tmp_path_factory.mktemp("faults"), args=args, env=SERVER_ENV) as s:
        yield s


@pytest.fixture
def healthy(server: Server, proxy: FaultProxy) -> Iterator[Server]:
    """The server answering the whole mix; after the test, proxy flowing and server healthy."""
    assert all(ask(server, query).ok for query in MIX)
    yield server
    proxy.resume()
    _assert_recovers(server)


def _assert_recovers(server: Server) -> None:
    """The same queries succeed again, at the first try, once the fault is over."""
    for query in MIX:
        answer = ask(server, query)  # a connection the fault left dead is replaced unseen
        assert answer.ok, (query, answer.body)
    assert server.get("/healthz").status_code == 200


def _in_flight(
    pool: ThreadPoolExecutor, server: Server, queries: list[str]
) -> list[Future[Answer]]:
    return [pool.submit(ask, server, query) for query in queries]


def _wait_for(condition: Callable[[], bool], seconds: float = 10) -> None:
    """Poll until ``condition()`` (bounded); not an assertion about time."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def _views_pending(server: Server) -> int:
    for line in server.get("/metrics").text.splitlines():
        if line.startswith("example_api_view_queue_size "):
            return int(float(line.split()[1]))
    raise AssertionError("no example_api_view_queue_size in /metrics")


def _assert_every_request_answered(answers: list[Answer]) -> None:
    for answer in answers:
        assert answer.status == 200, answer
        assert answer.ok or answer.masked_error, answer.body


def test_connections_dropped_mid_batch_answer_every_request_then_serve_again(
    healthy: Server, proxy: FaultProxy, database: str
) -> None:
    _wait_for(lambda: _views_pending(healthy) == 0)
    views_before = scalar(database, "SELECT view_count FROM posts WHERE id = 1")
    queries = list(MIX) * 3
    with ThreadPoolExecutor(len(queries)) as pool:
        proxy.stall()  # every statement sent from now on is held on the wire...
        futures = _in_flight(pool, healthy, queries)
        _wait_for(lambda: proxy.open_connections >= POOL_SIZE)
        time.sleep(0.3)  # ...so that the batches are in flight when the connections go
        dropped = proxy.drop()
        proxy.resume()
        answers = [future.result(CLIENT_TIMEOUT) for future in futures]
    assert dropped >= 1
    _assert_every_request_answered(answers)
    # Loaders retry a lost connection (DB_RETRY) on a fresh one: reads come back whole.
    loader_reads = [a for q, a in zip(queries, answers, strict=True) if q in (BY_LOADER, NESTED)]
    assert any(answer.ok for answer in loader_reads), [a.body for a in loader_reads]
    # Every view the server accepted is written once, none twice.
    accepted = sum(1 for q, a in zip(queries, answers, strict=True) if q == RECORD and a.ok)
    _wait_for(lambda: _views_pending(healthy) == 0)
    views_after = scalar(database, "SELECT view_count FROM posts WHERE id = 1")
    assert views_after == views_before + accepted


def test_a_query_hanging_past_the_batch_timeout_fails_clearly_while_the_server_answers(
    healthy: Server, proxy: FaultProxy
) -> None:
    with ThreadPoolExecutor(4) as pool, proxy.stalled():
        futures = _in_flight(pool, healthy, [BY_LOADER, BY_ROOT])
        # The server is not stuck behind its hanging queries: what needs no database answers.
        metrics = healthy.get("/metrics")
        assert metrics.status_code == 200
        assert "example_api_http_requests_total" in metrics.text
        answers = [future.result(CLIENT_TIMEOUT) for future in futures]
    _assert_every_request_answered(answers)
    assert all(answer.masked_error for answer in answers), [a.body for a in answers]
    assert all(answer.body["data"] in (None, {"user": None}) for answer in answers), answers
    log = healthy.logs()
    assert "took longer than batch_timeout_ms=1000" in log  # the loader gave up on its batch
    assert "TimeoutError" in log


def test_an_exhausted_pool_answers_every_request_and_recovers(
    healthy: Server, proxy: FaultProxy
) -> None:
    queries = list(MIX) * 4
    with ThreadPoolExecutor(len(queries) + 1) as pool, proxy.stalled():
        futures = _in_flight(pool, healthy, queries)
        _wait_for(lambda: proxy.open_connections >= POOL_SIZE)
        health = healthy.get("/healthz")  # needs a connection too: none is free
        answers = [future.result(CLIENT_TIMEOUT) for future in futures]
    assert health.status_code == 503
    assert health.json() == {"status": "unavailable", "database": "unreachable"}
    _assert_every_request_answered(answers)
    assert sum(answer.masked_error for answer in answers) >= len(queries) - POOL_SIZE
    assert "QueuePool limit of size 2 overflow 0 reached" in healthy.logs()


def test_a_database_that_accepts_connections_and_never_answers_is_survived(
    healthy: Server, proxy: FaultProxy
) -> None:
    proxy.drop()  # the pool's connections are gone: every request must open a new one...
    with ThreadPoolExecutor(8) as pool, proxy.stalled():  # ...which never completes start-up
        answers = [f.result(CLIENT_TIMEOUT) for f in _in_flight(pool, healthy, list(MIX) * 2)]
    _assert_every_request_answered(answers)
    assert all(answer.masked_error for answer in answers), [a.body for a in answers]
    assert "TimeoutError" in healthy.logs()
