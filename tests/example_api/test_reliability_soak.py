"""A soak of the real server: many concurrent clients, queries and mutations, for a bounded time.

The example API runs as a uvicorn subprocess (production mode, one worker, its
default pool of 10 + 10 connections) on a private PostgreSQL database.
``CLIENTS`` clients, each an ``httpx.AsyncClient`` with its own connection,
send a seeded random mix of reads (the four-level query, lookups by id, pages)
and writes (``recordView``, ``addComment``, ``createPost``) as fast as the
server answers them: first for ``WARMUP_SECONDS`` (imports, caches, the pool
and the allocator settle), then for ``GQLBATCH_SOAK_SECONDS`` (default 20;
``make soak`` runs a longer one). Then:

* zero 5xx and zero errors: every request got HTTP 200 and its data;
* every ``recordView`` the server accepted is counted exactly once in
  ``posts.view_count``, and every accepted ``addComment``/``createPost`` wrote
  exactly one row;
* the server's resident memory (``VmRSS``) after the soak is within
  ``RSS_GROWTH_PERCENT`` (25 %) of what it was after the warm-up, and, in
  soaks of a minute or more, it has levelled off: the second half of the soak
  adds less than ``PLATEAU_PERCENT`` (5 %). The first minutes add some 10 to
  14 MiB that the warm-up does not: the Python allocator's arenas grow to the
  peak of what the requests in flight hold at once (and keep it: freed objects
  stay in them), and the statement caches fill. That peak is reached within a
  few minutes and RSS stays flat after it; a leak would keep growing;
* the view queue keeps up: sampled every second, it never holds more views
  than one bulk UPDATE takes (``example_api.views.MAX_BATCH``). Views that
  arrive while an UPDATE runs join the next one; were they queued in small
  batches behind it instead, the queue, and the requests its waiting batches
  keep alive, would grow for as long as the soak lasts;
* no connection leaked: ``pg_stat_activity`` shows at most the pool's size of
  connections for the database, all idle, none idle in a transaction.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from example_api.views import MAX_BATCH
from tests.example_api.e2e.server import (
    FOUR_LEVELS,
    Server,
    admin_url,
    private_database,
    run_server,
    scalar,
)

SOAK_SECONDS = float(os.environ.get("GQLBATCH_SOAK_SECONDS", "20"))
CLIENTS = int(os.environ.get("GQLBATCH_SOAK_CLIENTS", "50"))
WARMUP_SECONDS = 6.0
CLIENT_TIMEOUT = 60  # seconds: a request never waits longer (the soak must not hang)
POOL_SIZE = 10
USERS = 40
RSS_GROWTH_PERCENT = 25  # RSS after the soak <= RSS after the warm-up + 25 %
PLATEAU_PERCENT = 5  # soaks of a minute or more: the second half grows < 5 % of the warm RSS

pytestmark = [pytest.mark.soak, pytest.mark.timeout(SOAK_SECONDS + WARMUP_SECONDS + 180)]

RECORD = "mutation($id: ID!) { recordView(postId: $id) { accepted } }"
COMMENT = (
    "mutation($post: ID!, $author: ID!, $body: String!) "
    "{ addComment(postId: $post, authorId: $author, body: $body) { id } }"
)
CREATE = (
    "mutation($author: ID!, $title: String!, $tags: [String!]) "
    "{ createPost(authorId: $author, title: $title, tags: $tags) { id tags { name } } }"
)
LOOKUP = "query($id: ID!) { user(id: $id) { id name posts(limit: 3) { id title } } }"
PAGE = "query($o: Int!) { posts(limit: 20, offset: $o) { id viewCount author { name } } }"


@dataclass
class Tally:
    """What the clients sent and got back."""

    statuses: Counter[int] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    views: Counter[int] = field(default_factory=Counter)
    comments: int = 0
    posts: int = 0
    latencies: list[float] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())


@pytest.fixture(scope="module")
def database(pg_url: str) -> Iterator[str]:
    with private_database(pg_url, "soak") as url:
        yield url


@pytest.fixture(scope="module")
def server(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    args = ["--production", "--seed-if-empty", str(USERS), "--seed", "11"]
    env = {
        "EXAMPLE_API_VIEW_FLUSH_MS": "50",
        "EXAMPLE_API_DB_POOL_SIZE": str(POOL_SIZE),
        "PYTHONASYNCIODEBUG": "",  # the server as it runs in production
    }
    with run_server(database, tmp_path_factory.mktemp("soak"), args=args, env=env) as s:
        yield s


def rss_kib(pid: int) -> int:
    """Resident memory of process ``pid`` in KiB, from ``/proc/<pid>/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def connections(database: str) -> tuple[int, int]:
    """(all, not idle) server connections to ``database``, the caller's own excluded."""
    name = make_url(database).database
    admin = admin_url(database).replace("postgresql://", "postgresql+asyncpg://", 1)
    row = scalar(
        admin,
        "SELECT count(*) || ',' || count(*) FILTER (WHERE state <> 'idle') "
        f"FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend'",
    )
    total, busy = str(row).split(",")
    return int(total), int(busy)


