"""The app's ASGI middleware: request metrics and the request body size limit."""

from __future__ import annotations

import asyncio
import time

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from example_api.metrics import Metrics

__all__ = ["BodySizeLimit", "MetricsMiddleware"]


class MetricsMiddleware:
    """Counts every HTTP request with its status and latency."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - start
            self.metrics.observe_request(scope["method"], scope["path"], status, seconds)


class _BodyTooLarge(Exception):
    """Raised from ``receive`` inside the app once the body passes the limit."""


class BodySizeLimit:
    """Answers 413 to a request whose body is larger than ``max_bytes``, without reading it.

    A ``Content-Length`` over the limit is refused before the app runs; a body
    sent in chunks is counted as the app reads it, and refused as soon as the
    count passes the limit (the app never sees the rest). Before the 413 the
    rest of the body is read and dropped for at most ``drain_seconds``, so a
    client still writing its body reads the answer rather than a reset
    connection.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, drain_seconds: float = 5.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.drain_seconds = drain_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next(
            (value for name, value in scope["headers"] if name == b"content-length"), None
        )
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(receive, send, more_body=True)
            return
        received = 0
        more_body = True
        started = False

        async def counting_receive() -> Message:
            nonlocal received, more_body
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                more_body = message.get("more_body", False)
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except _BodyTooLarge:
            if started:  # the app answered before reading all of it; nothing left to say
                raise
            await self._refuse(receive, send, more_body=more_body)

    async def _refuse(self, receive: Receive, send: Send, *, more_body: bool) -> None:
        """Drop what is left of the body (``more_body``: some is), then answer 413."""
        try:
            async with asyncio.timeout(self.drain_seconds):
                while more_body:
                    message = await receive()
                    more_body = message["type"] == "http.request" and message.get(
                        "more_body", False
                    )
        except TimeoutError:
            pass
        response = PlainTextResponse(
            f"Request body too large: at most {self.max_bytes} bytes", status_code=413
        )
        await response({"type": "http"}, receive, send)
