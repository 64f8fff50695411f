"""Hostile requests against the real server: each gets a clear error, the server stays up.

One production-mode server on a private PostgreSQL database. Every hostile
request is sent together with a normal query (``asyncio.gather`` on one
``httpx.AsyncClient``); the hostile one must be answered with a clear error
(an HTTP 400 with a plain message, or a GraphQL error naming the limit), and
the normal one must succeed. Client timeouts are generous: nothing here
asserts on time, only that an answer comes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.example_api.e2e.server import Server, private_database, run_server

CLIENT_TIMEOUT = 120
NORMAL = '{ user(id: "1") { id posts(limit: 2) { id } } }'


@pytest.fixture(scope="module")
def server(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with private_database(pg_url, "hostile") as url:
        args = ["--production", "--seed-if-empty", "5"]
        with run_server(url, tmp_path_factory.mktemp("hostile"), args=args) as s:
            yield s


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=CLIENT_TIMEOUT) as c:
        yield c


async def beside_a_normal_query(client: httpx.AsyncClient, **hostile: Any) -> httpx.Response:
    """Send the hostile request and a normal query at once; the normal one must succeed."""
    bad, normal = await asyncio.gather(
        client.post("/graphql", **hostile), client.post("/graphql", json={"query": NORMAL})
    )
    assert normal.status_code == 200
    body = normal.json()
    assert "errors" not in body, body
    assert body["data"]["user"]["id"] == "1"
    return bad


def messages(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text[:300]
    errors = response.json()["errors"]
    return [error["message"] for error in errors]


# -- documents: depth, aliases, size -----------------------------------------------------------

TOO_MANY_TOKENS = (
    "Document contains more than 2000 tokens, the most this server accepts: "
    "send a shorter query (fewer fields, aliases or fragments)"
)


async def test_a_query_nested_past_the_depth_limit_is_refused(client: httpx.AsyncClient) -> None:
    deep = "{ users { posts { comments { post { comments { post { comments { post { comments "
    deep += "{ post { comments { id } } } } } } } } } } } }"
    answer = await beside_a_normal_query(client, json={"query": deep})
    assert messages(answer) == ["'anonymous' exceeds maximum operation depth of 10"]


async def test_thousands_of_nesting_levels_are_refused_by_the_parser(
    client: httpx.AsyncClient,
) -> None:
    query = "{ " + "users { " * 3000 + "id" + " }" * 3001
    answer = await beside_a_normal_query(client, json={"query": query})
    assert messages(answer) in (
        ["Syntax Error: Document is nested too deeply. Parsing aborted."],
        [TOO_MANY_TOKENS],
    )


async def test_thousands_of_aliases_are_refused(client: httpx.AsyncClient) -> None:
    query = "{ " + " ".join(f"a{i}: users {{ id }}" for i in range(3000)) + " }"
    answer = await beside_a_normal_query(client, json={"query": query})
    assert messages(answer) == [TOO_MANY_TOKENS]
    query = "{ " + " ".join(f'a{i}: user(id: "1") {{ id }}' for i in range(40)) + " }"
    answer = await beside_a_normal_query(client, json={"query": query})
    assert messages(answer) == ["40 aliases found. Allowed: 15"]


# -- arguments: page sizes, lists -------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "variables", "message"),
    [
        (
            "{ users(limit: 1000000) { id } }",
            {},
            "limit must be between 0 and 100 (the maximum page size), got 1000000",
        ),
        (
            "{ users { posts(limit: 100000) { id } } }",
            {},
            "limit must be between 0 and 100 (the maximum page size), got 100000",
        ),
        (
            "query($n: Int!) { posts(limit: $n) { id } }",
            {"n": 10**12},
            "Variable '$n' has invalid value: "
            "Int cannot represent non 32-bit signed integer value: 1000000000000",
        ),
        (
            "{ users(limit: 10, offset: -5) { id } }",
            {},
            "offset must be >= 0, got -5",
        ),
    ],
)
async def test_huge_page_sizes_are_refused_naming_the_limit(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any], message: str
) -> None:
    answer = await beside_a_normal_query(client, json={"query": query, "variables": variables})
    assert messages(answer) == [message]


async def test_thousands_of_ids_where_one_is_expected_are_refused(
    client: httpx.AsyncClient,
) -> None:
    answer = await beside_a_normal_query(
        client,
        json={
            "query": "query($id: ID!) { user(id: $id) { id } }",
            "variables": {"id": ["1"] * 5000},
        },
    )
    (message,) = messages(answer)
    assert message.startswith("Variable '$id' has invalid value: ID cannot represent value:")
    assert len(message) < 300  # the value is elided, not echoed in full


async def test_thousands_of_ids_in_a_literal_list_are_refused(client: httpx.AsyncClient) -> None:
    tags = ",".join(f'"t{i}"' for i in range(3000))
    query = f'mutation {{ createPost(authorId: "1", title: "x", tags: [{tags}]) {{ id }} }}'
    answer = await beside_a_normal_query(client, json={"query": query})
    assert messages(answer) == [TOO_MANY_TOKENS]


async def create_post_with_tags(client: httpx.AsyncClient, tags: list[str]) -> httpx.Response:
    query = 'mutation($t: [String!]) { createPost(authorId: "1", title: "x", tags: $t) '
    query += "{ tags(limit: 100) { name } } }"
    return await beside_a_normal_query(client, json={"query": query, "variables": {"t": tags}})


async def test_tens_of_thousands_of_tags_in_a_variable_are_refused_clearly(
    client: httpx.AsyncClient,
) -> None:
    answer = await create_post_with_tags(client, [f"tag{i}" for i in range(40_000)])
    assert messages(answer) == ["tags: at most 20 tags at once, got 40000"]
    assert answer.json()["errors"][0]["extensions"]["code"] == "TOO_MANY_TAGS"
    assert answer.json()["data"] is None


async def test_twenty_tags_are_accepted(client: httpx.AsyncClient) -> None:
    answer = await create_post_with_tags(client, [f"many-{i}" for i in range(20)])
    assert answer.status_code == 200
    tags = answer.json()["data"]["createPost"]["tags"]
    assert sorted(tag["name"] for tag in tags) == sorted(f"many-{i}" for i in range(20))


# -- the HTTP body: JSON, content types, size -------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "status", "text"),
    [
        (
            b'{"query": "{ users { id } }"',
            "application/json",
            400,
            "Unable to parse request body as JSON",
        ),
        (b"[1, 2", "application/json", 400, "Unable to parse request body as JSON"),
        (b"x" * 1_000_000, "application/json", 400, "Unable to parse request body as JSON"),
        (b'{"query": "\xff\xfe"}', "application/json", 400, "Unable to parse request body as JSON"),
        (b"[1, 2]", "application/json", 400, "Batching is not enabled"),
        (b'{"variables": {}}', "application/json", 400, "No GraphQL query found in the request"),
        (
            b'{"query": 5}',
            "application/json",
            400,
            "The GraphQL operation's `query` must be a string or null, if provided.",
        ),
        (b"{ users { id } }", "text/plain", 400, "Unsupported content type"),
        (b"<query/>", "application/xml", 400, "Unsupported content type"),
        (b'{"query": "{ users { id } }"}', "", 400, "Unsupported content type"),
        (
            b"query=%7B+users+%7B+id+%7D+%7D",
            "application/x-www-form-urlencoded",
            400,
            "Unsupported content type",
        ),
    ],
    ids=[
        "truncated-json",
        "truncated-list",
        "1MB-of-garbage",
        "invalid-utf8",
        "http-batch-off",
        "no-query",
        "query-not-a-string",
        "text-plain",
        "xml",
        "no-content-type",
        "form",
    ],
)
async def test_malformed_bodies_and_wrong_content_types_get_a_400_with_a_plain_message(
    client: httpx.AsyncClient, body: bytes, content_type: str, status: int, text: str
) -> None:
    answer = await beside_a_normal_query(
        client, content=body, headers={"content-type": content_type}
    )
    assert (answer.status_code, answer.text) == (status, text)


async def test_a_mutation_over_get_is_refused(client: httpx.AsyncClient) -> None:
    bad, normal = await asyncio.gather(
        client.get(
            "/graphql", params={"query": 'mutation { recordView(postId: "1") { accepted } }'}
        ),
        client.get("/graphql", params={"query": NORMAL}),
    )
    assert normal.status_code == 200
    assert bad.status_code == 400
    assert "mutations are not allowed when using GET" in bad.text


LIMIT = 1_048_576  # EXAMPLE_API_MAX_BODY_BYTES's default
TOO_LARGE = f"Request body too large: at most {LIMIT} bytes"


@pytest.mark.parametrize(
    "body",
    [
        {"query": NORMAL, "variables": {"x": "y" * 20_000_000}},
        {"query": "#" + "x" * 20_000_000 + "\n" + NORMAL},  # a comment is not even a token
        {"query": "#" + "x" * LIMIT + "\n" + NORMAL},  # just past the limit
    ],
    ids=["20MB-variable", "20MB-comment", "limit-plus-some"],
)
async def test_a_body_past_the_limit_gets_a_413_and_the_server_stays_up(
    client: httpx.AsyncClient, server: Server, body: dict[str, Any]
) -> None:
    answer = await beside_a_normal_query(
        client, content=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    assert (answer.status_code, answer.text) == (413, TOO_LARGE)
    assert server.process.poll() is None
    assert (await client.get("/healthz")).status_code == 200


async def test_a_chunked_body_past_the_limit_gets_a_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"query": "#'
        for _ in range(40):
            yield b"x" * 65_536
        yield b'\n{ users { id } }"}'

    answer = await beside_a_normal_query(
        client, content=chunks(), headers={"content-type": "application/json"}
    )
    assert (answer.status_code, answer.text) == (413, TOO_LARGE)


async def test_a_body_just_under_the_limit_is_served(client: httpx.AsyncClient) -> None:
    padding = LIMIT - 200 - len(NORMAL)
    body = json.dumps({"query": "#" + "x" * padding + "\n" + NORMAL}).encode()
    assert LIMIT - 200 < len(body) <= LIMIT
    answer = await beside_a_normal_query(
        client, content=body, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 200
    assert answer.json()["data"]["user"]["id"] == "1"
