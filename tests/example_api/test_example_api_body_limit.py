"""The example API's request body limit, in process: what the app reads and what it answers."""

from __future__ import annotations

from typing import Any

from starlette.types import Message, Receive, Scope, Send

from example_api.middleware import BodySizeLimit

LIMIT = 100


class Echo:
    """An app that reads the whole body and answers its length; records what it read."""

    def __init__(self) -> None:
        self.read = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        more = True
        while more:
            message = await receive()
            self.read += len(message.get("body", b""))
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(self.read).encode()})


async def call(chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> tuple[int, Echo, int]:
    """Send ``chunks`` through the limit; return (status, app, messages the server gave)."""
    app = Echo()
    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    given = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal given
        if given == len(messages):
            raise AssertionError("read past the end of the body")
        given += 1
        return messages[given - 1]

    async def send(message: Message) -> None:
        sent.append(message)

    await BodySizeLimit(app, max_bytes=LIMIT, drain_seconds=60)(scope, receive, send)
    return sent[0]["status"], app, given


async def test_a_declared_length_over_the_limit_is_refused_before_the_app_reads() -> None:
    status, app, given = await call([b"x" * 60, b"x" * 60], [(b"content-length", b"120")])
    assert (status, app.read, given) == (413, 0, 2)  # the body was drained, not handed on


async def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit() -> None:
    status, app, given = await call([b"x" * 60, b"x" * 60, b"x" * 60], [])
    assert status == 413
    assert app.read == 60  # the chunk that passed the limit never reached the app
    assert given == 3  # the rest was drained


async def test_a_body_passing_the_limit_in_its_last_chunk_is_answered_without_waiting() -> None:
    status, app, given = await call([b"x" * 60, b"x" * 60], [])
    assert (status, app.read, given) == (413, 60, 2)  # no read past the end of the body


async def test_a_body_at_the_limit_reaches_the_app_whole() -> None:
    status, app, _ = await call([b"x" * 50, b"x" * 50], [(b"content-length", b"100")])
    assert (status, app.read) == (200, 100)
