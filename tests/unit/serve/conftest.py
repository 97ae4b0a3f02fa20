"""Serving fixtures: a real `redis-server` for the result cache and the serving tests that lean on it."""

from __future__ import annotations

import pytest
from redis_server import running_redis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One `redis-server` for the session (`.url`, `.stop()`, `.start()`, `.down()`, `.client()`). A
    test that stops it must start it again before it ends (`with redis_server.down():` does); keys
    of different tests must differ, as nothing is flushed between them."""
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server
