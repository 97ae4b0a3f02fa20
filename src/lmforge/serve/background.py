"""The server under a real uvicorn in a thread of this process, for callers that drive it themselves.

`lmforge run` serves its models briefly to simulated users, and the tests do the same: both need
the real HTTP stack on 127.0.0.1 (auth, batching, records, A/B routing), started and stopped in
one process, not a mock of it.
"""

from __future__ import annotations

import socket
import threading
import time

import httpx
import uvicorn

from lmforge.serve.app import create_app
from lmforge.serve.settings import ServeSettings


class BackgroundServer:
    """`create_app(settings)` on settings.host:settings.port until the `with` block ends."""

    def __init__(self, settings: ServeSettings):
        self.app = create_app(settings)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host=settings.host, port=settings.port,
                                                   log_level="warning"))
        self.url = f"http://{settings.host}:{settings.port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        for _ in range(3000):
            if self.server.started:
                return self
            if not self.thread.is_alive():
                raise RuntimeError("the server stopped while starting")
            time.sleep(0.01)
        raise RuntimeError("the server did not start")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)

    def client(self, key: str | None) -> httpx.Client:
        """An HTTP client of this server, sending `key` as its bearer API key."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
