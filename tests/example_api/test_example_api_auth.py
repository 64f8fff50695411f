"""Authorization in the example (issue 12, item 14): tokens, acting users, owner-only email.

The tokens themselves in-process; the rest over real HTTP against a server
started with ``EXAMPLE_API_AUTH_SECRET``, once with the per-request caches
only and once with the user and post loaders on the shared Redis cache
(``EXAMPLE_API_REDIS_URL``): a row cached for one user must not carry an
owner-only value to another.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from example_api.auth import TokenError, issue, verify
from tests.example_api.e2e.server import Server, run_server, scalar

SECRET = "test-secret-not-for-production"
USERS = 8

# -- tokens ----------------------------------------------------------------------------------


def test_a_token_names_its_user_until_it_expires() -> None:
    token = issue(SECRET, 7, ttl_seconds=60, now=1000)
    assert verify(SECRET, token, now=1059) == 7
    with pytest.raises(TokenError, match="expired"):
        verify(SECRET, token, now=1061)


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda t: "8" + t[1:], "not signed by this server"),  # another user
        (lambda t: t[:-2] + "AA", "not signed by this server"),
        (lambda t: t.replace(".", "", 1), "malformed"),
        (lambda t: t + "é", "malformed"),
        (lambda t: issue("another secret", 7), "not signed by this server"),
    ],
)
def test_a_tampered_token_is_refused(tamper: Any, message: str) -> None:
    with pytest.raises(TokenError, match=message):
        verify(SECRET, tamper(issue(SECRET, 7)))


def test_no_token_is_issued_without_a_secret_or_for_a_bad_id() -> None:
    with pytest.raises(ValueError, match="EXAMPLE_API_AUTH_SECRET is not set"):
        issue("", 1)
    with pytest.raises(ValueError, match="user_id must be a positive id, got 0"):
        issue(SECRET, 0)


# -- over HTTP -------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["cache-off", "shared-cache"])
def cache_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    if request.param == "cache-off":
        yield {}
        return
    url = request.getfixturevalue("redis_url")
    namespace = f"gqlbatch-test-auth-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield {"EXAMPLE_API_REDIS_URL": url, "EXAMPLE_API_REDIS_NAMESPACE": namespace}
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="module")
def database(cache_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('auth') / 'blog.db'}"


@pytest.fixture(scope="module")
def server(
    database: str, cache_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    args = ["--production", "--seed-if-empty", str(USERS)]
    env = {"EXAMPLE_API_AUTH_SECRET": SECRET, **cache_env}
    with run_server(database, tmp_path_factory.mktemp("logs"), args=args, env=env) as s:
        yield s


def ask(server: Server, query: str, user: int | None = None, **variables: Any) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {issue(SECRET, user)}"} if user else {}
    answer = httpx.post(
        f"{server.url}/graphql",
        json={"query": query, "variables": variables},
        headers=headers,
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", ())]


def test_the_start_up_log_says_whether_authorization_is_on(server: Server) -> None:
    assert "authorization on" in server.logs()


def test_a_mutation_without_a_token_is_refused(server: Server) -> None:
    body = ask(server, 'mutation { createPost(authorId: "1", title: "x") { id } }')
    assert codes(body) == ["UNAUTHENTICATED"]
    body = ask(server, 'mutation { recordView(postId: "1") { accepted } }')
    assert body["data"] == {"recordView": None}
    assert codes(body) == ["UNAUTHENTICATED"]


def test_a_bad_token_is_refused(server: Server) -> None:
    for header in ("Bearer nonsense", f"Bearer {issue('other', 1)}", f"Basic {issue(SECRET, 1)}"):
        answer = httpx.post(
            f"{server.url}/graphql",
            json={"query": 'mutation { tagPost(postId: "1", tag: "t") { id } }'},
            headers={"authorization": header},
            timeout=30,
        )
        assert codes(answer.json()) == ["UNAUTHENTICATED"]


def test_a_mutation_acts_as_the_tokens_user_only(server: Server) -> None:
    create = 'mutation($a: ID!) { createPost(authorId: $a, title: "mine") { id author { id } } }'
    assert codes(ask(server, create, user=2, a="3")) == ["FORBIDDEN"]
    body = ask(server, create, user=2, a="2")
    assert body["data"]["createPost"]["author"] == {"id": "2"}
    comment = 'mutation { addComment(postId: "1", authorId: "4", body: "hi") { id } }'
    assert codes(ask(server, comment, user=3)) == ["FORBIDDEN"]


@pytest.fixture(scope="module")
def emails(server: Server, database: str) -> dict[int, str]:
    """Every user's email, read from the database."""
    return {
        user: str(scalar(database, f"SELECT email FROM users WHERE id = {user}"))
        for user in range(1, USERS + 1)
    }


