"""Processes for end-to-end tests: the dispatcher as `python -m dispatcher serve`, workers,
and, for the real backend, a Redis server of the test's own (so FLUSHALL hurts no one)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.backends import Backend, PostgresDatabase

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A throwaway redis-server on a free loopback port."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.start()

    def start(self) -> None:
        """Start (again) on the same port, empty."""
        tmp = self.tmp
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp),
                "--maxmemory-policy",
                "noeviction",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def flushall(self) -> None:
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "FLUSHALL"], check=True, stdout=subprocess.DEVNULL
        )

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@dataclass
class Stack:
    """Where the dispatcher process keeps its data."""

    name: str
    database_url: str
    redis: RedisServer | None


class DispatcherProcess:
    """`python -m dispatcher serve` in a child process."""

    def __init__(self, stack: Stack, port: int, *extra: str) -> None:
        self.port = port
        args = [
            sys.executable,
            "-m",
            "dispatcher",
            "serve",
            "--port",
            str(port),
            "--database-url",
            stack.database_url,
            "--reaper-interval",
            "0.2",
            "--reconcile-interval",
            "1",
            "--shutdown-grace",
            "2",
            *extra,
        ]
        if stack.redis is not None:
            args += ["--redis-url", stack.redis.url]
        self.proc = subprocess.Popen(
            args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if m := re.search(r"listening on [\d.]+:(\d+)", line):
                assert int(m.group(1)) == port
                break
        else:
            raise RuntimeError(f"dispatcher exited with {self.proc.wait()}")
        # Keep reading its output, or a full pipe would block the dispatcher.
        self.output: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()
        self._wait_serving()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def _wait_serving(self, timeout: float = 30) -> None:
        with grpc.insecure_channel(self.address) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                status = health.Check(  # type: ignore[attr-defined]
                    health_pb2.HealthCheckRequest(service=""), timeout=5
                ).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
                time.sleep(0.05)
        raise RuntimeError("the dispatcher never reported SERVING")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)


def start_worker(
    address: str, queue: str, ledger: Path, sleep_s: float, concurrency: int
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.e2e.raw_worker",
            address,
            queue,
            str(ledger),
            str(sleep_s),
            str(concurrency),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def read_ledger(path: Path) -> list[tuple[str, str, int]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        kind, job, attempt, *_ = line.split()
        out.append((kind, job, int(attempt)))
    return out


@pytest.fixture
async def stack(
    backend_name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Stack]:
    if backend_name == "embedded":
        yield Stack("embedded", f"sqlite:///{tmp_path / 'd.db'}", None)
        return
    pg: PostgresDatabase = request.getfixturevalue("postgres")
    await Backend("real", pg.url, "").truncate_sql()
    redis = RedisServer(tmp_path)
    try:
        yield Stack("real", pg.url, redis)
    finally:
        redis.stop()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes] | subprocess.Popen[str]]]:
    """Children a test started; killed at the end whatever happened."""
    started: list[subprocess.Popen[bytes] | subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait(10)
        if p.stdout is not None:
            p.stdout.close()
