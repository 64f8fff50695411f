"""The example API end to end: a real uvicorn server on SQLite and on PostgreSQL, over HTTP.

Each backend gets one debug server for the module (seeded with 40 users by
seed 3); tests that stop or break a server start their own.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from example_api.seed import SeedPlan, rows_for
from tests.example_api.e2e.server import FOUR_LEVELS, Server, private_database, run_server, scalar

SEED = ["--seed-if-empty", "40", "--seed", "3"]
PLAN = SeedPlan(users=40, seed=3)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('e2e') / 'blog.db'}"
    else:
        pg_url = request.getfixturevalue("pg_url")
        with private_database(pg_url, "e2e") as url:
            yield url


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    args = ["--debug", "--max-cost", "1000000", *SEED]  # whole-table reads below: cost 404,040
    with run_server(database_url, tmp_path_factory.mktemp("logs"), args=args) as s:
        yield s


def _stats(body: dict[str, object]) -> dict[str, object]:
    extensions = body["extensions"]
    assert isinstance(extensions, dict)
    stats = extensions["gqlbatch"]
    assert isinstance(stats, dict)
    return stats


# -- results -------------------------------------------------------------------------------


def test_lookups_return_the_seeded_rows(server: Server) -> None:
    rows = rows_for(PLAN)
    user = rows["users"][6]
    body = server.graphql("query($id: ID!) { user(id: $id) { id name email } }", {"id": "7"})
    assert body["data"] == {"user": {"id": "7", "name": user["name"], "email": user["email"]}}
    post = rows["posts"][0]
    body = server.graphql(
        '{ post(id: "1") { title author { id } } nothing: post(id: "99999") { id } }'
    )
    assert body["data"] == {
        "post": {"title": post["title"], "author": {"id": str(post["author_id"])}},
        "nothing": None,
    }


def test_nested_lists_follow_the_seeded_relations(server: Server) -> None:
    rows = rows_for(PLAN)
    body = server.graphql(
        "{ users(limit: 40) { id posts(limit: 100) { id comments(limit: 100) { id } } } }"
    )
    got = {
        int(u["id"]): {int(p["id"]): len(p["comments"]) for p in u["posts"]}
        for u in body["data"]["users"]
    }
    expected: dict[int, dict[int, int]] = {u["id"]: {} for u in rows["users"]}
    for post in rows["posts"]:
        expected[post["author_id"]][post["id"]] = 0
    for comment in rows["comments"]:
        post = rows["posts"][comment["post_id"] - 1]
        expected[post["author_id"]][post["id"]] += 1
    assert got == expected


def test_many_to_many_tags_read_both_ways(server: Server) -> None:
    rows = rows_for(PLAN)
    body = server.graphql("{ tags(limit: 100) { name posts(limit: 100) { id tags { name } } } }")
    for tag in body["data"]["tags"]:
        tag_id = next(t["id"] for t in rows["tags"] if t["name"] == tag["name"])
        assert [int(p["id"]) for p in tag["posts"]] == sorted(
            link["post_id"] for link in rows["post_tags"] if link["tag_id"] == tag_id
        )
        for post in tag["posts"]:
            assert tag["name"] in [t["name"] for t in post["tags"]]


def test_nested_limit_and_offset_apply_per_parent(server: Server) -> None:
    whole = server.graphql("{ users(limit: 40) { posts(limit: 100) { id } } }")["data"]["users"]
    paged = server.graphql("{ users(limit: 40) { posts(limit: 2, offset: 1) { id } } }")
    for full, page in zip(whole, paged["data"]["users"], strict=True):
        assert page["posts"] == full["posts"][1:3]


def test_root_lists_page_with_limit_and_offset(server: Server) -> None:
    body = server.graphql("{ a: users(limit: 3) { id } b: users(limit: 2, offset: 2) { id } }")
    assert [u["id"] for u in body["data"]["a"]] == ["1", "2", "3"]
    assert [u["id"] for u in body["data"]["b"]] == ["3", "4"]


# -- statements per request ------------------------------------------------------------------


@pytest.mark.parametrize("page_size", [2, 10, 40])
def test_four_level_query_runs_one_statement_per_relation_whatever_the_page_size(
    server: Server, page_size: int
) -> None:
    body = server.graphql(FOUR_LEVELS % page_size)
    assert "errors" not in body
    rows = rows_for(PLAN)
    expected = [
        {
            "id": str(user["id"]),
            "posts": [
                [c["id"] for c in rows["comments"] if c["post_id"] == p["id"]][:5]
                for p in rows["posts"]
                if p["author_id"] == user["id"]
            ][:5],
        }
        for user in rows["users"][:page_size]
    ]
    got = [
        {"id": u["id"], "posts": [[int(c["id"]) for c in p["comments"]] for p in u["posts"]]}
        for u in body["data"]["users"]
    ]
    assert got == expected
    stats = _stats(body)
    # users, posts, comments, tags, comment authors: one SELECT each.
    assert stats["sql_statements"] == 5
    loaders = stats["loaders"]
    assert isinstance(loaders, dict)
    assert {name: s["batches"] for name, s in loaders.items()} == {
        "posts_of_user": 1,
        "comments_of_post": 1,
        "tags_of_post": 1,
        "user": 1,
    }
    assert {name: s["sql_statements"] for name, s in loaders.items()} == {
        "posts_of_user": 1,
        "comments_of_post": 1,
        "tags_of_post": 1,
        "user": 1,
    }


def test_repeated_keys_are_fetched_once_per_request(server: Server) -> None:
    body = server.graphql(
        '{ a: user(id: "1") { name } b: user(id: "1") { name } c: user(id: "2") { id } }'
    )
    stats = _stats(body)
    assert stats["sql_statements"] == 1
    assert stats["loaders"]["user"]["keys_dispatched"] == 2  # type: ignore[index]


# -- limits --------------------------------------------------------------------------------


def _error(body: dict[str, object]) -> str:
    errors = body.get("errors")
    assert isinstance(errors, list), body
    assert errors, body
    return str(errors[0]["message"])


def test_limit_above_the_maximum_page_size_is_refused(server: Server) -> None:
    assert "limit must be between 0 and 100" in _error(
        server.graphql("{ users(limit: 101) { id } }")
    )
    body = server.graphql("{ users(limit: 1) { posts(limit: 1000) { id } } }")
    assert "limit must be between 0 and 100 (the maximum page size), got 1000" in _error(body)
    assert "offset must be >= 0" in _error(server.graphql("{ users(offset: -1) { id } }"))


def test_query_depth_limit(server: Server) -> None:
    deep = "{ users { " + "posts { author { " * 5 + "id" + " } }" * 5 + " } }"
    assert "exceeds maximum operation depth of 10" in _error(server.graphql(deep))


def test_alias_limit(server: Server) -> None:
    aliases = " ".join(f"a{i}: users(limit: 1) {{ id }}" for i in range(16))
    assert "15" in _error(server.graphql(f"{{ {aliases} }}"))


def test_token_limit(server: Server) -> None:
    many = " ".join("id" for _ in range(2100))
    assert "2000" in _error(server.graphql(f"{{ users {{ {many} }} }}"))


def test_http_operation_batching_is_off(server: Server) -> None:
    response = server.post("/graphql", json=[{"query": "{ users { id } }"}] * 2)
    assert response.status_code == 400
    assert "batching" in response.text.lower()


def test_mutations_are_refused_over_get(server: Server) -> None:
    mutation = 'mutation { recordView(postId: "1") { accepted } }'
    response = server.get("/graphql", params={"query": mutation})
    assert response.status_code in (400, 405)
    assert "mutation" in response.text.lower()
    query = server.get("/graphql", params={"query": '{ user(id: "1") { id } }'})
    assert query.json()["data"] == {"user": {"id": "1"}}


# -- mutations -----------------------------------------------------------------------------


def test_mutations_keep_the_request_caches_correct(server: Server) -> None:
    body = server.graphql(
        """mutation {
          first: addComment(postId: "2", authorId: "3", body: "one") {
            id post { comments(limit: 100) { id } } }
          second: addComment(postId: "2", authorId: "4", body: "two") {
            id post { comments(limit: 100) { id } } }
        }"""
    )
    first, second = body["data"]["first"], body["data"]["second"]
    assert first["id"] in [c["id"] for c in first["post"]["comments"]]
    assert {first["id"], second["id"]} <= {c["id"] for c in second["post"]["comments"]}

    body = server.graphql(
        """mutation {
          createPost(authorId: "5", title: "Batched", tags: ["fresh-tag"]) {
            id title author { posts(limit: 100) { id } } tags { name posts { id } } }
          tagPost(postId: "3", tag: "fresh-tag") { id tags(limit: 100) { name } }
        }"""
    )
    created = body["data"]["createPost"]
    assert created["id"] in [p["id"] for p in created["author"]["posts"]]
    assert created["tags"] == [{"name": "fresh-tag", "posts": [{"id": created["id"]}]}]
    assert "fresh-tag" in [t["name"] for t in body["data"]["tagPost"]["tags"]]


def test_concurrent_writes_of_one_new_tag_create_it_once(server: Server, database_url: str) -> None:
    mutation = 'mutation($id: ID!) { tagPost(postId: $id, tag: "Race-Tag") { id } }'
    posts = [str(6 + i % 4) for i in range(16)]  # four posts, each tagged four times at once
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda post: server.graphql(mutation, {"id": post}), posts))
    assert all("errors" not in body for body in bodies), bodies
    assert scalar(database_url, "SELECT count(*) FROM tags WHERE name = 'race-tag'") == 1
    links = "SELECT count(*) FROM post_tags JOIN tags ON tags.id = tag_id WHERE name = 'race-tag'"
    assert scalar(database_url, links) == 4


def test_mutations_name_the_bad_argument(server: Server) -> None:
    body = server.graphql('mutation { addComment(postId: "abc", authorId: "1", body: "x") { id } }')
    assert _error(body) == "postId must be a positive integer id up to 2147483647, got 'abc'"
    body = server.graphql('mutation { createPost(authorId: "99999", title: "x") { id } }')
    assert _error(body) == "authorId: user 99999 does not exist"


def test_record_view_counts_every_view_exactly(server: Server, database_url: str) -> None:
    before = scalar(database_url, "SELECT view_count FROM posts WHERE id = 5")
    mutation = 'mutation { recordView(postId: "5") { postId accepted } }'
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda _: server.graphql(mutation), range(60)))
    assert all(b["data"]["recordView"] == {"postId": "5", "accepted": True} for b in bodies)
    view_count = '{ post(id: "5") { viewCount } }'
    for _ in range(100):  # the bulk UPDATE lands within view_flush_ms; bounded wait
        if server.graphql(view_count)["data"]["post"]["viewCount"] == before + 60:
            break
        time.sleep(0.05)
    assert scalar(database_url, "SELECT view_count FROM posts WHERE id = 5") == before + 60
    assert server.graphql('mutation { recordView(postId: "99999") { accepted } }')["errors"]


# -- debug mode, health, metrics ---------------------------------------------------------------


def test_debug_mode_serves_graphiql_and_introspection(server: Server) -> None:
    page = server.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200
    assert "graphiql" in page.text.lower()
    body = server.graphql("{ __schema { queryType { name } } }")
    assert body["data"] == {"__schema": {"queryType": {"name": "Query"}}}


def test_healthz_checks_the_database(server: Server) -> None:
    response = server.get("/healthz")
    assert response.json() == {"status": "ok", "database": "ok"}


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, f"{name} missing from /metrics"
    return float(match.group(1))


def test_metrics_report_requests_latency_statements_and_batches(server: Server) -> None:
    server.graphql(FOUR_LEVELS % 10)
    text = server.get("/metrics").text
    assert "# TYPE example_api_http_requests_total counter" in text
    assert (
        _metric(text, 'example_api_http_requests_total{method="POST",path="/graphql",status="200"}')
        >= 1
    )
    assert _metric(text, 'example_api_http_request_duration_seconds_count{path="/graphql"}') >= 1
    assert (
        _metric(text, 'example_api_http_request_duration_seconds_bucket{path="/graphql",le="+Inf"}')
        >= 1
    )
    assert _metric(text, 'example_api_sql_statements_per_request_bucket{le="5"}') >= 1
    assert _metric(text, 'example_api_loader_batch_size_count{loader="user"}') >= 1
    assert _metric(text, "example_api_view_queue_rejections_total") == 0
    assert "example_api_view_queue_size" in text