async def _client(
    number: int, url: str, deadline: float, posts: int, tally: Tally, record: bool
) -> None:
    """One client: a seeded random mix of operations until ``deadline``."""
    rng = random.Random(number)
    async with httpx.AsyncClient(base_url=url, timeout=CLIENT_TIMEOUT) as client:
        while time.monotonic() < deadline:
            roll = rng.random()
            post_id = rng.randint(1, posts)
            author = rng.randint(1, USERS)
            variables: dict[str, object]
            if roll < 0.35:
                kind, query, variables = "recordView", RECORD, {"id": str(post_id)}
            elif roll < 0.55:
                kind, query, variables = "fourLevels", FOUR_LEVELS % 10, {}
            elif roll < 0.75:
                kind, query, variables = "lookup", LOOKUP, {"id": str(author)}
            elif roll < 0.90:
                kind, query, variables = "page", PAGE, {"o": rng.randint(0, posts)}
            elif roll < 0.97:
                kind, query = "addComment", COMMENT
                variables = {"post": str(post_id), "author": str(author), "body": f"c{number}"}
            else:
                kind, query = "createPost", CREATE
                tags = [f"soak{rng.randint(0, 5)}", f"soak{rng.randint(0, 5)}"]
                variables = {"author": str(author), "title": f"p{number}", "tags": tags}
            start = time.perf_counter()
            try:
                response = await client.post(
                    "/graphql", json={"query": query, "variables": variables}
                )
            except httpx.HTTPError as exc:
                tally.failures.append(f"{kind}: {exc!r}")
                continue
            tally.latencies.append(time.perf_counter() - start)
            tally.statuses[response.status_code] += 1
            tally.kinds[kind] += 1
            body = response.json() if response.status_code == 200 else {}
            if response.status_code != 200 or "errors" in body or not body.get("data"):
                tally.failures.append(f"{kind}: {response.status_code} {response.text[:300]}")
                continue
            if kind == "recordView" and record:
                tally.views[post_id] += 1
            elif kind == "addComment":
                tally.comments += 1
            elif kind == "createPost":
                tally.posts += 1


async def _load(url: str, seconds: float, posts: int, tally: Tally, *, record: bool) -> None:
    deadline = time.monotonic() + seconds
    await asyncio.gather(
        *(_client(number, url, deadline, posts, tally, record) for number in range(CLIENTS))
    )


def metric(text: str, name: str) -> float:
    """The value of the unlabelled sample ``name`` in a ``/metrics`` page."""
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


async def _drained(server: Server) -> None:
    """Wait (bounded) until the server's view queue has written every accepted view."""
    async with httpx.AsyncClient(base_url=server.url, timeout=CLIENT_TIMEOUT) as client:
        for _ in range(200):
            metrics = (await client.get("/metrics")).text
            if "\nexample_api_view_queue_size 0\n" in metrics:
                return
            await asyncio.sleep(0.05)
    raise AssertionError("the view queue did not drain")


