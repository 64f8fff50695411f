"""What keeps one request from taking a worker: deadlines, disconnects, answer size, admission.

:class:`OperationGuard` wraps every ``/graphql`` request:

- **Deadline.** The app gets ``timeout_ms``; then its task is cancelled (the
  resolvers, the loaders' waits and the database statements with it) and the
  client reads a GraphQL error with code ``DEADLINE_EXCEEDED``.
- **Disconnect.** Once the request body is read, the connection is watched;
  a client that goes away before its answer cancels the operation the same
  way, so an abandoned bomb stops within moments instead of running on.
- **Answer size.** An answer longer than ``max_response_bytes`` is not sent;
  the client reads a GraphQL error with code ``RESPONSE_TOO_LARGE``.

:class:`Admission` bounds the expensive operations a worker runs at once.
The cost of an operation (:class:`AdmissionExtension`, the cost limit computed
before validation) decides: one that costs at most ``cheap_cost`` runs at once,
whatever else is running, so cheap queries keep their latency; a costlier one
waits for one of ``max_expensive`` slots for at most ``wait_ms``, then is
refused with HTTP 503, ``Retry-After`` and code ``SERVER_BUSY``.

:class:`HostCheck` refuses a ``Host`` header not in the allowed list (400),
so a DNS-rebinding page cannot reach a local server, and
:class:`SecurityHeaders` adds ``X-Content-Type-Options: nosniff`` to every
answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from typing import Any

from graphql import GraphQLError
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gqlbatch.strawberry import CostLimiter

__all__ = ["Admission", "AdmissionExtension", "HostCheck", "OperationGuard", "SecurityHeaders"]

log = logging.getLogger("example_api")


# --------------------------------------------------------------------------- deadline, disconnect


class _Exchange:
    """One request's messages, seen by :class:`OperationGuard` on their way in and out.

    A pump task reads the client's messages into a queue of one, so a body is
    never read faster than the app takes it; once the body is in, the pump's
    next read returns only when the client disconnects (or the answer is
    complete: the server then reports a disconnect too).
    """

    def __init__(self, receive: Receive, send: Send, max_response_bytes: int) -> None:
        self._receive = receive
        self._send = send
        self.max_response_bytes = max_response_bytes
        self.messages: asyncio.Queue[Message] = asyncio.Queue(maxsize=1)
        self.gone = asyncio.Event()
        self.started = False  # an http.response.start went out
        self.complete = False  # the whole answer went out
        self._held: Message | None = None  # the app's http.response.start, until its body
        self._sent = 0
        self.on_complete: Callable[[], None] = lambda: None  # called once the answer is out

    async def pump(self, on_gone: Callable[[], None]) -> None:
        while True:
            message = await self._receive()
            await self.messages.put(message)
            if message["type"] == "http.disconnect":
                self.gone.set()
                if not self.complete:  # not the server's "answer sent": the client left
                    on_gone()
                return

    async def receive(self) -> Message:
        if self.gone.is_set() and self.messages.empty():
            return {"type": "http.disconnect"}
        return await self.messages.get()

    async def send(self, message: Message) -> None:
        if self.complete:  # our own answer replaced the app's: drop the rest of it
            return
        if message["type"] == "http.response.start":
            self._held = message
            return
        body = message.get("body", b"")
        self._sent += len(body)
        if self._sent > self.max_response_bytes:
            if self.started:  # a streamed answer: it cannot be taken back, only cut
                raise RuntimeError(f"answer cut at {self.max_response_bytes} bytes")
            await self.answer(
                200,
                "RESPONSE_TOO_LARGE",
                f"The answer is larger than {self.max_response_bytes} bytes; "
                "ask for fewer or smaller objects",
            )
            return
        if self._held is not None:
            self.started = True
            await self._send(self._held)
            self._held = None
        self.complete = not message.get("more_body", False)
        await self._send(message)
        if self.complete:
            self.on_complete()

    async def answer(
        self, status: int, code: str, text: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        """Send a GraphQL error of our own in place of the app's answer (not started)."""
        self.started = self.complete = True
        self._held = None
        body = json.dumps(
            {"data": None, "errors": [{"message": text, "extensions": {"code": code}}]}
        ).encode()
        await self._send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *headers,
                ],
            }
        )
        await self._send({"type": "http.response.body", "body": body})


