"""Connections that hold a worker's file descriptors (issue 12, item 8) are closed.

A production server with a 1 s header timeout and a 2 s request deadline, on
SQLite. Raw sockets play the slow clients: one that says nothing, one that
sends its headers a byte at a time, one that trickles its body, and a crowd
of idle ones. Each is closed by the server while a normal query is served.
Every wait is bounded by a socket timeout.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.example_api.e2e.server import Server, run_server

NORMAL = '{ user(id: "1") { id } }'
BOUND = 15.0  # seconds any socket waits for the server, at most


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('conn') / 'blog.db'}"
    env = {"EXAMPLE_API_HEADER_TIMEOUT_MS": "1000", "EXAMPLE_API_REQUEST_TIMEOUT_MS": "2000"}
    args = ["--production", "--seed-if-empty", "3"]
    with run_server(url, tmp_path_factory.mktemp("logs"), args=args, env=env) as s:
        yield s


def connect(server: Server) -> socket.socket:
    parts = urlsplit(server.url)
    sock = socket.create_connection((parts.hostname or "", parts.port or 80), timeout=BOUND)
    return sock


def closed_by_server(sock: socket.socket, trickle: bytes = b"", every: float = 0.2) -> bytes:
    """Send ``trickle`` a byte at a time; return what the server sent before closing."""
    received = b""
    deadline = time.monotonic() + BOUND
    sock.settimeout(every if trickle else BOUND)
    position = 0
    while time.monotonic() < deadline:
        if position < len(trickle):
            try:
                sock.sendall(trickle[position : position + 1])
            except OSError:
                return received
            position += 1
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"the server kept the connection open for {BOUND} s")


def normal_query_answered(server: Server) -> None:
    answer = httpx.post(f"{server.url}/graphql", json={"query": NORMAL}, timeout=BOUND)
    assert answer.json() == {"data": {"user": {"id": "1"}}}


def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    with connect(server) as sock:
        assert closed_by_server(sock) == b""
    normal_query_answered(server)


def test_headers_sent_a_byte_at_a_time_are_cut_off(server: Server) -> None:
    request = b"POST /graphql HTTP/1.1\r\nHost: localhost\r\n" + b"X-Slow: " + b"a" * 500
    with connect(server) as sock:
        assert closed_by_server(sock, trickle=request) == b""
    normal_query_answered(server)


def test_a_body_sent_a_byte_at_a_time_is_cut_off_by_the_deadline(server: Server) -> None:
    body = b'{"query": "' + b" " * 500 + NORMAL.encode().replace(b'"', b'\\"') + b'"}'
    head = (
        b"POST /graphql HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    with connect(server) as sock:
        sock.sendall(head)
        answer = closed_by_server(sock, trickle=body)
    assert b"DEADLINE_EXCEEDED" in answer
    normal_query_answered(server)


def test_a_crowd_of_idle_connections_is_closed_and_the_server_answers(server: Server) -> None:
    crowd = [connect(server) for _ in range(100)]
    try:
        normal_query_answered(server)
        for sock in crowd:
            assert closed_by_server(sock) == b""
    finally:
        for sock in crowd:
            sock.close()
    normal_query_answered(server)
    assert "Traceback" not in server.logs()
