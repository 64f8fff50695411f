"""gqlbatch.strawberry over real HTTP: uvicorn on loopback, Strawberry's ASGI app and FastAPI."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import httpx
import pytest
import strawberry
import uvicorn
from fastapi import FastAPI
from strawberry.fastapi import GraphQLRouter
from strawberry.schema.config import StrawberryConfig

from gqlbatch.strawberry import (
    Context,
    GraphQL,
    LoaderExtension,
    LoaderRegistry,
    context_getter,
    loader,
    write_through,
)

NAMES = {i: f"user{i}" for i in range(1, 51)}
BATCHES: list[list[int]] = []


async def fetch_names(ids: list[int]) -> dict[int, str]:
    BATCHES.append(sorted(ids))
    await asyncio.sleep(0)
    return {i: NAMES[i] for i in ids if i in NAMES}


class Loaders(LoaderRegistry):
    name = loader(fetch_names, key_type=int)


CONTEXTS: list[Context[Loaders]] = []
Info = strawberry.Info[Context[Loaders], None]


@strawberry.type
class Query:
    @strawberry.field
    async def names(self, info: Info, ids: list[int], me: str) -> list[str | None]:
        """Pretend this request wrote user 1 as ``me``, then read ``ids``."""
        CONTEXTS.append(info.context)
        write_through(info.context.loaders.name, 1, f"written by {me}")
        for _ in range(3):
            await asyncio.sleep(0)  # let the other requests run in between
        return list(await info.context.loaders.name.load_many(ids))

    @strawberry.field
    def registry(self, info: Info) -> str:
        return f"{id(info.context.loaders)}"

    @strawberry.field
    def path(self, info: Info) -> str:
        assert info.context.request is not None
        return info.context.request.url.path


schema = strawberry.Schema(Query, extensions=[LoaderExtension.with_statistics()])


class Sessions:
    """A per-request session source: records that the request closed it."""

    closed: ClassVar[list[Sessions]] = []

    async def aclose(self) -> None:
        Sessions.closed.append(self)


@pytest.fixture(autouse=True)
def _reset() -> None:
    BATCHES.clear()
    CONTEXTS.clear()
    Sessions.closed.clear()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port in a thread; yield its base URL."""
    port = _free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(500):  # bounded: at most ~5 s
            if server.started:
                break
            time.sleep(0.01)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _eventually(condition: Any) -> bool:
    """Poll ``condition`` (bounded): the server closes contexts after sending the response."""
    for _ in range(500):
        if condition():
            return True
        time.sleep(0.01)
    return bool(condition())


QUERY = "query ($ids: [Int!]!, $me: String!) { names(ids: $ids, me: $me) registry }"


async def _concurrent_requests(url: str, count: int) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def one(n: int) -> dict[str, Any]:
            variables = {"ids": [1, n + 2, n + 3], "me": f"request {n}"}
            response = await client.post("/graphql", json={"query": QUERY, "variables": variables})
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body

        return await asyncio.gather(*(one(n) for n in range(count)))


def _assert_isolated(bodies: list[dict[str, Any]]) -> None:
    registries = set()
    for n, body in enumerate(bodies):
        assert "errors" not in body, body
        names = body["data"]["names"]
        # each request sees its own write to user 1, never another request's
        assert names == [f"written by request {n}", f"user{n + 2}", f"user{n + 3}"]
        registries.add(body["data"]["registry"])
        stats = body["extensions"]["gqlbatch"]["loaders"]["name"]
        assert stats["batches"] == 1
        assert stats["keys_dispatched"] == 2  # key 1 came from the request's own write
    assert len(registries) == len(bodies)  # one registry per request


async def test_concurrent_requests_through_the_asgi_app_never_share_cached_values() -> None:
    app = GraphQL(schema, registry=Loaders, sessions_factory=Sessions)
    with serve(app) as url:
        bodies = await _concurrent_requests(url, 20)
        _assert_isolated(bodies)
        assert _eventually(lambda: len(Sessions.closed) == 20)
    assert len(CONTEXTS) == 20
    assert all(context.loaders.closed for context in CONTEXTS)
    assert {id(c.sessions) for c in CONTEXTS} == {id(s) for s in Sessions.closed}


async def test_the_asgi_context_carries_the_request_and_the_shared_sessions() -> None:
    shared = object()
    app = GraphQL(schema, registry=Loaders, sessions=shared)
    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            response = await client.get("/graphql", params={"query": "{ path }"})
    assert response.json()["data"] == {"path": "/graphql"}
    # shared sessions belong to the app, not to the request: never closed by it
    assert Sessions.closed == []


async def test_concurrent_requests_through_fastapi_never_share_cached_values() -> None:
    api = FastAPI()
    api.include_router(
        GraphQLRouter(schema, context_getter=context_getter(Loaders, sessions_factory=Sessions)),
        prefix="/graphql",
    )
    with serve(api) as url:
        bodies = await _concurrent_requests(url, 20)
        _assert_isolated(bodies)
        assert _eventually(lambda: len(Sessions.closed) == 20)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            response = await client.post("/graphql", json={"query": "{ path }"})
    assert response.json()["data"] == {"path": "/graphql"}
    assert all(context.loaders.closed for context in CONTEXTS)


def test_sessions_and_sessions_factory_are_exclusive() -> None:
    with pytest.raises(TypeError, match="not both"):
        GraphQL(schema, registry=Loaders, sessions=object(), sessions_factory=Sessions)
    with pytest.raises(TypeError, match="not both"):
        context_getter(Loaders, sessions=object(), sessions_factory=Sessions)


async def test_a_body_that_is_not_utf8_is_bad_json_not_a_server_error() -> None:
    app = GraphQL(schema, registry=Loaders, sessions=object())
    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            bad = await client.post(
                "/graphql",
                content=b'{"query": "{ path \xff\xfe }"}',
                headers={"content-type": "application/json"},
            )
            good = await client.post("/graphql", json={"query": "{ path }"})
    assert (bad.status_code, bad.text) == (400, "Unable to parse request body as JSON")
    assert good.json()["data"] == {"path": "/graphql"}


@pytest.mark.parametrize("batching", [False, True], ids=["batching-off", "batching-on"])
async def test_json_that_is_not_a_request_is_bad_json_not_a_server_error(batching: bool) -> None:
    config = StrawberryConfig(batching_config={"max_operations": 5} if batching else None)
    app = GraphQL(strawberry.Schema(Query, config=config), registry=Loaders, sessions=object())
    bodies = [b"123", b'"x"', b"null", b"[" * 100_000 + b"]" * 100_000, b"9" * 5000, b'{"a": ']
    if batching:
        bodies.append(b"[1, 2]")
    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            for body in bodies:
                bad = await client.post(
                    "/graphql", content=body, headers={"content-type": "application/json"}
                )
                assert (bad.status_code, bad.text) == (400, "Unable to parse request body as JSON")
            good = await client.post("/graphql", json={"query": "{ path }"})
            if batching:
                batch = await client.post("/graphql", json=[{"query": "{ path }"}])
                assert batch.json() == [{"data": {"path": "/graphql"}}]
    assert good.json()["data"] == {"path": "/graphql"}