def test_updates_change_only_the_tokens_own_user_and_posts(server: Server) -> None:
    rename = 'mutation($id: ID!) { updateUser(id: $id, name: "Renamed") { id name } }'
    assert codes(ask(server, rename, user=2, id="3")) == ["FORBIDDEN"]
    assert ask(server, rename, user=3, id="3")["data"]["updateUser"]["name"] == "Renamed"
    post = ask(server, '{ user(id: "4") { posts(limit: 1) { id } } }')["data"]["user"]
    if post["posts"]:
        edit = 'mutation($id: ID!) { updatePost(id: $id, title: "Edited") { title } }'
        post_id = post["posts"][0]["id"]
        assert codes(ask(server, edit, user=5, id=post_id)) == ["FORBIDDEN"]
        assert ask(server, edit, user=4, id=post_id)["data"]["updatePost"]["title"] == "Edited"
    assert codes(ask(server, rename, id="3")) == ["UNAUTHENTICATED"]


SHAPES = [
    "{ users(limit: 20) { id email } }",
    '{ user(id: "%(other)s") { id email } }',
    "{ posts(limit: 50) { author { id email } comments(limit: 20) { author { id email } } } }",
    "{ tags(limit: 20) { posts(limit: 20) { author { id email "
    "posts(limit: 5) { author { email } } } } } }",
    '{ a: user(id: "%(me)s") { id email } b: user(id: "%(other)s") { id email } }',
]


@pytest.mark.parametrize(
    ("viewer", "shape"), list(itertools.product([None, 1, 2, 5], range(len(SHAPES))))
)
def test_no_email_reaches_anyone_but_its_owner(
    server: Server, emails: dict[int, str], viewer: int | None, shape: int
) -> None:
    me = viewer or 1
    query = SHAPES[shape] % {"me": me, "other": me % USERS + 1}
    answer = httpx.post(
        f"{server.url}/graphql",
        json={"query": query},
        headers={"authorization": f"Bearer {issue(SECRET, viewer)}"} if viewer else {},
        timeout=30,
    )
    text = answer.text
    for user, email in emails.items():
        if user != viewer:
            assert email not in text, (user, query)
    assert set(codes(answer.json())) <= {"FORBIDDEN"}


def test_the_owner_reads_their_email_and_others_get_null_with_a_code(server: Server) -> None:
    body = ask(server, '{ a: user(id: "2") { email } b: user(id: "3") { email } }', user=2)
    assert body["data"]["a"]["email"]
    assert body["data"]["b"] == {"email": None}
    assert [(e["path"], e["extensions"]["code"]) for e in body["errors"]] == [
        (["b", "email"], "FORBIDDEN")
    ]


def test_open_mode_logs_that_it_is_open(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'open.db'}"
    with run_server(url, tmp_path, args=["--production", "--seed-if-empty", "2"]) as server:
        body = ask(server, '{ user(id: "2") { email } }')
        assert body["data"]["user"]["email"]
        assert "authorization OFF" in server.logs()
