"""The product's background server with the tests' API key as the default client key (importable
from any test: `pythonpath = ["tests"]`)."""

from __future__ import annotations

import httpx

from lmforge.serve.background import BackgroundServer

KEY = "test-user-key"


class Server(BackgroundServer):
    def client(self, key: str | None = KEY) -> httpx.Client:
        return super().client(key)
