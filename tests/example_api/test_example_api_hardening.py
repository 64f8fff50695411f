"""Production mode: what a public endpoint must not reveal, and what it must still say."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.example_api.e2e.server import Server, execute, private_database, run_server


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('prod') / 'blog.db'}"
    else:
        with private_database(request.getfixturevalue("pg_url"), "prod") as url:
            yield url


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    args = ["--production", "--seed-if-empty", "5"]
    env = {"EXAMPLE_API_MAX_BATCH": "2"}
    with run_server(database_url, tmp_path_factory.mktemp("logs"), args=args, env=env) as s:
        yield s


def _messages(body: dict[str, object]) -> list[str]:
    errors = body.get("errors")
    assert isinstance(errors, list), body
    return [str(e["message"]) for e in errors]


def test_production_answers_queries_without_statistics(server: Server) -> None:
    body = server.graphql('{ user(id: "1") { id posts(limit: 1) { id } } }')
    assert body["data"]["user"]["id"] == "1"
    assert "gqlbatch" not in (body.get("extensions") or {})


def test_validation_messages_stay_readable_without_suggestions(server: Server) -> None:
    assert _messages(server.graphql("{ users { nme } }")) == [
        "Cannot query field 'nme' on type 'User'."
    ]
    assert _messages(server.graphql("{ users(limt: 1) { id } }")) == [
        "Unknown argument 'limt' on field 'Query.users'."
    ]


def test_client_errors_stay_readable(server: Server) -> None:
    assert _messages(server.graphql("{ users(limit: 500) { id } }")) == [
        "limit must be between 0 and 100 (the maximum page size), got 500"
    ]
    body = server.graphql('mutation { recordView(postId: "99999") { accepted } }')
    assert _messages(body) == ["post 99999 does not exist"]
    assert body["errors"][0]["extensions"] == {"code": "NOT_FOUND"}


def test_http_operation_batching_can_be_capped(server: Server) -> None:
    operation = {"query": '{ user(id: "1") { id } }'}
    response = server.post("/graphql", json=[operation, operation])
    assert response.status_code == 200
    assert [r["data"] for r in response.json()] == [{"user": {"id": "1"}}] * 2
    refused = server.post("/graphql", json=[operation] * 3)
    assert refused.status_code == 400
    assert refused.text == "Too many operations"


def test_introspection_and_graphiql_are_off(server: Server) -> None:
    messages = _messages(server.graphql("{ __schema { types { name } } }"))
    assert any("introspection" in m.lower() for m in messages)
    page = server.get("/graphql", headers={"accept": "text/html"})
    assert "graphiql" not in page.text.lower()


def test_unexpected_errors_reveal_no_sql_dsn_or_traceback(
    server: Server, database_url: str
) -> None:
    execute(database_url, "DROP TABLE comments")  # break the database under the server
    response = server.post(
        "/graphql", json={"query": "{ posts(limit: 3) { id comments { id body } } }"}
    )
    assert response.status_code == 200
    body = response.json()
    assert set(_messages(body)) == {"Internal server error."}
    text = response.text.lower()
    for leak in (
        "select",
        "comments.",
        "no such table",
        "relation",
        "sqlite",
        "asyncpg",
        "postgres",
        "traceback",
        "sqlalchemy",
        database_url.lower(),
    ):
        assert leak not in text, leak
    assert "no such table" in server.logs().lower() or "does not exist" in server.logs()


def test_a_lost_database_is_reported_without_its_name_or_address(
    pg_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from tests.example_api.e2e.server import admin_url

    with private_database(pg_url, "lost") as url:
        args = ["--production", "--seed-if-empty", "2"]
        with run_server(url, tmp_path_factory.mktemp("lost"), args=args) as server:
            name = url.rsplit("/", 1)[1]
            _drop(admin_url(pg_url), name)
            health = server.get("/healthz")
            assert health.status_code == 503
            assert health.json() == {"status": "unavailable", "database": "unreachable"}
            response = server.post("/graphql", json={"query": '{ user(id: "1") { id } }'})
            assert set(_messages(response.json())) == {"Internal server error."}
            for leak in (name, "127.0.0.1", "5432", "asyncpg", "postgres", "traceback"):
                assert leak not in health.text.lower()
                assert leak not in response.text.lower()


def _drop(admin: str, name: str) -> None:
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(admin, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(run())
