"""A real `redis-server` for tests, on a free 127.0.0.1 port, in memory only (importable from any test:
`pythonpath = ["tests"]`): `from redis_server import running_redis`."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from processes import free_port, kill_tree, start_in_session

READY_TIMEOUT_SECONDS = 10.0


class RedisServer:
    """A `redis-server` on 127.0.0.1:`port`, in memory only, that a test may `stop()` and `start()`
    again on the same port (to check what the server does while Redis is gone and once it is back).
    Each start is empty: nothing is saved."""

    def __init__(self, executable: str, port: int, folder: Path):
        self.executable = executable
        self.port = port
        self.folder = folder
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen | None = None

    def client(self) -> redis.Redis:
        """A plain client, for tests that look at what the server stored."""
        return redis.Redis.from_url(self.url, socket_timeout=2.0)

    def start(self) -> None:
        """Start it (if it is not running) and wait until it answers PING."""
        if self.process is not None:
            return
        log = self.folder / "redis.log"
        command = [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", str(self.folder), "--logfile", str(log)]
        self.process = start_in_session(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        probe = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while True:
            try:
                probe.ping()
                break
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    tail = log.read_text()[-2000:] if log.exists() else ""
                    pytest.fail(f"redis-server on port {self.port} did not answer PING:\n{tail}")
                time.sleep(0.02)
            finally:
                probe.close()

    def stop(self) -> None:
        """SIGKILL it, as a crash would: no shutdown, connections cut."""
        if self.process is None:
            return
        kill_tree(self.process)
        self.process.wait()
        self.process = None

    @contextmanager
    def down(self) -> Iterator[None]:
        """Redis killed for the `with` block and started again (empty) after it, even if the block fails."""
        self.stop()
        try:
            yield
        finally:
            self.start()



@contextmanager
def running_redis(folder: Path) -> Iterator[RedisServer]:
    """A started `RedisServer` for the `with` block (the test fails when redis-server is missing)."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail("redis-server not found on PATH: install Debian's redis-server package", pytrace=False)
    folder.mkdir(parents=True, exist_ok=True)
    server = RedisServer(executable, free_port(), folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()
