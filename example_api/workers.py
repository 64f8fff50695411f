"""Several uvicorn workers that share the connections: one ``SO_REUSEPORT`` listener each.

uvicorn's own ``--workers`` hands every worker the same listening socket. A
worker that wakes accepts every connection waiting in the queue, so keep-alive
clients that connect at once may all land on one worker and stay there: one
measured round had all 16 clients on one worker (0.81 + 0.00 cores). Here each
worker gets a listening socket of its own, all bound to the same address with
``SO_REUSEPORT``, and the kernel spreads new connections over them by a hash of
the client's address and port, whichever worker is awake.

Every listener is bound *and listening* in this process before any worker
starts, so from the first connection on the kernel spreads over all of them
(a connection waits in its listener's queue until that worker is up). Each
worker receives its listener and the parent closes its own copy, so a worker
that dies takes its listener with it: no connection is routed to a queue that
nobody reads. A worker that exits unexpectedly is replaced (with a new
listener); SIGINT or SIGTERM stops every worker (uvicorn's graceful shutdown)
and waits for them.

Linux (and the BSDs) only: ``SO_REUSEPORT`` lets any process of the same user
bind the same port, and the kernel only shares a port among sockets of one
user, so run the server as its own user.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["listeners", "run_workers"]

log = logging.getLogger("example_api")

RESTART_PAUSE_SECONDS = 1.0
"""Pause between replacing a worker that exited and checking again (no busy restart loop)."""


def listeners(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening TCP sockets bound to ``host:port`` with ``SO_REUSEPORT``.

    Port 0 picks a free port for the first and binds the others to the same one.
    """
    if not hasattr(socket, "SO_REUSEPORT"):  # pragma: no cover - not Linux or BSD
        raise OSError("several workers need SO_REUSEPORT (Linux or BSD)")
    made: list[socket.socket] = []
    try:
        for _ in range(count):
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            made.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.listen(2048)  # uvicorn's default backlog
    except BaseException:
        for sock in made:
            sock.close()
        raise
    return made


def _worker(config: Mapping[str, Any], sock: socket.socket) -> None:  # pragma: no cover - a child
    """One worker process: uvicorn, configured by ``config``, serving on its own listener."""
    import uvicorn

    uvicorn.Server(uvicorn.Config(**config)).run(sockets=[sock])


def run_workers(config: Mapping[str, Any], count: int) -> int:
    """Run ``count`` workers until SIGINT or SIGTERM; the exit status (0: stopped by a signal).

    ``config`` holds ``uvicorn.Config``'s arguments (picklable: each worker is a
    spawned process), ``host`` and ``port`` among them.
    """
    host, port = str(config["host"]), int(config["port"])
    grace = float(config.get("timeout_graceful_shutdown") or 0)
    context = multiprocessing.get_context("spawn")
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def start(sock: socket.socket) -> Any:
        process = context.Process(target=_worker, args=(config, sock), name="example_api worker")
        process.start()
        sock.close()  # the worker holds it now; a dead worker's listener must not linger
        return process

    workers: list[Any] = []
    try:
        for sock in listeners(host, port, count):
            workers.append(start(sock))
        log.info("%d workers listening on %s:%d", count, host, port)
        while not stop.wait(RESTART_PAUSE_SECONDS):
            for index, process in enumerate(workers):
                if not process.is_alive() and not stop.is_set():
                    log.error(
                        "worker %s exited (%s); starting another", process.pid, process.exitcode
                    )
                    workers[index] = start(listeners(host, port, 1)[0])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for process in workers:
        if process.is_alive():
            process.terminate()  # SIGTERM: uvicorn finishes the requests in flight
    for process in workers:
        process.join(grace + 10)
        if process.is_alive():  # pragma: no cover - a worker stuck past its grace
            process.kill()
            process.join()
    return 0
