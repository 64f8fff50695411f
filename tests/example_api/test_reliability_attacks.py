"""Attacks on a production server (issue 12): each refused or cut short, the server answering.

One production-mode server on a private PostgreSQL database, with a deadline
of a few seconds and small answer and admission limits so that every defence
can be reached quickly. Every attack is sent while a normal query is asked
too; the normal query must be answered. Client timeouts are generous and
bound every wait: nothing here asserts on time, only on what comes back (the
timings are measured in ``docs/reliability.md``). Waiting on the server's
database work uses a lock held by the test, so "the statement stopped" is
seen in ``pg_stat_activity``, not guessed from a clock.

``make soak`` runs :func:`test_rounds_of_every_attack_for_the_soak_duration` for
``GQLBATCH_SOAK_SECONDS``; ``make test`` runs one round.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.example_api.e2e.server import Server, private_database, run_server

CLIENT_TIMEOUT = 30
NORMAL = '{ user(id: "1") { id name } }'
DEADLINE_MS = 4000
ADMISSION_WAIT_MS = 1000
MAX_RESPONSE = 100_000
BOMB = (  # 113 bytes, ~10^10 objects in the worst case
    "{ tags(limit: 100) { posts(limit: 100) { tags(limit: 100) { posts(limit: 100) "
    "{ tags(limit: 100) { id } } } } } }"
)
EXPENSIVE = "{ posts(limit: 100) { id comments(limit: 100) { id } } }"  # cost 10,100


@pytest.fixture(scope="module")
def database(pg_url: str) -> Iterator[str]:
    with private_database(pg_url, "attacks") as url:
        yield url


@pytest.fixture(scope="module")
def server(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "EXAMPLE_API_REQUEST_TIMEOUT_MS": str(DEADLINE_MS),
        "EXAMPLE_API_ADMISSION_WAIT_MS": str(ADMISSION_WAIT_MS),
        "EXAMPLE_API_MAX_RESPONSE_BYTES": str(MAX_RESPONSE),
    }
    args = ["--production", "--seed-if-empty", "20"]
    with run_server(database, tmp_path_factory.mktemp("attacks"), args=args, env=env) as s:
        yield s


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=CLIENT_TIMEOUT) as c:
        yield c


async def beside_a_normal_query(
    client: httpx.AsyncClient, attack: Awaitable[httpx.Response]
) -> httpx.Response:
    """Run ``attack`` while a normal query is asked; the normal query must be answered."""
    answer, normal = await asyncio.gather(attack, client.post("/graphql", json={"query": NORMAL}))
    assert normal.status_code == 200, normal.text
    assert normal.json() == {
        "data": {"user": {"id": "1", "name": normal.json()["data"]["user"]["name"]}}
    }
    return answer


def error_of(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 200, answer.text[:300]
    [error] = answer.json()["errors"]
    assert isinstance(error, dict)
    return error


def dsn(database: str) -> str:
    return make_url(database).set(drivername="postgresql").render_as_string(hide_password=False)


@asynccontextmanager
async def table_locked(database: str, table: str) -> AsyncIterator[asyncpg.Connection]:
    """Hold an exclusive lock on ``table``: the server's statements on it wait."""
    conn = await asyncpg.connect(dsn(database), timeout=10)
    try:
        async with conn.transaction():
            await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            yield conn
    finally:
        await conn.close()


async def waiting_statements(conn: asyncpg.Connection) -> int:
    """Statements of other connections to this database waiting for a lock."""
    # Statistics views are a snapshot kept for the whole transaction (the lock's): renew it.
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    count = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
    )
    return int(count)


