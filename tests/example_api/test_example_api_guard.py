"""example_api.guard in-process: the deadline's edges, the answer bound, admission, Host."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from example_api.guard import Admission, HostCheck, OperationGuard, ServerBusyError

SCOPE: dict[str, Any] = {"type": "http", "path": "/graphql", "method": "POST", "headers": []}


async def call(app: Any, scope: dict[str, Any] | None = None) -> list[Message]:
    """Run ``app`` for one request whose client stays until the answer is out."""
    sent: list[Message] = []
    answered = asyncio.Event()
    body_given = False

    async def receive() -> Message:
        nonlocal body_given
        if not body_given:
            body_given = True
            return {"type": "http.request", "body": b"{}", "more_body": False}
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            answered.set()

    await asyncio.wait_for(app(scope or SCOPE, receive, send), 10)
    return sent


def answer(body: bytes) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


async def test_the_apps_own_timeout_error_is_not_taken_for_the_deadline() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise TimeoutError("the pool had no connection")

    with pytest.raises(TimeoutError, match="the pool had no connection"):
        await call(OperationGuard(app, timeout_ms=5000, max_response_bytes=100))


async def test_work_after_the_answer_is_out_is_not_cut_by_the_deadline() -> None:
    cleaned = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await answer(b"{}")(scope, receive, send)
        await asyncio.sleep(0.2)  # closing the request's loaders, past the deadline
        cleaned.set()

    sent = await call(OperationGuard(app, timeout_ms=50, max_response_bytes=100))
    assert cleaned.is_set()
    assert [m.get("body") for m in sent if m["type"] == "http.response.body"] == [b"{}"]


async def test_an_operation_past_the_deadline_gets_an_error_and_a_closed_connection() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(60)

    start, body = await call(OperationGuard(app, timeout_ms=50, max_response_bytes=100))
    assert (b"connection", b"close") in start["headers"]
    assert json.loads(body["body"])["errors"][0]["extensions"] == {"code": "DEADLINE_EXCEEDED"}


async def test_an_answer_past_the_bound_is_replaced_by_an_error() -> None:
    guard = OperationGuard(answer(b"x" * 101), timeout_ms=0, max_response_bytes=100)
    start, body = await call(guard)
    assert start["status"] == 200
    assert json.loads(body["body"]) == {
        "data": None,
        "errors": [
            {
                "message": "The answer is larger than 100 bytes; ask for fewer or smaller objects",
                "extensions": {"code": "RESPONSE_TOO_LARGE"},
            }
        ],
    }
    start, body = await call(
        OperationGuard(answer(b"x" * 100), timeout_ms=0, max_response_bytes=100)
    )
    assert body["body"] == b"x" * 100


async def test_cheap_operations_never_wait_and_expensive_ones_wait_for_a_slot() -> None:
    admission = Admission(max_expensive=1, cheap_cost=10, wait_ms=50)
    assert await admission.acquire(10) is False  # cheap: no slot taken
    assert await admission.acquire(11) is True
    assert admission.running == 1
    with pytest.raises(ServerBusyError):
        await admission.acquire(11)
    assert await admission.acquire(5) is False  # cheap ones still run
    admission.release()
    assert await admission.acquire(11) is True
    admission.release()


@pytest.mark.parametrize(
    ("host", "allowed", "status"),
    [
        (b"localhost:8000", ("localhost",), 200),
        (b"LOCALHOST", ("localhost",), 200),
        (b"[::1]:8000", ("[::1]",), 200),
        (b"[::1]:8000", ("::1",), 200),  # the default list's spelling
        (b"evil.example", ("localhost",), 400),
        (b"evil.example", ("*",), 200),
        (b"", ("localhost",), 400),
    ],
)
async def test_the_host_check(host: bytes, allowed: tuple[str, ...], status: int) -> None:
    scope = {**SCOPE, "headers": [(b"host", host)] if host else []}
    start, _ = await call(HostCheck(answer(b"{}"), allowed_hosts=allowed), scope)
    assert start["status"] == status
