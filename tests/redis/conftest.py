"""A 3-master Redis Cluster on free loopback ports, started for the session and torn down."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def _free_port() -> int:
    # Cluster nodes also listen on port + 10000: pick ports whose bus port is free too.
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    """The ports of a fresh 3-master cluster (no replicas), private to this test run."""
    server = shutil.which("redis-server")
    cli = shutil.which("redis-cli")
    if server is None or cli is None:
        if os.environ.get("GQLBATCH_REQUIRE_REDIS"):
            pytest.fail("redis-server and redis-cli are required here (Debian: redis-server)")
        pytest.skip("redis-server / redis-cli not installed")
    root: Path = tmp_path_factory.mktemp("redis-cluster")
    ports = [_free_port() for _ in range(3)]
    nodes: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            folder = root / str(port)
            folder.mkdir()
            options = {
                "port": str(port),
                "bind": "127.0.0.1",
                "cluster-enabled": "yes",
                "cluster-config-file": "nodes.conf",
                "save": "",
                "appendonly": "no",
                "dir": str(folder),
            }
            argv = [server, *(part for o, v in options.items() for part in (f"--{o}", v))]
            nodes.append(
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        deadline = time.monotonic() + 20
        for port in ports:
            while (
                subprocess.run(
                    [cli, "-p", str(port), "ping"], capture_output=True, check=False
                ).stdout.strip()
                != b"PONG"
            ):
                if time.monotonic() > deadline:
                    pytest.fail(f"redis-server on port {port} did not start")
                time.sleep(0.05)
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            check=True,
            timeout=30,
        )
        for port in ports:
            while (
                b"cluster_state:ok"
                not in subprocess.run(
                    [cli, "-p", str(port), "cluster", "info"], capture_output=True, check=False
                ).stdout
            ):
                if time.monotonic() > deadline:
                    pytest.fail("the Redis Cluster did not become ready")
                time.sleep(0.05)
        yield ports
    finally:
        for node in nodes:
            node.terminate()
        for node in nodes:
            try:
                node.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()
