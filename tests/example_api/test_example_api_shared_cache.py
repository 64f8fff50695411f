"""The example API on two server processes sharing PostgreSQL and a Redis cache.

The ``user`` and ``post`` loaders share a cache (``EXAMPLE_API_REDIS_URL``): a
row one process read is served to the other from Redis, and once a mutation
has answered, no request that starts afterwards, on either process, reads the
old row. Server B reaches Redis through a loopback :class:`FaultProxy`, so a
test can make Redis unreachable for B alone.
"""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import redis

from tests.example_api.e2e.proxy import FaultProxy
from tests.example_api.e2e.server import Server, private_database, run_server

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

POST = "query($id: ID!) { post(id: $id) { id title body viewCount author { id name } } }"
USER = "query($id: ID!) { user(id: $id) { id name } }"
UPDATE_POST = """mutation($id: ID!, $title: String, $body: String) {
    updatePost(id: $id, title: $title, body: $body) { id title body } }"""
UPDATE_USER = "mutation($id: ID!, $name: String!) { updateUser(id: $id, name: $name) { id name } }"
RANDOMIZED_SECONDS = float(os.environ.get("GQLBATCH_SHARED_CACHE_SECONDS", "8"))
"""How long the randomized writers and readers run (longer by hand: the variable)."""


@pytest.fixture(scope="module")
def namespace(redis_url: str) -> Iterator[str]:
    name = f"gqlbatch-test-e2e-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{name}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


@pytest.fixture(scope="module")
def database(pg_url: str) -> Iterator[str]:
    with private_database(pg_url, "shared") as url:
        yield url


@pytest.fixture(scope="module")
def proxy(redis_url: str) -> Iterator[FaultProxy]:
    parsed = urlparse(redis_url)
    made = FaultProxy(parsed.hostname or "127.0.0.1", parsed.port or 6379).start()
    yield made
    made.close()


def _env(redis_url: str, namespace: str) -> dict[str, str]:
    return {
        "EXAMPLE_API_REDIS_URL": redis_url,
        "EXAMPLE_API_REDIS_NAMESPACE": namespace,
        "EXAMPLE_API_VIEW_FLUSH_MS": "50",
        # Time enough for a cache call on a loaded machine: a read that gave up would
        # go to the database, which is correct but makes the statement counts vary.
        "EXAMPLE_API_CACHE_TIMEOUT_MS": "1000",
    }


@pytest.fixture(scope="module")
def servers(
    database: str,
    redis_url: str,
    namespace: str,
    proxy: FaultProxy,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Server, Server]]:
    logs: Path = tmp_path_factory.mktemp("shared-cache")
    args = ["--debug", "--seed-if-empty", "20", "--seed", "5"]
    via_proxy = f"redis://127.0.0.1:{proxy.port}/{urlparse(redis_url).path.lstrip('/') or '0'}"
    with (
        run_server(database, logs, args=args, env=_env(redis_url, namespace)) as a,
        run_server(database, logs, args=["--debug"], env=_env(via_proxy, namespace)) as b,
    ):
        yield a, b


def _data(server: Server, query: str, **variables: Any) -> dict[str, Any]:
    body = server.graphql(query, variables)
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


def _loader_sql(server: Server, query: str, loader: str, **variables: Any) -> int:
    body = server.graphql(query, variables)
    assert "errors" not in body, body
    stats = body["extensions"]["gqlbatch"]["loaders"]
    return int(stats[loader]["sql_statements"]) if loader in stats else 0


def _wait_for(condition: Callable[[], bool], seconds: float = 10) -> bool:
    """Poll until ``condition()`` holds (bounded); return whether it did."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_row_one_process_read_is_served_to_the_other_from_redis(
    servers: tuple[Server, Server],
) -> None:
    a, b = servers
    assert _loader_sql(a, USER, "user", id="3") == 1
    assert _loader_sql(b, USER, "user", id="3") == 0  # from Redis: no statement
    assert _loader_sql(b, USER, "user", id="3") == 0


def test_once_update_post_answered_neither_process_reads_the_old_post(
    servers: tuple[Server, Server],
) -> None:
    a, b = servers
    for server in (a, b, a, b):
        _data(server, POST, id="4")  # cached everywhere
    answer = _data(a, UPDATE_POST, id="4", title="renamed on A", body="new body")
    assert answer["updatePost"] == {"id": "4", "title": "renamed on A", "body": "new body"}
    for server in (b, a):
        assert _data(server, POST, id="4")["post"]["title"] == "renamed on A"
    _data(b, UPDATE_POST, id="4", title="renamed on B")
    assert _data(a, POST, id="4")["post"]["title"] == "renamed on B"
    assert _data(a, POST, id="4")["post"]["body"] == "new body"  # only the title changed


def test_once_update_user_answered_neither_process_reads_the_old_name(
    servers: tuple[Server, Server],
) -> None:
    a, b = servers
    author = _data(a, POST, id="5")["post"]["author"]["id"]
    _data(b, POST, id="5")
    _data(b, UPDATE_USER, id=author, name="Renamed Author")
    assert _data(a, POST, id="5")["post"]["author"]["name"] == "Renamed Author"
    assert _data(a, USER, id=author)["user"]["name"] == "Renamed Author"


@pytest.mark.parametrize(
    ("query", "variables", "code", "message"),
    [
        (UPDATE_POST, {"id": "1", "title": "  "}, "BAD_USER_INPUT", "title must have 1 to 200"),
        (UPDATE_POST, {"id": "1", "title": "x" * 201}, "BAD_USER_INPUT", "title must have"),
        (UPDATE_POST, {"id": "1"}, "BAD_USER_INPUT", "needs a title or a body"),
        (UPDATE_POST, {"id": "99999", "title": "t"}, "NOT_FOUND", "post 99999 does not exist"),
        (UPDATE_POST, {"id": "-1", "title": "t"}, "BAD_USER_INPUT", "id must be a positive"),
        (UPDATE_USER, {"id": "1", "name": ""}, "BAD_USER_INPUT", "name must have 1 to 100"),
        (UPDATE_USER, {"id": "99999", "name": "n"}, "NOT_FOUND", "user 99999 does not exist"),
    ],
)
def test_updates_refuse_bad_input_with_a_clear_error(
    servers: tuple[Server, Server], query: str, variables: dict[str, str], code: str, message: str
) -> None:
    body = servers[0].graphql(query, variables)
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"]["code"] == code
    assert message in error["message"]


def test_view_count_is_fresh_on_every_process_once_the_view_queue_wrote_it(
    servers: tuple[Server, Server],
) -> None:
    """``viewCount`` is cached with its post; the queue's UPDATE invalidates it."""
    a, b = servers
    before = _data(b, POST, id="6")["post"]["viewCount"]  # cached on B's side too
    _data(a, 'mutation { recordView(postId: "6") { accepted } }')
    assert _wait_for(lambda: _data(b, POST, id="6")["post"]["viewCount"] == before + 1)