async def test_soak_serves_every_request_counts_every_view_once_and_leaks_nothing(
    server: Server, database: str
) -> None:
    posts = int(await asyncio.to_thread(scalar, database, "SELECT count(*) FROM posts"))
    comments_before = await asyncio.to_thread(scalar, database, "SELECT count(*) FROM comments")

    warmup = Tally()
    await _load(server.url, WARMUP_SECONDS, posts, warmup, record=False)
    await _drained(server)
    assert warmup.failures == [], warmup.failures[:5]
    rss_warm = rss_kib(server.process.pid)
    views_before = await asyncio.to_thread(
        scalar, database, "SELECT coalesce(sum(view_count), 0) FROM posts"
    )
    rows_before = await asyncio.to_thread(
        scalar, database, "SELECT (SELECT count(*) FROM comments) || ',' || count(*) FROM posts"
    )
    comments_warm, posts_warm = map(int, str(rows_before).split(","))
    by_post_before = await asyncio.to_thread(_view_counts, database)

    tally = Tally()
    sampler = asyncio.create_task(_sample(server, database, SOAK_SECONDS))
    await _load(server.url, SOAK_SECONDS, posts, tally, record=True)
    peak, rss_samples, queued = await sampler
    await _drained(server)
    await asyncio.sleep(0.5)  # let the last responses' connections go back to the pool
    rss_after = rss_kib(server.process.pid)
    total, busy = await asyncio.to_thread(connections, database)
    metrics = server.get("/metrics").text
    updates = metric(metrics, "example_api_view_batches_total")
    per_update = metric(metrics, "example_api_views_written_total") / max(updates, 1)

    latencies = sorted(tally.latencies)
    print(
        f"\nsoak: {CLIENTS} clients, {SOAK_SECONDS:.0f}s: {tally.requests} requests "
        f"({tally.requests / SOAK_SECONDS:.0f}/s), kinds {dict(tally.kinds)}, "
        f"p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms; "
        f"warm-up {warmup.requests} requests; RSS {rss_warm} kB after warm-up, "
        f"{rss_after} kB after ({(rss_after - rss_warm) / 1024:+.1f} MiB); "
        f"connections peak {peak}, after {total} ({busy} busy); "
        f"view queue at most {max(queued)}, {updates:.0f} UPDATEs of {per_update:.1f} views; "
        f"RSS samples (kB) {rss_samples[:: max(1, len(rss_samples) // 10)]}"
    )

    # Zero 5xx, zero errors, no request lost on the way.
    assert tally.failures == [], tally.failures[:5]
    assert set(tally.statuses) == {200}
    assert tally.requests >= CLIENTS  # every client got answers
    assert 'status="5' not in server.get("/metrics").text
    # Every accepted view counted exactly once, per post; every accepted write one row.
    by_post_after = await asyncio.to_thread(_view_counts, database)
    assert {
        post: by_post_after[post] - by_post_before.get(post, 0)
        for post in by_post_after
        if by_post_after[post] != by_post_before.get(post, 0)
    } == dict(tally.views)
    views_after = await asyncio.to_thread(
        scalar, database, "SELECT coalesce(sum(view_count), 0) FROM posts"
    )
    assert views_after - views_before == sum(tally.views.values())
    comments_after = await asyncio.to_thread(scalar, database, "SELECT count(*) FROM comments")
    posts_after = await asyncio.to_thread(scalar, database, "SELECT count(*) FROM posts")
    assert comments_after - comments_warm == tally.comments
    assert posts_after - posts_warm == tally.posts
    assert comments_warm - comments_before == warmup.kinds["addComment"]
    # Memory after the soak within a small bound of memory after the warm-up.
    assert rss_after <= rss_warm * (100 + RSS_GROWTH_PERCENT) / 100, (rss_warm, rss_after)
    if SOAK_SECONDS >= 60:
        half = rss_samples[len(rss_samples) // 2]
        assert rss_after - half <= rss_warm * PLATEAU_PERCENT / 100, (rss_warm, half, rss_after)
    # The view writer kept up: never more than one bulk UPDATE's worth of views waited.
    assert max(queued) <= MAX_BATCH, f"the view queue grew to {max(queued)} (samples {queued})"
    # No connection leaked: the pool's idle connections at most, none busy.
    assert peak <= POOL_SIZE * 2  # pool_size + max_overflow
    assert total <= POOL_SIZE
    assert busy == 0


def _view_counts(database: str) -> dict[int, int]:
    rows = scalar(database, "SELECT string_agg(id || ':' || view_count, ',') FROM posts")
    return {int(k): int(v) for k, v in (pair.split(":") for pair in str(rows).split(","))}


async def _sample(
    server: Server, database: str, seconds: float
) -> tuple[int, list[int], list[int]]:
    """The most connections the server held to ``database``; its RSS and view queue, each second."""
    peak = 0
    rss: list[int] = []
    queued: list[int] = []
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=server.url, timeout=CLIENT_TIMEOUT) as client:
        while time.monotonic() < deadline:
            total, _busy = await asyncio.to_thread(connections, database)
            peak = max(peak, total)
            rss.append(rss_kib(server.process.pid))
            metrics = (await client.get("/metrics")).text
            queued.append(int(metric(metrics, "example_api_view_queue_size")))
            await asyncio.sleep(1)
    return peak, rss, queued