async def until(condition: Callable[[], Awaitable[bool]], seconds: float) -> bool:
    """Poll ``condition`` every 50 ms for at most ``seconds``; whether it became true."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await condition():
            return True
        await asyncio.sleep(0.05)
    return await condition()


# -- 1. cost ---------------------------------------------------------------------------------


async def test_the_113_byte_bomb_is_refused_with_its_cost_before_it_runs(
    client: httpx.AsyncClient,
) -> None:
    answer = await beside_a_normal_query(client, client.post("/graphql", json={"query": BOMB}))
    error = error_of(answer)
    assert error["message"] == "Query cost 10101010100 exceeds the maximum cost of 100000"
    assert error["extensions"] == {
        "code": "QUERY_TOO_COSTLY",
        "cost": 10101010100,
        "maxCost": 100000,
    }
    assert answer.json()["data"] is None


async def test_aliases_and_fragments_add_to_the_cost(client: httpx.AsyncClient) -> None:
    query = "{ " + " ".join(f"a{i}: posts(limit: 100) {{ ...P }}" for i in range(10)) + " }"
    query += " fragment P on Post { comments(limit: 100) { id } }"
    error = error_of(
        await beside_a_normal_query(client, client.post("/graphql", json={"query": query}))
    )
    assert error["extensions"]["cost"] == 10 * 100 * 101


# -- 3. validation linear in the document ----------------------------------------------------


def doubling(levels: int) -> str:
    """Fragment i spreads fragment i - 1 twice: exponential for Strawberry's limiters."""
    parts = [f"{{ posts(limit: 2) {{ ...F{levels} }} }}", "fragment F0 on Post { id }"]
    parts += [f"fragment F{i} on Post {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, levels + 1)]
    return "\n".join(parts)


async def test_thirty_levels_of_doubling_fragments_are_answered(
    client: httpx.AsyncClient,
) -> None:
    answer = await beside_a_normal_query(
        client, client.post("/graphql", json={"query": doubling(30)})
    )
    assert answer.status_code == 200
    assert answer.json() == {"data": {"posts": [{"id": "1"}, {"id": "2"}]}}


async def test_one_field_repeated_495_times_is_refused_before_validation(
    client: httpx.AsyncClient,
) -> None:
    query = "{ " + "posts { id } " * 495 + "}"
    error = error_of(
        await beside_a_normal_query(client, client.post("/graphql", json={"query": query}))
    )
    assert (
        error["message"] == "'posts' is selected 495 times at one place of the result. Allowed: 10"
    )
    assert error["extensions"] == {"code": "MAX_REPEATS_EXCEEDED"}


async def test_repeats_merged_across_levels_are_refused_before_validation(
    client: httpx.AsyncClient,
) -> None:
    def nest(depth: int) -> str:  # 7 fields per level, no selection set holds more
        if depth == 0:
            return "id"
        field = "tags" if depth % 2 else "posts"
        return " ".join(f"{field} {{ {nest(depth - 1)} }}" for _ in range(7))

    query = "{ posts { " + nest(3) + " } }"  # 4.7 KB: 343 fields on posts.tags.posts.tags
    error = error_of(
        await beside_a_normal_query(client, client.post("/graphql", json={"query": query}))
    )
    assert error["message"] == (
        "'posts.tags.posts' is selected 49 times at one place of the result. Allowed: 10"
    )


# -- 2. deadline, disconnect -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "query"),
    [
        ("posts", "{ posts { id } }"),  # the resolver's own statement
        ("comments", "{ posts(limit: 3) { comments { id } } }"),  # a loader batch's
    ],
    ids=["resolver", "loader-batch"],
)
async def test_a_client_that_gives_up_stops_its_database_statement(
    client: httpx.AsyncClient, database: str, table: str, query: str
) -> None:
    async with table_locked(database, table) as conn:
        gives_up = asyncio.ensure_future(client.post("/graphql", json={"query": query}, timeout=1))
        assert await until(lambda: _waiting(conn, 1), 10)  # the server's SELECT waits
        with pytest.raises(httpx.ReadTimeout):
            await gives_up
        gone = time.monotonic()
        # The statement stops although the lock it waits for is still held.
        assert await until(lambda: _none_waiting(conn), 5)
        print(f"statement stopped {1000 * (time.monotonic() - gone):.0f} ms after the client left")
        normal = await client.post("/graphql", json={"query": NORMAL})
        assert normal.json()["data"]["user"]["id"] == "1"


async def _none_waiting(conn: asyncpg.Connection) -> bool:
    return await waiting_statements(conn) == 0


async def test_an_operation_past_its_deadline_is_stopped_with_a_clear_error(
    client: httpx.AsyncClient, database: str
) -> None:
    async with table_locked(database, "posts") as conn:
        stopped = asyncio.ensure_future(client.post("/graphql", json={"query": "{ posts { id } }"}))
        assert await until(lambda: _waiting(conn, 1), 10)
        answer = await beside_a_normal_query(client, stopped)
        assert error_of(answer) == {
            "message": f"The operation took longer than {DEADLINE_MS} ms and was stopped",
            "extensions": {"code": "DEADLINE_EXCEEDED"},
        }
        assert await until(lambda: _none_waiting(conn), 5)


async def test_expensive_operations_stopped_by_the_deadline_give_their_slots_back(
    client: httpx.AsyncClient, database: str
) -> None:
    async with table_locked(database, "comments"):
        stopped = await asyncio.gather(
            *(client.post("/graphql", json={"query": EXPENSIVE}) for _ in range(2))
        )
    for answer in stopped:  # both slots were taken, then the deadline stopped them
        assert error_of(answer)["extensions"] == {"code": "DEADLINE_EXCEEDED"}
    served = await asyncio.gather(
        *(client.post("/graphql", json={"query": EXPENSIVE}) for _ in range(2))
    )
    assert [answer.status_code for answer in served] == [200, 200]
    assert all("errors" not in answer.json() for answer in served)