def test_metrics_count_shared_cache_hits_misses_and_the_circuit_per_loader(
    servers: tuple[Server, Server],
) -> None:
    a, _ = servers
    _data(a, USER, id="7")
    _data(a, USER, id="7")
    text = a.get("/metrics").text
    assert 'example_api_shared_cache_hits_total{loader="user"}' in text
    assert 'example_api_shared_cache_misses_total{loader="user"}' in text
    assert 'example_api_shared_cache_seconds_total{loader="post"}' in text
    assert 'example_api_shared_cache_circuit_state{loader="user",state="closed"} 1' in text
    assert (
        'example_api_shared_cache_calls_total{loader="user",operation="get",outcome="ok"}' in text
    )


def test_a_write_while_redis_is_unreachable_answers_and_its_process_reads_it_at_once(
    servers: tuple[Server, Server], proxy: FaultProxy
) -> None:
    """B cannot reach Redis (black-holed): B still answers, and reads its own write;
    once Redis is back, B delivers the invalidation and A reads the write too."""
    a, b = servers
    _data(a, POST, id="8")
    _data(b, POST, id="8")
    proxy.stall()
    try:
        _data(b, UPDATE_POST, id="8", title="written while Redis was away")
        assert _data(b, POST, id="8")["post"]["title"] == "written while Redis was away"
        # A may read the old entry now: that is what the TTL bounds (EXAMPLE_API_CACHE_TTL_S).
    finally:
        proxy.resume()
    assert _wait_for(  # the circuit may be open on B for a few seconds: B reads the database
        lambda: (
            _data(b, POST, id="8")["post"]["title"] == "written while Redis was away"
            and _data(a, POST, id="8")["post"]["title"] == "written while Redis was away"
        ),
        seconds=20,
    )
    text = b.get("/metrics").text
    assert 'operation="delete",outcome="error"' in text


def test_concurrent_writers_and_readers_on_both_processes_never_read_a_stale_post(
    servers: tuple[Server, Server],
) -> None:
    """Each writer owns some posts and gives them increasing versions; a read must show
    at least the version whose mutation answered before the read began."""
    a, b = servers
    posts = [str(i) for i in range(10, 18)]
    owners = {post: index % 2 for index, post in enumerate(posts)}  # two writers
    answered: dict[str, int] = dict.fromkeys(posts, 0)
    lock = threading.Lock()
    stale: list[str] = []
    reads = itertools.count()
    deadline = time.monotonic() + RANDOMIZED_SECONDS
    for post in posts:
        _data(a, UPDATE_POST, id=post, title="v0")

    def writer(index: int) -> None:
        mine = [post for post in posts if owners[post] == index]
        rng = random.Random(index)
        version = 0
        while time.monotonic() < deadline:
            version += 1
            post = rng.choice(mine)
            server = rng.choice((a, b))
            _data(server, UPDATE_POST, id=post, title=f"v{version}")
            with lock:
                answered[post] = max(answered[post], version)

    def reader(index: int) -> None:
        rng = random.Random(100 + index)
        while time.monotonic() < deadline:
            post = rng.choice(posts)
            server = rng.choice((a, b))
            with lock:
                floor = answered[post]
            title = _data(server, POST, id=post)["post"]["title"]
            next(reads)
            if int(title[1:]) < floor:
                stale.append(f"post {post} on {server.url}: read {title}, v{floor} had answered")

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(writer, i) for i in range(2)]
        futures += [pool.submit(reader, i) for i in range(4)]
        for future in futures:
            future.result()
    assert stale == []
    assert next(reads) > 20  # the test did read, and concurrently with the writes
