"""`create_app(settings)` under a real uvicorn in a thread of the test process (importable from any
test: `pythonpath = ["tests"]`)."""

from __future__ import annotations

import threading
import time

import httpx
import uvicorn

from lmforge.serve.app import create_app
from lmforge.serve.settings import ServeSettings

KEY = "test-user-key"


class Server:
    """`create_app(settings)` under a real uvicorn in a thread of the test process."""

    def __init__(self, settings: ServeSettings):
        self.app = create_app(settings)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=settings.port,
                                                   log_level="warning"))
        self.url = f"http://127.0.0.1:{settings.port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
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

    def client(self, key: str | None = KEY) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)