# -- 5. concurrency --------------------------------------------------------------------------


async def test_expensive_operations_past_the_slots_get_a_503_while_cheap_ones_run(
    client: httpx.AsyncClient, database: str
) -> None:
    async with table_locked(database, "comments") as conn:
        held = [
            asyncio.ensure_future(client.post("/graphql", json={"query": EXPENSIVE}))
            for _ in range(2)  # EXAMPLE_API_MAX_EXPENSIVE: both slots, waiting on the lock
        ]
        assert await until(lambda: _waiting(conn, 2), 10)
        refused = await beside_a_normal_query(
            client, client.post("/graphql", json={"query": EXPENSIVE})
        )
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["errors"][0]["extensions"] == {"code": "SERVER_BUSY"}
    for answer in await asyncio.gather(*held):  # the lock is gone: served
        assert answer.status_code == 200


async def _waiting(conn: asyncpg.Connection, count: int) -> bool:
    return await waiting_statements(conn) >= count


# -- 4. unbounded answers --------------------------------------------------------------------


async def test_a_post_body_of_a_million_characters_is_refused(client: httpx.AsyncClient) -> None:
    query = 'mutation($b: String!) { createPost(authorId: "1", title: "t", body: $b) { id } }'
    answer = await beside_a_normal_query(
        client, client.post("/graphql", json={"query": query, "variables": {"b": "x" * 1_000_000}})
    )
    error = error_of(answer)
    assert error["message"] == "body must have 1 to 10000 characters"
    assert error["extensions"] == {"code": "BAD_USER_INPUT"}


async def test_an_answer_past_the_size_limit_is_replaced_by_an_error(
    client: httpx.AsyncClient,
) -> None:
    query = "{ " + " ".join(f"a{i}: posts(limit: 100) {{ title body }}" for i in range(15)) + " }"
    answer = await beside_a_normal_query(client, client.post("/graphql", json={"query": query}))
    assert error_of(answer) == {
        "message": f"The answer is larger than {MAX_RESPONSE} bytes; "
        "ask for fewer or smaller objects",
        "extensions": {"code": "RESPONSE_TOO_LARGE"},
    }


# -- 7. metrics labels -----------------------------------------------------------------------


async def test_made_up_methods_do_not_grow_the_metrics(client: httpx.AsyncClient) -> None:
    for i in range(30):
        await client.request("X" * 200 + str(i), "/graphql")
    metrics = (await client.get("/metrics")).text
    assert "X" * 200 not in metrics
    assert 'method="other"' in metrics


# -- 9. JSON the parser cannot hold ----------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"123", b'"x"', b"null", b"[" * 100_000 + b"]" * 100_000, b'{"query": ' + b"9" * 5000 + b"}"],
    ids=["number", "string", "null", "nested-100000", "5000-digits"],
)
async def test_json_that_is_not_a_request_gets_a_400(
    client: httpx.AsyncClient, body: bytes
) -> None:
    answer = await beside_a_normal_query(
        client, client.post("/graphql", content=body, headers={"content-type": "application/json"})
    )
    assert (answer.status_code, answer.text) == (400, "Unable to parse request body as JSON")


async def test_get_variables_nested_3000_deep_get_an_error_not_a_500(
    client: httpx.AsyncClient,
) -> None:
    variables = '{"id": ' + "[" * 3000 + "]" * 3000 + "}"
    answer = await beside_a_normal_query(
        client,
        client.get(
            "/graphql",
            params={"query": "query($id: ID) { user(id: $id) { id } }", "variables": variables},
        ),
    )
    assert answer.status_code in (200, 400)
    assert answer.status_code == 400 or answer.json()["errors"]


# -- 10, 11. ids, numbers and strings out of range; bounded echoes ---------------------------


async def test_an_id_past_int4_fails_its_field_only(client: httpx.AsyncClient) -> None:
    query = '{ a: user(id: "1") { id } b: user(id: "9223372036854775808") { id } '
    query += 'c: user(id: "2147483648") { id } d: post(id: "2") { id } }'
    answer = await beside_a_normal_query(client, client.post("/graphql", json={"query": query}))
    body = answer.json()
    assert body["data"] == {"a": {"id": "1"}, "b": None, "c": None, "d": {"id": "2"}}
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"] * 2