class OperationGuard:
    """A deadline, cancellation on disconnect and an answer size bound for ``paths``.

    Args:
        app: the ASGI app to guard.
        timeout_ms: how long one request may run (0: no deadline).
        max_response_bytes: the longest answer sent.
        paths: the paths guarded (default ``/graphql``).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        timeout_ms: int,
        max_response_bytes: int,
        paths: Collection[str] = ("/graphql",),
    ) -> None:
        self.app = app
        self.timeout = timeout_ms / 1000 if timeout_ms else None
        self.timeout_ms = timeout_ms
        self.max_response_bytes = max_response_bytes
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        # The app runs in this task; one more task pumps the client's messages and
        # cancels this one when the client leaves. The deadline is asyncio.timeout's.
        task = asyncio.current_task()
        assert task is not None
        exchange = _Exchange(receive, send, self.max_response_bytes)
        left = False

        def client_left() -> None:
            nonlocal left
            left = True
            task.cancel()

        pump = asyncio.ensure_future(exchange.pump(client_left))
        deadline = asyncio.timeout(self.timeout)
        exchange.on_complete = lambda: deadline.reschedule(None)  # clean-up has no deadline
        try:
            async with deadline:
                await self.app(scope, exchange.receive, exchange.send)
        except TimeoutError:
            if not deadline.expired():
                raise  # the app's own TimeoutError
            if not exchange.started:
                await exchange.answer(
                    200,
                    "DEADLINE_EXCEEDED",
                    f"The operation took longer than {self.timeout_ms} ms and was stopped",
                    # the body may still be arriving (a byte at a time): end there
                    headers=[(b"connection", b"close")],
                )
        except asyncio.CancelledError:
            if not left or task.uncancel() > 0:
                raise  # cancelled by someone else (shutdown) as well
            log.info("client left: %s %s cancelled", scope["method"], scope["path"])
        finally:
            pump.cancel()
            await asyncio.wait({pump})


# --------------------------------------------------------------------------- admission


class ServerBusyError(Exception):
    """No slot for an expensive operation came free in time."""


class Admission:
    """How many expensive operations a worker runs at once, and how long others wait.

    Args:
        max_expensive: expensive operations run at once, >= 1.
        cheap_cost: an operation costing at most this is never held back.
        wait_ms: how long an expensive operation waits for a slot before it is refused.
    """

    def __init__(self, *, max_expensive: int, cheap_cost: int, wait_ms: int) -> None:
        self.max_expensive = max_expensive
        self.cheap_cost = cheap_cost
        self.wait = wait_ms / 1000
        self._slots = asyncio.Semaphore(max_expensive)
        self.running = 0
        """Expensive operations holding a slot now."""

    async def acquire(self, cost: int) -> bool:
        """Wait for a slot if ``cost`` needs one; False when none was needed."""
        if cost <= self.cheap_cost:
            return False
        try:
            async with asyncio.timeout(self.wait):
                await self._slots.acquire()
        except TimeoutError:
            raise ServerBusyError from None
        self.running += 1
        return True

    def release(self) -> None:
        """Give back a slot that :meth:`acquire` took."""
        self.running -= 1
        self._slots.release()


class AdmissionExtension(CostLimiter):
    """The cost limit, then an :class:`Admission` slot for an expensive operation.

    One cost walk serves both: an operation over ``max_cost`` is refused as
    :class:`CostLimiter` refuses it; one within it and over the admission's
    ``cheap_cost`` waits for a slot, held until the operation ends.

    Args:
        max_cost, **options: :class:`CostLimiter`'s.
        admission: the worker's :class:`Admission`.
    """

    def __init__(self, max_cost: int, *, admission: Admission, **options: Any) -> None:
        super().__init__(max_cost, **options)
        self.admission = admission
        self.holding = False

    async def on_operation(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if self.holding:
                self.holding = False
                self.admission.release()

    async def on_validate(self) -> AsyncIterator[None]:  # type: ignore[override]  # async
        if not self.refuse_if_needed():
            try:
                self.holding = await self.admission.acquire(self.highest)
            except ServerBusyError:
                self._refuse_busy()
        yield

    def _refuse_busy(self) -> None:
        context = self.execution_context
        retry = max(1, round(self.admission.wait))
        response = getattr(context.context, "response", None)
        if response is not None:
            response.status_code = 503
            response.headers["Retry-After"] = str(retry)
        context.pre_execution_errors = [
            GraphQLError(
                f"The server is busy with {self.admission.max_expensive} expensive "
                f"operations; retry in {retry} s or ask for less",
                extensions={"code": "SERVER_BUSY"},
            )
        ]


# --------------------------------------------------------------------------- headers


class HostCheck:
    """Answers 400 to a request whose ``Host`` is not one of ``allowed_hosts``.

    A name in the list matches with any port; an IPv6 address with or without its
    brackets; ``*`` allows every host.
    """

    def __init__(self, app: ASGIApp, *, allowed_hosts: Collection[str]) -> None:
        self.app = app
        self.allowed = frozenset(host.lower().strip("[]") for host in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "*" not in self.allowed:
            host = next((v for k, v in scope["headers"] if k == b"host"), b"").decode("latin-1")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name.lower().strip("[]") not in self.allowed:
                response = PlainTextResponse("Invalid Host header", status_code=400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """Adds ``X-Content-Type-Options: nosniff`` to every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                message = {
                    **message,
                    "headers": [*headers, (b"x-content-type-options", b"nosniff")],
                }
            await send(message)

        await self.app(scope, receive, with_headers)
