"""A loopback TCP proxy that breaks the database connection on demand.

The example API under test connects to PostgreSQL through a :class:`FaultProxy`
(its ``DATABASE_URL`` names the proxy's port), so a test can do to the wire
what a network or a database does in production, while the server runs as it
would:

* :meth:`FaultProxy.drop` aborts every open connection (both sides get a reset),
  as a PostgreSQL restart or a broken network path does mid-query;
* :meth:`FaultProxy.stall` stops forwarding bytes in both directions: queries in
  flight hang, and new connections are accepted but their start-up never
  completes (a database that accepts and hangs, or a black-holed route);
* :meth:`FaultProxy.resume` forwards again, including whatever was held back.

The proxy runs its own event loop in a daemon thread, so synchronous tests (and
the uvicorn subprocess they start) are never blocked by it; every control method
is thread-safe and returns once the change is in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

CHUNK = 64 * 1024


class FaultProxy:
    """Forwards 127.0.0.1:``port`` to ``upstream_host``:``upstream_port`` until told otherwise."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.accepted = 0
        """Client connections accepted so far."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # --- lifecycle

    def start(self) -> FaultProxy:
        """Listen on a free loopback port (``self.port``) and start forwarding."""
        self._thread.start()
        self._call(self._start())
        return self

    def close(self) -> None:
        """Stop listening, abort every connection, end the thread."""
        if not self._thread.is_alive():
            return
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    # --- faults

    def drop(self) -> int:
        """Abort every open connection now; return how many there were."""
        return int(self._call(self._drop()))

    def stall(self) -> None:
        """Hold every byte in both directions (new connections included) until :meth:`resume`."""
        self._call(self._set_flowing(False))

    def resume(self) -> None:
        """Forward again, starting with what was held back."""
        self._call(self._set_flowing(True))

    @property
    def open_connections(self) -> int:
        """Client connections open right now."""
        return int(self._call(self._count()))

    @contextlib.contextmanager
    def stalled(self) -> Iterator[None]:
        """:meth:`stall` for the duration of a ``with`` block."""
        self.stall()
        try:
            yield
        finally:
            self.resume()

    # --- the proxy's own loop

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(10)

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._drop()
        await self._server.wait_closed()

    async def _set_flowing(self, flowing: bool) -> None:
        assert self._flowing is not None
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    async def _count(self) -> int:
        return len(self._links)

    async def _drop(self) -> int:
        links = list(self._links)
        for client, upstream in links:
            client.transport.abort()
            if upstream is not None:
                upstream.transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return len(links)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None and self._flowing is not None
        self._tasks.add(task)
        link: tuple[asyncio.StreamWriter, asyncio.StreamWriter | None] = (client_w, None)
        self._links.add(link)
        try:
            # A stalled proxy accepts, but does not even reach the database.
            await self._flowing.wait()
            upstream_r, upstream_w = await asyncio.open_connection(*self.upstream)
            self._links.discard(link)
            link = (client_w, upstream_w)
            self._links.add(link)
            await asyncio.gather(self._pump(client_r, upstream_w), self._pump(upstream_r, client_w))
        except (OSError, asyncio.IncompleteReadError):
            pass  # a side went away: the other is closed below
        except asyncio.CancelledError:
            pass  # dropped: the connections were aborted already
        finally:
            self._links.discard(link)
            self._tasks.discard(task)
            for writer in link:
                if writer is not None:
                    writer.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy ``reader`` to ``writer``, holding each chunk while the proxy is stalled."""
        assert self._flowing is not None
        while chunk := await reader.read(CHUNK):
            await self._flowing.wait()
            writer.write(chunk)
            await writer.drain()
        writer.transport.abort()  # one side closed: close the other (the link is over)
