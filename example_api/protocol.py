"""uvicorn's HTTP/1.1 protocol, with a deadline for a request's headers.

uvicorn closes a keep-alive connection that stays idle after a response
(``timeout_keep_alive``, 5 s), but not a connection that was just opened and
sends nothing, nor one that sends its headers a byte at a time: each holds a
file descriptor for as long as the client likes, and 1,024 of them stop a
worker. :class:`HeaderTimeoutProtocol` closes a connection whose request
headers are not complete ``EXAMPLE_API_HEADER_TIMEOUT_MS`` after it opened or
after their first byte. A body sent slowly is cut by the request deadline
(:class:`example_api.guard.OperationGuard`).

``python -m example_api serve`` runs uvicorn with
``http="example_api.protocol:HeaderTimeoutProtocol"``; each worker reads the
timeout from its environment once.
"""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from example_api.settings import Settings

__all__ = ["HeaderTimeoutProtocol"]


@cache
def _header_timeout() -> float:
    return Settings.from_env().header_timeout_ms / 1000


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol; a request's headers must arrive within the header timeout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._headers_due: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_watching()
        super().connection_lost(exc)

    def _watch_headers(self) -> None:
        """Arm the deadline while a request's headers are awaited, disarm it once they are in.

        Between requests of a keep-alive connection nothing is armed: uvicorn's
        keep-alive timeout closes it, and the next request's first byte arms it.
        """
        awaiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if awaiting and self._headers_due is None:
            self._headers_due = self.loop.call_later(_header_timeout(), self._headers_late)
        elif not awaiting:
            self._stop_watching()

    def _stop_watching(self) -> None:
        if self._headers_due is not None:
            self._headers_due.cancel()
            self._headers_due = None

    def _headers_late(self) -> None:
        self._headers_due = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()