async def test_a_5000_digit_int_literal_is_a_graphql_error(client: httpx.AsyncClient) -> None:
    query = "{ posts(limit: " + "9" * 5000 + ") { id } }"
    answer = await beside_a_normal_query(client, client.post("/graphql", json={"query": query}))
    message = error_of(answer)["message"]
    assert message.startswith("Expected value of type 'Int', but encountered error 'Exceeds")
    assert len(message) < 400


@pytest.mark.parametrize(
    ("title", "message"),
    [
        ("a\u0000b", "title must not contain NUL characters"),
        ("a\ud800b", "title must be valid Unicode (no lone surrogates)"),
    ],
    ids=["nul", "lone-surrogate"],
)
async def test_strings_a_database_refuses_are_bad_user_input(
    client: httpx.AsyncClient, title: str, message: str
) -> None:
    query = 'mutation($t: String!) { createPost(authorId: "1", title: $t) { id } }'
    body = json.dumps({"query": query, "variables": {"t": title}}).encode()  # \ud800 escaped
    answer = await beside_a_normal_query(
        client, client.post("/graphql", content=body, headers={"content-type": "application/json"})
    )
    assert error_of(answer) == {
        "message": message,
        "extensions": {"code": "BAD_USER_INPUT"},
        "locations": error_of(answer)["locations"],
        "path": ["createPost"],
    }


async def test_a_megabyte_id_is_not_echoed_by_each_error(client: httpx.AsyncClient) -> None:
    query = "query($id: ID!) { " + " ".join(f"a{i}: user(id: $id) {{ id }}" for i in range(15))
    query += " }"
    answer = await beside_a_normal_query(
        client, client.post("/graphql", json={"query": query, "variables": {"id": "7" * 1_000_000}})
    )
    assert answer.status_code == 200
    assert len(answer.content) < 20_000
    assert len(answer.json()["errors"]) == 15


# -- 12, 13. headers, Host, operation name ---------------------------------------------------


async def test_answers_say_nosniff_and_name_no_server(client: httpx.AsyncClient) -> None:
    for answer in (
        await client.post("/graphql", json={"query": NORMAL}),
        await client.get("/healthz"),
    ):
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert "server" not in answer.headers


async def test_a_foreign_host_header_is_refused(client: httpx.AsyncClient) -> None:
    answer = await beside_a_normal_query(
        client,
        client.post("/graphql", json={"query": NORMAL}, headers={"host": "attacker.example"}),
    )
    assert (answer.status_code, answer.text) == (400, "Invalid Host header")
    local = await client.post("/graphql", json={"query": NORMAL}, headers={"host": "localhost:1"})
    assert local.status_code == 200


async def test_several_operations_without_a_name_get_the_specifications_error(
    client: httpx.AsyncClient,
) -> None:
    query = 'query A { user(id: "1") { id } } mutation B { recordView(postId: "1") { accepted } }'
    error = error_of(
        await beside_a_normal_query(client, client.post("/graphql", json={"query": query}))
    )
    assert error["message"] == "Must provide operation name if query contains multiple operations."


# -- a round of everything; the log --------------------------------------------------------


async def one_round(client: httpx.AsyncClient) -> None:
    attacks = [
        client.post("/graphql", json={"query": BOMB}),
        client.post("/graphql", json={"query": doubling(30)}),
        client.post("/graphql", json={"query": "{ " + "posts { id } " * 495 + "}"}),
        client.post(
            "/graphql", content=b"[" * 100_000, headers={"content-type": "application/json"}
        ),
        client.request("Y" * 4000, "/graphql"),
    ]
    for answer in await asyncio.gather(*attacks):
        assert answer.status_code < 500 or answer.status_code == 503, answer.text[:200]
    normal = await client.post("/graphql", json={"query": NORMAL})
    assert normal.json()["data"]["user"]["id"] == "1"


@pytest.mark.soak
async def test_rounds_of_every_attack_for_the_soak_duration(client: httpx.AsyncClient) -> None:
    """``make soak`` (GQLBATCH_SOAK_SECONDS set): rounds for that long; ``make test``: one."""
    seconds = float(os.environ.get("GQLBATCH_SOAK_SECONDS", "0"))
    deadline = time.monotonic() + seconds
    rounds = 0
    while rounds == 0 or (time.monotonic() < deadline and rounds < 10_000):
        await one_round(client)
        rounds += 1
    print(f"{rounds} rounds of attacks in {seconds:.0f} s; normal queries answered throughout")


def test_no_attack_left_a_traceback_in_the_server_log(server: Server) -> None:
    log = server.logs()
    assert "Traceback" not in log, log[-3000:]
    assert server.process.poll() is None
